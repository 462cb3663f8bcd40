"""A small grid of engine runs for compute-sanitizer: random-weight BERT (head size 64), MPNet
(relative bias) and ModernBERT (pre-norm, rotary, GeGLU, a global and two sliding-window layers
of +-64), fp16 and bf16, lengths around the attention tiles' edges, passes capped at 512
tokens so that several passes (and both staging slots) run, token states copied back too; then
80 sentence-like sequences of 1 to 12 tokens, whose passes run the packed attention row tiles,
twice (the second call replays the CUDA graphs the first captured); and the first grid again
with every GEMM tuned (``gemm_tune_min_rows=1``: cuBLASLt's candidates timed on the pass's
buffers).

    compute-sanitizer --tool memcheck --error-exitcode 9 python bench/gpu_sanitize.py MODEL_FOLDER
    compute-sanitizer --tool racecheck --error-exitcode 9 python bench/gpu_sanitize.py MODEL_FOLDER

MODEL_FOLDER: all-MiniLM-L6-v2 (its tokenizer files are copied into the random models' folders).
A second argument keeps only the models whose class name contains it (racecheck is slow: run one
model per call), e.g. ``... bench/gpu_sanitize.py MODEL_FOLDER ModernBert``.
"""
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import sutra
import torch
from sutra.backends.cuda import CudaBackend
from transformers import (
    BertConfig,
    BertModel,
    ModernBertConfig,
    ModernBertModel,
    MPNetConfig,
    MPNetModel,
)

M = sys.argv[1] if len(sys.argv) > 1 else "carry/minilm-fp16"
rng = np.random.default_rng(0)
def folder(model, hidden):
    tmp = tempfile.mkdtemp()
    model.save_pretrained(tmp, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(os.path.join(M, f), tmp)
    os.makedirs(os.path.join(tmp, "1_Pooling"))
    json.dump({"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True},
              open(os.path.join(tmp, "1_Pooling/config.json"), "w"))
    json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}],
              open(os.path.join(tmp, "modules.json"), "w"))
    json.dump({"max_seq_length": 256}, open(os.path.join(tmp, "sentence_bert_config.json"), "w"))
    return tmp
torch.manual_seed(0)
cases = [(BertModel(BertConfig(vocab_size=30522, hidden_size=128, num_attention_heads=2, num_hidden_layers=2, intermediate_size=256)), 128),
         (MPNetModel(MPNetConfig(vocab_size=30522, hidden_size=128, num_attention_heads=2, num_hidden_layers=2, intermediate_size=256)), 128),
         (ModernBertModel(ModernBertConfig(vocab_size=30522, hidden_size=128, num_attention_heads=2, num_hidden_layers=3, intermediate_size=192,
                                           local_attention=128, global_attn_every_n_layers=3, max_position_embeddings=512,
                                           pad_token_id=0, cls_token_id=101, sep_token_id=102, bos_token_id=101, eos_token_id=102)), 128)]
lengths = [1, 2, 7, 63, 65, 129, 300]
seqs = [[101] + list(rng.integers(1000, 30000, L - 2)) + [102] if L >= 2 else [101] for L in lengths]
only = sys.argv[2] if len(sys.argv) > 2 else ""
for model, hidden in [(m, h) for m, h in cases if only in type(m).__name__]:
    path = folder(model, hidden)
    for dt in ("float16", "bfloat16"):
        e = sutra.Embedder(path, backend="cuda", dtype=dt, max_batch_tokens=512)
        out = e.embed_tokens(seqs)
        print(type(model).__name__, dt, out.shape, float(np.abs(np.linalg.norm(out, axis=1) - 1).max()), flush=True)
        states = e.encode(["a short text", "another one, a little longer than that"], output_value="token_embeddings")
        print("token states", [s.shape for s in states], flush=True)
        short = [[101] + list(rng.integers(1000, 30000, int(n))) + [102]
                 for n in rng.integers(0, 11, 80)]
        first, again = e.embed_tokens(short), e.embed_tokens(short)
        print("packed + graphs", first.shape, bool(np.array_equal(first, again)), flush=True)
        # Every GEMM tuned (its candidates timed on the pass's own buffers), graphs off.
        e.backend = None
        e.backend = CudaBackend(e.model, dtype=dt, max_tokens=512, gemm_tune_min_rows=1,
                                graph_max_tokens=0)
        tuned = e.embed_tokens(seqs)
        print("tuned GEMMs", tuned.shape, float(np.abs(tuned - out).max()), flush=True)
