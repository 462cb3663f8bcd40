"""Tokenization with Hugging Face `tokenizers` (Rust, parallel, the GIL released)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from . import _core
from .backends.base import TokenBatch


def check_unicode(text: str, name: str) -> None:
    """ValueError when ``text`` is not valid Unicode: a lone surrogate (U+D800 to U+DFFF), which
    Python strings can hold (from ``"\\udc00"`` in JSON, or surrogateescape) but no tokenizer
    accepts. The message names ``name`` and the position of the bad code point. ASCII texts cost
    one C-level scan."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{name} holds a lone surrogate U+{ord(text[exc.start]):04X} at position "
            f"{exc.start}; texts must be valid Unicode (encodable as UTF-8)"
        ) from None


def raise_if_not_unicode(texts: list[str], what: str = "sentences") -> None:
    """:func:`check_unicode` of every text, named ``what[index]``."""
    for index, text in enumerate(texts):
        check_unicode(text, f"{what}[{index}]")


# What BERT's normalizer treats as a CJK ideograph (BertNormalizer's handle_chinese_chars),
# U+2B820-U+2B91F left out as tokenizers leaves them out (its ranges resume at U+2B920).
_CJK_IDEOGRAPH = re.compile("[\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff\U00020000-\U0002a6df"
                            "\U0002a700-\U0002b81f\U0002b920-\U0002ceaf\U0002f800-\U0002fa1f]")

# A first guess of how many characters hold one token (BERT's WordPiece on English runs at about
# 4-5): texts longer than max_tokens times this are cut from a prefix (TextTokenizer.encode_cut).
PREFIX_CHARS_PER_TOKEN = 8


