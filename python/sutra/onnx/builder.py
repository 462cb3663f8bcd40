"""ONNX graph of a sentence-transformers encoder: transformer + Pooling (+ Dense ...) (+ Normalize).

Graph contract (both variants):
  inputs   input_ids       int64 [batch, sequence]
           attention_mask  int64 [batch, sequence], 1 for real tokens, 0 for padding
  outputs  token_embeddings    float32 [batch, sequence, hidden]  last hidden state; rows at
                               padded positions are computed but meaningless
           sentence_embedding  float32 [batch, width]  Pooling over the mask, then the Dense
                               modules (width: the last one's out_features, else hidden), then
                               L2 normalization when the pooling spec asks for it

Sequences may be at most as long as the position table allows: max_position_embeddings for
BERT/DistilBERT, max_position_embeddings - padding_idx - 1 for RoBERTa/XLM-R/MPNet (514 -> 512);
truncating is the caller's job (a longer input fails in the position Gather). ModernBERT has no
table (rotary positions): the graph runs any length, the model was trained up to
max_position_embeddings (8192). Its local layers see keys within a band, ``|i - j| <= window``,
an additive mask combined with the padding mask.

``fused=True`` uses ONNX Runtime contrib ops (domain com.microsoft: Attention (MultiHeadAttention
in the packed graph), BiasGelu / FastGelu) and runs only on ONNX Runtime. ``fused=False`` uses
standard ONNX ops (opset >= 17 for LayerNormalization).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from .. import _core
from ._arch import EncoderSpec, LayerWeights, mpnet_relative_buckets, parse_encoder
from ._graph import BOOL, FLOAT, INT32, INT64, MS_DOMAIN, GraphBuilder, value_info

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len", "weightedmean", "lasttoken")
DENSE_ACTIVATIONS = ("identity", "tanh", "relu", "gelu", "sigmoid")
PRODUCER = "sutra"
# A serialized ModelProto cannot exceed 2 GiB (protobuf limit); leave room for the graph itself.
_PROTO_LIMIT = 2**31 - 2**26
_NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize default
_MEAN_CLAMP = 1e-9  # sentence-transformers Pooling clamps the token count


@dataclass(frozen=True)
class PoolingSpec:
    """How token embeddings become one sentence embedding (sentence-transformers semantics,
    the same as ``sutra._core.pool_tokens``).

    mode: "mean" (masked mean), "cls" (first token), "max" (masked max; -inf where a row has no
        unmasked token), "mean_sqrt_len" (masked sum / sqrt(token count)), "weightedmean"
        (tokens weighted by their 1-based position) or "lasttoken" (the last unmasked token).
    normalize: L2-normalize the final vector, after any Dense modules (sentence-transformers
        ``Normalize``, eps 1e-12).
    """

    mode: str
    normalize: bool

    def __post_init__(self) -> None:
        if self.mode not in POOLING_MODES:
            raise ValueError(f"pooling mode must be one of {POOLING_MODES}, got {self.mode!r}")


@dataclass(frozen=True)
class DenseSpec:
    """A sentence-transformers ``Dense`` module: ``activation(x @ weight.T + bias)``.

    weight: float32 [out_features, in_features] (torch Linear layout); bias: float32
    [out_features] or ``None``; activation: one of :data:`DENSE_ACTIVATIONS`.
    """

    weight: np.ndarray
    bias: np.ndarray | None
    activation: str

    def __post_init__(self) -> None:
        if self.activation not in DENSE_ACTIVATIONS:
            raise ValueError(f"Dense activation must be one of {DENSE_ACTIVATIONS}, got "
                             f"{self.activation!r}")
        if np.ndim(self.weight) != 2:
            raise ValueError(f"Dense weight must be [out, in], got shape {np.shape(self.weight)}")
        if self.bias is not None and np.shape(self.bias) != (np.shape(self.weight)[0],):
            raise ValueError(f"Dense bias must be [{np.shape(self.weight)[0]}], got shape "
                             f"{np.shape(self.bias)}")


def build_encoder_graph(
    config: Mapping,
    weights: Mapping[str, np.ndarray],
    pooling: PoolingSpec,
    *,
    dense: Sequence[DenseSpec] = (),
    fused: bool = True,
    opset: int = 17,
) -> onnx.ModelProto:
    """Build the ONNX encoder for a Hugging Face checkpoint.

    Args:
        config: parsed config.json; ``model_type`` must be in :func:`supported_architectures`.
        weights: tensor name -> array (float32, float16 is upcast), names with or without a
            ``bert.``/``roberta.``/``mpnet.`` style prefix.
        pooling: pooling mode and whether to normalize.
        dense: the pipeline's Dense modules, applied in order after pooling (and before the
            normalization); each one's in_features must be the previous width.
        fused: use ONNX Runtime contrib ops (faster on ORT CPU) instead of standard ops only.
        opset: default-domain opset, at least 17.

    Raises:
        ValueError: unsupported model_type or activation, missing or mis-shaped tensor, opset < 17,
            or weights too large for a single 2 GiB protobuf.
    """
    spec = _parse_checked(config, weights, opset)

    g = GraphBuilder(opset)
    hidden = _embeddings(g, spec)
    masks = _Masks(g)
    position_bias = _relative_position_bias(g, spec) if spec.relative_bias is not None else None
    hidden = _encoder_layers(g, spec, hidden, masks, position_bias, _Rotary(g, spec), fused)

    pooled = _pooling(g, hidden, "attention_mask", pooling, spec.arch.hidden_size)
    width = _head(g, pooled, dense, pooling, spec.arch.hidden_size)

    g.graph.input.extend([
        value_info("input_ids", INT64, ["batch", "sequence"]),
        value_info("attention_mask", INT64, ["batch", "sequence"]),
    ])
    g.graph.output.extend([
        value_info("token_embeddings", FLOAT, ["batch", "sequence", spec.arch.hidden_size]),
        value_info("sentence_embedding", FLOAT, ["batch", width]),
    ])
    return _finish(g, spec, pooling, dense, fused, opset, layout="padded")


def build_packed_encoder_graph(
    config: Mapping,
    weights: Mapping[str, np.ndarray],
    pooling: PoolingSpec,
    *,
    dense: Sequence[DenseSpec] = (),
    fused: bool = True,
    opset: int = 17,
) -> onnx.ModelProto:
    """Build the padding-free ("packed") variant of :func:`build_encoder_graph`.

    The tokens of every sequence of a batch are concatenated; nothing is padded, so the dense
    layers (projections, feed-forward, LayerNorm) compute real tokens only. Attention runs in
    rows: ``cu_rowlens`` cuts the tokens into rows of whole sequences, each row is gathered into
    ``S`` slots (``S`` = the longest row) and a token attends to the tokens of its own sequence.
    Attention then costs ``rows * S**2``: one row per sequence is the padded graph's attention,
    one row of everything is ``tokens**2``, and sequences binned into rows as long as the
    longest one (:func:`sutra.packing.plan_rows`) come close to ``tokens * longest``.

    Graph contract:
      inputs   input_ids   int64 [tokens]  the sequences' ids, one after the other
               cu_seqlens  int64 [batch + 1]  0, then the running total of the sequence lengths
                           (sequence b is ``input_ids[cu_seqlens[b]:cu_seqlens[b + 1]]``);
                           nondecreasing, last value = tokens, every length >= 1
               cu_rowlens  int64 [rows + 1]  0, then the end of each attention row; every value
                           is also in cu_seqlens (rows hold whole sequences), last value = tokens
      outputs  token_embeddings    float32 [tokens, hidden]  last hidden state of every token
               sentence_embedding  float32 [batch, hidden]  pooled per sequence (then normalized),
                                   equal to the padded graph's output for the same sequences

    Position ids restart at every sequence (with the RoBERTa/MPNet padding offset, which counts
    non-pad tokens as the padded graph does); MPNet's relative position bias is taken from the
    distance of two tokens within their sequence, and rotary angles (ModernBERT) and sliding
    windows from the positions within the sequence. Arguments and errors are those of
    :func:`build_encoder_graph`.
    """
    spec = _parse_checked(config, weights, opset)

    g = GraphBuilder(opset)
    seg = _PackedSegments(g)
    rows = _AttentionRows(g, seg)
    hidden = _packed_embeddings(g, spec, seg)  # [T, H]
    position_bias = _packed_relative_position_bias(g, spec, rows) if spec.relative_bias is not None else None
    tokens = _encoder_layers(g, spec, hidden, rows, position_bias, _Rotary(g, spec, seg.offset),
                             fused)

    pooled = _packed_pooling(g, tokens, seg, pooling)
    width = _head(g, pooled, dense, pooling, spec.arch.hidden_size)

    g.graph.input.extend([
        value_info("input_ids", INT64, ["tokens"]),
        value_info("cu_seqlens", INT64, ["batch_plus_1"]),
        value_info("cu_rowlens", INT64, ["rows_plus_1"]),
    ])
    g.graph.output.extend([
        value_info("token_embeddings", FLOAT, ["tokens", spec.arch.hidden_size]),
        value_info("sentence_embedding", FLOAT, ["batch", width]),
    ])
    return _finish(g, spec, pooling, dense, fused, opset, layout="packed")


class _PackedSegments:
    """Per-token bookkeeping of a packed batch, derived once from ``cu_seqlens``."""

    def __init__(self, g: GraphBuilder) -> None:
        self.starts, self.ends, self.lengths = _intervals(g, "cu_seqlens", "seq")  # [B] each
        ends = self.ends
        total = g.squeeze(g.op("Shape", ["input_ids"]), [0], name="num_tokens")
        index = g.op("Range", [g.const(0), total, g.const(1)], name="token_index")  # [T]
        self.index = index
        self.segment = _interval_of(g, index, ends, "token_segment")  # [T]
        self.start_of_token = g.op("Gather", [self.starts, self.segment], name="token_seq_start")
        self.offset = g.op("Sub", [index, self.start_of_token], name="token_offset")  # [T]
        batch = g.squeeze(g.op("Shape", [self.starts]), [0], name="num_sequences")
        self.batch_index = g.op("Range", [g.const(0), batch, g.const(1)], name="seq_index")  # [B]
        # Which tokens belong to which sequence, [B, T]: the pooling matrix.
        self.membership = g.op("Equal", [g.unsqueeze(self.batch_index, [1]),
                                         g.unsqueeze(self.segment, [0])], name="membership")


def _packed_embeddings(g: GraphBuilder, spec: EncoderSpec, seg: _PackedSegments) -> str:
    word_table = g.weight("embeddings.word", spec.word_embeddings)
    words = g.op("Gather", [word_table, "input_ids"], name="word_embeddings")  # [T, H]
    if spec.position_embeddings is None:  # rotary: positions act inside attention
        return _layer_norm(g, spec, words, "embeddings.ln", spec.emb_ln_g, spec.emb_ln_b,
                           name="embeddings_ln")
    pos_table = g.weight("embeddings.position", spec.position_embeddings)
    if spec.arch.position_kind == "absolute":
        pos_ids = seg.offset
    else:
        # HF create_position_ids_from_input_ids per sequence: cumsum(not pad) * not pad + pad,
        # the cumulative sum restarted at each sequence start.
        pad = g.const(spec.arch.padding_idx)
        not_pad = g.op("Cast", [g.op("Not", [g.op("Equal", ["input_ids", pad])])], to=INT64,
                       name="not_pad")
        inclusive = g.op("CumSum", [not_pad, g.const(0)])
        exclusive = g.op("CumSum", [not_pad, g.const(0)], exclusive=1)
        before = g.op("Gather", [exclusive, seg.start_of_token], name="not_pad_before_seq")
        within = g.op("Sub", [inclusive, before])
        pos_ids = g.op("Add", [g.op("Mul", [within, not_pad]), pad], name="position_ids")
    positions = g.op("Gather", [pos_table, pos_ids], name="position_embeddings")
    gamma = g.weight("embeddings.ln.weight", spec.emb_ln_g)
    beta = g.weight("embeddings.ln.bias", spec.emb_ln_b)
    summed = g.op("Add", [words, positions], name="embeddings_sum")
    normed = g.op("LayerNormalization", [summed, gamma, beta], axis=-1, epsilon=spec.arch.layer_norm_eps,
                  name="embeddings_ln")
    return normed


def _packed_relative_position_bias(g: GraphBuilder, spec: EncoderSpec, rows: _AttentionRows) -> str:
    """MPNet bias [R, heads, S, S] from the in-sequence distance of every slot pair of a row.

    Pairs of different sequences (and empty slots) get some bucket too; the row mask removes them.
    """
    n = spec.position_embeddings.shape[0]
    # bucket of (key - query) for -(n-1)..(n-1), the diagonals of the padded graph's table.
    by_distance = _core.mpnet_relative_buckets(np.arange(-(n - 1), n, dtype=np.int64)).astype(np.int32)
    table_by_distance = g.weight("relative_position.buckets_by_distance", by_distance)
    table = g.weight("relative_position.bias", spec.relative_bias)
    offset = rows.slot_offset  # [R, S]
    distance = g.op("Sub", [g.unsqueeze(offset, [1]), g.unsqueeze(offset, [2])])  # [R, S, S]
    shifted = g.op("Add", [distance, g.const(n - 1)])
    buckets = g.op("Gather", [table_by_distance, shifted], name="rel_buckets")
    values = g.op("Gather", [table, buckets], name="rel_values")  # [R, S, S, heads]
    return g.op("Transpose", [values], perm=[0, 3, 1, 2], name="rel_position_bias")


class _AttentionRows:
    """Where attention runs in a packed batch: ``cu_rowlens`` cuts the packed tokens into rows
    of whole sequences; each row is laid out in ``S`` slots (``S`` = the longest row, empty slots
    at the end) and a token attends to the tokens of its own sequence within its row.

    The dense layers keep the packed ``[T, H]`` tokens; only attention gathers them into
    ``[R, S, H]`` and back. Attention costs ``R * S**2`` instead of ``T**2`` for one row of all
    tokens, which is what makes large packed passes cheap: the caller bins sequences into rows
    about as long as the longest one (``sutra.packing``).
    """

    def __init__(self, g: GraphBuilder, seg: _PackedSegments) -> None:
        self._g = g
        starts, ends, lengths = _intervals(g, "cu_rowlens", "row")  # [R] each
        width = g.reduce("ReduceMax", lengths, [0], 0, name="row_width")  # S, a scalar
        column = g.op("Range", [g.const(0), width, g.const(1)], name="slot_column")  # [S]
        # Slot -> token: [R, S]; empty slots read token 0 (any real token) and are masked.
        valid = g.op("Less", [g.unsqueeze(column, [0]), g.unsqueeze(lengths, [1])],
                     name="slot_valid")
        token = g.op("Add", [g.unsqueeze(starts, [1]), g.unsqueeze(column, [0])])
        self.slot_token = g.op("Where", [valid, token, g.const(0)], name="slot_token")
        # Token -> slot: [T], row * S + position in the row.
        row = _interval_of(g, seg.index, ends, "token_row")
        within = g.op("Sub", [seg.index, g.op("Gather", [starts, row])])
        self.token_slot = g.op("Add", [g.op("Mul", [row, width]), within], name="token_slot")
        # A slot's sequence, -1 when empty; a key is visible when it shares its query's sequence.
        slot_segment = g.op("Where", [valid, g.op("Gather", [seg.segment, self.slot_token]),
                                      g.const(-1)], name="slot_segment")
        self._same = g.op("And", [g.op("Equal", [g.unsqueeze(slot_segment, [2]),
                                                 g.unsqueeze(slot_segment, [1])]),
                                  g.unsqueeze(valid, [1])], name="same_sequence")  # [R, S, S]
        self._seg = seg
        self._width = width
        self._windowed: dict[int, str] = {}
        self._offset: str | None = None
        self._additive: str | None = None
        self._combined: str | None = None

    @property
    def slot_offset(self) -> str:
        """[R, S]: each slot's position within its sequence (0 for empty slots)."""
        if self._offset is None:
            self._offset = self._g.op("Gather", [self._seg.offset, self.slot_token],
                                      name="slot_offset")
        return self._offset

    def additive(self) -> str:
        """[R, 1, S, S]: 0 where the key is visible, float32 min elsewhere."""
        if self._additive is None:
            g = self._g
            bias = g.op("Where", [self._same, g.const(0.0, np.float32),
                                  g.const(np.finfo(np.float32).min, np.float32)])
            self._additive = g.unsqueeze(bias, [1], name="mask_bias")
        return self._additive

    def attend(self, g: GraphBuilder, spec: EncoderSpec, w: LayerWeights, p: str, x: str,
               position_bias: str | None, fused: bool) -> str:
        """Self-attention of packed tokens ``x`` [T, H] within their rows: context [T, H].

        Fused: the QKV projection runs on the T tokens, then ONNX Runtime's contrib
        MultiHeadAttention on [R, S, H] (projecting after the gather would also project the
        empty slots, 10 to 20% of them for short sentences). Standard ops: the tokens are
        gathered into rows and attended as the padded graph does.
        """
        if fused:
            H = spec.arch.hidden_size
            qkv = g.op("MatMul", [x, g.weight(f"{p}.qkv.weight", w.qkv_w)])  # [T, 3H]
            laid_out = g.op("Gather", [qkv, self.slot_token], name=f"{p}.qkv_rows")  # [R, S, 3H]
            q, k, v = g.op("Split", [laid_out, g.const([H, H, H])], axis=2, n_out=3,
                           name=f"{p}.qkv_split")
            ctx = g.op("MultiHeadAttention",
                       [q, k, v, g.weight(f"{p}.qkv.bias", w.qkv_b), "", self._bias(position_bias)],
                       domain=MS_DOMAIN, num_heads=spec.arch.num_heads, name=f"{p}.attention")
        else:
            laid_out = g.op("Gather", [x, self.slot_token], name=f"{p}.rows")  # [R, S, H]
            ctx = _attention_plain(g, spec, w, p, laid_out, self, position_bias)  # [R, S, H]
        flat = g.op("Reshape", [ctx, g.const([-1, spec.arch.hidden_size])])
        return g.op("Gather", [flat, self.token_slot], name=f"{p}.context_tokens")  # [T, H]

    def window_bias(self, window: int | None) -> str:
        """[R, 1, S, S] additive: key in the query's sequence and, with a window, ``|i - j| <=
        window`` (slots of one sequence are consecutive, so slot distance is token distance)."""
        if window is None:
            return self.additive()
        if window not in self._windowed:
            g = self._g
            visible = g.op("And", [self._same, _band(g, self._width, window)])
            self._windowed[window] = g.unsqueeze(
                _visible_bias(g, visible, f"rows_visible_window{window}"), [1],
                name=f"mask_bias_window{window}")
        return self._windowed[window]

    def _bias(self, position_bias: str | None) -> str:
        """The row mask plus MPNet's position bias, summed once for every layer."""
        if position_bias is None:
            return self.additive()
        if self._combined is None:
            self._combined = self._g.op("Add", [self.additive(), position_bias], name="rows_bias")
        return self._combined


