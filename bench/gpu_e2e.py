"""GPU end to end: sutra's cuda backend against sentence-transformers and the Hugging Face
forward pass, same run, same GPU, real all-MiniLM-L6-v2 in fp16 and real text (WordNet).

Texts in, numpy out, tokenization included, on the two corpora of ../shared/ANCHORS.md:

- short sentences: the first 20,000 WordNet example sentences (``corpus.examples(20000)``, about
  10.2 tokens each, 204k tokens);
- passages: 4,000 passages of WordNet definitions, shuffled by ``random.Random(0)`` and taken in
  order, joined with ``"; "`` until the definitions hold over 900 characters (separators not
  counted), cut at 256 tokens (about 205 tokens each, 821k tokens: ANCHORS.md's counts).
  bench/corpus.py's ``passages()`` builds something else (about 140 words, definitions drawn
  with replacement, joined with ". "), so they are built here (:func:`build_passages`).

Sections (``--sections``, default all):

``e2e``
    1. sutra ``Embedder(model, backend="cuda", dtype="float16").encode(texts, batch_size=B)``
       for every B of ``--batch-sizes`` and every ``max_batch_tokens`` of
       ``--max-batch-tokens`` (``default``: the Embedder's own, ``batch_size=None`` and
       ``"auto"``), the median of ``--repeats`` after a warm-up call each;
    2. sentence-transformers ``SentenceTransformer(model, device="cuda").half().encode(texts,
       batch_size=bs)`` for bs in ``--st-batch-sizes``;
    3. Hugging Face forward only: ``AutoModel`` fp16 (``dtype=torch.float16``, transformers 5's
       name for ``torch_dtype``) sdpa, texts tokenized beforehand with the model's fast
       tokenizer (truncation 256), length-sorted, padded batches of ``--hf-batch`` already on
       the GPU; the forward passes alone are timed (a second figure adds the mean pooling on
       the device);
    4. ``tokenizers`` alone (``encode_batch``, every core, truncation 256) and sutra's own
       tokenize step (``embedder.tokenizer.encode_arrays``, what ``encode()`` runs); and
       sutra's ``encode()`` at its best configuration with the native tokenizer off
       (``TextTokenizer(native=False)``: ``tokenizers`` two chunks ahead of the engine, the path
       of RoBERTa, XLM-R and every tokenizer the native one does not reproduce);
    5. sutra without tokenization: ``embed_tokens`` on the ids (as int64 arrays, built
       beforehand) and, when reachable, the engine path ``encode()`` runs after tokenizing
       (``Embedder._embed`` on the token arrays); the backend's ``stage_seconds()`` when it has
       one (host stages; the device stages from a second backend built with ``profile=True``,
       which times them with CUDA events, in place of the timed one); the fp16 GEMMs alone of
       a MiniLM forward over each corpus's tokens (a floor);
    6. the ratios against the issue's targets, and sutra's agreement with sentence-transformers
       (cosine of the embeddings of the timed calls).
``bert``
    A random-weight BERT-base (``BertConfig()``: 12 layers, hidden 768) saved as a
    sentence-transformers folder in a temporary directory; tokens/s of sutra ``embed_tokens``
    against ``BertModel`` fp16 sdpa on padded batches, at L=128, B=512 uniform and on a mixed set
    (lengths drawn from the passages' token lengths, about 65k tokens, HF on length-sorted padded
    batches), every configuration timed in rounds (once each per round) so that both sides see
    the same GPU clocks, and sutra's engine with its GEMM tuning off beside it; the fp16 GEMMs
    alone of BERT-base over the same tokens (ANCHORS.md's GEMM floor), and sutra's rate as a
    fraction of it.
``latency``
    One short text, ``encode([text])`` 200 times after a warm-up: p50 and p99 for sutra and
    sentence-transformers.

Timing: ``time.perf_counter`` around each call, ``torch.cuda.synchronize()`` before and after
where torch runs. Results go to ``--out`` (default ``$OUT`` when set, else bench/results):
``gpu_e2e_h200.md`` (every raw figure and the JSON of them), ``gpu_e2e_h200.json`` and
``gpu_e2e.png``.

The device has no WordNet: dump the corpora where WordNet is installed (about 5 MB), carry the
folder, then run there::

    python bench/gpu_e2e.py --dump-corpus bench/data/wordnet
    python bench/gpu_e2e.py --model /path/to/all-MiniLM-L6-v2-fp16 --corpus bench/data/wordnet

Smoke test without a GPU (tiny sizes; torch parts run on the CPU in fp32, figures meaningless)::

    python bench/gpu_e2e.py --backend cpu --quick --repeats 1 --out /tmp/gpu_e2e_smoke

WordNet 3.0 Copyright 2006 by Princeton University (license: bench/WORDNET_LICENSE).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub lookup without network retries for minutes
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).parent))
import corpus
import source_digest

DEFAULT_CORPUS = Path(__file__).parent / "data" / "wordnet"
MAX_TOKENS = 256  # the corpora are cut here (all-MiniLM-L6-v2's max_seq_length)
N_SENTENCES, N_PASSAGES = 20_000, 4_000
PASSAGE_CHARS = 900
LATENCY_CALLS = 200
BERT_L, BERT_B = 128, 512
GEMM_TOKENS = 65_536
# The targets.
SHORT_MUST, SHORT_GOAL = 2.0, 3.0  # short sentences: sutra e2e / HF forward only
PASSAGE_TOK_MUST = 0.9  # passages: sutra e2e / tokenizers alone
PASSAGE_HF_GOAL = 2.0  # passages: sutra e2e / HF forward only
BERT_MUST, BERT_GOAL = 1.2, 1.4  # BERT-base: sutra embed_tokens / HF forward, tokens/s


# -- corpora --------------------------------------------------------------------------------------


def build_passages(count: int, seed: int = 0, chars: int = PASSAGE_CHARS,
                   wordnet_dir: Path = corpus.WORDNET_DIR) -> list[str]:
    """ANCHORS.md's passages: every WordNet definition shuffled by ``seed``, taken in order and
    joined with ``"; "`` until the definitions of a passage hold over ``chars`` characters."""
    pool = corpus.definitions(wordnet_dir=wordnet_dir)
    random.Random(seed).shuffle(pool)
    out, index = [], 0
    for _ in range(count):
        parts: list[str] = []
        size = 0
        while size <= chars:
            parts.append(pool[index % len(pool)])
            size += len(parts[-1])
            index += 1
        out.append("; ".join(parts))
    return out


def dump_corpus(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    sentences = corpus.examples(N_SENTENCES)
    passages = build_passages(N_PASSAGES)
    if len(sentences) != N_SENTENCES:
        sys.exit(f"WordNet gave {len(sentences)} example sentences, not {N_SENTENCES}")
    for name, texts in (("sentences.json", sentences), ("passages.json", passages)):
        with open(folder / name, "w", encoding="utf-8") as f:
            json.dump(texts, f, ensure_ascii=False, indent=0)
            f.write("\n")
    license_file = Path(__file__).parent / "WORDNET_LICENSE"
    if license_file.is_file():
        shutil.copy(license_file, folder / "WORDNET_LICENSE")
    total = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    print(f"{len(sentences)} sentences, {len(passages)} passages -> {folder} ({total:,} bytes)")


def load_corpora(folder: Path, quick: bool) -> dict[str, list[str]]:
    """``{"short": sentences, "passages": passages}`` from ``folder``'s JSON files, or built from
    WordNet when they are missing and WordNet is installed."""
    files = [folder / "sentences.json", folder / "passages.json"]
    if all(f.is_file() for f in files):
        sentences, passages = (json.loads(f.read_text(encoding="utf-8")) for f in files)
    else:
        print(f"no corpus files in {folder}; building them from WordNet "
              f"({corpus.WORDNET_DIR})", flush=True)
        sentences, passages = corpus.examples(N_SENTENCES), build_passages(N_PASSAGES)
    if quick:
        sentences, passages = sentences[:500], passages[:100]
    return {"short": sentences, "passages": passages}


CORPUS_TITLES = {"short": "short sentences", "passages": "passages"}


# -- timing ---------------------------------------------------------------------------------------


class Clock:
    """Times calls with ``time.perf_counter``, synchronizing the GPU before and after each when
    torch has CUDA (``sync``)."""

    def __init__(self, sync: bool) -> None:
        self.sync = sync
        if sync:
            import torch
            self._synchronize = torch.cuda.synchronize
        else:
            self._synchronize = lambda: None

    def once(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        self._synchronize()
        start = time.perf_counter()
        out = fn()
        self._synchronize()
        return time.perf_counter() - start, out

    def median(self, fn: Callable[[], Any], repeats: int, warmup: int = 1
               ) -> tuple[float, list[float], Any]:
        """Median seconds of ``repeats`` calls after ``warmup`` calls, every time, the last
        output."""
        out = None
        for _ in range(warmup):
            _, out = self.once(fn)
        times = []
        for _ in range(repeats):
            seconds, out = self.once(fn)
            times.append(seconds)
        return statistics.median(times), times, out

    def interleaved(self, fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
                    ) -> dict[str, tuple[float, list[float], Any]]:
        """``median`` of several calls measured in rounds (each call once per round), so that
        every call sees the same state of the GPU: an H200's clocks fall over a few seconds of
        back-to-back work, which would favour whichever side runs first."""
        outs: dict[str, Any] = {}
        for _ in range(warmup):
            for name, fn in fns.items():
                _, outs[name] = self.once(fn)
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(repeats):
            for name, fn in fns.items():
                seconds, outs[name] = self.once(fn)
                times[name].append(seconds)
        return {name: (statistics.median(times[name]), times[name], outs[name]) for name in fns}


def _free_torch() -> None:
    gc.collect()
    try:
        import torch
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


# -- the machine ----------------------------------------------------------------------------------


def machine_info(torch_device: str) -> dict[str, Any]:
    """Run before anything tokenizes (nvidia-smi forks)."""
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f
                               if line.startswith("model name"))
    except (OSError, StopIteration):
        info["cpu"] = platform.processor()
    versions = {}
    for module in ("sutra", "torch", "transformers", "sentence_transformers", "tokenizers",
                   "numpy"):
        try:
            versions[module] = __import__(module).__version__
        except Exception as exc:  # noqa: BLE001 - reported, not fatal
            versions[module] = f"unavailable ({type(exc).__name__})"
    info["versions"] = versions
    try:
        import torch
        info["torch_cuda"] = torch.version.cuda
        if torch_device == "cuda":
            info["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], check=False,
                             capture_output=True, text=True, timeout=30)
        if smi.returncode == 0:
            info["nvidia_smi"] = smi.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        root = Path(__file__).resolve().parent.parent
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                              check=False, capture_output=True, text=True, timeout=30)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"],
                               check=False, capture_output=True, text=True, timeout=30)
        if head.returncode == 0:
            info["git"] = head.stdout.strip() + (" (dirty)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    info["source_digest"] = source_digest.working_tree_digest()
    return info


# -- sutra ----------------------------------------------------------------------------------------


def make_embedder(model: str | Path, backend: str, max_batch_tokens: int | str | None = None):
    """``sutra.Embedder(model, backend=backend, dtype="float16")`` on cuda (``use_fp16=True``
    where this sutra has no ``dtype`` field yet), fp32 on cpu; and the precision it was given."""
    import sutra

    fields = {f.name for f in dataclasses.fields(sutra.EmbedderConfig)}
    kwargs: dict[str, Any] = {"backend": backend}
    if max_batch_tokens is not None:
        kwargs["max_batch_tokens"] = max_batch_tokens
    precision = "float32"
    if backend == "cuda":
        if "dtype" in fields:
            kwargs["dtype"], precision = "float16", "dtype='float16'"
        else:
            print("  note: EmbedderConfig has no 'dtype' field; using use_fp16=True", flush=True)
            kwargs["use_fp16"], precision = True, "use_fp16=True"
    return sutra.Embedder(str(model), **kwargs), precision


def stage_breakdown(embedder, fn: Callable[[], Any]) -> dict[str, float] | None:
    """The backend's ``stage_seconds()`` over one call of ``fn`` (seconds per stage, and the
    counts ``passes`` and ``tokens``), with the call's own time as ``wall``; ``None`` when the
    backend keeps none."""
    backend = embedder.backend
    if not (hasattr(backend, "stage_seconds") and hasattr(backend, "reset_stage_seconds")):
        return None
    backend.reset_stage_seconds()
    start = time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    stages = backend.stage_seconds()
    try:
        return {str(k): float(v) for k, v in dict(stages).items()} | {"wall": wall}
    except (TypeError, ValueError):
        print(f"  stage_seconds() gave {stages!r}, not a dict of seconds", flush=True)
        return None


def profiled_stages(embedder, calls: dict[str, Callable[[], Any]]) -> dict[str, Any] | None:
    """Device stages are timed (CUDA events) only by a cuda backend built with
    ``profile=True``, which the Embedder does not ask for: one is built in place of the
    embedder's (same dtype, device and token budget) and ``stage_breakdown`` of each call is
    taken after a warm-up call. ``None`` off the cuda backend."""
    import inspect

    backend = embedder.backend
    if getattr(backend, "name", "") != "cuda":
        return None
    try:
        from sutra.backends.cuda import CudaBackend

        if "profile" not in inspect.signature(CudaBackend).parameters:
            return {"error": "CudaBackend takes no profile argument"}
        kwargs = {"dtype": backend.dtype, "device": getattr(embedder.config, "device", 0),
                  "max_tokens": backend.max_tokens, "profile": True}
        embedder.backend = backend = None
        gc.collect()
        embedder.backend = CudaBackend(embedder.model, **kwargs)
        out: dict[str, Any] = {}
        for name, fn in calls.items():
            fn()
            out[name] = stage_breakdown(embedder, fn)
        return out
    except Exception as exc:  # noqa: BLE001 - internals that may change; reported
        return {"error": f"{type(exc).__name__}: {exc}"}


def backend_description(embedder) -> dict[str, Any] | None:
    describe = getattr(embedder.backend, "describe", None)
    if describe is None:
        return None
    try:
        return {str(k): v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
                for k, v in dict(describe()).items()}
    except Exception as exc:  # noqa: BLE001 - reported
        return {"error": f"{type(exc).__name__}: {exc}"}


def sutra_e2e(model: Path, backend: str, texts: list[str], batch_sizes: list[int | None],
              token_limits: list[int | None], clock: Clock, repeats: int) -> dict[str, Any]:
    """encode() texts/s for every batch size and max_batch_tokens (``None``: the config's
    default); the best's output."""
    runs, best, best_out = [], None, None
    for limit in token_limits:
        embedder, precision = make_embedder(model, backend, limit)
        described = backend_description(embedder)
        for batch in batch_sizes:
            median, times, out = clock.median(
                partial(embedder.encode, texts, batch_size=batch, show_progress_bar=False),
                repeats)
            run = {"batch_size": batch, "max_batch_tokens": embedder.config.max_batch_tokens,
                   "precision": precision, "backend": described, "median_s": median,
                   "times_s": times, "texts_per_s": len(texts) / median}
            runs.append(run)
            print(f"  sutra encode  B={_bs(batch):>7} max_batch_tokens="
                  f"{run['max_batch_tokens']!s:>6}: {run['texts_per_s']:12,.0f} texts/s",
                  flush=True)
            if best is None or median < best["median_s"]:
                best, best_out = run, np.asarray(out)
        embedder = None
        gc.collect()
    assert best_out is not None and best_out.shape[0] == len(texts)
    return {"runs": runs, "best": best, "finite": bool(np.isfinite(best_out).all()),
            "output": best_out}


