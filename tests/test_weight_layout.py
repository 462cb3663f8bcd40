"""The engine's weight arena (sutra/engine/weights.h): every canonical tensor of a checkpoint
lands exactly once, where the layout says, in the layout the kernels read; bad checkpoints are
refused by name before anything is written. Host-only: runs on every build."""

from __future__ import annotations

import numpy as np
import pytest
from sutra import _core
from sutra.backends.cuda import CudaBackend, encoder_spec
from sutra.models.architecture import describe_encoder
from sutra.models.spec import ModelFolder

# The random checkpoints (Hugging Face tensor names) the ONNX graph tests build.
from test_onnx_graph import make_config, make_weights


def canonical_tensors(model_type: str, seed: int = 5):
    """(arch, canonical name -> float32 array) of a random checkpoint."""
    weights = make_weights(model_type, seed)
    arch = describe_encoder(make_config(model_type),
                            {name: a.shape for name, a in weights.items()})
    return arch, {canonical: weights[name] for canonical, name in arch.weight_names.items()}


def engine_dtype(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What the engine uploads: fp16, except MPNet's bias table (fp32, the kernel's type)."""
    return {name: a if name == "relative_attention_bias" else a.astype(np.float16)
            for name, a in tensors.items()}


def slot_view(arena: np.ndarray, slot, element_bytes: int) -> np.ndarray:
    dtype = np.float32 if slot.float32 else {2: np.float16, 4: np.float32}[element_bytes]
    return arena[slot.offset:slot.offset + slot.bytes].view(dtype).reshape(slot.shape)


@pytest.mark.parametrize("model_type", ["bert", "roberta", "mpnet", "distilbert"])
def test_every_canonical_tensor_lands_once_where_the_layout_says(model_type):
    arch, tensors = canonical_tensors(model_type)
    layout = _core.plan_weight_layout(encoder_spec(arch))
    used = [name for slot in layout.slots for name in slot.sources]
    assert sorted(used) == sorted(arch.shapes), "the arena must use each canonical tensor once"

    given = engine_dtype(tensors)
    arena = layout.pack(given)
    assert arena.dtype == np.uint8 and arena.shape == (layout.total_bytes,)
    for slot in layout.slots:
        got = slot_view(arena, slot, layout.element_bytes)
        if slot.transposed:
            expected = given[slot.sources[0]].T
        else:
            expected = np.concatenate([given[name] for name in slot.sources], axis=0)
        np.testing.assert_array_equal(got, expected, err_msg=slot.name)


def test_modernbert_arena_holds_what_its_checkpoint_has():
    """Pre-norm, rotary, gated, bias-free (the tiny fixture): no position table, no biases, no
    attention norm on layer 0, a final norm, ffn.in of 2I rows, and the checkpoint's fused Wqkv
    split by the backend into the q, k, v parts the QKV slot is made of, landing unchanged."""
    from pathlib import Path

    from safetensors.numpy import load_file

    model = ModelFolder.load(Path(__file__).parent / "fixtures" / "modernbert")
    arch = model.pipeline.transformer.architecture
    spec = encoder_spec(arch)
    assert (spec.position_table, spec.pre_norm, spec.gated_ffn) == (False, True, True)
    assert not (spec.attention_bias or spec.ffn_bias or spec.norm_bias)
    layout = _core.plan_weight_layout(spec)
    names = [slot.name for slot in layout.slots]
    assert "embeddings.position" not in names and "layers.0.attention_norm.weight" not in names
    assert "layers.1.attention_norm.weight" in names and names[-1] == "final_norm.weight"
    assert not [name for name in names if name.endswith(".bias")]
    hidden, inter = arch.hidden_size, arch.intermediate_size
    assert layout.find("layers.0.ffn.in.weight").shape == (2 * inter, hidden)

    arena = layout.pack(CudaBackend._engine_tensors(model, arch, "float16"))
    checkpoint = load_file(str(model.weights_path))
    for slot in layout.slots:
        source = checkpoint[arch.weight_names[slot.name]]  # each slot is one checkpoint tensor
        np.testing.assert_array_equal(slot_view(arena, slot, 2), source.astype(np.float16),
                                      err_msg=slot.name)


def test_fused_qkv_is_q_then_k_then_v_rows():
    arch, tensors = canonical_tensors("bert")
    layout = _core.plan_weight_layout(encoder_spec(arch))
    arena = layout.pack(engine_dtype(tensors))
    hidden = arch.hidden_size
    qkv = slot_view(arena, layout.find("layers.1.attention.qkv.weight"), 2)
    assert qkv.shape == (3 * hidden, hidden)
    for index, part in enumerate("qkv"):
        np.testing.assert_array_equal(
            qkv[index * hidden:(index + 1) * hidden],
            tensors[f"layers.1.attention.{part}.weight"].astype(np.float16))
    bias = slot_view(arena, layout.find("layers.1.attention.qkv.bias"), 2)
    np.testing.assert_array_equal(bias[hidden:2 * hidden],
                                  tensors["layers.1.attention.k.bias"].astype(np.float16))


def test_mpnet_bias_table_is_float32_heads_by_buckets():
    arch, tensors = canonical_tensors("mpnet")
    layout = _core.plan_weight_layout(encoder_spec(arch))
    slot = layout.find("relative_attention_bias")
    assert slot.float32 and slot.transposed
    assert slot.shape == (arch.num_heads, arch.relative_attention_num_buckets)
    table = slot_view(layout.pack(engine_dtype(tensors)), slot, 2)
    # The attention kernel reads rel_bias[h, bucket]; the checkpoint holds [bucket, h].
    assert table[3, 17] == tensors["relative_attention_bias"][17, 3]


@pytest.mark.parametrize("element_bytes", [2, 4])
def test_slots_are_aligned_disjoint_and_inside_the_arena(element_bytes):
    arch, _ = canonical_tensors("mpnet")
    layout = _core.plan_weight_layout(encoder_spec(arch), element_bytes=element_bytes)
    end = 0
    for slot in layout.slots:
        assert slot.offset % 256 == 0, slot
        assert slot.offset >= end, f"{slot} overlaps the slot before it"
        assert slot.bytes == int(np.prod(slot.shape)) * (4 if slot.float32 else element_bytes)
        end = slot.offset + slot.bytes
    assert end <= layout.total_bytes and layout.total_bytes % 256 == 0
    assert sum(s.bytes for s in layout.slots) == arch.parameter_bytes(element_bytes) + (
        0 if element_bytes == 4 else 2 * int(np.prod(arch.shapes["relative_attention_bias"])))


def test_gaps_between_slots_are_zero():
    arch, tensors = canonical_tensors("bert")
    layout = _core.plan_weight_layout(encoder_spec(arch))
    arena = layout.pack(engine_dtype(tensors))
    covered = np.zeros(layout.total_bytes, dtype=bool)
    for slot in layout.slots:
        covered[slot.offset:slot.offset + slot.bytes] = True
    assert not covered.all(), "a layout with no padding would not test the zeroing"
    assert not arena[~covered].any()


def test_bfloat16_bits_are_taken_as_uint16():
    arch, tensors = canonical_tensors("bert")
    layout = _core.plan_weight_layout(encoder_spec(arch))
    bits = {name: (a.view(np.uint32) >> 16).astype(np.uint16) for name, a in tensors.items()}
    slot = layout.find("layers.0.ffn.in.weight")
    got = layout.pack(bits)[slot.offset:slot.offset + slot.bytes].view(np.uint16)
    np.testing.assert_array_equal(got.reshape(slot.shape), bits["layers.0.ffn.in.weight"])


def test_missing_tensor_is_named():
    arch, tensors = canonical_tensors("bert")
    layout = _core.plan_weight_layout(encoder_spec(arch))
    given = engine_dtype(tensors)
    del given["layers.1.attention.v.weight"]
    with pytest.raises(ValueError, match=r"no tensor 'layers\.1\.attention\.v\.weight' "
                                         r"\(needed for layers\.1\.attention\.qkv\.weight\)"):
        layout.pack(given)


def test_misshaped_tensor_is_named_with_both_shapes():
    arch, tensors = canonical_tensors("bert")
    layout = _core.plan_weight_layout(encoder_spec(arch))
    given = engine_dtype(tensors)
    given["layers.0.ffn.out.weight"] = given["layers.0.ffn.out.weight"].T.copy()
    with pytest.raises(ValueError, match=r"'layers\.0\.ffn\.out\.weight' must have shape "
                                         r"\(32, 64\), got \(64, 32\)"):
        layout.pack(given)


def test_wrong_element_types_are_refused():
    arch, tensors = canonical_tensors("mpnet")
    layout = _core.plan_weight_layout(encoder_spec(arch))
    given = engine_dtype(tensors)
    as_float32 = dict(given, **{"embeddings.word": tensors["embeddings.word"]})
    with pytest.raises(ValueError, match=r"'embeddings\.word' must have 2-byte elements"):
        layout.pack(as_float32)
    half_bias = dict(given, relative_attention_bias=given["relative_attention_bias"].astype(
        np.float16))
    with pytest.raises(ValueError, match=r"'relative_attention_bias' must have 4-byte elements "
                                         r"\(float32\)"):
        layout.pack(half_bias)
    doubles = dict(given, **{"embeddings.norm.bias": tensors["embeddings.norm.bias"].astype(
        np.float64)})
    with pytest.raises(ValueError, match=r"'embeddings\.norm\.bias' must be a C-contiguous "
                                         r"numpy\.ndarray of dtype float16"):
        layout.pack(doubles)
    strided = dict(given, **{"embeddings.word": given["embeddings.word"][:, ::2]})
    with pytest.raises(ValueError, match="not C-contiguous"):
        layout.pack(strided)


@pytest.mark.parametrize("field, value, message", [
    ("hidden", 30, r"hidden must be >= 1 and a multiple of heads \(4\), got 30"),
    ("layers", 0, "layers must be >= 1, got 0"),
    ("vocab", 0, "vocab must be >= 1, got 0"),
    ("relative_buckets", -1, "relative_buckets must be >= 0, got -1"),
])
def test_bad_spec_names_the_size(field, value, message):
    sizes = {"vocab": 100, "max_positions": 40, "token_types": 2, "hidden": 32, "heads": 4,
             "layers": 2, "intermediate": 64, "relative_buckets": 0}
    sizes[field] = value
    with pytest.raises(ValueError, match=message):
        _core.EncoderSpec(**sizes)
