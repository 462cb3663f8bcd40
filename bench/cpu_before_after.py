"""Two builds of sutra side by side on the CPU: encode() throughput, interleaved, and start-up.

Each build lives in its own Python environment (say, main before a change and after it). One
worker process per environment loads ``Embedder`` once and waits; the rounds alternate between
them (A, B, A, B, ...), so a burst of load from elsewhere on a shared machine lands on both.
Start-up is ``import sutra`` + ``Embedder()`` + the first ``encode()`` in a fresh process, on a
warm cache, alternated too.

    python bench/cpu_before_after.py --before /path/old/bin/python --after /path/new/bin/python \\
        --rounds 9 --markdown bench/results/cpu_before_after.md

Both environments must have the model in sutra's cache (``sutra models pull efficient``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LATENCY_CALLS = 100  # single-text calls per latency round
STARTUP = ("import time; t = time.perf_counter(); import sutra; e = sutra.Embedder({model!r}); "
           "e.encode('warm cache, first embedding'); print(time.perf_counter() - t)")


def worker(model: str, texts: int, batch: int, threads: int) -> None:
    """Child side: load once, then one timed encode() per line read from stdin."""
    sys.path.insert(0, str(HERE))
    import corpus
    import sutra

    embedder = sutra.Embedder(model, num_threads=threads, batch_size=batch)
    sentences = corpus.sample_sentences(texts, seed=0)
    first = embedder.encode(sentences)  # warm-up
    print(json.dumps({"version": sutra.__version__, "file": sutra.__file__,
                      "checksum": float(abs(first).sum())}), flush=True)
    for command in sys.stdin:
        if command.strip() == "one":  # single-text latency: each sentence alone, in turn
            laps = []
            for text in sentences[:LATENCY_CALLS]:
                start = time.perf_counter()
                embedder.encode(text)
                laps.append(time.perf_counter() - start)
            print(json.dumps(laps), flush=True)
            continue
        start = time.perf_counter()
        embedder.encode(sentences)
        print(time.perf_counter() - start, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", help="python of the 'before' environment")
    parser.add_argument("--after", help="python of the 'after' environment")
    parser.add_argument("--model", default="efficient")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--startups", type=int, default=5)
    parser.add_argument("--markdown")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.model, args.texts, args.batch_size, args.threads)
        return
    if not (args.before and args.after):
        parser.error("--before and --after are required")

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    builds = {"before": args.before, "after": args.after}
    startup: dict[str, list[float]] = {name: [] for name in builds}
    for round_ in range(args.startups + 1):  # the first round, discarded, fills the caches
        for name, python in builds.items():
            out = subprocess.run([python, "-c", STARTUP.format(model=args.model)], env=env,
                                 capture_output=True, text=True, check=True, cwd="/")
            if round_:
                startup[name].append(float(out.stdout.strip().splitlines()[-1]))

    workers = {}
    info = {}
    for name, python in builds.items():
        workers[name] = subprocess.Popen(
            [python, str(Path(__file__).resolve()), "--worker", "--model", args.model,
             "--texts", str(args.texts), "--batch-size", str(args.batch_size),
             "--threads", str(args.threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd="/")
        info[name] = json.loads(workers[name].stdout.readline())
    times: dict[str, list[float]] = {name: [] for name in builds}
    load_before = os.getloadavg()[0]
    for _ in range(args.rounds):
        for name, proc in workers.items():  # only one computes at a time
            proc.stdin.write("go\n")
            proc.stdin.flush()
            times[name].append(float(proc.stdout.readline()))
    latency: dict[str, list[float]] = {name: [] for name in builds}
    for _ in range(max(1, args.rounds // 3)):
        for name, proc in workers.items():
            proc.stdin.write("one\n")
            proc.stdin.flush()
            latency[name] += json.loads(proc.stdout.readline())
    load_after = os.getloadavg()[0]
    for proc in workers.values():
        proc.stdin.close()
        proc.wait()

    ratios = [b / a for a, b in zip(times["after"], times["before"])]
    lines = [
        "| build | median encode() of the texts | sentences/s | after's speedup (median of "
        "per-round ratios) | single-text p50 / p99 | start-up: import + Embedder() + first "
        "embedding (median, min-max) |",
        "|---|---|---|---|---|---|",
    ]
    for name in builds:
        median = statistics.median(times[name])
        lines.append(
            f"| {name} ({info[name]['file'].rsplit('/sutra/', 1)[0]}) | {median:.3f} s (min "
            f"{min(times[name]):.3f}, max {max(times[name]):.3f}) | {args.texts / median:,.0f} | "
            + (f"{statistics.median(ratios):.2f}x" if name == "after" else "1.00x")
            + f" | {1e3 * statistics.median(latency[name]):.2f} / "
              f"{1e3 * sorted(latency[name])[int(0.99 * (len(latency[name]) - 1))]:.2f} ms"
            + f" | {statistics.median(startup[name]):.2f} s ({min(startup[name]):.2f}-"
              f"{max(startup[name]):.2f}) |")
    lines.append("")
    lines.append(f"Rounds: {args.rounds} per build, alternated; {args.texts} WordNet sentences "
                 f"(bench/corpus.py, seed 0), batch {args.batch_size}, {args.threads} threads; "
                 f"load average {load_before:.2f} before, {load_after:.2f} after. Checksums of the "
                 f"first outputs: {info['before']['checksum']:.4f} / "
                 f"{info['after']['checksum']:.4f}.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
