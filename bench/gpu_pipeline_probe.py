"""Where the end-to-end time goes on a GPU machine: the tokenizer's batch calls (the pipeline's
worker thread) against the caller's thread (ids extraction, engine calls), for several pipeline
chunk sizes (sutra.embedder._PIPELINE_TEXTS / _PIPELINE_CHARS), all-MiniLM-L6-v2 on the WordNet
corpora of bench/gpu_e2e.py. Results: bench/results/gpu_e2e/pipeline_probe.log.

    python bench/gpu_pipeline_probe.py MODEL_FOLDER [CORPUS_DIR]
"""
import json, statistics, sys, time
import numpy as np
import sutra
from sutra import embedder as m
from tokenizers import Tokenizer

M = sys.argv[1] if len(sys.argv) > 1 else "carry/minilm-fp16"
CORPUS = sys.argv[2] if len(sys.argv) > 2 else "bench/data/wordnet"
corpora = {"sentences": json.load(open(f"{CORPUS}/sentences.json")),
           "passages": json.load(open(f"{CORPUS}/passages.json"))}
raw = Tokenizer.from_file(f"{M}/tokenizer.json"); raw.no_padding(); raw.no_truncation()
e = sutra.Embedder(M, backend="cuda")
tok, backend = e.tokenizer, e.backend
acc = {}
def wrap(obj, name, key):
    f = getattr(obj, name)
    def g(*a, **k):
        t0 = time.perf_counter(); r = f(*a, **k); acc[key] = acc.get(key, 0) + time.perf_counter() - t0
        return r
    setattr(obj, name, g)
wrap(tok, "tokenize_batch", "worker tokenize_batch")
wrap(tok, "encode_arrays", "main encode_arrays")
wrap(backend, "encode_rows", "main engine encode_rows")
for name, texts in corpora.items():
    raw.encode_batch_fast(texts)
    t0 = time.perf_counter(); raw.encode_batch_fast(texts); whole = time.perf_counter() - t0
    print(f"{name}: one encode_batch_fast over all {len(texts)}: {whole*1e3:.1f} ms", flush=True)
    for texts_cap, chars_cap in ((2048, 1 << 17), (4096, 1 << 18), (8192, 1 << 19), (1 << 15, 1 << 20), (1 << 16, 1 << 22)):
        e._pipeline_chunk_limits = lambda t=texts_cap, c=chars_cap: (t, c)
        chunks = m._text_chunks(texts, texts_cap, chars_cap)
        t0 = time.perf_counter()
        for c in chunks: raw.encode_batch_fast(c)
        serial = time.perf_counter() - t0
        e.encode(texts)
        walls = []
        acc.clear()
        for _ in range(3):
            t0 = time.perf_counter(); e.encode(texts); walls.append(time.perf_counter() - t0)
        parts = ", ".join(f"{k} {v/3*1e3:.1f}" for k, v in acc.items())
        print(f"  chunks {len(chunks):3d} (<= {texts_cap} texts, {chars_cap} chars): e2e median "
              f"{statistics.median(walls)*1e3:.1f} ms ({len(texts)/statistics.median(walls):,.0f}/s); "
              f"chunked batch calls alone {serial*1e3:.1f} ms; per call: {parts} ms", flush=True)
