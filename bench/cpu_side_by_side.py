"""CPU side by side, interleaved: sutra vs sentence-transformers vs fastembed, all-MiniLM-L6-v2.

pytest-benchmark (bench/test_cpu.py) times each library in its own block of rounds; on a shared
2-core machine a burst of load from elsewhere then lands on one library only. This script runs the
libraries in turn inside every round (sutra, ST, fastembed, sutra, ST, ...), so each ratio compares
runs made seconds apart, and reports the median of the per-round ratios next to the median times.

    SUTRA_BENCH_MODEL=<model folder> SUTRA_BENCH_HF_ONNX=<folder from export_hf_onnx.py> \
    python bench/cpu_side_by_side.py --rounds 7 --markdown bench/results/cpu.md

Needs torch + sentence-transformers and fastembed installed beside sutra; a missing library is
left out of the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from sutra.hardware import cpu_model

sys.path.insert(0, str(Path(__file__).parent))
import corpus  # noqa: E402


def _libraries(folder: str, hf_onnx: str | None, threads: int, batch: int):
    import sutra

    embedder = sutra.Embedder(folder, num_threads=threads, batch_size=batch)
    libs = {"sutra": (lambda texts: embedder.encode(texts, batch_size=batch),
                      lambda text: embedder.encode(text))}
    versions = {"sutra": sutra.__version__}
    try:
        import sentence_transformers
        import torch

        torch.set_num_threads(threads)
        st = sentence_transformers.SentenceTransformer(folder, device="cpu")
        libs["sentence-transformers"] = (
            lambda texts: st.encode(texts, batch_size=batch, convert_to_numpy=True),
            lambda text: st.encode(text),
        )
        versions["sentence-transformers"] = (
            f"{sentence_transformers.__version__} (torch {torch.__version__})"
        )
    except ImportError:
        pass
    if hf_onnx:
        try:
            import fastembed

            fe = fastembed.TextEmbedding("sentence-transformers/all-MiniLM-L6-v2",
                                         specific_model_path=hf_onnx, threads=threads)
            libs["fastembed"] = (
                lambda texts: np.stack(list(fe.embed(texts, batch_size=batch))),
                lambda text: next(iter(fe.embed([text]))),
            )
            versions["fastembed"] = fastembed.__version__
        except ImportError:
            pass
    return libs, versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--latency-calls", type=int, default=200)
    parser.add_argument("--markdown", help="write the table here")
    args = parser.parse_args()

    folder = os.environ.get("SUTRA_BENCH_MODEL")
    if not folder:
        import sutra

        folder = str(sutra.Embedder("efficient").model.path)
    libs, versions = _libraries(folder, os.environ.get("SUTRA_BENCH_HF_ONNX"), args.threads,
                                args.batch_size)
    texts = corpus.sample_sentences(args.texts, seed=0)
    names = list(libs)

    outputs = {name: np.asarray(libs[name][0](texts), dtype=np.float32) for name in names}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in names}
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for name in names:
            start = time.perf_counter()
            libs[name][0](texts)
            times[name].append(time.perf_counter() - start)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    for name in names:
        for text in texts[:20]:
            libs[name][1](text)
    for i in range(args.latency_calls):  # interleaved too
        text = texts[i % len(texts)]
        for name in names:
            start = time.perf_counter()
            libs[name][1](text)
            latencies[name].append(time.perf_counter() - start)
    load_after = os.getloadavg()

    ours = outputs["sutra"]
    lines = [
        "# CPU: sutra vs sentence-transformers vs fastembed (all-MiniLM-L6-v2)",
        "",
        f"- Machine: {cpu_model()}, {os.cpu_count()} logical cores, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after the timed rounds.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- Commit: {_git_commit()}; date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Workload: {len(texts)} WordNet example sentences (bench/corpus.py, seed 0), batch size "
        f"{args.batch_size}, {args.threads} threads for every library, same weights "
        "(fastembed reads the same safetensors exported to ONNX by bench/export_hf_onnx.py). "
        f"{args.rounds} rounds after a warm-up, libraries interleaved inside each round; "
        f"latency: {args.latency_calls} single-sentence calls per library, interleaved.",
        "- Command: `SUTRA_BENCH_MODEL=... SUTRA_BENCH_HF_ONNX=... python bench/cpu_side_by_side.py "
        f"--rounds {args.rounds} --markdown bench/results/cpu.md`",
        "",
        "| library | median time, 1000 texts | sentences/s | sutra speedup (median of per-round "
        "ratios) | single-text p50 | p99 | min cosine vs sutra |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        median = statistics.median(times[name])
        ratio = statistics.median(t / s for t, s in zip(times[name], times["sutra"]))
        lat = np.array(latencies[name]) * 1e3
        theirs = outputs[name]
        cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
        lines.append(
            f"| {name} | {median:.3f} s (min {min(times[name]):.3f}, max {max(times[name]):.3f}) | "
            f"{len(texts) / median:,.0f} | {ratio:.2f}x | {np.percentile(lat, 50):.2f} ms | "
            f"{np.percentile(lat, 99):.2f} ms | {cos.min():.7f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
