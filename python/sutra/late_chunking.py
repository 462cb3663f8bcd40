"""Late chunking: chunk embeddings that see the whole document.

Günther et al., "Late Chunking: Contextual Chunk Embeddings Using Long-Context Embedding Models"
(2024): run the encoder over the document once and mean-pool its token states per chunk, instead
of embedding each chunk alone. Each chunk's vector then carries what the rest of the document
says about it ("it", "the city", a section's topic). A document longer than the model accepts is
read in macro windows that overlap: a token's state comes from the window where it has at least
``macro_overlap`` tokens of left context (the first window keeps all of its tokens), as the
paper's long late chunking does.

Chunks are token ranges: consecutive runs of ``chunk_tokens`` tokens (with ``overlap``), or the
tokens inside character spans the caller gives. The pooled vectors go through the rest of the
model's pipeline (its Dense modules, the Matryoshka cut, its normalization), so they live in the
same space as the model's sentence embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import _core
from .backends.base import TokenBatch
from .backends.head import PipelineHead

if TYPE_CHECKING:
    from .embedder import Embedder


@dataclass(frozen=True)
class Chunk:
    """One chunk of a document.

    Attributes:
        text: ``document[start:end]``.
        start, end: character offsets of the chunk's first and past its last token.
        tokens: the chunk's token range ``[first, last + 1)`` in the document's tokens (without
            special tokens).
        embedding: float32 ``[dimensions]``.
    """

    text: str
    start: int
    end: int
    tokens: tuple[int, int]
    embedding: np.ndarray


def token_ranges(count: int, chunk_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """``[first, end)`` runs of ``chunk_tokens`` tokens over ``count`` tokens, each starting
    ``chunk_tokens - overlap`` after the previous one; the last one ends at ``count``."""
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be a positive int, got {chunk_tokens!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < chunk_tokens:
        raise ValueError(f"overlap must be an int in [0, chunk_tokens={chunk_tokens}), "
                         f"got {overlap!r}")
    ranges = []
    first = 0
    while True:
        end = min(first + chunk_tokens, count)
        ranges.append((first, end))
        if end >= count:
            return ranges
        first += chunk_tokens - overlap


def span_ranges(offsets: np.ndarray, spans: Sequence[tuple[int, int]],
                length: int) -> list[tuple[int, int]]:
    """Token ranges of character ``spans`` ``[start, end)``: the tokens whose characters
    intersect the span. ``offsets`` int ``[n, 2]`` are the tokens' character ranges."""
    starts, ends = offsets[:, 0], offsets[:, 1]
    ranges = []
    for index, span in enumerate(spans):
        try:
            start, end = (int(v) for v in span)
        except (TypeError, ValueError):
            raise ValueError(f"spans[{index}] must be a (start, end) pair of ints, "
                             f"got {span!r}") from None
        if not 0 <= start < end <= length:
            raise ValueError(f"spans[{index}] = ({start}, {end}) must satisfy "
                             f"0 <= start < end <= len(document) = {length}")
        first = int(np.searchsorted(ends, start, side="right"))  # first token ending after start
        last = int(np.searchsorted(starts, end, side="left"))  # tokens starting before end
        if first >= last:
            raise ValueError(f"spans[{index}] = ({start}, {end}) holds no token (only "
                             "characters the tokenizer drops, such as spaces)")
        ranges.append((first, last))
    return ranges


def macro_windows(count: int, capacity: int, macro_overlap: int) -> list[tuple[int, int, int]]:
    """(first, end, keep_from) of the windows over ``count`` tokens: at most ``capacity`` tokens
    each, the next starting ``capacity - macro_overlap`` later; a token's state is taken from
    ``[keep_from, end)`` of exactly one window (``keep_from`` is ``first + macro_overlap`` after
    the first window)."""
    if (isinstance(macro_overlap, bool) or not isinstance(macro_overlap, int)
            or not 0 <= macro_overlap < capacity):
        raise ValueError(f"macro_overlap must be in [0, {capacity}) (the tokens a window holds "
                         f"besides the special tokens), got {macro_overlap!r}")
    return [(first, end, first if index == 0 else first + macro_overlap)
            for index, (first, end) in enumerate(token_ranges(count, capacity, macro_overlap))]


