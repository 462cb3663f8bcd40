"""Architecture descriptions: config.json + weight names -> one normalized encoder description.

Every supported model is a post-LayerNorm transformer encoder (BERT family). The differences that
matter for inference are the weight names, how position ids are formed, the activation, and MPNet's
relative position bias; they are resolved here so the graph builder sees a single shape of data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

# model_type -> family. The family decides weight names and position-id semantics.
_FAMILY = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "mpnet": "mpnet",
    "distilbert": "distilbert",
}

# HF activation name -> graph activation. "gelu" in HF is the exact erf form (GELUActivation);
# the tanh approximations all compute the same formula.
_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "relu": "relu",
}

# MPNetEncoder.compute_position_bias calls relative_position_bucket with its defaults, whatever the
# config says; relative_attention_num_buckets only sizes the embedding table.
MPNET_NUM_BUCKETS = 32
MPNET_MAX_DISTANCE = 128


def supported_architectures() -> tuple[str, ...]:
    """The config.json ``model_type`` values :func:`build_encoder_graph` accepts."""
    return tuple(_FAMILY)


@dataclass
class LayerWeights:
    """One encoder layer; matrices are already [in, out] (transposed from torch's Linear)."""

    qkv_w: np.ndarray  # [H, 3H], Q|K|V stacked on axis 1
    qkv_b: np.ndarray  # [3H]
    out_w: np.ndarray  # [H, H]
    out_b: np.ndarray  # [H]
    ln1_g: np.ndarray
    ln1_b: np.ndarray
    ffn_in_w: np.ndarray  # [H, I]
    ffn_in_b: np.ndarray  # [I]
    ffn_out_w: np.ndarray  # [I, H]
    ffn_out_b: np.ndarray  # [H]
    ln2_g: np.ndarray
    ln2_b: np.ndarray


@dataclass
class EncoderSpec:
    model_type: str
    family: str
    hidden_size: int
    num_heads: int
    num_layers: int
    intermediate_size: int
    layer_norm_eps: float
    activation: str  # "gelu" | "gelu_tanh" | "relu"
    # "absolute": position i for token i. "padding_offset": HF create_position_ids_from_input_ids,
    # cumsum(input_ids != pad) * (input_ids != pad) + pad.
    position_kind: str
    padding_idx: int
    word_embeddings: np.ndarray  # [V, H]
    # [P, H]; token-type row 0 is folded in (single-sentence inputs have token_type_ids == 0).
    position_embeddings: np.ndarray
    emb_ln_g: np.ndarray
    emb_ln_b: np.ndarray
    relative_bias: np.ndarray | None  # [num_buckets, heads], MPNet only
    _weights: _Weights

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    def layers(self) -> Iterator[LayerWeights]:
        """Layers one at a time, so only one layer's transposed copies are alive while building."""
        for i in range(self.num_layers):
            yield _layer(self._weights, _layer_names(self.family, i), self.hidden_size, self.intermediate_size)

    def layer_bytes(self) -> int:
        h, i = self.hidden_size, self.intermediate_size
        return self.num_layers * 4 * (4 * h * h + 2 * h * i + 9 * h + i)


def _f32(name: str, arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype == np.float32:
        return a
    if a.dtype in (np.float16, np.float64):
        return a.astype(np.float32)
    raise ValueError(f"weight {name!r} has dtype {a.dtype}; expected float32 or float16")


class _Weights:
    """Prefix-aware, checked access to the tensors of a checkpoint."""

    def __init__(self, weights: Mapping[str, np.ndarray], anchor: str) -> None:
        self._w = weights
        candidates = [k[: -len(anchor)] for k in weights if k.endswith(anchor)]
        # Checkpoints saved from wrappers nest the encoder ("bert.", "roberta.", "0.auto_model.");
        # the shortest prefix is the encoder itself rather than a head that reuses the name.
        candidates = [c for c in candidates if c == "" or c.endswith(".")]
        if not candidates:
            raise ValueError(f"missing weight tensor {anchor!r} (searched with any prefix)")
        self.prefix = min(candidates, key=len)

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        full = self.prefix + name
        if full not in self._w:
            raise ValueError(f"missing weight tensor {full!r}")
        arr = _f32(full, self._w[full])
        if tuple(arr.shape) != shape:
            raise ValueError(f"weight tensor {full!r} has shape {tuple(arr.shape)}; expected {shape}")
        return arr

    def check(self, name: str, shape: tuple[int, ...]) -> None:
        """Presence and shape only (no dtype conversion)."""
        full = self.prefix + name
        if full not in self._w:
            raise ValueError(f"missing weight tensor {full!r}")
        if tuple(np.shape(self._w[full])) != shape:
            raise ValueError(
                f"weight tensor {full!r} has shape {tuple(np.shape(self._w[full]))}; expected {shape}"
            )

    def rows(self, name: str) -> int:
        """Leading dimension of a table whose size the config may not state (vocab, positions)."""
        full = self.prefix + name
        if full not in self._w:
            raise ValueError(f"missing weight tensor {full!r}")
        return int(np.shape(self._w[full])[0])


def _cfg(config: Mapping, *keys: str, default=None):
    for k in keys:
        if k in config and config[k] is not None:
            return config[k]
    if default is None:
        raise ValueError(f"config.json has no {keys[0]!r}")
    return default


def _linear(w: _Weights, prefix: str, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    weight = w.get(prefix + ".weight", (n_out, n_in))
    bias = w.get(prefix + ".bias", (n_out,))
    return weight, bias


def _layer(
    w: _Weights, names: Mapping[str, str], hidden: int, inter: int
) -> LayerWeights:
    q_w, q_b = _linear(w, names["q"], hidden, hidden)
    k_w, k_b = _linear(w, names["k"], hidden, hidden)
    v_w, v_b = _linear(w, names["v"], hidden, hidden)
    o_w, o_b = _linear(w, names["o"], hidden, hidden)
    i_w, i_b = _linear(w, names["ffn_in"], hidden, inter)
    f_w, f_b = _linear(w, names["ffn_out"], inter, hidden)
    return LayerWeights(
        qkv_w=np.ascontiguousarray(np.concatenate([q_w.T, k_w.T, v_w.T], axis=1)),
        qkv_b=np.concatenate([q_b, k_b, v_b]),
        out_w=np.ascontiguousarray(o_w.T),
        out_b=o_b,
        ln1_g=w.get(names["ln1"] + ".weight", (hidden,)),
        ln1_b=w.get(names["ln1"] + ".bias", (hidden,)),
        ffn_in_w=np.ascontiguousarray(i_w.T),
        ffn_in_b=i_b,
        ffn_out_w=np.ascontiguousarray(f_w.T),
        ffn_out_b=f_b,
        ln2_g=w.get(names["ln2"] + ".weight", (hidden,)),
        ln2_b=w.get(names["ln2"] + ".bias", (hidden,)),
    )


def _layer_names(family: str, i: int) -> dict[str, str]:
    if family in ("bert", "roberta"):
        p = f"encoder.layer.{i}."
        return {
            "q": p + "attention.self.query",
            "k": p + "attention.self.key",
            "v": p + "attention.self.value",
            "o": p + "attention.output.dense",
            "ln1": p + "attention.output.LayerNorm",
            "ffn_in": p + "intermediate.dense",
            "ffn_out": p + "output.dense",
            "ln2": p + "output.LayerNorm",
        }
    if family == "mpnet":
        p = f"encoder.layer.{i}."
        return {
            "q": p + "attention.attn.q",
            "k": p + "attention.attn.k",
            "v": p + "attention.attn.v",
            "o": p + "attention.attn.o",
            "ln1": p + "attention.LayerNorm",
            "ffn_in": p + "intermediate.dense",
            "ffn_out": p + "output.dense",
            "ln2": p + "output.LayerNorm",
        }
    p = f"transformer.layer.{i}."  # distilbert
    return {
        "q": p + "attention.q_lin",
        "k": p + "attention.k_lin",
        "v": p + "attention.v_lin",
        "o": p + "attention.out_lin",
        "ln1": p + "sa_layer_norm",
        "ffn_in": p + "ffn.lin1",
        "ffn_out": p + "ffn.lin2",
        "ln2": p + "output_layer_norm",
    }


def parse_encoder(config: Mapping, weights: Mapping[str, np.ndarray]) -> EncoderSpec:
    """Check ``config`` and ``weights`` and gather them into an :class:`EncoderSpec`."""
    model_type = config.get("model_type")
    if model_type not in _FAMILY:
        raise ValueError(
            f"unsupported model_type {model_type!r}; supported: {', '.join(supported_architectures())}"
        )
    family = _FAMILY[model_type]

    if family == "distilbert":
        hidden = int(_cfg(config, "dim", "hidden_size"))
        heads = int(_cfg(config, "n_heads", "num_attention_heads"))
        n_layers = int(_cfg(config, "n_layers", "num_hidden_layers"))
        inter = int(_cfg(config, "hidden_dim", "intermediate_size"))
        eps = 1e-12  # hard-coded in HF DistilBERT
        act_name = _cfg(config, "activation", "hidden_act", default="gelu")
    else:
        hidden = int(_cfg(config, "hidden_size"))
        heads = int(_cfg(config, "num_attention_heads"))
        n_layers = int(_cfg(config, "num_hidden_layers"))
        inter = int(_cfg(config, "intermediate_size"))
        eps = float(_cfg(config, "layer_norm_eps", default=1e-12))
        act_name = _cfg(config, "hidden_act", default="gelu")
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} is not a multiple of the number of heads {heads}")
    if act_name not in _ACTIVATIONS:
        raise ValueError(
            f"unsupported activation {act_name!r}; supported: {', '.join(_ACTIVATIONS)}"
        )
    pos_type = config.get("position_embedding_type", "absolute")
    if family in ("bert", "roberta") and pos_type != "absolute":
        raise ValueError(f"unsupported position_embedding_type {pos_type!r}; only 'absolute'")

    w = _Weights(weights, "embeddings.word_embeddings.weight")
    word = w.get("embeddings.word_embeddings.weight", (w.rows("embeddings.word_embeddings.weight"), hidden))
    pos_name = "embeddings.position_embeddings.weight"
    pos = w.get(pos_name, (w.rows(pos_name), hidden))

    if family == "bert" or family == "roberta":
        n_types = int(_cfg(config, "type_vocab_size", default=2))
        types = w.get("embeddings.token_type_embeddings.weight", (n_types, hidden))
        pos = pos + types[0]
    if family == "bert" or family == "distilbert":
        position_kind, padding_idx = "absolute", 0
    elif family == "roberta":
        position_kind, padding_idx = "padding_offset", int(_cfg(config, "pad_token_id", default=1))
    else:
        # MPNetEmbeddings hard-codes padding_idx = 1 regardless of pad_token_id.
        position_kind, padding_idx = "padding_offset", 1

    relative_bias = None
    if family == "mpnet":
        n_buckets = int(_cfg(config, "relative_attention_num_buckets", default=32))
        relative_bias = w.get("encoder.relative_attention_bias.weight", (n_buckets, heads))
        if n_buckets < MPNET_NUM_BUCKETS:
            raise ValueError(
                f"relative_attention_num_buckets is {n_buckets}; MPNet needs at least {MPNET_NUM_BUCKETS}"
            )

    # Fail on a missing or mis-shaped tensor now rather than halfway through the graph.
    for i in range(n_layers):
        names = _layer_names(family, i)
        for key, (n_out, n_in) in (("q", (hidden, hidden)), ("k", (hidden, hidden)), ("v", (hidden, hidden)),
                                   ("o", (hidden, hidden)), ("ffn_in", (inter, hidden)), ("ffn_out", (hidden, inter))):
            w.check(names[key] + ".weight", (n_out, n_in))
            w.check(names[key] + ".bias", (n_out,))
        for key in ("ln1", "ln2"):
            w.check(names[key] + ".weight", (hidden,))
            w.check(names[key] + ".bias", (hidden,))

    ln = "embeddings.LayerNorm"
    return EncoderSpec(
        model_type=model_type,
        family=family,
        hidden_size=hidden,
        num_heads=heads,
        num_layers=n_layers,
        intermediate_size=inter,
        layer_norm_eps=eps,
        activation=_ACTIVATIONS[act_name],
        position_kind=position_kind,
        padding_idx=padding_idx,
        word_embeddings=word,
        position_embeddings=np.ascontiguousarray(pos, dtype=np.float32),
        emb_ln_g=w.get(ln + ".weight", (hidden,)),
        emb_ln_b=w.get(ln + ".bias", (hidden,)),
        relative_bias=relative_bias,
        _weights=w,
    )


def mpnet_relative_buckets(
    length: int, num_buckets: int = MPNET_NUM_BUCKETS, max_distance: int = MPNET_MAX_DISTANCE
) -> np.ndarray:
    """HF ``MPNetEncoder.relative_position_bucket`` for query i, key j in [0, length): int64 [L, L].

    torch evaluates the log branch in float32 then truncates; it is replicated step by step in
    float32 so bucket boundaries fall on the same distances.
    """
    ctx = np.arange(length, dtype=np.int64)[:, None]
    mem = np.arange(length, dtype=np.int64)[None, :]
    n = -(mem - ctx)
    half = num_buckets // 2
    ret = (n < 0).astype(np.int64) * half
    n = np.abs(n)
    max_exact = half // 2
    is_small = n < max_exact
    with np.errstate(divide="ignore"):
        scaled = np.log(n.astype(np.float32) / np.float32(max_exact))
    scaled = scaled / np.float32(math.log(max_distance / max_exact))
    scaled = scaled * np.float32(half - max_exact)
    # log(0) = -inf sits only on the small branch, never selected; keep the cast defined.
    scaled = np.where(is_small, np.float32(0), scaled)
    val_if_large = max_exact + scaled.astype(np.int64)
    val_if_large = np.minimum(val_if_large, half - 1)
    return ret + np.where(is_small, n, val_if_large)
