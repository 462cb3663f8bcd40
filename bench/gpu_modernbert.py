"""ModernBERT-base on the GPU: sutra's engine against Hugging Face ``ModernBertModel`` (sdpa),
documents/s and peak device memory at L = 512, 2048 and 8192 tokens and on a mixed-length set,
in the same run on the same GPU (issue 15).

The model: a random-weight ModernBERT-base (tests/engine_models.py, ``modernbert-base``:
``ModernBertConfig``'s shapes, 22 layers of which 0, 3, ..., 21 are global and the other 14 see
+-64 tokens, hidden 768, 12 heads of 64, GeGLU 1152), stored in float16 as a
sentence-transformers folder (mean pooling, ``max_seq_length`` 8192) in a temporary directory.
Its weights are redrawn so that attention is not uniform, which the correctness check needs; the
speed does not depend on them.

Sets (token ids drawn with a fixed seed, ``[CLS]`` first and ``[SEP]`` last):

- uniform: L=512 with B=64, L=2048 with B=16, L=8192 with B=4 (32,768 tokens each);
- mixed: 32 documents with lengths drawn uniformly from 512..7680 (mean 4096).

Per set:

1. sutra: ``Embedder(folder, backend="cuda", dtype="float16", max_batch_tokens=N)`` built for the
   set, N = the set's tokens per pass (B x L; 32,768 for the mixed set), so the workspace the
   engine allocates at construction is what the pass needs; ``embed_tokens(ids, batch_size=B)``
   (no batch size on the mixed set: the engine packs passes within its budget). Memory: the
   engine's ``weight_bytes`` + ``workspace_bytes`` (``backend.describe()``), and the drop of the
   device's free memory (``torch.cuda.mem_get_info``) across construction and across the timed
   calls (kernels loaded on first use, cuBLASLt, CUDA graphs), the larger taken as its peak.
2. Hugging Face: ``ModernBertModel.from_pretrained(folder, dtype=torch.float16,
   attn_implementation="sdpa")`` (its local layers are a mask over full attention) on batches of
   B with an attention mask, already on the device (the uniform sets have no padding; the mixed
   one is length-sorted, padded per batch, at each of ``--hf-batches``, the best kept). Memory:
   ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (weights included), and
   ``max_memory_reserved``.
3. Time: ``time.perf_counter`` around each call with ``torch.cuda.synchronize()`` before and
   after, the median of ``--repeats`` after a warm-up call; documents/s = documents / median.
4. Correctness: sutra's embeddings of the first 4 documents against HF's float16 ones (mean of
   ``last_hidden_state``, one document per call): a cosine under 0.999 marks the run invalid (the
   report says so and the script exits 1), so a fast but wrong engine cannot be reported.
5. Where sutra's time goes, estimated: ``sutra.ops.flash_attention`` alone on the set's tokens
   (one varlen call, float16, 12 heads of 64, q, k and v random) with the global window and with
   +-64, times the number of layers of each kind, out of the engine's profiled ``layers`` stage
   (CUDA events, a second backend built with ``profile=True``) and out of the call's wall time;
   the rest of the layers is the difference.

Then the ratios sutra / HF, with the issue's targets at 8192 tokens (must >= 2x, goal >= 3x).
Results go to ``--out`` (default ``$OUT`` when set, else bench/results): ``modernbert_h200.md``
(machine, versions, command, sutra's commit, the tables and the JSON of every figure),
``modernbert_h200.json`` and ``modernbert_h200.png`` (documents/s and peak memory against L;
skipped with a message without matplotlib). On the H200::

    python bench/gpu_modernbert.py

Smoke test without a GPU (``--quick``: the 4-layer ``modernbert-small``, short sets; torch on the
CPU in float32, no memory figures or breakdown, figures meaningless)::

    python bench/gpu_modernbert.py --quick --backend cpu --out /tmp/modernbert_smoke
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from engine_models import (
    MODERNBERT_CASES,
    MODERNBERT_TOKENIZER,
    build_model,
    random_sequences,
    reference_states,
    write_folder,
)
from gpu_e2e import (
    Clock,
    _free_torch,
    _ints,
    _jsonable,
    _stage_lines,
    _times,
    _verdict,
    backend_description,
    cosine_rows,
    hf_forward,
    machine_info,
    machine_lines,
    make_embedder,
    padded_batches,
    profiled_stages,
    stage_breakdown,
    torch_dtype,
)

UNIFORM = ((512, 64), (2048, 16), (8192, 4))  # (L, B)
MIXED_COUNT, MIXED_RANGE = 32, (512, 7680)
MIXED_BUDGET = 32_768  # tokens per sutra pass on the mixed set: the uniform sets' pass
QUICK_UNIFORM = ((128, 8), (512, 4), (2048, 1))
QUICK_MIXED_COUNT, QUICK_MIXED_RANGE = 8, (64, 960)
HF_BATCHES = (2, 4, 8)
SEED = 0
CHECK_DOCUMENTS = 4
CHECK_COSINE = 0.999
ATTENTION_REPEATS = 20
TARGET_L, MUST, GOAL = 8192, 2.0, 3.0
GIB = 1024 ** 3


# -- sets -----------------------------------------------------------------------------------------


def make_sets(quick: bool, mixed_count: int | None) -> list[dict[str, Any]]:
    """The uniform sets and the mixed one: name, lengths, the sutra batch size (``None``: packed
    by the engine) and the tokens of one sutra pass."""
    uniform = QUICK_UNIFORM if quick else UNIFORM
    count = mixed_count or (QUICK_MIXED_COUNT if quick else MIXED_COUNT)
    low, high = QUICK_MIXED_RANGE if quick else MIXED_RANGE
    sets = [{"name": f"L={length}", "L": length, "B": batch, "lengths": [length] * batch,
             "sutra_batch": batch, "pass_tokens": length * batch} for length, batch in uniform]
    lengths = np.random.default_rng(SEED).integers(low, high + 1, count).tolist()
    sets.append({"name": "mixed", "L": None, "B": None, "lengths": lengths, "sutra_batch": None,
                 "pass_tokens": MIXED_BUDGET, "range": [low, high], "document_lengths": lengths})
    for index, s in enumerate(sets):
        s["sequences"] = random_sequences(s["lengths"], seed=SEED + 1 + index)
        s["documents"] = len(s["lengths"])
        s["tokens"] = int(sum(s["lengths"]))
        s["mean_length"] = s["tokens"] / s["documents"]
    return sets


def build_folder(case, folder: Path, device: str) -> dict[str, Any]:
    """The random model of ``case`` saved as a float16 folder (float32 off the GPU)."""
    model = build_model(case, "sdpa", device=device).to(torch_dtype(device))
    write_folder(case, model, folder, MODERNBERT_TOKENIZER)
    config = model.config
    info = {"name": case.name, "layers": config.num_hidden_layers,
            "hidden": config.hidden_size, "heads": config.num_attention_heads,
            "intermediate": config.intermediate_size, "local_attention": config.local_attention,
            "layer_types": list(config.layer_types),
            "parameters": sum(p.numel() for p in model.parameters()),
            "dtype": str(torch_dtype(device)).removeprefix("torch.")}
    del model
    _free_torch()
    return info


# -- sutra ----------------------------------------------------------------------------------------


def _free_bytes(device: str) -> int | None:
    if device != "cuda":
        return None
    import torch

    torch.cuda.synchronize()
    return int(torch.cuda.mem_get_info()[0])


def sutra_set(args, folder: Path, max_length: int, device: str, clock: Clock,
              s: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
    """Time, memory and stages of sutra on one set, and its embeddings."""
    _free_torch()
    # The engine's workspace must hold one sequence of the model's full length, whatever the set.
    budget = max(s["pass_tokens"], max_length)
    free_before = _free_bytes(device)
    embedder, precision = make_embedder(folder, args.backend, budget)
    free_built = _free_bytes(device)
    ids = (np.asarray(s["sequences"], dtype=np.int64) if s["L"] is not None
           else [np.asarray(q, dtype=np.int64) for q in s["sequences"]])
    call = partial(embedder.embed_tokens, ids, batch_size=s["sutra_batch"])
    median, times, out = clock.median(call, args.repeats)
    free_after = _free_bytes(device)
    result: dict[str, Any] = {
        "precision": precision, "max_batch_tokens": budget, "batch_size": s["sutra_batch"],
        "backend": backend_description(embedder), "median_s": median, "times_s": times,
        "docs_per_s": len(ids) / median, "tokens_per_s": s["tokens"] / median,
        "finite": bool(np.isfinite(out).all())}
    if free_before is not None:
        described = result["backend"] or {}
        drops = [free_before - free_built, free_before - free_after]
        result["memory"] = {
            "weight_bytes": described.get("weight_bytes"),
            "workspace_bytes": described.get("workspace_bytes"),
            "free_drop_construction": drops[0], "free_drop_after_calls": drops[1],
            "peak_bytes": max(drops)}
    result["stages"] = stage_breakdown(embedder, call)
    result["stages_profiled"] = profiled_stages(embedder, {"embed_tokens": call})
    embedder = call = None
    _free_torch()
    return result, np.asarray(out, dtype=np.float32)


def attention_alone(lengths: list[int], heads: int, head_dim: int,
                    windows: dict[str, int | None]) -> dict[str, Any]:
    """Median ms of one ``sutra.ops.flash_attention`` call (packed varlen, float16) over the
    set's tokens, per kind of layer (``None``: global; an int: +-that many tokens)."""
    import torch
    from sutra.ops import flash_attention

    cu = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32,
                      device="cuda")
    total = int(cu[-1])
    q, k, v = (torch.randn(total, heads, head_dim, dtype=torch.float16, device="cuda")
               for _ in range(3))
    out = torch.empty_like(q)
    result = {}
    for kind, window in windows.items():
        bounds = (-1, -1) if window is None else (window, window)
        call = partial(flash_attention, q, k, v, cu, max(lengths), window=bounds, out=out)
        for _ in range(3):
            call()
        times = []
        for _ in range(ATTENTION_REPEATS):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        result[kind] = {"window": bounds, "ms": statistics.median(times)}
    del q, k, v, out
    _free_torch()
    return result


