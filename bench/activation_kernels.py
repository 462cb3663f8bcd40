"""The engine's elementwise activation kernels against a copy of the same bytes, on the GPU.

BERT-base's feed-forward at 65,536 tokens: ``bias_activation`` in place on ``[65536, 3072]``
fp16 (one read and one write of 402 MB) for each activation, beside ``torch``'s copy of the same
tensor (the memory floor, measured in the same run) and what Hugging Face runs instead
(``gelu(x + b)``: two kernels). ModernBERT-base's GeGLU: ``gated_activation`` of
``[65536, 2 x 1152]`` into ``[65536, 1152]``. Median of 50 calls, CUDA events, us per call.

    python bench/activation_kernels.py
"""
from __future__ import annotations

import source_digest
import torch
from sutra import _core


def timed_us(fn, calls: int = 50) -> float:
    for _ in range(5):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(calls):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1e3)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    stream = int(torch.cuda.current_stream().cuda_stream)
    x = torch.randn(65536, 3072, device="cuda").half()
    bias = torch.randn(3072, device="cuda").half()
    copy = torch.empty_like(x)
    print(f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}; source digest "
          f"{source_digest.working_tree_digest()} (bench/source_digest.py)")
    print("| kernel | us |\n|---|---|")
    print(f"| copy of the same bytes (torch) | {timed_us(lambda: copy.copy_(x)):.1f} |")
    for act in ("gelu", "gelu_tanh", "relu", "identity"):
        us = timed_us(lambda act=act: _core.bias_activation(
            x, bias, activation=act, stream=stream, stream_is_producers=True))
        print(f"| bias_activation {act}, [65536, 3072] | {us:.1f} |")
    print(f"| torch gelu(x + b) | {timed_us(lambda: torch.nn.functional.gelu(x + bias)):.1f} |")
    gated_in = torch.randn(65536, 2 * 1152, device="cuda").half()
    gated_out = torch.empty(65536, 1152, device="cuda").half()
    us = timed_us(lambda: _core.gated_activation(gated_in, gated_out, activation="gelu",
                                                 stream=stream, stream_is_producers=True))
    print(f"| gated_activation gelu, [65536, 2 x 1152] | {us:.1f} |")
    gated_copy = torch.empty_like(gated_in)
    print(f"| copy of [65536, 2 x 1152] | {timed_us(lambda: gated_copy.copy_(gated_in)):.1f} |")


if __name__ == "__main__":
    main()
