"""Where the end-to-end time goes on a GPU machine: the tokenizer's batch calls on the
pipeline's worker threads against the caller's thread (with `tokenizers`, the flattening of its
Encodings into arrays; the engine calls), for several pipeline chunk sizes and chunks in flight
(sutra.embedder._PIPELINE_TEXTS / _PIPELINE_CHARS / _PIPELINE_AHEAD_TOKENIZERS), with the native
tokenizer and with `tokenizers` (TextTokenizer(native=False), the path of RoBERTa and XLM-R),
all-MiniLM-L6-v2 on the WordNet corpora of bench/gpu_e2e.py, truncation at 256 tokens.
Results: bench/results/gpu_e2e/pipeline_probe*.log.

    python bench/gpu_pipeline_probe.py MODEL_FOLDER [CORPUS_DIR]
"""
import json
import os
import sys
import time
from pathlib import Path

import sutra
from sutra import embedder as embedder_module
from sutra.tokenization import TextTokenizer
from tokenizer import median_seconds  # bench/tokenizer.py
from tokenizers import Tokenizer

MODEL = sys.argv[1] if len(sys.argv) > 1 else "carry/minilm-fp16"
CORPUS = sys.argv[2] if len(sys.argv) > 2 else "bench/data/wordnet"
REPEATS = 5
corpora = {name: json.loads(Path(CORPUS, f"{name}.json").read_text())
           for name in ("sentences", "passages")}
if os.environ.get("PROBE_TEXTS"):  # a smoke test off the GPU: PROBE_BACKEND=cpu PROBE_TEXTS=50
    corpora = {k: v[:int(os.environ["PROBE_TEXTS"])] for k, v in corpora.items()}
raw = Tokenizer.from_file(f"{MODEL}/tokenizer.json")
raw.no_padding()
raw.enable_truncation(256)
embedder = sutra.Embedder(MODEL, backend=os.environ.get("PROBE_BACKEND", "cuda"))
native, plain = embedder.tokenizer, TextTokenizer(f"{MODEL}/tokenizer.json", native=False)
seconds: dict[str, float] = {}


def timed(obj, name, key):
    inner = getattr(obj, name)

    def call(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:  # worker threads add too: += on a dict item is atomic enough under the GIL
            seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start
    setattr(obj, name, call)


for tok in (native, plain):
    timed(tok, "encode_arrays", "main encode_arrays")
for tok in (native, plain):
    timed(tok, "tokenize_batch", "worker tokenize_batch")
timed(embedder.backend, "encode_rows", "main engine encode_rows")


for name, texts in corpora.items():
    whole = median_seconds(lambda texts=texts: raw.encode_batch_fast(texts), REPEATS)
    print(f"{name}: tokenizers encode_batch_fast over all {len(texts)} (truncation 256): "
          f"{whole * 1e3:.1f} ms ({len(texts) / whole:,.0f}/s)", flush=True)
    for tok, label in ((native, "native"), (plain, "tokenizers")):
        embedder.tokenizer = tok
        configs = ([(4096, 1 << 18, 1)] if tok is native else
                   [(4096, 1 << 18, 1)] + [(t, c, a) for t, c in ((2048, 1 << 17), (4096, 1 << 18))
                                           for a in (2, 3, 4)])
        for texts_cap, chars_cap, ahead in configs:
            if tok is plain:
                embedder._pipeline_chunk_limits = lambda t=texts_cap, c=chars_cap: (t, c)
                embedder_module._PIPELINE_AHEAD_TOKENIZERS = ahead
                chunks = len(embedder_module._text_chunks(texts, texts_cap, chars_cap))
            else:
                embedder.__dict__.pop("_pipeline_chunk_limits", None)
                chunks = (len(embedder_module._text_chunks(
                    texts, *embedder._pipeline_chunk_limits()))
                    if embedder.backend.pipelines_tokenization else 1)
            embedder.encode(texts)
            seconds.clear()
            wall = median_seconds(lambda texts=texts: embedder.encode(texts), REPEATS)
            parts = ", ".join(f"{k} {v / (REPEATS + 1) * 1e3:.1f}" for k, v in seconds.items())
            print(f"  {label:10s} chunks {chunks:3d} (<= {texts_cap} texts, {chars_cap} chars), "
                  f"{ahead} ahead: e2e median {wall * 1e3:.1f} ms ({len(texts) / wall:,.0f}/s, "
                  f"{whole / wall:.2f}x tokenizers alone); summed per call: {parts} ms",
                  flush=True)
    embedder.tokenizer = native
