"""The Embedder API: encode() semantics, batching, long texts, precisions and bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import sutra

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "",
    "Le chat dort sur le canapé.",
    "東京は日本の首都です。",
]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _st_quantize(embeddings: np.ndarray, precision: str) -> np.ndarray:
    """sentence-transformers 6.2 `quantize_embeddings`, written out in numpy."""
    if precision in ("int8", "uint8"):
        ranges = np.vstack((embeddings.min(0), embeddings.max(0))).astype(np.float32)
        steps = (ranges[1] - ranges[0]) / 255
        steps = np.where(steps == 0, 1, steps)
        q = np.clip(np.floor((embeddings - ranges[0]) / steps), 0, 255)
        return q.astype(np.uint8) if precision == "uint8" else (q - 128).astype(np.int8)
    packed = np.packbits(embeddings > 0, axis=-1)
    return packed if precision == "ubinary" else (packed - 128).astype(np.int8)


def test_single_text_is_1d_and_list_is_2d(minilm):
    one = minilm.encode(SENTENCES[0])
    many = minilm.encode(SENTENCES[:2])
    assert one.shape == (384,) and one.dtype == np.float32
    assert many.shape == (2, 384)
    np.testing.assert_allclose(one, many[0], atol=1e-5)


def test_batch_order_and_size_do_not_change_embeddings(minilm):
    whole = minilm.encode(SENTENCES, batch_size=32)
    small = minilm.encode(SENTENCES, batch_size=3)
    alone = np.stack([minilm.encode(s) for s in SENTENCES])
    shuffled_order = np.random.default_rng(0).permutation(len(SENTENCES))
    shuffled = minilm.encode([SENTENCES[i] for i in shuffled_order])
    np.testing.assert_allclose(small, whole, atol=2e-5)
    np.testing.assert_allclose(alone, whole, atol=2e-5)
    np.testing.assert_allclose(shuffled, whole[shuffled_order], atol=2e-5)
    # Related sentences are closer than unrelated ones: the vectors carry meaning.
    sims = whole @ whole.T
    assert sims[0, 1] > sims[0, 7] + 0.3


def test_token_budget_batching_matches_plain_batching(efficient_folder):
    tight = sutra.Embedder(efficient_folder, max_batch_tokens=40, batch_size=64)
    loose = sutra.Embedder(efficient_folder, max_batch_tokens=100_000, batch_size=64)
    np.testing.assert_allclose(tight.encode(SENTENCES), loose.encode(SENTENCES), atol=2e-5)


def test_empty_input_list_gives_empty_matrix(minilm):
    out = minilm.encode([])
    assert out.shape == (0, 384) and out.dtype == np.float32
    assert minilm.encode([], precision="ubinary").shape == (0, 48)


@pytest.mark.parametrize("bad, index", [([None], 0), (["ok", 3], 1), (["a", "b", b"bytes"], 2)])
def test_non_string_items_name_their_index(minilm, bad, index):
    with pytest.raises(TypeError, match=rf"sentences\[{index}\]"):
        minilm.encode(bad)


def test_none_is_a_type_error(minilm):
    with pytest.raises(TypeError, match="got None"):
        minilm.encode(None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": "float16"}, "precision must be one of float32, int8, uint8, binary, ubinary"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"truncate_dim": 0}, r"truncate_dim must be an int in 1\.\.384"),
        ({"truncate_dim": 385}, r"truncate_dim must be an int in 1\.\.384"),
        ({"output_value": "cls"}, "output_value must be one of"),
        ({"long_text": "split"}, "long_text must be 'truncate' or 'window'"),
        ({"prompt_name": "query"}, "prompt_name='query' is not a prompt"),
    ],
)
def test_invalid_arguments_list_what_is_allowed(minilm, kwargs, message):
    with pytest.raises(ValueError, match=message):
        minilm.encode(SENTENCES[:2], **kwargs)


def test_matryoshka_truncation_renormalizes(minilm):
    full = minilm.encode(SENTENCES)
    cut = minilm.encode(SENTENCES, truncate_dim=128)
    assert cut.shape == (len(SENTENCES), 128)
    np.testing.assert_allclose(cut, _unit(full[:, :128]), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)


def test_dimensions_config_sets_the_default_truncation(efficient_folder, minilm):
    small = sutra.Embedder(sutra.EmbedderConfig(model=efficient_folder, dimensions=64))
    assert small.dimensions == 64
    np.testing.assert_allclose(small.embed(SENTENCES[0]), minilm.encode(SENTENCES[0], truncate_dim=64),
                               atol=1e-5)


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_precisions_follow_sentence_transformers(minilm, precision):
    floats = minilm.encode(SENTENCES)
    quantized = minilm.encode(SENTENCES, precision=precision)
    expected = _st_quantize(floats, precision)
    assert quantized.dtype == expected.dtype and quantized.shape == expected.shape
    # Float ties at bucket edges may land one bucket apart; bits are exact.
    if precision.endswith("binary"):
        np.testing.assert_array_equal(quantized, expected)
    else:
        diff = np.abs(quantized.astype(int) - expected.astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99


def test_int8_of_a_single_text_needs_ranges(minilm):
    with pytest.raises(ValueError, match="at least two texts"):
        minilm.encode("one text", precision="int8")


def test_normalize_embeddings_and_similarity(minilm):
    out = minilm.encode(SENTENCES[:3], normalize_embeddings=True)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    sims = minilm.similarity(out, out)
    np.testing.assert_allclose(np.diag(sims), 1.0, atol=1e-5)


def test_prompt_is_prepended(minilm):
    with_prompt = minilm.encode(["eating food"], prompt="query: ")
    manual = minilm.encode(["query: eating food"])
    np.testing.assert_allclose(with_prompt, manual, atol=1e-6)


def test_embed_tokens_equals_encoding_the_text(minilm):
    ids = minilm.tokenizer.encode([SENTENCES[1]])[0]
    np.testing.assert_allclose(minilm.embed_tokens(ids), minilm.embed(SENTENCES[1]), atol=1e-6)
    batch = minilm.embed_tokens([ids, ids[:3] + ids[-1:]])
    assert batch.shape == (2, 384)
    with pytest.raises(ValueError, match=r"token_ids\[0\] holds -1"):
        minilm.embed_tokens([-1, 5])


def test_mixed_lengths_take_the_packed_path_and_match_the_padded_one(minilm, monkeypatch):
    """A batch of very different lengths (what a server's batches hold) runs as packed passes;
    each embedding equals the one computed alone through the padded graph, for sentence and
    token embeddings."""
    texts = ["a", "cats", SENTENCES[0], " ".join(SENTENCES) * 3, "the sea is calm tonight",
             SENTENCES[1], "stocks fell sharply on monday"]
    ids = minilm.tokenizer.encode(texts)
    ids = [minilm.tokenizer.truncate(s, minilm.max_seq_length) for s in ids]
    assert max(map(len, ids)) == minilm.max_seq_length and min(map(len, ids)) == 3
    calls = {"packed": 0, "padded": 0}
    backend = minilm.backend
    backend.load_packed()  # what StreamingEmbedder does on entry
    packed, padded = backend.forward_packed, backend.forward

    def count_packed(*args, **kwargs):
        calls["packed"] += 1
        return packed(*args, **kwargs)

    def count_padded(*args, **kwargs):
        calls["padded"] += 1
        return padded(*args, **kwargs)

    monkeypatch.setattr(backend, "forward_packed", count_packed)
    monkeypatch.setattr(backend, "forward", count_padded)
    together = minilm.embed_tokens(ids)
    with warnings.catch_warnings():  # the long text is cut; the warning has its own test
        warnings.simplefilter("ignore", sutra.LongTextTruncatedWarning)
        tokens = minilm.encode(texts, output_value="token_embeddings")
    assert calls["packed"] >= 2 and calls["padded"] == 0, calls
    for row, seq in enumerate(ids):
        sentence, token_out = padded(np.array([seq], np.int64), np.ones((1, len(seq)), np.int64),
                                     want_tokens=True)
        np.testing.assert_allclose(together[row], sentence[0], rtol=0, atol=1e-5, err_msg=str(row))
        np.testing.assert_allclose(tokens[row], token_out[0], rtol=0, atol=1e-4, err_msg=str(row))


@pytest.mark.parametrize("preset", ["minilm", "mpnet"])
def test_one_text_tokenizes_as_in_a_batch(preset, request):
    """A single text takes the tokenizer's one-text call (it keeps the GIL); its ids must be
    the batch call's."""
    tokenizer = request.getfixturevalue(preset).tokenizer
    texts = ["", "a", "Le chat est sur le tapis \u00e9l\u00e9gant.", "\U0001F600 emoji and caf\u00e9",
             "e\u0301 combining", " ".join(SENTENCES) * 20, "  spaces  \t\n around  "]
    batch = tokenizer.encode(texts)
    for text, ids in zip(texts, batch):
        assert tokenizer.encode([text]) == [ids], text[:40]


def test_packed_rows_that_cut_a_sequence_are_refused(minilm):
    ids = np.array([101, 7, 8, 102, 101, 9, 102], np.int64)
    cu = np.array([0, 4, 7], np.int64)
    backend = minilm.backend
    together, _ = backend.forward_packed(ids, cu, cu_rowlens=np.array([0, 7], np.int64))
    apart, _ = backend.forward_packed(ids, cu)  # one row per sequence
    np.testing.assert_allclose(together, apart, rtol=0, atol=1e-5)
    for rows, match in (([0, 5, 7], "5 falls inside a sequence"), ([0, 4], "from 0 to the token count 7"),
                        ([1, 4, 7], "from 0"), ([0, 4, 4, 7], "increasing")):
        with pytest.raises(ValueError, match=match):
            backend.forward_packed(ids, cu, cu_rowlens=np.array(rows, np.int64))


def test_encode_never_opens_the_packed_graph_itself(efficient_folder):
    embedder = sutra.Embedder(efficient_folder)
    assert embedder.backend.supports_packed and not embedder.backend.packed_loaded
    embedder.encode(["a", " ".join(SENTENCES) * 2, "two words"])
    assert not embedder.backend.packed_loaded
    embedder.backend.load_packed()
    assert embedder.backend.packed_loaded


def test_batches_without_padding_to_save_stay_padded():
    from sutra import _core

    def _packing_pays(lengths):  # the batch planner's cost model (packing overhead 3%)
        return _core.packing_pays(np.array(lengths, np.int32))

    assert not _packing_pays([12] * 32)  # no padding to save
    assert not _packing_pays([40])  # one row never pads
    assert not _packing_pays([13, 13, 13, 12])  # 2% padding: less than the gathers cost
    assert _packing_pays([13, 12, 12, 11] * 8)  # 8%
    assert _packing_pays([44, 30, 21, 15, 12, 11, 10, 9, 9, 8, 7, 7, 6, 5, 4, 3])


def test_embed_batch_matches_encode(minilm):
    np.testing.assert_allclose(minilm.embed_batch(SENTENCES), minilm.encode(SENTENCES), atol=1e-6)


def test_truncation_warns_once_and_equals_the_cut_text(efficient_folder):
    embedder = sutra.Embedder(efficient_folder)
    long_text = "The quick brown fox jumps over the lazy dog. " * 100
    with pytest.warns(sutra.LongTextTruncatedWarning, match="truncated to max_sequence_length=256"):
        first = embedder.encode(long_text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        embedder.encode(long_text)  # no second warning
    ids = embedder.tokenizer.encode([long_text])[0]
    cut = ids[:255] + ids[-1:]
    np.testing.assert_allclose(first, embedder.embed_tokens(cut), atol=1e-6)


def test_window_mode_aggregates_the_windows(efficient_folder):
    embedder = sutra.Embedder(efficient_folder, long_text="window", window_overlap=16)
    text = " ".join(f"Sentence number {i} talks about a different topic." for i in range(120))
    ids = embedder.tokenizer.encode([text])[0]
    assert len(ids) > 2 * 256
    got = embedder.encode(text)
    windows = sutra.SlidingWindowAttention(256, 16).create_windows(ids)
    assert len(windows) >= 3
    parts = embedder.embed_tokens([w.tolist() for w in windows.token_ids])
    expected = _unit(parts.mean(0))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # A short text is one window: identical to truncate mode.
    np.testing.assert_allclose(embedder.encode("short"), embedder.encode("short", long_text="truncate"),
                               atol=1e-6)


def test_text_of_several_megabytes(minilm):
    huge = ("Embeddings turn text into vectors that can be searched. " * 60_000)[:3_000_000]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sutra.LongTextTruncatedWarning)
        vector = minilm.encode(huge)
    assert vector.shape == (384,) and np.isfinite(vector).all()


def test_config_from_name_and_fields():
    config = sutra.EmbedderConfig.from_name("efficient")
    assert (config.dimensions, config.max_sequence_length) == (384, 256)
    assert sutra.EmbedderConfig.from_name("high-quality").dimensions == 768
    with pytest.raises(ValueError, match="unknown preset 'fast'.*efficient"):
        sutra.EmbedderConfig.from_name("fast")
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'cpu', 'cuda'"):
        sutra.EmbedderConfig(backend="tpu")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        sutra.EmbedderConfig(batch_size=-1)


@pytest.mark.parametrize(
    "field, message",
    [
        ({"use_fp16": True}, "use_fp16=True: fp16 compute runs only on the cuda backend"),
        ({"use_flash_attention": True}, "use_flash_attention=True: flash attention runs only"),
        ({"backend": "cuda"}, "backend='cuda' cannot run"),
    ],
)
def test_fields_that_cannot_take_effect_raise(efficient_folder, field, message):
    with pytest.raises(sutra.BackendUnavailableError, match=message):
        sutra.Embedder(efficient_folder, **field)


def test_out_of_range_config_for_the_model(efficient_folder):
    with pytest.raises(ValueError, match="dimensions=1000 exceeds the model's width 384"):
        sutra.Embedder(efficient_folder, dimensions=1000)
    with pytest.raises(ValueError, match="max_sequence_length=600 exceeds"):
        sutra.Embedder(efficient_folder, max_sequence_length=600)


def test_shorter_max_sequence_length_truncates_earlier(efficient_folder, minilm):
    short = sutra.Embedder(efficient_folder, max_sequence_length=8)
    text = "one two three four five six seven eight nine ten"
    ids = minilm.tokenizer.encode([text])[0]
    with pytest.warns(sutra.LongTextTruncatedWarning):
        got = short.encode(text)
    np.testing.assert_allclose(got, minilm.embed_tokens(ids[:7] + ids[-1:]), atol=1e-6)


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(sutra.ModelNotFoundError, match="unknown model 'no-such-model'"):
        sutra.Embedder("no-such-model")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(sutra.ModelNotFoundError, match="model.safetensors is missing"):
        sutra.Embedder(str(tmp_path))


def test_own_onnx_file_is_required_for_onnx_source_model(efficient_folder):
    with pytest.raises(sutra.BackendUnavailableError, match="has no onnx/model.onnx"):
        sutra.Embedder(efficient_folder, onnx_source="model")


@pytest.mark.parametrize("keep_sentence_output", [True, False])
def test_the_models_own_onnx_file(tmp_path, efficient_folder, minilm, keep_sentence_output):
    """onnx_source='model' runs the folder's onnx/model.onnx; a graph that stops at the token
    embeddings (as Hugging Face exports do) is pooled and normalized by the C++ core."""
    import onnx

    folder = tmp_path / "model"
    (folder / "onnx").mkdir(parents=True)
    for item in Path(efficient_folder).iterdir():
        (folder / item.name).symlink_to(item)
    graph = onnx.load(str(minilm.backend.graph_path))
    if not keep_sentence_output:
        kept = [o for o in graph.graph.output if o.name != "sentence_embedding"]
        del graph.graph.output[:]
        graph.graph.output.extend(kept)
    onnx.save(graph, str(folder / "onnx" / "model.onnx"))
    own = sutra.Embedder(str(folder), onnx_source="model")
    np.testing.assert_allclose(own.encode(SENTENCES), minilm.encode(SENTENCES), atol=1e-5)


def test_a_cached_graph_loads_without_importing_onnx(efficient_folder, minilm):
    """Start-up: the onnx package (over a second to import on a small machine) is needed only to
    build a graph; once it is cached (the minilm fixture built it), Embedder() and encode() run
    without it."""
    import os
    import subprocess
    import sys

    code = ("import sys, sutra; e = sutra.Embedder(sys.argv[1]); e.encode('a warm start'); "
            "print('onnx' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, efficient_folder], capture_output=True,
                         text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr


# -- issue 19: bad input gets a clear error ------------------------------------------------------


def test_a_zero_d_string_array_is_one_text_and_embed_batch_refuses_a_str(minilm):
    np.testing.assert_array_equal(minilm.encode(np.array("a cat")), minilm.encode("a cat"))
    with pytest.raises(TypeError, match="embed_batch takes a sequence of texts, got a single str"):
        minilm.embed_batch("abc")


@pytest.mark.parametrize("bad, error, message", [
    ({101: 1}, TypeError, "token_ids must be a list of token ids or a list of token-id lists, got dict"),
    (None, TypeError, "got NoneType"),
    (5, TypeError, "got int"),
    ((i for i in range(3)), TypeError, "got generator"),
    ([101.0, 102.0], TypeError, r"token_ids\[0\] holds 101.0 \(float\); token ids are ints"),
    ([101, True, 102], TypeError, r"token_ids\[0\] holds True \(bool\)"),
    (np.array([True, False]), TypeError, "numpy array of dtype bool"),
    ([[101, 102], 5], TypeError, r"token_ids\[1\] is int"),
    (np.zeros((2, 2, 2), np.int64), ValueError, r"1-D \(one text\) or 2-D"),
])
def test_embed_tokens_refuses_what_is_not_token_ids(minilm, bad, error, message):
    with pytest.raises(error, match=message):
        minilm.embed_tokens(bad)


def test_embed_tokens_takes_numpy_ids(minilm):
    ids = minilm.tokenizer.encode(["a cat"])[0]
    expected = minilm.embed_tokens(ids)
    np.testing.assert_allclose(minilm.embed_tokens(np.array(ids)), expected, atol=1e-6)
    np.testing.assert_allclose(minilm.embed_tokens([np.int64(t) for t in ids]), expected, atol=1e-6)
    np.testing.assert_allclose(minilm.embed_tokens(np.array([ids, ids]))[1], expected, atol=1e-6)


def test_a_lone_surrogate_names_the_text_and_position(minilm):
    with pytest.raises(ValueError, match=r"sentences\[1\] holds a lone surrogate U\+DC00 at "
                                         r"position 2"):
        minilm.encode(["fine", "ab\udc00cd"])


def test_a_lone_surrogate_is_named_by_its_index_in_the_call_when_pipelined(efficient_folder,
                                                                          monkeypatch):
    """On the pipelined path (the GPU engine: chunks tokenized ahead) the bad text is named by
    its index in the call, not in its chunk; with either tokenizer."""
    for native in (True, False):
        embedder = sutra.Embedder(efficient_folder, backend="cpu")
        if not native:
            from sutra.tokenization import TextTokenizer

            embedder.tokenizer = TextTokenizer(embedder.model.tokenizer_path, native=False)
        monkeypatch.setattr(type(embedder.backend), "pipelines_tokenization",
                            property(lambda _: True))
        monkeypatch.setattr(type(embedder), "_pipeline_chunk_limits", lambda self: (10, 1000))
        texts = [f"text {i}" for i in range(35)]
        texts[23] = "ab\udc00cd"
        with pytest.raises(ValueError, match=r"sentences\[23\] holds a lone surrogate U\+DC00 at "
                                             r"position 2"):
            embedder.encode(texts)


def test_sentence_transformers_arguments(minilm):
    """numpy integers where sentence-transformers takes them; its other arguments accepted
    when they ask for what sutra does, refused with what to use otherwise."""
    plain = minilm.encode(SENTENCES[:3], truncate_dim=64)
    np.testing.assert_allclose(  # batch_size 2 pads differently: float noise only
        minilm.encode(SENTENCES[:3], batch_size=np.int64(2), truncate_dim=np.int32(64),
                      convert_to_numpy=True, convert_to_tensor=False, device="cpu"), plain,
        rtol=0, atol=2e-5)
    with pytest.raises(ValueError, match="convert_to_tensor=True: sutra returns numpy arrays"):
        minilm.encode(SENTENCES[:2], convert_to_tensor=True)
    with pytest.raises(ValueError, match="device='cuda:0': this Embedder runs on its 'cpu'"):
        minilm.encode(SENTENCES[:2], device="cuda:0")
    with pytest.raises(ValueError, match="convert_to_numpy=False"):
        minilm.encode(SENTENCES[:2], convert_to_numpy=False)
    with pytest.raises(ValueError, match="pool and chunk_size .* leave them at None"):
        minilm.encode(SENTENCES[:2], pool=object())
    with pytest.raises(TypeError, match="unexpected keyword argument 'batchsize'"):
        minilm.encode(SENTENCES[:2], batchsize=4)


@pytest.mark.parametrize("preset", ["minilm", "mpnet"])
def test_cutting_while_tokenizing_is_exact(preset, request):
    """encode_cut tokenizes a long text from a prefix (issue 19: a 5-million-character text
    cost 3.2 GB to keep 256 tokens); it must equal tokenizing everything, then truncating."""
    import json
    import random

    tokenizer = request.getfixturevalue(preset).tokenizer
    texts = json.loads((Path(__file__).parent / "fixtures" / "texts.json").read_text())
    words = " ".join(texts).split()
    rng = random.Random(19)
    cjk = "東京は日本の首都です。北京欢迎你，欢迎来到中国。한국어 문장입니다."
    cases = [" ".join(rng.choice(words) for _ in range(rng.randint(50, 2500))) for _ in range(30)]
    cases += [cjk * 300, "".join(rng.choice(cjk) for _ in range(9000)), "a" * 40000 + " b" * 9,
              "tab\tseparated\twords " * 700, "é" * 9 + " " + "naïve café " * 800, "short", ""]
    for max_tokens in (8, 64, 256):
        expected = [tokenizer.truncate(ids, max_tokens) for ids in tokenizer.encode(cases)]
        got, cut = tokenizer.encode_cut(cases, max_tokens)
        for index, (a, b) in enumerate(zip(got, expected)):
            assert a == b, (max_tokens, index, cases[index][:60])
        assert cut == [len(ids) > max_tokens for ids in tokenizer.encode(cases)]


def test_truncating_a_huge_text_costs_what_is_kept(efficient_folder, minilm):
    """A 5-million-character CJK text, truncated: the same embedding as its first 256 tokens,
    with the process's peak memory far below the 3.2 GB it took to tokenize all of it."""
    import os
    import subprocess
    import sys

    code = (
        "import re, sys, warnings, numpy as np, sutra\n"
        "e = sutra.Embedder(sys.argv[1])\n"
        "text = '東京は日本の首都です。' * 500000\n"
        "with warnings.catch_warnings():\n"
        "    warnings.simplefilter('ignore')\n"
        "    vector = e.encode(text)\n"
        "ids = e.tokenizer.encode([text[:2000]])[0]\n"
        "np.testing.assert_allclose(vector, e.embed_tokens(e.tokenizer.truncate(ids, 256)),"
        " atol=1e-5)\n"
        # VmHWM: this process's own peak (ru_maxrss would carry the parent's across exec)
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, efficient_folder], capture_output=True,
                         text=True, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                         timeout=300)
    assert out.returncode == 0, out.stderr
    peak_mib = int(out.stdout.split()[-1]) // 1024
    assert peak_mib < 1200, f"peak RSS {peak_mib} MiB"


def test_a_long_window_run_shows_progress_unasked(efficient_folder, monkeypatch, capsys):
    """Issue 19: long_text='window' on a text of megabytes takes minutes on 2 cores; with
    show_progress_bar left at None, a run of many windows gets a progress bar."""
    import sutra.embedder as embedder_module

    embedder = sutra.Embedder(efficient_folder, long_text="window")
    monkeypatch.setattr(embedder_module, "_LONG_WINDOW_RUN", 5)  # a small text makes 7 windows
    text = "Sentence number one talks about a topic. " * 180
    embedder.encode(text)
    assert "Batches" in capsys.readouterr().err
    embedder.encode(text, show_progress_bar=False)
    embedder.encode("short text")  # one window: no bar
    assert "Batches" not in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["float32", "int8", "ubinary"])
