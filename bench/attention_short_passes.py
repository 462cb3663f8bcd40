"""Attention on short passes in the GPU engine's own layout: which kernel the engine should run.

The engine's attention reads q, k and v out of one fused QKV buffer (``[tokens, 3, heads,
head_dim]``, so each is a strided view) with ``cu_seqlens`` (varlen, no padding). This times, per
uniform sequence length L and 65,536 tokens per call (B = 65536 / L sequences), fp16:

- ``sm80``: the sm80 kernels' default tile (128 x 64 at head dim 64, 128 x 32 at 128);
- ``sm80 window tile``: head dim 64 only, a two-sided window of L - 1 keys (the same attention),
  which runs the window kernels' 64 x 32 tile; with its max error against ``sm80``;
- ``sm80 packed``: packed row tiles (``pack_sequences=True``);
- ``sm90``: the Hopper kernels (wgmma + TMA), where the GPU has them;
- ``cudnn``: PyTorch SDPA with the cuDNN backend on padded ``[B, H, L, d]`` views of the same
  buffers.

Each figure is the median over 20 replays of a CUDA graph of 10 calls (device time per call, us;
bench/attention.py's ``time_ms_graph``).
The engine's per-pass choices in cuda/attention/flash_api.cu (``sm90_min_seqlen``,
``kDenseWindowMaxSeqlen``) come from this table.

    python bench/attention_short_passes.py [--out bench/results/attention_short_passes_h200.md]
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import source_digest

TOKENS = 65_536
LENGTHS = (64, 128, 192, 256, 384, 512)
SHAPES = ((64, 12), (128, 8))  # (head_dim, heads): BERT-base-like and a d=128 model


def timed_us(fn, replays: int = 20) -> float:
    """us per call: bench/attention.py's CUDA-graph timing with 10 calls per graph."""
    from attention import time_ms_graph

    return time_ms_graph(fn, [()] * 10, replays) * 1e3


def measure(head_dim: int, heads: int, length: int) -> dict[str, float]:
    import torch
    import torch.nn.functional as F
    from sutra.flash_attention import flash_attention
    from torch.nn.attention import SDPBackend, sdpa_kernel

    batch = TOKENS // length
    qkv = torch.randn(batch * length, 3, heads, head_dim, dtype=torch.half, device="cuda")
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    cu = torch.arange(0, batch * length + 1, length, dtype=torch.int32, device="cuda")
    out = torch.empty(batch * length, heads, head_dim, dtype=torch.half, device="cuda")
    row: dict[str, float] = {}
    row["sm80"] = timed_us(lambda: flash_attention(q, k, v, cu, length, out=out, path="sm80"))
    dense = out.clone()
    if head_dim == 64 and 2 * (length - 1) <= 512:
        row["sm80 window tile"] = timed_us(lambda: flash_attention(
            q, k, v, cu, length, window=(length - 1, length - 1), out=out, path="sm80"))
        row["window tile max err"] = (out.float() - dense.float()).abs().max().item()
    row["sm80 packed"] = timed_us(
        lambda: flash_attention(q, k, v, cu, length, out=out, pack_sequences=True))
    if torch.cuda.get_device_capability() == (9, 0):
        row["sm90"] = timed_us(lambda: flash_attention(q, k, v, cu, length, out=out, path="sm90"))
    qp, kp, vp = (x.view(batch, length, heads, head_dim).transpose(1, 2) for x in (q, k, v))

    def cudnn():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            return F.scaled_dot_product_attention(qp, kp, vp)

    row["cudnn"] = timed_us(cudnn)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the table there too")
    args = parser.parse_args()
    import torch

    columns = ("sm80", "sm80 window tile", "sm80 packed", "sm90", "cudnn")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [(f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}; "
              f"Python {platform.python_version()}; {when}; source digest "
              f"{source_digest.working_tree_digest()} (bench/source_digest.py)"),
             "", f"fp16, {TOKENS:,} tokens per call, us per call (device time):", "",
             "| head dim, heads | L | " + " | ".join(columns) + " | window tile max err |",
             "|---|---|" + "---|" * (len(columns) + 1)]
    for head_dim, heads in SHAPES:
        for length in LENGTHS:
            row = measure(head_dim, heads, length)
            cells = [f"{row[c]:.1f}" if c in row else "" for c in columns]
            err = row.get("window tile max err")
            lines.append(f"| {head_dim}, {heads} | {length} | " + " | ".join(cells) +
                         f" | {'' if err is None else f'{err:.2g}'} |")
            print(lines[-1], flush=True)
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
