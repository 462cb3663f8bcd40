"""sutra's CPU backend against sentence-transformers (torch, float32) on the same weights.

The reference embeddings are committed fixtures made by tests/fixtures/make_reference_embeddings.py.
The bar is cosine >= 0.99999 for every text, for both presets.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import sutra

FIXTURES = Path(__file__).parent / "fixtures"
TEXTS = json.loads((FIXTURES / "texts.json").read_text(encoding="utf-8"))
COSINE_BAR = 0.99999


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("preset", ["efficient", "high-quality"])
def test_sentence_embeddings_match_sentence_transformers(preset, request):
    embedder = request.getfixturevalue("minilm" if preset == "efficient" else "mpnet")
    reference = np.load(FIXTURES / f"reference_{preset.replace('-', '_')}.npz")
    with warnings.catch_warnings():  # over-long fixture texts; the warning has its own test
        warnings.simplefilter("ignore", sutra.LongTextTruncatedWarning)
        ours = embedder.encode(TEXTS, batch_size=16)
    expected = reference["embeddings"]
    assert ours.shape == expected.shape and ours.dtype == np.float32
    cos = _cosines(ours, expected)
    worst = int(np.argmin(cos))
    assert cos.min() >= COSINE_BAR, (
        f"{preset}: text {worst} {TEXTS[worst][:60]!r} has cosine {cos[worst]:.7f}"
    )
    # Both presets end in a Normalize module: unit length like the reference.
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_token_embeddings_match_sentence_transformers(minilm):
    reference = np.load(FIXTURES / "reference_efficient.npz")
    counts = reference["token_counts"]
    texts = TEXTS[: len(counts)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sutra.LongTextTruncatedWarning)
        ours = minilm.encode(texts, output_value="token_embeddings")
    assert [len(t) for t in ours] == counts.tolist()
    flat = np.concatenate(ours, axis=0)
    cos = _cosines(flat, reference["token_embeddings"])
    assert cos.min() >= COSINE_BAR


@pytest.mark.parametrize("preset", ["efficient", "high-quality"])
def test_packed_graph_matches_sentence_transformers(preset, request):
    """The packed (padding-free) graph on the fixture texts in input order, seven sequences of
    mixed lengths per pass (the longest at the model's maximum length) in attention rows of two
    neighbours, against the reference."""
    embedder = request.getfixturevalue("minilm" if preset == "efficient" else "mpnet")
    reference = np.load(FIXTURES / f"reference_{preset.replace('-', '_')}.npz")
    texts = [t.lower() for t in TEXTS] if embedder.model.do_lower_case else TEXTS
    rows = [embedder.tokenizer.truncate(ids, embedder.max_seq_length)
            for ids in embedder.tokenizer.encode(texts)]
    assert max(map(len, rows)) == embedder.max_seq_length
    ours = np.empty((len(rows), embedder.dimensions), dtype=np.float32)
    tokens = []
    for first in range(0, len(rows), 7):
        chunk = rows[first:first + 7]
        cu = np.concatenate([[0], np.cumsum([len(r) for r in chunk])]).astype(np.int64)
        flat = np.concatenate(chunk).astype(np.int64)
        pairs = np.unique(np.concatenate([cu[::2], cu[-1:]]))
        sentence, token_out = embedder.backend.forward_packed(flat, cu, want_tokens=True,
                                                              cu_rowlens=pairs)
        ours[first:first + len(chunk)] = sentence
        tokens += [token_out[cu[k]:cu[k + 1]] for k in range(len(chunk))]
    cos = _cosines(ours, reference["embeddings"])
    worst = int(np.argmin(cos))
    assert cos.min() >= COSINE_BAR, (
        f"{preset}: text {worst} {TEXTS[worst][:60]!r} has cosine {cos[worst]:.7f}"
    )
    if preset == "efficient":
        counts = reference["token_counts"]
        assert [len(t) for t in tokens[: len(counts)]] == counts.tolist()
        cos = _cosines(np.concatenate(tokens[: len(counts)]), reference["token_embeddings"])
        assert cos.min() >= COSINE_BAR