def breakdown(sutra: dict[str, Any], attention: dict[str, Any], layer_counts: dict[str, int]
              ) -> dict[str, Any]:
    """Global and local attention (the kernel alone x its layers) and the rest, in ms, out of the
    profiled ``layers`` stage and out of the call's median wall time."""
    out: dict[str, Any] = {"wall_ms": sutra["median_s"] * 1e3}
    for kind, count in layer_counts.items():
        out[f"{kind}_attention_ms"] = attention[kind]["ms"] * count
    spent = sum(out[f"{kind}_attention_ms"] for kind in layer_counts)
    out["rest_of_wall_ms"] = out["wall_ms"] - spent
    profiled = (sutra.get("stages_profiled") or {}).get("embed_tokens") or {}
    if "layers" in profiled:
        out["layers_ms"] = profiled["layers"] * 1e3
        out["rest_of_layers_ms"] = out["layers_ms"] - spent
        out["outside_layers_ms"] = out["wall_ms"] - out["layers_ms"]
    return out


# -- Hugging Face ---------------------------------------------------------------------------------


def _memory(device: str) -> tuple[int, int] | None:
    if device != "cuda":
        return None
    import torch

    return int(torch.cuda.max_memory_allocated()), int(torch.cuda.max_memory_reserved())


def hf_set(args, hf, folder: Path, device: str, clock: Clock, s: dict[str, Any]
           ) -> dict[str, Any]:
    """HF's forward on padded batches of B (the mixed set: each of --hf-batches, the best)."""
    import torch

    batches = [s["B"]] if s["L"] is not None else args.hf_batches
    runs = []
    for batch in batches:
        padded = padded_batches(s["sequences"], batch, device, hf.config.pad_token_id or 0)
        _free_torch()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        run = hf_forward(folder, device, padded, clock, args.repeats, False, hf)
        peaks = _memory(device)
        if peaks is not None:
            run["peak_allocated_bytes"], run["peak_reserved_bytes"] = peaks
        run["batch_size"] = batch
        run["docs_per_s"] = run.pop("texts_per_s")
        runs.append(run)
        del padded
    _free_torch()
    best = min(runs, key=lambda r: r["median_s"])
    return {"runs": runs, "best": best}


