"""EmbedderConfig: what an Embedder loads and how it runs."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

from .models.registry import DEFAULT_MODEL, find_spec, registered_names

BACKENDS = ("auto", "cpu", "cuda")
LONG_TEXT_MODES = ("truncate", "window")
ONNX_SOURCES = ("build", "model")
DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class EmbedderConfig:
    """Configuration of an :class:`~sutra.Embedder`.

    Attributes:
        model: registry name (``"efficient"``, ``"high-quality"``, ...), a model folder, or a
            Hugging Face id present in the local Hugging Face cache.
        dimensions: output width. ``None`` keeps the model's width; a smaller value truncates
            (Matryoshka) and re-normalizes.
        max_sequence_length: tokens per text (special tokens included); ``None`` uses the model's.
        batch_size: texts per forward pass (an upper bound; see ``max_batch_tokens``). ``None``:
            the backend's default (32 on the cpu backend; on the cuda backend as many as the
            token budget holds).
        max_batch_tokens: upper bound on tokens per forward pass (padded: batch rows x longest
            row), so batches of long texts shrink instead of growing memory. ``"auto"``: 16384
            on the cpu backend; on the cuda backend sized from the GPU's free memory when the
            model is loaded (the engine's workspace holds that many tokens).
        use_fp16: half-precision compute, the same as ``dtype="float16"``. Only the cuda backend
            computes in fp16; asking for it on the cpu backend raises.
        dtype: the compute type: ``None`` for the backend's own (float32 on the cpu backend,
            float16 on the cuda backend), ``"float32"`` (cpu only), ``"float16"`` or
            ``"bfloat16"`` (cuda only). A dtype the backend cannot compute in raises.
        use_flash_attention: ask for sutra's flash-attention kernels. The cuda backend always
            runs them; asking for them on the cpu backend raises.
        backend: ``"auto"`` (cuda when this build has CUDA and a GPU is visible, cpu otherwise),
            ``"cpu"`` (ONNX Runtime) or ``"cuda"`` (sutra's GPU engine).
        device: the CUDA device index the cuda backend runs on.
        devices: run on several devices through sutra's scheduler (:mod:`sutra.multigpu`):
            ``"all"`` (every visible GPU; on the cpu backend, one worker) or a list of device
            indices (on the cpu backend, worker ids: that many ONNX Runtime sessions sharing
            the cores). ``None``: one device (``device``).
        onnx_source: ``"build"`` builds the ONNX graph from the safetensors weights (pooling and
            normalization inside the graph); ``"model"`` runs the folder's own ``onnx/model.onnx``.
        num_threads: ONNX Runtime intra-op threads; ``None`` uses every core.
        long_text: ``"truncate"`` cuts texts at ``max_sequence_length`` (warning once);
            ``"window"`` embeds overlapping windows and aggregates them.
        window_overlap: tokens shared by consecutive windows when ``long_text="window"``.
        window_aggregation: ``"mean"``, ``"max"`` or ``"weighted"`` (center-weighted mean).
        download: fetch a registered model that is not in the cache yet (with a progress bar).
    """

    model: str = DEFAULT_MODEL
    dimensions: int | None = None
    max_sequence_length: int | None = None
    batch_size: int | None = None
    max_batch_tokens: int | str = "auto"
    use_fp16: bool = False
    dtype: str | None = None
    use_flash_attention: bool = False
    backend: str = "auto"
    device: int = 0
    devices: str | list[int] | None = None
    onnx_source: str = "build"
    num_threads: int | None = None
    long_text: str = "truncate"
    window_overlap: int = 32
    window_aggregation: str = "mean"
    download: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.model, os.PathLike):
            self.model = os.fspath(self.model)
        self.validate()

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> EmbedderConfig:
        """The configuration of a registered preset, e.g. ``EmbedderConfig.from_name("efficient")``.

        Raises:
            ValueError: ``name`` is not registered; the message lists the registered names.
        """
        spec = find_spec(name)
        if spec is None:
            raise ValueError(
                f"unknown preset {name!r}; registered names are: {', '.join(registered_names())}"
            )
        config = cls(model=name, **overrides)
        if config.dimensions is None:
            config.dimensions = spec.dimensions
        if config.max_sequence_length is None:
            config.max_sequence_length = spec.max_seq_length
        config.validate()
        return config

    def with_overrides(self, **overrides: Any) -> EmbedderConfig:
        """A copy with some fields replaced (validated)."""
        return replace(self, **overrides)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field whose value is not allowed."""
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size)
        if self.max_batch_tokens != "auto":
            _positive_int("max_batch_tokens", self.max_batch_tokens, "or 'auto'")
        if self.dtype is not None:
            _choice("dtype", self.dtype, DTYPES)
        if self.use_fp16 is True and self.dtype not in (None, "float16"):
            raise ValueError(f"use_fp16=True asks for float16 but dtype={self.dtype!r}; "
                             "set one of them")
        if isinstance(self.device, bool) or not isinstance(self.device, int) or self.device < 0:
            raise ValueError(f"device must be a CUDA device index (an int >= 0), "
                             f"got {self.device!r}")
        if self.devices is not None:
            _check_devices(self.devices)
            if self.device != 0:
                raise ValueError(f"give device ({self.device}) or devices ({self.devices!r}), "
                                 "not both")
        if self.dimensions is not None:
            _positive_int("dimensions", self.dimensions)
        if self.max_sequence_length is not None:
            _positive_int("max_sequence_length", self.max_sequence_length)
            if self.max_sequence_length < 3:
                raise ValueError(
                    f"max_sequence_length must be at least 3 (special tokens plus one token), "
                    f"got {self.max_sequence_length}"
                )
        if self.num_threads is not None:
            _positive_int("num_threads", self.num_threads)
        _choice("backend", self.backend, BACKENDS)
        _choice("long_text", self.long_text, LONG_TEXT_MODES)
        _choice("onnx_source", self.onnx_source, ONNX_SOURCES)
        _choice("window_aggregation", self.window_aggregation, ("mean", "max", "weighted"))
        if not isinstance(self.window_overlap, int) or self.window_overlap < 0:
            raise ValueError(f"window_overlap must be an int >= 0, got {self.window_overlap!r}")
        for flag in ("use_fp16", "use_flash_attention", "download"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be True or False, got {getattr(self, flag)!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a non-empty name or path, got {self.model!r}")


def _check_devices(devices: Any) -> None:
    if devices == "all":
        return
    if isinstance(devices, (str, bytes)) or not hasattr(devices, "__iter__"):
        raise ValueError(f"devices must be 'all' or a list of device indices, got {devices!r}")
    items = list(devices)
    if not items or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in items):
        raise ValueError(f"devices must be 'all' or a non-empty list of device indices (ints >= "
                         f"0), got {devices!r}")
    if len(set(items)) != len(items):
        raise ValueError(f"devices lists a device twice: {devices!r}")


def _positive_int(name: str, value: Any, alternative: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        extra = f" {alternative}" if alternative else ""
        raise ValueError(f"{name} must be a positive int{extra}, got {value!r}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