def _packed_pooling(g: GraphBuilder, tokens: str, seg: _PackedSegments, pooling: PoolingSpec) -> str:
    """sentence-transformers Pooling per sequence of tokens [T, H]: the pooled [B, H] value."""
    pooled = "pooled"
    if pooling.mode in ("mean", "mean_sqrt_len", "weightedmean"):
        # Sum per sequence as one [B, T] x [T, H] product with the 0/1 membership matrix.
        member_f = g.op("Cast", [seg.membership], to=FLOAT, name="membership_float")
        if pooling.mode == "weightedmean":
            # Weight of a token: its 1-based position in its sequence.
            position = g.op("Cast", [g.op("Add", [seg.offset, g.const(1)])], to=FLOAT,
                            name="token_weight")
            member_f = g.op("Mul", [member_f, g.unsqueeze(position, [0])], name="weighted_membership")
            count = g.reduce("ReduceSum", member_f, [1], 1, name="weight_sum")
        else:
            count = g.unsqueeze(g.op("Cast", [seg.lengths], to=FLOAT), [1], name="token_count")
        summed = g.op("MatMul", [member_f, tokens], name="masked_sum")
        count = g.op("Max", [count, g.const(_MEAN_CLAMP, np.float32)])
        if pooling.mode == "mean_sqrt_len":
            count = g.op("Sqrt", [count])
        g.op("Div", [summed, count], outputs=[pooled])
    elif pooling.mode == "cls":
        g.op("Gather", [tokens, seg.starts], axis=0, outputs=[pooled])
    elif pooling.mode == "lasttoken":
        last = g.op("Sub", [seg.ends, g.const(1)], name="last_token")
        g.op("Gather", [tokens, last], axis=0, outputs=[pooled])
    else:  # max
        member = g.unsqueeze(seg.membership, [2])  # [B, T, 1]
        filled = g.op("Where", [member, g.unsqueeze(tokens, [0]), g.const(-np.inf, np.float32)])
        g.reduce("ReduceMax", filled, [1], 0, outputs=[pooled])
    return pooled


