"""ModernBERT on the CPU backend against transformers' ModernBertModel + sentence-transformers.

The fixture (tests/fixtures/modernbert/, made by tests/fixtures/make_modernbert_fixture.py) is a
tiny random ModernBERT (4 layers: 0 and 3 global, 1 and 2 with a window of 8 tokens on each side)
saved by sentence-transformers 6 with mean pooling and Normalize, and reference embeddings from
sentence-transformers on torch (float32) for short texts and long ones (1,000 to 8,000 tokens, so
the windows matter). Nothing here needs torch. The bar is cosine >= 0.999999 for every text: a
window one token off, which several ports of ModernBERT got wrong, lands near 0.9998.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import sutra
from sutra.backends import create_backend, engine_refuses
from sutra.backends.cuda import CudaBackend
from sutra.models.spec import ModelFolder

FOLDER = Path(__file__).parent / "fixtures" / "modernbert"
with np.load(FOLDER / "reference.npz") as _npz:
    REFERENCE = _npz["embeddings"]
    TEXTS = [str(t) for t in _npz["texts"]]
    TOKEN_COUNTS = _npz["token_counts"]
LONG = [i for i, n in enumerate(TOKEN_COUNTS) if n >= 1000]
COSINE_BAR = 0.999999


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _assert_matches(ours: np.ndarray, indices: list[int], what: str) -> None:
    cos = _cosines(ours, REFERENCE[indices])
    worst = int(np.argmin(cos))
    assert cos.min() >= COSINE_BAR, (
        f"{what}: text {indices[worst]} ({TOKEN_COUNTS[indices[worst]]} tokens) has cosine "
        f"{cos[worst]:.9f}; {int((cos < COSINE_BAR).sum())} of {len(indices)} below {COSINE_BAR}")


@pytest.fixture(scope="module")
def embedder() -> sutra.Embedder:
    return sutra.Embedder(str(FOLDER), backend="cpu")


@pytest.fixture(scope="module")
def original_form(tmp_path_factory) -> Path:
    """The fixture with config.json in the original form (global_attn_every_n_layers,
    global_rope_theta, local_rope_theta)."""
    folder = tmp_path_factory.mktemp("modernbert") / "original"
    shutil.copytree(FOLDER, folder)
    shutil.copy(FOLDER / "config_original.json", folder / "config.json")
    return folder


def test_fixture_has_long_texts_and_both_config_forms():
    assert len(LONG) >= 3 and TOKEN_COUNTS.max() >= 8000 and TOKEN_COUNTS.min() < 16
    saved = json.loads((FOLDER / "config.json").read_text())
    original = json.loads((FOLDER / "config_original.json").read_text())
    assert "layer_types" in saved and "rope_parameters" in saved
    assert "layer_types" not in original and "rope_parameters" not in original
    assert {"global_rope_theta", "local_rope_theta", "global_attn_every_n_layers"} <= set(original)


def test_cpu_matches_transformers(embedder):
    ours = embedder.encode(TEXTS, batch_size=8)
    assert ours.shape == REFERENCE.shape and ours.dtype == np.float32
    _assert_matches(ours, list(range(len(TEXTS))), "cpu backend")
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)


def test_both_config_forms_describe_the_same_encoder(original_form):
    new = ModelFolder.load(FOLDER).architecture
    old = ModelFolder.load(original_form).architecture
    for arch in (new, old):
        assert arch.attention_windows == (None, 8, 8, None)
        assert arch.rotary_thetas == (80_000.0, 2_000.0, 2_000.0, 80_000.0)
        assert arch.position_kind == "rotary" and arch.norm_position == "pre" and arch.gated_ffn
        assert arch.max_sequence_length == 8192
    assert old == new


def test_both_config_forms_give_the_same_embeddings(embedder, original_form):
    texts = [TEXTS[i] for i in range(0, len(TEXTS), 5)] + [TEXTS[LONG[0]]]
    ours = sutra.Embedder(str(original_form), backend="cpu").encode(texts)
    np.testing.assert_allclose(ours, embedder.encode(texts), rtol=0, atol=1e-6)


def test_canonical_weights():
    arch = ModelFolder.load(FOLDER).architecture
    names = arch.weight_names
    # layer 0 has no attention norm (an Identity in transformers); no biases in this config
    assert "layers.0.attention_norm.weight" not in names
    assert names["layers.1.attention_norm.weight"] == "layers.1.attn_norm.weight"
    assert names["layers.2.attention.qkv.weight"] == "layers.2.attn.Wqkv.weight"
    assert arch.shapes["layers.2.attention.qkv.weight"] == (192, 64)
    assert arch.shapes["layers.2.ffn.in.weight"] == (192, 64)  # [2I, H]: GeGLU
    assert names["final_norm.weight"] == "final_norm.weight"
    assert not [n for n in names if n.endswith(".bias")]
    assert "embeddings.position" not in names


def test_a_bias_the_config_turns_on_must_be_there(tmp_path):
    folder = tmp_path / "biased"
    shutil.copytree(FOLDER, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "attention_bias": True}))
    with pytest.raises(sutra.UnsupportedModelError, match="layers.0.attn.Wqkv.bias"):
        ModelFolder.load(folder)


def test_scaled_rotary_is_refused(tmp_path):
    folder = tmp_path / "scaled"
    shutil.copytree(FOLDER, folder)
    config = json.loads((folder / "config.json").read_text())
    config["rope_parameters"]["full_attention"]["rope_type"] = "yarn"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(sutra.UnsupportedModelError, match="rope_type 'yarn'"):
        ModelFolder.load(folder)


@pytest.mark.parametrize("change", [-1, 1], ids=["narrower", "wider"])
def test_a_window_one_token_off_fails_the_bar(monkeypatch, change):
    """The bar sees an off-by-one window: the same graph with every local window changed by
    one token drops below it on the long texts."""
    ort = pytest.importorskip("onnxruntime")
    from safetensors.numpy import load_file
    from sutra.onnx import PoolingSpec, _arch, build_encoder_graph
    from tokenizers import Tokenizer

    parse = _arch.describe_encoder

    def off_by_one(config, shapes):
        arch = parse(config, shapes)
        windows = tuple(None if w is None else w + change for w in arch.attention_windows)
        return dataclasses.replace(arch, attention_windows=windows)

    monkeypatch.setattr(_arch, "describe_encoder", off_by_one)
    config = json.loads((FOLDER / "config.json").read_text())
    graph = build_encoder_graph(config, load_file(str(FOLDER / "model.safetensors")),
                                PoolingSpec("mean", True))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(FOLDER / "tokenizer.json"))
    ours = []
    for i in LONG:
        ids = np.asarray(tokenizer.encode(TEXTS[i]).ids, dtype=np.int64)[None]
        (sentence,) = session.run(["sentence_embedding"],
                                  {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        ours.append(sentence[0])
    cos = _cosines(np.asarray(ours), REFERENCE[LONG])
    assert cos.min() < COSINE_BAR, f"window {change:+d}: cosines {cos}"


def test_a_batch_equals_texts_one_at_a_time(embedder):
    picked = [0, 3, 7, 11, LONG[0], 19, LONG[1]]
    texts = [TEXTS[i] for i in picked]
    together = embedder.encode(texts, batch_size=8)
    alone = np.stack([embedder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(together, alone, rtol=0, atol=2e-6)
    _assert_matches(together, picked, "batch")


def test_packed_graph_matches_transformers():
    """The packed graph (what sutra serve and streaming run for mixed batches) carries the
    rotary positions and windows per sequence."""
    embedder = sutra.Embedder(str(FOLDER), backend="cpu")
    assert embedder.backend.prepare_for_mixed_lengths() and embedder.backend.packs_mixed_lengths
    packed = []
    original = embedder.backend.forward_packed

    def counting(*args, **kwargs):
        packed.append(1)
        return original(*args, **kwargs)

    embedder.backend.forward_packed = counting
    picked = list(range(0, 40, 2)) + [LONG[0]]
    ours = embedder.encode([TEXTS[i] for i in picked], batch_size=32)
    assert packed, "no pass ran packed"
    _assert_matches(ours, picked, "packed")


def test_gpu_engine_refuses_the_tiny_fixture_for_its_head_size():
    """The engine runs ModernBERT (tests/test_gpu_modernbert.py), but not a head size of 16."""
    model = ModelFolder.load(FOLDER)
    reason = engine_refuses(model)
    assert reason is not None
    for what in ("head size of 16", "32, 64, 128", "cpu backend"):
        assert what in reason, reason
    # Refused before anything touches a GPU, so this holds on machines without one.
    with pytest.raises(sutra.BackendUnavailableError, match="head size of 16"):
        CudaBackend(model)


def test_auto_takes_the_cpu_backend_where_the_engine_refuses(monkeypatch):
    from sutra import backends

    model = ModelFolder.load(FOLDER)
    monkeypatch.setattr(backends, "cuda_status", lambda: (True, "a pretend GPU"))
    with pytest.raises(sutra.BackendUnavailableError, match="cannot run this model.*head size"):
        create_backend(model, "cuda")
    assert create_backend(model, "auto").name == "cpu"


def test_auto_works_here():
    embedder = sutra.Embedder(str(FOLDER))
    assert embedder.backend.name == "cpu"
    picked = [1, 2, LONG[0]]
    _assert_matches(embedder.encode([TEXTS[i] for i in picked]), picked, "backend='auto'")
