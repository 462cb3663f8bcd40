"""The command line, run as a user would: `python -m sutra ...` in a subprocess."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest


def _run(*args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sutra", *args],
        input=stdin.encode() if stdin is not None else None,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        check=False,
    )


def test_embed_json_matches_the_api(efficient_folder, minilm):
    result = _run("embed", "hello world", "second text", "--model", efficient_folder,
                  "--format", "json")
    assert result.returncode == 0, result.stderr.decode()
    vectors = np.array(json.loads(result.stdout))
    np.testing.assert_allclose(vectors, minilm.encode(["hello world", "second text"]), atol=1e-5)


def test_embed_npy_from_stdin_with_options(efficient_folder, minilm):
    result = _run("embed", "-", "--model", efficient_folder, "--format", "npy",
                  "--dimensions", "64", "--precision", "ubinary", stdin="first line\nsecond line\n")
    assert result.returncode == 0, result.stderr.decode()
    array = np.load(io.BytesIO(result.stdout))
    expected = minilm.encode(["first line", "second line"], truncate_dim=64, precision="ubinary")
    assert array.dtype == np.uint8
    np.testing.assert_array_equal(array, expected)


def test_similarity_prints_a_score(efficient_folder, minilm):
    result = _run("similarity", "A man is eating food.", "A man is eating bread.",
                  "--model", efficient_folder)
    assert result.returncode == 0, result.stderr.decode()
    a, b = minilm.encode(["A man is eating food.", "A man is eating bread."])
    assert float(result.stdout) == pytest.approx(float(a @ b), abs=1e-3)


def test_similarity_matrix_for_several_texts(efficient_folder):
    result = _run("similarity", "cat", "dog", "stock market", "--model", efficient_folder)
    assert result.returncode == 0, result.stderr.decode()
    assert "[2] stock market" in result.stdout.decode()


def test_models_list_and_info(efficient_folder):
    listing = _run("models", "list")
    assert listing.returncode == 0 and b"all-MiniLM-L6-v2" in listing.stdout
    info = _run("models", "info", efficient_folder)
    assert info.returncode == 0, info.stderr.decode()
    assert b"pooling                 mean" in info.stdout


def test_hardware_reports_backends():
    result = _run("hardware", "--json")
    assert result.returncode == 0, result.stderr.decode()
    info = json.loads(result.stdout)
    assert info["backends"]["cpu"].startswith("available")
    assert "cuda" in info["backends"] and isinstance(info["gpus"], list)
    assert info["cpu"]["logical_cores"] >= 1


def test_errors_exit_nonzero_with_a_message():
    result = _run("models", "pull", "no-such-model")
    assert result.returncode == 1
    assert b"unknown model 'no-such-model'" in result.stderr
    result = _run("embed", "x", "--model", "/nonexistent/folder")
    assert result.returncode == 1 and b"sutra: error:" in result.stderr
