"""``max_seq_length`` per call (``encode``, ``embed_tokens``, ``encode_chunks``): rows cut or
windowed at that length for the call only, up to what the model's position table allows, which
may be past the Embedder's own length (256 for all-MiniLM-L6-v2, whose table has 512 positions).
The references are the backend's own forward pass on the cut ids."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import sutra
from sutra import _core
from sutra.backends import TokenBatch

LONG = " ".join(f"Sentence number {i} is about a topic of its own." for i in range(100))
SHORT = "A man is eating food."


def _forward(embedder, seq: list[int]) -> np.ndarray:
    """The sentence embedding of one model row, straight from the padded graph."""
    sentence, _ = embedder.backend.forward(np.array([seq], np.int64),
                                           np.ones((1, len(seq)), np.int64))
    return sentence[0]


def _cut(ids: list[int], length: int) -> list[int]:
    return ids[:length - 1] + ids[-1:]  # [CLS] and content, then [SEP]


def _quiet(call, *args, **kwargs):
    """``call`` with the truncation warning (which has its own tests) ignored."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sutra.LongTextTruncatedWarning)
        return call(*args, **kwargs)


def test_the_model_allows_more_than_the_embedder_uses(minilm):
    """The premise of the other tests: a call can go past the Embedder's own length."""
    assert minilm.max_seq_length == 256 and minilm.model.max_position_embeddings == 512
    assert len(minilm.tokenizer.encode([LONG])[0]) > 1100


@pytest.mark.parametrize("length", [3, 100, 256, 400, 512])
def test_truncation_at_n_equals_embedding_the_first_n_tokens(minilm, length):
    ids = minilm.tokenizer.encode([LONG])[0]
    cut = _cut(ids, length)
    got = _quiet(minilm.encode, LONG, max_seq_length=length)
    np.testing.assert_allclose(got, _forward(minilm, cut), rtol=0, atol=1e-5)
    np.testing.assert_allclose(got, minilm.embed_tokens(cut, max_seq_length=length), atol=1e-6)
    np.testing.assert_allclose(got, _quiet(minilm.embed_tokens, ids, max_seq_length=length),
                               atol=1e-6)
    tokens = _quiet(minilm.encode, [LONG], output_value="token_embeddings",
                    max_seq_length=length)
    assert tokens[0].shape == (length, minilm.model.hidden_size)


def test_a_call_matches_an_embedder_built_with_that_length(efficient_folder, minilm):
    built = sutra.Embedder(efficient_folder, backend="cpu", max_sequence_length=400)
    texts = [SHORT, LONG, LONG[:1500]]
    np.testing.assert_allclose(_quiet(minilm.encode, texts, max_seq_length=400),
                               _quiet(built.encode, texts), atol=1e-6)
    windowed = {"long_text": "window"}
    np.testing.assert_allclose(minilm.encode(texts, max_seq_length=400, **windowed),
                               built.encode(texts, **windowed), atol=1e-6)


def test_a_longer_n_changes_long_texts_only(minilm):
    texts = [SHORT, LONG, "two words"]
    default = _quiet(minilm.encode, texts)
    longer = _quiet(minilm.encode, texts, max_seq_length=512)
    np.testing.assert_allclose(longer[[0, 2]], default[[0, 2]], rtol=0, atol=1e-6)
    assert float(longer[1] @ default[1]) < 0.999
    # embed_tokens is cut at the Embedder's own length unless told otherwise.
    ids = _cut(minilm.tokenizer.encode([LONG])[0], 512)
    np.testing.assert_allclose(minilm.embed_tokens(ids, max_seq_length=512), longer[1],
                               atol=1e-6)
    np.testing.assert_allclose(_quiet(minilm.embed_tokens, ids), default[1], atol=1e-6)


def test_the_default_is_unchanged(minilm):
    texts = [SHORT, LONG]
    default = _quiet(minilm.encode, texts)
    for same in (None, 256, np.int64(256), np.int32(256)):
        np.testing.assert_array_equal(_quiet(minilm.encode, texts, max_seq_length=same), default)
    # The call's length does not stick to the Embedder.
    _quiet(minilm.encode, texts, max_seq_length=20)
    assert minilm.max_seq_length == 256
    np.testing.assert_array_equal(_quiet(minilm.encode, texts), default)


@pytest.mark.parametrize("value", [0, -1, 1, 2, 513, 100_000, True, False, 1.5, 256.0, "256",
                                   np.float32(100)])
def test_values_outside_the_range_are_refused(minilm, value):
    message = r"max_seq_length must be an int in 3\.\.512 .*512 positions.*got " + re.escape(
        repr(value))
    with pytest.raises(ValueError, match=message):
        minilm.encode(SHORT, max_seq_length=value)
    with pytest.raises(ValueError, match="max_seq_length must be an int in 3..512"):
        minilm.embed_tokens([101, 102], max_seq_length=value)
    with pytest.raises(ValueError, match="max_seq_length must be an int in 3..512"):
        minilm.encode_chunks(SHORT, chunk_tokens=4, max_seq_length=value)