def sutra_with_tokenizers(model: Path, backend: str, texts: list[str], best: dict, clock: Clock,
                          repeats: int) -> dict[str, Any]:
    """encode() at the best e2e configuration with sutra's native tokenizer turned off: the path
    of every model whose tokenizer it does not reproduce (RoBERTa, XLM-R: Hugging Face
    ``tokenizers``, two batch calls ahead of the engine), for the issue's bar on it (end to end at
    least 0.9x what ``tokenizers`` alone does)."""
    from sutra.tokenization import TextTokenizer

    embedder, _ = make_embedder(model, backend, best["max_batch_tokens"])
    embedder.tokenizer = TextTokenizer(embedder.model.tokenizer_path,
                                       embedder.model.config.get("pad_token_id"), native=False)
    median, times, out = clock.median(
        partial(embedder.encode, texts, batch_size=best["batch_size"], show_progress_bar=False),
        repeats)
    return {"batch_size": best["batch_size"], "max_batch_tokens": best["max_batch_tokens"],
            "median_s": median, "times_s": times, "texts_per_s": len(texts) / median,
            "finite": bool(np.isfinite(out).all())}


def sutra_without_tokenization(model: Path, backend: str, texts: list[str], best: dict,
                               clock: Clock, repeats: int) -> dict[str, Any]:
    """At the best e2e configuration: sutra's tokenize step, embed_tokens on pre-tokenized ids,
    the engine path encode() takes after tokenizing, and the backend's stage breakdown."""
    embedder, _ = make_embedder(model, backend, best["max_batch_tokens"])
    batch, max_len = best["batch_size"], embedder.max_seq_length
    result: dict[str, Any] = {"batch_size": batch, "max_batch_tokens": best["max_batch_tokens"],
                              "backend": backend_description(embedder)}

    median, times, (token_batch, _) = clock.median(
        partial(embedder.tokenizer.encode_arrays, texts, max_len), repeats)
    result["sutra_tokenize"] = {"median_s": median, "times_s": times,
                                "texts_per_s": len(texts) / median,
                                "call": "embedder.tokenizer.encode_arrays(texts, max_seq_length)"}

    sequences = [np.asarray(s, dtype=np.int64)
                 for s in embedder.tokenizer.encode_cut(texts, max_len)[0]]
    median, times, out = clock.median(
        partial(embedder.embed_tokens, sequences, batch_size=batch), repeats)
    result["embed_tokens"] = {"median_s": median, "times_s": times,
                              "texts_per_s": len(texts) / median, "shape": list(out.shape)}

    if hasattr(embedder, "_embed"):
        engine = partial(embedder._embed, token_batch, embedder.config.dimensions, False,
                         "float32", False, batch_size=batch)
        try:  # a private method: its signature may change
            median, times, _ = clock.median(engine, repeats)
            result["engine"] = {"median_s": median, "times_s": times,
                                "texts_per_s": len(texts) / median,
                                "call": "Embedder._embed(TokenBatch from encode_arrays)"}
        except TypeError as exc:
            print(f"  Embedder._embed not timed: {exc}", flush=True)
    calls = {"encode": partial(embedder.encode, texts, batch_size=batch, show_progress_bar=False),
             "embed_tokens": partial(embedder.embed_tokens, sequences, batch_size=batch)}
    result["stages"] = {name: stage_breakdown(embedder, fn) for name, fn in calls.items()}
    result["stages_profiled"] = profiled_stages(embedder, calls)
    return result