def _head(g: GraphBuilder, pooled: str, dense: Sequence[DenseSpec], pooling: PoolingSpec,
          hidden: int) -> int:
    """The Dense modules, then Normalize, from the pooled value to ``sentence_embedding``; the
    output width."""
    final = "sentence_embedding"
    x, width = pooled, hidden
    for k, module in enumerate(dense):
        n_out, n_in = np.shape(module.weight)
        if n_in != width:
            raise ValueError(f"Dense module {k} takes {n_in} features but receives {width}")
        y = g.op("MatMul", [x, g.weight(f"dense{k}.weight",
                                         np.ascontiguousarray(np.asarray(module.weight, np.float32).T))])
        if module.bias is not None:
            y = g.op("Add", [y, g.weight(f"dense{k}.bias", np.asarray(module.bias, np.float32))])
        x = _dense_activation(g, module.activation, y, f"dense{k}")
        width = n_out
    if pooling.normalize:
        norm = g.reduce("ReduceL2", x, [-1], 1, name="l2_norm")
        norm = g.op("Max", [norm, g.const(_NORMALIZE_EPS, np.float32)])
        g.op("Div", [x, norm], outputs=[final])
    else:
        g.op("Identity", [x], outputs=[final])
    return width


def _dense_activation(g: GraphBuilder, activation: str, x: str, prefix: str) -> str:
    if activation == "identity":
        return x
    if activation == "tanh":
        return g.op("Tanh", [x], name=f"{prefix}.tanh")
    if activation == "relu":
        return g.op("Relu", [x], name=f"{prefix}.relu")
    if activation == "sigmoid":
        return g.op("Sigmoid", [x], name=f"{prefix}.sigmoid")
    # torch.nn.GELU(): the exact erf form
    inner = g.op("Erf", [g.op("Div", [x, g.const(math.sqrt(2.0), np.float32)])])
    half = g.op("Mul", [x, g.const(0.5, np.float32)])
    return g.op("Mul", [half, g.op("Add", [inner, g.const(1.0, np.float32)])], name=f"{prefix}.gelu")


