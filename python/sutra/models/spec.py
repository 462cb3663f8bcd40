"""The one parse of a model folder: the sentence-transformers pipeline and its encoder.

A sentence-transformers folder lists its modules in ``modules.json``; sutra runs

    Transformer -> Pooling -> Dense (zero or more) -> Normalize (optional)

and refuses, when the folder is read, any other module or order (``LayerNorm``, ``WordEmbeddings``,
``CNN``, ``LSTM``, custom code, a Normalize before a Dense...), naming the module and its path: a
module that is skipped would give a wrong vector without an error. Both formats of the Pooling
config are read: the single ``pooling_mode`` key that sentence-transformers 6 writes and the older
``pooling_mode_*_tokens`` flags. The encoder's architecture is described from ``config.json`` and
the names and shapes in the ``model.safetensors`` header (no tensor data is read), so the ONNX
graph builder and the engine take the same description and nothing parses the folder again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import ModelNotFoundError, UnsupportedModelError
from .architecture import EncoderArchitecture, describe_encoder
from .registry import ModelSpec

STUDENT_FILE = "sutra_student.json"  # written by sutra.distill beside a student's model.onnx

# The pooling modes, by the names sentence-transformers 6 writes in "pooling_mode" (sutra's name
# for mean_sqrt_len_tokens is "mean_sqrt_len").
POOLING_MODES = {
    "cls": "cls",
    "mean": "mean",
    "max": "max",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
    "weightedmean": "weightedmean",
    "lasttoken": "lasttoken",
}
# The flags older sentence-transformers versions write, one per mode.
_LEGACY_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# Dense's activation_function as sentence-transformers writes it (the torch class's full name).
DENSE_ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.GELU": "gelu",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
}
_DEFAULT_DENSE_ACTIVATION = "tanh"  # sentence-transformers' Dense default
_SUPPORTED_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")


@dataclass(frozen=True)
class TransformerModule:
    """The encoder: a Hugging Face checkpoint.

    Attributes:
        path: the folder holding its ``config.json``, weights and tokenizer.
        config: the parsed ``config.json``.
        architecture: the encoder's description with its canonical weight names; ``None`` for a
            distilled student, whose weights are its ONNX graph.
        max_seq_length: tokens kept per text (``sentence_bert_config.json``, else the position
            table's size).
        do_lower_case: sentence-transformers lower-cases the text before tokenizing.
    """

    path: Path
    config: dict[str, Any]
    architecture: EncoderArchitecture | None
    max_seq_length: int
    do_lower_case: bool

    @property
    def weights_path(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.json"


@dataclass(frozen=True)
class PoolingModule:
    """sentence-transformers ``Pooling``.

    Attributes:
        mode: ``"cls"``, ``"mean"``, ``"max"``, ``"mean_sqrt_len"``, ``"weightedmean"`` or
            ``"lasttoken"`` (semantics: :func:`sutra._core.pool_tokens`).
        include_prompt: ``False``: the tokens of a prompt (and the leading special token) take no
            part in pooling.
        path: the module's folder (``None`` for the default of a bare Hugging Face folder).
    """

    mode: str
    include_prompt: bool = True
    path: Path | None = None


@dataclass(frozen=True)
class DenseModule:
    """sentence-transformers ``Dense``: ``activation(x @ weight.T + bias)``.

    Attributes:
        path: the module's folder (``config.json`` and ``model.safetensors``).
        in_features, out_features: the widths.
        bias: whether it adds a bias.
        activation: ``"tanh"``, ``"identity"``, ``"relu"``, ``"gelu"`` (erf) or ``"sigmoid"``.
    """

    path: Path
    in_features: int
    out_features: int
    bias: bool
    activation: str

    def load(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(weight float32 [out, in], bias float32 [out] or None)`` from the module's
        ``model.safetensors``."""
        from safetensors.numpy import load_file

        tensors = load_file(str(self.path / "model.safetensors"))
        weight = np.asarray(tensors["linear.weight"], dtype=np.float32)
        bias = np.asarray(tensors["linear.bias"], dtype=np.float32) if self.bias else None
        return weight, bias


@dataclass(frozen=True)
class Pipeline:
    """What a model folder computes, module by module.

    Attributes:
        transformer: the encoder.
        pooling: how token states become one vector.
        dense: Dense modules after pooling, in order.
        normalize: the pipeline ends in Normalize (unit-length embeddings).
        output_dim: width of the embeddings it returns.
    """

    transformer: TransformerModule
    pooling: PoolingModule
    dense: tuple[DenseModule, ...] = ()
    normalize: bool = False
    output_dim: int = 0

    def describe(self) -> str:
        """One line, e.g. ``Transformer(bert) -> Pooling(mean) -> Dense(384->128, tanh) ->
        Normalize``."""
        arch = self.transformer.architecture
        parts = [f"Transformer({arch.model_type if arch else 'onnx'})",
                 f"Pooling({self.pooling.mode}"
                 + ("" if self.pooling.include_prompt else ", include_prompt=False") + ")"]
        parts += [f"Dense({d.in_features}->{d.out_features}, {d.activation})" for d in self.dense]
        if self.normalize:
            parts.append("Normalize")
        return " -> ".join(parts)


@dataclass(frozen=True)
class ModelFolder:
    """What sutra needs to know about a model folder (made by :meth:`load`, the one parse).

    Attributes:
        path: the folder.
        pipeline: its modules (see :class:`Pipeline`).
        prompts: named prompts from ``config_sentence_transformers.json``.
        default_prompt_name: the prompt used when the caller names none.
        name: the registry name or the folder's name.
        spec: the registry entry when the folder is a registered model.
        student: for a model distilled by ``sutra.distill``, its ``sutra_student.json`` (kind,
            width, teacher); such a folder holds ``model.onnx`` instead of safetensors weights
            and its graph ends in the student's unit-length embedding.
    """

    path: Path
    pipeline: Pipeline
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    name: str = ""
    spec: ModelSpec | None = None
    student: dict[str, Any] | None = None

    # -- shortcuts into the pipeline --------------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """The encoder's ``config.json``."""
        return self.pipeline.transformer.config

    @property
    def architecture(self) -> EncoderArchitecture | None:
        return self.pipeline.transformer.architecture

    @property
    def pooling(self) -> str:
        return self.pipeline.pooling.mode

    @property
    def normalize(self) -> bool:
        return self.pipeline.normalize

    @property
    def max_seq_length(self) -> int:
        return self.pipeline.transformer.max_seq_length

    @property
    def do_lower_case(self) -> bool:
        return self.pipeline.transformer.do_lower_case

    @property
    def hidden_size(self) -> int:
        return int(self.config.get("hidden_size") or self.config.get("dim"))

    @property
    def embedding_dim(self) -> int:
        """Width of the embeddings the pipeline returns (the last Dense module's, a student's,
        or the encoder's hidden size)."""
        return self.pipeline.output_dim

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))

    @property
    def weights_path(self) -> Path:
        return self.pipeline.transformer.weights_path

    @property
    def tokenizer_path(self) -> Path:
        return self.pipeline.transformer.tokenizer_path

    @property
    def onnx_path(self) -> Path | None:
        for candidate in (self.path / "onnx" / "model.onnx", self.path / "model.onnx"):
            if candidate.is_file():
                return candidate
        return None

    @property
    def max_position_embeddings(self) -> int:
        """Longest input the encoder's position table allows."""
        arch = self.architecture
        if arch is not None:
            return arch.max_sequence_length
        limit = int(self.config.get("max_position_embeddings", 512))
        if self.model_type in ("roberta", "xlm-roberta", "mpnet", "camembert"):
            limit -= int(self.config.get("pad_token_id", 1)) + 1
        return limit

    @classmethod
    def load(cls, path: str | os.PathLike[str], name: str = "", spec: ModelSpec | None = None,
             *, tokenizer_required: bool = True) -> ModelFolder:
        """Read a model folder (``tokenizer_required=False``: a folder to build a graph from,
        which needs no tokenizer).

        Raises:
            ModelNotFoundError: a required file is missing (named).
            UnsupportedModelError: the folder describes something sutra cannot run: a module
                other than Transformer, Pooling, Dense and Normalize (named with its path), a
                Dense saved only as ``pytorch_model.bin``, several pooling modes, an unsupported
                architecture or a checkpoint that does not match its config.
        """
        path = Path(path)
        student = _read_json(path / STUDENT_FILE, default={}) or None
        modules = _read_json(path / "modules.json", default=[])
        pipeline = _read_pipeline(path, modules, student, tokenizer_required)
        st_meta = _read_json(path / "config_sentence_transformers.json", default={})
        return cls(
            path=path,
            pipeline=pipeline,
            prompts=dict(st_meta.get("prompts") or {}),
            default_prompt_name=st_meta.get("default_prompt_name") or None,
            name=name or path.name,
            spec=spec,
            student=student,
        )


