"""sutra.onnx graph builder against a float64 numpy reference of the HF encoders.

Tiny random-weight models (hidden 32, 4 heads, 2 layers) of every supported architecture run
through ONNX Runtime CPU, fused (contrib ops) and standard-op graphs, all pooling modes. No torch:
the reference below follows transformers' BERT / RoBERTa / MPNet / DistilBERT modeling code and
sentence-transformers' Pooling and Normalize modules.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest

ort = pytest.importorskip("onnxruntime")

from sutra.onnx import (  # noqa: E402
    PoolingSpec,
    build_encoder_graph,
    build_from_folder,
    build_packed_encoder_graph,
    pooling_spec_from_folder,
    supported_architectures,
)
from sutra.onnx._arch import mpnet_relative_buckets  # noqa: E402

# float32 graph vs float64 reference. Observed max abs error ~1e-6 on these sizes (a float32 numpy
# run of the same reference is off by ~8e-7); the bound leaves 20x headroom for other CPUs and
# thread counts and stays far below a real bug (a wrong position id or mask moves outputs ~1e-1).
ATOL = 2e-5

HIDDEN, HEADS, LAYERS, INTER, VOCAB, MAX_POS = 32, 4, 2, 64, 100, 40
POOL_MODES = ("mean", "cls", "max", "mean_sqrt_len", "weightedmean", "lasttoken")

# transformers MPNetEncoder.relative_position_bucket for relative position (key - query) -200..200,
# run-length encoded (bucket, count); produced with torch 2.13 / transformers 5.24.
_TORCH_BUCKETS_RLE = [
    (15, 110), (14, 27), (13, 18), (12, 14), (11, 9), (10, 7), (9, 4), (8, 4), (7, 1), (6, 1),
    (5, 1), (4, 1), (3, 1), (2, 1), (1, 1), (0, 1), (17, 1), (18, 1), (19, 1), (20, 1), (21, 1),
    (22, 1), (23, 1), (24, 4), (25, 4), (26, 7), (27, 9), (28, 14), (29, 18), (30, 27), (31, 110),
]


# --------------------------------------------------------------------------- tiny checkpoints


def make_config(model_type: str, act: str = "gelu") -> dict:
    if model_type == "distilbert":
        return {"model_type": "distilbert", "dim": HIDDEN, "n_heads": HEADS, "n_layers": LAYERS,
                "hidden_dim": INTER, "activation": act, "max_position_embeddings": MAX_POS,
                "vocab_size": VOCAB, "pad_token_id": 0}
    cfg = {"model_type": model_type, "hidden_size": HIDDEN, "num_attention_heads": HEADS,
           "num_hidden_layers": LAYERS, "intermediate_size": INTER, "hidden_act": act,
           "max_position_embeddings": MAX_POS, "vocab_size": VOCAB}
    if model_type == "bert":
        cfg.update(layer_norm_eps=1e-12, type_vocab_size=2, pad_token_id=0)
    elif model_type in ("roberta", "xlm-roberta"):
        cfg.update(layer_norm_eps=1e-5, type_vocab_size=1, pad_token_id=1)
    else:  # mpnet
        cfg.update(layer_norm_eps=1e-5, relative_attention_num_buckets=32, pad_token_id=1)
    return cfg


def _layer_names(model_type: str, i: int) -> dict[str, str]:
    if model_type == "mpnet":
        p = f"encoder.layer.{i}."
        return dict(q=p + "attention.attn.q", k=p + "attention.attn.k", v=p + "attention.attn.v",
                    o=p + "attention.attn.o", ln1=p + "attention.LayerNorm", fi=p + "intermediate.dense",
                    fo=p + "output.dense", ln2=p + "output.LayerNorm")
    if model_type == "distilbert":
        p = f"transformer.layer.{i}."
        return dict(q=p + "attention.q_lin", k=p + "attention.k_lin", v=p + "attention.v_lin",
                    o=p + "attention.out_lin", ln1=p + "sa_layer_norm", fi=p + "ffn.lin1",
                    fo=p + "ffn.lin2", ln2=p + "output_layer_norm")
    p = f"encoder.layer.{i}."
    return dict(q=p + "attention.self.query", k=p + "attention.self.key", v=p + "attention.self.value",
                o=p + "attention.output.dense", ln1=p + "attention.output.LayerNorm",
                fi=p + "intermediate.dense", fo=p + "output.dense", ln2=p + "output.LayerNorm")


def make_weights(model_type: str, seed: int, prefix: str = "") -> dict[str, np.ndarray]:
    """Random float32 checkpoint with HF tensor names (torch Linear layout [out, in])."""
    rng = np.random.default_rng(seed)

    def mat(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w = {
        "embeddings.word_embeddings.weight": mat(VOCAB, HIDDEN, scale=1.0),
        "embeddings.position_embeddings.weight": mat(MAX_POS, HIDDEN, scale=1.0),
        "embeddings.LayerNorm.weight": 1.0 + mat(HIDDEN, scale=0.1),
        "embeddings.LayerNorm.bias": mat(HIDDEN, scale=0.1),
    }
    if model_type == "bert":
        w["embeddings.token_type_embeddings.weight"] = mat(2, HIDDEN, scale=1.0)
    if model_type in ("roberta", "xlm-roberta"):
        w["embeddings.token_type_embeddings.weight"] = mat(1, HIDDEN, scale=1.0)
    if model_type == "mpnet":
        w["encoder.relative_attention_bias.weight"] = mat(32, HEADS, scale=1.0)
    for i in range(LAYERS):
        n = _layer_names(model_type, i)
        for key, (o, i_) in dict(q=(HIDDEN, HIDDEN), k=(HIDDEN, HIDDEN), v=(HIDDEN, HIDDEN),
                                 o=(HIDDEN, HIDDEN), fi=(INTER, HIDDEN), fo=(HIDDEN, INTER)).items():
            w[n[key] + ".weight"] = mat(o, i_, scale=1.0 / math.sqrt(i_))
            w[n[key] + ".bias"] = mat(o, scale=0.1)
        for key in ("ln1", "ln2"):
            w[n[key] + ".weight"] = 1.0 + mat(HIDDEN, scale=0.1)
            w[n[key] + ".bias"] = mat(HIDDEN, scale=0.1)
    return {prefix + k: v for k, v in w.items()}


def pad_id(model_type: str) -> int:
    return 1 if model_type in ("roberta", "xlm-roberta", "mpnet") else 0


def make_batch(model_type: str, lengths: list[int], seed: int, seq: int | None = None):
    """Right-padded ids/mask; real tokens avoid the pad id (HF positions key off input_ids)."""
    rng = np.random.default_rng(seed)
    seq = seq or max(lengths)
    ids = np.full((len(lengths), seq), pad_id(model_type), dtype=np.int64)
    mask = np.zeros((len(lengths), seq), dtype=np.int64)
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.integers(3, VOCAB, size=n)
        mask[b, :n] = 1
    return ids, mask


# --------------------------------------------------------------------------- numpy reference


def _layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _act(x, name):
    if name == "gelu":
        erf = np.vectorize(math.erf)
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    assert name == "relu"
    return np.maximum(x, 0.0)


def _torch_bucket(rel: int) -> int:
    pos = rel + 200
    for value, count in _TORCH_BUCKETS_RLE:
        if pos < count:
            return value
        pos -= count
    raise AssertionError(rel)


def reference(config, weights, ids, mask, pooling: PoolingSpec, dtype=np.float64):
    """HF encoder + sentence-transformers Pooling/Normalize, written out plainly."""
    mt = config["model_type"]
    w = {k: v.astype(dtype) for k, v in weights.items()}
    eps = 1e-12 if mt == "distilbert" else config["layer_norm_eps"]
    act = config.get("activation", config.get("hidden_act"))
    B, S = ids.shape
    x = w["embeddings.word_embeddings.weight"][ids]
    if mt in ("bert", "distilbert"):
        pos = np.broadcast_to(np.arange(S), (B, S))
    else:
        pad = 1 if mt == "mpnet" else config["pad_token_id"]
        not_pad = (ids != pad).astype(np.int64)
        pos = np.cumsum(not_pad, axis=1) * not_pad + pad
    x = x + w["embeddings.position_embeddings.weight"][pos]
    if "embeddings.token_type_embeddings.weight" in w:
        x = x + w["embeddings.token_type_embeddings.weight"][0]
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)

    dh = HIDDEN // HEADS
    key_mask = np.where(mask[:, None, None, :] == 1, 0.0, np.finfo(dtype).min).astype(dtype)
    bias = 0.0
    if mt == "mpnet":
        table = w["encoder.relative_attention_bias.weight"]
        buckets = np.array([[_torch_bucket(j - i) for j in range(S)] for i in range(S)])
        bias = table[buckets].transpose(2, 0, 1)[None]  # [1, heads, S, S]

    def linear(h, name):
        return h @ w[name + ".weight"].T + w[name + ".bias"]

    for i in range(LAYERS):
        n = _layer_names(mt, i)

        def split(h):
            return h.reshape(B, S, HEADS, dh).transpose(0, 2, 1, 3)

        q, k, v = split(linear(x, n["q"])), split(linear(x, n["k"])), split(linear(x, n["v"]))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(dh) + bias + key_mask
        scores = scores - scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(B, S, HIDDEN)
        x = _layer_norm(linear(ctx, n["o"]) + x, w[n["ln1"] + ".weight"], w[n["ln1"] + ".bias"], eps)
        h = linear(_act(linear(x, n["fi"]), act), n["fo"])
        x = _layer_norm(h + x, w[n["ln2"] + ".weight"], w[n["ln2"] + ".bias"], eps)

    m = mask[..., None].astype(dtype)
    if pooling.mode == "mean":
        pooled = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    elif pooling.mode == "mean_sqrt_len":
        pooled = (x * m).sum(1) / np.sqrt(np.maximum(m.sum(1), 1e-9))
    elif pooling.mode == "weightedmean":
        w = m * np.arange(1, S + 1, dtype=dtype)[None, :, None]
        pooled = (x * w).sum(1) / np.maximum(w.sum(1), 1e-9)
    elif pooling.mode == "cls":
        pooled = x[np.arange(B), mask.argmax(1)]
    elif pooling.mode == "lasttoken":
        pooled = x[np.arange(B), mask.sum(1) - 1]
    else:
        pooled = np.where(m == 0, -np.inf, x).max(1)
    if pooling.normalize:
        pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return x, pooled


# --------------------------------------------------------------------------- helpers


def run(model: onnx.ModelProto, ids, mask, level=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = level or ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    tokens, sentence = sess.run(["token_embeddings", "sentence_embedding"],
                                {"input_ids": ids, "attention_mask": mask})
    assert tokens.dtype == np.float32 and sentence.dtype == np.float32
    return tokens, sentence


def assert_matches_reference(config, weights, ids, mask, pooling, fused, label="", ref_weights=None):
    model = build_encoder_graph(config, weights, pooling, fused=fused)
    tokens, sentence = run(model, ids, mask)
    ref_tokens, ref_sentence = reference(config, ref_weights or weights, ids, mask, pooling)
    valid = mask.astype(bool)
    tok_err = np.abs(tokens[valid] - ref_tokens[valid]).max()
    sent_err = np.abs(sentence - ref_sentence).max()
    where = f"{label} {config['model_type']} fused={fused} pooling={pooling}"
    assert tok_err < ATOL, f"{where}: token max abs err {tok_err:.3g}"
    assert sent_err < ATOL, f"{where}: sentence max abs err {sent_err:.3g}"
    return model, sentence


ARCHS = ("bert", "roberta", "xlm-roberta", "mpnet", "distilbert")
# Prefixes as they appear in real checkpoints (BertModel saved bare, BertForX saved with "bert.").
PREFIX = {"bert": "bert.", "roberta": "roberta.", "xlm-roberta": "", "mpnet": "", "distilbert": "distilbert."}


# --------------------------------------------------------------------------- tests


def test_supported_architectures():
    assert set(supported_architectures()) >= {"bert", "roberta", "xlm-roberta", "mpnet"}


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("model_type", ARCHS)
def test_matches_reference_all_poolings(model_type, fused):
    seed = 1000 + ARCHS.index(model_type)
    config = make_config(model_type)
    weights = make_weights(model_type, seed, PREFIX[model_type])
    plain = make_weights(model_type, seed)
    # Mixed lengths with padding, a length-1 row and a full-length row.
    ids, mask = make_batch(model_type, [7, 1, 13, 4], seed)
    for mode in POOL_MODES:
        for normalize in (True, False):
            pooling = PoolingSpec(mode, normalize)
            assert_matches_reference(config, weights, ids, mask, pooling, fused, label=f"seed={seed}",
                                     ref_weights=plain)
    # Prefix detection gives the same graph outputs as the bare names.
    pooling = PoolingSpec("mean", True)
    a = run(build_encoder_graph(config, plain, pooling, fused=fused), ids, mask)[1]
    b = run(build_encoder_graph(config, weights, pooling, fused=fused), ids, mask)[1]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("model_type", ["bert", "mpnet"])
def test_single_token_batch_and_long_sequence(model_type, fused):
    config = make_config(model_type)
    weights = make_weights(model_type, 7)
    pooling = PoolingSpec("mean", True)
    ids, mask = make_batch(model_type, [1], 7)  # batch 1, sequence 1
    assert_matches_reference(config, weights, ids, mask, pooling, fused)
    # Longest sequence the position table allows (MPNet/RoBERTa positions start at pad + 1).
    longest = MAX_POS if model_type == "bert" else MAX_POS - 2
    ids, mask = make_batch(model_type, [longest, 3], 8)
    assert_matches_reference(config, weights, ids, mask, pooling, fused)


@pytest.mark.parametrize("act", ["gelu_new", "relu"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
def test_other_activations(act, fused):
    config = make_config("bert", act=act)
    weights = make_weights("bert", 11)
    ids, mask = make_batch("bert", [5, 9], 11)
    assert_matches_reference(config, weights, ids, mask, PoolingSpec("mean", False), fused)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("model_type", ["bert", "roberta", "mpnet"])
def test_padding_does_not_leak(model_type, fused):
    """Ids under mask 0 and extra padding columns do not change any embedding."""
    config = make_config(model_type)
    weights = make_weights(model_type, 21)
    ids, mask = make_batch(model_type, [6, 3], 21, seq=9)
    for mode in POOL_MODES:
        model = build_encoder_graph(config, weights, PoolingSpec(mode, True), fused=fused)
        _, base = run(model, ids, mask)
        poked = ids.copy()
        poked[1, 4] = 57  # a padded slot now holds a real-looking token
        _, after = run(model, poked, mask)
        np.testing.assert_allclose(after, base, rtol=0, atol=1e-6, err_msg=mode)
        # Alone (no padding at all) equals inside the padded batch.
        _, alone = run(model, ids[1:, :3], mask[1:, :3])
        np.testing.assert_allclose(alone[0], base[1], rtol=0, atol=1e-5, err_msg=mode)


def test_fused_graph_runs_without_ort_optimizations():
    config, weights = make_config("mpnet"), make_weights("mpnet", 31)
    ids, mask = make_batch("mpnet", [5, 2], 31)
    model = build_encoder_graph(config, weights, PoolingSpec("mean", True), fused=True)
    off = run(model, ids, mask, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)[1]
    on = run(model, ids, mask, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)[1]
    np.testing.assert_allclose(off, on, rtol=0, atol=1e-6)


def test_plain_graph_uses_standard_ops_only():
    config, weights = make_config("mpnet"), make_weights("mpnet", 41)
    model = build_encoder_graph(config, weights, PoolingSpec("cls", False), fused=False)
    onnx.checker.check_model(model, full_check=True)
    assert {n.domain for n in model.graph.node} <= {""}
    assert [o.domain for o in model.opset_import] == [""]


def test_fused_graph_uses_contrib_ops():
    config, weights = make_config("bert"), make_weights("bert", 42)
    model = build_encoder_graph(config, weights, PoolingSpec("mean", True), fused=True)
    ops = {n.op_type for n in model.graph.node if n.domain == "com.microsoft"}
    assert {"Attention", "BiasGelu"} <= ops


def test_graph_interface_and_metadata():
    config, weights = make_config("bert"), make_weights("bert", 43)
    model = build_encoder_graph(config, weights, PoolingSpec("max", False), fused=True)
    inputs = {i.name: i for i in model.graph.input}
    assert list(inputs) == ["input_ids", "attention_mask"]
    for vi in inputs.values():
        assert vi.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in vi.type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert [o.name for o in model.graph.output] == ["token_embeddings", "sentence_embedding"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["producer"] == "sutra" and model.producer_name == "sutra"
    assert meta["model_type"] == "bert" and meta["hidden_size"] == str(HIDDEN)
    assert meta["pooling_mode"] == "max" and meta["normalize"] == "false"
    assert "bert" in model.graph.doc_string
    # Every tensor of the checkpoint is stored once (no duplicated embeddings or layers).
    stored = sum(len(t.raw_data) for t in model.graph.initializer)
    given = sum(a.nbytes for k, a in weights.items())
    assert stored < 1.2 * given


def test_fp16_weights_are_upcast():
    config = make_config("bert")
    weights16 = {k: v.astype(np.float16) for k, v in make_weights("bert", 51).items()}
    weights32 = {k: v.astype(np.float32) for k, v in weights16.items()}
    ids, mask = make_batch("bert", [4, 2], 51)
    pooling = PoolingSpec("mean", True)
    a = run(build_encoder_graph(config, weights16, pooling), ids, mask)[1]
    b = run(build_encoder_graph(config, weights32, pooling), ids, mask)[1]
    np.testing.assert_array_equal(a, b)


def test_relative_buckets_match_torch():
    n = 401
    got = mpnet_relative_buckets(n)
    i = 200  # query at the centre: keys 0..400 cover relative positions -200..200
    expected = [_torch_bucket(j - i) for j in range(n)]
    np.testing.assert_array_equal(got[i], expected)
    # Toeplitz: the bucket depends on key - query only.
    np.testing.assert_array_equal(got[10, 5:60], got[110, 105:160])


def test_unknown_model_type():
    config = make_config("bert") | {"model_type": "gpt2"}
    with pytest.raises(ValueError, match=r"'gpt2'.*bert.*mpnet"):
        build_encoder_graph(config, make_weights("bert", 1), PoolingSpec("mean", True))


def test_missing_tensor_is_named():
    weights = make_weights("bert", 1, "bert.")
    del weights["bert.encoder.layer.1.intermediate.dense.bias"]
    with pytest.raises(ValueError, match=r"bert\.encoder\.layer\.1\.intermediate\.dense\.bias"):
        build_encoder_graph(make_config("bert"), weights, PoolingSpec("mean", True))


def test_missing_embeddings_and_bad_shape():
    weights = make_weights("mpnet", 1)
    del weights["embeddings.word_embeddings.weight"]
    with pytest.raises(ValueError, match="word_embeddings"):
        build_encoder_graph(make_config("mpnet"), weights, PoolingSpec("mean", True))
    weights = make_weights("mpnet", 1)
    weights["encoder.layer.0.attention.attn.q.weight"] = np.zeros((HIDDEN, HIDDEN + 1), np.float32)
    with pytest.raises(ValueError, match=r"attn\.q\.weight.*shape"):
        build_encoder_graph(make_config("mpnet"), weights, PoolingSpec("mean", True))


def test_bad_arguments():
    with pytest.raises(ValueError, match="pooling mode"):
        PoolingSpec("median", True)
    with pytest.raises(ValueError, match="opset"):
        build_encoder_graph(make_config("bert"), make_weights("bert", 1), PoolingSpec("mean", True), opset=16)
    with pytest.raises(ValueError, match="activation"):
        build_encoder_graph(make_config("bert", act="swish"), make_weights("bert", 1), PoolingSpec("mean", True))


def test_over_2gib_is_refused():
    weights = make_weights("bert", 1)
    rows = 2**31 // (HIDDEN * 4) + 1
    # A broadcast view reports the full size without allocating it.
    weights["embeddings.word_embeddings.weight"] = np.broadcast_to(np.zeros((1, HIDDEN), np.float32), (rows, HIDDEN))
    with pytest.raises(ValueError, match="2 GiB"):
        build_encoder_graph(make_config("bert"), weights, PoolingSpec("mean", True))


@pytest.mark.parametrize("opset", [18, 20])
def test_newer_opsets(opset):
    config, weights = make_config("roberta"), make_weights("roberta", 61)
    ids, mask = make_batch("roberta", [3, 6], 61)
    for mode in ("max", "mean"):
        pooling = PoolingSpec(mode, True)
        model = build_encoder_graph(config, weights, pooling, fused=False, opset=opset)
        tokens, sentence = run(model, ids, mask)
        np.testing.assert_allclose(sentence, reference(config, weights, ids, mask, pooling)[1], atol=ATOL, rtol=0)


def _write_folder(path, modules, pooling_cfg, model_type="bert"):
    import json

    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    (path / "config.json").write_text(json.dumps(make_config(model_type)))
    safetensors_numpy.save_file(make_weights(model_type, 71), str(path / "model.safetensors"))
    (path / "modules.json").write_text(json.dumps(
        [{"idx": i, "name": str(i), "path": p, "type": f"sentence_transformers.models.{t}"}
         for i, (t, p) in enumerate(modules)]))
    (path / "1_Pooling").mkdir()
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pooling_cfg))


def test_model_folder(tmp_path):
    flags = {"word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": False,
             "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": True,
             "pooling_mode_mean_sqrt_len_tokens": False}
    _write_folder(tmp_path, [("Transformer", ""), ("Pooling", "1_Pooling"), ("Normalize", "2_Normalize")], flags)
    assert pooling_spec_from_folder(tmp_path) == PoolingSpec("max", True)
    model = build_from_folder(tmp_path, fused=True)
    ids, mask = make_batch("bert", [4, 6], 71)
    _, sentence = run(model, ids, mask)
    ref = reference(make_config("bert"), make_weights("bert", 71), ids, mask, PoolingSpec("max", True))[1]
    np.testing.assert_allclose(sentence, ref, rtol=0, atol=ATOL)


def test_model_folder_rejects_what_the_graph_lacks(tmp_path):
    two_modes = {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}
    _write_folder(tmp_path, [("Transformer", ""), ("Pooling", "1_Pooling")], two_modes)
    with pytest.raises(ValueError, match="exactly one"):
        pooling_spec_from_folder(tmp_path)
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode": "mean_sqrt_len_tokens"}')
    assert pooling_spec_from_folder(tmp_path) == PoolingSpec("mean_sqrt_len", False)
    # Dense modules run inside the graph now (tests/test_pipelines.py); a module that has no
    # equivalent in the graph is still refused, by name.
    (tmp_path / "modules.json").write_text(
        '[{"type": "sentence_transformers.models.Transformer", "path": ""},'
        ' {"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"},'
        ' {"type": "sentence_transformers.models.LayerNorm", "path": "2_LayerNorm"}]')
    with pytest.raises(ValueError, match="LayerNorm"):
        pooling_spec_from_folder(tmp_path)


# --------------------------------------------------------------------------- packed graph


def pack(ids, mask):
    """The packed inputs (input_ids [T], cu_seqlens [B + 1]) of a right-padded batch."""
    lengths = mask.sum(1)
    flat = np.concatenate([ids[b, :n] for b, n in enumerate(lengths)]).astype(np.int64)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return flat, cu


def row_layouts(cu):
    """Attention rows (cu_rowlens) for packed sequences with boundaries ``cu``: everything in one
    row, one row per sequence, and rows of two neighbours (the last one alone when odd)."""
    cu = np.asarray(cu, np.int64)
    pairs = np.unique(np.concatenate([cu[::2], cu[-1:]]))
    return {"one row": np.array([0, cu[-1]], np.int64), "row per sequence": cu, "pairs": pairs}


def run_packed(model: onnx.ModelProto, flat, cu, rows=None):
    """Run a packed graph; ``rows`` (cu_rowlens) defaults to one row per sequence."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rows = cu if rows is None else rows
    tokens, sentence = sess.run(["token_embeddings", "sentence_embedding"],
                                {"input_ids": flat, "cu_seqlens": cu, "cu_rowlens": rows})
    assert tokens.dtype == np.float32 and sentence.dtype == np.float32
    assert tokens.shape == (len(flat), HIDDEN) and sentence.shape == (len(cu) - 1, HIDDEN)
    return tokens, sentence


