"""The engine's fused bias + residual + LayerNorm kernel against what torch runs for the same
(x + bias + residual, then F.layer_norm: separate kernels), fp16 and bf16, same run, same GPU.

Device time by CUDA events, median of 50 calls after a warm-up, inputs rotated over 8 sets so
that they do not sit in L2. Bytes: x, residual and out once (the HBM floor of the fused form).

    python bench/layernorm.py
"""

from __future__ import annotations

import statistics

import torch
import torch.nn.functional as F

from sutra import _core


def time_ms(fn, sets, repeats: int = 50) -> float:
    for args in sets[:3]:
        fn(*args)
    torch.cuda.synchronize()
    times = []
    for i in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        args = sets[i % len(sets)]
        start.record()
        fn(*args)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| dtype | tokens x hidden | sutra add_layernorm | torch (add, add, layer_norm) | "
          "speedup | sutra GB/s |")
    print("|---|---|---|---|---|---|")
    stream = int(torch.cuda.current_stream().cuda_stream)
    for dtype in (torch.float16, torch.bfloat16):
        for tokens, hidden in ((16384, 384), (65536, 384), (16384, 768), (65536, 768)):
            sets = []
            for _ in range(8):
                x, r = (torch.randn(tokens, hidden, device="cuda", dtype=dtype) for _ in range(2))
                b, g, be = (torch.randn(hidden, device="cuda", dtype=dtype) for _ in range(3))
                sets.append((x, b, r, g, be, torch.empty_like(x)))

            def ours(x, b, r, g, be, out):
                _core.add_layernorm(x, b, r, g, be, out, eps=1e-12, stream=stream,
                                    stream_is_producers=True)

            def theirs(x, b, r, g, be, out):
                F.layer_norm(x + b + r, (hidden,), g, be, 1e-12)

            a, t = time_ms(ours, sets), time_ms(theirs, sets)
            gbs = 3 * tokens * hidden * 2 / (a * 1e-3) / 1e9
            name = str(dtype).removeprefix("torch.")
            print(f"| {name} | {tokens} x {hidden} | {a * 1e3:.1f} us | "
                  f"{t * 1e3:.1f} us | {t / a:.2f}x | {gbs:.0f} |")


if __name__ == "__main__":
    main()
