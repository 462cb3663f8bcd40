"""The cuda engine's correctness: against transformers, sentence-transformers and stored references.

Every comparison has cuda variants (float16, bfloat16; marked ``gpu``, so they skip where no GPU
is visible, see conftest.py) and a cpu variant (the ONNX Runtime backend, float32) against the
same reference with a tight bar, which proves the harness itself on any machine with torch:

    variant        cosine min   cosine mean   |norm / reference norm - 1|   alone vs in a batch
    cpu            0.99999      -             1e-4                          0.99999
    cuda float16   0.999        0.9995        5e-3                          0.9999
    cuda bfloat16  0.995        -             2e-2                          0.9999

(cosine cannot see a wrong scale, e.g. mean pooling divided by the padded length: the norms are
compared too.)

- Random-weight encoders of every supported family (tests/engine_models.py; BERT-base shape on
  cuda only), compared with ``transformers`` on the same weights in float32 on the CPU: id
  sequences of 1 to 512 tokens through ``embed_tokens``, texts outside ASCII and the empty text
  through ``encode``, and a mixed batch of 300 texts, in which some texts must equal themselves
  embedded alone. Needs torch and transformers, and the tokenizer of all-MiniLM-L6-v2.
- all-MiniLM-L6-v2 on tests/fixtures/texts.json against the stored sentence-transformers
  embeddings (tests/fixtures/reference_efficient.npz). The model folder is ``$SUTRA_TEST_MINILM``
  when set (a machine without network or model cache; float16 weights are fine), else the
  ``efficient`` preset from sutra's cache or the package index.
- The pipelines of tests/fixtures/pipelines/ (every Pooling mode, Dense, Normalize, a prompt left
  out of pooling), against sentence-transformers run here on a copy whose encoder has one
  attention head of 32 (the fixtures' heads of 8 are below what the engine runs).
- Configuration on a GPU machine: ``backend="auto"`` picks cuda, ``dtype="float32"`` is refused
  on cuda, ``use_fp16=True`` runs there.

On a GPU machine (no network needed)::

    SUTRA_TEST_MINILM=/path/to/all-MiniLM-L6-v2 python -m pytest tests/test_gpu_engine.py -rs
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sutra
from engine_models import (
    CASES,
    CLS_ID,
    FIRST_WORD_ID,
    SEP_ID,
    SPECIAL_TEXTS,
    VOCAB_SIZE,
    build_model,
    mixed_texts,
    reference_embeddings,
    tokenize,
    write_folder,
)

FIXTURES = Path(__file__).parent / "fixtures"
PIPELINES = FIXTURES / "pipelines"
FIXTURE_TEXTS = json.loads((FIXTURES / "texts.json").read_text(encoding="utf-8"))
MINILM_ENV = "SUTRA_TEST_MINILM"

# Token counts (special tokens included) off every tile size, and the longest input.
LENGTHS = (1, 2, 7, 33, 65, 127, 129, 200, 257, 512)
MIXED_COUNT = 300


@dataclass(frozen=True)
class Variant:
    """A backend and dtype, and the bars its embeddings must meet against the reference."""

    backend: str
    dtype: str | None
    min_cosine: float
    mean_cosine: float | None
    norm_rtol: float
    alone_cosine: float

    @property
    def id(self) -> str:
        return self.backend if self.dtype is None else f"{self.backend}-{self.dtype}"

    def kwargs(self) -> dict:
        """Embedder arguments (the cpu backend takes no dtype)."""
        if self.dtype is None:
            return {"backend": self.backend}
        return {"backend": self.backend, "dtype": self.dtype}


CPU = Variant("cpu", None, 0.99999, None, 1e-4, 0.99999)
FP16 = Variant("cuda", "float16", 0.999, 0.9995, 5e-3, 0.9999)
BF16 = Variant("cuda", "bfloat16", 0.995, None, 2e-2, 0.9999)
VARIANTS = (CPU, FP16, BF16)


def _param(variant: Variant, *values, case_id: str | None = None):
    marks = [pytest.mark.gpu] if variant.backend == "cuda" else []
    return pytest.param(*values, variant, id=case_id or variant.id, marks=marks)


def _variants(*variants: Variant) -> list:
    return [_param(v) for v in variants]


def _model_variants() -> list:
    """(model name, variant) for every random encoder; BERT-base on cuda only."""
    return [_param(v, case.name, case_id=f"{case.name}-{v.id}")
            for case in CASES.values() for v in VARIANTS
            if not (case.gpu_only and v.backend == "cpu")]


# --------------------------------------------------------------------------- comparisons


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _assert_matches(ours: np.ndarray, expected: np.ndarray, variant: Variant, what: str,
                    labels: list[str]) -> None:
    """Every row's cosine and norm against the reference, and the mean cosine, within the
    variant's bars; the message names the worst row."""
    assert ours.shape == expected.shape, f"{what}: shape {ours.shape}, expected {expected.shape}"
    assert ours.dtype == np.float32, f"{what}: dtype {ours.dtype}"
    assert np.isfinite(ours).all(), f"{what}: non-finite values in rows " \
        f"{np.flatnonzero(~np.isfinite(ours).all(1))[:10].tolist()}"
    cos = _cosines(ours, expected)
    ranked = np.where(np.isnan(cos), -np.inf, cos)  # a zero vector is the worst
    worst = int(np.argmin(ranked))
    assert ranked.min() >= variant.min_cosine, (
        f"{what} on {variant.id}: {labels[worst]!r} has cosine {cos[worst]:.6f} < "
        f"{variant.min_cosine}; {int((ranked < variant.min_cosine).sum())} of {len(cos)} below, "
        f"mean {np.nanmean(cos):.6f}")
    if variant.mean_cosine is not None:
        assert cos.mean() >= variant.mean_cosine, (
            f"{what} on {variant.id}: mean cosine {cos.mean():.6f} < {variant.mean_cosine}")
    ratio = np.linalg.norm(ours.astype(np.float64), axis=1) / np.linalg.norm(
        expected.astype(np.float64), axis=1)
    off = int(np.argmax(np.abs(ratio - 1)))
    assert abs(ratio[off] - 1) <= variant.norm_rtol, (
        f"{what} on {variant.id}: {labels[off]!r} has norm {ratio[off]:.6f} x the reference's "
        f"(allowed 1 +- {variant.norm_rtol})")