def _longest(model_type: str) -> int:
    # RoBERTa/MPNet positions start at pad + 1, so two rows of the table are never used.
    return MAX_POS if model_type in ("bert", "distilbert") else MAX_POS - 2


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("model_type", ARCHS)
def test_packed_matches_reference_and_padded(model_type, fused):
    """Packed = the float64 reference = the padded graph, for every pooling and every layout of
    the attention rows, on a mix of a length-1 sequence, a full-length one and short ones."""
    seed = 2000 + ARCHS.index(model_type)
    config = make_config(model_type)
    weights = make_weights(model_type, seed, PREFIX[model_type])
    plain = make_weights(model_type, seed)
    lengths = [7, 1, _longest(model_type), 4, 13, 1]
    ids, mask = make_batch(model_type, lengths, seed)
    flat, cu = pack(ids, mask)
    valid = mask.astype(bool)
    layouts = list(row_layouts(cu).items())
    for mode in POOL_MODES:
        for normalize in (True, False):
            pooling = PoolingSpec(mode, normalize)
            # One row layout per pooling (all three over the loop) keeps the test quick.
            layout, rows = layouts[(POOL_MODES.index(mode) * 2 + normalize) % len(layouts)]
            where = f"seed={seed} {model_type} fused={fused} pooling={pooling} rows={layout}"
            tokens, sentence = run_packed(build_packed_encoder_graph(config, weights, pooling, fused=fused),
                                          flat, cu, rows)
            ref_tokens, ref_sentence = reference(config, plain, ids, mask, pooling)
            tok_err = np.abs(tokens - ref_tokens[valid]).max()
            sent_err = np.abs(sentence - ref_sentence).max()
            assert tok_err < ATOL, f"{where}: token max abs err {tok_err:.3g}"
            assert sent_err < ATOL, f"{where}: sentence max abs err {sent_err:.3g}"
            padded_tokens, padded = run(build_encoder_graph(config, weights, pooling, fused=fused), ids, mask)
            np.testing.assert_allclose(sentence, padded, rtol=0, atol=ATOL, err_msg=where)
            np.testing.assert_allclose(tokens, padded_tokens[valid], rtol=0, atol=ATOL, err_msg=where)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("model_type", ["bert", "roberta", "mpnet"])
