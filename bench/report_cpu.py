"""Render bench/test_cpu.py's pytest-benchmark JSON as the markdown table in bench/results/cpu.md.

    python bench/report_cpu.py bench/results/cpu.json > bench/results/cpu.md

Ratios are against the other libraries measured in the same run (same process, same machine).
"""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    data = json.loads(open(path, encoding="utf-8").read())
    machine = data["machine_info"]
    runs = {}
    agreement = {}
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        if "min_cosine_vs_sutra" in info:
            agreement = info["min_cosine_vs_sutra"]
            continue
        kind = "throughput" if bench["name"].startswith("test_throughput") else "latency"
        runs[(kind, info["library"])] = (bench["stats"], info)

    libraries = [lib for lib in ("sutra", "sentence-transformers", "fastembed")
                 if ("throughput", lib) in runs]
    sutra_tp = runs[("throughput", "sutra")][0]["median"]
    sutra_lat = runs.get(("latency", "sutra"), ({"median": float("nan")},))[0]["median"]
    cpu = machine.get("cpu", {})
    print("# CPU: sutra vs sentence-transformers vs fastembed (all-MiniLM-L6-v2)\n")
    print(f"- Machine: {cpu.get('brand_raw', machine.get('processor', '?'))}, "
          f"{cpu.get('count', '?')} logical cores, {machine.get('system')} {machine.get('release')}, "
          f"Python {machine.get('python_version')}")
    print(f"- Run: {data.get('datetime', '?')}, commit {data.get('commit_info', {}).get('id', '?')[:10]}")
    first = runs[("throughput", "sutra")][1]
    print(f"- Workload: {first['texts']} WordNet example sentences (bench/corpus.py, seed 0), "
          f"batch size {first['batch_size']}, {first['threads']} threads for every library; "
          "median of the timed rounds after one warm-up round. Latency: one sentence per call, "
          "200 calls rotating through 200 sentences after 20 warm-up calls.")
    print("- Command: `SUTRA_BENCH_MODEL=... SUTRA_BENCH_HF_ONNX=... pytest bench/test_cpu.py "
          "--benchmark-json=bench/results/cpu.json && python bench/report_cpu.py "
          "bench/results/cpu.json > bench/results/cpu.md`\n")
    print("| library | throughput (sentences/s) | time for 1000 | sutra speedup | "
          "single-text p50 latency | p50 ratio (theirs / sutra) | min cosine vs sutra |")
    print("|---|---|---|---|---|---|---|")
    for lib in libraries:
        stats, info = runs[("throughput", lib)]
        n = info["texts"]
        lat = runs.get(("latency", lib), ({"median": float("nan")},))[0]["median"]
        cos = agreement.get(lib)
        print(f"| {lib} | {n / stats['median']:,.0f} | {stats['median']:.3f} s "
              f"(IQR {stats['iqr']:.3f}) | {stats['median'] / sutra_tp:.2f}x | "
              f"{lat * 1e3:.2f} ms | {lat / sutra_lat:.2f}x | "
              f"{'' if cos is None else f'{cos:.7f}'} |")
    print()


if __name__ == "__main__":
    main(sys.argv[1])