def _finish(g: GraphBuilder, spec: EncoderSpec, pooling: PoolingSpec, dense: Sequence[DenseSpec],
            fused: bool, opset: int, layout: str) -> onnx.ModelProto:
    graph = g.graph
    graph.name = f"sutra_{spec.arch.model_type}_encoder" + ("_packed" if layout == "packed" else "")
    graph.doc_string = (
        f"sutra {spec.arch.model_type} encoder, hidden {spec.arch.hidden_size}, {spec.arch.num_layers} layers, "
        f"pooling {pooling.mode}, {len(dense)} Dense, normalize {pooling.normalize}, "
        f"{layout} tokens, "
        f"{'ONNX Runtime contrib ops' if fused else 'standard ONNX ops'}"
    )
    model = g.model
    model.opset_import.append(helper.make_opsetid("", opset))
    if g.uses_ms_domain:
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    model.producer_name = PRODUCER
    # IR 8 is the oldest that carries opset 17; newer opsets need the IR version that introduced them.
    model.ir_version = max(8, helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True))
    meta = {
        "producer": PRODUCER,
        "model_type": spec.arch.model_type,
        "hidden_size": str(spec.arch.hidden_size),
        "num_layers": str(spec.arch.num_layers),
        "pooling_mode": pooling.mode,
        "normalize": "true" if pooling.normalize else "false",
        "dense": ",".join(f"{np.shape(d.weight)[1]}->{np.shape(d.weight)[0]}:{d.activation}"
                          for d in dense),
        "fused": "true" if fused else "false",
        "layout": layout,
    }
    helper.set_model_props(model, meta)
    return model


def _parse_checked(config: Mapping, weights: Mapping[str, np.ndarray], opset: int) -> EncoderSpec:
    """The encoder spec of a checkpoint, after the checks both graph builders share."""
    if opset < 17:
        raise ValueError(f"opset must be >= 17 (LayerNormalization), got {opset}")
    spec = parse_encoder(config, weights)
    _check_size(spec)
    return spec