def test_pipelined_tokenization_equals_one_call(efficient_folder, monkeypatch, precision):
    """On a backend faster than the tokenizer (the GPU engine) a large call is tokenized in
    chunks one ahead of the backend; the rows, the truncation warning and the output precision
    (int8 ranges over every row of the call) must be what one plain call gives. Run here on the
    cpu backend with the pipeline switched on and tiny chunks."""
    from sutra import embedder as embedder_module

    plain = sutra.Embedder(efficient_folder, backend="cpu")
    texts = [f"sentence number {i} about {'cats' if i % 3 else 'a much longer topic ' * (i % 7)}"
             for i in range(230)]
    texts[17] = "word " * 400  # cut at max_seq_length: warns once
    with pytest.warns(sutra.LongTextTruncatedWarning):
        expected = plain.encode(texts, precision=precision)

    piped = sutra.Embedder(efficient_folder, backend="cpu")
    monkeypatch.setattr(type(piped.backend), "pipelines_tokenization", property(lambda _: True))
    monkeypatch.setattr(type(piped), "_pipeline_chunk_limits", lambda self: (40, 1500))
    assert len(embedder_module._text_chunks(texts, 40, 1500)) > 5
    with pytest.warns(sutra.LongTextTruncatedWarning):
        got = piped.encode(texts, precision=precision)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    if precision == "float32":
        cos = (got * expected).sum(1)
        assert cos.min() > 0.99999
    else:  # quantized from (almost) the same floats with the same ranges
        mismatch = np.mean(got != expected)
        assert mismatch < 0.01, mismatch


