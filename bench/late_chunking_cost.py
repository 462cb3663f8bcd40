"""What late chunking costs against a plain embedding, on the GPU engine: random-weight
ModernBERT-base (tests/engine_models.py), one document of about 8192 tokens, float16.

    python bench/late_chunking_cost.py [--out DIR]

Times (median of 7 after a warm-up) ``encode([document])``, ``encode_chunks(document,
chunk_tokens=256)`` (chunks pooled on the device, only the means copied back) and, for what the
device pooling saves, ``encode_rows(want_tokens=True)`` (every token's state copied back and
converted, what late chunking would otherwise need). Writes late_chunking_cost.md to --out
(default bench/results)."""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from engine_models import (
    MODERNBERT_CASES,
    MODERNBERT_TOKENIZER,
    build_model,
    corpus_texts,
    write_folder,
)


def median_ms(fn, repeats: int = 7) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    import sutra
    import torch
    from sutra.backends.base import PassLimits, TokenBatch

    case = MODERNBERT_CASES["modernbert-base"]
    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(case, "sdpa", "cuda")
        folder = write_folder(case, model, Path(tmp) / "mb", MODERNBERT_TOKENIZER)
        del model
        torch.cuda.empty_cache()
        embedder = sutra.Embedder(str(folder), backend="cuda", dtype="float16")
        (document,) = corpus_texts(MODERNBERT_TOKENIZER / "tokenizer.json", [8192], seed=1)
        ids = embedder.tokenizer.encode([document])[0]
        batch = TokenBatch.from_sequences([ids])
        limits = PassLimits(0, embedder.backend.max_tokens)
        chunks = embedder.encode_chunks(document, chunk_tokens=256)
        rows = {
            "encode([document])": median_ms(lambda: embedder.encode([document])),
            f"encode_chunks(document, chunk_tokens=256): {len(chunks)} chunks": (
                median_ms(lambda: embedder.encode_chunks(document, chunk_tokens=256))),
            "encode_rows(want_tokens=True): every token state copied back": (
                median_ms(lambda: embedder.backend.encode_rows(batch, limits, want_tokens=True))),
        }
    lines = ["# Late chunking's cost on the GPU engine", "",
             (f"- GPU: {torch.cuda.get_device_name()}; Python {platform.python_version()}, "
              f"torch {torch.__version__}; random-weight modernbert-base, float16"),
             f"- document: {len(ids)} tokens (tests/fixtures/wordnet_sample.txt lines)",
             "- command: `python bench/late_chunking_cost.py`; median of 7 after a warm-up", "",
             "| call | ms | vs encode |", "|---|---|---|"]
    base = rows["encode([document])"]
    lines += [f"| {name} | {ms:.2f} | {ms / base:.2f}x |" for name, ms in rows.items()]
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "late_chunking_cost.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