def test_the_limit_is_the_models_position_table(mpnet):
    """MPNet's table has 514 rows, of which positions start after the padding index: 512."""
    assert mpnet.model.max_position_embeddings == 512
    with pytest.raises(ValueError, match=r"3\.\.512.*got 513"):
        mpnet.encode(SHORT, max_seq_length=513)
    ids = mpnet.tokenizer.encode([LONG])[0]
    got = _quiet(mpnet.encode, LONG, max_seq_length=512)
    np.testing.assert_allclose(got, _forward(mpnet, _cut(ids, 512)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("length, overlap", [(512, 32), (64, 32), (20, 17)])
def test_window_mode_windows_at_n(efficient_folder, minilm, length, overlap):
    """Windows of ``length`` tokens; the config's overlap (32) is capped so that windows advance
    (at 20 tokens: 17 of the 18 content tokens)."""
    ids = minilm.tokenizer.encode([LONG])[0]
    windows = sutra.SlidingWindowAttention(length, overlap).create_windows(ids)
    assert len(windows) >= 3 and max(map(len, windows.token_ids)) == length
    parts = minilm.embed_tokens([w.tolist() for w in windows.token_ids], max_seq_length=length)
    expected = _core.l2_normalize_rows(parts.mean(0, keepdims=True))[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is truncated
        got = minilm.encode(LONG, long_text="window", max_seq_length=length)
        short = minilm.encode(SHORT, long_text="window", max_seq_length=length)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(short, minilm.encode(SHORT), atol=1e-6)  # one window


def test_the_warning_is_shown_once_per_length(efficient_folder):
    embedder = sutra.Embedder(efficient_folder, backend="cpu")
    with pytest.warns(sutra.LongTextTruncatedWarning,
                      match="truncated to this call's max_seq_length=100"):
        embedder.encode(LONG, max_seq_length=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embedder.encode(LONG, max_seq_length=100)
        embedder.embed_tokens(embedder.tokenizer.encode([LONG])[0], max_seq_length=100)
    # A cut at the Embedder's own length is news: it warns too, then not again.
    with pytest.warns(sutra.LongTextTruncatedWarning,
                      match="truncated to max_sequence_length=256"):
        embedder.encode([LONG, SHORT])
    with pytest.warns(sutra.LongTextTruncatedWarning,
                      match="a text of 1.* tokens was truncated to this call's max_seq_length=512"):
        embedder.embed_tokens(embedder.tokenizer.encode([LONG])[0], max_seq_length=512)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embedder.encode(LONG)
        embedder.encode(LONG, max_seq_length=np.int64(256))
        embedder.encode(LONG, max_seq_length=512)


def test_pipelined_tokenization_takes_the_calls_length(efficient_folder, monkeypatch):
    """The chunked path of a backend faster than the tokenizer (the GPU engine) cuts and
    windows at the call's length too (run on the cpu backend with the pipeline switched on)."""
    plain = sutra.Embedder(efficient_folder, backend="cpu")
    texts = [SHORT, LONG, "two words", LONG[:2000]] * 20
    piped = sutra.Embedder(efficient_folder, backend="cpu")
    monkeypatch.setattr(type(piped.backend), "pipelines_tokenization", property(lambda _: True))
    monkeypatch.setattr(type(piped), "_pipeline_chunk_limits", lambda self: (10, 4000))
    for kwargs in ({"max_seq_length": 400}, {"max_seq_length": 64, "long_text": "window"}):
        expected = _quiet(plain.encode, texts, **kwargs)
        got = _quiet(piped.encode, texts, **kwargs)
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)
    with pytest.warns(sutra.LongTextTruncatedWarning, match="this call's max_seq_length=300"):
        piped.encode(texts, max_seq_length=300)


def test_late_chunking_reads_one_pass_of_n_tokens(minilm):
    """A document of about 400 tokens is one pass at max_seq_length=512 (the chunks equal means
    of that pass's token states), and macro windows at the default 256."""
    document = LONG[:1600]
    ids, _ = minilm.tokenizer.encode_with_offsets(document)
    assert 300 < len(ids) < 510
    specials = minilm.tokenizer.encode([""])[0]
    limits = minilm.backend.pass_limits(None, "auto")
    out = minilm.backend.encode_rows(TokenBatch.from_sequences([specials[:1] + ids + specials[1:]]),
                                     limits, want_tokens=True)
    states = out.token_states[1:1 + len(ids)]
    chunks = minilm.encode_chunks(document, chunk_tokens=40, max_seq_length=512)
    default = minilm.encode_chunks(document, chunk_tokens=40)
    assert [c.tokens for c in chunks] == [c.tokens for c in default]
    for chunk in chunks:
        first, end = chunk.tokens
        mean = _core.l2_normalize_rows(states[first:end].mean(0, keepdims=True))[0]
        np.testing.assert_allclose(chunk.embedding, mean, atol=2e-6)
    # Past the default's first window the states come from other passes.
    last = chunks[-1].tokens
    assert last[0] > 254
    assert float(chunks[-1].embedding @ default[-1].embedding) < 0.99999
    # A small length reads the document in many macro windows, still covering every token.
    small = minilm.encode_chunks(document, chunk_tokens=40, max_seq_length=64)
    assert [c.tokens for c in small] == [c.tokens for c in chunks]
