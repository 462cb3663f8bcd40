"""Host cost of one flash_attention call: the binding's argument reading (DLPack or
__cuda_array_interface__), checks and launch, next to torch SDPA on the same tiny problem.

The problem is tiny (1 x 16 tokens x 2 heads x 64) so the GPU time is negligible and the loop is
bound by the host: median over rounds of the mean time per call of N back-to-back calls, the
stream synchronized once per round.

    python bench/attention_overhead.py [--calls 2000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from sutra.ops import flash_attention


def per_call_us(fn, calls: int, rounds: int) -> float:
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    results = {}
    for dtype in (torch.float16, torch.bfloat16):
        q, k, v = (torch.randn(1, 16, 2, 64, dtype=dtype, device="cuda") for _ in range(3))
        out = torch.empty_like(q)
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
        name = str(dtype).removeprefix("torch.")
        results[f"sutra flash_attention {name}, out given"] = per_call_us(
            lambda: flash_attention(q, k, v, out=out), args.calls, args.rounds)
        results[f"sutra flash_attention {name}, out allocated"] = per_call_us(
            lambda: flash_attention(q, k, v), args.calls, args.rounds)
        results[f"torch SDPA {name}"] = per_call_us(
            lambda: F.scaled_dot_product_attention(qt, kt, vt), args.calls, args.rounds)
    try:
        import cupy

        cq, ck, cv = (cupy.random.standard_normal((1, 16, 2, 64)).astype(cupy.float16)
                      for _ in range(3))
        cout = cupy.empty_like(cq)
        results["sutra flash_attention float16, CuPy arrays, out given"] = per_call_us(
            lambda: flash_attention(cq, ck, cv, out=cout), args.calls, args.rounds)
    except ImportError:
        pass
    for what, us in results.items():
        print(f"{what:<55} {us:8.2f} us/call")


if __name__ == "__main__":
    main()
