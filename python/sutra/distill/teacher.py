"""Teacher embeddings: computed in batches with a progress bar and cached on disk.

The cache key is (teacher fingerprint, texts fingerprint): the sha256 of the teacher's weights and
of every setting that changes its output, and the sha256 of the texts in order. A rerun on the
same corpus loads the array instead of running the teacher again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 2048  # texts per encode() call: a progress-bar step, still long enough to sort by length


def teacher_fingerprint(teacher: Any) -> str | None:
    """A hex digest naming what ``teacher`` computes, or ``None`` when it cannot be named (then
    nothing is cached). Works for :class:`sutra.Embedder` and for objects with a ``fingerprint``
    attribute."""
    explicit = getattr(teacher, "fingerprint", None)
    if explicit is not None:
        return hashlib.sha256(str(explicit).encode()).hexdigest()
    model = getattr(teacher, "model", None)
    graph = onnx_graph(teacher)
    if model is None or graph is None:
        return None
    from ..backends.onnxruntime import _weights_hash

    weights = model.path / "model.safetensors"
    described = {
        # the graph is named by the weights' hash for built graphs; a folder's own ONNX file is
        # hashed itself
        "weights": _weights_hash(weights) if weights.is_file() else _weights_hash(Path(graph)),
        "graph": Path(graph).name,
        "pooling": model.pooling,
        "normalize": model.normalize,
        "max_seq_length": teacher.max_seq_length,
        "dimensions": teacher.config.dimensions,
        "do_lower_case": model.do_lower_case,
        "prompt": model.default_prompt_name,
        "long_text": teacher.config.long_text,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def onnx_graph(teacher: Any) -> Path | None:
    """The ONNX graph of a teacher whose backend runs one (the backend contract says)."""
    from ..backends.base import Backend

    backend = getattr(teacher, "backend", None)
    return backend.onnx_graph if isinstance(backend, Backend) else None


def texts_fingerprint(texts: Sequence[str]) -> str:
    digest = hashlib.sha256(str(len(texts)).encode())
    for text in texts:
        encoded = text.encode("utf-8", "surrogatepass")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    from ..models.fetch import cache_root

    return cache_root() / "distill"


def cache_path(cache_dir: Path, teacher_id: str, what: str) -> Path:
    return cache_dir / f"teacher-{teacher_id[:20]}-{what[:20]}.npy"


def check_embeddings(embeddings: np.ndarray, n: int, dim: int, source: str) -> np.ndarray:
    """``embeddings`` as float32 ``[n, dim]``, or a ValueError naming what is wrong."""
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or embeddings.shape[0] != n:
        raise ValueError(f"{source} returned shape {embeddings.shape}; expected [{n}, {dim}]")
    if embeddings.shape[1] != dim:
        raise ValueError(
            f"{source} gives {embeddings.shape[1]}-d embeddings but teacher_dim={dim}; set "
            f"DistillationConfig(teacher_dim={embeddings.shape[1]}, ...)"
        )
    finite = np.isfinite(embeddings).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{source} returned NaN or infinite values for {len(bad)} of {n} texts (first at "
            f"index {bad[0]}); a teacher must give finite embeddings"
        )
    return np.ascontiguousarray(embeddings, dtype=np.float32)


def embed_texts(teacher: Any, texts: Sequence[str], dim: int, *, cache_dir: Path | None,
                progress: bool, batch_size: int = 64) -> np.ndarray:
    """Teacher embeddings ``[len(texts), dim]`` float32, from the cache when it holds them."""
    teacher_id = teacher_fingerprint(teacher) if cache_dir is not None else None
    path = None
    if teacher_id is not None:
        path = cache_path(cache_dir, teacher_id, texts_fingerprint(texts))
        if path.is_file():
            return check_embeddings(np.load(path), len(texts), dim, f"the cache file {path}")
    chunks = range(0, len(texts), _CHUNK)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="teacher embeddings", unit="chunk",
                      total=(len(texts) + _CHUNK - 1) // _CHUNK)
    parts = [np.asarray(teacher.encode(list(texts[i:i + _CHUNK]), batch_size=batch_size))
             for i in chunks]
    embeddings = check_embeddings(
        np.concatenate(parts) if parts else np.zeros((0, dim)), len(texts), dim, "the teacher"
    )
    if path is not None:
        save_atomic(path, embeddings)
    return embeddings


def embed_vocabulary(teacher: Any, dim: int, *, cache_dir: Path | None, progress: bool,
                     batch_size: int = 256) -> np.ndarray:
    """The teacher's embedding of every vocabulary entry on its own, ``[vocab, dim]`` float32:
    ``[prefix specials] token [suffix specials]``, as a one-token text."""
    tokenizer = teacher.tokenizer
    vocab = tokenizer.vocab_size
    empty = tokenizer.encode([""])[0]
    prefix = empty[: tokenizer.num_prefix_special]
    suffix = empty[tokenizer.num_prefix_special:]
    teacher_id = teacher_fingerprint(teacher) if cache_dir is not None else None
    path = cache_path(cache_dir, teacher_id, f"vocab{vocab}") if teacher_id else None
    if path is not None and path.is_file():
        return check_embeddings(np.load(path), vocab, dim, f"the cache file {path}")
    chunk = 4096
    starts = range(0, vocab, chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="teacher vocabulary", unit="chunk",
                      total=(vocab + chunk - 1) // chunk)
    parts = []
    for start in starts:
        ids = [prefix + [t] + suffix for t in range(start, min(start + chunk, vocab))]
        parts.append(np.asarray(teacher.embed_tokens(ids, batch_size=batch_size)))
    embeddings = check_embeddings(np.concatenate(parts), vocab, dim, "the teacher")
    if path is not None:
        save_atomic(path, embeddings)
    return embeddings


def save_atomic(path: Path, array: np.ndarray) -> None:
    """``np.save`` under a temporary name beside ``path``, then rename: never a partial file."""
    from .export import write_atomically

    def write(target: Path) -> None:
        with open(target, "wb") as f:  # np.save on a path would append ".npy"
            np.save(f, array)

    write_atomically(path, write, is_dir=False, overwrite=True)