def test_packed_alone_equals_with_others(model_type, fused):
    """A sequence packed with others, in one attention row with them, gets the embedding it gets
    alone: nothing crosses the mask (empty slots of a shorter row included), and positions and
    MPNet's relative bias restart per sequence."""
    config = make_config(model_type)
    weights = make_weights(model_type, 81)
    lengths = [5, 1, 12, _longest(model_type), 3]
    ids, mask = make_batch(model_type, lengths, 81)
    flat, cu = pack(ids, mask)
    # Rows [5, 1, 12] and [longest, 3]: the first row has empty slots.
    rows = np.array([0, cu[3], cu[5]], np.int64)
    for mode in POOL_MODES:
        model = build_packed_encoder_graph(config, weights, PoolingSpec(mode, True), fused=fused)
        tokens, together = run_packed(model, flat, cu, rows)
        for b, n in enumerate(lengths):
            alone_tokens, alone = run_packed(model, ids[b, :n].copy(), np.array([0, n], np.int64))
            where = f"{model_type} fused={fused} {mode} row {b} (length {n})"
            np.testing.assert_allclose(alone[0], together[b], rtol=0, atol=1e-5, err_msg=where)
            np.testing.assert_allclose(alone_tokens, tokens[cu[b]:cu[b + 1]], rtol=0, atol=1e-5,
                                       err_msg=where)
        # The order of the sequences in the pack does not matter either.
        order = [3, 0, 4, 2, 1]
        flat2, cu2 = pack(ids[order], mask[order])
        _, shuffled = run_packed(model, flat2, cu2, row_layouts(cu2)["one row"])
        np.testing.assert_allclose(shuffled, together[order], rtol=0, atol=1e-5, err_msg=mode)


