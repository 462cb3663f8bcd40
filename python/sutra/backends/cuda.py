"""The GPU backend: a thin wrapper of the native engine (:class:`sutra._core.GpuEncoder`).

The model folder's encoder (:class:`~sutra.models.architecture.EncoderArchitecture`) and head
(:class:`~sutra.models.spec.Pipeline`: pooling, Dense, Normalize) are handed to the engine once;
the checkpoint's tensors are read straight from ``model.safetensors`` (fp32, fp16 or bf16),
converted to the engine's dtype and packed into its one weight arena, which is uploaded once.
:meth:`CudaBackend.encode_rows` is one native call per request with the GIL released: the engine
plans the packed passes itself, within the caller's limits and its own token budget.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import _core
from .._errors import BackendUnavailableError
from ..models.architecture import EncoderArchitecture
from ..models.spec import ModelFolder
from .base import Backend, EncodedRows, PassCallback, PassLimits, TokenBatch

DTYPES = ("float16", "bfloat16")
ENGINE_HEAD_SIZES = (32, 64, 128)  # the attention kernels' head dims


def engine_lacks(arch: EncoderArchitecture) -> str | None:
    """What of ``arch`` the engine does not implement (one sentence), or ``None``. The engine
    runs the BERT family, MPNet and ModernBERT; its attention kernels take head sizes of 32, 64
    and 128."""
    if arch.head_size not in ENGINE_HEAD_SIZES:
        return (f"{arch.model_type} has a head size of {arch.head_size}; the GPU engine's "
                f"attention kernels take {', '.join(map(str, ENGINE_HEAD_SIZES))} (the cpu "
                "backend runs any)")
    return None


def encoder_spec(arch: EncoderArchitecture) -> _core.EncoderSpec:
    """The engine's sizes of an encoder, and the parts its checkpoint has (a bias is there when
    the architecture names it: ModernBERT's config can turn each kind off)."""
    token_types = arch.shapes.get("embeddings.token_type", (0,))[0]
    names = arch.weight_names
    return _core.EncoderSpec(
        vocab=arch.vocab_size, max_positions=arch.max_positions, token_types=token_types,
        hidden=arch.hidden_size, heads=arch.num_heads, layers=arch.num_layers,
        intermediate=arch.intermediate_size,
        relative_buckets=arch.relative_attention_num_buckets,
        position_table=arch.position_kind != "rotary", pre_norm=arch.norm_position == "pre",
        gated_ffn=arch.gated_ffn, attention_bias="layers.0.attention.o.bias" in names,
        ffn_bias="layers.0.ffn.in.bias" in names, norm_bias="embeddings.norm.bias" in names)


def read_tensors(path: Path, names: list[str]) -> dict[str, tuple[np.ndarray, bool]]:
    """The named tensors of a safetensors file as numpy views of a memory map, each with whether
    it is bfloat16: float32, float16, or uint16 holding bfloat16 bits (``safetensors.numpy``
    cannot represent BF16)."""
    types = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
    with open(path, "rb") as f:
        header_size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(header_size))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_size)
    out = {}
    for name in names:
        entry = header[name]
        if entry["dtype"] not in types:
            raise BackendUnavailableError(
                f"{path}: tensor {name!r} is {entry['dtype']}; the GPU engine reads F32, F16 "
                "and BF16 checkpoints")
        start, end = entry["data_offsets"]
        array = data[start:end].view(types[entry["dtype"]]).reshape(entry["shape"])
        out[name] = (array, entry["dtype"] == "BF16")
    return out


def convert(array: np.ndarray, source_bf16: bool, dtype: str) -> np.ndarray:
    """``array`` in the engine's element type: float16, or bfloat16 bits as uint16 (rounded to
    nearest even, as torch rounds)."""
    if source_bf16:
        if dtype == "bfloat16":
            return np.ascontiguousarray(array)
        array = to_float32(array, source_bf16=True)
    if dtype == "float16":
        return np.ascontiguousarray(array, dtype=np.float16)
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    nan = np.isnan(array)
    out = (rounded >> 16).astype(np.uint16)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def to_float32(array: np.ndarray, source_bf16: bool) -> np.ndarray:
    if source_bf16:
        return (array.astype(np.uint32) << 16).view(np.float32)
    return np.ascontiguousarray(array, dtype=np.float32)