def _assert_alone_equals_batched(embedder, texts: list[str], batched: np.ndarray,
                                 picks: list[int], variant: Variant, what: str) -> None:
    """Each picked text embedded alone equals its row of the batch's embeddings."""
    alone = np.stack([_encode(embedder, texts[i]) for i in picks])
    cos = _cosines(alone, batched[picks])
    worst = int(np.argmin(np.where(np.isnan(cos), -np.inf, cos)))
    assert np.nan_to_num(cos, nan=-1).min() >= variant.alone_cosine, (
        f"{what} on {variant.id}: text {picks[worst]} {texts[picks[worst]][:50]!r} alone vs in "
        f"the batch of {len(texts)}: cosine {cos[worst]:.6f} < {variant.alone_cosine}")


def _encode(embedder, texts, **kwargs) -> np.ndarray:
    with warnings.catch_warnings():  # over-long fixture texts; the warning has its own test
        warnings.simplefilter("ignore", sutra.LongTextTruncatedWarning)
        return embedder.encode(texts, show_progress_bar=False, **kwargs)


def _spread_picks(lengths: list[int], count: int = 8) -> list[int]:
    """Indices of ``count`` texts spread over the lengths: the shortest, quantiles, the longest."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    spots = np.linspace(0, len(order) - 1, count).round().astype(int)
    return sorted({int(order[s]) for s in spots})


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def minilm_folder(request) -> Path:
    """all-MiniLM-L6-v2: ``$SUTRA_TEST_MINILM``, else the efficient preset (cache or index)."""
    env = os.environ.get(MINILM_ENV)
    if env:
        folder = Path(env)
        if not (folder / "tokenizer.json").is_file() or not (folder / "config.json").is_file():
            pytest.fail(f"{MINILM_ENV}={env} is not an all-MiniLM-L6-v2 model folder (no "
                        "tokenizer.json or config.json there)")
        return folder
    try:
        return Path(request.getfixturevalue("efficient_folder"))
    except (sutra.ModelFetchError, sutra.ModelNotFoundError) as exc:
        pytest.skip(f"all-MiniLM-L6-v2 is not available: {MINILM_ENV} is unset and the efficient "
                    f"preset is neither cached nor fetchable ({exc})")


class _Encoders:
    """The random encoders of one session: folders, torch models, Embedders, references."""

    def __init__(self, root: Path, tokenizer_folder: Path) -> None:
        self.root = root
        self.tokenizer_folder = tokenizer_folder
        self._models: dict = {}
        self._embedders: dict = {}
        self._references: dict = {}

    def model(self, name: str):
        """``(case, folder, torch model)``, built on first use."""
        if name not in self._models:
            case = CASES[name]
            model = build_model(case)
            folder = write_folder(case, model, self.root / name, self.tokenizer_folder)
            self._models[name] = (case, folder, model)
        return self._models[name]

    def embedder(self, name: str, variant: Variant):
        key = (name, variant.id)
        if key not in self._embedders:
            _, folder, _ = self.model(name)
            self._embedders[key] = sutra.Embedder(str(folder), **variant.kwargs())
        return self._embedders[key]

    def reference(self, name: str, what: str, sequences: list[list[int]]) -> np.ndarray:
        key = (name, what)
        if key not in self._references:
            case, _, model = self.model(name)
            self._references[key] = reference_embeddings(model, case, sequences)
        return self._references[key]

    @property
    def tokenizer_json(self) -> Path:
        return self.tokenizer_folder / "tokenizer.json"


@pytest.fixture(scope="session")
def encoders(tmp_path_factory, request) -> _Encoders:
    """Needs torch and transformers (checked first), and all-MiniLM-L6-v2's tokenizer."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return _Encoders(tmp_path_factory.mktemp("encoders"), request.getfixturevalue("minilm_folder"))