def _read_pipeline(path: Path, modules: list[dict[str, Any]], student: dict[str, Any] | None,
                   tokenizer_required: bool) -> Pipeline:
    if not isinstance(modules, list):
        raise UnsupportedModelError(f"{path / 'modules.json'} must hold a list of modules")
    kinds = [_module_kind(path, m) for m in modules]
    if not modules:
        # A bare Hugging Face folder: sentence-transformers adds mean pooling; a Pooling config
        # at the usual place is honoured.
        modules, kinds = [{"path": ""}], ["Transformer"]
        if (path / "1_Pooling" / "config.json").is_file():
            modules.append({"path": "1_Pooling"})
            kinds.append("Pooling")
    _check_order(path, kinds)
    transformer = _read_transformer(path, path / (modules[0].get("path") or ""), student,
                                    tokenizer_required)
    width = int(transformer.config.get("hidden_size") or transformer.config.get("dim") or 0)
    pooling = PoolingModule("mean")
    dense: list[DenseModule] = []
    for module, kind in zip(modules[1:], kinds[1:]):
        folder = path / (module.get("path") or "")
        if kind == "Pooling":
            pooling = _read_pooling(folder)
        elif kind == "Dense":
            dense.append(_read_dense(folder, width))
            width = dense[-1].out_features
        elif kind == "Normalize":
            _check_default_io(folder, "Normalize")
    normalize = kinds[-1] == "Normalize"
    if student is not None:
        # A student's graph is the whole pipeline and ends in L2 normalization.
        if not isinstance(student.get("student_dim"), int):
            raise ModelNotFoundError(f"{path / STUDENT_FILE} has no integer 'student_dim'")
        return Pipeline(transformer, pooling, (), True, int(student["student_dim"]))
    return Pipeline(transformer, pooling, tuple(dense), normalize, width)