def sutra_latency(model: Path, backend: str, texts: list[str], clock: Clock, calls: int,
                  graphs: bool = True) -> dict[str, Any]:
    """encode(texts) latency; ``graphs=False`` turns the engine's CUDA graphs off (the same
    engine otherwise), to show what they save on small passes."""
    embedder, _ = make_embedder(model, backend)
    if not graphs:
        from sutra.backends.cuda import CudaBackend

        embedder.backend = CudaBackend(embedder.model, dtype=embedder.backend.dtype,
                                       graph_max_tokens=0)
    return _latency(partial(embedder.encode, texts, show_progress_bar=False), clock, calls)


def _latency(fn: Callable[[], Any], clock: Clock, calls: int) -> dict[str, Any]:
    for _ in range(max(10, calls // 10)):
        fn()
    times = [clock.once(fn)[0] for _ in range(calls)]
    ms = np.asarray(times) * 1e3
    return {"calls": calls, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()),
            "min_ms": float(ms.min()), "max_ms": float(ms.max())}


# -- tokenizers alone -----------------------------------------------------------------------------


def tokenizers_alone(model: Path, texts: list[str], clock: Clock, repeats: int
                     ) -> dict[str, Any]:
    """``tokenizers.Tokenizer.encode_batch`` (every core), truncation 256, no padding."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    tokenizer.no_padding()  # MiniLM's tokenizer.json pads to 128
    tokenizer.enable_truncation(MAX_TOKENS)
    median, times, encodings = clock.median(lambda: tokenizer.encode_batch(texts), repeats)
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
    # What a caller needs from it: the ids, read out of the Encoding objects (holding the GIL).
    ids_median, ids_times, _ = clock.median(
        lambda: [e.ids for e in tokenizer.encode_batch(texts)], repeats)
    return {"median_s": median, "times_s": times, "texts_per_s": len(texts) / median,
            "lengths": lengths,
            "with_ids": {"median_s": ids_median, "times_s": ids_times,
                         "texts_per_s": len(texts) / ids_median}}


# -- torch: sentence-transformers, Hugging Face, GEMMs ---------------------------------------------


def torch_dtype(device: str):
    import torch
    return torch.float16 if device == "cuda" else torch.float32


def st_encode(model: Path, device: str, texts: list[str], batch_sizes: list[int],
              clock: Clock, repeats: int) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    _free_torch()  # an Embedder whose engine sized its workspace from free memory is gone
    st = SentenceTransformer(str(model), device=device)
    if device == "cuda":
        st = st.half()
    runs, best, best_out = [], None, None
    for batch in batch_sizes:
        median, times, out = clock.median(
            partial(st.encode, texts, batch_size=batch, show_progress_bar=False,
                    convert_to_numpy=True), repeats)
        run = {"batch_size": batch, "median_s": median, "times_s": times,
               "texts_per_s": len(texts) / median}
        runs.append(run)
        print(f"  sentence-transformers bs={batch:5d}: {run['texts_per_s']:12,.0f} texts/s",
              flush=True)
        if best is None or median < best["median_s"]:
            best, best_out = run, np.asarray(out, dtype=np.float32)
    st = None
    _free_torch()
    return {"runs": runs, "best": best, "max_seq_length": MAX_TOKENS, "output": best_out}


def st_latency(model: Path, device: str, texts: list[str], clock: Clock, calls: int
               ) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    _free_torch()
    st = SentenceTransformer(str(model), device=device)
    if device == "cuda":
        st = st.half()
    result = _latency(partial(st.encode, texts, show_progress_bar=False), clock, calls)
    st = None
    _free_torch()
    return result


def padded_batches(sequences: list[list[int]], batch: int, device: str, pad_id: int = 0,
                   sort: bool = True) -> list[tuple[Any, Any]]:
    """``(input_ids, attention_mask)`` int64 tensors on ``device``, ``batch`` sequences each,
    padded to the longest of the batch; sorted by length first when ``sort``."""
    import torch

    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i])) if sort \
        else range(len(sequences))
    ordered = [sequences[i] for i in order]
    out = []
    for start in range(0, len(ordered), batch):
        rows = ordered[start:start + batch]
        width = max(map(len, rows))
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, row in enumerate(rows):
            ids[r, :len(row)] = row
            mask[r, :len(row)] = 1
        out.append((torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)))
    return out


def hf_forward(model_dir: Path, device: str, batches: list[tuple[Any, Any]], clock: Clock,
               repeats: int, pooling: bool, model=None) -> dict[str, Any]:
    """Seconds of the forward passes (``torch.inference_mode``) over ``batches``, already on the
    device; with ``pooling``, the mean pooling of each batch on the device too."""
    from transformers import AutoModel

    if model is None:
        model = AutoModel.from_pretrained(str(model_dir), dtype=torch_dtype(device),
                                          attn_implementation="sdpa").to(device).eval()

    timed = clock.median(partial(hf_run, model, batches, pooling), repeats)
    result = hf_stats(model, batches, timed)
    result["pooling"] = pooling
    return result


def hf_run(model, batches: list[tuple[Any, Any]], pooling: bool = False) -> None:
    """The forward passes of ``model`` over ``batches`` (``torch.inference_mode``); with
    ``pooling``, the mean pooling of each batch on the device too."""
    import torch

    with torch.inference_mode():
        for ids, mask in batches:
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            if pooling:
                m = mask.unsqueeze(-1).to(hidden.dtype)
                (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def hf_stats(model, batches: list[tuple[Any, Any]], timed: tuple[float, list[float], Any]
             ) -> dict[str, Any]:
    """Rates of ``hf_run`` over ``batches`` from its ``(median, times, _)`` timing."""
    median, times, _ = timed
    sequences = sum(int(ids.shape[0]) for ids, _ in batches)
    tokens = sum(int(mask.sum()) for _, mask in batches)
    padded = sum(int(ids.numel()) for ids, _ in batches)
    return {"median_s": median, "times_s": times, "texts_per_s": sequences / median,
            "tokens_per_s": tokens / median, "tokens": tokens, "padded_tokens": padded,
            "batches": len(batches), "attn_implementation": model.config._attn_implementation}


def hf_e2e_forward(model: Path, device: str, texts: list[str], batch: int, clock: Clock,
                   repeats: int) -> dict[str, Any]:
    """HF forward only on the texts tokenized beforehand (fast tokenizer, truncation 256)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    _free_torch()
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    sequences = tokenizer(texts, truncation=True, max_length=MAX_TOKENS, padding=False,
                          return_attention_mask=False)["input_ids"]
    batches = padded_batches(sequences, batch, device, int(tokenizer.pad_token_id or 0))
    hf = AutoModel.from_pretrained(str(model), dtype=torch_dtype(device),
                                   attn_implementation="sdpa").to(device).eval()
    result = {"fast_tokenizer": bool(tokenizer.is_fast), "batch": batch,
              "forward": hf_forward(model, device, batches, clock, repeats, False, hf),
              "forward_pool": hf_forward(model, device, batches, clock, repeats, True, hf)}
    del hf, batches
    _free_torch()
    if device == "cuda":
        torch.cuda.synchronize()
    return result


def gemm_floor(tokens: int, hidden: int, intermediate: int, layers: int, device: str,
               clock: Clock, repeats: int = 10) -> dict[str, Any]:
    """The encoder's GEMMs alone (``torch.matmul``, fp16 on cuda): per layer [T,h]x[h,3h],
    [T,h]x[h,h], [T,h]x[h,i], [T,i]x[i,h], distinct weights per layer, outputs preallocated."""
    import torch

    dtype = torch_dtype(device)
    torch.manual_seed(0)

    def rand(*shape, scale=1.0):  # made on the device: the passages' h is 2.5 GB
        return torch.randn(*shape, device=device, dtype=dtype) * scale

    x, h = rand(tokens, hidden), rand(tokens, intermediate)
    shapes = ((hidden, 3 * hidden), (hidden, hidden), (hidden, intermediate),
              (intermediate, hidden))
    weights = [[rand(k, n, scale=0.02) for k, n in shapes] for _ in range(layers)]
    outs = [torch.empty(tokens, n, device=device, dtype=dtype) for _, n in shapes]
    inputs = (x, x, x, h)

    def run(weights=weights, outs=outs):
        for layer in weights:
            for a, w, o in zip(inputs, layer, outs):
                torch.matmul(a, w, out=o)

    median, times, _ = clock.median(run, repeats, warmup=3)
    flops = 2 * tokens * layers * sum(k * n for k, n in shapes)
    x = h = weights = outs = inputs = run = None
    _free_torch()
    return {"tokens": tokens, "hidden": hidden, "intermediate": intermediate, "layers": layers,
            "dtype": str(dtype).removeprefix("torch."), "median_s": median, "times_s": times,
            "tokens_per_s": tokens / median, "tflops": flops / median / 1e12}


# -- BERT-base ------------------------------------------------------------------------------------


def build_bert_folder(folder: Path, minilm: Path, quick: bool) -> dict[str, Any]:
    """A random-weight BERT (``BertConfig()`` defaults; a small one with ``quick``) saved as a
    sentence-transformers folder: config.json + model.safetensors, MiniLM's tokenizer files,
    modules.json (Transformer, mean Pooling), sentence_bert_config.json (max_seq_length 512)."""
    import inspect

    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig() if not quick else BertConfig(
        hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512)
    torch.manual_seed(0)
    model = BertModel(config).eval()
    kwargs = ({"safe_serialization": True}
              if "safe_serialization" in inspect.signature(model.save_pretrained).parameters
              else {})
    model.save_pretrained(str(folder), **kwargs)
    if not (folder / "model.safetensors").is_file():
        raise RuntimeError(f"save_pretrained wrote no model.safetensors in {folder}")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "vocab.txt"):
        if (minilm / name).is_file():
            shutil.copy(minilm / name, folder / name)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pooling = {"word_embedding_dimension": config.hidden_size, "pooling_mode_cls_token": False,
               "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
               "pooling_mode_mean_sqrt_len_tokens": False}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 512, "do_lower_case": False}, indent=2))
    del model
    return {"hidden_size": config.hidden_size, "layers": config.num_hidden_layers,
            "heads": config.num_attention_heads, "intermediate": config.intermediate_size,
            "vocab_size": config.vocab_size}


