"""Principal components of embeddings, in numpy."""

from __future__ import annotations

import numpy as np


def principal_axes(x: np.ndarray, k: int, *, center: bool,
                   rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` principal axes of the rows of ``x [n, d]`` (only ``rows`` when given).

    With ``center=False`` the axes are those of the second-moment matrix ``xᵀx`` (PCA about the
    origin): projecting on them keeps as much of the rows' inner products as any rank-``k`` map,
    which is what a student that must keep the teacher's cosines wants. With ``center=True`` it is
    the usual PCA of the covariance.

    Returns:
        ``(axes [d, k] float64 with orthonormal columns, explained [k])``: the share of the
        (centred) sum of squares each axis keeps, in decreasing order. Each axis' sign is fixed so
        its largest-magnitude entry is positive (deterministic across BLAS builds).
    """
    x = np.asarray(x)
    rows = np.arange(len(x)) if rows is None else np.asarray(rows)
    d = x.shape[1]
    if not 0 < k <= d:
        raise ValueError(f"k must be in 1..{d}, got {k}")
    # xᵀx accumulated in float64 over blocks of rows: no float64 copy of a 100k-row matrix
    gram = np.zeros((d, d))
    column_sums = np.zeros(d)
    for start in range(0, len(rows), 8192):
        block = x[rows[start:start + 8192]].astype(np.float64)
        gram += block.T @ block
        column_sums += block.sum(axis=0)
    if center:
        mean = column_sums / max(len(rows), 1)
        gram -= len(rows) * np.outer(mean, mean)
    values, vectors = np.linalg.eigh(gram)
    order = np.argsort(values)[::-1][:k]
    axes = vectors[:, order]
    signs = np.sign(axes[np.argmax(np.abs(axes), axis=0), np.arange(k)])
    axes = axes * np.where(signs == 0, 1.0, signs)
    total = float(np.trace(gram)) or 1.0
    return axes, np.maximum(values[order], 0.0) / total
