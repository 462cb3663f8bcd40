"""Flash attention forward: sutra vs torch SDPA (FLASH and CUDNN backends), same run, same GPU.

TFLOP/s = 4 * B * H * L^2 * d / time (non-causal), 32768 tokens per call (B = 32768 / L),
hidden = 2048 (H = 2048 / d). CUDA events, warm-up, median of --repeats timed calls, inputs
rotated over --sets buffers (larger than L2) so every call starts cold. The dense table
interleaves the three implementations call by call (rotating which goes first), so clock and
thermal drift during the run hit every column alike.

    python bench/attention.py [--lengths 512 1024 ...] [--window] [--bias] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from sutra.ops import flash_attention


# A spin kernel queued before each timed call keeps the GPU busy while Python launches the call,
# so the events bracket device time only (nvbench's "blocking kernel"). Without it, a call that
# finds the GPU idle also times its own host-side launch work, tens of microseconds here, which
# is several percent of a 1 ms kernel. ~1 ms at the H100's clocks; --expose-launch turns it off.
SPIN_CYCLES = 2_000_000
HIDE_LAUNCH = True


def _timed(fn, args, hide_launch=None):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    if HIDE_LAUNCH if hide_launch is None else hide_launch:
        torch.cuda._sleep(SPIN_CYCLES)
    start.record()
    fn(*args)
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def time_ms(fn, sets, repeats, warmup=3, hide_launch=None):
    for i in range(warmup):
        fn(*sets[i % len(sets)])
    return statistics.median(_timed(fn, sets[i % len(sets)], hide_launch) for i in range(repeats))


def time_ms_interleaved(fns, sets, repeats, warmup=3):
    """Median ms per fn; timed calls alternate between the fns, the first one rotating."""
    for fn in fns:
        for i in range(warmup):
            fn(*sets[i % len(sets)])
    times = [[] for _ in fns]
    for i in range(repeats):
        args = sets[i % len(sets)]
        for j in [(i + r) % len(fns) for r in range(len(fns))]:
            times[j].append(_timed(fns[j], args))
    return [statistics.median(t) for t in times]


def sdpa(backend):
    def run(q, k, v):  # q, k, v [B, L, H, d] -> SDPA's [B, H, L, d] views (no copy)
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                  v.transpose(1, 2))
    return run


def dense(args, rows):
    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        for d in args.head_dims:
            heads = 2048 // d
            for length in args.lengths:
                batch = max(1, args.tokens // length)
                sets = [tuple(torch.randn(batch, length, heads, d, dtype=dtype, device="cuda")
                              for _ in range(3)) for _ in range(args.sets)]
                flops = 4 * batch * heads * length * length * d
                res, runnable = {}, {}
                for name, fn in (("sutra", lambda q, k, v: flash_attention(q, k, v)),
                                 ("sutra_sm80",
                                  lambda q, k, v: flash_attention(q, k, v, path="sm80")),
                                 ("sdpa_flash", sdpa(SDPBackend.FLASH_ATTENTION)),
                                 ("sdpa_cudnn", sdpa(SDPBackend.CUDNN_ATTENTION))):
                    try:
                        fn(*sets[0])
                        runnable[name] = fn
                    except RuntimeError as exc:  # a backend that refuses this shape
                        print(f"# {name} failed: {exc}".splitlines()[0])
                        res[name] = float("nan")
                ms = time_ms_interleaved(list(runnable.values()), sets, args.repeats)
                res.update({name: flops / t / 1e9 for name, t in zip(runnable, ms)})
                row = (dtype_name, d, length, batch, heads, res["sutra"], res["sutra_sm80"],
                       res["sdpa_flash"], res["sdpa_cudnn"], res["sutra"] / res["sdpa_flash"],
                       res["sutra"] / res["sdpa_cudnn"], res["sutra_sm80"] / res["sdpa_cudnn"])
                rows.append(row)
                print(ROW % row, flush=True)
                del sets
                torch.cuda.empty_cache()


DENSE_HEADER = ("| dtype | d | L | B | H | sutra TFLOP/s (auto) | sutra sm80 | SDPA-flash | "
                "SDPA-cuDNN | auto vs flash | auto vs cuDNN | sm80 vs cuDNN |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|---|")
ROW = "| %s | %d | %d | %d | %d | %.0f | %.0f | %.0f | %.0f | %.2fx | %.2fx | %.2fx |"


def time_ms_graph(fn, sets, repeats, warmup=3):
    """Median ms per call of fn replayed from one CUDA graph holding one call per input set.

    This is the device time of the kernels alone: a short kernel timed call by call from Python
    also counts the host work of launching it, which here is as long as the kernel itself.
    """
    for i in range(warmup):
        fn(*sets[i % len(sets)])
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for args in sets:
            fn(*args)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / len(sets))
    return statistics.median(times)


WINDOW_HEADER = ("| window | L | B | sutra ms (auto) | sm80 ms | sm90 ms | flex ms | auto speedup "
                 "| copy floor ms | auto vs floor | sm90 TFLOP/s (visible pairs) | sutra eager ms "
                 "| flex eager ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def windowed(args, lines):
    """Sliding window vs flex_attention with the same block mask. Both are timed as CUDA graph
    replays (device time); the eager columns time one Python call from an idle GPU, launch
    included, which is what a Python loop of single calls sees."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    flex = torch.compile(flex_attention)
    d, heads, tokens = 64, 12, 32768
    for w in (64, 256):
        for length in (4096, 16384):
            batch = tokens // length
            sets = [tuple(torch.randn(batch, length, heads, d, dtype=torch.float16,
                                      device="cuda") for _ in range(3)) for _ in range(args.sets)]

            def run_sutra(q, k, v, w=w):
                return flash_attention(q, k, v, window=(w, w))

            def mask_mod(b, h, q_idx, kv_idx, w=w):
                return (q_idx - kv_idx <= w) & (kv_idx - q_idx <= w)

            bm = create_block_mask(mask_mod, None, None, length, length, device="cuda")

            def run_flex(q, k, v, bm=bm):
                return flex(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), block_mask=bm)

            def run_sm80(q, k, v, w=w):
                return flash_attention(q, k, v, window=(w, w), path="sm80")

            def run_sm90(q, k, v, w=w):
                return flash_attention(q, k, v, window=(w, w), path="sm90")

            # The floor: one copy of 2x q's bytes reads and writes what attention must read
            # (q, k, v) and write (o) at least once, measured on this GPU in this run.
            src = torch.empty(2 * batch * length * heads * d, dtype=torch.float16, device="cuda")
            dst = torch.empty_like(src)
            floor_ms = time_ms_graph(lambda s, t: t.copy_(s), [(src, dst)], args.repeats)
            t_sutra = time_ms_graph(run_sutra, sets, args.repeats)
            t_sm80 = time_ms_graph(run_sm80, sets, args.repeats)
            t_sm90 = time_ms_graph(run_sm90, sets, args.repeats)
            t_flex = time_ms_graph(run_flex, sets, args.repeats)
            e_sutra = time_ms(run_sutra, sets, args.repeats, hide_launch=False)
            e_flex = time_ms(run_flex, sets, args.repeats, hide_launch=False)
            pairs = batch * heads * (2 * w + 1) * length  # visible pairs (edges ignored)
            line = (f"| +-{w} | {length} | {batch} | {t_sutra:.3f} | {t_sm80:.3f} | {t_sm90:.3f} | "
                    f"{t_flex:.3f} | {t_flex / t_sutra:.2f}x | {floor_ms:.3f} | "
                    f"{t_sutra / floor_ms:.2f}x | {4 * pairs * d / t_sm90 / 1e9:.0f} | "
                    f"{e_sutra:.3f} | {e_flex:.3f} |")
            lines.append(line)
            print(line, flush=True)


