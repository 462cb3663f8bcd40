"""sutra.integrations.ray on a local Ray instance (2 CPUs), cpu backend.

The Ray tests skip where Ray Data is not installed (``pip install "sutra[ray]"``); the tests of
what happens without Ray run everywhere.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sutra.integrations.ray import BatchEmbedder, embed_dataset

# Ray 2.60's DataContext sets its own deprecated fields (use_push_based_shuffle, use_polars,
# ...) in its constructor, which warns from ray.data.context itself.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

FIXTURES = Path(__file__).parent / "fixtures"
# Same backend, same float32 graph; what differs is thread count and batch composition (the
# actors see other batches, so other padding): differences of float32 rounding only.
FLOAT32_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


def short_texts() -> list[str]:
    """A few thousand short texts: the WordNet sample, the same lower-cased, and the fixture
    texts of up to 200 characters (none is truncated, so no truncation warning)."""
    wordnet = (FIXTURES / "wordnet_sample.txt").read_text(encoding="utf-8").splitlines()
    fixture = json.loads((FIXTURES / "texts.json").read_text(encoding="utf-8"))
    return wordnet + [t.lower() for t in wordnet] + [t for t in fixture if len(t) <= 200]


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray", reason='Ray Data is not installed (pip install "sutra[ray]")')
    pytest.importorskip("ray.data")
    import logging

    # No usage report (there is no network here) and no dashboard: a quick, quiet start.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING,
             object_store_memory=256 * 1024 * 1024)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def texts_ds(ray_local):
    texts = short_texts()
    rows = [{"id": i, "text": t} for i, t in enumerate(texts)]
    # Blocks of a few hundred rows, so that each actor gets several batches of 256.
    return texts, ray_local.data.from_items(rows, override_num_blocks=8)


def test_embed_dataset_equals_encode(ray_local, texts_ds, efficient_folder):
    import sutra

    texts, ds = texts_ds
    assert len(texts) > 2000
    # The folder path, not the preset name: the actors are other processes, and this finds the
    # model where the test session found it.
    out = embed_dataset(ds, model=efficient_folder, batch_size=256, num_actors=2)
    batches = list(out.iter_batches(batch_size=None, batch_format="numpy"))
    ids = np.concatenate([b["id"] for b in batches])
    vectors = np.concatenate([b["embedding"] for b in batches])
    got_texts = np.concatenate([b["text"] for b in batches])

    order = np.argsort(ids)
    assert ids[order].tolist() == list(range(len(texts)))  # every row once
    assert got_texts[order].tolist() == texts  # the other columns pass through
    vectors = vectors[order]
    # One thread: thread counts change float32 rounding only, and on 2 cores one is faster.
    reference = sutra.Embedder(efficient_folder, backend="cpu", num_threads=1)
    expected = reference.encode(texts)
    assert vectors.dtype == np.float32 and vectors.shape == expected.shape
    np.testing.assert_allclose(vectors, expected, **FLOAT32_TOLERANCE)


def test_batch_embedder_outside_ray(efficient_folder):
    """The callable itself, as map_batches calls it: a numpy batch in, the same dict out."""
    import sutra

    fn = BatchEmbedder(efficient_folder, vector_column="vec", backend="cpu",
                       encode_kwargs={"truncate_dim": 64})
    texts = np.array(["a cat", "a dog sleeps"], dtype=object)
    out = fn({"text": texts, "id": np.arange(2)})
    expected = sutra.Embedder(efficient_folder, backend="cpu").encode(list(texts),
                                                                      truncate_dim=64)
    assert sorted(out) == ["id", "text", "vec"]
    np.testing.assert_allclose(out["vec"], expected, **FLOAT32_TOLERANCE)
    assert fn({"text": np.array([], dtype=object)})["vec"].shape == (0, 64)

    with pytest.raises(KeyError, match=r"text_column='text' is not a column of the batch; "
                                       r"its columns are \['body'\]"):
        fn({"body": texts})
    with pytest.raises(TypeError, match=r"text_column='text': sentences\[1\] is NoneType"):
        fn({"text": np.array(["a cat", None], dtype=object)})
    with pytest.raises(TypeError, match=r"encode_kwargs has \['normalise'\]"):
        BatchEmbedder(efficient_folder, backend="cpu", encode_kwargs={"normalise": True})


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"text_column": "body"},
     r"text_column='body' is not a column of the dataset; its columns are \['id', 'text'\]"),
    ({"vector_column": "id"}, r"vector_column='id' is already a column of the dataset"),
    ({"vector_column": "text"}, r"vector_column must differ from text_column"),
    ({"batch_size": 0}, r"batch_size must be an int >= 1, got 0"),
    ({"num_actors": 1.5}, r"num_actors must be an int >= 1, got 1.5"),
    ({"num_gpus_per_actor": 2}, r"num_gpus_per_actor must be a number in \[0, 1\]"),
    ({"num_cpus_per_actor": 0}, r"num_cpus_per_actor must be a number > 0 or None, got 0"),
    ({"backend": "cuda"}, r"backend='cuda' disagrees with num_gpus_per_actor=0"),
    ({"backend": "cpu", "num_gpus_per_actor": 1},
     r"backend='cpu' disagrees with num_gpus_per_actor=1"),
])
def test_embed_dataset_argument_errors(texts_ds, efficient_folder, kwargs, message):
    # Raised when the transform is declared, before any actor starts.
    _, ds = texts_ds
    with pytest.raises(ValueError, match=message):
        embed_dataset(ds, model=efficient_folder, **kwargs)


def test_missing_column_found_by_the_actor(ray_local, texts_ds, efficient_folder):
    """A schema that is unknown until the dataset runs: the actor's KeyError reaches the caller."""
    _, ds = texts_ds
    renamed = ds.map_batches(lambda b: {"id": b["id"], "body": b["text"]}, batch_size=None)
    assert renamed.schema(fetch_if_missing=False) is None
    out = embed_dataset(renamed.limit(4), model=efficient_folder, num_actors=1)
    with pytest.raises(Exception, match=r"text_column='text' is not a column of the batch"):
        out.take_all()


def test_without_ray(monkeypatch):
    """embed_dataset names the extra to install; the module itself imports without Ray."""
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(ImportError, match=r'pip install "sutra\[ray\]"'):
        embed_dataset(object())


def test_import_does_not_load_ray():
    code = ("import sys, sutra, sutra.integrations.ray; "
            "assert 'ray' not in sys.modules, 'importing sutra loaded ray'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_first_fetch_takes_a_node_lock(monkeypatch, tmp_path, efficient_folder):
    """Actors starting together on a node fetch a preset once: the first fetch is locked."""
    filelock = pytest.importorskip("filelock")
    from sutra.integrations.ray import _one_fetch_per_node

    monkeypatch.setenv("SUTRA_HOME", str(tmp_path))  # an empty cache: "efficient" not pulled
    lock = _one_fetch_per_node("efficient")
    assert isinstance(lock, filelock.BaseFileLock)
    assert Path(lock.lock_file).parent == tmp_path / "models"
    assert not isinstance(_one_fetch_per_node(efficient_folder), filelock.BaseFileLock)
