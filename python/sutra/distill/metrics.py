"""How faithfully a student reproduces its teacher on held-out texts."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .losses import normalize_rows

MAX_PAIRS = 500_000  # all pairs up to ~1000 texts; a seeded sample of pairs beyond


@dataclass(frozen=True)
class DistillationMetrics:
    """Fidelity of a student to its teacher on held-out texts.

    Attributes:
        mean_squared_error: mean of (student cosine - teacher cosine)² over the held-out pairs.
        cosine_similarity: mean over held-out texts of the cosine between the text's row of
            student similarities and its row of teacher similarities (to the other held-out
            texts): how well each text's neighbourhood is kept, 1.0 at best.
        dimension_reduction: teacher_dim / student_dim (2.0 for 768 -> 384).
        num_samples: held-out texts.
        spearman_fidelity: Spearman rank correlation between student and teacher cosines over the
            held-out pairs (all pairs, or a seeded sample of ``MAX_PAIRS``).
        recall_at_10: share of each text's 10 nearest held-out neighbours under the teacher that
            are also among its 10 nearest under the student, averaged.
        speedup: student texts/s divided by teacher texts/s, both measured on the same texts in
            the same process (``nan`` when not measured).
        student_texts_per_second, teacher_texts_per_second: the two measured rates.
    """

    mean_squared_error: float
    cosine_similarity: float
    dimension_reduction: float
    num_samples: int
    spearman_fidelity: float
    recall_at_10: float
    speedup: float
    student_texts_per_second: float = float("nan")
    teacher_texts_per_second: float = float("nan")

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def __str__(self) -> str:
        rows = [
            ("spearman fidelity", f"{self.spearman_fidelity:.4f}"),
            ("recall@10", f"{self.recall_at_10:.4f}"),
            ("cosine similarity (rows)", f"{self.cosine_similarity:.4f}"),
            ("mean squared error", f"{self.mean_squared_error:.6f}"),
            ("dimension reduction", f"{self.dimension_reduction:.2f}x"),
            ("held-out texts", f"{self.num_samples}"),
        ]
        if np.isfinite(self.speedup):
            rows.append(("speed vs teacher", f"{self.speedup:.2f}x "
                         f"({self.student_texts_per_second:,.0f} vs "
                         f"{self.teacher_texts_per_second:,.0f} texts/s)"))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy.stats.rankdata 'average')."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # groups of equal values: each gets the mean of the ranks it spans
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def held_out_pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs i < j: all of them, or ``MAX_PAIRS`` distinct ones drawn by ``seed``."""
    total = n * (n - 1) // 2
    if total <= MAX_PAIRS:
        return np.triu_indices(n, k=1)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=MAX_PAIRS * 2)
    j = rng.integers(0, n, size=MAX_PAIRS * 2)
    keep = i != j
    lo, hi = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
    _, first = np.unique(lo * n + hi, return_index=True)
    first = np.sort(first)[:MAX_PAIRS]
    return lo[first], hi[first]


def recall_at_k(student: np.ndarray, teacher: np.ndarray, k: int = 10,
                block: int = 2048) -> float:
    """Mean overlap of the k nearest neighbours (self excluded) under both embeddings."""
    n = len(student)
    k = min(k, n - 1)
    hits = 0
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        sims = []
        for emb in (teacher, student):
            s = emb[rows] @ emb.T
            s[np.arange(len(rows)), rows] = -np.inf
            sims.append(np.argpartition(-s, k - 1, axis=1)[:, :k])
        hits += sum(len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(*sims))
    return hits / (n * k)


def _pair_cosines(x: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """``x[i] · x[j]`` per pair, in chunks (gathering all pairs at once would take gigabytes)."""
    out = np.empty(len(i))
    for start in range(0, len(i), chunk):
        a, b = i[start:start + chunk], j[start:start + chunk]
        out[start:start + chunk] = np.einsum("ij,ij->i", x[a], x[b])
    return out


def fidelity(student: np.ndarray, teacher: np.ndarray, seed: int, *,
             dimension_reduction: float, speed: tuple[float, float] | None) -> DistillationMetrics:
    """Metrics of student embeddings ``[n, k]`` against teacher embeddings ``[n, D]``."""
    n = len(student)
    if n < 3:
        raise ValueError(f"evaluation needs at least 3 held-out texts, got {n}")
    s = normalize_rows(np.asarray(student, dtype=np.float64))[0]
    t = normalize_rows(np.asarray(teacher, dtype=np.float64))[0]
    i, j = held_out_pairs(n, seed)
    cs, ct = _pair_cosines(s, i, j), _pair_cosines(t, i, j)
    # per-text neighbourhood agreement, over rows of the similarity matrices (blocked)
    row_cos = []
    for start in range(0, n, 2048):
        rows = np.arange(start, min(start + 2048, n))
        a, b = s[rows] @ s.T, t[rows] @ t.T
        a[np.arange(len(rows)), rows] = 0.0
        b[np.arange(len(rows)), rows] = 0.0
        row_cos.append(np.einsum("ij,ij->i", a, b)
                       / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12))
    student_rate, teacher_rate = speed if speed is not None else (float("nan"), float("nan"))
    return DistillationMetrics(
        mean_squared_error=float(np.mean((cs - ct) ** 2)),
        cosine_similarity=float(np.mean(np.concatenate(row_cos))),
        dimension_reduction=float(dimension_reduction),
        num_samples=n,
        spearman_fidelity=spearman(cs, ct),
        recall_at_10=recall_at_k(s, t),
        speedup=student_rate / teacher_rate if speed is not None else float("nan"),
        student_texts_per_second=student_rate,
        teacher_texts_per_second=teacher_rate,
    )