@pytest.fixture(scope="session")
def mixed_batch(encoders) -> list[str]:
    """300 texts of mixed lengths (up to 512 tokens), a fifth with non-ASCII text inside."""
    words = sorted({w for text in FIXTURE_TEXTS for w in text.split() if len(w) < 30})
    return mixed_texts(words, encoders.tokenizer_json, MIXED_COUNT, 512, seed=7)


def _token_sequences(seed: int) -> list[list[int]]:
    """One id sequence per LENGTHS entry: [CLS] alone, then [CLS] random word ids [SEP]."""
    rng = np.random.default_rng(seed)
    return [[CLS_ID] if n == 1 else
            [CLS_ID, *rng.integers(FIRST_WORD_ID, VOCAB_SIZE, n - 2).tolist(), SEP_ID]
            for n in LENGTHS]


# --------------------------------------------------------------------------- random encoders


@pytest.mark.parametrize(("name", "variant"), _model_variants())
def test_token_sequences_match_transformers(encoders, name, variant):
    """embed_tokens on 1 to 512 tokens in one call, and the lone [CLS] on its own."""
    sequences = _token_sequences(CASES[name].seed)
    expected = encoders.reference(name, "lengths", sequences)
    embedder = encoders.embedder(name, variant)
    labels = [f"{len(s)} tokens" for s in sequences]
    ours = embedder.embed_tokens(sequences, batch_size=len(sequences))
    _assert_matches(ours, expected, variant, f"{name} embed_tokens", labels)
    single = embedder.embed_tokens([CLS_ID])
    assert single.shape == (expected.shape[1],)
    _assert_matches(single[None], expected[:1], variant, f"{name} embed_tokens([CLS])",
                    ["[CLS] alone"])


@pytest.mark.parametrize(("name", "variant"), _model_variants())
def test_texts_match_transformers(encoders, name, variant):
    """encode() of the empty text, non-ASCII texts and plain ones, in one batch."""
    texts = list(SPECIAL_TEXTS)
    expected = encoders.reference(name, "texts", tokenize(encoders.tokenizer_json, texts))
    ours = _encode(encoders.embedder(name, variant), texts, batch_size=len(texts))
    _assert_matches(ours, expected, variant, f"{name} encode", texts)


