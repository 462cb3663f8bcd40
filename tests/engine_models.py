"""Random-weight encoder folders and their transformers reference, for tests/test_gpu_engine.py,
tests/test_gpu_modernbert.py and bench/gpu_modernbert.py.

Each model is a ``transformers`` model built from its config with a fixed seed, its weights then
redrawn far from Hugging Face's init (std 0.02, LayerNorm at 1 and 0, zero biases), so that a
mistake in a LayerNorm, a bias, a position table, a token-type row or MPNet's relative bias
moves the embeddings clearly:

    word, position, token-type and relative-bias tables  N(0, 1)
    Linear weights                                       N(0, 1 / in_features)
    Linear biases, LayerNorm biases                      N(0, 0.3^2)
    LayerNorm weights                                    1 + N(0, 0.3^2)

(attention logits then have a spread of about 1: attention is neither uniform nor one-hot). The
folder is what sentence-transformers saves: ``config.json`` and ``model.safetensors`` (float32),
``modules.json``, ``sentence_bert_config.json``, ``1_Pooling/config.json``, and the tokenizer
files of all-MiniLM-L6-v2 (WordPiece, 30522 ids, [CLS] 101, [SEP] 102, [PAD] 0).

ModernBERT (:data:`MODERNBERT_CASES`) takes the same redraw (it has no biases, and its
LayerNorms none either) and the WordPiece tokenizer of tests/fixtures/modernbert/ (800 ids,
[PAD] 0, [CLS] 2, [SEP] 3; the model's own table keeps ModernBERT's 50368 rows, which
:func:`random_sequences` reaches), with ``max_seq_length`` 8192.

The reference is the same ``transformers`` model in float32 on the CPU, fed the ids the
tokenizer gives, with sentence-transformers' pooling done here from ``last_hidden_state`` and the
attention mask (:func:`reference_embeddings`); or one sequence per call without padding on any
device, keeping every token's state (:func:`reference_states`). Needs torch and transformers
(imported inside the functions).
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt")
VOCAB_SIZE = 30522  # all-MiniLM-L6-v2's WordPiece vocabulary
CLS_ID, SEP_ID = 101, 102
FIRST_WORD_ID = 1000  # ids below are [PAD], [unused*], [UNK], [CLS], [SEP], [MASK] and symbols
MAX_SEQ_LENGTH = 512
TABLE_STD = 1.0
BIAS_STD = 0.3
NORM_STD = 0.3


@dataclass(frozen=True)
class EncoderCase:
    """One random encoder: its ``transformers`` config and the pooling of its pipeline.

    Attributes:
        name: the test id.
        model_type: ``config.json``'s ``model_type``.
        config: keyword arguments of the ``transformers`` config class.
        pooling: ``"mean"`` or ``"cls"`` (sentence-transformers' ``pooling_mode``).
        seed: torch seed of the build and the redraw.
        gpu_only: too large for the CPU backend in a quick test (BERT-base).
        max_seq_length: ``sentence_bert_config.json``'s.
    """

    name: str
    model_type: str
    config: dict = field(default_factory=dict)
    pooling: str = "mean"
    seed: int = 0
    gpu_only: bool = False
    max_seq_length: int = MAX_SEQ_LENGTH

    @property
    def pad_token_id(self) -> int:
        return int(self.config.get("pad_token_id", 0))

    @property
    def hidden_size(self) -> int:
        return int(self.config.get("hidden_size") or self.config["dim"])


# Head sizes 32, 64 and 128 (the cuda engine's attention supports those); RoBERTa-style tables
# have 514 rows (positions start after the padding index 1), so all of them take 512 tokens.
CASES = {
    case.name: case for case in (
        EncoderCase("bert-base", "bert", {
            "hidden_size": 768, "num_attention_heads": 12, "num_hidden_layers": 12,
            "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2,
            "pad_token_id": 0, "layer_norm_eps": 1e-12}, "mean", 11, gpu_only=True),
        EncoderCase("bert", "bert", {
            "hidden_size": 128, "num_attention_heads": 4, "num_hidden_layers": 2,
            "intermediate_size": 512, "max_position_embeddings": 512, "type_vocab_size": 2,
            "pad_token_id": 0, "layer_norm_eps": 1e-12}, "mean", 12),
        # The feed-forward's other activations: the engine fuses these into cuBLASLt's epilogue
        # (the erf GELU above runs as its own kernel).
        EncoderCase("bert-gelu-tanh", "bert", {
            "hidden_size": 128, "num_attention_heads": 4, "num_hidden_layers": 2,
            "intermediate_size": 512, "max_position_embeddings": 512, "type_vocab_size": 2,
            "pad_token_id": 0, "layer_norm_eps": 1e-12, "hidden_act": "gelu_new"}, "mean", 17),
        EncoderCase("bert-relu", "bert", {
            "hidden_size": 128, "num_attention_heads": 4, "num_hidden_layers": 2,
            "intermediate_size": 512, "max_position_embeddings": 512, "type_vocab_size": 2,
            "pad_token_id": 0, "layer_norm_eps": 1e-12, "hidden_act": "relu"}, "mean", 18),
        EncoderCase("roberta", "roberta", {
            "hidden_size": 128, "num_attention_heads": 2, "num_hidden_layers": 2,
            "intermediate_size": 256, "max_position_embeddings": 514, "type_vocab_size": 1,
            "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
            "layer_norm_eps": 1e-5}, "cls", 13),
        EncoderCase("xlm-roberta", "xlm-roberta", {
            "hidden_size": 256, "num_attention_heads": 2, "num_hidden_layers": 2,
            "intermediate_size": 512, "max_position_embeddings": 514, "type_vocab_size": 1,
            "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
            "layer_norm_eps": 1e-5}, "mean", 14),
        EncoderCase("distilbert", "distilbert", {
            "dim": 128, "n_heads": 4, "n_layers": 2, "hidden_dim": 256,
            "max_position_embeddings": 512, "pad_token_id": 0, "activation": "gelu",
            "sinusoidal_pos_embds": False}, "mean", 15),
        EncoderCase("mpnet", "mpnet", {
            "hidden_size": 128, "num_attention_heads": 2, "num_hidden_layers": 2,
            "intermediate_size": 256, "max_position_embeddings": 514,
            "relative_attention_num_buckets": 32, "pad_token_id": 1, "bos_token_id": 0,
            "eos_token_id": 2, "layer_norm_eps": 1e-5}, "mean", 16),
    )
}


# ModernBERT-base's shapes (ModernBertConfig's defaults, spelled out): 22 layers of which every
# third from layer 0 is global and the others see +-64 tokens (local_attention 128), hidden 768,
# 12 heads of 64, GeGLU with 1152, 8192 positions. The special ids are the fixture tokenizer's.
MODERNBERT_TOKENIZER = FIXTURES / "modernbert"
MODERNBERT_VOCAB = 50368
MODERNBERT_CLS_ID, MODERNBERT_SEP_ID = 2, 3
MODERNBERT_FIRST_WORD_ID = 5  # below: [PAD], [UNK], [CLS], [SEP], [MASK]
MODERNBERT_MAX_LENGTH = 8192
_MODERNBERT_IDS = {"vocab_size": MODERNBERT_VOCAB, "pad_token_id": 0,
                   "cls_token_id": MODERNBERT_CLS_ID, "sep_token_id": MODERNBERT_SEP_ID,
                   "bos_token_id": MODERNBERT_CLS_ID, "eos_token_id": MODERNBERT_SEP_ID,
                   "max_position_embeddings": MODERNBERT_MAX_LENGTH, "local_attention": 128,
                   "global_attn_every_n_layers": 3}
MODERNBERT_CASES = {
    case.name: case for case in (
        EncoderCase("modernbert-base", "modernbert", {
            **_MODERNBERT_IDS, "hidden_size": 768, "num_attention_heads": 12,
            "num_hidden_layers": 22, "intermediate_size": 1152}, "mean", 21, gpu_only=True,
            max_seq_length=MODERNBERT_MAX_LENGTH),
        # Quick cases and the cpu backend: layers 0 and 3 global, 1 and 2 local.
        EncoderCase("modernbert-small", "modernbert", {
            **_MODERNBERT_IDS, "hidden_size": 256, "num_attention_heads": 4,
            "num_hidden_layers": 4, "intermediate_size": 384}, "mean", 22,
            max_seq_length=MODERNBERT_MAX_LENGTH),
    )
}


def _config_and_model_classes(model_type: str):
    import transformers

    return {
        "bert": (transformers.BertConfig, transformers.BertModel),
        "roberta": (transformers.RobertaConfig, transformers.RobertaModel),
        "xlm-roberta": (transformers.XLMRobertaConfig, transformers.XLMRobertaModel),
        "distilbert": (transformers.DistilBertConfig, transformers.DistilBertModel),
        "mpnet": (transformers.MPNetConfig, transformers.MPNetModel),
        "modernbert": (transformers.ModernBertConfig, transformers.ModernBertModel),
    }[model_type]


def build_model(case: EncoderCase, attn_implementation: str = "eager", device: str = "cpu"):
    """The random ``transformers`` model of ``case`` (float32, eval mode) on ``device``.

    ``attn_implementation``: ``"eager"`` is the plain softmax(QK^T / sqrt(d) + mask) V;
    ``"sdpa"`` the same in float32 without the L x L buffer (ModernBERT at 8192 tokens). The
    weights are drawn on the CPU whatever the device (the same model everywhere); building on
    the GPU only makes transformers' own initialization fast (ModernBERT-base's takes 25 s on
    two CPU cores)."""
    import torch

    config_class, model_class = _config_and_model_classes(case.model_type)
    bert_like = case.model_type not in ("distilbert", "modernbert")
    activation = {"hidden_act": "gelu"} if bert_like and "hidden_act" not in case.config else {}
    config = config_class(**{"vocab_size": VOCAB_SIZE, **activation, **case.config})
    torch.manual_seed(case.seed)
    with warnings.catch_warnings(), torch.device(device):
        warnings.simplefilter("ignore")  # third-party deprecation notes are not under test here
        kwargs = {"add_pooling_layer": False} if bert_like else {}
        model = model_class(config, **kwargs).eval()
        model.set_attn_implementation(attn_implementation)
    generator = torch.Generator().manual_seed(case.seed)

    def normal(tensor, std: float, mean: float = 0.0):
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * std + mean)

    touched = set()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                normal(module.weight, NORM_STD, 1.0)
                if module.bias is not None:  # ModernBERT's have none
                    normal(module.bias, BIAS_STD)
            elif isinstance(module, torch.nn.Linear):
                normal(module.weight, 1.0 / math.sqrt(module.in_features))
                if module.bias is not None:
                    normal(module.bias, BIAS_STD)
            elif isinstance(module, torch.nn.Embedding):  # MPNet's relative bias is one too
                normal(module.weight, TABLE_STD)
            else:
                continue
            touched.update(id(p) for p in module.parameters(recurse=False))
    missed = [name for name, p in model.named_parameters() if id(p) not in touched]
    assert not missed, f"{case.name}: parameters left at their init: {missed}"
    return model


def write_folder(case: EncoderCase, model, folder: Path, tokenizer_folder: Path) -> Path:
    """Save ``model`` as a sentence-transformers folder: Transformer -> Pooling(case.pooling)."""
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(folder)
    assert (folder / "model.safetensors").is_file(), "save_pretrained wrote no safetensors"
    for name in TOKENIZER_FILES:
        if (tokenizer_folder / name).is_file():
            shutil.copyfile(tokenizer_folder / name, folder / name)
    _write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "",
         "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
    ])
    _write_json(folder / "sentence_bert_config.json",
                {"max_seq_length": case.max_seq_length, "do_lower_case": False})
    (folder / "1_Pooling").mkdir(exist_ok=True)
    _write_json(folder / "1_Pooling" / "config.json",
                {"embedding_dimension": case.hidden_size, "pooling_mode": case.pooling,
                 "include_prompt": True})
    return folder


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def tokenize(tokenizer_json: Path, texts: list[str]) -> list[list[int]]:
    """Ids of each text with [CLS] and [SEP], untruncated (the tokenizers library directly)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=True)]