def _intervals(g: GraphBuilder, cumulative: str, what: str) -> tuple[str, str, str]:
    """``(starts, ends, lengths)``, each [N], of the intervals a [N + 1] cumulative input
    (``cu_seqlens``, ``cu_rowlens``) describes."""
    starts = g.op("Slice", [cumulative, g.const([0]), g.const([-1])], name=f"{what}_starts")
    ends = g.op("Slice", [cumulative, g.const([1]), g.const([2**62])], name=f"{what}_ends")
    return starts, ends, g.op("Sub", [ends, starts], name=f"{what}_lengths")


def _interval_of(g: GraphBuilder, index: str, ends: str, name: str) -> str:
    """[T]: the interval each token index falls in, the number of intervals that end at or
    before it ([T, N] compared, then summed)."""
    ended = g.op("GreaterOrEqual", [g.unsqueeze(index, [1]), g.unsqueeze(ends, [0])])
    return g.reduce("ReduceSum", g.op("Cast", [ended], to=INT64), [1], 0, name=name)


def _check_size(spec: EncoderSpec) -> None:
    table = 0 if spec.position_embeddings is None else spec.position_embeddings.nbytes
    total = spec.word_embeddings.nbytes + table + spec.layer_bytes()
    if total > _PROTO_LIMIT:
        raise ValueError(
            f"weights take {total / 2**30:.2f} GiB; a single ONNX protobuf holds at most 2 GiB "
            "and external-data export is not supported"
        )


def _embeddings(g: GraphBuilder, spec: EncoderSpec) -> str:
    word_table = g.weight("embeddings.word", spec.word_embeddings)
    words = g.op("Gather", [word_table, "input_ids"], name="word_embeddings")
    if spec.position_embeddings is None:  # rotary: positions act inside attention
        return _layer_norm(g, spec, words, "embeddings.ln", spec.emb_ln_g, spec.emb_ln_b,
                           name="embeddings_ln")
    pos_table = g.weight("embeddings.position", spec.position_embeddings)

    if spec.arch.position_kind == "absolute":
        # Position ids are 0..S-1: slice the table instead of gathering. [S, H] broadcasts.
        seq = g.op("Slice", [g.op("Shape", ["input_ids"]), g.const([1]), g.const([2])], name="seq_len")
        positions = g.op("Slice", [pos_table, g.const([0]), seq, g.const([0])], name="position_embeddings")
    else:
        # HF create_position_ids_from_input_ids: padding is input_ids == padding_idx (not the mask).
        pad = g.const(spec.arch.padding_idx)
        is_pad = g.op("Equal", ["input_ids", pad])
        not_pad = g.op("Cast", [g.op("Not", [is_pad])], to=INT64, name="not_pad")
        cumsum = g.op("CumSum", [not_pad, g.const(1)])
        pos_ids = g.op("Add", [g.op("Mul", [cumsum, not_pad]), pad], name="position_ids")
        positions = g.op("Gather", [pos_table, pos_ids], name="position_embeddings")

    gamma = g.weight("embeddings.ln.weight", spec.emb_ln_g)
    beta = g.weight("embeddings.ln.bias", spec.emb_ln_b)
    summed = g.op("Add", [words, positions], name="embeddings_sum")
    return g.op("LayerNormalization", [summed, gamma, beta], axis=-1, epsilon=spec.arch.layer_norm_eps,
                name="embeddings_ln")


def _relative_position_bias(g: GraphBuilder, spec: EncoderSpec) -> str:
    """MPNet bias [1, heads, S, S], shared by all layers: bucket table sliced to S, then looked up."""
    n = spec.position_embeddings.shape[0]
    buckets = g.weight("relative_position.buckets", mpnet_relative_buckets(n).astype(np.int32))
    table = g.weight("relative_position.bias", spec.relative_bias)
    seq = g.op("Slice", [g.op("Shape", ["input_ids"]), g.const([1]), g.const([2])], name="rel_seq_len")
    seq2 = g.op("Concat", [seq, seq], axis=0)
    sliced = g.op("Slice", [buckets, g.const([0, 0]), seq2, g.const([0, 1])], name="rel_buckets")
    values = g.op("Gather", [table, sliced], name="rel_values")  # [S, S, heads]
    per_head = g.op("Transpose", [values], perm=[2, 0, 1])
    return g.unsqueeze(per_head, [0], name="rel_position_bias")


def _activation_fused(g: GraphBuilder, spec: EncoderSpec, x: str, bias: str, prefix: str) -> str:
    if spec.arch.activation == "gelu":
        return g.op("BiasGelu", [x, bias], domain=MS_DOMAIN, name=f"{prefix}.gelu")
    if spec.arch.activation == "gelu_tanh":
        return g.op("FastGelu", [x, bias], domain=MS_DOMAIN, name=f"{prefix}.gelu")
    return g.op("Relu", [g.op("Add", [x, bias])], name=f"{prefix}.relu")


def _activation_plain(g: GraphBuilder, spec: EncoderSpec, x: str, prefix: str) -> str:
    if spec.arch.activation == "relu":
        return g.op("Relu", [x], name=f"{prefix}.relu")
    half = g.op("Mul", [x, g.const(0.5, np.float32)])
    if spec.arch.activation == "gelu":
        # 0.5 x (1 + erf(x / sqrt 2)); the Div form is what ORT's Gelu fusion recognizes.
        inner = g.op("Erf", [g.op("Div", [x, g.const(math.sqrt(2.0), np.float32)])])
    else:
        # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = g.op("Mul", [g.op("Mul", [x, x]), x])
        poly = g.op("Add", [x, g.op("Mul", [cube, g.const(0.044715, np.float32)])])
        inner = g.op("Tanh", [g.op("Mul", [poly, g.const(math.sqrt(2.0 / math.pi), np.float32)])])
    return g.op("Mul", [half, g.op("Add", [inner, g.const(1.0, np.float32)])], name=f"{prefix}.gelu")


def _attention_contrib(g: GraphBuilder, spec: EncoderSpec, w: LayerWeights, p: str, x: str,
                       masks: _Masks, position_bias: str | None) -> str:
    """com.microsoft Attention: packed QKV projection, scaled softmax, context [B, S, H]."""
    inputs = [x, g.weight(f"{p}.qkv.weight", w.qkv_w), g.weight(f"{p}.qkv.bias", w.qkv_b), masks.int32()]
    if position_bias is not None:
        inputs += ["", position_bias]  # no past state
    return g.op("Attention", inputs, domain=MS_DOMAIN, num_heads=spec.arch.num_heads, name=f"{p}.attention")


