"""Device time per kernel of the GPU engine, from CUPTI through torch.profiler (which records
every CUDA kernel of the process, sutra's own and cuBLASLt's included): the next lever after
bench/gpu_e2e.py's stage breakdown. Two workloads: all-MiniLM-L6-v2 on the WordNet short
sentences and passages (token arrays prepared first: the engine alone), and a random-weight
BERT-base at L=128, B=512.

    python bench/gpu_kernel_profile.py --model MINILM_FOLDER [--corpus bench/data/wordnet]

Prints one table per workload (kernel, calls, total ms, share of the device time) and writes
them to $OUT/gpu_kernel_profile.md (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import sutra
import torch
from torch.profiler import ProfilerActivity, profile


def kernel_table(run, repeats: int = 3) -> list[tuple[str, int, float]]:
    """(kernel name, calls per run, device ms per run) of `run`, largest first."""
    run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            run()
        torch.cuda.synchronize()
    rows = []
    for event in prof.key_averages():
        device_us = getattr(event, "device_time_total", None)
        if device_us is None:
            device_us = event.cuda_time_total
        if device_us > 0:
            rows.append((event.key, event.count // repeats, device_us / 1e3 / repeats))
    return sorted(rows, key=lambda r: -r[2])


def markdown(title: str, rows: list[tuple[str, int, float]], top: int = 25) -> str:
    total = sum(r[2] for r in rows) or 1.0
    lines = [f"## {title}", "", f"device time per run: {total:.2f} ms", "",
             "| kernel | calls | ms | share |", "|---|---|---|---|"]
    for name, calls, ms in rows[:top]:
        short = name if len(name) <= 90 else name[:87] + "..."
        lines.append(f"| `{short}` | {calls} | {ms:.3f} | {ms / total:.1%} |")
    return "\n".join(lines) + "\n"


def bert_folder(minilm: Path) -> Path:
    """A random-weight BERT-base saved as a sentence-transformers folder (MiniLM's tokenizer)."""
    import shutil

    from transformers import BertConfig, BertModel

    folder = Path(tempfile.mkdtemp(prefix="bert-base-"))
    torch.manual_seed(0)
    BertModel(BertConfig()).save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (minilm / name).is_file():
            shutil.copy(minilm / name, folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 768, "pooling_mode_mean_tokens": True}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"}]))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512}))
    return folder


def profile_minilm(model: Path, corpus_dir: Path) -> list[str]:
    """Kernel tables of the engine alone on both WordNet corpora (tokenized beforehand)."""
    embedder = sutra.Embedder(model, backend="cuda")
    limits = embedder.backend.pass_limits(None, "auto")
    sections = []
    for corpus in ("sentences", "passages"):
        texts = json.loads((corpus_dir / f"{corpus}.json").read_text())
        batch, _ = embedder.tokenizer.encode_arrays(texts, embedder.max_seq_length)
        rows = kernel_table(lambda batch=batch: embedder.backend.encode_rows(batch, limits))
        sections.append(markdown(f"all-MiniLM-L6-v2, {corpus} ({len(texts)} texts, "
                                 f"{len(batch.ids)} tokens), engine alone", rows))
        print(sections[-1], flush=True)
    return sections


def hf_bert_rows(folder: Path, ids: np.ndarray) -> list[tuple[str, int, float]]:
    """Kernel table of the reference: the same weights through transformers' BertModel."""
    from transformers import BertModel

    model = BertModel.from_pretrained(folder, attn_implementation="sdpa", dtype=torch.float16)
    model = model.cuda().eval()
    input_ids = torch.from_numpy(ids).long().cuda()

    def run() -> None:
        with torch.inference_mode():
            model(input_ids=input_ids)

    return kernel_table(run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, default=Path("bench/data/wordnet"))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench/results")))
    args = parser.parse_args()

    sections = [f"# GPU engine kernels ({torch.cuda.get_device_name()})", ""]
    sections += profile_minilm(args.model, args.corpus)

    folder = bert_folder(args.model)
    bert = sutra.Embedder(folder, backend="cuda", max_batch_tokens=65536)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(512, 128)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 101, 102
    batch = sutra.backends.TokenBatch(ids.reshape(-1),
                                      np.arange(0, 512 * 128 + 1, 128, dtype=np.int32))
    limits = bert.backend.pass_limits(None, "auto")
    rows = kernel_table(lambda: bert.backend.encode_rows(batch, limits))
    sections.append(markdown("BERT-base shape, L=128, B=512 (65,536 tokens)", rows))
    print(sections[-1], flush=True)
    sections.append(markdown("the same BERT-base in Hugging Face transformers (fp16, sdpa)",
                             hf_bert_rows(folder, ids)))
    print(sections[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_kernel_profile.md").write_text("\n".join(sections))


if __name__ == "__main__":
    main()