def test_text_chunks_bound_texts_and_characters():
    from sutra import embedder as embedder_module

    texts = ["aa", "bb", "cc", "dd", "e" * 25, "ff", "gggggg", "hhhhh"]
    chunks = embedder_module._text_chunks(texts, 3, 10)
    assert sum(chunks, []) == texts
    assert all(1 <= len(c) <= 3 for c in chunks)
    assert all(len(c) == 1 or sum(map(len, c)) <= 10 for c in chunks)
    assert chunks == [["aa", "bb", "cc"], ["dd"], ["e" * 25], ["ff", "gggggg"], ["hhhhh"]]


def test_pipeline_chunks_fill_an_engine_pass_with_the_native_tokenizer(efficient_folder,
                                                                       monkeypatch):
    """The `tokenizers` chunks (4,096 texts) would cut a call of short texts into many small
    engine passes; with the native tokenizer a chunk holds about one pass's tokens."""
    from sutra import embedder as embedder_module

    e = sutra.Embedder(efficient_folder, backend="cpu")
    assert e.tokenizer.is_native
    monkeypatch.setattr(type(e.backend), "max_tokens", property(lambda _: 262_144), raising=False)
    texts, chars = e._pipeline_chunk_limits()
    assert texts == 262_144 // embedder_module._TOKENS_PER_TEXT
    assert chars == 262_144 * embedder_module._CHARS_PER_TOKEN
    monkeypatch.setattr(type(e.backend), "max_tokens", property(lambda _: 1024), raising=False)
    assert e._pipeline_chunk_limits() == (embedder_module._PIPELINE_TEXTS,
                                          embedder_module._PIPELINE_CHARS)
    monkeypatch.setattr(type(e.tokenizer), "is_native", property(lambda _: False))
    monkeypatch.setattr(type(e.backend), "max_tokens", property(lambda _: 262_144), raising=False)
    assert e._pipeline_chunk_limits() == (embedder_module._PIPELINE_TEXTS,
                                          embedder_module._PIPELINE_CHARS)


def test_a_changed_config_builds_a_new_graph(tmp_path, monkeypatch):
    """The cached ONNX graph is keyed by config.json too: the same weights with another
    layer_norm_eps (or activation, or head count) must not reuse the graph built before."""
    import json
    import shutil

    from sutra.backends.onnxruntime import built_graph_path
    from sutra.models import resolve

    monkeypatch.setenv("SUTRA_HOME", str(tmp_path / "home"))
    folder = tmp_path / "mean"
    shutil.copytree(Path(__file__).parent / "fixtures" / "pipelines" / "mean", folder)
    texts = ["a config change", "must rebuild the graph"]
    before = built_graph_path(resolve(str(folder)))
    old = sutra.Embedder(str(folder), backend="cpu").encode(texts)

    config = json.loads((folder / "config.json").read_text())
    config["layer_norm_eps"] = 0.5
    (folder / "config.json").write_text(json.dumps(config))
    after = built_graph_path(resolve(str(folder)))
    assert after != before and before.is_file() and after.is_file()
    new = sutra.Embedder(str(folder), backend="cpu").encode(texts)
    assert not np.allclose(new, old, atol=1e-4)  # eps 0.5 changes every LayerNorm's output