def test_packed_roberta_pad_id_inside_a_sequence():
    """A pad id inside real tokens (possible with embed_tokens) gets the padded graph's position
    ids: HF counts non-pad tokens, and the count restarts at each packed sequence."""
    config, weights = make_config("roberta"), make_weights("roberta", 91)
    ids, mask = make_batch("roberta", [6, 5, 4], 91)
    ids[1, 2] = pad_id("roberta")
    ids[2, 0] = pad_id("roberta")
    pooling = PoolingSpec("mean", False)
    _, padded = run(build_encoder_graph(config, weights, pooling), ids, mask)
    _, packed = run_packed(build_packed_encoder_graph(config, weights, pooling), *pack(ids, mask))
    np.testing.assert_allclose(packed, padded, rtol=0, atol=ATOL)
    ref = reference(config, weights, ids, mask, pooling)[1]
    np.testing.assert_allclose(packed, ref, rtol=0, atol=ATOL)


def test_packed_graph_interface_and_ops():
    config, weights = make_config("mpnet"), make_weights("mpnet", 93)
    model = build_packed_encoder_graph(config, weights, PoolingSpec("cls", False), fused=True)
    inputs = {i.name: i for i in model.graph.input}
    assert list(inputs) == ["input_ids", "cu_seqlens", "cu_rowlens"]
    for vi in inputs.values():
        assert vi.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert len(vi.type.tensor_type.shape.dim) == 1
    assert [o.name for o in model.graph.output] == ["token_embeddings", "sentence_embedding"]
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["layout"] == "packed" and meta["model_type"] == "mpnet"
    assert {"MultiHeadAttention"} <= {n.op_type for n in model.graph.node
                                      if n.domain == "com.microsoft"}
    plain = build_packed_encoder_graph(config, weights, PoolingSpec("max", True), fused=False)
    onnx.checker.check_model(plain, full_check=True)
    assert {n.domain for n in plain.graph.node} <= {""}
    padded = build_encoder_graph(config, weights, PoolingSpec("cls", False))
    assert {p.key: p.value for p in padded.metadata_props}["layout"] == "padded"
    with pytest.raises(ValueError, match="opset"):
        build_packed_encoder_graph(config, weights, PoolingSpec("cls", False), opset=16)


