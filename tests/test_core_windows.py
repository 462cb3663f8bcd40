"""sutra._core.create_windows and aggregate_embeddings against numpy references."""

import numpy as np
import pytest

from sutra import _core

FLOAT32_TOL = {"rtol": 1e-5, "atol": 1e-6}


def reference_windows(ids, window_size, overlap, n_prefix, n_suffix):
    """Windows as documented: specials around content slices of window_size - specials tokens,
    `stride` apart, the last one cut at the content's end."""
    prefix = ids[:n_prefix]
    content = ids[n_prefix : len(ids) - n_suffix]
    suffix = ids[len(ids) - n_suffix :]
    per_window = window_size - n_prefix - n_suffix
    stride = per_window - overlap
    if len(content) <= per_window:
        return [ids.copy()], [(0, len(content))]
    spans, start = [], 0
    while start + per_window < len(content):
        spans.append((start, start + per_window))
        start += stride
    spans.append((start, len(content)))
    windows = [np.concatenate([prefix, content[a:b], suffix]) for a, b in spans]
    return windows, spans


CONFIGS = [
    # (n_tokens, window_size, overlap, n_prefix, n_suffix)
    (2, 8, 0, 1, 1),  # only specials: one window, empty content
    (8, 8, 2, 1, 1),  # fits exactly
    (9, 8, 2, 1, 1),  # one token too many
    (100, 16, 5, 1, 1),
    (101, 16, 0, 1, 1),
    (513, 512, 128, 1, 1),
    (1000, 7, 4, 2, 0),  # stride 1
    (37, 5, 0, 0, 0),  # no specials
    (64, 10, 3, 3, 2),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "n{}_w{}_o{}_p{}_s{}".format(*c))
def test_windows_match_reference(config):
    n, window_size, overlap, n_prefix, n_suffix = config
    rng = np.random.default_rng(n)
    ids = rng.integers(5, 30000, size=n, dtype=np.int64)
    windows, offsets = _core.create_windows(ids, window_size, overlap, n_prefix, n_suffix)
    expected, spans = reference_windows(ids, window_size, overlap, n_prefix, n_suffix)
    assert len(windows) == len(expected), config
    for got, want in zip(windows, expected):
        assert got.dtype == np.int64
        assert len(got) <= window_size
        np.testing.assert_array_equal(got, want)
    assert offsets.dtype == np.int64 and offsets.shape == (len(windows), 2)
    np.testing.assert_array_equal(offsets, np.array(spans, dtype=np.int64).reshape(-1, 2))


def test_windows_properties_random():
    rng = np.random.default_rng(1234)
    for _ in range(200):
        n_prefix, n_suffix = rng.integers(0, 3, size=2)
        window_size = int(rng.integers(n_prefix + n_suffix + 1, 40))
        overlap = int(rng.integers(0, window_size - n_prefix - n_suffix))
        n = int(rng.integers(n_prefix + n_suffix, 300))
        config = (n, window_size, overlap, int(n_prefix), int(n_suffix))
        ids = np.arange(n, dtype=np.int64)
        windows, offsets = _core.create_windows(ids, window_size, overlap, n_prefix, n_suffix)
        content_len = n - n_prefix - n_suffix
        assert offsets[0, 0] == 0 and offsets[-1, 1] == content_len, config
        if n <= window_size:
            assert len(windows) == 1 and np.array_equal(windows[0], ids), config
        for (start, end), window in zip(offsets, windows):
            assert len(window) <= window_size, config
            np.testing.assert_array_equal(window[n_prefix : len(window) - n_suffix],
                                          ids[n_prefix + start : n_prefix + end])
        # consecutive windows share exactly `overlap` tokens, except that the last may share more
        shared = offsets[:-1, 1] - offsets[1:, 0]
        if len(shared) > 1:
            assert np.all(shared[:-1] == overlap), config
        if len(shared):
            assert shared[-1] >= overlap, config


