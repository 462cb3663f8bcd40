"""Random-weight encoder folders and their transformers reference, for tests/test_gpu_engine.py.

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

The reference is the same ``transformers`` model in float32 on the CPU, fed the ids the
tokenizer gives, with sentence-transformers' pooling done here from ``last_hidden_state`` and the
attention mask. Needs torch and transformers (imported inside the functions).
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    """

    name: str
    model_type: str
    config: dict = field(default_factory=dict)
    pooling: str = "mean"
    seed: int = 0
    gpu_only: bool = False

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


def _config_and_model_classes(model_type: str):
    import transformers

    return {
        "bert": (transformers.BertConfig, transformers.BertModel),
        "roberta": (transformers.RobertaConfig, transformers.RobertaModel),
        "xlm-roberta": (transformers.XLMRobertaConfig, transformers.XLMRobertaModel),
        "distilbert": (transformers.DistilBertConfig, transformers.DistilBertModel),
        "mpnet": (transformers.MPNetConfig, transformers.MPNetModel),
    }[model_type]


def build_model(case: EncoderCase):
    """The random ``transformers`` model of ``case`` (float32, eval mode, eager attention)."""
    import torch

    config_class, model_class = _config_and_model_classes(case.model_type)
    activation = ({} if case.model_type == "distilbert" or "hidden_act" in case.config
                  else {"hidden_act": "gelu"})
    config = config_class(vocab_size=VOCAB_SIZE, **activation, **case.config)
    torch.manual_seed(case.seed)
    with warnings.catch_warnings():  # third-party deprecation notes are not under test here
        warnings.simplefilter("ignore")
        kwargs = {} if case.model_type == "distilbert" else {"add_pooling_layer": False}
        # eager: the plain softmax(QK^T / sqrt(d) + mask) V, in float32
        model = model_class(config, **kwargs).eval()
        model.set_attn_implementation("eager")
    generator = torch.Generator().manual_seed(case.seed)

    def normal(tensor, std: float, mean: float = 0.0):
        tensor.copy_(torch.randn(tensor.shape, generator=generator) * std + mean)

    touched = set()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                normal(module.weight, NORM_STD, 1.0)
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
                {"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False})
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
