"""Late chunking (``Embedder.encode_chunks``): chunk vectors are means of the token states of one
pass over the document (macro windows past the model's length), through the rest of the model's
pipeline. The references are computed here from the backend's own token states."""

from __future__ import annotations

import re

import numpy as np
import pytest
import sutra
from sutra import _core
from sutra.backends import TokenBatch
from sutra.late_chunking import macro_windows, token_ranges

DOCUMENT = ("Berlin is the capital and largest city of Germany. Its more than 3.85 million "
            "inhabitants make it the most populous city of the European Union. The city is also "
            "one of the states of Germany, and the third smallest state in the country by area.")


def _token_states(embedder, ids: list[int]) -> np.ndarray:
    """The content tokens' final states of one pass over ``ids`` (with the special tokens)."""
    specials = embedder.tokenizer.encode([""])[0]
    prefix = specials[:embedder.tokenizer.num_prefix_special]
    suffix = specials[embedder.tokenizer.num_prefix_special:]
    limits = embedder.backend.pass_limits(None, "auto")
    out = embedder.backend.encode_rows(TokenBatch.from_sequences([prefix + ids + suffix]), limits,
                                       want_tokens=True)
    return out.token_states[len(prefix):len(prefix) + len(ids)]


def _normalized_mean(states: np.ndarray) -> np.ndarray:
    return _core.l2_normalize_rows(states.mean(0, keepdims=True).astype(np.float32))[0]


def test_chunks_are_means_of_one_full_pass(minilm):
    ids, _ = minilm.tokenizer.encode_with_offsets(DOCUMENT)
    states = _token_states(minilm, ids)
    chunks = minilm.encode_chunks(DOCUMENT, chunk_tokens=9, overlap=3)
    assert [c.tokens for c in chunks] == token_ranges(len(ids), 9, 3)
    for chunk in chunks:
        first, end = chunk.tokens
        np.testing.assert_allclose(chunk.embedding, _normalized_mean(states[first:end]),
                                   atol=2e-6)
        assert chunk.text == DOCUMENT[chunk.start:chunk.end] and chunk.text.strip() == chunk.text


def test_chunks_see_their_context(minilm):
    """The point of late chunking: "Its ... inhabitants" alone says nothing about Berlin."""
    spans = [m.span() for m in re.finditer(r"[^.]+\.", DOCUMENT)]
    late = minilm.encode_chunks(DOCUMENT, spans=spans)
    alone = minilm.encode([c.text for c in late])
    berlin = minilm.encode("Berlin")
    assert [c.text for c in late] == [DOCUMENT[a:b].strip() for a, b in spans]
    assert float(late[1].embedding @ berlin) > float(alone[1] @ berlin) + 0.05


def test_character_spans_take_the_tokens_they_touch(minilm):
    ids, offsets = minilm.tokenizer.encode_with_offsets(DOCUMENT)
    states = _token_states(minilm, ids)
    start = DOCUMENT.index("capital") + 2  # inside a word: its token(s) count
    chunk, = minilm.encode_chunks(DOCUMENT, spans=[(start, start + 20)])
    first, end = chunk.tokens
    assert offsets[first][0] <= start < offsets[first][1]
    assert offsets[end - 1][0] < start + 20 <= offsets[end][0] or end == len(ids)
    np.testing.assert_allclose(chunk.embedding, _normalized_mean(states[first:end]), atol=2e-6)


