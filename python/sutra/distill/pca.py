"""Principal components of embeddings, in numpy."""

from __future__ import annotations

import numpy as np


def principal_axes(x: np.ndarray, k: int, *, center: bool) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` principal axes of the rows of ``x [n, d]``.

    With ``center=False`` the axes are those of the second-moment matrix ``xᵀx`` (PCA about the
    origin): projecting on them keeps as much of the rows' inner products as any rank-``k`` map,
    which is what a student that must keep the teacher's cosines wants. With ``center=True`` it is
    the usual PCA of the covariance.

    Returns:
        ``(axes [d, k] float64 with orthonormal columns, explained [k])``: the share of the
        (centred) sum of squares each axis keeps, in decreasing order. Each axis' sign is fixed so
        its largest-magnitude entry is positive (deterministic across BLAS builds).
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    if not 0 < k <= d:
        raise ValueError(f"k must be in 1..{d}, got {k}")
    if center:
        x = x - x.mean(axis=0, keepdims=True)
    gram = x.T @ x
    values, vectors = np.linalg.eigh(gram)
    order = np.argsort(values)[::-1][:k]
    axes = vectors[:, order]
    signs = np.sign(axes[np.argmax(np.abs(axes), axis=0), np.arange(k)])
    axes = axes * np.where(signs == 0, 1.0, signs)
    total = float(np.trace(gram)) or 1.0
    return axes, np.maximum(values[order], 0.0) / total
