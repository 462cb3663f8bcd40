"""StreamingAggregator: one embedding from many chunk embeddings, accumulated as they arrive."""

from __future__ import annotations

import numpy as np

from .. import _core


class StreamingAggregator:
    """Weighted mean of embeddings added one at a time, re-normalized to unit length.

    Memory stays ``O(dim)`` whatever the number of chunks: only the weighted sum is kept.

    Example::

        aggregator = StreamingAggregator()
        async for chunk in streaming.embed_chunks_stream(document):
            aggregator.add(chunk.embedding, weight=chunk.end - chunk.start)
        document_vector = aggregator.aggregate()
    """

    def __init__(self) -> None:
        self._sum: np.ndarray | None = None
        self._total_weight = 0.0
        self.count = 0

    def add(self, embedding: np.ndarray, weight: float | None = None) -> None:
        """Add one embedding, float ``[dim]``, with ``weight`` (default 1.0; must be >= 0).

        Raises:
            ValueError: the embedding is not 1-D, its width differs from earlier ones, it holds a
                non-finite value, or the weight is negative or not finite.
        """
        vector = np.asarray(embedding, dtype=np.float64)
        if vector.ndim != 1 or vector.size == 0:
            raise ValueError(f"embedding must be a non-empty 1-D array, got shape {vector.shape}")
        if self._sum is not None and vector.shape != self._sum.shape:
            raise ValueError(
                f"embedding has {vector.shape[0]} dimensions; earlier ones had {self._sum.shape[0]}"
            )
        if not np.isfinite(vector).all():
            raise ValueError("embedding holds a NaN or infinite value")
        w = 1.0 if weight is None else float(weight)
        if not np.isfinite(w) or w < 0:
            raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
        if self._sum is None:
            self._sum = np.zeros_like(vector)
        self._sum += w * vector
        self._total_weight += w
        self.count += 1

    def aggregate(self) -> np.ndarray:
        """The weighted mean of the added embeddings scaled to unit length: float32 ``[dim]``.

        Raises:
            ValueError: nothing was added, or every weight was zero (the mean is undefined).
        """
        if self._sum is None:
            raise ValueError("aggregate() needs at least one embedding; none was added")
        if self._total_weight == 0.0:
            raise ValueError("aggregate() is undefined when every weight is zero")
        mean = (self._sum / self._total_weight).astype(np.float32)[np.newaxis]
        # The core's normalization: a zero mean (opposite vectors) has no direction and stays
        # zero rather than turning into NaNs.
        return _core.l2_normalize_rows(mean)[0]

    def reset(self) -> None:
        """Forget every added embedding."""
        self.__init__()