BIAS_HEADER = ("| d | L | B | H | no bias TFLOP/s | ALiBi | relative (MPNet, 32 buckets) | "
               "ALiBi vs none | relative vs none |\n|---|---|---|---|---|---|---|---|---|")


def biased(args, lines):
    """sutra's score biases (fp16, path auto), each against the unbiased call in the same run:
    ALiBi slopes (jina-embeddings-v2) and MPNet's bucketed relative-position table."""
    for d in args.head_dims:
        heads = 2048 // d
        slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)],
                              dtype=torch.float32, device="cuda")
        table = torch.randn(heads, 32, dtype=torch.float32, device="cuda")
        for length in args.lengths:
            batch = max(1, args.tokens // length)
            sets = [tuple(torch.randn(batch, length, heads, d, dtype=torch.float16, device="cuda")
                          for _ in range(3)) for _ in range(args.sets)]
            flops = 4 * batch * heads * length * length * d
            ms = time_ms_interleaved(
                [lambda q, k, v: flash_attention(q, k, v),
                 lambda q, k, v, s=slopes: flash_attention(q, k, v, alibi_slopes=s),
                 lambda q, k, v, t=table: flash_attention(q, k, v, rel_bias=t)],
                sets, args.repeats)
            tf = [flops / t / 1e9 for t in ms]
            line = (f"| {d} | {length} | {batch} | {heads} | {tf[0]:.0f} | {tf[1]:.0f} | "
                    f"{tf[2]:.0f} | {tf[1] / tf[0]:.2f}x | {tf[2] / tf[0]:.2f}x |")
            lines.append(line)
            print(line, flush=True)
            del sets
            torch.cuda.empty_cache()


def memory(args, lines):
    """Peak device memory of one call beyond its inputs and output: must not grow like L^2."""
    d, heads = 64, 16
    for length in args.lengths:
        q, k, v = (torch.randn(1, length, heads, d, dtype=torch.float16, device="cuda")
                   for _ in range(3))
        o = torch.empty_like(q)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        flash_attention(q, k, v, out=o)
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - base
        line = f"| {length} | {q.numel() * 2 * 4 / 2**20:.1f} | {extra / 2**20:.3f} |"
        lines.append(line)
        print(line, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+",
                    default=[512, 1024, 2048, 4096, 8192, 16384])
    ap.add_argument("--head-dims", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16"])
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--sets", type=int, default=3)
    ap.add_argument("--window", action="store_true", help="also sliding window vs flex_attention")
    ap.add_argument("--memory", action="store_true", help="also peak extra memory vs L")
    ap.add_argument("--bias", action="store_true", help="also ALiBi and relative bias vs none")
    ap.add_argument("--skip-dense", action="store_true", help="only the optional sections")
    ap.add_argument("--markdown", help="write the tables to this file")
    ap.add_argument("--plot", help="write a PNG of TFLOP/s against L (fp16; needs matplotlib)")
    ap.add_argument("--expose-launch", action="store_true",
                    help="time each call from an idle GPU, host launch work included (before v5)")
    args = ap.parse_args()
    global HIDE_LAUNCH
    HIDE_LAUNCH = not args.expose_launch

    prop = torch.cuda.get_device_properties(0)
    header = (f"device: {prop.name} (sm_{prop.major}{prop.minor}, {prop.multi_processor_count} "
              f"SMs), torch {torch.__version__}, CUDA {torch.version.cuda}; tokens/call "
              f"{args.tokens}, median of {args.repeats}, {args.sets} rotated input sets, "
              f"{'launch exposed' if args.expose_launch else 'launch hidden behind a spin kernel'}")
    print(header)
    print(DENSE_HEADER)
    rows = []
    if not args.skip_dense:
        dense(args, rows)
    wlines = []
    if args.window:
        print(WINDOW_HEADER)
        windowed(args, wlines)
    blines = []
    if args.bias:
        print(BIAS_HEADER)
        biased(args, blines)
    mlines = []
    if args.memory:
        print("| L (B=1, H=16, d=64, fp16) | q+k+v+o MiB | extra peak MiB |\n|---|---|---|")
        memory(args, mlines)
    if args.plot and rows:
        plot(rows, args.plot, header)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(header + "\n\n")
            f.write(DENSE_HEADER + "\n")
            for r in rows:
                f.write(ROW % r + "\n")
            if wlines:
                f.write("\nSliding window, fp16, d=64, H=12, 32768 tokens (ms per call, CUDA graph "
                        "replay; eager = one Python call at a time):\n\n" + WINDOW_HEADER + "\n")
                f.write("\n".join(wlines) + "\n")
            if blines:
                f.write("\nScore biases, fp16, path auto (TFLOP/s of the same calls, same run):"
                        "\n\n" + BIAS_HEADER + "\n" + "\n".join(blines) + "\n")
            if mlines:
                f.write("\nPeak device memory beyond q, k, v, o (B=1, H=16, d=64, fp16):\n\n"
                        "| L | q+k+v+o MiB | extra peak MiB |\n|---|---|---|\n")
                f.write("\n".join(mlines) + "\n")


def plot(rows, path, header):
    """TFLOP/s against L for sutra (auto = sm90 where it runs), sutra sm80, FA2 and cuDNN."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = sorted({r[1] for r in rows})
    fig, axes = plt.subplots(1, len(dims), figsize=(6 * len(dims), 4.2), squeeze=False)
    for ax, d in zip(axes[0], dims):
        sel = [r for r in rows if r[1] == d and r[0] == "float16"]
        lengths = [r[2] for r in sel]
        for col, label in ((5, "sutra (auto: sm90a wgmma+TMA)"), (6, "sutra sm80 (mma.sync)"),
                           (7, "SDPA FlashAttention-2"), (8, "SDPA cuDNN")):
            ax.plot(lengths, [r[col] for r in sel], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length L (32768 tokens per call)")
        ax.set_ylabel("TFLOP/s")
        ax.set_title(f"fp16 attention forward, head dim {d}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(header.split(";")[0], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