def test_a_long_document_reads_in_macro_windows(minilm):
    document = " ".join([DOCUMENT] * 14)  # about 700 tokens: three windows of at most 254
    ids, _ = minilm.tokenizer.encode_with_offsets(document)
    capacity = minilm.max_seq_length - minilm.tokenizer.num_special
    windows = macro_windows(len(ids), capacity, capacity // 4)
    assert len(windows) >= 3
    chunks = minilm.encode_chunks(document, chunk_tokens=32)
    assert chunks[0].tokens[0] == 0 and chunks[-1].tokens[1] == len(ids)
    # A window supplies the states of its tokens from `keep` on (the next window keeps only
    # what lies past this one's end). Chunks inside one window's tokens equal means of that
    # window's own pass.
    checked = 0
    for first_w, end_w, keep in windows:
        states = _token_states(minilm, ids[first_w:end_w])
        for chunk in chunks:
            first, end = chunk.tokens
            if keep <= first and end <= end_w:
                np.testing.assert_allclose(
                    chunk.embedding, _normalized_mean(states[first - first_w:end - first_w]),
                    atol=2e-6)
                checked += 1
    assert checked >= len(chunks) - (len(windows) - 1)  # all but chunks across a seam


def test_macro_windows_cover_every_token_once():
    for count, capacity, overlap in [(1, 254, 63), (254, 254, 63), (255, 254, 63),
                                     (1000, 254, 0), (1000, 10, 9)]:
        kept = [t for first, end, keep in macro_windows(count, capacity, overlap)
                for t in range(keep, end)]
        assert kept == list(range(count))


def test_matryoshka_dimensions_apply(efficient_folder):
    small = sutra.Embedder(efficient_folder, backend="cpu", dimensions=128)
    chunks = small.encode_chunks(DOCUMENT, chunk_tokens=16)
    assert all(c.embedding.shape == (128,) for c in chunks)
    assert np.allclose([np.linalg.norm(c.embedding) for c in chunks], 1.0, atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "give either chunk_tokens"),
    ({"chunk_tokens": 8, "spans": [(0, 5)]}, "give either chunk_tokens"),
    ({"chunk_tokens": 0}, "chunk_tokens must be a positive int"),
    ({"chunk_tokens": 8, "overlap": 8}, r"overlap must be an int in \[0, chunk_tokens=8\)"),
    ({"spans": [(5, 2)]}, r"spans\[0\] = \(5, 2\) must satisfy"),
    ({"spans": [(0, 10_000)]}, r"spans\[0\] = \(0, 10000\) must satisfy"),
    ({"spans": [(6, 7)]}, r"spans\[0\] = \(6, 7\) holds no token"),
    ({"spans": ["ab"]}, r"spans\[0\] must be a \(start, end\) pair of ints"),
    ({"chunk_tokens": 8, "macro_overlap": 254}, r"macro_overlap must be in \[0, 254\)"),
])
def test_bad_arguments_are_named(minilm, kwargs, message):
    with pytest.raises(ValueError, match=message):
        minilm.encode_chunks(DOCUMENT, **kwargs)


def test_bad_documents_are_named(minilm):
    with pytest.raises(TypeError, match="document must be a str, got bytes"):
        minilm.encode_chunks(b"abc", chunk_tokens=4)
    with pytest.raises(ValueError, match="holds no token"):
        minilm.encode_chunks("   ", chunk_tokens=4)


def test_backend_segment_means_are_means_of_token_states_and_refuse_bad_spans(minilm):
    """The backend contract's default (pool on the host from encode_rows' token states)."""
    from sutra.backends.base import PassLimits

    batch = TokenBatch.from_sequences([[101, 2000, 2001, 2002, 102], [101, 3000, 102]])
    limits = PassLimits(8, 4096)
    states = minilm.backend.encode_rows(batch, limits, want_tokens=True).token_states
    spans = np.array([[0, 1, 4], [1, 0, 3], [0, 4, 5], [0, 0, 5]], dtype=np.int32)
    got = minilm.backend.segment_means(batch, spans, limits)
    want = np.stack([states[1:4].mean(0), states[5:8].mean(0), states[4:5].mean(0),
                     states[0:5].mean(0)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for bad in ([2, 0, 1], [0, 3, 3], [1, 0, 4], [0, -1, 2]):
        with pytest.raises(ValueError, match=r"^segment 0 is \(sequence"):
            minilm.backend.segment_means(batch, np.array([bad], dtype=np.int32), limits)