def encode_chunks(embedder: Embedder, document: str, *, chunk_tokens: int | None = None,
                  overlap: int = 0, spans: Sequence[tuple[int, int]] | None = None,
                  macro_overlap: int | None = None,
                  max_seq_length: int | None = None) -> list[Chunk]:
    """See :meth:`sutra.Embedder.encode_chunks` (which checks ``max_seq_length``)."""
    max_length = embedder.max_seq_length if max_seq_length is None else max_seq_length
    if not isinstance(document, str):
        raise TypeError(f"document must be a str, got {type(document).__name__}")
    if (chunk_tokens is None) == (spans is None):
        raise ValueError("give either chunk_tokens (chunks of that many tokens) or spans "
                         "(character ranges), not both and not neither")
    if embedder.model.do_lower_case:
        source = document.lower()
        if len(source) != len(document):
            raise ValueError("this model lower-cases its input and the document has characters "
                             "whose lower case is longer, so character offsets would not match")
    else:
        source = document
    ids, offsets = embedder.tokenizer.encode_with_offsets(source)
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    if not ids:
        raise ValueError("the document holds no token to chunk")
    ranges = (token_ranges(len(ids), chunk_tokens, overlap) if spans is None
              else span_ranges(offsets, spans, len(document)))

    pooled = _chunk_means(embedder, ids, ranges, macro_overlap, max_length)
    vectors = PipelineHead(embedder.model.pipeline).finish(pooled)
    dimensions = embedder.config.dimensions
    if dimensions is not None and dimensions < vectors.shape[1]:  # Matryoshka, as encode() cuts
        vectors = _core.truncate_and_normalize(vectors, dimensions, embedder.model.normalize)
    return [Chunk(document[offsets[first, 0]:offsets[end - 1, 1]], int(offsets[first, 0]),
                  int(offsets[end - 1, 1]), (first, end), vectors[i])
            for i, (first, end) in enumerate(ranges)]


def _chunk_means(embedder: Embedder, ids: list[int], ranges: list[tuple[int, int]],
                 macro_overlap: int | None, max_length: int) -> np.ndarray:
    """float32 ``[len(ranges), H]``: the mean of the last hidden states of each chunk's tokens,
    the document read in one pass when it fits in ``max_length`` tokens, else in overlapping
    macro windows of that length in one backend call, each token's state taken from the window
    that keeps it (the one where it has the most left context). A chunk is pooled on the
    backend (on the device for the GPU engine) per window it falls in, and those means are
    combined by their token counts."""
    tokenizer = embedder.tokenizer
    specials = tokenizer.encode([""])[0]
    prefix = specials[:tokenizer.num_prefix_special]
    suffix = specials[tokenizer.num_prefix_special:]
    capacity = max_length - len(specials)
    if macro_overlap is None:
        macro_overlap = capacity // 4
    windows = macro_windows(len(ids), capacity, macro_overlap)
    sequences = [prefix + ids[first:end] + suffix for first, end, _ in windows]
    # Window w keeps document tokens [keep_w, end_w); those ranges partition the document.
    pieces, owners = [], []
    for chunk, (first, end) in enumerate(ranges):
        for w, (start, stop, keep) in enumerate(windows):
            lo, hi = max(first, keep), min(end, stop)
            if lo < hi:
                pieces.append((w, len(prefix) + lo - start, len(prefix) + hi - start))
                owners.append(chunk)
    pieces_array = np.asarray(pieces, dtype=np.int32).reshape(-1, 3)
    limits = embedder.backend.pass_limits(embedder.config.batch_size,
                                          embedder.config.max_batch_tokens)
    means = embedder.backend.segment_means(TokenBatch.from_sequences(sequences), pieces_array,
                                           limits)
    owner = np.asarray(owners, dtype=np.int64)
    counts = (pieces_array[:, 2] - pieces_array[:, 1]).astype(np.float64)
    if len(owner) == len(ranges):  # every chunk in one window: its mean as pooled
        return np.ascontiguousarray(means, dtype=np.float32)
    sums = np.zeros((len(ranges), means.shape[1]), dtype=np.float64)
    np.add.at(sums, owner, means.astype(np.float64) * counts[:, None])
    totals = np.bincount(owner, weights=counts, minlength=len(ranges))
    return (sums / totals[:, None]).astype(np.float32)
