"""Native WordPiece tokenizer vs Hugging Face `tokenizers`, same tokenizer.json, same run.

    python bench/tokenizer.py [--preset efficient] [--repeats 7] [--out bench/results/tokenizer_cpu.md]

Both encode the WordNet short sentences and passages (bench/data/wordnet) with the model's
special tokens, with truncation at 256 tokens (what the engines ask for: the native tokenizer
stops reading a text there, tokenizers tokenizes it all and then cuts) and without, single-threaded
and with every core: tokenizers
through `encode_batch` (TOKENIZERS_PARALLELISM=false for one thread, which makes it iterate
serially), the native one through `encode_batch(texts, 256 | None, num_threads=1 | 0)`. Reported: the
median of the repeats after one warm-up, as texts/s and MB/s of UTF-8 input, and the ratio.
The ids of both are checked equal before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import tokenizers
from sutra import native_tokenizer

ROOT = Path(__file__).resolve().parent.parent
MAX_TOKENS = 256


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="efficient")
    parser.add_argument("--tokenizer", default=None,
                        help="a tokenizer.json to use instead of the preset's (machines without "
                             "sutra's model cache)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None, help="markdown file to write the table to")
    args = parser.parse_args()

    if args.tokenizer:
        path = Path(args.tokenizer)
    else:
        from sutra.models import resolve

        path = Path(resolve(args.preset).path) / "tokenizer.json"
    hf = tokenizers.Tokenizer.from_file(str(path))
    hf.no_padding()
    native = native_tokenizer.load(path)
    cores = os.cpu_count() or 1

    def hf_encode(texts, threads, max_tokens):
        if max_tokens is None:
            hf.no_truncation()
        else:
            hf.enable_truncation(max_tokens)
        os.environ["TOKENIZERS_PARALLELISM"] = "false" if threads == 1 else "true"
        return hf.encode_batch(texts, add_special_tokens=True)

    rows = []
    for corpus in ("sentences", "passages"):
        texts = json.loads((ROOT / "bench" / "data" / "wordnet" / f"{corpus}.json").read_text())
        mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
        for limit in (MAX_TOKENS, None):
            ids, cu, _ = native.encode_batch(texts, limit)
            want = hf_encode(texts, cores, limit)
            assert all(ids[cu[i]:cu[i + 1]].tolist() == e.ids for i, e in enumerate(want)), corpus
            for threads in (1, cores):
                t_hf = median_seconds(
                    lambda t=texts, n=threads, m=limit: hf_encode(t, n, m), args.repeats)
                t_nat = median_seconds(
                    lambda t=texts, n=threads, m=limit: native.encode_batch(
                        t, m, num_threads=0 if n > 1 else 1),
                    args.repeats)
                rows.append((corpus, len(texts), mb, limit, threads, t_hf, t_nat))
                print(f"{corpus:9s} max_tokens={limit} threads={threads:2d}  tokenizers "
                      f"{len(texts) / t_hf:10.0f} texts/s {mb / t_hf:6.1f} MB/s   native "
                      f"{len(texts) / t_nat:10.0f} texts/s {mb / t_nat:6.1f} MB/s   "
                      f"x{t_hf / t_nat:.2f}", flush=True)
    os.environ.pop("TOKENIZERS_PARALLELISM", None)

    command = "python " + " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    lines = [
        "# Native WordPiece tokenizer vs Hugging Face tokenizers (CPU)",
        "",
        f"- Machine: {cpu_name()}, {cores} logical cores, {platform.system()} {platform.release()}",
        (f"- Tokenizer: {args.tokenizer or args.preset} ({path.parent.name}/tokenizer.json); "
         f"tokenizers {tokenizers.__version__}; Python {platform.python_version()}"),
        f"- Command: `{command}` (median of {args.repeats} after a warm-up; ids checked equal first)",
        "",
        ("| corpus | texts | MB | max_tokens | threads | tokenizers texts/s | tokenizers MB/s "
         "| native texts/s | native MB/s | native / tokenizers |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for corpus, n, mb, limit, threads, t_hf, t_nat in rows:
        lines.append(f"| {corpus} | {n} | {mb:.2f} | {limit or 'none'} | {threads} "
                     f"| {n / t_hf:,.0f} | {mb / t_hf:.1f} | {n / t_nat:,.0f} | {mb / t_nat:.1f} "
                     f"| {t_hf / t_nat:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