def test_windows_default_specials():
    windows, offsets = _core.create_windows(np.arange(10, dtype=np.int64), 6, 1)
    # content 1..8, 4 content tokens per window, stride 3; the last window is cut short
    assert [w.tolist() for w in windows] == [[0, 1, 2, 3, 4, 9], [0, 4, 5, 6, 7, 9], [0, 7, 8, 9]]
    assert offsets.tolist() == [[0, 4], [3, 7], [6, 8]]


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"window_size": 4, "overlap": 2}, "window_size"),  # 4 <= 1 + 1 + 2
        ({"window_size": 2, "overlap": 0}, "window_size"),
        ({"window_size": 8, "overlap": -1}, "overlap"),
        ({"window_size": 8, "overlap": 0, "num_prefix_special": -1}, "num_prefix_special"),
        ({"window_size": 8, "overlap": 0, "num_suffix_special": -2}, "num_suffix_special"),
    ],
)
def test_windows_bad_params(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        _core.create_windows(np.arange(20, dtype=np.int64), **kwargs)


def test_windows_bad_params_message_names_values():
    with pytest.raises(ValueError) as info:
        _core.create_windows(np.arange(20, dtype=np.int64), 4, 2)
    message = str(info.value)
    assert "window_size" in message and "4" in message and "> " in message


def test_windows_input_shorter_than_specials():
    with pytest.raises(ValueError, match="token_ids"):
        _core.create_windows(np.array([101], dtype=np.int64), 8, 0, 1, 1)


@pytest.mark.parametrize(
    "token_ids",
    [
        np.arange(10, dtype=np.int32),
        np.arange(10, dtype=np.float64),
        np.arange(20, dtype=np.int64)[::2],
        np.arange(10, dtype=np.int64).reshape(2, 5),
        list(range(10)),
    ],
    ids=["int32", "float64", "strided", "2d", "list"],
)
def test_windows_reject_wrong_arrays(token_ids):
    with pytest.raises(ValueError, match="token_ids .*int64"):
        _core.create_windows(token_ids, 8, 0)


# ---------------------------------------------------------------------------------------------
# aggregate_embeddings


def reference_weighted(embeddings, offsets, total_length):
    emb = embeddings.astype(np.float64)
    if total_length == 0:
        return emb.mean(axis=0)
    starts, ends = offsets[:, 0].astype(np.float64), offsets[:, 1].astype(np.float64)
    centers = (starts + ends) / 2
    weights = (ends - starts) * (1 - 0.5 * np.abs(2 * centers / total_length - 1))
    if weights.sum() == 0:
        return emb.mean(axis=0)
    return (weights[:, None] * emb).sum(axis=0) / weights.sum()


@pytest.mark.parametrize(("n", "dim"), [(1, 1), (3, 7), (17, 384), (2, 0)])
def test_aggregate_mean_and_max(n, dim):
    emb = np.random.default_rng(n * 31 + dim).standard_normal((n, dim)).astype(np.float32)
    np.testing.assert_allclose(_core.aggregate_embeddings(emb, "mean"),
                               emb.astype(np.float64).mean(axis=0), **FLOAT32_TOL)
    out = _core.aggregate_embeddings(emb, "max")
    assert out.dtype == np.float32 and out.shape == (dim,)
    np.testing.assert_array_equal(out, emb.max(axis=0))


def test_aggregate_weighted_matches_formula():
    ids = np.arange(2 + 300, dtype=np.int64)
    windows, offsets = _core.create_windows(ids, 64, 16)
    emb = np.random.default_rng(7).standard_normal((len(windows), 33)).astype(np.float32)
    out = _core.aggregate_embeddings(emb, "weighted", offsets, 300)
    np.testing.assert_allclose(out, reference_weighted(emb, offsets, 300), **FLOAT32_TOL)
    # center windows outweigh edge ones, so weighted differs from the plain mean
    assert not np.allclose(out, emb.mean(axis=0))


def test_aggregate_weighted_edge_cases():
    emb = np.random.default_rng(8).standard_normal((3, 5)).astype(np.float32)
    offsets = np.array([[0, 4], [3, 7], [6, 8]], dtype=np.int64)
    mean = emb.astype(np.float64).mean(axis=0)
    # total length 0: plain mean
    np.testing.assert_allclose(_core.aggregate_embeddings(emb, "weighted", offsets, 0), mean,
                               **FLOAT32_TOL)
    # only empty spans: plain mean
    empty = np.zeros((3, 2), dtype=np.int64)
    np.testing.assert_allclose(_core.aggregate_embeddings(emb, "weighted", empty, 8), mean,
                               **FLOAT32_TOL)


def test_aggregate_errors():
    emb = np.ones((3, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="offsets"):
        _core.aggregate_embeddings(emb, "weighted")
    with pytest.raises(ValueError, match="method.*'median'"):
        _core.aggregate_embeddings(emb, "median")
    with pytest.raises(ValueError, match=r"offsets.*\(n, 2\)"):
        _core.aggregate_embeddings(emb, "weighted", np.zeros((2, 2), dtype=np.int64), 4)
    with pytest.raises(ValueError, match="offsets"):  # end beyond total_length
        _core.aggregate_embeddings(emb, "weighted", np.array([[0, 2], [1, 3], [2, 9]]), 4)
    with pytest.raises(ValueError, match="embeddings.*at least 1 row"):
        _core.aggregate_embeddings(np.ones((0, 4), dtype=np.float32), "mean")
    with pytest.raises(ValueError, match="embeddings .*float32"):
        _core.aggregate_embeddings(np.ones((3, 4)), "mean")
    with pytest.raises(ValueError, match="embeddings .*C-contiguous"):
        _core.aggregate_embeddings(np.ones((4, 3), dtype=np.float32).T, "mean")


# ---------------------------------------------------------------------------------------------
# fit_sequences and aggregate_rows: the flat-array forms the Embedder uses


def _flat(sequences):
    cu = np.concatenate([[0], np.cumsum([len(s) for s in sequences])]).astype(np.int32)
    ids = (np.concatenate(sequences) if sequences else np.zeros(0)).astype(np.int32)
    return ids, cu


@pytest.mark.parametrize("long_text", ["truncate", "window"])
def test_fit_sequences_matches_one_sequence_at_a_time(long_text):
    rng = np.random.default_rng(8)
    sequences = [np.concatenate([[101], rng.integers(1000, 2000, size=n), [102]])
                 for n in (0, 3, 14, 40, 6, 100, 13)]
    ids, cu = _flat(sequences)
    out_ids, out_cu, cu_rows, spans, content, truncated, longest = _core.fit_sequences(
        ids, cu, 16, long_text, 3, 1, 1)
    rows = [out_ids[out_cu[r]:out_cu[r + 1]] for r in range(len(out_cu) - 1)]
    assert cu_rows[0] == 0 and cu_rows[-1] == len(rows)
    np.testing.assert_array_equal(content, [len(s) - 2 for s in sequences])
    for s, seq in enumerate(sequences):
        mine = rows[cu_rows[s]:cu_rows[s + 1]]
        if len(seq) <= 16:
            expected = [seq]
        elif long_text == "truncate":
            expected = [np.concatenate([seq[:15], seq[-1:]])]
        else:
            windows, offsets = _core.create_windows(seq.astype(np.int64), 16, 3, 1, 1)
            expected = windows
            np.testing.assert_array_equal(spans[cu_rows[s]:cu_rows[s + 1]], offsets)
        assert len(mine) == len(expected), s
        for got, want in zip(mine, expected):
            np.testing.assert_array_equal(got, want)
    long = [len(s) for s in sequences if len(s) > 16]
    assert (truncated, longest) == ((len(long), max(long)) if long_text == "truncate" else (0, 0))


def test_aggregate_rows_is_aggregate_embeddings_per_sequence():
    rng = np.random.default_rng(9)
    rows = rng.standard_normal((7, 12)).astype(np.float32)
    cu_rows = np.array([0, 1, 4, 5, 7], np.int32)  # one row, three windows, one row, two windows
    spans = np.array([[0, 5], [0, 8], [6, 14], [12, 20], [0, 3], [0, 8], [5, 9]], np.int64)
    content = np.array([5, 20, 3, 9], np.int64)
    for method in ("mean", "max", "weighted"):
        for normalize in (False, True):
            out = _core.aggregate_rows(rows, cu_rows, method, spans, content, normalize)
            for s in range(4):
                a, b = cu_rows[s], cu_rows[s + 1]
                if b - a == 1:
                    expected = rows[a]
                else:
                    expected = _core.aggregate_embeddings(rows[a:b], method, spans[a:b],
                                                          int(content[s]))
                    if normalize:
                        expected = expected / max(np.linalg.norm(expected), 1e-12)
                np.testing.assert_allclose(out[s], expected, rtol=1e-6, atol=1e-7,
                                           err_msg=f"{method} {normalize} {s}")
    with pytest.raises(ValueError, match="sequence 1 has 0"):
        _core.aggregate_rows(rows, np.array([0, 1, 1, 7], np.int32))
    with pytest.raises(ValueError, match="cu_rows must run from 0 to the number of rows 7"):
        _core.aggregate_rows(rows, np.array([0, 6], np.int32))
