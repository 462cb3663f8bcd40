"""Packed (padding-free) vs padded forward passes on CPU: milliseconds of compute per text.

One single-threaded ONNX Runtime session per graph (sutra's padded graph and its packed twin, the
same weights), 1000 WordNet example sentences tokenized once, timed without tokenization:

- random batches (the order requests reach a server) of 16, 32 and 64 sentences: padded to the
  longest, or packed with attention rows laid out three ways: one row of every token (attention
  over ``T**2`` pairs: what the packed graph computed before attention rows), one row per
  sequence, and rows planned by ``sutra.packing.plan_rows`` (sequences binned into rows as long
  as the longest);
- batches of 32 sorted by length (what ``Embedder.encode`` forms): padded vs planned rows.

Every packed layout is checked against the padded graph first. Best of ``--repeats`` rounds,
cases interleaved within each round.

    python bench/packed_cpu.py --output bench/results/packed_cpu.md
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import corpus  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="efficient")
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", help="write the markdown report here")
    args = parser.parse_args()

    import onnxruntime as ort

    import sutra
    from sutra.backends.onnxruntime import built_graph_path
    from sutra.packing import plan_rows

    embedder = sutra.Embedder(args.model)
    ids = embedder.tokenizer.encode(corpus.examples(args.texts))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1

    def session(path: Path):
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    padded = session(built_graph_path(embedder.model))
    packed = session(built_graph_path(embedder.model, layout="packed"))

    def run_padded(batch: list[int]) -> np.ndarray:
        rows = [ids[i] for i in batch]
        width = max(map(len, rows))
        input_ids = np.zeros((len(rows), width), np.int64)
        mask = np.zeros_like(input_ids)
        for r, seq in enumerate(rows):
            input_ids[r, :len(seq)] = seq
            mask[r, :len(seq)] = 1
        return padded.run(["sentence_embedding"],
                          {"input_ids": input_ids, "attention_mask": mask})[0]

    def run_packed(batch: list[int], layout: str) -> tuple[np.ndarray, list[int]]:
        lengths = [len(ids[i]) for i in batch]
        if layout == "planned rows":
            order, row_lengths = plan_rows(lengths)
        else:
            order = list(range(len(batch)))
            row_lengths = [sum(lengths)] if layout == "one row" else lengths
        seqs = [ids[batch[k]] for k in order]
        cu_seqlens = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
        cu_rowlens = np.concatenate([[0], np.cumsum(row_lengths)]).astype(np.int64)
        input_ids = np.fromiter((t for s in seqs for t in s), np.int64, count=int(cu_seqlens[-1]))
        out = packed.run(["sentence_embedding"], {"input_ids": input_ids, "cu_seqlens": cu_seqlens,
                                                  "cu_rowlens": cu_rowlens})[0]
        return out, order

    layouts = ("one row", "row per sequence", "planned rows")
    shuffled = list(range(len(ids)))
    random.Random(0).shuffle(shuffled)
    by_length = sorted(range(len(ids)), key=lambda i: -len(ids[i]))

    def batches(order: list[int], size: int) -> list[list[int]]:
        return [order[i:i + size] for i in range(0, len(order), size)]

    # Agreement first: every packed layout equals the padded graph on one random batch.
    check = shuffled[:16]
    reference = run_padded(check)
    worst = 0.0
    for layout in layouts:
        out, order = run_packed(check, layout)
        got = np.empty_like(out)
        got[order] = out
        worst = max(worst, float(np.abs(got - reference).max()))
    assert worst < 1e-5, worst

    cases: list[tuple[str, str, object]] = []
    for size in (16, 32, 64):
        for layout in layouts:
            cases.append((f"random, {size}", f"packed, {layout}",
                          lambda s=size, lay=layout: [run_packed(b, lay) for b in batches(shuffled, s)]))
        cases.append((f"random, {size}", "padded",
                      lambda s=size: [run_padded(b) for b in batches(shuffled, s)]))
    cases.append(("sorted by length, 32", "padded",
                  lambda: [run_padded(b) for b in batches(by_length, 32)]))
    cases.append(("sorted by length, 32", "packed, planned rows",
                  lambda: [run_packed(b, "planned rows") for b in batches(by_length, 32)]))

    for _, _, fn in cases:  # warm-up
        fn()
    best = {(batch, layout): float("inf") for batch, layout, _ in cases}
    for _ in range(args.repeats):
        for batch, layout, fn in cases:
            start = time.perf_counter()
            fn()
            best[(batch, layout)] = min(best[(batch, layout)], time.perf_counter() - start)

    tokens = sum(map(len, ids))
    lines = [
        "# Packed vs padded forward passes on CPU (all-MiniLM-L6-v2)",
        "",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores, "
        f"Python {platform.python_version()}, ONNX Runtime {ort.__version__}",
        f"- Command: `python bench/packed_cpu.py {' '.join(sys.argv[1:])}`",
        f"- {len(ids)} WordNet example sentences (bench/corpus.py), {tokens / len(ids):.1f} tokens "
        "each on average; one single-threaded ONNX Runtime session per graph; tokenization not "
        f"timed; best of {args.repeats} interleaved rounds. Packed layouts checked against the "
        f"padded graph first (max abs difference {worst:.1e}).",
        "",
        "| batches | layout | ms per text | vs padded |",
        "|---|---|---|---|",
    ]
    for batch, layout, _ in cases:
        ms = best[(batch, layout)] / len(ids) * 1e3
        base = best[(batch, "padded")] / len(ids) * 1e3
        lines.append(f"| {batch} | {layout} | {ms:.3f} | {base / ms:.2f}x |")
    report = "\n".join(lines) + "\n"
    print(report)
    if args.output:
        Path(args.output).write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