class TextTokenizer:
    """Turns texts into token ids with the model's special tokens, without truncation.

    Truncation and windowing happen afterwards (see :meth:`truncate`), so the caller knows which
    texts were cut and long texts can be split into windows instead.

    The batch path (:meth:`encode_arrays`: what ``encode()`` runs) uses
    sutra's native WordPiece tokenizer when the model's tokenizer.json is one it reproduces
    exactly (:mod:`sutra.native_tokenizer`: BERT normalizer and pre-tokenizer, WordPiece;
    all-MiniLM-L6-v2, all-mpnet-base-v2, BERT, BGE, E5, GTE): the same ids as Hugging Face
    ``tokenizers``, written straight into the flat arrays, and the same character offsets
    (:meth:`encode_with_offsets`, for chunking). Other tokenizers, and single texts encoded
    holding the GIL (:meth:`encode`), use ``tokenizers``.
    """

    def __init__(self, path: str | Path, pad_token_id: int | None = None,
                 native: bool = True) -> None:
        from . import native_tokenizer

        self._native = native_tokenizer.load(path) if native else None
        self._tokenizer = Tokenizer.from_file(str(path))
        # tokenizer.json files often carry the padding and truncation their authors trained with;
        # sutra pads per batch and truncates itself.
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.pad_token_id = self._find_pad_id() if pad_token_id is None else int(pad_token_id)
        self.num_prefix_special, self.num_suffix_special = self._special_layout()
        normalizer = json.loads(self._tokenizer.to_str()).get("normalizer") or {}
        self._isolates_cjk = (normalizer.get("type") == "BertNormalizer"
                              and bool(normalizer.get("handle_chinese_chars", True)))

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    @property
    def num_special(self) -> int:
        return self.num_prefix_special + self.num_suffix_special

    def encode_cut(self, texts: list[str], max_tokens: int, *, release_gil: bool = False,
                   encodings: list | None = None) -> tuple[list[list[int]], list[bool]]:
        """Token ids of each text cut to at most ``max_tokens`` (special tokens included, as
        :meth:`truncate` cuts), and which texts were cut.

        Equal to ``truncate(encode(text), max_tokens)``, without tokenizing all of a long text:
        a text of more than ``max_tokens * PREFIX_CHARS_PER_TOKEN`` characters is tokenized from
        a prefix, grown four times at a time until the tokens that end before the prefix's last
        whitespace -- which no cut after it can change -- are enough (a text with no whitespace
        left to cut at is tokenized whole). Memory and time grow with what is kept, not with the
        text: a 5 MB text costs about what its first few thousand characters cost.
        """
        short = max_tokens * PREFIX_CHARS_PER_TOKEN
        if self._native is not None and encodings is None and (len(texts) > 1 or release_gil):
            # The native batch call cuts while it reads: no prefix search needed.
            ids, cu, flags = self._native_batch(texts, max_tokens)
            return _split_lists(ids, cu), [bool(f) for f in flags]
        if encodings is None:
            sequences = self.encode([t if len(t) <= short else "" for t in texts],
                                    release_gil=release_gil)
        else:  # tokenize_batch ran already (long texts left empty), on a pipeline's worker
            sequences = [e.ids for e in encodings]
        cut = [False] * len(texts)
        for index, text in enumerate(texts):
            if len(text) > short:
                check_unicode(text, f"sentences[{index}]")
                sequences[index], cut[index] = self._encode_prefix(text, max_tokens, short)
            elif len(sequences[index]) > max_tokens:
                sequences[index] = self.truncate(sequences[index], max_tokens)
                cut[index] = True
        return sequences, cut

    def _encode_prefix(self, text: str, max_tokens: int, chars: int) -> tuple[list[int], bool]:
        """``text`` cut to ``max_tokens`` from enough of its start (see encode_cut), and
        whether it was cut."""
        keep = max_tokens - self.num_suffix_special  # leading specials and content tokens
        while chars < len(text):
            prefix = text[:chars]
            boundary = max(prefix.rfind(c) for c in " \t\n\r\u3000")
            if self._isolates_cjk:
                # BERT's normalizer makes every CJK ideograph a word of its own: a boundary too.
                last = _CJK_IDEOGRAPH.search(prefix[::-1])
                if last is not None:
                    boundary = max(boundary, len(prefix) - 1 - last.start())
            if boundary > 0:
                encoding = self._tokenizer.encode(prefix, add_special_tokens=True)
                stable = sum(1 for (start, end), special in
                             zip(encoding.offsets, encoding.special_tokens_mask)
                             if not special and end <= boundary)
                if self.num_prefix_special + stable >= keep:
                    ids = encoding.ids
                    return ids[:keep] + ids[len(ids) - self.num_suffix_special:], True
            chars *= 4
        ids = self.encode([text])[0]
        return self.truncate(ids, max_tokens), len(ids) > max_tokens

    @property
    def is_native(self) -> bool:
        """Whether the batch path runs sutra's native WordPiece tokenizer."""
        return self._native is not None

    def tokenize_batch(self, texts: list[str], max_tokens: int | None = None) -> Any:
        """The tokenizer's batch call alone (every core, the GIL released). With the native
        tokenizer: its finished arrays ``(ids, cu_seqlens, cut)``; otherwise
        ``tokenizers.Encoding`` objects (uncut), with a text too long to matter whole (see
        :meth:`encode_cut`) left empty, for :meth:`encode_arrays` to finish. A pipeline runs
        this on worker threads."""
        if self._native is not None:
            return self._native_batch(texts, max_tokens)
        if max_tokens is not None:
            short = max_tokens * PREFIX_CHARS_PER_TOKEN
            texts = [t if len(t) <= short else "" for t in texts]
        if not texts:
            return []
        encode_batch = getattr(self._tokenizer, "encode_batch_fast", self._tokenizer.encode_batch)
        try:
            return encode_batch(texts, add_special_tokens=True)
        except TypeError:
            raise_if_not_unicode(texts)
            raise

    def encode(self, texts: list[str], *, release_gil: bool = False) -> list[list[int]]:
        """Token ids of each text, special tokens included, no truncation. ``release_gil``:
        a single text too goes through the batch call, which releases the GIL (for large texts
        tokenized on a worker thread, so the event loop keeps running).

        One text is encoded holding the GIL: the batch call releases it, and getting it back
        waits out another thread's switch interval (5 ms) whenever one runs Python meanwhile
        (measured: 29 us per sentence this way next to a busy Python thread, 5.3 ms with the batch
        call), which on a server's event loop would stall every request in flight. Several texts
        are encoded by the batch call, in parallel with the GIL released (the native one when
        the tokenizer is WordPiece).
        """
        if not texts:
            return []
        try:
            if len(texts) == 1 and not release_gil:
                return [self._tokenizer.encode(texts[0], add_special_tokens=True).ids]
            if self._native is not None:
                return _split_lists(*self._native_batch(texts, None)[:2])
            encode_batch = getattr(self._tokenizer, "encode_batch_fast",
                                   self._tokenizer.encode_batch)
            return [e.ids for e in encode_batch(texts, add_special_tokens=True)]
        except TypeError:
            # The tokenizer names no text; find the one it refused (only on this error path).
            raise_if_not_unicode(texts)
            raise

    def _native_batch(self, texts: list[str], max_tokens: int | None) -> tuple:
        try:
            return self._native.encode_batch(texts, max_tokens)
        except (UnicodeEncodeError, ValueError):
            raise_if_not_unicode(texts)  # names the text with a lone surrogate
            raise

    def encode_arrays(self, texts: list[str], max_tokens: int | None = None, *,
                      encodings: Any = None) -> tuple[TokenBatch, int]:
        """The token ids of ``texts`` (special tokens included) as flat arrays: ``ids int32
        [T]``, ``cu_seqlens int32 [len(texts) + 1]``, and how many texts were cut to
        ``max_tokens`` (:meth:`encode_cut`; ``None``: no cut, 0). The tokenizer's batch call
        runs in parallel with the GIL released; its output is flattened in one C loop
        (``tokenizers``) or is the arrays already (the native tokenizer). ``encodings``: what
        :meth:`tokenize_batch` gave for the same texts and ``max_tokens``, if it ran already
        (on a pipeline's worker thread)."""
        if self._native is not None:
            ids, cu, flags = (self._native_batch(texts, max_tokens) if encodings is None
                              else encodings)
            return TokenBatch(ids, cu), int(np.count_nonzero(flags))
        short = None if max_tokens is None else max_tokens * PREFIX_CHARS_PER_TOKEN
        if (encodings is not None or len(texts) > 1) and (
                short is None or all(len(t) <= short for t in texts)):
            # The common case: no text to cut from a prefix (see encode_cut), and not one text,
            # which encode() tokenizes holding the GIL.
            if encodings is None:
                encodings = self.tokenize_batch(texts, max_tokens)
            ids, cu, flags = _core.flatten_token_ids(encodings, max_tokens,
                                                     self.num_suffix_special)
            return TokenBatch(ids, cu), int(np.count_nonzero(flags))
        if max_tokens is None:
            sequences, cut = self.encode(texts), 0
        else:
            sequences, flags = self.encode_cut(texts, max_tokens, encodings=encodings)
            cut = sum(flags)
        ids, cu, _ = _core.flatten_token_ids(sequences)
        return TokenBatch(ids, cu), cut

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids of ``text`` without special tokens and each token's ``[start, end)`` character
        offsets in it (for chunking by tokens). The native tokenizer, where the model has one,
        gives the same ids and offsets as ``tokenizers`` and releases the GIL while it runs."""
        if self._native is not None:
            try:
                ids, offsets = self._native.encode_with_offsets(text)
            except UnicodeEncodeError:
                check_unicode(text, "text")  # names the lone surrogate
                raise
            return ids.tolist(), list(map(tuple, offsets.tolist()))
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        return encoding.ids, encoding.offsets

    def special_token_ids(self) -> list[int]:
        """Ids of the special tokens ([CLS], [SEP], padding, mask...), not the unknown token,
        which stands for text."""
        unk = None
        unk_token = getattr(self._tokenizer.model, "unk_token", None)
        if unk_token is not None:
            unk = self._tokenizer.token_to_id(unk_token)
        return sorted(i for i, token in self._tokenizer.get_added_tokens_decoder().items()
                      if token.special and i != unk)

    def truncate(self, ids: list[int], max_length: int) -> list[int]:
        """Cut a sequence to ``max_length`` tokens keeping its leading and trailing special tokens,
        as Hugging Face truncation does for a single sequence."""
        if len(ids) <= max_length:
            return ids
        suffix = ids[len(ids) - self.num_suffix_special:] if self.num_suffix_special else []
        return ids[: max_length - len(suffix)] + suffix

    def _find_pad_id(self) -> int:
        padding = self._tokenizer.padding
        if padding and padding.get("pad_id") is not None:
            return int(padding["pad_id"])
        for token in ("[PAD]", "<pad>", "<PAD>"):
            token_id = self._tokenizer.token_to_id(token)
            if token_id is not None:
                return int(token_id)
        return 0

    def _special_layout(self) -> tuple[int, int]:
        """How many special tokens the post-processor puts before and after a text."""
        probe = self._tokenizer.encode("hello", add_special_tokens=True)
        content = self._tokenizer.encode("hello", add_special_tokens=False).ids
        ids = probe.ids
        for start in range(len(ids) - len(content) + 1):
            if ids[start:start + len(content)] == content:
                return start, len(ids) - start - len(content)
        return 0, 0


def _split_lists(ids: np.ndarray, cu_seqlens: np.ndarray) -> list[list[int]]:
    """Flat arrays back into one list of ids per text (for callers that count or slice)."""
    flat = ids.tolist()
    bounds = cu_seqlens.tolist()
    return [flat[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1)]