class CudaBackend(Backend):
    """Runs a model's pipeline on one NVIDIA GPU with sutra's engine.

    Args:
        model: the model folder (an encoder sutra's engine supports: BERT family, MPNet,
            ModernBERT; see :func:`engine_lacks`).
        dtype: ``"float16"`` or ``"bfloat16"`` (weights and activations; fp32 accumulation,
            statistics and pooling).
        device: the CUDA device index.
        max_tokens: tokens per pass the engine's workspace holds; ``None`` sizes it from the
            device's free memory after the weights are uploaded.
        profile: time the device stages with CUDA events (:meth:`stage_seconds`).
        graph_max_tokens: passes of at most this many tokens replay a CUDA graph of their shape
            (captured the first time it is seen); ``0`` never; ``None``: the engine's default.
        gemm_tune_min_rows: passes of at least this many tokens time cuBLASLt's first
            heuristic candidates for each GEMM the first time their size (per power of two) is
            seen and keep the fastest; ``0`` never (the heuristic's first choice); ``None``: the
            engine's default.

    Raises:
        BackendUnavailableError: no CUDA in this build, no GPU, no cuBLASLt, or a model the
            engine cannot run (the message says which).
    """

    name = "cuda"

    def __init__(self, model: ModelFolder, dtype: str = "float16", device: int = 0,
                 max_tokens: int | None = None, profile: bool = False,
                 graph_max_tokens: int | None = None,
                 gemm_tune_min_rows: int | None = None) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(map(repr, DTYPES))} on the cuda "
                             f"backend, got {dtype!r}")
        arch = model.pipeline.transformer.architecture
        if arch is None or model.student is not None:
            raise BackendUnavailableError(
                f"{model.path}: the GPU engine runs safetensors encoders; this model is "
                "an ONNX graph only (a distilled student or a folder without model.safetensors)")
        lacking = engine_lacks(arch)
        if lacking is not None:
            raise BackendUnavailableError(f"backend='cuda' cannot run {model.name or model.path}:"
                                          f" {lacking}")
        self.model = model
        self.dtype = dtype
        pipeline = model.pipeline
        dense = [(*module.load(), module.activation) for module in pipeline.dense]
        spec = encoder_spec(arch)
        layout = _core.plan_weight_layout(spec)
        arena = layout.pack(self._engine_tensors(model, arch, dtype))
        try:
            self.engine = _core.GpuEncoder(
                spec, arena, activation=arch.activation, positions=arch.position_kind,
                padding_idx=arch.padding_idx, layer_norm_eps=arch.layer_norm_eps,
                pooling=pipeline.pooling.mode, dense=dense, normalize=pipeline.normalize,
                rotary_thetas=list(arch.rotary_thetas),
                attention_windows=[-1 if w is None else w for w in arch.attention_windows],
                device=device, dtype=dtype, max_tokens=max_tokens or 0, profile=profile,
                **({} if graph_max_tokens is None else {"graph_max_tokens": graph_max_tokens}),
                **({} if gemm_tune_min_rows is None
                   else {"gemm_tune_min_rows": gemm_tune_min_rows}))
        except (_core.SutraError, ValueError) as exc:
            raise BackendUnavailableError(f"backend='cuda' cannot run {model.name or model.path}:"
                                          f" {exc}") from exc
        self._include_prompt = pipeline.pooling.include_prompt

    @staticmethod
    def _engine_tensors(model: ModelFolder, arch: EncoderArchitecture,
                        dtype: str) -> dict[str, np.ndarray]:
        raw = read_tensors(model.weights_path, list(arch.weight_names.values()))
        tensors = {}
        for canonical, name in arch.weight_names.items():
            array, bf16 = raw[name]
            if canonical == "relative_attention_bias":  # read by the kernel as float32
                tensors[canonical] = to_float32(array, bf16)
            elif canonical.endswith(("attention.qkv.weight", "attention.qkv.bias")):
                # A fused checkpoint tensor (ModernBERT's Wqkv, rows q | k | v): the arena's
                # QKV slot is made of the three parts.
                prefix, part = canonical.rsplit(".qkv.", 1)
                for piece, rows in zip("qkv", np.split(array, 3, axis=0), strict=True):
                    tensors[f"{prefix}.{piece}.{part}"] = convert(rows, bf16, dtype)
            else:
                tensors[canonical] = convert(array, bf16, dtype)
        return tensors

    # -- the backend contract ------------------------------------------------------------------

    @property
    def parallel_passes(self) -> int:
        """One: the engine serializes its passes on one stream (a second caller waits)."""
        return 1

    @property
    def packs_mixed_lengths(self) -> bool:
        return True

    @property
    def pipelines_tokenization(self) -> bool:
        return True

    @property
    def max_tokens(self) -> int:
        """Tokens one pass holds (the token budget the workspace was sized for)."""
        return self.engine.max_tokens

    def pass_limits(self, batch_size: int | None, max_batch_tokens: int | str) -> PassLimits:
        """Without a ``batch_size``, passes hold as many sequences as the token budget allows;
        ``max_batch_tokens`` was the budget the engine was built with."""
        return PassLimits(batch_size or 0, self.engine.max_tokens)

    def encode_rows(self, batch: TokenBatch, limits: PassLimits, *, want_tokens: bool = False,
                    prompt_lengths: np.ndarray | None = None,
                    on_pass: PassCallback | None = None) -> EncodedRows:
        """See :meth:`sutra.backends.base.Backend.encode_rows`. Passes are packed (no padding)
        and hold up to ``limits.max_sequences`` sequences within the engine's token budget
        (``limits.max_tokens`` caps it further only when smaller)."""
        if not self._include_prompt and prompt_lengths is not None:
            prompts = np.ascontiguousarray(prompt_lengths, dtype=np.int32)
        else:
            prompts = None
        embeddings, tokens = self.engine.encode(
            np.ascontiguousarray(batch.ids, dtype=np.int32),
            np.ascontiguousarray(batch.cu_seqlens, dtype=np.int32),
            prompt_lengths=prompts, max_sequences=limits.max_sequences,
            want_tokens=want_tokens, on_pass=on_pass)
        return EncodedRows(embeddings, tokens)

    def segment_means(self, batch: TokenBatch, segments: np.ndarray,
                      limits: PassLimits) -> np.ndarray:
        """See :meth:`sutra.backends.base.Backend.segment_means`: pooled on the device, so
        only the means come back (not every token's state)."""
        return self.engine.segment_means(
            np.ascontiguousarray(batch.ids, dtype=np.int32),
            np.ascontiguousarray(batch.cu_seqlens, dtype=np.int32),
            np.ascontiguousarray(np.asarray(segments).reshape(-1, 3), dtype=np.int32),
            max_sequences=limits.max_sequences)

    def stage_seconds(self) -> dict[str, float]:
        """Time per stage since the last reset (device stages need ``profile=True``)."""
        return self.engine.stage_seconds()

    def reset_stage_seconds(self) -> None:
        self.engine.reset_stage_seconds()

    def describe(self) -> dict[str, object]:
        """What the engine uses: device, dtype, memory, token budget."""
        return {"device": self.engine.device, "dtype": self.engine.dtype,
                "weight_bytes": self.engine.weight_bytes,
                "workspace_bytes": self.engine.workspace_bytes,
                "max_tokens": self.engine.max_tokens,
                "cublaslt": _core.build_info().get("cublaslt")}
