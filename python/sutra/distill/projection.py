"""The projection student: the teacher's embedding times a learned matrix, then normalized.

    student(text) = normalize(teacher(text) @ W),   W [teacher_dim, student_dim]

W starts as the top principal axes of the teacher embeddings (PCA about the origin, which keeps
their inner products best; see :func:`principal_axes`) and is then trained on the similarity loss.
"""

from __future__ import annotations

import numpy as np

from .losses import normalize_rows
from .pca import principal_axes


class ProjectionStudent:
    """``params["weight"]`` is W ``[teacher_dim, student_dim]`` (float32)."""

    kind = "projection"

    def __init__(self, weight: np.ndarray, teacher: np.ndarray | None = None) -> None:
        self.params = {"weight": np.array(weight, dtype=np.float32)}
        self._teacher = teacher  # the training set's teacher embeddings, rows index it

    @classmethod
    def from_pca(cls, teacher: np.ndarray, student_dim: int,
                 rows: np.ndarray | None = None) -> tuple[ProjectionStudent, np.ndarray]:
        """A student on ``teacher [n, D]`` whose W is the top ``student_dim`` axes of its
        ``rows`` (all by default); also returns each axis' share of the sum of squares."""
        axes, explained = principal_axes(teacher, student_dim, center=False, rows=rows)
        return cls(axes, teacher), explained

    @property
    def weight(self) -> np.ndarray:
        return self.params["weight"]

    def forward(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = self._teacher[rows]
        return x @ self.weight, x

    def backward(self, x: np.ndarray, dz: np.ndarray) -> dict[str, np.ndarray]:
        return {"weight": x.T @ dz.astype(np.float32)}

    def embed(self, teacher: np.ndarray) -> np.ndarray:
        """Student embeddings ``[n, student_dim]`` float32 of teacher embeddings ``[n, D]``."""
        z = np.asarray(teacher, dtype=np.float32) @ self.weight
        return normalize_rows(z)[0]