def _check_order(path: Path, kinds: list[str]) -> None:
    """Transformer, then at most one Pooling, Dense modules, at most one Normalize last."""
    rank = {kind: index for index, kind in enumerate(_SUPPORTED_MODULES)}
    ranks = [rank[kind] for kind in kinds]
    ok = (kinds[0] == "Transformer" and ranks == sorted(ranks)
          and all(kinds.count(k) <= 1 for k in ("Transformer", "Pooling", "Normalize"))
          and ("Pooling" in kinds or len(kinds) == 1))
    if not ok:
        raise UnsupportedModelError(
            f"{path / 'modules.json'}: sutra runs Transformer, Pooling, Dense (any number), "
            f"Normalize, in this order; this model has {', '.join(kinds)}")


def _module_kind(path: Path, module: Any) -> str:
    """The module's class name when it is one sutra runs; UnsupportedModelError otherwise."""
    if not isinstance(module, dict) or not isinstance(module.get("type"), str):
        raise UnsupportedModelError(
            f"{path / 'modules.json'}: a module entry has no 'type': {module!r}")
    type_name = module["type"]
    kind = type_name.rsplit(".", 1)[-1]
    # sentence-transformers 6 names modules by new import paths
    # (sentence_transformers.sentence_transformer.modules.Pooling, ...); older versions wrote
    # sentence_transformers.models.Pooling. Anything outside the package is custom code.
    if not type_name.startswith("sentence_transformers.") or kind not in _SUPPORTED_MODULES:
        where = module.get("path") or "(the folder itself)"
        raise UnsupportedModelError(
            f"{path}: module {type_name!r} at {where!r} cannot run in sutra, which runs "
            f"sentence-transformers' {', '.join(_SUPPORTED_MODULES)} modules only")
    return kind


def _read_transformer(root: Path, folder: Path, student: dict[str, Any] | None,
                      tokenizer_required: bool) -> TransformerModule:
    weights = "model.onnx" if student else "model.safetensors"
    required_files = [("config.json", folder), (weights, root if student else folder)]
    if tokenizer_required:
        required_files.append(("tokenizer.json", folder))
    for required, where in required_files:
        if not (where / required).is_file():
            raise ModelNotFoundError(
                f"{root} is not a usable model folder: {required} is missing "
                f"(sutra needs config.json, {weights} and tokenizer.json)"
            )
    config = _read_json(folder / "config.json")
    architecture = None
    if student is None:
        try:
            architecture = describe_encoder(config, _tensor_shapes(folder / "model.safetensors"))
        except ValueError as exc:
            raise UnsupportedModelError(f"{folder}: {exc}") from None
    st_config = _read_json(folder / "sentence_bert_config.json", default={})
    positions = (architecture.max_sequence_length if architecture is not None
                 else int(config.get("max_position_embeddings", 512)))
    max_len = int(st_config.get("max_seq_length") or 0)
    if max_len <= 0:
        # sentence-transformers 6 saves no max_seq_length: it takes the tokenizer's
        # model_max_length (capped at the position table); transformers writes a huge sentinel
        # there when the tokenizer has no limit.
        tokenizer_config = _read_json(folder / "tokenizer_config.json", default={})
        limit = tokenizer_config.get("model_max_length")
        max_len = int(limit) if isinstance(limit, (int, float)) and 0 < limit < 1e9 else positions
        max_len = min(max_len, positions)
    return TransformerModule(folder, config, architecture, max_len,
                             bool(st_config.get("do_lower_case", False)))


