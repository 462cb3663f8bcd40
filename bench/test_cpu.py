"""CPU benchmark: sutra vs sentence-transformers (torch CPU) vs fastembed, all-MiniLM-L6-v2.

All three load the same weights from local folders and run with the same number of threads:
1000 WordNet example sentences (bench/corpus.py) at batch size 32 for throughput, and one sentence
per call (rotating through 200) for single-text latency. Run in one process so the machine state
is shared, then render the table with bench/report_cpu.py:

    SUTRA_BENCH_MODEL=<all-MiniLM-L6-v2 folder> SUTRA_BENCH_HF_ONNX=<folder with model.onnx> \
    pytest bench/test_cpu.py --benchmark-json=bench/results/cpu.json
    python bench/report_cpu.py bench/results/cpu.json > bench/results/cpu.md

SUTRA_BENCH_HF_ONNX is the model exported by bench/export_hf_onnx.py (the form fastembed reads).
Without a model folder the default preset is used; libraries that are not installed are skipped.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import corpus  # noqa: E402

THREADS = int(os.environ.get("SUTRA_BENCH_THREADS", os.cpu_count() or 1))
BATCH = 32
N_TEXTS = 1000
ROUNDS = int(os.environ.get("SUTRA_BENCH_ROUNDS", "5"))
LATENCY_CALLS = 200

TEXTS = corpus.sample_sentences(N_TEXTS, seed=0)
LATENCY_TEXTS = TEXTS[:LATENCY_CALLS]
_outputs: dict[str, np.ndarray] = {}


def _model_folder() -> str:
    folder = os.environ.get("SUTRA_BENCH_MODEL")
    if folder:
        return folder
    import sutra

    return str(sutra.Embedder("efficient").model.path)


@pytest.fixture(scope="module")
def sutra_embedder():
    import sutra

    return sutra.Embedder(_model_folder(), num_threads=THREADS, batch_size=BATCH)


@pytest.fixture(scope="module")
def st_model():
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("sentence_transformers")
    torch.set_num_threads(THREADS)
    return st.SentenceTransformer(_model_folder(), device="cpu")


@pytest.fixture(scope="module")
def fastembed_model():
    fastembed = pytest.importorskip("fastembed")
    folder = os.environ.get("SUTRA_BENCH_HF_ONNX")
    if not folder:
        pytest.skip("set SUTRA_BENCH_HF_ONNX to a folder made by bench/export_hf_onnx.py")
    return fastembed.TextEmbedding(
        "sentence-transformers/all-MiniLM-L6-v2", specific_model_path=folder, threads=THREADS
    )


def _throughput(benchmark, name, encode):
    benchmark.group = f"throughput: {N_TEXTS} sentences, batch {BATCH}, {THREADS} threads"
    benchmark.extra_info.update(texts=N_TEXTS, batch_size=BATCH, threads=THREADS, library=name)
    result = benchmark.pedantic(encode, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    _outputs[name] = np.asarray(result, dtype=np.float32)


def _latency(benchmark, name, encode_one):
    benchmark.group = f"latency: one sentence per call, {THREADS} threads"
    benchmark.extra_info.update(library=name, threads=THREADS)
    texts = itertools.cycle(LATENCY_TEXTS)
    for _ in range(20):  # warm-up
        encode_one(next(texts))
    benchmark.pedantic(lambda: encode_one(next(texts)), rounds=LATENCY_CALLS, iterations=1)


def test_throughput_sutra(benchmark, sutra_embedder):
    _throughput(benchmark, "sutra", lambda: sutra_embedder.encode(TEXTS, batch_size=BATCH))


def test_throughput_sentence_transformers(benchmark, st_model):
    _throughput(benchmark, "sentence-transformers",
                lambda: st_model.encode(TEXTS, batch_size=BATCH, convert_to_numpy=True))


def test_throughput_fastembed(benchmark, fastembed_model):
    _throughput(benchmark, "fastembed",
                lambda: np.stack(list(fastembed_model.embed(TEXTS, batch_size=BATCH))))


def test_latency_sutra(benchmark, sutra_embedder):
    _latency(benchmark, "sutra", sutra_embedder.encode)


def test_latency_sentence_transformers(benchmark, st_model):
    _latency(benchmark, "sentence-transformers", lambda t: st_model.encode(t))


def test_latency_fastembed(benchmark, fastembed_model):
    _latency(benchmark, "fastembed", lambda t: next(iter(fastembed_model.embed([t]))))


def test_agreement(benchmark):
    """Not a timing: records the cosine between each library's vectors and sutra's."""
    if "sutra" not in _outputs or len(_outputs) < 2:
        pytest.skip("needs the throughput runs")
    ours = _outputs["sutra"]
    agreement = {}
    for name, theirs in _outputs.items():
        cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
        agreement[name] = float(cos.min())
    benchmark.group = "agreement"
    benchmark.extra_info["min_cosine_vs_sutra"] = agreement
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    assert min(agreement.values()) > 0.9999
