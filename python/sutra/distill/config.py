"""Configuration of a distillation run."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any

STUDENTS = ("projection", "static")
DEFAULT_LEARNING_RATES = {"projection": 2e-5, "static": 1e-3}
DEFAULT_BATCH_SIZES = {"projection": 32, "static": 128}


class ModelFormat(str, enum.Enum):
    """What :meth:`DistillationTrainer.export_model` writes.

    ``ONNX``: a model folder (``model.onnx``, tokenizer, config) that ``sutra.Embedder(path)`` and
    plain ONNX Runtime load. ``NPZ``: one ``.npz`` file with the student's arrays and metadata.
    ``SAFETENSORS``: one ``.safetensors`` file holding a PyTorch state dict (``linear.weight``
    ``[student_dim, teacher_dim]`` for ``torch.nn.Linear(teacher_dim, student_dim, bias=False)``;
    ``embedding.weight`` ``[vocab, student_dim]`` for ``torch.nn.EmbeddingBag(mode="sum")``).
    """

    ONNX = "onnx"
    NPZ = "npz"
    SAFETENSORS = "safetensors"


@dataclass(frozen=True)
class DistillationConfig:
    """Hyper-parameters of a distillation run; checked on construction.

    Attributes:
        teacher_dim: width of the teacher's embeddings (768 for all-mpnet-base-v2).
        student_dim: width of the student's embeddings, below ``teacher_dim``.
        temperature: softens the in-batch similarity distributions of the KL term (T in T²·KL).
        alpha: weight of the KL term; ``1 - alpha`` weighs the similarity-matrix MSE (and the
            row-correlation term when ``use_cosine_loss``).
        num_iterations: most optimizer steps (training may stop early on the held-out split).
        batch_size: texts per mini-batch; the losses compare ``batch_size x batch_size``
            similarity matrices. ``None`` picks the measured default of the student: 32 for
            ``projection``, 128 for ``static`` (on 100k WordNet texts, 128 raised the static
            student's held-out spearman fidelity from 0.642 to 0.664 in 36 s of training;
            256 reached 0.668 but took 101 s).
        learning_rate: Adam's step size; ``None`` picks the measured default of the student:
            ``2e-5`` for ``projection`` (W's entries are about 1/sqrt(teacher_dim), so a step of
            5e-4 per entry, as Adam takes, wipes out the PCA start: the held-out loss rose 10x in
            250 steps) and ``1e-3`` for ``static``.
        use_cosine_loss: add ``1 - corr(row of student similarities, row of teacher
            similarities)`` averaged over the batch (a centred cosine) to the MSE term.
        output_format: what :meth:`DistillationTrainer.export_model` writes by default.
        student: ``"projection"`` (teacher, then a learned ``teacher_dim x student_dim`` matrix)
            or ``"static"`` (one vector per vocabulary entry, no transformer at run time).
        seed: seeds the mini-batch order, the held-out split and the evaluation pairs.
        validation_fraction: share of the training texts held out for early stopping.
        eval_every: optimizer steps between two held-out evaluations.
        patience: held-out evaluations without improvement before training stops.
        fine_tune: for the static student, run the optimizer after the PCA/SIF initialization
            (the projection student always trains).
        sif_coefficient: ``a`` of the SIF weight ``a / (a + p(token))`` of the static student.
    """

    teacher_dim: int = 768
    student_dim: int = 384
    temperature: float = 2.0
    alpha: float = 0.5
    num_iterations: int = 10000
    batch_size: int | None = None
    learning_rate: float | None = None
    use_cosine_loss: bool = True
    output_format: ModelFormat = ModelFormat.ONNX
    student: str = "projection"
    seed: int = 0
    validation_fraction: float = 0.05
    eval_every: int = 250
    patience: int = 4
    fine_tune: bool = True
    sif_coefficient: float = 1e-3

    def __post_init__(self) -> None:
        if self.student not in STUDENTS:
            raise ValueError(f"student must be one of {', '.join(STUDENTS)}; got {self.student!r}")
        # None means the student's measured default (see the attribute docs)
        if self.batch_size is None:
            object.__setattr__(self, "batch_size", DEFAULT_BATCH_SIZES[self.student])
        if self.learning_rate is None:
            object.__setattr__(self, "learning_rate", DEFAULT_LEARNING_RATES[self.student])
        for name in ("teacher_dim", "student_dim", "batch_size", "eval_every", "patience"):
            _positive_int(name, getattr(self, name))
        _non_negative_int("num_iterations", self.num_iterations)
        _non_negative_int("seed", self.seed)
        if self.student_dim >= self.teacher_dim:
            raise ValueError(
                f"student_dim={self.student_dim} must be smaller than teacher_dim="
                f"{self.teacher_dim}: a student that is not smaller saves nothing"
            )
        if self.batch_size < 3:
            raise ValueError(
                f"batch_size={self.batch_size}: the in-batch similarity losses need at least 3 "
                "texts per batch"
            )
        for name in ("temperature", "learning_rate", "sif_coefficient"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha!r}")
        if not 0.0 < self.validation_fraction < 0.5:
            raise ValueError(
                f"validation_fraction must be in (0, 0.5), got {self.validation_fraction!r}"
            )
        try:
            object.__setattr__(self, "output_format", ModelFormat(self.output_format))
        except ValueError:
            allowed = ", ".join(f.value for f in ModelFormat)
            raise ValueError(
                f"output_format must be one of {allowed}; got {self.output_format!r}"
            ) from None

    def with_overrides(self, **changes: Any) -> DistillationConfig:
        """A copy with some fields changed (checked again)."""
        return replace(self, **changes)


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _non_negative_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
