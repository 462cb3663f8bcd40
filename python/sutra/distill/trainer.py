"""DistillationTrainer: teacher embeddings in, a smaller or faster student out."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import teacher as teacher_io
from .config import DistillationConfig, ModelFormat
from .export import (
    STUDENT_FILE,
    model_folder_writer,
    projection_graph,
    static_graph,
    write_atomically,
)
from .metrics import DistillationMetrics, fidelity
from .pca import principal_axes
from .projection import ProjectionStudent
from .static import StaticStudent, TokenBatch, sif_weights
from .training import TrainingLog, split_validation, train

logger = logging.getLogger("sutra.distill")

SPEED_SAMPLE = 512  # texts timed for the speed ratio (the same texts for teacher and student)


class NotTrainedError(RuntimeError):
    """evaluate() or export_model() was called before a student was trained."""


class DistillationTrainer:
    """Distils a teacher embedding model into a smaller (projection) or faster (static) student.

    >>> trainer = DistillationTrainer(DistillationConfig(student_dim=256))
    >>> trainer.collect_teacher_embeddings(train_texts, sutra.Embedder("high-quality"))
    >>> trainer.train()
    >>> print(trainer.evaluate(test_texts, teacher))
    >>> trainer.export_model("mpnet-256")           # a folder sutra.Embedder() loads

    Args:
        config: the hyper-parameters.
        cache_dir: where teacher embeddings are cached (default ``<sutra cache>/distill``;
            ``None`` disables the cache).
        progress: progress bars and per-phase log lines.

    Attributes:
        log: the last training run's :class:`TrainingLog` (loss curve, stop reason).
        metrics: the last :meth:`evaluate` result.
    """

    def __init__(self, config: DistillationConfig | None = None, *,
                 cache_dir: str | Path | None | bool = True, progress: bool = False) -> None:
        self.config = config or DistillationConfig()
        if cache_dir is True:
            cache_dir = teacher_io.default_cache_dir()
        self.cache_dir = Path(cache_dir) if cache_dir not in (None, False) else None
        self.progress = progress
        self.student: ProjectionStudent | StaticStudent | None = None
        self.log: TrainingLog | None = None
        self.metrics: DistillationMetrics | None = None
        self.pca_explained: float | None = None
        self._teacher: Any = None
        self._texts: list[str] = []
        self._embeddings: np.ndarray | None = None

    # -- data ------------------------------------------------------------------------------------

    def collect_teacher_embeddings(self, texts: Sequence[str], teacher: Any) -> np.ndarray:
        """Embed the training texts with ``teacher`` (a :class:`sutra.Embedder`, a model name, or
        any object with ``encode(texts, batch_size=...)``), from the cache when possible.

        Returns the embeddings ``[len(texts), teacher_dim]`` float32 and keeps them (and the
        teacher) for training.

        Raises:
            ValueError: empty corpus, a text that is not a non-empty string, fewer texts than
                ``student_dim``, embeddings of the wrong width or with NaN/inf values.
        """
        texts = _check_texts(texts, "texts")
        if len(texts) < self.config.student_dim:
            raise ValueError(
                f"{len(texts)} texts are fewer than student_dim={self.config.student_dim}: the "
                "PCA that starts the student needs at least as many texts as dimensions"
            )
        teacher = _as_teacher(teacher)
        embeddings = teacher_io.embed_texts(teacher, texts, self.config.teacher_dim,
                                            cache_dir=self.cache_dir, progress=self.progress)
        self._teacher, self._texts, self._embeddings = teacher, texts, embeddings
        self.student, self.log, self.metrics = None, None, None
        return embeddings

    # -- training --------------------------------------------------------------------------------

    def train(self) -> TrainingLog:
        """Train the student the config names (``projection`` or ``static``)."""
        if self.config.student == "projection":
            return self.train_projection()
        return self.train_static()

    def train_projection(self) -> TrainingLog:
        """PCA-initialized projection, then Adam on the similarity loss with early stopping."""
        x = self._require_data()
        rng = np.random.default_rng(self.config.seed)
        train_rows, val_rows = split_validation(len(x), self.config.validation_fraction,
                                                self.config.batch_size, rng)
        start = time.perf_counter()
        # the PCA sees the training rows only, so the held-out loss stays honest
        student, explained = ProjectionStudent.from_pca(x, self.config.student_dim, train_rows)
        self.pca_explained = float(explained.sum())
        logger.info("PCA: %d axes keep %.1f%% of the sum of squares", len(explained),
                    100 * self.pca_explained)
        self.log = train(student, x, train_rows, val_rows, self.config, rng,
                         self._progress_callback())
        self.log.seconds = time.perf_counter() - start
        self.student = student
        return self.log

    def train_static(self) -> TrainingLog:
        """Token vectors from the teacher, PCA, SIF weights, then (``fine_tune``) Adam."""
        x = self._require_data()
        teacher = self._teacher
        if not hasattr(teacher, "tokenizer") or not hasattr(teacher, "embed_tokens"):
            raise ValueError(
                "the static student needs a sutra.Embedder teacher (its tokenizer and "
                f"embed_tokens()); got {type(teacher).__name__}"
            )
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        train_rows, val_rows = split_validation(len(x), cfg.validation_fraction,
                                                cfg.batch_size, rng)
        # the teacher's pass over the vocabulary is cached like its text embeddings and, like
        # them, not counted as training time
        vocab_vectors = teacher_io.embed_vocabulary(teacher, cfg.teacher_dim,
                                                    cache_dir=self.cache_dir,
                                                    progress=self.progress)
        start = time.perf_counter()
        tokens = TokenBatch(_token_ids(teacher, self._texts))
        axes, explained = principal_axes(vocab_vectors, cfg.student_dim, center=True)
        self.pca_explained = float(explained.sum())
        reduced = (vocab_vectors - vocab_vectors.mean(axis=0)) @ axes
        weights = sif_weights(tokens.select(train_rows)[0], len(vocab_vectors),
                              cfg.sif_coefficient)
        weights[teacher.tokenizer.special_token_ids()] = 0.0
        student = StaticStudent(reduced * weights[:, None], tokens)
        if cfg.fine_tune and cfg.num_iterations > 0:
            self.log = train(student, x, train_rows, val_rows, cfg, rng, self._progress_callback())
        else:
            self.log = TrainingLog(stopped="no fine-tuning (fine_tune=False or num_iterations=0)")
        self.log.seconds = time.perf_counter() - start
        self.student = student
        return self.log

    # -- evaluation ------------------------------------------------------------------------------

    def encode(self, texts: Sequence[str], teacher: Any = None) -> np.ndarray:
        """Student embeddings ``[n, student_dim]`` float32 (unit length) through the trainer's
        numpy path; the exported model gives the same vectors. The projection student runs the
        teacher first (``teacher`` defaults to the one embeddings were collected with)."""
        student = self._require_student()
        texts = _check_texts(texts, "texts", allow_empty=True)
        teacher = _as_teacher(teacher) if teacher is not None else self._teacher
        if isinstance(student, ProjectionStudent):
            x = teacher_io.embed_texts(teacher, texts, self.config.teacher_dim,
                                       cache_dir=None, progress=False)
            return student.embed(x)
        return student.embed_ids(_token_ids(teacher, texts))

    def evaluate(self, test_texts: Sequence[str], teacher: Any = None, *,
                 measure_speed: bool = True) -> DistillationMetrics:
        """Fidelity of the student to the teacher on held-out texts (see
        :class:`DistillationMetrics`); ``measure_speed`` times both on up to 512 of the texts."""
        student = self._require_student()
        test_texts = _check_texts(test_texts, "test_texts")
        teacher = _as_teacher(teacher) if teacher is not None else self._teacher
        t = teacher_io.embed_texts(teacher, test_texts, self.config.teacher_dim,
                                   cache_dir=self.cache_dir, progress=self.progress)
        if isinstance(student, ProjectionStudent):
            s = student.embed(t)
        else:
            s = student.embed_ids(_token_ids(teacher, test_texts))
        speed = self._measure_speed(test_texts[:SPEED_SAMPLE], teacher) if measure_speed else None
        self.metrics = fidelity(
            s, t, self.config.seed,
            dimension_reduction=self.config.teacher_dim / self.config.student_dim, speed=speed,
        )
        return self.metrics

    def _measure_speed(self, texts: list[str], teacher: Any) -> tuple[float, float]:
        """(student texts/s, teacher texts/s), each the best of two timed runs after a warm-up."""
        def rate(fn) -> float:
            fn(texts[:8])
            best = min(_timed(fn, texts) for _ in range(2))
            return len(texts) / best

        teacher_rate = rate(lambda batch: teacher.encode(batch))
        student_rate = rate(lambda batch: self.encode(batch, teacher))
        return student_rate, teacher_rate

    # -- export ----------------------------------------------------------------------------------

    def export_model(self, path: str | Path, output_format: ModelFormat | str | None = None, *,
                     overwrite: bool = False) -> Path:
        """Write the trained student.

        ``ONNX`` (default from the config): a model folder with ``model.onnx`` (token ids and
        attention mask in, ``sentence_embedding [batch, student_dim]`` out), the teacher's
        tokenizer and config, and ``sutra_student.json``; ``sutra.Embedder(path)`` and plain
        ONNX Runtime load it. ``NPZ``: one file with the student's arrays and metadata.
        ``SAFETENSORS``: one file with a PyTorch state dict (see :class:`ModelFormat`).

        Raises:
            NotTrainedError: nothing has been trained yet.
            ValueError: the format cannot be produced for this student/teacher (with the reason).
            FileExistsError: ``path`` exists and ``overwrite`` is false.
        """
        student = self._require_student()
        fmt = ModelFormat(output_format or self.config.output_format)
        description = self._description()
        if fmt is ModelFormat.ONNX:
            teacher_folder = getattr(getattr(self._teacher, "model", None), "path", None)
            if teacher_folder is None:
                raise ValueError(
                    "ONNX export needs a sutra.Embedder teacher (its tokenizer files and, for the "
                    f"projection student, its ONNX graph); got {type(self._teacher).__name__}"
                )
            if isinstance(student, ProjectionStudent):
                graph = self._teacher_graph()
                model = projection_graph(graph, student.weight)
            else:
                model = static_graph(student.table)
            return write_atomically(Path(path), model_folder_writer(model, teacher_folder,
                                                                    description),
                                    is_dir=True, overwrite=overwrite)
        arrays = self._state_dict(student, torch_layout=fmt is ModelFormat.SAFETENSORS)
        if fmt is ModelFormat.NPZ:
            def write(target: Path) -> None:
                with open(target, "wb") as f:  # np.savez on a path would append ".npz"
                    np.savez(f, **arrays, metadata=np.array(json.dumps(description, default=str)))
        else:
            from safetensors.numpy import save_file

            def write(target: Path) -> None:
                save_file(arrays, str(target),
                          metadata={k: str(v) for k, v in description.items()})
        return write_atomically(Path(path), write, is_dir=False, overwrite=overwrite)

    def _teacher_graph(self) -> Path:
        teacher = self._teacher
        graph = teacher_io.onnx_graph(teacher)
        if graph is None:
            raise ValueError("ONNX export of the projection student needs the teacher's ONNX graph "
                             f"(a sutra.Embedder on the cpu backend); {teacher!r} has none")
        if getattr(teacher.config, "dimensions", None):
            raise ValueError(
                f"the teacher truncates its embeddings (dimensions={teacher.config.dimensions}), "
                "which its ONNX graph does not do; collect with a teacher without `dimensions`"
            )
        if teacher.config.long_text == "window":
            raise ValueError("the teacher uses long_text='window', which is not part of its ONNX "
                             "graph; use long_text='truncate' for a teacher to export")
        return Path(graph)

    @staticmethod
    def _state_dict(student: Any, torch_layout: bool) -> dict[str, np.ndarray]:
        if isinstance(student, ProjectionStudent):
            w = student.weight.astype(np.float32)
            # torch.nn.Linear stores weight as [out_features, in_features]
            return {"linear.weight": np.ascontiguousarray(w.T)} if torch_layout else {"weight": w}
        table = np.ascontiguousarray(student.table, dtype=np.float32)
        return {"embedding.weight": table} if torch_layout else {"table": table}

    def _description(self) -> dict[str, Any]:
        cfg = self.config
        teacher_model = getattr(self._teacher, "model", None)
        return {
            "kind": cfg.student,
            "student_dim": cfg.student_dim,
            "teacher_dim": cfg.teacher_dim,
            "teacher": getattr(teacher_model, "name", type(self._teacher).__name__),
            "teacher_fingerprint": teacher_io.teacher_fingerprint(self._teacher),
            "training_texts": len(self._texts),
            "config": {k: (v.value if isinstance(v, ModelFormat) else v)
                       for k, v in cfg.__dict__.items()},
            "metrics": self.metrics.as_dict() if self.metrics else None,
            "format_file": STUDENT_FILE,
        }

    # -- helpers ---------------------------------------------------------------------------------

    def _require_data(self) -> np.ndarray:
        if self._embeddings is None:
            raise NotTrainedError("no teacher embeddings: call collect_teacher_embeddings() first")
        return self._embeddings

    def _require_student(self) -> Any:
        if self.student is None:
            raise NotTrainedError("no trained student: call train() first")
        return self.student

    def _progress_callback(self):
        if not self.progress:
            return None
        from tqdm.auto import tqdm

        bar = tqdm(total=self.config.num_iterations, desc=f"training {self.config.student}",
                   unit="step")

        def update(step: int, loss: float) -> None:
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss:.4f}")
            if step == self.config.num_iterations:
                bar.close()

        return update


def _timed(fn, texts) -> float:
    start = time.perf_counter()
    fn(texts)
    return time.perf_counter() - start


def _check_texts(texts: Any, name: str, allow_empty: bool = False) -> list[str]:
    if isinstance(texts, str) or texts is None:
        raise TypeError(f"{name} must be a sequence of strings, got {type(texts).__name__}")
    texts = list(texts)
    if not texts and not allow_empty:
        raise ValueError(f"{name} is empty; distillation needs a corpus of texts")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{index}] is {type(text).__name__}; every item must be a str")
    return texts


def _as_teacher(teacher: Any) -> Any:
    if isinstance(teacher, (str, Path)):
        from ..embedder import Embedder

        return Embedder(teacher)
    if teacher is None or not hasattr(teacher, "encode"):
        raise TypeError(
            "teacher must be a sutra.Embedder, a model name, or an object with "
            f"encode(texts, batch_size=...); got {type(teacher).__name__}"
        )
    return teacher


def _token_ids(teacher: Any, texts: list[str]) -> list[list[int]]:
    """The teacher's token ids of ``texts`` (lower-casing and truncation as its encode does)."""
    if teacher.model.do_lower_case:
        texts = [t.lower() for t in texts]
    return [teacher.tokenizer.truncate(ids, teacher.max_seq_length)
            for ids in teacher.tokenizer.encode(texts)]
