"""Encoder architectures: ``config.json`` + the checkpoint's tensor names -> one description.

The BERT family and MPNet are post-LayerNorm encoders; what differs between them for inference is
the weight names, how position ids are formed, the activation and MPNet's relative position bias.
ModernBERT is a pre-LayerNorm encoder with rotary positions (a theta per layer), a gated (GeGLU)
feed-forward, no biases by default, and global attention on every n-th layer with a sliding
window on the others. :func:`describe_encoder` resolves all of that once, into canonical weight
names (and per-layer settings) that every consumer (the ONNX graph builder, the engine) reads.

Canonical names (torch ``Linear`` layout, ``[out, in]``)::

    embeddings.word [V, H]   embeddings.position [P, H]   embeddings.token_type [types, H]
    embeddings.norm.weight / .bias [H]                    relative_attention_bias [buckets, heads]
    layers.{i}.attention.{q,k,v,o}.weight [H, H] / .bias [H]
    layers.{i}.attention_norm.weight / .bias [H]          (LayerNorm after attention + residual)
    layers.{i}.ffn.in.weight [I, H] / .bias [I]           layers.{i}.ffn.out.weight [H, I] / .bias
    layers.{i}.ffn_norm.weight / .bias [H]                (LayerNorm after the feed-forward)

ModernBERT (``norm_position == "pre"``) differs where its checkpoint does: no position or token
type table; the norms are applied *before* their sublayer (layer 0 has no attention norm, so
``layers.0.attention_norm.*`` is absent), then ``final_norm.weight`` / ``.bias`` [H] after the last
layer; Q|K|V are one tensor ``layers.{i}.attention.qkv.weight`` [3H, H] (``.bias`` [3H]) instead
of q, k, v; ``layers.{i}.ffn.in.weight`` is [2I, H] (``gated_ffn``: the first I rows go through the
activation and gate the second I). A bias the config turns off (``norm_bias``, ``attention_bias``,
``mlp_bias``) is absent from ``weight_names``: consumers test ``name in weight_names``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# model_type -> family. The family decides weight names and position-id semantics.
FAMILIES = {
    "bert": "bert",
    "roberta": "roberta",
    "xlm-roberta": "roberta",
    "mpnet": "mpnet",
    "distilbert": "distilbert",
    "modernbert": "modernbert",
}

# HF activation name -> activation. "gelu" in HF is the exact erf form (GELUActivation); the
# tanh approximations all compute the same formula.
ACTIVATIONS = {
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

_LAYER_PARTS = ("q", "k", "v", "o", "attention_norm", "ffn.in", "ffn.out", "ffn_norm")

# ModernBertConfig's defaults for what a config.json in the original form may leave out.
MODERNBERT_GLOBAL_EVERY = 3
MODERNBERT_ROPE_THETA = {"full_attention": 160_000.0, "sliding_attention": 10_000.0}
MODERNBERT_LAYER_TYPES = tuple(MODERNBERT_ROPE_THETA)


@dataclass(frozen=True)
class EncoderArchitecture:
    """What an encoder is, independent of where its weights live.

    Attributes:
        model_type: ``config.json``'s ``model_type``.
        family: ``"bert"``, ``"roberta"``, ``"mpnet"``, ``"distilbert"`` or ``"modernbert"``.
        hidden_size, num_heads, num_layers, intermediate_size: the sizes.
        layer_norm_eps: every LayerNorm's epsilon.
        activation: ``"gelu"`` (erf), ``"gelu_tanh"`` or ``"relu"``.
        position_kind: ``"absolute"`` (token i has position i), ``"padding_offset"``
            (Hugging Face's ``create_position_ids_from_input_ids``: non-pad tokens count from
            ``padding_idx + 1``; pad tokens get ``padding_idx``) or ``"rotary"`` (no table:
            token i is rotated by angle ``i * theta ** (-2k / head_size)``, NeoX rotate-half
            layout, on queries and keys).
        padding_idx: the pad id positions are counted from (``padding_offset`` only).
        vocab_size, max_positions: rows of the word and position tables (``rotary``: the
            config's ``max_position_embeddings``).
        relative_attention_num_buckets: columns of MPNet's bias table (0 for others).
        weight_names: canonical name -> tensor name in the checkpoint (prefix included).
        shapes: canonical name -> shape.
        norm_position: ``"post"``: ``x = LayerNorm(x + sublayer(x))`` (BERT); ``"pre"``:
            ``x = x + sublayer(LayerNorm(x))``, then ``final_norm`` (ModernBERT).
        gated_ffn: the feed-forward is ``out(act(a) * b)`` with ``a | b = in(x)`` (GeGLU).
        rotary_thetas: per layer, the rotary base (``rotary`` positions only; else empty).
        attention_windows: per layer, ``None`` for global attention or ``w`` for a sliding
            window: query i sees key j iff ``|i - j| <= w`` (inclusive; ModernBERT's
            ``local_attention // 2``). Empty: every layer is global.
    """

    model_type: str
    family: str
    hidden_size: int
    num_heads: int
    num_layers: int
    intermediate_size: int
    layer_norm_eps: float
    activation: str
    position_kind: str
    padding_idx: int
    vocab_size: int
    max_positions: int
    relative_attention_num_buckets: int = 0
    weight_names: Mapping[str, str] = field(default_factory=dict)
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    norm_position: str = "post"
    gated_ffn: bool = False
    rotary_thetas: tuple[float, ...] = ()
    attention_windows: tuple[int | None, ...] = ()

    def attention_window(self, layer: int) -> int | None:
        """Layer ``layer``'s sliding window (``|i - j| <= w``), ``None`` when it is global."""
        return self.attention_windows[layer] if self.attention_windows else None

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def max_sequence_length(self) -> int:
        """Longest input the position table allows (RoBERTa-style positions start after the
        padding index, so those slots are unusable; rotary positions have no table and take
        ``max_position_embeddings``)."""
        if self.position_kind == "padding_offset":
            return self.max_positions - self.padding_idx - 1
        return self.max_positions

    def parameter_bytes(self, itemsize: int = 4) -> int:
        """Bytes of every tensor the encoder uses."""
        total = 0
        for shape in self.shapes.values():
            count = 1
            for size in shape:
                count *= size
            total += count
        return total * itemsize


def supported_architectures() -> tuple[str, ...]:
    """The ``config.json`` ``model_type`` values sutra runs."""
    return tuple(FAMILIES)


def describe_encoder(config: Mapping, tensor_shapes: Mapping[str, tuple[int, ...]]
                     ) -> EncoderArchitecture:
    """Check ``config`` against the checkpoint's tensors (names and shapes only, no data) and
    describe the encoder.

    Raises:
        ValueError: an unsupported ``model_type``, activation or position embedding type, a
            missing or mis-shaped tensor (named with its full checkpoint name).
    """
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise ValueError(
            f"unsupported model_type {model_type!r}; supported: "
            f"{', '.join(supported_architectures())}"
        )
    family = FAMILIES[model_type]
    if family == "modernbert":
        return _describe_modernbert(config, tensor_shapes)
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
    _check_heads_and_activation(hidden, heads, act_name)
    pos_type = config.get("position_embedding_type", "absolute")
    if family in ("bert", "roberta") and pos_type != "absolute":
        raise ValueError(f"unsupported position_embedding_type {pos_type!r}; only 'absolute'")

    names = _Names(tensor_shapes, "embeddings.word_embeddings.weight")
    vocab = names.rows("embeddings.word_embeddings.weight")
    positions = names.rows("embeddings.position_embeddings.weight")
    expect: dict[str, tuple[str, tuple[int, ...]]] = {
        "embeddings.word": ("embeddings.word_embeddings.weight", (vocab, hidden)),
        "embeddings.position": ("embeddings.position_embeddings.weight", (positions, hidden)),
        "embeddings.norm.weight": ("embeddings.LayerNorm.weight", (hidden,)),
        "embeddings.norm.bias": ("embeddings.LayerNorm.bias", (hidden,)),
    }
    if family in ("bert", "roberta"):
        n_types = int(_cfg(config, "type_vocab_size", default=2))
        expect["embeddings.token_type"] = ("embeddings.token_type_embeddings.weight",
                                           (n_types, hidden))
    if family in ("bert", "distilbert"):
        position_kind, padding_idx = "absolute", 0
    elif family == "roberta":
        position_kind, padding_idx = "padding_offset", int(_cfg(config, "pad_token_id", default=1))
    else:
        # MPNetEmbeddings hard-codes padding_idx = 1 regardless of pad_token_id.
        position_kind, padding_idx = "padding_offset", 1
    n_buckets = 0
    if family == "mpnet":
        n_buckets = int(_cfg(config, "relative_attention_num_buckets", default=32))
        if n_buckets < MPNET_NUM_BUCKETS:
            raise ValueError(f"relative_attention_num_buckets is {n_buckets}; MPNet needs at least "
                             f"{MPNET_NUM_BUCKETS}")
        expect["relative_attention_bias"] = ("encoder.relative_attention_bias.weight",
                                             (n_buckets, heads))
    sizes = {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden),
             "o": (hidden, hidden), "ffn.in": (inter, hidden), "ffn.out": (hidden, inter)}
    for i in range(n_layers):
        source = _layer_names(family, i)
        for part in _LAYER_PARTS:
            canonical = f"layers.{i}.attention.{part}" if part in "qkvo" else f"layers.{i}.{part}"
            n_out = sizes[part][0] if part in sizes else hidden
            if part in sizes:
                expect[canonical + ".weight"] = (source[part] + ".weight", sizes[part])
            else:
                expect[canonical + ".weight"] = (source[part] + ".weight", (hidden,))
            expect[canonical + ".bias"] = (source[part] + ".bias", (n_out,))

    weight_names: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for canonical, (name, shape) in expect.items():
        weight_names[canonical] = names.check(name, shape)
        shapes[canonical] = shape
    return EncoderArchitecture(
        model_type=model_type, family=family, hidden_size=hidden, num_heads=heads,
        num_layers=n_layers, intermediate_size=inter, layer_norm_eps=eps,
        activation=ACTIVATIONS[act_name], position_kind=position_kind, padding_idx=padding_idx,
        vocab_size=vocab, max_positions=positions, relative_attention_num_buckets=n_buckets,
        weight_names=weight_names, shapes=shapes,
    )


def _check_heads_and_activation(hidden: int, heads: int, act_name: str) -> None:
    if hidden % heads:
        raise ValueError(f"hidden size {hidden} is not a multiple of the number of heads {heads}")
    if act_name not in ACTIVATIONS:
        raise ValueError(
            f"unsupported activation {act_name!r}; supported: {', '.join(ACTIVATIONS)}")


def _describe_modernbert(config: Mapping, tensor_shapes: Mapping[str, tuple[int, ...]]
                         ) -> EncoderArchitecture:
    """:func:`describe_encoder` for transformers' ``ModernBertModel``, from ``config.json`` in
    either form: the original one (``global_attn_every_n_layers``, ``global_rope_theta``,
    ``local_rope_theta``) or the one transformers 5 writes (``layer_types`` and
    ``rope_parameters`` per layer type)."""
    hidden = int(_cfg(config, "hidden_size"))
    heads = int(_cfg(config, "num_attention_heads"))
    n_layers = int(_cfg(config, "num_hidden_layers"))
    inter = int(_cfg(config, "intermediate_size"))
    eps = float(_cfg(config, "norm_eps", default=1e-5))
    act_name = _cfg(config, "hidden_activation", default="gelu")
    _check_heads_and_activation(hidden, heads, act_name)
    layer_types = _modernbert_layer_types(config, n_layers)
    thetas = _modernbert_rope_thetas(config)
    # ModernBertConfig.sliding_window: local_attention is the whole window, so half of it on
    # each side; the masks compare |i - j| <= that (masking_utils' bidirectional overlay).
    window = int(_cfg(config, "local_attention", default=128)) // 2
    # The config's flags decide which biases exist (ModernBERT defaults to none at all).
    norm_bias = bool(config.get("norm_bias", False))
    attention_bias = bool(config.get("attention_bias", False))
    mlp_bias = bool(config.get("mlp_bias", False))

    names = _Names(tensor_shapes, "embeddings.tok_embeddings.weight")
    vocab = names.rows("embeddings.tok_embeddings.weight")
    expect: dict[str, tuple[str, tuple[int, ...]]] = {
        "embeddings.word": ("embeddings.tok_embeddings.weight", (vocab, hidden))}

    def linear(canonical: str, name: str, shape: tuple[int, int], bias: bool) -> None:
        expect[canonical + ".weight"] = (name + ".weight", shape)
        if bias:
            expect[canonical + ".bias"] = (name + ".bias", shape[:1])

    def norm(canonical: str, name: str) -> None:
        linear(canonical, name, (hidden,), norm_bias)  # type: ignore[arg-type]

    norm("embeddings.norm", "embeddings.norm")
    for i in range(n_layers):
        layer, p = f"layers.{i}.", f"layers.{i}."
        if i > 0:  # layer 0's attention norm is an Identity in ModernBertEncoderLayer
            norm(layer + "attention_norm", p + "attn_norm")
        linear(layer + "attention.qkv", p + "attn.Wqkv", (3 * hidden, hidden), attention_bias)
        linear(layer + "attention.o", p + "attn.Wo", (hidden, hidden), attention_bias)
        norm(layer + "ffn_norm", p + "mlp_norm")
        linear(layer + "ffn.in", p + "mlp.Wi", (2 * inter, hidden), mlp_bias)
        linear(layer + "ffn.out", p + "mlp.Wo", (hidden, inter), mlp_bias)
    norm("final_norm", "final_norm")

    weight_names = {canonical: names.check(name, shape)
                    for canonical, (name, shape) in expect.items()}
    return EncoderArchitecture(
        model_type="modernbert", family="modernbert", hidden_size=hidden, num_heads=heads,
        num_layers=n_layers, intermediate_size=inter, layer_norm_eps=eps,
        activation=ACTIVATIONS[act_name], position_kind="rotary",
        padding_idx=int(_cfg(config, "pad_token_id", default=0)), vocab_size=vocab,
        max_positions=int(_cfg(config, "max_position_embeddings", default=8192)),
        weight_names=weight_names, shapes={k: shape for k, (_, shape) in expect.items()},
        norm_position="pre", gated_ffn=True,
        rotary_thetas=tuple(thetas[t] for t in layer_types),
        attention_windows=tuple(None if t == "full_attention" else window for t in layer_types),
    )


def _modernbert_layer_types(config: Mapping, n_layers: int) -> list[str]:
    """``"full_attention"`` or ``"sliding_attention"`` per layer: ``layer_types`` when the
    config has it, else layer i is global iff ``i % global_attn_every_n_layers == 0``."""
    types = config.get("layer_types")
    if types is None:
        every = int(_cfg(config, "global_attn_every_n_layers", default=MODERNBERT_GLOBAL_EVERY))
        return ["full_attention" if i % every == 0 else "sliding_attention"
                for i in range(n_layers)]
    types = list(types)
    if len(types) != n_layers or any(t not in MODERNBERT_LAYER_TYPES for t in types):
        raise ValueError(f"layer_types must list {n_layers} values out of "
                         f"{', '.join(MODERNBERT_LAYER_TYPES)}; got {types}")
    return types


def _modernbert_rope_thetas(config: Mapping) -> dict[str, float]:
    """The rotary base per layer type: ``rope_parameters[type]["rope_theta"]``, else the original
    ``global_rope_theta`` / ``local_rope_theta``. Only plain rotary (``rope_type`` "default") is
    supported: a scaled variant would change the angles."""
    legacy = {"full_attention": config.get("global_rope_theta"),
              "sliding_attention": config.get("local_rope_theta")}
    if "local_rope_theta" in config and config["local_rope_theta"] is None:
        # The original ModernBertAttention: local layers take global_rope_theta when
        # local_rope_theta is null.
        legacy["sliding_attention"] = legacy["full_attention"] or MODERNBERT_ROPE_THETA[
            "full_attention"]
    parameters = config.get("rope_parameters") or {}
    if config.get("rope_scaling"):
        parameters = {t: {**(parameters.get(t) or {}), **config["rope_scaling"]}
                      for t in MODERNBERT_LAYER_TYPES}
    thetas = {}
    for layer_type in MODERNBERT_LAYER_TYPES:
        params = parameters.get(layer_type) or {}
        rope_type = params.get("rope_type", params.get("type", "default"))
        if rope_type != "default":
            raise ValueError(f"unsupported rope_type {rope_type!r} for {layer_type} layers; "
                             "only 'default' (plain rotary)")
        theta = params.get("rope_theta", legacy[layer_type])
        thetas[layer_type] = float(MODERNBERT_ROPE_THETA[layer_type] if theta is None else theta)
    return thetas


def _cfg(config: Mapping, *keys: str, default=None):
    for k in keys:
        if k in config and config[k] is not None:
            return config[k]
    if default is None:
        raise ValueError(f"config.json has no {keys[0]!r}")
    return default


class _Names:
    """The checkpoint's tensor names, with the encoder's prefix found once."""

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], anchor: str) -> None:
        self._shapes = shapes
        candidates = [k[: -len(anchor)] for k in shapes if k.endswith(anchor)]
        # Checkpoints saved from wrappers nest the encoder ("bert.", "roberta.", "0.auto_model.");
        # the shortest prefix is the encoder itself rather than a head that reuses the name.
        candidates = [c for c in candidates if c == "" or c.endswith(".")]
        if not candidates:
            raise ValueError(f"missing weight tensor {anchor!r} (searched with any prefix)")
        self.prefix = min(candidates, key=len)

    def rows(self, name: str) -> int:
        full = self.prefix + name
        if full not in self._shapes:
            raise ValueError(f"missing weight tensor {full!r}")
        rows, *_ = self._shapes[full]
        return int(rows)

    def check(self, name: str, shape: tuple[int, ...]) -> str:
        full = self.prefix + name
        if full not in self._shapes:
            raise ValueError(f"missing weight tensor {full!r}")
        if tuple(self._shapes[full]) != shape:
            raise ValueError(
                f"weight tensor {full!r} has shape {tuple(self._shapes[full])}; expected {shape}"
            )
        return full


# Per family: the layer prefix, then the checkpoint names of _LAYER_PARTS in that order.
_LAYER_NAMES = {
    "bert": ("encoder.layer.{i}.", (
        "attention.self.query", "attention.self.key", "attention.self.value",
        "attention.output.dense", "attention.output.LayerNorm", "intermediate.dense",
        "output.dense", "output.LayerNorm")),
    "mpnet": ("encoder.layer.{i}.", (
        "attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o",
        "attention.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm")),
    "distilbert": ("transformer.layer.{i}.", (
        "attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin",
        "sa_layer_norm", "ffn.lin1", "ffn.lin2", "output_layer_norm")),
}
_LAYER_NAMES["roberta"] = _LAYER_NAMES["bert"]


def _layer_names(family: str, i: int) -> dict[str, str]:
    """Canonical layer part -> checkpoint name (without the encoder's prefix) for layer i."""
    prefix, names = _LAYER_NAMES[family]
    return {part: prefix.format(i=i) + name for part, name in zip(_LAYER_PARTS, names)}