def _attention_plain(g: GraphBuilder, spec: EncoderSpec, w: LayerWeights, p: str, x: str,
                     masks: _Masks, position_bias: str | None) -> str:
    """Standard-op attention laid out like a PyTorch export, context [B, S, H]."""
    H = spec.arch.hidden_size
    # Separate Q/K/V projections: measured no slower than one packed [H, 3H] MatMul + Split on ORT
    # CPU, and it is the pattern ONNX Runtime's own fusion tools expect.

    def project(j: int, tag: str) -> str:
        wm = g.weight(f"{p}.{tag}.weight", np.ascontiguousarray(w.qkv_w[:, j * H:(j + 1) * H]))
        b = g.weight(f"{p}.{tag}.bias", w.qkv_b[j * H:(j + 1) * H])
        return g.op("Add", [g.op("MatMul", [x, wm]), b])

    q, k, v = project(0, "query"), project(1, "key"), project(2, "value")
    biases = ([] if position_bias is None else [position_bias]) + [masks.additive()]
    return _attend_heads(g, spec, p, q, k, v, biases)


def _attend_heads(g: GraphBuilder, spec: EncoderSpec, p: str, q: str, k: str, v: str,
                  biases: list[str]) -> str:
    """Scaled dot-product attention in standard ops: q, k, v [N, S, H] -> context [N, S, H];
    ``biases`` are added to the scores [N, heads, S, S] (broadcast) in order."""
    H, nh, dh = spec.arch.hidden_size, spec.arch.num_heads, spec.arch.head_size
    split_heads = g.const([0, 0, nh, dh])

    def heads(y: str, tag: str, perm: list[int]) -> str:
        return g.op("Transpose", [g.op("Reshape", [y, split_heads])], perm=perm,
                    name=f"{p}.{tag}_heads")

    q = heads(q, "query", [0, 2, 1, 3])  # [N, nh, S, dh]
    k = heads(k, "key", [0, 2, 3, 1])  # [N, nh, dh, S]
    v = heads(v, "value", [0, 2, 1, 3])
    scores = g.op("Div", [g.op("MatMul", [q, k]), g.const(math.sqrt(dh), np.float32)])
    for bias in biases[:-1]:
        scores = g.op("Add", [scores, bias])
    scores = g.op("Add", [scores, biases[-1]], name=f"{p}.scores")
    probs = g.op("Softmax", [scores], axis=-1)
    ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    return g.op("Reshape", [ctx, g.const([0, 0, H])], name=f"{p}.context")


def _add_layer_norm(g: GraphBuilder, spec: EncoderSpec, y: str, bias: str, residual: str,
                    gamma: str, beta: str, **out) -> str:
    """LayerNorm(y + bias + residual).

    Standard ops in both variants: on ORT 1.32 CPU (AVX2) the contrib SkipLayerNormalization kernel
    measured ~4x slower than Add + Add + LayerNormalization on [512, 384] activations.
    """
    summed = g.op("Add", [g.op("Add", [y, bias]), residual])
    return g.op("LayerNormalization", [summed, gamma, beta], axis=-1, epsilon=spec.arch.layer_norm_eps, **out)


def _encoder_layers(g: GraphBuilder, spec: EncoderSpec, hidden: str,
                    masks: _Masks | _AttentionRows, position_bias: str | None,
                    rotary: _Rotary, fused: bool) -> str:
    """Every layer, from the embeddings to ``token_embeddings`` (after the final norm of a
    pre-norm encoder)."""
    pre_norm = spec.arch.norm_position == "pre"
    for i, layer in enumerate(spec.layers()):
        last = i == spec.arch.num_layers - 1 and not pre_norm
        out_name = "token_embeddings" if last else None
        if pre_norm:
            hidden = _pre_norm_layer(g, spec, layer, i, hidden, masks, rotary, fused)
        else:
            hidden = _layer(g, spec, layer, i, hidden, masks, position_bias, out_name, fused)
    if pre_norm:
        return _layer_norm(g, spec, hidden, "final_norm", spec.tensor("final_norm.weight"),
                           spec.optional("final_norm.bias"), outputs=["token_embeddings"])
    if spec.arch.num_layers == 0:
        hidden = g.op("Identity", [hidden], outputs=["token_embeddings"])
    return hidden


def _layer(g: GraphBuilder, spec: EncoderSpec, w: LayerWeights, i: int, x: str,
           masks: _Masks | _AttentionRows, position_bias: str | None, out_name: str | None,
           fused: bool) -> str:
    p = f"layer{i}"
    if isinstance(masks, _AttentionRows):
        ctx = masks.attend(g, spec, w, p, x, position_bias, fused)
    else:
        attention = _attention_contrib if fused else _attention_plain
        ctx = attention(g, spec, w, p, x, masks, position_bias)
    proj = g.op("MatMul", [ctx, g.weight(f"{p}.attn_out.weight", w.out_w)])
    x1 = _add_layer_norm(g, spec, proj, g.weight(f"{p}.attn_out.bias", w.out_b), x,
                         g.weight(f"{p}.ln1.weight", w.ln1_g), g.weight(f"{p}.ln1.bias", w.ln1_b),
                         name=f"{p}.ln1")
    h = g.op("MatMul", [x1, g.weight(f"{p}.ffn_in.weight", w.ffn_in_w)])
    bias = g.weight(f"{p}.ffn_in.bias", w.ffn_in_b)
    if fused:
        h = _activation_fused(g, spec, h, bias, p)
    else:
        h = _activation_plain(g, spec, g.op("Add", [h, bias]), p)
    h = g.op("MatMul", [h, g.weight(f"{p}.ffn_out.weight", w.ffn_out_w)])
    out = {"outputs": [out_name]} if out_name is not None else {"name": f"{p}.ln2"}
    return _add_layer_norm(g, spec, h, g.weight(f"{p}.ffn_out.bias", w.ffn_out_b), x1,
                           g.weight(f"{p}.ln2.weight", w.ln2_g), g.weight(f"{p}.ln2.bias", w.ln2_b), **out)


