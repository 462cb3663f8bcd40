"""The native WordPiece tokenizer (``sutra._core.WordPieceTokenizer``) built from a model's
``tokenizer.json``.

:func:`load` returns ``None`` for a file the native tokenizer cannot reproduce exactly (another
model type, normalizer, pre-tokenizer or post-processor, or added tokens it does not handle), so
the caller keeps Hugging Face ``tokenizers`` for those.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import _core


def _special_ids(post: dict[str, Any]) -> tuple[list[int], list[int]] | None:
    """The ids before and after one sequence, as the post-processor adds them."""
    kind = post.get("type")
    if kind in ("BertProcessing", "RobertaProcessing"):
        return [int(post["cls"][1])], [int(post["sep"][1])]
    if kind == "TemplateProcessing":
        specials = post.get("special_tokens", {})
        prefix: list[int] = []
        suffix: list[int] = []
        seen_sequence = False
        for item in post.get("single", []):
            if "Sequence" in item:
                if seen_sequence or item["Sequence"].get("id") != "A":
                    return None
                seen_sequence = True
            elif "SpecialToken" in item:
                name = item["SpecialToken"]["id"]
                if name not in specials:
                    return None
                (suffix if seen_sequence else prefix).extend(int(i) for i in specials[name]["ids"])
            else:
                return None
        return (prefix, suffix) if seen_sequence else None
    return None


def params_from_json(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The constructor arguments of ``_core.WordPieceTokenizer`` for a parsed tokenizer.json, or
    None where the file is not one it reproduces exactly."""
    model = spec.get("model") or {}
    normalizer = spec.get("normalizer")
    pre = spec.get("pre_tokenizer")
    post = spec.get("post_processor")
    if model.get("type") != "WordPiece" or post is None:
        return None
    if normalizer is None or normalizer.get("type") != "BertNormalizer":
        return None
    if pre is None or pre.get("type") != "BertPreTokenizer":
        return None
    specials = _special_ids(post)
    if specials is None:
        return None
    added = []
    for token in spec.get("added_tokens") or []:
        content = token["content"]
        # single_word changes which matches count; whitespace inside a token would defeat the
        # whitespace-aligned chunking. lstrip/rstrip only move offsets: the stripped
        # whitespace is dropped by the pre-tokenizer anyway.
        if token.get("single_word") or not content or any(c.isspace() for c in content):
            return None
        added.append((content, int(token["id"]), bool(token.get("normalized", False))))
    vocab = model["vocab"]
    if isinstance(vocab, dict):
        items = list(vocab.items())
    else:
        items = [(t, i) for i, t in enumerate(vocab)]
    return {
        "vocab": items,
        "unk_token": model.get("unk_token", "[UNK]"),
        "continuing_subword_prefix": model.get("continuing_subword_prefix") or "##",
        "max_input_chars_per_word": int(model.get("max_input_chars_per_word", 100)),
        "clean_text": bool(normalizer.get("clean_text", True)),
        "handle_chinese_chars": bool(normalizer.get("handle_chinese_chars", True)),
        "strip_accents": normalizer.get("strip_accents"),
        "lowercase": bool(normalizer.get("lowercase", True)),
        "added_tokens": added,
        "prefix_ids": specials[0],
        "suffix_ids": specials[1],
    }


def load(path: str | Path, **overrides: Any) -> _core.WordPieceTokenizer | None:
    """A native tokenizer for the tokenizer.json at ``path`` (a file or a model folder), or
    None when the file is not a WordPiece one it reproduces exactly. ``overrides`` replace
    constructor arguments (e.g. ``lowercase=False``), for tests of each normalizer switch."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    with open(path, encoding="utf-8") as f:
        params = params_from_json(json.load(f))
    if params is None:
        return None
    params.update(overrides)
    vocab = params.pop("vocab")
    return _core.WordPieceTokenizer(vocab, **params)
