"""The CPU backend: ONNX Runtime on a graph sutra builds from the model's safetensors.

The graph (encoder, pooling, Dense modules and normalization) is built once per (weights,
pipeline, builder, layout) and cached on disk under ``<cache>/onnx/``, keyed by the weights'
sha256, so later loads skip the build and never import the ``onnx`` package. Two layouts: the
padded graph (``[batch, sequence]`` inputs), and for built graphs a packed one (the sequences'
tokens concatenated, no padding; see :func:`sutra.onnx.build_packed_encoder_graph`) for batches of
mixed lengths, opened only on request (:meth:`OnnxRuntimeBackend.load_packed`).

:meth:`OnnxRuntimeBackend.encode_rows` is the backend contract (:mod:`sutra.backends.base`): the
one batch planner cuts the token arrays into passes, padded or packed, and each pass runs one
session call.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from .. import _core
from .._errors import BackendUnavailableError
from ..models.fetch import cache_root, sha256_file
from ..models.spec import ModelFolder
from .base import Backend, EncodedRows, PassCallback, PassLimits, TokenBatch
from .head import PipelineHead

SENTENCE_OUTPUT = "sentence_embedding"
TOKEN_OUTPUT = "token_embeddings"
LAYOUTS = ("padded", "packed")


class OnnxRuntimeBackend(Backend):
    """Runs a model's pipeline with ONNX Runtime.

    Args:
        model: the model folder.
        onnx_source: ``"build"`` (sutra's graph) or ``"model"`` (the folder's own ONNX file: one
            with a ``sentence_embedding`` output is taken as the whole pipeline; one that stops
            at the last hidden state is followed by sutra's pooling, Dense and Normalize).
        num_threads: intra-op threads, ``None`` for every core.
        pad_token_id: the id padded passes fill with.
    """

    name = "cpu"

    def __init__(self, model: ModelFolder, onnx_source: str = "build",
                 num_threads: int | None = None, pad_token_id: int = 0) -> None:
        self.model = model
        self.pad_token_id = int(pad_token_id)
        self._head = PipelineHead(model.pipeline)
        if model.student is not None:
            onnx_source = "model"  # a distilled student is only its ONNX graph
        if onnx_source == "model":
            path = model.onnx_path
            if path is None:
                raise BackendUnavailableError(
                    f"onnx_source='model' but {model.path} has no onnx/model.onnx; "
                    "use onnx_source='build' to build the graph from model.safetensors"
                )
        else:
            path = built_graph_path(model)
        self._num_threads = num_threads or (os.cpu_count() or 1)
        self.session = self._open(path)
        self.graph_path = Path(path)
        self._input_names = {i.name for i in self.session.get_inputs()}
        self._output_names = [o.name for o in self.session.get_outputs()]
        # The packed graph exists for sutra's own graphs only (a student or a third-party ONNX
        # file has no packed twin); its session opens on first use (load_packed).
        self.supports_packed = onnx_source == "build"
        self._packed_session = None
        self._packed_lock = threading.Lock()
        # A graph that stops at the token states is followed by the pipeline head on the host.
        self._graph_pools = SENTENCE_OUTPUT in self._output_names

    # -- the backend contract ------------------------------------------------------------------

    @property
    def parallel_passes(self) -> int:
        """Sessions run concurrently from several threads; with fewer intra-op threads than
        cores, that many passes fit side by side."""
        return max(1, (os.cpu_count() or 1) // self._num_threads)

    @property
    def onnx_graph(self) -> Path:
        return self.graph_path

    @property
    def packs_mixed_lengths(self) -> bool:
        return self.packed_loaded

    def prepare_for_mixed_lengths(self) -> bool:
        """Opens the packed graph (a second session: the weights are held twice); a graph sutra
        did not build (a student, the model's own ONNX file) has none: False."""
        if not self.supports_packed:
            return False
        self.load_packed()
        return True

    def encode_rows(self, batch: TokenBatch, limits: PassLimits, *, want_tokens: bool = False,
                    prompt_lengths: np.ndarray | None = None,
                    on_pass: PassCallback | None = None) -> EncodedRows:
        """See :meth:`sutra.backends.base.Backend.encode_rows`. Passes are padded, or packed
        (once the packed graph is open) when packing a pass saves more than it costs."""
        lengths = batch.lengths
        embeddings = np.empty((len(batch), self.model.embedding_dim), dtype=np.float32)
        tokens = (np.empty((int(batch.cu_seqlens[-1]), self.model.hidden_size), dtype=np.float32)
                  if want_tokens else None)
        if len(batch) == 0:
            return EncodedRows(embeddings, tokens)
        # Pooling that leaves out a prompt needs the token states (the graphs pool everything).
        on_host = not self._graph_pools or (
            prompt_lengths is not None and not self.model.pipeline.pooling.include_prompt)
        passes = _core.plan_batches(
            lengths, limits.max_sequences, limits.max_tokens, limits.pass_cost_tokens,
            "when_it_pays" if self.packed_loaded else "never", attention_rows=True)
        for done, plan in enumerate(passes, 1):
            order = plan.order
            need_tokens = want_tokens or on_host
            if plan.packed:
                ids, cu, rows = plan.packed_inputs(batch.ids, batch.cu_seqlens)
                sentence, states = self.forward_packed(ids, cu, want_tokens=need_tokens,
                                                       cu_rowlens=rows)
                layout_cu, padded = plan.cu_seqlens, None
            else:
                ids, mask = plan.padded_inputs(batch.ids, batch.cu_seqlens, self.pad_token_id)
                sentence, states = self.forward(ids, mask, want_tokens=need_tokens)
                layout_cu, padded = plan.cu_seqlens, states
            if on_host:
                prompts = None if prompt_lengths is None else prompt_lengths[order]
                sentence = self._head.apply(states, layout_cu, prompts)
            embeddings[order] = sentence
            if tokens is not None:
                _scatter_tokens(tokens, batch.cu_seqlens, order, states, plan.cu_seqlens,
                                padded is not None)
            if on_pass is not None:
                on_pass(done, len(passes))
        return EncodedRows(embeddings, tokens)

    # -- the sessions --------------------------------------------------------------------------

    def _open(self, path: str | os.PathLike[str]):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = self._num_threads
        options.inter_op_num_threads = 1
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    @property
    def packed_loaded(self) -> bool:
        """Whether the packed graph is open (after :meth:`load_packed`); the Embedder uses it
        only then, so a plain ``encode()`` never pays for a second session unasked."""
        return self._packed_session is not None

    def load_packed(self) -> None:
        """Build (or read from the cache) and open the packed graph now rather than on the first
        :meth:`forward_packed` call, which would otherwise pay for it (seconds). Thread-safe.

        Raises:
            BackendUnavailableError: this backend runs a graph without a packed variant.
        """
        if not self.supports_packed:
            raise BackendUnavailableError(
                f"{self.graph_path} is not a graph sutra built (a distilled student or the "
                "model's own ONNX file); it has no packed variant"
            )
        if self._packed_session is None:
            with self._packed_lock:
                if self._packed_session is None:
                    self._packed_session = self._open(built_graph_path(self.model, layout="packed"))

    def forward_packed(self, input_ids: np.ndarray, cu_seqlens: np.ndarray,
                       want_tokens: bool = False, cu_rowlens: np.ndarray | None = None,
                       ) -> tuple[np.ndarray, np.ndarray | None]:
        """Encode sequences given back to back, without padding.

        Args:
            input_ids: int64 ``[T]``, the sequences' token ids concatenated.
            cu_seqlens: int64 ``[B + 1]``: 0, then the running total of the sequence lengths
                (every length >= 1, the last value ``T``).
            want_tokens: also return the last hidden state.
            cu_rowlens: int64 ``[R + 1]``, the attention rows: 0, then row ends, each one a
                sequence end, the last ``T``. A row is laid out in ``S`` slots (``S`` = the
                longest row) and attention costs ``R * S**2``; ``sutra.packing.plan_rows`` bins
                sequences into rows about as long as the longest sequence. ``None``: one row per
                sequence.

        Returns:
            ``(sentence [B, H] float32, tokens [T, H] float32 or None)``, equal (to float32
            rounding) to :meth:`forward` on the same sequences padded, whatever the rows.
            Opens the packed graph first if needed.

        Raises:
            ValueError: ``cu_rowlens`` does not start at 0, does not end at ``T``, is not
                increasing, or cuts a sequence (a row end that is not a sequence end); the graph
                would silently let the pieces attend apart.
        """
        if cu_rowlens is None:
            cu_rowlens = cu_seqlens
        else:
            _check_rows(cu_rowlens, cu_seqlens)
        self.load_packed()
        feeds = {"input_ids": input_ids, "cu_seqlens": cu_seqlens, "cu_rowlens": cu_rowlens}
        names = [SENTENCE_OUTPUT] + ([TOKEN_OUTPUT] if want_tokens else [])
        outputs = self._packed_session.run(names, feeds)
        return outputs[0], (outputs[1] if want_tokens else None)

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray,
                want_tokens: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Encode one padded batch.

        Args:
            input_ids: int64 ``[B, L]``.
            attention_mask: int64 ``[B, L]``, 1 for real tokens.
            want_tokens: also return the last hidden state.

        Returns:
            ``(sentence [B, D] float32, tokens [B, L, H] float32 or None)``: ``sentence`` is the
            pipeline's output (pooled, Dense, normalized as the model says). A model's own graph
            that stops at the last hidden state gives ``(None, tokens)``: the caller pools
            (:meth:`encode_rows` does).
        """
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        if want_tokens and SENTENCE_OUTPUT in self._output_names and (
            TOKEN_OUTPUT not in self._output_names
        ):
            raise ValueError(
                f"{self.graph_path} has no token_embeddings output (a distilled student gives "
                "sentence embeddings only); use output_value='sentence_embedding'"
            )
        if self._graph_pools:
            names = [SENTENCE_OUTPUT] + ([TOKEN_OUTPUT] if want_tokens else [])
            outputs = self.session.run(names, feeds)
            return outputs[0], (outputs[1] if want_tokens else None)
        # A third-party graph that stops at the last hidden state: the caller pools.
        (tokens,) = self.session.run([self._output_names[0]], feeds)
        return None, np.ascontiguousarray(tokens, dtype=np.float32)


def _scatter_tokens(out: np.ndarray, cu_seqlens: np.ndarray, order: np.ndarray, states: np.ndarray,
                    layout_cu: np.ndarray, padded: bool) -> None:
    """Copy a pass's token states into ``out`` (aligned with the batch's flat ids): from packed
    ``[T', H]`` states laid out in ``order``, or padded ``[B', L, H]`` ones."""
    lengths = np.diff(layout_cu)
    total = int(layout_cu[-1])
    # Per token of the pass: its index in the pass layout and in the batch.
    within = np.arange(total) - np.repeat(layout_cu[:-1], lengths)
    destination = np.repeat(cu_seqlens[order], lengths) + within
    if padded:
        rows = np.repeat(np.arange(len(order)), lengths)
        out[destination] = states[rows, within]
    else:
        out[destination] = states


def _check_rows(cu_rowlens: np.ndarray, cu_seqlens: np.ndarray) -> None:
    rows = np.asarray(cu_rowlens)
    ends = np.asarray(cu_seqlens)
    if rows.ndim != 1 or len(rows) < 2 or rows[0] != 0 or rows[-1] != ends[-1]:
        raise ValueError(f"cu_rowlens must be [rows + 1] from 0 to the token count "
                         f"{int(ends[-1])}, got {rows.tolist()[:8]}")
    if np.any(np.diff(rows) <= 0):
        raise ValueError(f"cu_rowlens must be increasing (no empty row), got {rows.tolist()[:8]}")
    cut = rows[~np.isin(rows, ends)]
    if len(cut):
        raise ValueError(f"cu_rowlens must cut the tokens at sequence ends (values of "
                         f"cu_seqlens); {int(cut[0])} falls inside a sequence")


def built_graph_path(model: ModelFolder, layout: str = "padded") -> Path:
    """The cached ONNX graph for ``model`` (``layout`` ``"padded"`` or ``"packed"``), building
    it first when it is not cached yet. A cached graph is found without importing ``onnx``."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    pipeline = model.pipeline
    fields = {
        "weights": _weights_hash(model.weights_path),
        # The graph is built from config.json too (activation, epsilon, heads, positions): the
        # same weights under a changed config must not reuse the old graph.
        "config": hashlib.sha256(json.dumps(pipeline.transformer.config, sort_keys=True,
                                            default=str).encode()).hexdigest(),
        "pooling": pipeline.pooling.mode,
        "normalize": pipeline.normalize,
        "builder": _builder_fingerprint(),
    }
    if pipeline.dense:
        fields["dense"] = [
            [d.in_features, d.out_features, d.bias, d.activation,
             _weights_hash(d.path / "model.safetensors")] for d in pipeline.dense
        ]
    if layout != "padded":  # the padded graph keeps the key it had before layouts existed
        fields["layout"] = layout
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]
    folder = cache_root() / "onnx"
    path = folder / f"{model.path.name}-{key}.onnx"
    if path.is_file():
        return path
    from ..onnx import build_pipeline_graph  # imports onnx: only when a graph is built

    proto = build_pipeline_graph(pipeline, layout=layout)
    folder.mkdir(parents=True, exist_ok=True)
    # Written beside its final name and renamed, so a crash never leaves a truncated graph.
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".onnx", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _weights_hash(path: Path) -> str:
    """sha256 of the weights, remembered per (path, size, mtime) to avoid re-reading big files."""
    stat = path.stat()
    memo_file = cache_root() / "onnx" / "weights-hashes.json"
    memo_key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    if memo_key in memo:
        return memo[memo_key]
    digest = sha256_file(path)
    memo[memo_key] = digest
    memo_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".hashes-", dir=memo_file.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(memo, f)
    os.replace(tmp, memo_file)
    return digest


def _builder_fingerprint() -> str:
    """Hash of the graph builder's source, so a changed builder never reuses an old graph."""
    folder = Path(__file__).resolve().parent.parent / "onnx"
    digest = hashlib.sha256()
    for source in sorted(folder.glob("*.py")):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]
