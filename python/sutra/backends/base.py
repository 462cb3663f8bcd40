"""The backend contract: what every backend (ONNX Runtime on CPUs, the CUDA engine, the
multi-GPU pool) receives and returns.

A backend gets token arrays in the one currency of sutra -- ``ids int32 [T]`` and
``cu_seqlens int32 [B + 1]`` (sequence ``b`` is ``ids[cu_seqlens[b]:cu_seqlens[b + 1]]``, every
sequence at most the model's maximum length, special tokens included) -- and returns the model
pipeline's output for each sequence, in the same order. How it cuts them into forward passes is
its own business: it plans them with the one batch planner (:func:`sutra._core.plan_batches`)
within the caller's :class:`PassLimits`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _core


@dataclass(frozen=True)
class TokenBatch:
    """Flat token arrays.

    Attributes:
        ids: int32 ``[T]``, the sequences' token ids one after the other.
        cu_seqlens: int32 ``[B + 1]``: 0, then the running total of the sequence lengths.
    """

    ids: np.ndarray
    cu_seqlens: np.ndarray

    @classmethod
    def from_sequences(cls, sequences: list[list[int]] | list[np.ndarray]) -> TokenBatch:
        """Flat arrays of token-id lists (one loop per sequence, none per token)."""
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int32, count=len(sequences))
        cu = np.zeros(len(sequences) + 1, dtype=np.int32)
        np.cumsum(lengths, out=cu[1:])
        ids = (np.concatenate([np.asarray(s, dtype=np.int32) for s in sequences])
               if sequences else np.zeros(0, dtype=np.int32))
        return cls(ids.astype(np.int32, copy=False), cu)

    @property
    def lengths(self) -> np.ndarray:
        """int32 ``[B]``: ``diff(cu_seqlens)``."""
        return np.diff(self.cu_seqlens).astype(np.int32, copy=False)

    def __len__(self) -> int:
        return len(self.cu_seqlens) - 1

    def sequence(self, b: int) -> np.ndarray:
        return self.ids[self.cu_seqlens[b]:self.cu_seqlens[b + 1]]


@dataclass(frozen=True)
class PassLimits:
    """How a caller bounds the forward passes a backend plans.

    Attributes:
        max_sequences: most sequences in one pass (``encode``'s ``batch_size``).
        max_tokens: most tokens one pass computes (``max_batch_tokens``: rows x longest for a
            padded pass).
        pass_cost_tokens: ``None``: the fewest passes; a number: the fixed cost of one more pass
            in tokens of compute, so that a batch of mixed lengths is cut into passes of similar
            lengths where that saves more padding than it costs (a streaming server's batches).
    """

    max_sequences: int = 32
    max_tokens: int = 16384
    pass_cost_tokens: float | None = None


@dataclass(frozen=True)
class EncodedRows:
    """What a backend returns.

    Attributes:
        embeddings: float32 ``[B, D]``, the pipeline's output per sequence (pooled, through the
            Dense modules, normalized when the model normalizes).
        token_states: float32 ``[T, H]``, the encoder's last hidden state of every token, aligned
            with the input ``ids``; ``None`` unless asked for.
    """

    embeddings: np.ndarray
    token_states: np.ndarray | None = None


# Called after each forward pass with (passes done, passes planned).
PassCallback = Callable[[int, int], None]


class Backend(abc.ABC):
    """A backend runs a model's pipeline on token arrays.

    Subclasses set ``name`` and implement :meth:`encode_rows` and :attr:`parallel_passes`.
    """

    name: str = ""

    @property
    @abc.abstractmethod
    def parallel_passes(self) -> int:
        """How many forward passes can usefully run side by side (from several threads): a
        streaming server runs that many batches at once."""

    @abc.abstractmethod
    def encode_rows(self, batch: TokenBatch, limits: PassLimits, *, want_tokens: bool = False,
                    prompt_lengths: np.ndarray | None = None,
                    on_pass: PassCallback | None = None) -> EncodedRows:
        """Run the pipeline on every sequence of ``batch``.

        Args:
            batch: the sequences, each at most the model's maximum length.
            limits: bounds of the forward passes.
            want_tokens: also return the last hidden state of every token.
            prompt_lengths: int32 ``[B]``: leading tokens of each sequence that belong to a
                prompt, which a Pooling with ``include_prompt=False`` leaves out; ``None`` when
                there is no prompt.
            on_pass: progress callback.

        Returns:
            :class:`EncodedRows` in the order of the sequences. Thread-safe: callers may run
            :attr:`parallel_passes` calls at once.
        """

    def segment_means(self, batch: TokenBatch, segments: np.ndarray,
                      limits: PassLimits) -> np.ndarray:
        """float32 ``[S, H]``: for each row ``(sequence, begin, end)`` of ``segments`` (int32
        ``[S, 3]``), the mean of the last hidden states of tokens ``[begin, end)`` of that
        sequence (late chunking's chunk vectors before the pipeline's head). This default
        takes every token's state from :meth:`encode_rows` and pools on the host; a backend
        that can pool where the states are overrides it."""
        segments = np.asarray(segments, dtype=np.int64).reshape(-1, 3)
        lengths = batch.lengths
        bad = ((segments[:, 0] < 0) | (segments[:, 0] >= len(batch)) | (segments[:, 1] < 0)
               | (segments[:, 1] >= segments[:, 2]))
        bad[~bad] = segments[~bad, 2] > lengths[segments[~bad, 0]]
        if bad.any():
            i = int(bad.argmax())
            raise ValueError(f"segment {i} is (sequence {segments[i, 0]}, tokens "
                             f"{segments[i, 1]}..{segments[i, 2]}); a segment needs a sequence "
                             f"in [0, {len(batch)}) and 0 <= begin < end <= its length")
        states = self.encode_rows(batch, limits, want_tokens=True).token_states
        starts = batch.cu_seqlens[segments[:, 0]].astype(np.int64)
        rows = [states[start + begin:start + end]
                for start, begin, end in zip(starts, segments[:, 1], segments[:, 2], strict=True)]
        cu = np.zeros(len(rows) + 1, dtype=np.int32)
        np.cumsum([len(r) for r in rows], out=cu[1:])
        if not rows:
            return np.zeros((0, states.shape[1]), dtype=np.float32)
        return _core.pool_tokens(np.ascontiguousarray(np.concatenate(rows), dtype=np.float32),
                                 cu, "mean", None)

    @property
    def pipelines_tokenization(self) -> bool:
        """Whether a large call gains from tokenizing its next chunk while this backend runs
        the current one (a backend much faster than the tokenizer, with the GIL released)."""
        return False

    def pass_limits(self, batch_size: int | None, max_batch_tokens: int | str) -> PassLimits:
        """The limits of a call that asks for ``batch_size`` sequences (``None``: this backend's
        default) and ``max_batch_tokens`` tokens (``"auto"``: this backend's default) per pass.
        The CPU default: 32 sequences, 16384 padded tokens."""
        return PassLimits(batch_size or 32,
                          16384 if max_batch_tokens == "auto" else int(max_batch_tokens))

    @property
    def onnx_graph(self) -> Path | None:
        """The ONNX file that computes the pipeline, for a backend that runs one (exporting a
        distilled student builds on it); ``None`` otherwise."""
        return None

    @property
    def packs_mixed_lengths(self) -> bool:
        """Whether a batch of very different lengths runs without padding now, so a caller
        gains nothing from splitting it by length first."""
        return False

    def prepare_for_mixed_lengths(self) -> bool:
        """Load what makes batches of mixed lengths cheap, if anything (a long-running server or
        stream calls this once, before traffic; a plain ``encode()`` never does, since it may
        cost memory). Returns :attr:`packs_mixed_lengths` afterwards. A failure raises; the
        backend then keeps working as before."""
        return self.packs_mixed_lengths