def _pre_norm_layer(g: GraphBuilder, spec: EncoderSpec, w: LayerWeights, i: int, x: str,
                    masks: _Masks | _AttentionRows, rotary: _Rotary, fused: bool) -> str:
    """ModernBertEncoderLayer: ``x += attention(norm(x))`` (layer 0 has no norm there), then
    ``x += ffn(norm(x))``, on [B, S, H] or packed [T, H] tokens."""
    p = f"layer{i}"
    h = x if w.ln1_g is None else _layer_norm(g, spec, x, f"{p}.ln1", w.ln1_g, w.ln1_b,
                                              name=f"{p}.ln1")
    ctx = _rotary_attention(g, spec, w, i, h, masks, rotary, fused)
    x = g.op("Add", [x, _linear(g, ctx, f"{p}.attn_out", w.out_w, w.out_b)],
             name=f"{p}.attention_residual")
    h = _layer_norm(g, spec, x, f"{p}.ln2", w.ln2_g, w.ln2_b, name=f"{p}.ln2")
    h = _linear(g, h, f"{p}.ffn_in", w.ffn_in_w, w.ffn_in_b)
    if spec.arch.gated_ffn:
        inter = spec.arch.intermediate_size
        activated, gate = g.op("Split", [h, g.const([inter, inter])], axis=-1, n_out=2,
                               name=f"{p}.glu_split")
        h = g.op("Mul", [_activation_plain(g, spec, activated, p), gate], name=f"{p}.glu")
    else:
        h = _activation_plain(g, spec, h, p)
    h = _linear(g, h, f"{p}.ffn_out", w.ffn_out_w, w.ffn_out_b)
    return g.op("Add", [x, h], name=f"{p}.ffn_residual")


def _rotary_attention(g: GraphBuilder, spec: EncoderSpec, w: LayerWeights, i: int, x: str,
                      masks: _Masks | _AttentionRows, rotary: _Rotary, fused: bool) -> str:
    """ModernBertAttention: fused QKV projection, rotary angles on Q and K, attention within
    the layer's window (or global), context in ``x``'s layout ([B, S, H] or packed [T, H]).

    Fused: ONNX Runtime's contrib MultiHeadAttention with the mask as an additive bias.
    """
    p = f"layer{i}"
    H = spec.arch.hidden_size
    qkv = _linear(g, x, f"{p}.qkv", w.qkv_w, w.qkv_b)
    q, k, v = g.op("Split", [qkv, g.const([H, H, H])], axis=-1, n_out=3, name=f"{p}.qkv_split")
    theta = spec.arch.rotary_thetas[i]
    q, k = rotary.apply(q, theta, f"{p}.query"), rotary.apply(k, theta, f"{p}.key")
    bias = masks.window_bias(spec.arch.attention_window(i))
    if isinstance(masks, _AttentionRows):  # packed tokens -> rows of slots, and back
        q, k, v = (g.op("Gather", [t, masks.slot_token], name=f"{p}.{tag}_rows")
                   for t, tag in ((q, "query"), (k, "key"), (v, "value")))
    if fused:
        ctx = g.op("MultiHeadAttention", [q, k, v, "", "", bias], domain=MS_DOMAIN,
                   num_heads=spec.arch.num_heads, name=f"{p}.attention")
    else:
        ctx = _attend_heads(g, spec, p, q, k, v, [bias])
    if isinstance(masks, _AttentionRows):
        flat = g.op("Reshape", [ctx, g.const([-1, H])])
        ctx = g.op("Gather", [flat, masks.token_slot], name=f"{p}.context_tokens")
    return ctx


