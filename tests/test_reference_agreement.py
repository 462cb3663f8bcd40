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
