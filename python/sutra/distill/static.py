"""The static student: one vector per vocabulary entry; a text is the normalized sum of its
tokens' vectors. No transformer runs at encode time, which is what makes it fast on a CPU.

Construction (Model2Vec-style, then distilled):
1. each vocabulary entry is embedded by the teacher on its own (its special tokens around it);
2. the vectors are reduced to ``student_dim`` by PCA;
3. each row is scaled by its SIF weight ``a / (a + p(token))``, ``p`` the token's frequency in the
   corpus, so frequent, uninformative tokens count less (Arora et al., 2017); the special tokens
   start at zero (padding stays zero: it never reaches the sum, the attention mask removes it);
4. optionally the table is trained on the similarity loss over the corpus (sparse Adam). The
   texts keep their special tokens, so the rows of [CLS]/[SEP] become a learned offset shared by
   every text, as they are in the exported graph.

The weights are folded into the table, so ``embedding = normalize(sum_t table[t])``, which is
exactly ``torch.nn.EmbeddingBag(mode="sum")`` followed by L2 normalization.
"""

from __future__ import annotations

import numpy as np

from .losses import normalize_rows
from .training import SparseRows


class TokenBatch:
    """Token ids of many texts in one flat array (CSR layout): text i owns
    ``ids[offsets[i]:offsets[i + 1]]``."""

    def __init__(self, sequences: list[list[int]]) -> None:
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        self.offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.ids = np.fromiter((t for s in sequences for t in s), dtype=np.int64,
                               count=int(self.offsets[-1]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def select(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(flat token ids, offsets)`` of the texts ``rows``, in that order."""
        starts = self.offsets[rows]
        lengths = self.offsets[rows + 1] - starts
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        # each token's index in self.ids: its text's start plus its position inside the text
        within = np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], lengths)
        return self.ids[np.repeat(starts, lengths) + within], offsets


def segment_sum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Row sums of ``values [n, k]`` over the segments ``offsets[i]:offsets[i + 1]``; an empty
    segment sums to zero."""
    out = np.zeros((len(offsets) - 1, values.shape[1]), dtype=values.dtype)
    nonempty = offsets[1:] > offsets[:-1]
    if len(values):
        out[nonempty] = np.add.reduceat(values, offsets[:-1][nonempty], axis=0)
    return out


def sif_weights(token_ids: np.ndarray, vocab_size: int, coefficient: float) -> np.ndarray:
    """``a / (a + p(token))`` per vocabulary entry, ``p`` the relative frequency in the flat
    ``token_ids`` (1.0 for tokens the corpus never uses)."""
    counts = np.bincount(token_ids, minlength=vocab_size).astype(np.float64)
    total = counts.sum()
    p = counts / total if total else counts
    return coefficient / (coefficient + p)


class StaticStudent:
    """``params["table"]`` is ``[vocab, student_dim]`` with the SIF weights folded in."""

    kind = "static"

    def __init__(self, table: np.ndarray, tokens: TokenBatch | None = None) -> None:
        self.params = {"table": np.array(table, dtype=np.float32)}
        self._tokens = tokens

    @property
    def table(self) -> np.ndarray:
        return self.params["table"]

    def forward(self, rows: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        ids, offsets = self._tokens.select(rows)
        return segment_sum(self.table[ids], offsets), (ids, offsets)

    def backward(self, cache: tuple[np.ndarray, np.ndarray], dz: np.ndarray) -> dict[str, SparseRows]:
        ids, offsets = cache
        unique, inverse = np.unique(ids, return_inverse=True)
        grad = np.zeros((len(unique), dz.shape[1]), dtype=np.float32)
        np.add.at(grad, inverse, np.repeat(dz.astype(np.float32), np.diff(offsets), axis=0))
        return {"table": SparseRows(unique, grad)}

    def embed_ids(self, sequences: list[list[int]]) -> np.ndarray:
        """Student embeddings ``[n, student_dim]`` float32 of token-id sequences."""
        table = self.table
        out = np.empty((len(sequences), table.shape[1]), dtype=np.float32)
        for start in range(0, len(sequences), 4096):  # bounds the gathered [tokens, k] block
            batch = TokenBatch(sequences[start:start + 4096])
            out[start:start + len(batch)] = segment_sum(table[batch.ids], batch.offsets)
        return normalize_rows(out)[0]