@pytest.mark.parametrize(("name", "variant"), _model_variants())
def test_mixed_batch_matches_transformers_and_texts_alone(encoders, mixed_batch, name, variant):
    """300 mixed-length texts in one call against transformers; texts of every length embedded
    alone equal their rows of the batch."""
    sequences = tokenize(encoders.tokenizer_json, mixed_batch)
    assert max(map(len, sequences)) <= 512
    expected = encoders.reference(name, "mixed", sequences)
    embedder = encoders.embedder(name, variant)
    ours = _encode(embedder, mixed_batch, batch_size=128)
    _assert_matches(ours, expected, variant, f"{name} mixed batch", mixed_batch)
    picks = _spread_picks([len(s) for s in sequences])
    _assert_alone_equals_batched(embedder, mixed_batch, ours, picks, variant, name)


# --------------------------------------------------------------------------- all-MiniLM-L6-v2


@pytest.fixture(scope="session")
def minilm_reference() -> np.ndarray:
    with np.load(FIXTURES / "reference_efficient.npz") as reference:
        return reference["embeddings"]


@pytest.mark.parametrize("variant", _variants(CPU, FP16, BF16))
def test_minilm_matches_sentence_transformers(minilm_folder, minilm_reference, variant):
    """The fixture texts (0 to 2,630 characters, truncated at 256 tokens) in one large mixed
    batch against the stored sentence-transformers embeddings; texts of every length alone
    equal their rows of the batch."""
    embedder = sutra.Embedder(str(minilm_folder), **variant.kwargs())
    ours = _encode(embedder, FIXTURE_TEXTS, batch_size=128)
    _assert_matches(ours, minilm_reference, variant, "all-MiniLM-L6-v2", FIXTURE_TEXTS)
    picks = _spread_picks([len(t) for t in FIXTURE_TEXTS])
    _assert_alone_equals_batched(embedder, FIXTURE_TEXTS, ours, picks, variant,
                                 "all-MiniLM-L6-v2")


# --------------------------------------------------------------------------- pipelines

with np.load(PIPELINES / "reference.npz") as _npz:
    PIPELINE_META = json.loads(str(_npz["meta"]))
    PIPELINE_COUNT = int(_npz["count"])
PIPELINE_TEXTS = FIXTURE_TEXTS[:PIPELINE_COUNT]
PIPELINE_CASES = ([(name, None) for name in PIPELINE_META["pipelines"]]
                  + [("mean_no_prompt", "query")])


def _pipeline_params() -> list:
    params = []
    for name, prompt in PIPELINE_CASES:
        label = name if prompt is None else f"{name}.{prompt}"
        params += [_param(v, name, prompt, case_id=f"{label}-{v.id}") for v in (CPU, FP16)]
    return params


