"""sutra against sentence-transformers 6.x module pipelines: every Pooling mode, Dense, Normalize.

The fixtures are model folders saved by sentence-transformers 6.x itself (one tiny random BERT,
different modules after it) with reference embeddings from sentence-transformers on torch (CPU,
float32), made by tests/fixtures/make_pipeline_fixtures.py; nothing here needs torch. The bar is
cosine >= 0.99999 for every text, and norms equal to the reference's: most pipelines do not end
in Normalize, so their norms are far from 1 and a missing or extra Normalize fails.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import sutra

FIXTURES = Path(__file__).parent / "fixtures"
PIPELINES = FIXTURES / "pipelines"
with np.load(PIPELINES / "reference.npz") as _npz:
    REFERENCE = {key: _npz[key] for key in _npz.files}
META = json.loads(str(REFERENCE["meta"]))
COUNT = int(REFERENCE["count"])
TEXTS = json.loads((FIXTURES / "texts.json").read_text(encoding="utf-8"))[:COUNT]
BATCH_SIZE = META["batch_size"]
COSINE_BAR = 0.99999
NORM_RTOL = 1e-4

# (folder, prompt_name): every pipeline without a prompt, and the one whose Pooling excludes the
# prompt (include_prompt=False) with its named prompt; its reference is "<folder>.query".
CASES = [(name, None) for name in META["pipelines"]] + [("mean_no_prompt", "query")]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("name", "prompt_name"), CASES,
    ids=[name if prompt is None else f"{name}.{prompt}" for name, prompt in CASES],
)
def test_pipeline_matches_sentence_transformers(name, prompt_name):
    expected = REFERENCE[name if prompt_name is None else f"{name}.{prompt_name}"]
    embedder = sutra.Embedder(str(PIPELINES / name), backend="cpu")
    assert embedder.dimensions == expected.shape[1], (
        f"{name}: dimensions {embedder.dimensions}, sentence-transformers gives {expected.shape[1]}"
    )
    with warnings.catch_warnings():  # over-long fixture texts; the warning has its own test
        warnings.simplefilter("ignore", sutra.LongTextTruncatedWarning)
        ours = embedder.encode(TEXTS, batch_size=BATCH_SIZE, prompt_name=prompt_name)
    assert ours.shape == expected.shape and ours.dtype == np.float32
    cos = _cosines(ours, expected)
    ranked = np.where(np.isnan(cos), -np.inf, cos)  # a zero vector (NaN cosine) is the worst
    worst = int(np.argmin(ranked))
    assert ranked.min() >= COSINE_BAR, (
        f"{name} (prompt_name={prompt_name!r}): text {worst} {TEXTS[worst][:60]!r} has cosine "
        f"{cos[worst]:.7f}; {int((ranked < COSINE_BAR).sum())} of {len(TEXTS)} texts below "
        f"{COSINE_BAR}"
    )
    np.testing.assert_allclose(
        np.linalg.norm(ours.astype(np.float64), axis=1),
        np.linalg.norm(expected.astype(np.float64), axis=1),
        rtol=NORM_RTOL, err_msg=f"{name} (prompt_name={prompt_name!r}): norms",
    )


@pytest.mark.parametrize("name", META["pipelines"])
def test_fixture_folders_are_sentence_transformers_6_saves(name):
    folder = PIPELINES / name
    saved_by = _json(folder / "config_sentence_transformers.json")["__version__"]
    assert saved_by["sentence_transformers"].split(".")[0] == "6"
    modules = _json(folder / "modules.json")
    assert modules[0]["type"].endswith(".Transformer") and modules[0]["path"] == ""
    pooling = [m for m in modules if m["type"].endswith(".Pooling")]
    assert len(pooling) == 1
    config = _json(folder / pooling[0]["path"] / "config.json")
    # 6.x writes one "pooling_mode" string, not the pooling_mode_*_tokens flags of older releases
    assert isinstance(config["pooling_mode"], str)
    assert [key for key in config if key.startswith("pooling_mode_")] == []
    assert set(config) == {"embedding_dimension", "pooling_mode", "include_prompt"}


def test_fixture_folders_share_one_transformer():
    """The encoder's files are the same bytes in every folder (git stores them once), so the
    pipelines differ only in the modules after it."""
    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    shared = ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json",
              "sentence_bert_config.json")
    digests = {name: tuple(digest(PIPELINES / name / f) for f in shared)
               for name in META["pipelines"]}
    assert len(set(digests.values())) == 1, digests


def _assert_matches(ours: np.ndarray, expected: np.ndarray, what: str) -> None:
    cos = _cosines(ours, expected)
    worst = int(np.nanargmin(np.where(np.isnan(cos), -np.inf, cos)))
    assert np.nan_to_num(cos, nan=-1).min() >= COSINE_BAR, f"{what}: text {worst} cosine {cos[worst]}"
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), np.linalg.norm(expected, axis=1),
                               rtol=NORM_RTOL, err_msg=what)


@pytest.mark.parametrize("name", ["weightedmean", "lasttoken", "mean_dense_dense_normalize",
                                  "max_dense_sigmoid"])
def test_packed_passes_match_sentence_transformers(name):
    """The packed graph (what a server's mixed batches run on) carries the same pipeline."""
    embedder = sutra.Embedder(str(PIPELINES / name), backend="cpu")
    assert embedder.backend.prepare_for_mixed_lengths() and embedder.backend.packs_mixed_lengths
    packed = []
    original = embedder.backend.forward_packed

    def counting(*args, **kwargs):
        packed.append(1)
        return original(*args, **kwargs)

    embedder.backend.forward_packed = counting
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sutra.LongTextTruncatedWarning)
        ours = embedder.encode(TEXTS, batch_size=BATCH_SIZE)
    assert packed, "no pass ran packed"
    _assert_matches(ours, REFERENCE[name], f"{name} packed")


@pytest.mark.parametrize("name", ["mean_dense_dense_normalize", "cls_dense_relu_normalize",
                                  "max_dense_sigmoid", "mean_no_prompt"])
def test_a_models_own_onnx_file_is_followed_by_the_pipeline(tmp_path, name):
    """onnx_source='model' with a graph that stops at the last hidden state (what Hugging Face
    exports give): pooling, Dense and Normalize run after it on the host."""
    onnx = pytest.importorskip("onnx")
    built = sutra.Embedder(str(PIPELINES / name), backend="cpu")
    folder = tmp_path / name
    shutil.copytree(PIPELINES / name, folder)
    graph = onnx.load(str(built.backend.graph_path))
    kept = [o for o in graph.graph.output if o.name == "token_embeddings"]
    del graph.graph.output[:]
    graph.graph.output.extend(kept)
    (folder / "onnx").mkdir()
    onnx.save(graph, str(folder / "onnx" / "model.onnx"))
    own = sutra.Embedder(str(folder), backend="cpu", onnx_source="model")
    prompt_name = "query" if name == "mean_no_prompt" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sutra.LongTextTruncatedWarning)
        ours = own.encode(TEXTS, batch_size=BATCH_SIZE, prompt_name=prompt_name)
    key = name if prompt_name is None else f"{name}.{prompt_name}"
    _assert_matches(ours, REFERENCE[key], f"{name} own ONNX")
