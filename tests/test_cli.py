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


# -- issue 19: the command line's bad input ------------------------------------------------------


def test_python_m_sutra_cli_help_runs():
    result = subprocess.run([sys.executable, "-m", "sutra.cli", "--help"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0 and "distill" in result.stdout, result.stderr


def test_standard_input_mistakes_are_named(efficient_folder):
    result = _run("embed", "x", "-", "--model", efficient_folder)
    assert result.returncode == 1 and b"cannot be mixed with texts" in result.stderr
    result = _run("embed", "-", "--model", efficient_folder, stdin="")
    assert result.returncode == 1 and b"standard input held no text" in result.stderr
    broken = subprocess.run([sys.executable, "-m", "sutra", "embed", "-", "--model",
                             efficient_folder], input=b"fine\n\xff\xfe bad\n", capture_output=True,
                            timeout=300, check=False)
    assert broken.returncode == 1
    assert b"line 2 of standard input is not valid UTF-8" in broken.stderr
    assert b"Traceback" not in broken.stderr
    replaced = subprocess.run([sys.executable, "-m", "sutra", "embed", "-", "--model",
                               efficient_folder, "--errors", "replace", "--format", "json"],
                              input=b"fine\n\xff\xfe bad\n", capture_output=True, timeout=300,
                              check=False)
    assert replaced.returncode == 0 and len(json.loads(replaced.stdout)) == 2


def test_serve_refuses_a_bad_or_busy_port_before_loading(efficient_folder):
    import socket

    result = _run("serve", "--model", efficient_folder, "--port", "99999")
    assert result.returncode == 2 and b"--port: must be in 0..65535, got 99999" in result.stderr
    result = _run("serve", "--model", efficient_folder, "--threads", "-1")
    assert result.returncode == 2 and b"--threads: must be a positive integer" in result.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run("serve", "--model", efficient_folder, "--port", str(port))
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 1 and b"Traceback" not in result.stderr
    assert lines[-1] == f"sutra: error: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_the_long_text_warning_is_one_line(efficient_folder):
    result = _run("embed", "word " * 600, "--model", efficient_folder)
    assert result.returncode == 0
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sutra: warning: a text of more than 256 tokens")
