"""The similarity-distillation loss and its gradient, written out in numpy.

A student is trained to reproduce the teacher's *similarity structure*, not its coordinates (the
two live in spaces of different widths). For a mini-batch of B texts with teacher similarities
``T = Tn Tnᵀ`` (cosines) and student embeddings ``Z [B, k]`` (before normalization):

    S = Z / |Z|                      (row-wise)
    C = S Sᵀ                         (student cosines)
    loss = alpha · τ² · mean_i KL(p_i ‖ q_i)
         + (1 - alpha) · (mean_{i≠j} (C_ij - T_ij)²  [+ mean_i (1 - corr(C_i, T_i))])

with ``p_i = softmax_{j≠i}(T_ij / τ)`` and ``q_i = softmax_{j≠i}(C_ij / τ)`` over the other texts
of the batch, and ``corr`` the Pearson correlation (a centred cosine) of row i of C and T, off the
diagonal. The diagonal is left out everywhere: it is 1 for both and carries no information.

:func:`similarity_loss` returns the loss and ``dloss/dZ``; students chain that to their own
parameters. ``tests/test_distill.py`` checks the gradient against finite differences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = 1e-12


@dataclass(frozen=True)
class LossParts:
    """The terms of one evaluation of the loss (already weighted by alpha)."""

    total: float
    kl: float
    mse: float
    correlation: float


def normalize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x / |x|, |x|)`` row-wise; zero rows stay zero."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    return x / np.maximum(norms, _EPS)[:, None], norms


def teacher_similarities(teacher: np.ndarray) -> np.ndarray:
    """Cosine-similarity matrix ``[B, B]`` of teacher embeddings ``[B, D]``."""
    tn, _ = normalize_rows(np.asarray(teacher, dtype=np.float64))
    return tn @ tn.T


def _masked_softmax(logits: np.ndarray, off_diagonal: np.ndarray) -> np.ndarray:
    shifted = np.where(off_diagonal, logits, -np.inf)
    shifted = shifted - shifted.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def similarity_loss(z: np.ndarray, t: np.ndarray, *, temperature: float, alpha: float,
                    use_cosine_loss: bool,
                    need_grad: bool = True) -> tuple[LossParts, np.ndarray | None]:
    """Loss of student embeddings ``z [B, k]`` against teacher similarities ``t [B, B]``.

    Returns ``(parts, dloss/dz)`` (the gradient is ``None`` when ``need_grad`` is false). Computed
    in float64: batches are small and the gradient check needs the precision.
    """
    z = np.asarray(z, dtype=np.float64)
    b = z.shape[0]
    if b < 3:
        raise ValueError(f"the similarity loss needs at least 3 rows, got {b}")
    s, norms = normalize_rows(z)
    c = s @ s.T
    off = ~np.eye(b, dtype=bool)
    n_off = b * (b - 1)
    tau = float(temperature)

    # KL(p ‖ q) per row over the off-diagonal entries; τ² keeps its gradient's scale independent
    # of τ (Hinton et al.).
    p = _masked_softmax(t / tau, off)
    q = _masked_softmax(c / tau, off)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.where(off, np.log(np.maximum(p, 1e-300)) - np.log(np.maximum(q, 1e-300)), 0.0)
    kl = tau * tau * float(np.sum(p * log_ratio)) / b
    grad_c = alpha * tau * (q - p) / b

    diff = np.where(off, c - t, 0.0)
    mse = float(np.sum(diff * diff)) / n_off
    grad_c = grad_c + (1.0 - alpha) * 2.0 * diff / n_off

    corr_loss = 0.0
    if use_cosine_loss:
        # Pearson correlation of each row's off-diagonal entries (the mask removes the diagonal
        # from the means and from the norms).
        m = off.astype(np.float64)
        count = b - 1
        cc = (c - (c * m).sum(1, keepdims=True) / count) * m
        tc = (t - (t * m).sum(1, keepdims=True) / count) * m
        cn = np.maximum(np.sqrt((cc * cc).sum(1)), _EPS)
        tn = np.maximum(np.sqrt((tc * tc).sum(1)), _EPS)
        r = (cc * tc).sum(1) / (cn * tn)
        corr_loss = float(np.mean(1.0 - r))
        # d r / d c_row = (tc/|tc| - r cc/|cc|) / |cc|; both terms are already centred, so the
        # centring's Jacobian leaves them unchanged.
        dr = (tc / tn[:, None] - r[:, None] * cc / cn[:, None]) / cn[:, None]
        grad_c = grad_c - (1.0 - alpha) * dr * m / b

    parts = LossParts(
        total=alpha * kl + (1.0 - alpha) * (mse + corr_loss),
        kl=alpha * kl,
        mse=(1.0 - alpha) * mse,
        correlation=(1.0 - alpha) * corr_loss,
    )
    if not need_grad:
        return parts, None
    # C = S Sᵀ  ->  dS = (G + Gᵀ) S ;  S = Z/|Z|  ->  dZ = (dS - S (S·dS)) / |Z|
    grad_s = (grad_c + grad_c.T) @ s
    radial = np.einsum("ij,ij->i", s, grad_s)
    grad_z = (grad_s - s * radial[:, None]) / np.maximum(norms, _EPS)[:, None]
    return parts, grad_z