class _Rotary:
    """Rotary position embeddings (transformers' ModernBertRotaryEmbedding and
    ``apply_rotary_pos_emb``, NeoX rotate-half layout), cos/sin built once per theta from each
    token's position: ``positions`` int64 [T] (packed, within its sequence), or ``None`` for
    the padded graph's 0..S-1.

    The angles are computed as torch computes them, in float32: ``inv_freq = 1 / theta **
    (arange(0, dh, 2) / dh)``, ``angle = position * inv_freq``.
    """

    def __init__(self, g: GraphBuilder, spec: EncoderSpec, positions: str | None = None) -> None:
        self._g = g
        self._spec = spec
        self._positions = positions
        self._tables: dict[float, tuple[str, str]] = {}

    def _cos_sin(self, theta: float) -> tuple[str, str]:
        """cos and sin [S or T, 1, dh], broadcast over the heads."""
        if theta not in self._tables:
            g, dh = self._g, self._spec.arch.head_size
            exponent = np.arange(0, dh, 2, dtype=np.float32) / np.float32(dh)
            inv_freq = (np.float32(1.0) / np.power(np.float32(theta), exponent)).astype(np.float32)
            tag = f"rotary{len(self._tables)}"
            if self._positions is None:
                self._positions = g.op("Range", [g.const(0), _seq_len(g), g.const(1)],
                                       name="token_position")
            position = g.unsqueeze(g.op("Cast", [self._positions], to=FLOAT), [1])
            angle = g.op("Mul", [position, g.weight(f"{tag}.inv_freq", inv_freq)])  # [S, dh/2]
            angle = g.unsqueeze(g.op("Concat", [angle, angle], axis=-1), [1], name=f"{tag}.angle")
            self._tables[theta] = (g.op("Cos", [angle], name=f"{tag}.cos"),
                                   g.op("Sin", [angle], name=f"{tag}.sin"))
        return self._tables[theta]

    def apply(self, x: str, theta: float, prefix: str) -> str:
        """``x * cos + rotate_half(x) * sin`` per head; x [B, S, H] or [T, H], same out."""
        g = self._g
        nh, dh = self._spec.arch.num_heads, self._spec.arch.head_size
        cos, sin = self._cos_sin(theta)
        shape = g.op("Shape", [x])
        lead = g.op("Slice", [shape, g.const([0]), g.const([-1])])
        heads = g.op("Reshape", [x, g.op("Concat", [lead, g.const([nh, dh])], axis=0)])
        first, second = g.op("Split", [heads, g.const([dh // 2, dh // 2])], axis=-1, n_out=2)
        rotated = g.op("Concat", [g.op("Neg", [second]), first], axis=-1)
        out = g.op("Add", [g.op("Mul", [heads, cos]), g.op("Mul", [rotated, sin])])
        return g.op("Reshape", [out, shape], name=f"{prefix}_rotary")


def _linear(g: GraphBuilder, x: str, name: str, weight: np.ndarray, bias: np.ndarray | None) -> str:
    """``x @ weight (+ bias)``; weight [in, out]."""
    y = g.op("MatMul", [x, g.weight(f"{name}.weight", weight)])
    return y if bias is None else g.op("Add", [y, g.weight(f"{name}.bias", bias)])


def _layer_norm(g: GraphBuilder, spec: EncoderSpec, x: str, weights: str, gamma: np.ndarray,
                beta: np.ndarray | None, **out) -> str:
    """LayerNorm over the last axis (initializers ``{weights}.weight`` / ``.bias``); without a
    bias when the architecture has none."""
    inputs = [x, g.weight(f"{weights}.weight", gamma)]
    if beta is not None:
        inputs.append(g.weight(f"{weights}.bias", beta))
    return g.op("LayerNormalization", inputs, axis=-1, epsilon=spec.arch.layer_norm_eps, **out)


def _seq_len(g: GraphBuilder) -> str:
    """The padded sequence length, an int64 scalar."""
    return g.squeeze(g.op("Slice", [g.op("Shape", ["input_ids"]), g.const([1]), g.const([2])]),
                     [0])


def _band(g: GraphBuilder, width: str, window: int) -> str:
    """bool [S, S] for slots 0..S-1 (``width`` an int64 scalar): ``|i - j| <= window``."""
    slot = g.op("Range", [g.const(0), width, g.const(1)])
    distance = g.op("Abs", [g.op("Sub", [g.unsqueeze(slot, [1]), g.unsqueeze(slot, [0])])])
    return g.op("LessOrEqual", [distance, g.const(window)], name=f"band{window}")


def _visible_bias(g: GraphBuilder, visible: str, name: str) -> str:
    """0 where ``visible``, float32 min elsewhere: finite, so a query that sees no key (a padded
    slot far from every token) averages garbage instead of making NaNs that pooling would carry
    into the real rows (0 * NaN)."""
    return g.op("Where", [visible, g.const(0.0, np.float32),
                          g.const(np.finfo(np.float32).min, np.float32)], name=name)


class _Masks:
    """The attention mask in the forms the attention variants take, built once on first use."""

    def __init__(self, g: GraphBuilder) -> None:
        self._g = g
        self._int32: str | None = None
        self._additive: str | None = None
        self._windowed: dict[int | None, str] = {}

    def int32(self) -> str:
        """Raw 0/1 mask [B, S] as int32 (the contrib Attention's 2-D mask_index form)."""
        if self._int32 is None:
            self._int32 = self._g.op("Cast", ["attention_mask"], to=INT32, name="mask_int32")
        return self._int32

    def additive(self) -> str:
        """Key mask [B, 1, 1, S]: 0 for tokens, float32 min for padding (as HF builds it)."""
        if self._additive is None:
            g = self._g
            mask_f = g.op("Cast", ["attention_mask"], to=FLOAT, name="mask_float_attn")
            inverted = g.op("Sub", [g.const(1.0, np.float32), mask_f])
            bias = g.op("Mul", [inverted, g.const(np.finfo(np.float32).min, np.float32)])
            self._additive = g.unsqueeze(bias, [1, 2], name="mask_bias")
        return self._additive

    def window_bias(self, window: int | None) -> str:
        """[B, 1, S, S] additive: key visible (not padding and, with a window, ``|i - j| <=
        window``). MultiHeadAttention takes a full [.., S, S] bias, so a global layer's is the
        key mask expanded to that shape."""
        if window not in self._windowed:
            g = self._g
            keys = g.unsqueeze(g.op("Cast", ["attention_mask"], to=BOOL), [1, 2])  # [B, 1, 1, S]
            if window is None:
                batch_seq = g.op("Shape", ["attention_mask"])
                seq = g.op("Slice", [batch_seq, g.const([1]), g.const([2])])
                full = g.op("Concat", [g.op("Slice", [batch_seq, g.const([0]), g.const([1])]),
                                       g.const([1]), seq, seq], axis=0)
                visible = g.op("Expand", [keys, full])
            else:
                visible = g.op("And", [keys, _band(g, _seq_len(g), window)])
            self._windowed[window] = _visible_bias(g, visible, f"mask_bias_window{window}")
        return self._windowed[window]


def _pooling(g: GraphBuilder, tokens: str, mask: str, pooling: PoolingSpec, hidden: int) -> str:
    """sentence-transformers Pooling over tokens [B, S, H] with mask [B, S] (right-padded): the
    pooled [B, H] value."""
    mask_f = g.op("Cast", [mask], to=FLOAT, name="mask_float_pool")
    pooled = "pooled"

    if pooling.mode in ("mean", "mean_sqrt_len", "weightedmean"):
        if pooling.mode == "weightedmean":
            # Weight of a token: its 1-based position (positions count from the left edge, which
            # with right padding is the sequence start).
            seq = g.op("Shape", [mask], name="pool_shape")
            width = g.op("Gather", [seq, g.const(1)], axis=0)
            positions = g.op("Range", [g.const(1), g.op("Add", [width, g.const(1)]), g.const(1)])
            weights = g.op("Cast", [positions], to=FLOAT, name="position_weight")
            mask_f = g.op("Mul", [mask_f, g.unsqueeze(weights, [0])], name="weighted_mask")
        # Masked sum as a batched [1, S] x [S, H] product.
        summed = g.op("MatMul", [g.unsqueeze(mask_f, [1]), tokens])
        summed = g.squeeze(summed, [1], name="masked_sum")
        count = g.reduce("ReduceSum", mask_f, [1], 1, name="token_count")
        count = g.op("Max", [count, g.const(_MEAN_CLAMP, np.float32)])
        if pooling.mode == "mean_sqrt_len":
            count = g.op("Sqrt", [count])
        g.op("Div", [summed, count], outputs=[pooled])
    elif pooling.mode in ("cls", "lasttoken"):
        if pooling.mode == "cls":
            # First unmasked token (argmax returns the first maximum), which handles left padding.
            index = g.op("ArgMax", [mask_f], axis=1, keepdims=1, name="first_token")  # [B, 1]
        else:
            # Last unmasked token of a right-padded row: its token count - 1.
            count = g.reduce("ReduceSum", mask, [1], 1, name="row_tokens")
            index = g.op("Max", [g.op("Sub", [count, g.const(1)]), g.const(0)], name="last_token")
        index = g.op("Expand", [g.unsqueeze(index, [2]), g.const([1, 1, hidden])])  # [B, 1, H]
        picked = g.op("GatherElements", [tokens, index], axis=1)
        g.squeeze(picked, [1], outputs=[pooled])
    else:  # max
        is_pad = g.unsqueeze(g.op("Equal", [mask, g.const(0)]), [2])
        filled = g.op("Where", [is_pad, g.const(-np.inf, np.float32), tokens])
        g.reduce("ReduceMax", filled, [1], 0, outputs=[pooled])
    return pooled