def hf_check(hf, device: str, s: dict[str, Any], ours: np.ndarray) -> dict[str, Any]:
    """sutra's first documents against HF's (mean of last_hidden_state, one per call)."""
    count = min(CHECK_DOCUMENTS, len(s["sequences"]))
    states = reference_states(hf, s["sequences"][:count], device)
    expected = np.stack([x.mean(0) for x in states])
    cos = cosine_rows(ours[:count].astype(np.float64), expected)
    return {"documents": count, **cos, "ok": cos["min"] >= CHECK_COSINE}


# -- the report -----------------------------------------------------------------------------------


def _gib(x: float | None) -> str:
    return "-" if x is None else f"{x / GIB:.2f}"


def targets(sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for s in sets:
        if s["L"] == TARGET_L:
            value = s["ratio"]
            rows.append({"what": f"L={TARGET_L}: sutra / HF documents/s", "value": value,
                         "must": MUST, "goal": GOAL, "meets_must": value >= MUST,
                         "meets_goal": value >= GOAL})
    return rows


def report(args, info: dict[str, Any], results: dict[str, Any]) -> str:
    model, sets = results["model"], results["sets"]
    lines = [f"# {model['name']}: sutra ({args.backend}) vs Hugging Face ModernBertModel", ""]
    if not results["valid"]:
        lines += [("**INVALID RUN: sutra's embeddings disagree with Hugging Face's (see the "
                  f"check column, bar cosine {CHECK_COSINE}); the speeds below mean nothing.**"),
                  ""]
    if results["smoke"]:
        lines += [(f"**Smoke run** (sutra backend {args.backend}, torch on {results['device']}, "
                  f"quick={args.quick}): the figures say nothing about the GPU."), ""]
    lines += machine_lines(info) + [
        f"- command: `{info['command']}`",
        (f"- model: random-weight `{model['name']}`, {model['layers']} layers "
         f"({model['layer_types'].count('full_attention')} global, "
         f"{model['layer_types'].count('sliding_attention')} local with local_attention "
         f"{model['local_attention']}), hidden {model['hidden']}, {model['heads']} heads, "
         f"intermediate {model['intermediate']}, {model['parameters'] / 1e6:.1f}M parameters, "
         f"stored as {model['dtype']}; sutra `embed_tokens` on token ids vs HF "
         "`ModernBertModel` sdpa forward on padded batches (pre-tokenized, already on the "
         "device)"),
        (f"- timing: time.perf_counter around each call, synchronized, median of "
         f"{args.repeats} after a warm-up call"),
        "",
        ("| set | documents | tokens | sutra docs/s | HF docs/s (batch) | sutra / HF | "
        "sutra peak GiB (weights + workspace) | HF peak GiB allocated (reserved) | check: "
        "cosine min vs HF |"),
        "|---|---|---|---|---|---|---|---|---|"]
    for s in sets:
        su, hf = s["sutra"], s["hf"]["best"]
        mem = su.get("memory") or {}
        engine = (None if mem.get("weight_bytes") is None
                  else mem["weight_bytes"] + (mem.get("workspace_bytes") or 0))
        label = s["name"] if s["L"] is not None else (
            f"mixed {s['range'][0]}..{s['range'][1]} (mean {s['mean_length']:.0f})")
        lines.append(
            f"| {label} | {s['documents']} | {s['tokens']:,} | {su['docs_per_s']:,.1f} | "
            f"{hf['docs_per_s']:,.1f} ({hf['batch_size']}) | **{s['ratio']:.2f}x** | "
            f"{_gib(mem.get('peak_bytes'))} ({_gib(engine)}) | "
            f"{_gib(hf.get('peak_allocated_bytes'))} ({_gib(hf.get('peak_reserved_bytes'))}) | "
            f"{s['check']['min']:.6f}{'' if s['check']['ok'] else ' **FAILED**'} |")
    lines += ["", ("sutra's peak is the larger drop of the device's free memory across building "
              "the Embedder and across the timed calls (everything the engine allocates, "
              "sized by max_batch_tokens = the set's tokens per pass); HF's is "
              "torch.cuda.max_memory_allocated over the timed calls, weights included."), ""]
    rows = results["targets"]
    if rows:
        lines += ["| target | measured | must | meets | goal | meets |",
                  "|---|---|---|---|---|---|"]
        for t in rows:
            lines.append(f"| {t['what']} | {t['value']:.3f}x | >= {t['must']:.1f}x | "
                         f"{_verdict(t['meets_must'])} | >= {t['goal']:.1f}x | "
                         f"{_verdict(t['meets_goal'])} |")
        lines.append("")
    else:
        lines += [f"(no L={TARGET_L} set in this run: no verdict on the issue's targets)", ""]

    lines += ["## Where sutra's time goes (estimated)", "",
              ("`sutra.ops.flash_attention` alone on each set's tokens (one packed varlen call, "
               f"float16, {model['heads']} heads of {model['hidden'] // model['heads']}, random "
               "q, k, v), times the layers of each kind, subtracted from the engine's profiled "
               "`layers` stage (CUDA events) and from the call's median wall time. The engine "
               "reads q, k and v out of its fused QKV buffer, so this is an estimate."), ""]
    if any(s.get("breakdown") for s in sets):
        lines += [("| set | wall ms | layers ms (profiled) | global attention ms (share of the "
                   "wall) | local attention ms | rest of the layers ms | outside the layers ms |"),
                  "|---|---|---|---|---|---|---|"]
        for s in sets:
            b = s.get("breakdown")
            if not b:
                continue
            wall = b["wall_ms"]
            rest = b.get("rest_of_layers_ms")
            lines.append(
                f"| {s['name']} | {wall:.2f} | {_ms(b.get('layers_ms'))} | "
                f"{_ms(b['global_attention_ms'], wall)} | {_ms(b['local_attention_ms'], wall)} | "
                + (_ms(rest, wall) if rest is not None
                   else f"{_ms(b['rest_of_wall_ms'], wall)} of the wall")
                + f" | {_ms(b.get('outside_layers_ms'), wall)} |")
        lines.append("")
    else:
        lines += ["(not measured: needs the cuda backend and a GPU)", ""]
    lines += [("sutra's stages (`backend.stage_seconds()`, one call each; the profiled ones from a "
              "backend built with profile=True):"), ""]
    for s in sets:
        lines += _stage_lines(s["name"], {"embed_tokens": s["sutra"]["stages"]},
                              s["sutra"]["stages_profiled"])
    lines += ["", "## Every run", "", "| set | path | median ms | runs ms | tokens/s |",
              "|---|---|---|---|---|"]
    for s in sets:
        lines.append(f"| {s['name']} | sutra (max_batch_tokens {s['sutra']['max_batch_tokens']}) "
                     f"| {s['sutra']['median_s'] * 1e3:.2f} | {_times(s['sutra']['times_s'])} | "
                     f"{s['sutra']['tokens_per_s']:,.0f} |")
        for run in s["hf"]["runs"]:
            lines.append(f"| {s['name']} | HF batch {run['batch_size']} (padded "
                         f"{run['padded_tokens']:,} tokens) | {run['median_s'] * 1e3:.2f} | "
                         f"{_times(run['times_s'])} | {run['tokens_per_s']:,.0f} |")
    if results.get("plot"):
        lines += ["", f"![documents/s and peak memory]({results['plot']})"]
    lines += ["", "## Raw numbers", "", "```json", json.dumps(_jsonable(results), indent=1),
              "```", ""]
    return "\n".join(lines)


def _ms(x: float | None, wall: float | None = None) -> str:
    """``12.34`` ms, with its share of ``wall`` when given; ``-`` when not measured."""
    if x is None:
        return "-"
    return f"{x:.2f}" if wall is None else f"{x:.2f} ({x / wall:.0%})"


def plot(sets: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Documents/s (log) and peak memory against L; the mixed set at its mean length."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", flush=True)
        return False
    uniform = [s for s in sets if s["L"] is not None]
    mixed = [s for s in sets if s["L"] is None]
    fig, (speed, memory) = plt.subplots(1, 2, figsize=(11, 4.5))
    for who, color, docs, peak in (
            ("sutra", "tab:blue", lambda s: s["sutra"]["docs_per_s"],
             lambda s: (s["sutra"].get("memory") or {}).get("peak_bytes")),
            ("HF sdpa", "tab:orange", lambda s: s["hf"]["best"]["docs_per_s"],
             lambda s: s["hf"]["best"].get("peak_allocated_bytes"))):
        xs = [s["L"] for s in uniform]
        speed.plot(xs, [docs(s) for s in uniform], "o-", color=color, label=f"{who}, uniform")
        speed.plot([s["mean_length"] for s in mixed], [docs(s) for s in mixed], "s",
                   color=color, markersize=9, label=f"{who}, mixed (at its mean length)")
        peaks = [(s["L"], peak(s)) for s in uniform if peak(s) is not None]
        if peaks:
            memory.plot([p[0] for p in peaks], [p[1] / GIB for p in peaks], "o-", color=color,
                        label=who)
    for s in uniform:
        speed.annotate(f"{s['ratio']:.2f}x", (s["L"], s["sutra"]["docs_per_s"]),
                       textcoords="offset points", xytext=(4, 6), fontsize=8)
    for ax in (speed, memory):
        ax.set_xscale("log", base=2)
        ax.set_xticks([s["L"] for s in uniform], [str(s["L"]) for s in uniform])
        ax.set_xlabel("tokens per document (L)")
        if ax.get_legend_handles_labels()[0]:  # no memory figures off the GPU
            ax.legend(fontsize=8)
    speed.set_yscale("log")
    speed.set_ylabel("documents/s (log scale)")
    memory.set_ylim(bottom=0)
    memory.set_ylabel("peak device memory, GiB (weights included)")
    passes = sorted({s["pass_tokens"] for s in uniform})
    if len(passes) == 1:
        memory.set_title(f"the same {passes[0]:,} tokens per batch at every L", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


# -- main -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench/results")),
                   help="output folder (default: $OUT, else bench/results)")
    p.add_argument("--quick", action="store_true",
                   help="the 4-layer modernbert-small and short sets: a smoke test")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed calls per measurement (default 5; 2 with --quick)")
    p.add_argument("--backend", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--hf-batches", type=_ints, default=list(HF_BATCHES),
                   help="HF batch sizes on the mixed set, the best kept (default: 2,4,8)")
    p.add_argument("--mixed-count", type=int, default=None,
                   help=f"documents in the mixed set (default {MIXED_COUNT}; "
                        f"{QUICK_MIXED_COUNT} with --quick)")
    p.add_argument("--name", default=None,
                   help="report file stem (default modernbert_h200; modernbert_smoke off the GPU "
                        "or with --quick)")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from transformers import ModernBertModel

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cuda":
        print("torch has no CUDA here: HF runs on the CPU in float32 (a smoke test of the code "
              "paths, not a measurement)", flush=True)
    if args.backend != "cuda":
        print(f"sutra backend {args.backend!r}: not the GPU path", flush=True)
    smoke = args.quick or device != "cuda" or args.backend != "cuda"
    clock = Clock(sync=device == "cuda")
    started = time.perf_counter()
    info = machine_info(device)
    info["command"] = shlex.join([Path(sys.executable).name] + sys.argv)
    info["date"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    name = args.name or ("modernbert_smoke" if smoke else "modernbert_h200")
    args.out.mkdir(parents=True, exist_ok=True)
    case = MODERNBERT_CASES["modernbert-small" if args.quick else "modernbert-base"]
    sets = make_sets(args.quick, args.mixed_count)

    with tempfile.TemporaryDirectory(prefix="sutra-modernbert-") as tmp:
        folder = Path(tmp) / case.name
        model = build_folder(case, folder, device)
        print(f"device {info.get('gpu', device)}; {case.name}: {model['layers']} layers, "
              f"{model['parameters'] / 1e6:.1f}M parameters ({model['dtype']})", flush=True)
        from sutra.models.spec import ModelFolder

        windows = ModelFolder.load(folder).architecture.attention_windows
        layer_counts = {"global": sum(w is None for w in windows),
                        "local": sum(w is not None for w in windows)}
        kinds = {"global": None, "local": next((w for w in windows if w is not None), None)}
        hf = ModernBertModel.from_pretrained(str(folder), dtype=torch_dtype(device),
                                             attn_implementation="sdpa").to(device).eval()
        for s in sets:
            print(f"{s['name']}: {s['documents']} documents, {s['tokens']:,} tokens", flush=True)
            s["sutra"], ours = sutra_set(args, folder, case.max_seq_length, device, clock, s)
            s["hf"] = hf_set(args, hf, folder, device, clock, s)
            s["check"] = hf_check(hf, device, s, ours)
            s["ratio"] = s["sutra"]["docs_per_s"] / s["hf"]["best"]["docs_per_s"]
            if device == "cuda" and args.backend == "cuda":
                s["attention"] = attention_alone(s["lengths"], model["heads"],
                                                 model["hidden"] // model["heads"], kinds)
                s["breakdown"] = breakdown(s["sutra"], s["attention"], layer_counts)
            print(f"  sutra {s['sutra']['docs_per_s']:,.1f} docs/s, HF "
                  f"{s['hf']['best']['docs_per_s']:,.1f} docs/s (batch "
                  f"{s['hf']['best']['batch_size']}): {s['ratio']:.2f}x; cosine vs HF min "
                  f"{s['check']['min']:.6f}{'' if s['check']['ok'] else ' FAILED'}", flush=True)
            if s.get("breakdown"):
                b = s["breakdown"]
                print(f"  wall {b['wall_ms']:.2f} ms: global attention "
                      f"{b['global_attention_ms']:.2f}, local {b['local_attention_ms']:.2f}, "
                      f"rest {b.get('rest_of_layers_ms', b['rest_of_wall_ms']):.2f}", flush=True)
        del hf
        _free_torch()

    for s in sets:
        del s["sequences"]
    results: dict[str, Any] = {
        "machine": info, "device": device, "smoke": smoke, "model": model,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "layer_counts": layer_counts, "sets": sets, "targets": targets(sets),
        "valid": all(s["check"]["ok"] for s in sets),
        "wall_s": time.perf_counter() - started}
    for t in results["targets"]:
        print(f"{t['what']}: {t['value']:.3f}x (must {t['must']}x: {_verdict(t['meets_must'])}, "
              f"goal {t['goal']}x: {_verdict(t['meets_goal'])})", flush=True)
    png = args.out / f"{name}.png"
    title = (f"random ModernBERT ({case.name}) {model['dtype']}, {info.get('gpu', device)}, "
             f"sutra {args.backend} vs HF ModernBertModel sdpa")
    if plot(sets, png, title):
        results["plot"] = png.name
    (args.out / f"{name}.json").write_text(json.dumps(_jsonable(results), indent=1) + "\n")
    md = args.out / f"{name}.md"
    md.write_text(report(args, info, results))
    print(f"wrote {md}, {args.out / (name + '.json')}"
          + (f", {png}" if results.get("plot") else "") + f" in {results['wall_s']:.0f} s",
          flush=True)
    if not results["valid"]:
        print(f"INVALID: sutra disagrees with HF (cosine < {CHECK_COSINE}) on "
              + ", ".join(s["name"] for s in sets if not s["check"]["ok"]), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
