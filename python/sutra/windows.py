"""Long texts: overlapping token windows and the aggregation of their embeddings (C++ core)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from . import _core


class AggregationMethod(str, enum.Enum):
    """How window embeddings become one document embedding.

    MEAN: the plain mean. MAX: the element-wise maximum. WEIGHTED: a center-weighted mean; window
    ``i`` weighs ``tokens_i * (1 - 0.5 * |2 * c_i / L - 1|)``, where ``c_i`` is the window's center
    in the document's content tokens and ``L`` their count, so a window in the middle of the
    document counts twice as much per token as one at either end.
    """

    MEAN = "mean"
    MAX = "max"
    WEIGHTED = "weighted"


@dataclass(frozen=True)
class Windows:
    """Windows of one token sequence.

    Attributes:
        token_ids: one int64 array per window, special tokens included.
        offsets: int64 ``[n, 2]``; the ``[start, end)`` of each window in the content tokens (the
            tokens between the leading and trailing special tokens).
        content_length: how many content tokens the sequence has.
    """

    token_ids: list[np.ndarray]
    offsets: np.ndarray
    content_length: int

    def __len__(self) -> int:
        return len(self.token_ids)


class SlidingWindowAttention:
    """Splits long token sequences into overlapping windows that fit the model.

    Every window keeps the sequence's leading and trailing special tokens (``[CLS]`` and ``[SEP]``
    for BERT), so each window is a well-formed model input of at most ``window_size`` tokens.
    Consecutive windows share ``overlap`` content tokens.

    Args:
        window_size: tokens per window, special tokens included.
        overlap: content tokens shared by consecutive windows, ``0 <= overlap``.
        num_prefix_special: special tokens at the start of a sequence.
        num_suffix_special: special tokens at the end of a sequence.

    Raises:
        ValueError: ``window_size`` leaves no room for content after specials and overlap.
    """

    def __init__(self, window_size: int, overlap: int = 0, num_prefix_special: int = 1,
                 num_suffix_special: int = 1) -> None:
        self.window_size = int(window_size)
        self.overlap = int(overlap)
        self.num_prefix_special = int(num_prefix_special)
        self.num_suffix_special = int(num_suffix_special)
        # Validate now rather than on the first long text.
        _core.create_windows(
            np.zeros(self.num_prefix_special + self.num_suffix_special + 1, dtype=np.int64),
            self.window_size, self.overlap, self.num_prefix_special, self.num_suffix_special,
        )

    def create_windows(self, token_ids) -> Windows:
        """Split ``token_ids`` (1-D, special tokens included) into windows.

        A sequence that fits in one window comes back unchanged as a single window.
        """
        ids = np.ascontiguousarray(np.asarray(token_ids, dtype=np.int64))
        if ids.ndim != 1:
            raise ValueError(f"token_ids must be 1-D, got shape {ids.shape}")
        windows, offsets = _core.create_windows(
            ids, self.window_size, self.overlap, self.num_prefix_special, self.num_suffix_special
        )
        content = max(0, len(ids) - self.num_prefix_special - self.num_suffix_special)
        return Windows(list(windows), np.asarray(offsets), content)

    @staticmethod
    def aggregate_embeddings(embeddings: np.ndarray, method: AggregationMethod | str = "mean",
                             windows: Windows | None = None) -> np.ndarray:
        """Combine ``[n, dim]`` float32 window embeddings into one ``[dim]`` vector.

        ``WEIGHTED`` needs the ``windows`` the embeddings were computed from. The result is not
        normalized; normalize it when the embeddings are compared by cosine.
        """
        return aggregate_embeddings(embeddings, method, windows)


def aggregate_embeddings(embeddings: np.ndarray, method: AggregationMethod | str = "mean",
                         windows: Windows | None = None) -> np.ndarray:
    """See :meth:`SlidingWindowAttention.aggregate_embeddings`."""
    method = AggregationMethod(method).value
    if method == "weighted" and windows is None:
        raise ValueError("method='weighted' needs the windows the embeddings came from")
    offsets = None if windows is None else np.ascontiguousarray(windows.offsets, dtype=np.int64)
    total = 0 if windows is None else windows.content_length
    return _core.aggregate_embeddings(
        np.ascontiguousarray(embeddings, dtype=np.float32), method, offsets, total
    )
