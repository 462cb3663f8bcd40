"""Mini-batch training with Adam and early stopping on a held-out split, shared by the students.

A student exposes ``params`` (name -> float64 array), ``forward(rows) -> (z, cache)`` for rows of
its training set, and ``backward(cache, dz) -> grads`` where each gradient is either a dense
array or a ``SparseRows(indices, values)`` for embedding tables (only the rows a batch touched).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .config import DistillationConfig
from .losses import similarity_loss, teacher_similarities


@dataclass(frozen=True)
class SparseRows:
    """Gradient of a table restricted to some rows: ``table[indices] += values`` semantics,
    ``indices`` unique."""

    indices: np.ndarray
    values: np.ndarray


class Student(Protocol):
    params: dict[str, np.ndarray]

    def forward(self, rows: np.ndarray) -> tuple[np.ndarray, Any]: ...

    def backward(self, cache: Any, dz: np.ndarray) -> dict[str, np.ndarray | SparseRows]: ...


class Adam:
    """Adam (Kingma & Ba) with bias correction. Sparse gradients update only their rows' moments
    (the "lazy" variant of ``torch.optim.SparseAdam``), so a step costs what the batch touched."""

    def __init__(self, params: dict[str, np.ndarray], lr: float, betas=(0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.lr, (self.b1, self.b2), self.eps = lr, betas, eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0
        self._buffers: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray | SparseRows]) -> None:
        self.t += 1
        c1 = 1.0 - self.b1 ** self.t
        c2 = 1.0 - self.b2 ** self.t
        # torch's formulation: p -= (lr / c1) * m / (sqrt(v) / sqrt(c2) + eps), rearranged so the
        # dense path runs in place on preallocated buffers
        step_size = self.lr * np.sqrt(c2) / c1
        eps = self.eps * np.sqrt(c2)
        for name, g in grads.items():
            p, m, v = params[name], self.m[name], self.v[name]
            if isinstance(g, SparseRows):
                rows, g = g.indices, g.values
                m_rows = self.b1 * m[rows] + (1 - self.b1) * g
                v_rows = self.b2 * v[rows] + (1 - self.b2) * g * g
                m[rows], v[rows] = m_rows, v_rows
                p[rows] -= step_size * m_rows / (np.sqrt(v_rows) + eps)
                continue
            buf = self._buffers.setdefault(name, np.empty_like(p))
            m *= self.b1
            np.multiply(g, 1 - self.b1, out=buf)
            m += buf
            v *= self.b2
            np.multiply(g, g, out=buf)
            buf *= 1 - self.b2
            v += buf
            np.sqrt(v, out=buf)
            buf += eps
            np.divide(m, buf, out=buf)
            buf *= step_size
            p -= buf


@dataclass
class TrainingLog:
    """What a training run did: the loss curve and why it stopped."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    best_step: int = 0
    stopped: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps, "train_loss": self.train_loss,
            "validation_loss": self.validation_loss, "best_step": self.best_step,
            "stopped": self.stopped, "seconds": self.seconds,
        }


def split_validation(n: int, fraction: float, batch_size: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, validation)``: a seeded shuffle with at least one full batch held
    out (capped at 4096 rows: enough to rank checkpoints, cheap to evaluate)."""
    order = rng.permutation(n)
    held = min(max(int(round(n * fraction)), batch_size), 4096)
    if n - held < batch_size:
        raise ValueError(
            f"{n} training texts leave fewer than batch_size={batch_size} after holding out "
            f"{held} for early stopping; give more texts or a smaller batch_size"
        )
    return np.sort(order[held:]), np.sort(order[:held])


def train(student: Student, teacher: np.ndarray, train_rows: np.ndarray,
          validation_rows: np.ndarray, config: DistillationConfig, rng: np.random.Generator,
          progress: Callable[[int, float], None] | None = None) -> TrainingLog:
    """Optimize ``student.params`` in place; the parameters left are those of the best held-out
    loss (the initialization counts as a candidate, so training never returns a worse student).

    Args:
        teacher: teacher embeddings ``[n, D]`` of the student's training set (rows index both).
        train_rows, validation_rows: disjoint row indices.
        progress: called as ``progress(step, train_loss)`` after every step.
    """
    # The matrices of a step are tiny ([batch, D] x [D, k]): BLAS threads only add hand-off cost,
    # which grows ruinous when the cores are busy.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _train(student, teacher, train_rows, validation_rows, config, rng, progress)


def _train(student: Student, teacher: np.ndarray, train_rows: np.ndarray,
           validation_rows: np.ndarray, config: DistillationConfig, rng: np.random.Generator,
           progress: Callable[[int, float], None] | None) -> TrainingLog:
    start = time.perf_counter()
    bs = config.batch_size
    kw = dict(temperature=config.temperature, alpha=config.alpha,
              use_cosine_loss=config.use_cosine_loss)
    val_batches = [validation_rows[i:i + bs] for i in range(0, len(validation_rows) - bs + 1, bs)]
    val_targets = [teacher_similarities(teacher[b]) for b in val_batches]

    def validation_loss() -> float:
        total = 0.0
        for rows, t in zip(val_batches, val_targets):
            z, _ = student.forward(rows)
            total += similarity_loss(z, t, need_grad=False, **kw)[0].total
        return total / len(val_batches)

    log = TrainingLog()
    best = validation_loss()
    best_params = {k: v.copy() for k, v in student.params.items()}
    log.steps.append(0)
    log.train_loss.append(float("nan"))
    log.validation_loss.append(best)
    optimizer = Adam(student.params, config.learning_rate)
    order, cursor, window, bad = rng.permutation(train_rows), 0, [], 0
    log.stopped = "num_iterations reached"
    for step in range(1, config.num_iterations + 1):
        if cursor + bs > len(order):
            order, cursor = rng.permutation(train_rows), 0
        rows = order[cursor:cursor + bs]
        cursor += bs
        z, cache = student.forward(rows)
        parts, dz = similarity_loss(z, teacher_similarities(teacher[rows]), **kw)
        optimizer.step(student.params, student.backward(cache, dz))
        window.append(parts.total)
        if progress is not None:
            progress(step, parts.total)
        if step % config.eval_every == 0 or step == config.num_iterations:
            current = validation_loss()
            log.steps.append(step)
            log.train_loss.append(float(np.mean(window)))
            log.validation_loss.append(current)
            window = []
            if current < best:
                best, bad, log.best_step = current, 0, step
                best_params = {k: v.copy() for k, v in student.params.items()}
            else:
                bad += 1
                if bad >= config.patience:
                    log.stopped = f"early stop: no held-out improvement in {bad} evaluations"
                    break
    for name, value in best_params.items():
        student.params[name][...] = value
    log.seconds = time.perf_counter() - start
    return log
