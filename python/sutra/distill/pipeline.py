"""The whole distillation run behind ``sutra distill``: corpus file in, student folder out."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import DistillationConfig, ModelFormat
from .corpus import read_corpus, split_corpus
from .metrics import DistillationMetrics
from .trainer import DistillationTrainer
from .training import TrainingLog

logger = logging.getLogger("sutra.distill")


@dataclass
class DistillationResult:
    """What :func:`distill_corpus` did."""

    output: Path
    metrics: DistillationMetrics
    log: TrainingLog
    train_texts: int
    test_texts: int
    teacher_seconds: float
    pca_explained: float | None


def distill_corpus(corpus: str | os.PathLike[str], out: str | os.PathLike[str], *,
                   teacher: Any = "high-quality", config: DistillationConfig | None = None,
                   test_size: int | None = None, max_train: int | None = None,
                   output_format: ModelFormat | str | None = None, overwrite: bool = False,
                   cache_dir: str | Path | None | bool = True, progress: bool = True,
                   measure_speed: bool = True) -> DistillationResult:
    """Read ``corpus`` (one text per line), hold out ``test_size`` texts by the config's seed
    (default: 10% of the corpus, between 3 and 2000), train on the rest (at most ``max_train``),
    evaluate on the held-out texts and export to ``out``.

    The output is checked before any work starts, so a run never trains for minutes and then
    finds it cannot write.
    """
    config = config or DistillationConfig()
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    texts = read_corpus(corpus)
    if test_size is None:
        test_size = min(2000, max(3, len(texts) // 10))
    train_texts, test_texts = split_corpus(texts, test_size, config.seed)
    if max_train is not None:
        train_texts = train_texts[:max_train]

    if isinstance(teacher, (str, Path)):
        from ..embedder import Embedder

        teacher = Embedder(teacher)
    trainer = DistillationTrainer(config, cache_dir=cache_dir, progress=progress)
    start = time.perf_counter()
    trainer.collect_teacher_embeddings(train_texts, teacher)
    teacher_seconds = time.perf_counter() - start
    log = trainer.train()
    metrics = trainer.evaluate(test_texts, teacher, measure_speed=measure_speed)
    output = trainer.export_model(out, output_format, overwrite=overwrite)
    return DistillationResult(output, metrics, log, len(train_texts), len(test_texts),
                              teacher_seconds, trainer.pca_explained)
