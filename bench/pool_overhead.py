"""The scheduler's cost on one device: ``Embedder(backend=B)`` against ``Embedder(backend=B,
devices=[0])`` (one worker) and ``devices=[0]`` with two workers per device, on the WordNet
corpora of bench/gpu_e2e.py (20,000 sentences, 4,000 passages), tokenization included.

    python bench/pool_overhead.py --model MODEL_FOLDER [--corpus bench/data/wordnet]
                                  [--backend cuda|cpu] [--quick] [--out DIR]

Interleaved medians (every layout timed once per round, 5 rounds after a warm-up), ratios to the
direct Embedder measured in the same run, and the largest difference of the vectors against it
(the pool's jobs are other passes, so the GEMMs may pick other algorithms: equal to fp16
rounding, not bit for bit). Writes pool_overhead.md to --out (default bench/results)."""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gpu_e2e import load_corpora, machine_info, machine_lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--corpus", type=Path, default=HERE / "data" / "wordnet")
    parser.add_argument("--backend", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--quick", action="store_true", help="500 sentences, 100 passages")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    info = machine_info("cuda" if args.backend == "cuda" else "cpu")
    info["date"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    import sutra

    corpora = load_corpora(args.corpus, args.quick)
    layouts = {
        "Embedder (direct)": {},
        "devices=[0], 1 worker": {"devices": [0]},
        "devices=[0], 2 workers": {"devices": [0],
                                   "pool_options": {"workers_per_device": 2}},
    }
    embedders = {name: sutra.Embedder(str(args.model), backend=args.backend, **kw)
                 for name, kw in layouts.items()}
    rows = []
    for corpus_name, texts in corpora.items():
        reference = embedders["Embedder (direct)"].encode(texts)
        times: dict[str, list[float]] = {name: [] for name in embedders}
        differences = {}
        for name, embedder in embedders.items():  # warm-up, and the vectors compared
            got = embedder.encode(texts)
            differences[name] = float(np.abs(got - reference).max())
        for _ in range(args.rounds):
            for name, embedder in embedders.items():
                start = time.perf_counter()
                embedder.encode(texts)
                times[name].append(time.perf_counter() - start)
        direct = statistics.median(times["Embedder (direct)"])
        for name in embedders:
            median = statistics.median(times[name])
            rows.append((corpus_name, name, len(texts) / median, direct / median,
                         differences[name], times[name]))
            print(f"{corpus_name}: {name}: {len(texts) / median:,.0f} texts/s "
                  f"({direct / median:.3f}x direct), max |diff| {differences[name]:.2e}",
                  flush=True)
    for embedder in embedders.values():
        close = getattr(embedder.backend, "close", None)
        if close is not None:
            close()
    lines = [f"# The scheduler on one device ({args.backend})", "", *machine_lines(info),
             (f"- model: {args.model.name}; corpora: {args.corpus} ("
              + ", ".join(f"{len(t)} {n}" for n, t in corpora.items()) + ")"),
             (f"- command: `python bench/pool_overhead.py --model {args.model} --backend "
              f"{args.backend}{' --quick' if args.quick else ''}`; interleaved, median of "
              f"{args.rounds} rounds after a warm-up"), "",
             "| corpus | layout | texts/s | vs direct | max abs diff vs direct | runs (s) |",
             "|---|---|---|---|---|---|"]
    for corpus_name, name, rate, ratio, diff, runs in rows:
        lines.append(f"| {corpus_name} | {name} | {rate:,.0f} | {ratio:.3f}x | {diff:.2e} | "
                     f"{', '.join(f'{t:.3f}' for t in runs)} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"pool_overhead_{args.backend}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
