"""Distillation: smaller and faster students of an embedding model, trained in numpy.

>>> from sutra.distill import DistillationConfig, DistillationTrainer
>>> trainer = DistillationTrainer(DistillationConfig(student_dim=256, student="static"))
>>> trainer.collect_teacher_embeddings(train_texts, "high-quality")
>>> trainer.train()
>>> print(trainer.evaluate(test_texts))
>>> trainer.export_model("mpnet-static-256")    # sutra.Embedder("mpnet-static-256") loads it

Students: ``projection`` (teacher, then a PCA-initialized and trained matrix to fewer dimensions)
and ``static`` (per-token vectors distilled from the teacher: no transformer at encode time).
"""

from .config import DistillationConfig, ModelFormat
from .corpus import read_corpus, split_corpus
from .losses import similarity_loss
from .metrics import DistillationMetrics
from .trainer import DistillationTrainer, NotTrainedError
from .training import TrainingLog

__all__ = [
    "DistillationConfig",
    "DistillationMetrics",
    "DistillationTrainer",
    "ModelFormat",
    "NotTrainedError",
    "TrainingLog",
    "read_corpus",
    "similarity_loss",
    "split_corpus",
]