# --------------------------------------------------------------------------- one pooling, one head


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
def test_graph_pooling_is_the_core_pooling(fused):
    """The graphs pool as the native core's pool_tokens does (the one pooling semantics), padded
    and packed, for every mode."""
    from sutra import _core

    config, weights = make_config("roberta"), make_weights("roberta", 95)
    lengths = [7, 1, 13, 4]
    ids, mask = make_batch("roberta", lengths, 95)
    flat, cu = pack(ids, mask)
    cu32 = cu.astype(np.int32)
    for mode in POOL_MODES:
        pooling = PoolingSpec(mode, False)
        tokens, sentence = run(build_encoder_graph(config, weights, pooling, fused=fused), ids, mask)
        np.testing.assert_allclose(sentence, _core.pool_tokens(tokens, cu32, mode), rtol=0,
                                   atol=1e-6, err_msg=f"padded {mode}")
        tokens, sentence = run_packed(build_packed_encoder_graph(config, weights, pooling, fused=fused),
                                      flat, cu)
        np.testing.assert_allclose(sentence, _core.pool_tokens(tokens, cu32, mode), rtol=0,
                                   atol=1e-6, err_msg=f"packed {mode}")


def _dense_reference(x, dense):
    for module in dense:
        x = x @ module.weight.astype(np.float64).T
        if module.bias is not None:
            x = x + module.bias
        x = {"identity": lambda v: v, "tanh": np.tanh, "relu": lambda v: np.maximum(v, 0),
             "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
             "gelu": lambda v: 0.5 * v * (1 + np.vectorize(math.erf)(v / math.sqrt(2)))}[module.activation](x)
    return x


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
def test_dense_modules_run_in_the_graph(fused):
    from sutra.onnx import DenseSpec

    rng = np.random.default_rng(96)
    config, weights = make_config("bert"), make_weights("bert", 96)
    dense = [DenseSpec((rng.standard_normal((24, HIDDEN)) * 0.5).astype(np.float32),
                       rng.standard_normal(24).astype(np.float32), "gelu"),
             DenseSpec((rng.standard_normal((16, 24)) * 0.5).astype(np.float32), None, "sigmoid"),
             DenseSpec((rng.standard_normal((8, 16)) * 0.5).astype(np.float32),
                       rng.standard_normal(8).astype(np.float32), "tanh")]
    ids, mask = make_batch("bert", [5, 9, 1], 96)
    for normalize in (False, True):
        pooling = PoolingSpec("mean", normalize)
        pooled = reference(config, weights, ids, mask, PoolingSpec("mean", False))[1]
        expected = _dense_reference(pooled, dense)
        if normalize:
            expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
        model = build_encoder_graph(config, weights, pooling, dense=dense, fused=fused)
        assert model.graph.output[1].type.tensor_type.shape.dim[1].dim_value == 8
        _, sentence = run(model, ids, mask)
        np.testing.assert_allclose(sentence, expected, rtol=0, atol=ATOL, err_msg=str(normalize))
        flat, cu = pack(ids, mask)
        packed_model = build_packed_encoder_graph(config, weights, pooling, dense=dense, fused=fused)
        sess = ort.InferenceSession(packed_model.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        (packed,) = sess.run(["sentence_embedding"],
                             {"input_ids": flat, "cu_seqlens": cu, "cu_rowlens": cu})
        np.testing.assert_allclose(packed, expected, rtol=0, atol=ATOL, err_msg=str(normalize))
    with pytest.raises(ValueError, match="Dense module 1 takes 16 features but receives 24"):
        build_encoder_graph(config, weights, PoolingSpec("mean", False), dense=[dense[0], dense[2]])