def _read_pooling(folder: Path) -> PoolingModule:
    config_file = folder / "config.json"
    config = _read_json(config_file, default={})
    if "pooling_mode" in config:
        modes = config["pooling_mode"]
        modes = [modes] if isinstance(modes, str) else list(modes)
        unknown = [m for m in modes if m not in POOLING_MODES]
        if unknown:
            raise UnsupportedModelError(
                f"{config_file}: unknown pooling_mode {unknown[0]!r}; sentence-transformers' modes "
                f"are {', '.join(POOLING_MODES)}")
        chosen = [POOLING_MODES[m] for m in modes]
    else:
        chosen = [mode for key, mode in _LEGACY_POOLING_FLAGS.items() if config.get(key)]
        if not chosen:  # sentence-transformers' default when no flag is set
            chosen = ["mean"]
    if len(chosen) != 1:
        raise UnsupportedModelError(
            f"{config_file}: sutra supports exactly one pooling mode per model (one of "
            f"{', '.join(POOLING_MODES)}); this file enables {chosen} (sentence-transformers "
            "would concatenate them)")
    include_prompt = config.get("include_prompt", True)
    if not isinstance(include_prompt, bool):
        raise UnsupportedModelError(f"{config_file}: include_prompt must be true or false, got "
                                    f"{include_prompt!r}")
    return PoolingModule(chosen[0], include_prompt, folder)


def _read_dense(folder: Path, width: int) -> DenseModule:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelNotFoundError(f"the Dense module at {folder} has no config.json")
    config = _read_json(config_file)
    _check_default_io(folder, "Dense", config)
    if config.get("use_residual"):
        raise UnsupportedModelError(f"{config_file}: a Dense module with use_residual=true cannot "
                                    "run in sutra")
    try:
        n_in, n_out = int(config["in_features"]), int(config["out_features"])
    except (KeyError, TypeError, ValueError):
        raise UnsupportedModelError(f"{config_file}: in_features and out_features must be "
                                    "integers") from None
    if n_in != width:
        raise UnsupportedModelError(f"{config_file}: in_features={n_in}, but the module before it "
                                    f"gives {width} features")
    name = config.get("activation_function")
    if name is None:
        activation = _DEFAULT_DENSE_ACTIVATION
    elif name in DENSE_ACTIVATIONS:
        activation = DENSE_ACTIVATIONS[name]
    else:
        raise UnsupportedModelError(
            f"{config_file}: activation_function {name!r} cannot run in sutra; supported: "
            f"{', '.join(DENSE_ACTIVATIONS)}")
    bias = bool(config.get("bias", True))
    weights = folder / "model.safetensors"
    if not weights.is_file():
        if (folder / "pytorch_model.bin").is_file():
            raise UnsupportedModelError(
                f"the Dense module at {folder} holds only pytorch_model.bin; sutra reads "
                "safetensors and never unpickles. Convert it once with torch and safetensors: "
                "python -c \"import torch, safetensors.torch as s; "
                f"s.save_file(torch.load('{folder / 'pytorch_model.bin'}'), "
                f"'{weights}')\"")
        raise ModelNotFoundError(f"the Dense module at {folder} has no model.safetensors")
    shapes = _tensor_shapes(weights)
    expected = {"linear.weight": (n_out, n_in)} | ({"linear.bias": (n_out,)} if bias else {})
    for tensor, shape in expected.items():
        if tensor not in shapes:
            raise UnsupportedModelError(f"{weights} has no tensor {tensor!r}")
        if shapes[tensor] != shape:
            raise UnsupportedModelError(f"{weights}: {tensor} has shape {shapes[tensor]}; "
                                        f"expected {shape} from {config_file}")
    return DenseModule(folder, n_in, n_out, bias, activation)


def _check_default_io(folder: Path, kind: str, config: dict[str, Any] | None = None) -> None:
    """Dense and Normalize may be pointed at token embeddings (multi-vector models); sutra
    runs them on the sentence embedding only."""
    if config is None:
        config = _read_json(folder / "config.json", default={})
    for key in ("module_input_name", "module_output_name"):
        value = config.get(key)
        if value not in (None, "sentence_embedding"):
            raise UnsupportedModelError(f"{folder}: a {kind} module with {key}={value!r} cannot "
                                        "run in sutra (it applies to the sentence embedding only)")


def _tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a safetensors file, from its header alone (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise UnsupportedModelError(f"{path} is not a readable safetensors file ({exc})") from None


def _read_json(path: Path, default: Any = None) -> Any:
    if not path.is_file():
        if default is not None:
            return default
        raise ModelNotFoundError(f"{path} is missing")
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except ValueError as exc:
            raise UnsupportedModelError(f"{path} is not valid JSON: {exc}") from None