def bert_token_sets(passage_lengths: np.ndarray, length: int, batch: int, mixed_tokens: int,
                    vocab: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Uniform ``[batch, length]`` ids and a mixed-length list (lengths drawn from
    ``passage_lengths`` until ``mixed_tokens`` tokens): random ids in [1000, min(30000, vocab)),
    101 first, 102 last."""
    rng = np.random.default_rng(0)
    top = min(30_000, vocab)
    uniform = rng.integers(1000, top, size=(batch, length), dtype=np.int64)
    uniform[:, 0], uniform[:, -1] = 101, 102
    mixed, total = [], 0
    while total < mixed_tokens:
        n = int(rng.choice(passage_lengths))
        row = rng.integers(1000, top, size=n, dtype=np.int64)
        row[0], row[-1] = 101, 102
        mixed.append(row)
        total += n
    return uniform, mixed


def bert_section(args, device: str, clock: Clock, passage_lengths: np.ndarray) -> dict[str, Any]:
    import torch
    from transformers import BertModel

    length, batch = (32, 16) if args.quick else (BERT_L, BERT_B)
    mixed_target = 4096 if args.quick else GEMM_TOKENS
    result: dict[str, Any] = {"uniform": {"L": length, "B": batch}}
    with tempfile.TemporaryDirectory(prefix="sutra-bert-base-") as tmp:
        folder = Path(tmp)
        result["config"] = build_bert_folder(folder, args.model, args.quick)
        cfg = result["config"]
        uniform, mixed = bert_token_sets(passage_lengths, length, batch, mixed_target,
                                         cfg["vocab_size"])
        uniform_tokens, mixed_tokens = int(uniform.size), int(sum(map(len, mixed)))
        result["mixed"] = {"sequences": len(mixed), "tokens": mixed_tokens,
                           "mean_length": mixed_tokens / len(mixed),
                           "max_length": int(max(map(len, mixed)))}

        # sutra: enough max_batch_tokens for a whole uniform batch in one pass. Beside it, the
        # same engine with GEMM tuning off (the heuristic's first algorithm), on the cuda backend.
        limit = max(65_536, length * batch)
        embedder, precision = make_embedder(folder, args.backend, limit)
        result["sutra_precision"] = precision
        untuned = None
        if getattr(embedder.backend, "name", "") == "cuda":
            from sutra.backends.cuda import CudaBackend

            untuned, _ = make_embedder(folder, args.backend, limit)
            untuned.backend = None
            _free_torch()
            untuned.backend = CudaBackend(untuned.model, dtype=embedder.backend.dtype,
                                          max_tokens=embedder.backend.max_tokens,
                                          gemm_tune_min_rows=0)
        hf = BertModel.from_pretrained(str(folder), dtype=torch_dtype(device),
                                       attn_implementation="sdpa").to(device).eval()
        uniform_batches = padded_batches([list(r) for r in uniform], batch, device, sort=False)
        hf_batches = {b: padded_batches([list(r) for r in mixed], b, device)
                      for b in args.bert_hf_batches}

        # Every configuration in rounds: sutra and HF see the same clocks.
        calls: dict[str, Callable[[], Any]] = {
            "sutra uniform": partial(embedder.embed_tokens, uniform, batch_size=batch)}
        if untuned is not None:
            calls["sutra uniform untuned"] = partial(untuned.embed_tokens, uniform,
                                                     batch_size=batch)
        calls["hf uniform"] = partial(hf_run, hf, uniform_batches)
        for b in args.bert_sutra_batches:
            calls[f"sutra mixed {b}"] = partial(embedder.embed_tokens, mixed, batch_size=b)
        for b, batches in hf_batches.items():
            calls[f"hf mixed {b}"] = partial(hf_run, hf, batches)
        timed = clock.interleaved(calls, args.repeats)

        def sutra_run(name: str, b: int, tokens: int) -> dict[str, Any]:
            median, times, out = timed[name]
            return {"batch_size": b, "max_batch_tokens": limit, "median_s": median,
                    "times_s": times, "tokens_per_s": tokens / median,
                    "finite": bool(np.isfinite(out).all())}

        result["uniform"]["sutra"] = sutra_run("sutra uniform", batch, uniform_tokens)
        if untuned is not None:
            result["uniform"]["sutra_untuned"] = sutra_run("sutra uniform untuned", batch,
                                                           uniform_tokens)
        result["uniform"]["hf"] = hf_stats(hf, uniform_batches, timed["hf uniform"])
        runs = [sutra_run(f"sutra mixed {b}", b, mixed_tokens) for b in args.bert_sutra_batches]
        result["mixed"]["sutra_runs"] = runs
        result["mixed"]["sutra"] = min(runs, key=lambda r: r["median_s"])
        runs = []
        for b, batches in hf_batches.items():
            run = hf_stats(hf, batches, timed[f"hf mixed {b}"])
            run["batch_size"] = b
            runs.append(run)
        result["mixed"]["hf_runs"] = runs
        result["mixed"]["hf"] = min(runs, key=lambda r: r["median_s"])
        del hf, uniform_batches, hf_batches, untuned
        _free_torch()

        calls = {"uniform": partial(embedder.embed_tokens, uniform, batch_size=batch),
                 "mixed": partial(embedder.embed_tokens, mixed,
                                  batch_size=result["mixed"]["sutra"]["batch_size"])}
        result["sutra_backend"] = backend_description(embedder)
        result["sutra_stages"] = {k: stage_breakdown(embedder, fn) for k, fn in calls.items()}
        result["sutra_stages_profiled"] = profiled_stages(embedder, calls)
        embedder = calls = None
        _free_torch()

    result["uniform"]["gemm"] = gemm_floor(uniform_tokens, cfg["hidden_size"], cfg["intermediate"],
                                           cfg["layers"], device, clock)
    result["mixed"]["gemm"] = gemm_floor(mixed_tokens, cfg["hidden_size"], cfg["intermediate"],
                                         cfg["layers"], device, clock)
    for key in ("uniform", "mixed"):
        part = result[key]
        part["sutra_over_hf"] = part["sutra"]["tokens_per_s"] / part["hf"]["tokens_per_s"]
        part["sutra_over_gemm"] = part["sutra"]["tokens_per_s"] / part["gemm"]["tokens_per_s"]
        part["hf_over_gemm"] = part["hf"]["tokens_per_s"] / part["gemm"]["tokens_per_s"]
        print(f"  BERT {key}: sutra {part['sutra']['tokens_per_s']:,.0f} tok/s, HF "
              f"{part['hf']['tokens_per_s']:,.0f} tok/s ({part['sutra_over_hf']:.2f}x), GEMMs "
              f"alone {part['gemm']['tokens_per_s']:,.0f} tok/s", flush=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return result


# -- the e2e section ------------------------------------------------------------------------------


def cosine_rows(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    cos = np.sum(a * b, axis=1)
    return {"min": float(cos.min()), "mean": float(cos.mean())}


def e2e_section(args, device: str, clock: Clock, texts_by_corpus: dict[str, list[str]]
                ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    config = json.loads((args.model / "config.json").read_text())
    for key, texts in texts_by_corpus.items():
        print(f"{CORPUS_TITLES[key]}: {len(texts)} texts", flush=True)
        r: dict[str, Any] = {"texts": len(texts)}
        tok = tokenizers_alone(args.model, texts, clock, args.repeats)
        lengths = tok.pop("lengths")
        r["tokens"] = int(lengths.sum())
        r["mean_tokens"] = float(lengths.mean())
        r["cut_at_256"] = int((lengths >= MAX_TOKENS).sum())
        r["lengths"] = lengths
        r["tokenizers"] = tok
        print(f"  tokenizers encode_batch: {tok['texts_per_s']:12,.0f} texts/s "
              f"({r['tokens']:,} tokens)", flush=True)

        e2e = sutra_e2e(args.model, args.backend, texts, args.batch_sizes, args.max_batch_tokens,
                        clock, args.repeats)
        sutra_out = e2e.pop("output")
        r["sutra"] = e2e
        r["sutra_tokenizers"] = sutra_with_tokenizers(args.model, args.backend, texts,
                                                      e2e["best"], clock, args.repeats)
        print(f"  tokenizers encode_batch + ids: {tok['with_ids']['texts_per_s']:12,.0f} texts/s",
              flush=True)
        print(f"  sutra encode with tokenizers (native off): "
              f"{r['sutra_tokenizers']['texts_per_s']:12,.0f} texts/s", flush=True)
        r["sutra_split"] = sutra_without_tokenization(args.model, args.backend, texts,
                                                      e2e["best"], clock, args.repeats)
        split = r["sutra_split"]
        print(f"  sutra tokenize {split['sutra_tokenize']['texts_per_s']:,.0f} texts/s, "
              f"embed_tokens {split['embed_tokens']['texts_per_s']:,.0f} texts/s", flush=True)
        for title, stages in (("", split["stages"]), (" profiled", split["stages_profiled"])):
            if stages and stages.get("encode"):
                print(f"  sutra stages{title} (one encode): {_stages(stages['encode'])}",
                      flush=True)

        st = st_encode(args.model, device, texts, args.st_batch_sizes, clock, args.repeats)
        st_out = st.pop("output")
        r["st"] = st
        r["sutra_vs_st_cosine"] = cosine_rows(sutra_out, st_out)

        r["hf"] = hf_e2e_forward(args.model, device, texts, args.hf_batch, clock, args.repeats)
        print(f"  HF forward only: {r['hf']['forward']['texts_per_s']:12,.0f} texts/s", flush=True)
        r["gemm"] = gemm_floor(r["tokens"], int(config["hidden_size"]),
                               int(config["intermediate_size"]),
                               int(config["num_hidden_layers"]), device, clock)

        s = e2e["best"]["texts_per_s"]
        r["ratios"] = {
            "sutra_over_hf_forward": s / r["hf"]["forward"]["texts_per_s"],
            "sutra_over_st": s / st["best"]["texts_per_s"],
            "sutra_over_tokenizers": s / tok["texts_per_s"],
            "sutra_tokenizers_over_tokenizers": (r["sutra_tokenizers"]["texts_per_s"]
                                                 / tok["texts_per_s"]),
            "sutra_tokenizers_over_tokenizers_with_ids": (r["sutra_tokenizers"]["texts_per_s"]
                                                          / tok["with_ids"]["texts_per_s"]),
            "sutra_e2e_over_embed_tokens": s / split["embed_tokens"]["texts_per_s"],
        }
        out[key] = r
    return out


def targets(e2e: dict[str, Any] | None, bert: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = []

    def add(what, value, must, goal):
        rows.append({"what": what, "value": value, "must": must, "goal": goal,
                     "meets_must": None if must is None else value >= must,
                     "meets_goal": None if goal is None else value >= goal})

    if e2e:
        if "short" in e2e:
            add("short sentences: sutra e2e / HF forward only",
                e2e["short"]["ratios"]["sutra_over_hf_forward"], SHORT_MUST, SHORT_GOAL)
        if "passages" in e2e:
            add("passages: sutra e2e / tokenizers alone",
                e2e["passages"]["ratios"]["sutra_over_tokenizers"], PASSAGE_TOK_MUST, None)
            if "sutra_tokenizers_over_tokenizers" in e2e["passages"]["ratios"]:
                add("passages: sutra e2e with tokenizers (native tokenizer off) / tokenizers alone",
                    e2e["passages"]["ratios"]["sutra_tokenizers_over_tokenizers"],
                    PASSAGE_TOK_MUST, None)
                add("passages: sutra e2e with tokenizers (native tokenizer off) / tokenizers "
                    "with the ids read out (no bar: for reference)",
                    e2e["passages"]["ratios"]["sutra_tokenizers_over_tokenizers_with_ids"],
                    None, None)
            add("passages: sutra e2e / HF forward only",
                e2e["passages"]["ratios"]["sutra_over_hf_forward"], None, PASSAGE_HF_GOAL)
    if bert:
        for key in ("uniform", "mixed"):
            add(f"BERT-base {key}: sutra embed_tokens / HF forward (tokens/s)",
                bert[key]["sutra_over_hf"], BERT_MUST, BERT_GOAL)
    return rows


# -- the report -----------------------------------------------------------------------------------


def _k(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.1f}k"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _times(times: list[float]) -> str:
    return ", ".join(f"{t * 1e3:.1f}" for t in times)


def _bs(batch: int | None) -> str:
    return "default" if batch is None else str(batch)


_COUNTS = ("passes", "tokens")


def _stages(stages: dict[str, float]) -> str:
    """``plan 0.12 ms, ...; passes 3, tokens 204022; wall 40.1 ms``."""
    seconds = [f"{k} {v * 1e3:.2f} ms" for k, v in stages.items()
               if k not in _COUNTS and k != "wall"]
    counts = [f"{k} {v:.0f}" for k, v in stages.items() if k in _COUNTS]
    wall = [f"wall {stages['wall'] * 1e3:.2f} ms"] if "wall" in stages else []
    return "; ".join(", ".join(part) for part in (seconds, counts, wall) if part)


def _stage_lines(title: str, stages: dict[str, Any] | None,
                 profiled: dict[str, Any] | None) -> list[str]:
    lines = []
    for label, group in (("", stages), (", profile=True backend", profiled)):
        if not group:
            continue
        if "error" in group:
            lines.append(f"- {title}{label}: not measured ({group['error']})")
            continue
        for call, value in group.items():
            if value:
                lines.append(f"- {title}, {call}{label}: {_stages(value)}")
    if not lines:
        lines.append(f"- {title}: the backend has no stage_seconds(): not reported")
    return lines


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("yes" if ok else "**no**")


def machine_lines(info: dict[str, Any]) -> list[str]:
    """The report's bullets for :func:`machine_info` (GPU, CPU, versions, tree and date)."""
    return [
        f"- GPU: {info.get('gpu', 'none')}; nvidia-smi: {info.get('nvidia_smi', 'not available')}",
        (f"- CPU: {info.get('cpu')}, {info['cpu_count']} cores; Python {info['python']}; "
         f"{info['platform']}"),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        + f"; torch CUDA {info.get('torch_cuda')}",
        (f"- sutra tree: {info.get('git', 'unknown')} per the copy's .git (stale on the device "
         f"machine); source digest {info.get('source_digest', 'unknown')} (`python "
         f"bench/source_digest.py --find {info.get('source_digest', 'DIGEST')}` names the "
         f"commit); date {info['date']}"),
    ]


def report(args, info: dict[str, Any], results: dict[str, Any], device: str) -> str:
    lines = [f"# GPU end to end: sutra ({args.backend}) vs sentence-transformers vs Hugging Face",
             ""]
    if args.backend != "cuda" or device != "cuda":
        lines += [(f"**Smoke run** (sutra backend {args.backend}, torch on {device}, "
                  f"quick={args.quick}): the figures below say nothing about the GPU."), ""]
    lines += machine_lines(info) + [
        f"- model: `{args.model}`; corpus: `{args.corpus}`",
        f"- command: `{info['command']}`",
        (f"- timing: time.perf_counter around each call (torch.cuda.synchronize before and after "
        f"where torch runs), median of {args.repeats} after a warm-up call"),
        "",
    ]
    e2e = results.get("e2e")
    if e2e:
        lines += ["## all-MiniLM-L6-v2 end to end (texts in, numpy out)", "",
                  "| corpus | texts | tokens (cut at 256) | mean tokens | texts cut |",
                  "|---|---|---|---|---|"]
        for key, r in e2e.items():
            lines.append(f"| {CORPUS_TITLES[key]} | {r['texts']:,} | {r['tokens']:,} | "
                         f"{r['mean_tokens']:.1f} | {r['cut_at_256']} |")
        lines += ["", "| corpus | path | texts/s | tokens/s | median ms | runs ms |",
                  "|---|---|---|---|---|---|"]
        for key, r in e2e.items():
            name = CORPUS_TITLES[key]
            b, st, split = r["sutra"]["best"], r["st"]["best"], r["sutra_split"]
            rows = [
                ((f"sutra encode, best (B={_bs(b['batch_size'])}, max_batch_tokens="
                 f"{b['max_batch_tokens']}, {b['precision']})"), b),
            ]
            if "sutra_tokenizers" in r:
                label = ("sutra encode at that configuration, native tokenizer off "
                         "(`tokenizers`, as for RoBERTa and XLM-R)")
                rows.append((label, r["sutra_tokenizers"]))
            rows += [
                (f"sentence-transformers encode, best (bs={st['batch_size']})", st),
                ((f"HF forward only (pre-tokenized, sorted, padded batches of "
                 f"{r['hf']['batch']}, {r['hf']['forward']['attn_implementation']})"),
                 r["hf"]["forward"]),
                ("HF forward + mean pooling on the device", r["hf"]["forward_pool"]),
                ("tokenizers encode_batch alone (truncation 256)", r["tokenizers"]),
                ("tokenizers encode_batch and its ids read out (`[e.ids for e in ...]`)",
                 r["tokenizers"]["with_ids"]),
                ("sutra tokenize alone (tokenizer.encode_arrays)", split["sutra_tokenize"]),
                ("sutra embed_tokens (pre-tokenized, int64 arrays)", split["embed_tokens"]),
            ]
            if "engine" in split:
                rows.append(("sutra engine path after tokenizing (Embedder._embed)",
                             split["engine"]))
            for label, m in rows:
                lines.append(f"| {name} | {label} | {_k(m['texts_per_s'])} | "
                             f"{_k(m['texts_per_s'] * r['mean_tokens'])} | "
                             f"{m['median_s'] * 1e3:.1f} | {_times(m['times_s'])} |")
            g = r["gemm"]
            lines.append(f"| {name} | GEMMs alone of the MiniLM forward over these tokens "
                         f"({g['dtype']} torch.matmul, {g['layers']} layers, "
                         f"{g['tflops']:.1f} TFLOP/s) | {_k(r['texts'] / g['median_s'])} | "
                         f"{_k(g['tokens_per_s'])} | {g['median_s'] * 1e3:.2f} | "
                         f"{_times(g['times_s'])} |")
        lines += ["", "(tokens/s = texts/s x the corpus's mean tokens per text, cut at 256.)", "",
                  "### sutra encode, every configuration", "",
                  "| corpus | batch_size | max_batch_tokens | texts/s | median ms | runs ms |",
                  "|---|---|---|---|---|---|"]
        for key, r in e2e.items():
            for m in r["sutra"]["runs"]:
                lines.append(f"| {CORPUS_TITLES[key]} | {_bs(m['batch_size'])} | "
                             f"{m['max_batch_tokens']} | {_k(m['texts_per_s'])} | "
                             f"{m['median_s'] * 1e3:.1f} | {_times(m['times_s'])} |")
        lines += ["", "### sentence-transformers encode, every batch size", "",
                  "| corpus | batch_size | texts/s | median ms | runs ms |",
                  "|---|---|---|---|---|"]
        for key, r in e2e.items():
            for m in r["st"]["runs"]:
                lines.append(f"| {CORPUS_TITLES[key]} | {m['batch_size']} | "
                             f"{_k(m['texts_per_s'])} | {m['median_s'] * 1e3:.1f} | "
                             f"{_times(m['times_s'])} |")
        lines += ["", ("### sutra's stages (backend.stage_seconds(), one call at the best "
                  "configuration; host and device stages overlap, so they do not add up to "
                  "the call's wall time)"), ""]
        for key, r in e2e.items():
            split = r["sutra_split"]
            lines += _stage_lines(CORPUS_TITLES[key], split["stages"], split["stages_profiled"])
            lines.append(f"- {CORPUS_TITLES[key]}, the backend: {split.get('backend')}")
        lines += ["", "### Ratios (same run)", "",
                  ("| corpus | sutra / HF forward only | sutra / sentence-transformers | "
                  "sutra / tokenizers alone | sutra e2e / sutra embed_tokens | cosine sutra vs "
                  "ST (min, mean) |"), "|---|---|---|---|---|---|"]
        for key, r in e2e.items():
            q, c = r["ratios"], r["sutra_vs_st_cosine"]
            lines.append(f"| {CORPUS_TITLES[key]} | {q['sutra_over_hf_forward']:.2f}x | "
                         f"{q['sutra_over_st']:.2f}x | {q['sutra_over_tokenizers']:.2f}x | "
                         f"{q['sutra_e2e_over_embed_tokens']:.2f}x | {c['min']:.6f}, "
                         f"{c['mean']:.6f} |")
        lines.append("")

    bert = results.get("bert")
    if bert:
        c = bert["config"]
        u, m = bert["uniform"], bert["mixed"]
        lines += [(f"## Random-weight BERT ({c['layers']} layers, hidden {c['hidden_size']}, "
                  f"{c['heads']} heads), tokens/s without tokenization"), "",
                  (f"sutra: `embed_tokens` ({bert['sutra_precision']}, max_batch_tokens "
                  f"{u['sutra']['max_batch_tokens']}); HF: `BertModel` "
                  f"{u['hf']['attn_implementation']} forward on padded batches on the device "
                  f"(mixed: length-sorted). Mixed set: {m['sequences']} sequences, "
                  f"{m['tokens']:,} tokens, mean {m['mean_length']:.1f}, max {m['max_length']} "
                  "(lengths drawn from the passages)."), "",
                  ("| set | sutra tok/s | HF tok/s | GEMMs alone tok/s (TFLOP/s) | sutra / HF | "
                  "sutra / GEMMs | HF / GEMMs |"), "|---|---|---|---|---|---|---|"]
        for key, label in (("uniform", f"uniform L={u['L']}, B={u['B']}"),
                           ("mixed", (f"mixed (sutra B={m['sutra']['batch_size']}, HF "
                                     f"B={m['hf']['batch_size']})"))):
            p = bert[key]
            lines.append(f"| {label} | {_k(p['sutra']['tokens_per_s'])} | "
                         f"{_k(p['hf']['tokens_per_s'])} | {_k(p['gemm']['tokens_per_s'])} "
                         f"({p['gemm']['tflops']:.1f}) | {p['sutra_over_hf']:.2f}x | "
                         f"{p['sutra_over_gemm']:.2f} | {p['hf_over_gemm']:.2f} |")
        if "sutra_untuned" in u:
            t = u["sutra_untuned"]
            lines.append(f"| uniform, sutra with GEMM tuning off | {_k(t['tokens_per_s'])} | "
                         f"| | {t['tokens_per_s'] / u['hf']['tokens_per_s']:.2f}x | | |")
        lines += ["", ("Timed in rounds: every configuration once per round, "
                       f"{len(u['sutra']['times_s'])} rounds after one warm-up round."), "",
                  "| run | median ms | runs ms |", "|---|---|---|",
                  (f"| uniform sutra | {u['sutra']['median_s'] * 1e3:.2f} | "
                  f"{_times(u['sutra']['times_s'])} |"),
                  (f"| uniform HF | {u['hf']['median_s'] * 1e3:.2f} | "
                   f"{_times(u['hf']['times_s'])} |")]
        if "sutra_untuned" in u:
            lines.append(f"| uniform sutra, GEMM tuning off | "
                         f"{u['sutra_untuned']['median_s'] * 1e3:.2f} | "
                         f"{_times(u['sutra_untuned']['times_s'])} |")
        for run in m["sutra_runs"]:
            lines.append(f"| mixed sutra B={run['batch_size']} | {run['median_s'] * 1e3:.2f} | "
                         f"{_times(run['times_s'])} |")
        for run in m["hf_runs"]:
            lines.append(f"| mixed HF B={run['batch_size']} (padded {run['padded_tokens']:,}) | "
                         f"{run['median_s'] * 1e3:.2f} | {_times(run['times_s'])} |")
        for key in ("uniform", "mixed"):
            g = bert[key]["gemm"]
            lines.append(f"| GEMMs alone, {key} ({g['tokens']:,} tokens) | "
                         f"{g['median_s'] * 1e3:.2f} | {_times(g['times_s'])} |")
        lines += ["", "sutra's stages (one call each):", ""]
        lines += _stage_lines("BERT", bert["sutra_stages"], bert["sutra_stages_profiled"])
        lines += [f"- the backend: {bert.get('sutra_backend')}", ""]

    lat = results.get("latency")
    if lat:
        lines += [(f"## Latency: one text, encode([text]), and 32 short texts, x "
                   f"{lat['sutra']['calls']} after a warm-up"), "",
                  (f"Text: \"{lat['text']}\" (the 32: the first short sentences of the "
                   "corpus)"), "",
                  "| path | p50 ms | p99 ms | mean ms | min ms | max ms |",
                  "|---|---|---|---|---|---|"]
        labels = [("sutra", f"sutra {args.backend}"),
                  ("sutra_no_graphs", f"sutra {args.backend}, CUDA graphs off"),
                  ("st", "sentence-transformers"),
                  ("sutra_32", f"32 texts: sutra {args.backend}"),
                  ("sutra_32_no_graphs", f"32 texts: sutra {args.backend}, CUDA graphs off"),
                  ("st_32", "32 texts: sentence-transformers")]
        for key, label in labels:
            if key not in lat:
                continue
            x = lat[key]
            lines.append(f"| {label} | {x['p50_ms']:.3f} | {x['p99_ms']:.3f} | "
                         f"{x['mean_ms']:.3f} | {x['min_ms']:.3f} | {x['max_ms']:.3f} |")
        lines.append("")

    rows = results.get("targets") or []
    if rows:
        lines += ["## The issue's targets", "",
                  "| ratio | measured | must | meets | goal | meets |", "|---|---|---|---|---|---|"]
        for t in rows:
            must = "" if t["must"] is None else f">= {t['must']:.1f}x"
            goal = "" if t["goal"] is None else f">= {t['goal']:.1f}x"
            lines.append(f"| {t['what']} | {t['value']:.2f}x | {must} | "
                         f"{_verdict(t['meets_must'])} | {goal} | {_verdict(t['meets_goal'])} |")
        lines.append("")
    if results.get("plot"):
        lines += [f"![texts/s]({results['plot']})", ""]
    lines += ["## Raw numbers", "", "```json", json.dumps(_jsonable(results), indent=1), "```",
              ""]
    return "\n".join(lines)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items() if k != "lengths"}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def plot(e2e: dict[str, Any], path: Path, title: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", flush=True)
        return False
    keys = list(e2e)
    series = [
        ("sutra encode (e2e)", lambda r: r["sutra"]["best"]["texts_per_s"]),
        ("sentence-transformers encode (e2e)", lambda r: r["st"]["best"]["texts_per_s"]),
        ("HF forward only (pre-tokenized)", lambda r: r["hf"]["forward"]["texts_per_s"]),
        ("tokenizers encode_batch alone", lambda r: r["tokenizers"]["texts_per_s"]),
    ]
    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.8 / len(series)
    x = np.arange(len(keys))
    for i, (label, get) in enumerate(series):
        values = [get(e2e[k]) for k in keys]
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
        ax.bar_label(bars, labels=[_k(v) for v in values], fontsize=8, padding=2)
    ax.set_xticks(x, [f"{CORPUS_TITLES[k]}\n({e2e[k]['texts']:,} texts, "
                      f"{e2e[k]['mean_tokens']:.0f} tokens each)" for k in keys])
    ax.set_yscale("log")
    ax.set_ylabel("texts/s (log scale)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


# -- main -----------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _sizes(text: str) -> list[int | None]:
    """Comma-separated ints; ``default`` is ``None`` (the Embedder's own choice)."""
    return [None if x.strip() == "default" else int(x) for x in text.split(",") if x.strip()]


def _limits(text: str) -> list[int | None]:
    out: list[int | None] = []
    for x in text.split(","):
        x = x.strip()
        if x:
            value = None if x == "default" else int(x)
            if value not in out:
                out.append(value)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None,
                   help="all-MiniLM-L6-v2 folder (default: sutra's cached 'efficient' model)")
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                   help="folder with sentences.json and passages.json (default: %(default)s)")
    p.add_argument("--dump-corpus", type=Path, metavar="DIR",
                   help="write sentences.json and passages.json from WordNet to DIR and exit")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sections", default="e2e,bert,latency",
                   help="comma-separated: e2e, bert, latency (default: %(default)s)")
    p.add_argument("--backend", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes for a smoke test (500 sentences, 100 passages, small BERT)")
    p.add_argument("--batch-sizes", type=_sizes, default=[None, 256, 1024, 4096],
                   help="sutra encode batch sizes; 'default' passes none, the backend's own "
                        "(default: default,256,1024,4096)")
    p.add_argument("--max-batch-tokens", type=_limits, default=[None, 65536],
                   help="sutra max_batch_tokens values; 'default' is EmbedderConfig's "
                        "('auto': the cuda engine sizes its workspace from free memory) "
                        "(default: default,65536)")
    p.add_argument("--st-batch-sizes", type=_ints, default=[128, 256, 512, 1024])
    p.add_argument("--hf-batch", type=int, default=256, help="HF forward batch (default 256)")
    p.add_argument("--bert-sutra-batches", type=_ints, default=[128, 512],
                   help="sutra batch sizes on the mixed BERT set (default: 128,512)")
    p.add_argument("--bert-hf-batches", type=_ints, default=[64, 128, 256, 512],
                   help="HF batch sizes on the mixed BERT set (default: 64,128,256,512)")
    p.add_argument("--latency-calls", type=int, default=LATENCY_CALLS)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench/results")),
                   help="output folder (default: $OUT, else bench/results)")
    p.add_argument("--name", default=None,
                   help="report file stem (default gpu_e2e_h200; gpu_e2e_smoke off the GPU)")
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.sections) - {"e2e", "bert", "latency"}
    if unknown:
        p.error(f"unknown sections: {', '.join(sorted(unknown))}")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.dump_corpus is not None:
        dump_corpus(args.dump_corpus)
        return
    if args.model is None:
        from sutra.models import resolve
        args.model = resolve("efficient", download=False).path
    args.model = Path(args.model)
    if args.quick:
        args.latency_calls = min(args.latency_calls, 30)

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cuda":
        print("torch has no CUDA here: sentence-transformers, the HF forward pass and the GEMMs "
              "run on the CPU in fp32 (a smoke test of the code paths, not a measurement)",
              flush=True)
    if args.backend != "cuda":
        print(f"sutra backend {args.backend!r}: not the GPU path", flush=True)
    clock = Clock(sync=device == "cuda")
    started = time.perf_counter()
    info = machine_info(device)
    info["command"] = shlex.join([Path(sys.executable).name] + sys.argv)
    info["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    name = args.name or ("gpu_e2e_h200" if args.backend == "cuda" and device == "cuda"
                         else "gpu_e2e_smoke")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"device {info.get('gpu', device)}; model {args.model}", flush=True)

    texts = load_corpora(args.corpus, args.quick)
    results: dict[str, Any] = {"machine": info,
                               "args": {k: str(v) if isinstance(v, Path) else v
                                        for k, v in vars(args).items()}}
    passage_lengths = None
    if "e2e" in args.sections:
        results["e2e"] = e2e_section(args, device, clock, texts)
        passage_lengths = results["e2e"]["passages"]["lengths"]
    if "bert" in args.sections:
        if passage_lengths is None:
            passage_lengths = tokenizers_alone(args.model, texts["passages"], clock, 1)["lengths"]
        print("BERT-base", flush=True)
        results["bert"] = bert_section(args, device, clock, passage_lengths)
    if "latency" in args.sections:
        text = texts["short"][0]
        print("latency", flush=True)
        batch = texts["short"][:32]
        lat = results["latency"] = {"text": text}
        lat["sutra"] = sutra_latency(args.model, args.backend, [text], clock, args.latency_calls)
        lat["sutra_32"] = sutra_latency(args.model, args.backend, batch, clock,
                                        args.latency_calls)
        if args.backend == "cuda":
            lat["sutra_no_graphs"] = sutra_latency(args.model, args.backend, [text], clock,
                                                   args.latency_calls, graphs=False)
            lat["sutra_32_no_graphs"] = sutra_latency(args.model, args.backend, batch, clock,
                                                      args.latency_calls, graphs=False)
        lat["st"] = st_latency(args.model, device, [text], clock, args.latency_calls)
        lat["st_32"] = st_latency(args.model, device, batch, clock, args.latency_calls)
        for key in [k for k in lat if k != "text"]:
            x = results["latency"][key]
            print(f"  {key}: p50 {x['p50_ms']:.3f} ms, p99 {x['p99_ms']:.3f} ms", flush=True)
    results["targets"] = targets(results.get("e2e"), results.get("bert"))
    results["wall_s"] = time.perf_counter() - started
    print(f"measured in {results['wall_s']:.0f} s", flush=True)
    for t in results["targets"]:
        print(f"{t['what']}: {t['value']:.2f}x (must {t['must']}, goal {t['goal']})", flush=True)

    if results.get("e2e"):
        png = args.out / "gpu_e2e.png"
        dtype = "fp16" if device == "cuda" else "fp32"
        title = (f"all-MiniLM-L6-v2 {dtype}, {info.get('gpu', device)} (sutra {args.backend}): "
                 "texts/s, tokenization included for the e2e bars")
        if plot(results["e2e"], png, title):
            results["plot"] = png.name
    (args.out / f"{name}.json").write_text(json.dumps(_jsonable(results), indent=1) + "\n")
    md = args.out / f"{name}.md"
    md.write_text(report(args, info, results, device))
    print(f"wrote {md}, {args.out / (name + '.json')}"
          + (f", {args.out / 'gpu_e2e.png'}" if results.get("plot") else ""), flush=True)


if __name__ == "__main__":
    main()