def reference_embeddings(model, case: EncoderCase, sequences: list[list[int]],
                         batch_size: int = 16) -> np.ndarray:
    """Pooled ``last_hidden_state`` of each id sequence: float64 ``[n, hidden]``.

    Sequences run in length-sorted, right-padded batches (padded with the config's
    ``pad_token_id``, as sentence-transformers pads), float32 on the CPU."""
    import torch

    out = np.zeros((len(sequences), case.hidden_size), dtype=np.float64)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    with torch.no_grad():
        for first in range(0, len(order), batch_size):
            chunk = order[first:first + batch_size]
            width = max(len(sequences[i]) for i in chunk)
            ids = torch.full((len(chunk), width), case.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, index in enumerate(chunk):
                seq = torch.tensor(sequences[index], dtype=torch.long)
                ids[row, :len(seq)] = seq
                mask[row, :len(seq)] = 1
            states = model(input_ids=ids, attention_mask=mask).last_hidden_state
            if case.pooling == "cls":
                pooled = states[:, 0]
            else:
                weights = mask.unsqueeze(-1).to(states.dtype)
                pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            out[chunk] = pooled.double().numpy()
    return out


def reference_states(model, sequences, device: str = "cpu") -> list[np.ndarray]:
    """``last_hidden_state`` of each id sequence: float64 ``[len, hidden]``, one sequence per
    call (no padding, no attention mask: nothing for a model's mask handling to get wrong) on
    ``device``, in the model's dtype. float32 matmuls stay float32 there (no TF32)."""
    import torch

    out = []
    allow_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # third-party notes are not under test here
            for sequence in sequences:
                ids = torch.as_tensor(np.asarray(sequence, dtype=np.int64)[None], device=device)
                states = model(input_ids=ids).last_hidden_state[0]
                out.append(states.double().cpu().numpy())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    return out


def pool(states: np.ndarray, mode: str) -> np.ndarray:
    """One sequence's pooled vector, as sentence-transformers pools: ``"mean"`` or ``"cls"``."""
    return states[0] if mode == "cls" else states.mean(0)


def random_sequences(lengths, seed: int, cls_id: int = MODERNBERT_CLS_ID,
                     sep_id: int = MODERNBERT_SEP_ID, first_id: int = MODERNBERT_FIRST_WORD_ID,
                     vocab: int = MODERNBERT_VOCAB) -> list[list[int]]:
    """One id sequence per length: ``[CLS]`` alone for 1, else ``[CLS]``, ids drawn from
    ``[first_id, vocab)``, ``[SEP]`` (ModernBERT's ids by default)."""
    rng = np.random.default_rng(seed)
    return [[cls_id] if n == 1 else
            [cls_id, *rng.integers(first_id, vocab, n - 2).tolist(), sep_id] for n in lengths]


def corpus_texts(tokenizer_json: Path, token_counts, seed: int) -> list[str]:
    """One text per count: consecutive lines of tests/fixtures/wordnet_sample.txt (joined with
    ". ", from a random line on, around again when needed) cut after the token that makes
    ``count`` tokens with the special tokens (re-tokenized, a cut word may come out a token
    more or less); a count of 2 or less is the empty text."""
    from tokenizers import Tokenizer

    lines = [line for line in (FIXTURES / "wordnet_sample.txt").read_text(
        encoding="utf-8").splitlines() if line.strip()]
    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    rng = np.random.default_rng(seed)
    texts = []
    for count in token_counts:
        start = int(rng.integers(len(lines)))
        rotated = lines[start:] + lines[:start]
        text = ". ".join(rotated)
        while len(tokenizer.encode(text).ids) < count:
            text += ". " + text
        offsets = tokenizer.encode(text).offsets  # [CLS] first: content token k is at k + 1
        texts.append(text[:offsets[count - 2][1]] if count > 2 else "")
    return texts


# Texts outside ASCII and the edges of tokenization (all-MiniLM-L6-v2's tokenizer lower-cases,
# strips accents and splits CJK characters; an emoji is [UNK]).
SPECIAL_TEXTS = (
    "",
    "naïve café",
    "東京",
    "😀 emoji",
    "مرحبا بالعالم، كيف حالك؟",
    "Zoë's Straße — déjà vu, Ångström, façade",
    "नमस्ते दुनिया",
    "Ελληνικά και русский текст",
    "한국어 문장입니다",
    "a",
    "   ",
    "The quick brown fox jumps over the lazy dog.",
)


def mixed_texts(words: list[str], tokenizer_json: Path, count: int, max_tokens: int,
                seed: int) -> list[str]:
    """``count`` texts of 2 (empty) to ``max_tokens`` tokens (special tokens included), from no
    word to hundreds, a fifth of them with one of :data:`SPECIAL_TEXTS` inside, in no order."""
    rng = np.random.default_rng(seed)
    sizes = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233)
    texts = []
    for index in range(count):
        # one text in 50 is cut to max_tokens: the longest rows share passes with short ones
        n = 400 if index % 50 == 25 else int(rng.choice(sizes)) + int(rng.integers(0, 4))
        picked = [str(w) for w in rng.choice(words, size=n)] if n else []
        if rng.random() < 0.2:
            picked.insert(int(rng.integers(0, len(picked) + 1)),
                          SPECIAL_TEXTS[int(rng.integers(len(SPECIAL_TEXTS)))])
        texts.append(" ".join(picked))
    lengths = [len(ids) for ids in tokenize(tokenizer_json, texts)]
    for index, length in enumerate(lengths):
        while length > max_tokens:  # drop words until the text fits without truncation
            kept = texts[index].split(" ")
            texts[index] = " ".join(kept[: max(1, int(len(kept) * max_tokens / length) - 1)])
            length = len(tokenize(tokenizer_json, [texts[index]])[0])
    return texts