@pytest.fixture(scope="session")
def pipeline_copies(tmp_path_factory) -> Path:
    """The pipeline fixture folders, their encoder given one attention head (of 32) instead of
    four of 8: the same tensors, a head size the cuda engine runs."""
    from safetensors.numpy import load_file, save_file

    root = tmp_path_factory.mktemp("pipelines")
    for name in PIPELINE_META["pipelines"]:
        folder = root / name
        shutil.copytree(PIPELINES / name, folder)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        assert config["hidden_size"] == 32
        config["num_attention_heads"] = 1
        (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        # The same tensors under other bytes: the CPU backend keys its cached ONNX graph by the
        # weights' sha256 and not by config.json, so it would reuse the four-head graph.
        weights = folder / "model.safetensors"
        save_file(load_file(str(weights)), str(weights),
                  metadata={"format": "pt", "num_attention_heads": "1"})
    return root


@pytest.fixture(scope="session")
def pipeline_references(pipeline_copies):
    """sentence-transformers (torch, CPU, float32) on a copied pipeline, once per case."""
    cache: dict = {}

    def reference(name: str, prompt_name: str | None) -> np.ndarray:
        if (name, prompt_name) not in cache:
            pytest.importorskip("torch")
            st = pytest.importorskip("sentence_transformers")
            with warnings.catch_warnings():  # third-party notes are not under test here
                warnings.simplefilter("ignore")
                model = st.SentenceTransformer(str(pipeline_copies / name), device="cpu")
                cache[name, prompt_name] = model.encode(
                    PIPELINE_TEXTS, batch_size=PIPELINE_META["batch_size"],
                    prompt_name=prompt_name, convert_to_numpy=True)
        return cache[name, prompt_name]

    return reference


@pytest.mark.parametrize(("name", "prompt_name", "variant"), _pipeline_params())
def test_pipeline_matches_sentence_transformers(pipeline_copies, pipeline_references, name,
                                                prompt_name, variant):
    expected = pipeline_references(name, prompt_name)
    embedder = sutra.Embedder(str(pipeline_copies / name), **variant.kwargs())
    assert embedder.dimensions == expected.shape[1]
    ours = _encode(embedder, PIPELINE_TEXTS, batch_size=PIPELINE_META["batch_size"],
                   prompt_name=prompt_name)
    _assert_matches(ours, expected, variant, f"pipeline {name} (prompt_name={prompt_name!r})",
                    PIPELINE_TEXTS)


# --------------------------------------------------------------------------- configuration


@pytest.fixture(scope="session")
def cpu_mean_pipeline(pipeline_copies) -> np.ndarray:
    """The CPU backend's embeddings of the copied mean pipeline (the reference below)."""
    embedder = sutra.Embedder(str(pipeline_copies / "mean"), backend="cpu")
    return _encode(embedder, PIPELINE_TEXTS, batch_size=32)


@pytest.mark.gpu
def test_auto_backend_is_cuda_on_a_gpu_machine(pipeline_copies, cpu_mean_pipeline):
    embedder = sutra.Embedder(str(pipeline_copies / "mean"), backend="auto")
    assert embedder.backend.name == "cuda"
    # whatever the default dtype, the bfloat16 bar holds
    _assert_matches(_encode(embedder, PIPELINE_TEXTS, batch_size=32), cpu_mean_pipeline, BF16,
                    "backend='auto'", PIPELINE_TEXTS)


@pytest.mark.gpu
def test_float32_dtype_is_refused_on_cuda(pipeline_copies):
    with pytest.raises((ValueError, sutra.BackendUnavailableError), match="dtype"):
        sutra.Embedder(str(pipeline_copies / "mean"), backend="cuda", dtype="float32")


@pytest.mark.gpu
def test_use_fp16_runs_on_cuda(pipeline_copies, cpu_mean_pipeline):
    embedder = sutra.Embedder(str(pipeline_copies / "mean"), backend="cuda", use_fp16=True)
    assert embedder.backend.name == "cuda"
    _assert_matches(_encode(embedder, PIPELINE_TEXTS, batch_size=32), cpu_mean_pipeline, FP16,
                    "use_fp16=True", PIPELINE_TEXTS)


@pytest.mark.gpu
def test_cuda_graph_replays_equal_the_eager_passes(minilm_folder):
    """Small passes replay a CUDA graph captured on the first pass of their shape; the same
    kernels on the same inputs: equal bits to running them one by one, for the capturing pass,
    the replays, and shapes that alternate (a graph per shape)."""
    from sutra.backends.cuda import CudaBackend

    graphed = sutra.Embedder(str(minilm_folder), backend="cuda")
    eager = sutra.Embedder(str(minilm_folder), backend="cuda")
    eager.backend = CudaBackend(eager.model, graph_max_tokens=0)
    batches = [PIPELINE_TEXTS[:1], PIPELINE_TEXTS[:7], PIPELINE_TEXTS[:1], PIPELINE_TEXTS[2:9],
               PIPELINE_TEXTS[:7], PIPELINE_TEXTS]
    for texts in batches * 2:
        got, want = _encode(graphed, texts), _encode(eager, texts)
        assert np.array_equal(got, want), [len(t) for t in texts]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_tuned_gemms_match_sentence_transformers(minilm_folder, minilm_reference, dtype):
    """With every GEMM tuned (gemm_tune_min_rows=1: each size bucket times cuBLASLt's candidates
    and keeps the fastest), the fixture texts still meet the bars against sentence-transformers,
    in passes of several sizes (so several buckets)."""
    from sutra.backends.cuda import CudaBackend

    variant = FP16 if dtype == "float16" else BF16
    embedder = sutra.Embedder(str(minilm_folder), backend="cuda", dtype=dtype)
    embedder.backend = CudaBackend(embedder.model, dtype=dtype, gemm_tune_min_rows=1,
                                   graph_max_tokens=0)  # graphs capture untuned GEMMs
    for batch_size in (128, 16, 3):
        ours = _encode(embedder, FIXTURE_TEXTS, batch_size=batch_size)
        _assert_matches(ours, minilm_reference, variant, f"tuned GEMMs, batch_size={batch_size}",
                        FIXTURE_TEXTS)


@pytest.mark.gpu
def test_late_chunking_on_the_engine_matches_the_cpu_backend(minilm_folder):
    """encode_chunks pools its chunks on the engine (segment_means), in macro windows past 256
    tokens: the chunks agree with the CPU backend's at the fp16 bar."""
    document = " ".join(FIXTURE_TEXTS[:40])
    gpu = sutra.Embedder(str(minilm_folder), backend="cuda")
    cpu = sutra.Embedder(str(minilm_folder), backend="cpu")
    got = gpu.encode_chunks(document, chunk_tokens=48, overlap=8)
    want = cpu.encode_chunks(document, chunk_tokens=48, overlap=8)
    assert [c.tokens for c in got] == [c.tokens for c in want] and len(got) > 6
    cosines = _cosines(np.stack([c.embedding for c in got]), np.stack([c.embedding for c in want]))
    assert cosines.min() >= 0.999 and cosines.mean() >= 0.9995, cosines


@pytest.mark.gpu
def test_segment_means_on_the_device_are_means_of_the_token_states(minilm_folder):
    """The engine's device pooling of spans equals the mean of the token states it returns,
    with the spans in several passes (a 512-token budget) and more spans in one pass than a
    pass has sequence slots (512: pooled in rounds); bad spans are refused by name."""
    from sutra.backends.base import PassLimits, TokenBatch

    embedder = sutra.Embedder(str(minilm_folder), backend="cuda", max_batch_tokens=512)
    rng = np.random.default_rng(3)
    sequences = [[101, *rng.integers(1000, 30000, n - 2), 102] for n in (200, 256, 37, 140)]
    batch = TokenBatch.from_sequences(sequences)
    spans = [(b, begin, begin + width) for b, n in enumerate(map(len, sequences))
             for begin in range(0, n - 1, 1 if b == 1 else 17) for width in (1, 2, 3)
             if begin + width <= n]
    spans += [(1, 0, 256), (2, 5, 37)]
    assert sum(1 for span in spans if span[0] == 1) > 512  # more than one round in its pass
    limits = PassLimits(0, embedder.backend.max_tokens)
    backend = embedder.backend
    means = backend.segment_means(batch, np.asarray(spans, dtype=np.int32), limits)
    states = backend.encode_rows(batch, limits, want_tokens=True).token_states
    want = np.stack([states[batch.cu_seqlens[b] + lo:batch.cu_seqlens[b] + hi].mean(0)
                     for b, lo, hi in spans])
    np.testing.assert_allclose(means, want, rtol=1e-3, atol=1e-3)
    for bad in ((4, 0, 1), (0, 5, 5), (2, 0, 38), (0, -1, 3)):
        with pytest.raises(ValueError, match=r"segment 0 is \(sequence"):
            backend.segment_means(batch, np.asarray([bad], dtype=np.int32), limits)


@pytest.mark.gpu
def test_window_mode_at_a_per_call_length_matches_the_cpu_backend(minilm_folder):
    """long_text="window" with max_seq_length=512 (past the model's own 256) on the engine: each
    long text is several 512-token windows, aggregated as on the CPU backend."""
    long_texts = [" ".join(FIXTURE_TEXTS[k:k + 60]) for k in (0, 30)]
    gpu = sutra.Embedder(str(minilm_folder), backend="cuda")
    cpu = sutra.Embedder(str(minilm_folder), backend="cpu")
    assert len(gpu.tokenizer.encode(long_texts)[0]) > 2 * 512
    got = gpu.encode(long_texts, long_text="window", max_seq_length=512)
    want = cpu.encode(long_texts, long_text="window", max_seq_length=512)
    cosines = _cosines(got, want)
    assert cosines.min() >= 0.999, cosines
    assert _cosines(got, gpu.encode(long_texts, long_text="window")).min() < 0.99999
