"""The native WordPiece tokenizer (sutra._core.WordPieceTokenizer) against Hugging Face
`tokenizers` on the same tokenizer.json: token for token, with and without truncation.

Any difference fails. The characters that differ because the two sides' Unicode tables differ
are listed in UNICODE_VERSION_DIFFERENCES with the reason; test_single_code_points checks that
exactly those differ, and the fuzz draws every other code point.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tokenizers
from sutra import _core, native_tokenizer
from sutra._errors import ModelFetchError, ModelNotFoundError

FIXTURES = Path(__file__).parent / "fixtures"
MAX_TOKENS = 256

# Characters that tokenize differently, and why. tokenizers takes the general categories its
# BertNormalizer and BertPreTokenizer use (Cc/Cf/Co removed by clean_text, Mn dropped by
# strip_accents, P* split off as punctuation) from the `unicode_categories` crate 0.1.1, whose
# tables are Unicode 8.0 (U+2E42, new in 8.0, agrees; U+2E43, new in 9.0, does not); sutra's
# tables come from Python's unicodedata (14.0.0 in Python 3.11). So characters assigned in
# Unicode 9.0..14.0 with these categories are plain letters to tokenizers and format
# characters, marks or punctuation to sutra, and two were re-categorized: U+166D CANADIAN
# SYLLABICS CHI SIGN (Po until 12.0, So now) and U+1734 HANUNOO SIGN PAMUDPOD (Mn until 14.0,
# Mc now). Keyed by the Unicode 14.0 category; test_single_code_points checks that this is
# exactly the set of characters that differ, so the list can neither hide nor miss one.
_DIFFERENCE_RANGES = {
    "Cf": "890-891 8E2 110CD 13430-13438",
    "Mc": "1734",
    "Mn": (
        "7FD 898-89F 8CA-8E1 9FE AFA-AFF B55 C04 C3C D00 D3B-D3C D81 EBA 180F 1885-1886 1ABF-1ACE "
        "1DF6-1DFB A82C A8C5 A8FF A9BD 10D24-10D27 10EAB-10EAC 10F46-10F50 10F82-10F85 11070 "
        "11073-11074 110C2 111C9 111CF 1123E 1133B 11438-1143F 11442-11444 11446 1145E "
        "1182F-11837 11839-1183A 1193B-1193C 1193E 11943 119D4-119D7 119DA-119DB 119E0 "
        "11A01-11A0A 11A33-11A38 11A3B-11A3E 11A47 11A51-11A56 11A59-11A5B 11A8A-11A96 "
        "11A98-11A99 11C30-11C36 11C38-11C3D 11C3F 11C92-11CA7 11CAA-11CB0 11CB2-11CB3 "
        "11CB5-11CB6 11D31-11D36 11D3A 11D3C-11D3D 11D3F-11D45 11D47 11D90-11D91 11D95 11D97 "
        "11EF3-11EF4 16F4F 16FE4 1CF00-1CF2D 1CF30-1CF46 1E000-1E006 1E008-1E018 1E01B-1E021 "
        "1E023-1E024 1E026-1E02A 1E130-1E136 1E2AE 1E2EC-1E2EF 1E944-1E94A"
    ),
    "Pd": "2E5D 10EAD",
    "Pe": "2E56 2E58 2E5A 2E5C",
    "Po": (
        "61D 9FD A76 C77 C84 1B7D-1B7E 2E43-2E4F 2E52-2E54 10F55-10F59 10F86-10F89 1144B-1144F "
        "1145A-1145B 1145D 11660-1166C 116B9 1183B 11944-11946 119E2 11A3F-11A46 11A9A-11A9C "
        "11A9E-11AA2 11C41-11C45 11C70-11C71 11EF7-11EF8 11FFF 12FF1-12FF2 16E97-16E9A 16FE2 "
        "1E95E-1E95F"
    ),
    "Ps": "2E55 2E57 2E59 2E5B",
    "So": "166D",
}


def _expand(ranges: str) -> set[int]:
    out: set[int] = set()
    for item in ranges.split():
        lo, _, hi = item.partition("-")
        out.update(range(int(lo, 16), int(hi or lo, 16) + 1))
    return out


UNICODE_VERSION_DIFFERENCES = set().union(*(_expand(r) for r in _DIFFERENCE_RANGES.values()))


def _preset_files() -> list:
    from sutra.models import resolve

    params = []
    for name in ("efficient", "high-quality"):
        try:
            path = Path(resolve(name).path) / "tokenizer.json"
            present = path.is_file()
        except (ModelNotFoundError, ModelFetchError, OSError):  # not here and not fetchable: skip
            present = False
        params.append(pytest.param(path if present else None, id=name,
                                   marks=[] if present else pytest.mark.skip(
                                       reason=f"the {name} preset's tokenizer.json is not "
                                              "available")))
    return params


PRESETS = _preset_files()


def _hf(path: Path, normalizer_overrides: dict | None = None):
    spec = json.loads(path.read_text(encoding="utf-8"))
    if normalizer_overrides:
        spec["normalizer"].update(normalizer_overrides)
    tok = tokenizers.Tokenizer.from_str(json.dumps(spec))
    tok.no_padding()
    tok.no_truncation()
    return tok


def _native(path: Path, normalizer_overrides: dict | None = None):
    tok = native_tokenizer.load(path, **(normalizer_overrides or {}))
    assert tok is not None
    return tok


def _compare(path: Path, texts: list[str], normalizer_overrides: dict | None = None) -> None:
    """Asserts token-for-token equality, with and without truncation at MAX_TOKENS."""
    hf = _hf(path, normalizer_overrides)
    native = _native(path, normalizer_overrides)
    full = hf.encode_batch(texts, add_special_tokens=True)
    ids, cu, cut = native.encode_batch(texts, None)
    assert ids.dtype == np.int32 and cu.dtype == np.int32 and cut.dtype == np.bool_
    assert cu.shape == (len(texts) + 1,) and cu[0] == 0 and ids.shape == (cu[-1],)
    assert not cut.any()
    hf.enable_truncation(MAX_TOKENS)
    truncated = hf.encode_batch(texts, add_special_tokens=True)
    t_ids, t_cu, t_cut = native.encode_batch(texts, MAX_TOKENS)
    for i, text in enumerate(texts):
        got, want = ids[cu[i]:cu[i + 1]].tolist(), full[i].ids
        got_t, want_t = t_ids[t_cu[i]:t_cu[i + 1]].tolist(), truncated[i].ids
        if got == want and got_t == want_t:
            assert bool(t_cut[i]) == (len(want) > MAX_TOKENS), (i, text)
            continue
        first = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b),
                     min(len(got), len(want)))
        pytest.fail(f"text {i} {text!r}: native {got[max(0, first - 3):first + 5]} != "
                    f"tokenizers {want[max(0, first - 3):first + 5]} at token {first} "
                    f"(truncated equal: {got_t == want_t})")


def _fixture_texts() -> list[str]:
    texts = json.loads((FIXTURES / "texts.json").read_text(encoding="utf-8"))
    lines = (FIXTURES / "wordnet_sample.txt").read_text(encoding="utf-8").splitlines()
    return texts + lines


# Blocks the fuzz draws from: scripts, combining marks, CJK (unified, extensions, compatibility),
# Hangul, controls, format characters and joiners, whitespace of every kind, emoji, private use.
_BLOCKS = [(0x20, 0x7E), (0x00, 0x1F), (0x7F, 0x9F), (0xA0, 0xFF), (0x100, 0x24F), (0x300, 0x36F),
           (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F), (0xE00, 0xE7F),
           (0x1100, 0x11FF), (0x1AB0, 0x1AFF), (0x1DC0, 0x1DFF), (0x1E00, 0x1FFF),
           (0x2000, 0x206F), (0x20D0, 0x20FF), (0x2100, 0x2BFF), (0x2E00, 0x2E7F),
           (0x3000, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
           (0xE000, 0xF8FF), (0xF900, 0xFAFF), (0xFB00, 0xFDFF), (0xFE00, 0xFE6F),
           (0xFF00, 0xFFEF), (0xFFF0, 0xFFFF), (0x10000, 0x1FFFF), (0x1F300, 0x1FAFF),
           (0x20000, 0x2FA1F), (0x30000, 0x3134F), (0xE0000, 0xE01EF), (0xF0000, 0x10FFFF)]
_SPECIAL = ["[CLS]", "[SEP]", "[UNK]", "[MASK]", "[PAD]", "<s>", "</s>", "<unk>", "<UNK>", "<mask>",
            "<pad>", "[cls]", "[CLS", "##", "\u200d", "\ufeff", "\ufffd", "\x00",
            " \t\n\r\x0b\x0c\x85"]


def _fuzz_texts(seed: int, count: int) -> list[str]:
    """Random texts; the listed characters are left out (test_single_code_points has them)."""
    rng = random.Random(seed)
    words = ["the", "unbelievable", "naïve", "Straße", "İstanbul", "ΣΊΣΥΦΟΣ", "東京", "👩‍👩‍👧",
             "e\u0301",
             "ﬁ", "Ⅻ", "x" * 150, "a" * 100, "é" * 101, "hello-world", "U.S.A.", "3.14"]
    texts = ["", " ", "\t\n", "[CLS]", "[SEP][SEP]", "<s></s>", "a" * 101, "a" * 100]
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(0, 40)):
            r = rng.random()
            if r < 0.35:
                lo, hi = rng.choice(_BLOCKS)
                n = rng.choice([1, 1, 2, 3, 5, 8, 120])
                cps = (rng.randint(lo, hi) for _ in range(n))
                parts.append("".join(chr(c) for c in cps if not 0xD800 <= c <= 0xDFFF
                                     and c not in UNICODE_VERSION_DIFFERENCES))
            elif r < 0.55:
                parts.append(rng.choice(words))
            elif r < 0.7:
                parts.append(rng.choice(_SPECIAL))
            elif r < 0.8:
                space = rng.choice([" ", "  ", "\u3000", "\n\n", " \u00a0 ", "\u2028"])
                parts.append(space * rng.randint(1, 6))
            else:
                parts.append(rng.choice(words).upper())
            parts.append(rng.choice(["", " ", " ", "\u200b", "\u0301", "-"]))
        texts.append("".join(parts))
    return texts


@pytest.mark.parametrize("path", PRESETS)
def test_fixture_texts(path):
    _compare(path, _fixture_texts())


def _wordnet_passages() -> list[str]:
    """Passages as bench/gpu_e2e.py builds them (shuffled lines joined with "; " past 900
    characters), from the committed WordNet sample, then one text of about 1 MB."""
    lines = (FIXTURES / "wordnet_sample.txt").read_text(encoding="utf-8").splitlines()
    random.Random(0).shuffle(lines)
    texts, current = [], []
    for line in lines * 3:
        current.append(line)
        if sum(map(len, current)) > 900:
            texts.append("; ".join(current))
            current = []
    assert len(texts) > 100
    texts.append(" ".join(texts) * 8)
    assert len(texts[-1]) > 1_000_000
    return texts


@pytest.mark.parametrize("path", PRESETS)
def test_wordnet_passages_and_long_texts(path):
    texts = _wordnet_passages()  # the last one: truncation stops early and agrees
    _compare(path, texts)
    _compare(path, texts)


@pytest.mark.parametrize("path", PRESETS)
def test_fuzz(path):
    seed = 20
    print(f"fuzz seed {seed}")
    _compare(path, _fuzz_texts(seed, 5000))


# The normalizer switches each way (MiniLM's vocabulary; the tokenizers side reads the same
# switches from an edited copy of the file).
NORMALIZER_SWITCHES = pytest.mark.parametrize("overrides", [
    {"lowercase": True, "strip_accents": False},
    {"lowercase": True, "strip_accents": True},
    {"lowercase": False, "strip_accents": None},
    {"lowercase": False, "strip_accents": True},
    {"clean_text": False},
    {"handle_chinese_chars": False},
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))


@NORMALIZER_SWITCHES
def test_normalizer_switches(overrides):
    path = PRESETS[0].values[0]
    if path is None:
        pytest.skip("the efficient preset's tokenizer.json is not available")
    texts = _fixture_texts()[:300] + _fuzz_texts(7, 800)
    _compare(path, texts, overrides)


@pytest.mark.parametrize("path", PRESETS)
def test_single_code_points(path):
    """Every code point, between letters and alone: the differing ones are exactly the list."""
    cps = [c for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    texts = [f"a{chr(c)}b {chr(c)}" for c in cps]
    hf = _hf(path)
    want = hf.encode_batch(texts, add_special_tokens=True)
    ids, cu, _ = _native(path).encode_batch(texts, None)
    differ = {c for i, c in enumerate(cps) if ids[cu[i]:cu[i + 1]].tolist() != want[i].ids}
    assert differ == UNICODE_VERSION_DIFFERENCES, (
        f"new: {sorted(map(hex, differ - UNICODE_VERSION_DIFFERENCES))[:20]}, "
        f"gone: {sorted(map(hex, UNICODE_VERSION_DIFFERENCES - differ))[:20]}")


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(),
                    reason="WordNet is not installed (apt-get install wordnet-base)")
@pytest.mark.parametrize("path", PRESETS)
def test_all_wordnet(path):
    sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
    try:
        import corpus
    finally:
        sys.path.pop(0)
    texts = corpus.examples() + corpus.definitions()
    assert len(texts) > 100_000
    _compare(path, texts)


def test_truncation_edges():
    path = PRESETS[0].values[0]
    if path is None:
        pytest.skip("the efficient preset's tokenizer.json is not available")
    native = _native(path)
    hf = _hf(path)
    text = "one two three four five"
    want = hf.encode(text).ids
    for max_tokens in range(2, len(want) + 2):
        ids, cu, cut = native.encode_batch([text], max_tokens)
        expect = want if len(want) <= max_tokens else want[:max_tokens - 1] + want[-1:]
        assert ids.tolist() == expect and bool(cut[0]) == (len(want) > max_tokens)
    with pytest.raises(ValueError, match="max_tokens"):
        native.encode_batch([text], 1)
    ids, cu, cut = native.encode_batch([], 8)
    assert ids.shape == (0,) and cu.tolist() == [0] and cut.shape == (0,)
    with pytest.raises(ValueError, match="texts must be a list of str"):
        native.encode_batch(["a", 3], None)
    with pytest.raises(ValueError, match="texts must be a list of str"):
        native.encode_batch("abc", None)


def test_truncation_stops_reading():
    """A 20 MB text cut at 256 tokens costs about what its first kilobytes cost."""
    path = PRESETS[0].values[0]
    if path is None:
        pytest.skip("the efficient preset's tokenizer.json is not available")
    native = _native(path)
    huge = "tokenization " * 1_600_000
    native.encode_batch([huge[:100_000]], None)  # warm-up

    def seconds(max_tokens):
        start = time.perf_counter()
        ids, _, cut = native.encode_batch([huge], max_tokens, num_threads=1)
        return time.perf_counter() - start, ids, cut

    full, ids_full, _ = seconds(None)
    cut_time, ids_cut, cut = seconds(MAX_TOKENS)
    assert cut[0] and ids_cut.shape == (MAX_TOKENS,)
    assert ids_cut[:-1].tolist() == ids_full[:MAX_TOKENS - 1].tolist()
    assert cut_time < full / 20, (cut_time, full)


def test_threads_agree():
    path = PRESETS[0].values[0]
    if path is None:
        pytest.skip("the efficient preset's tokenizer.json is not available")
    native = _native(path)
    texts = _fuzz_texts(3, 2000)
    one = native.encode_batch(texts, MAX_TOKENS, num_threads=1)
    many = native.encode_batch(texts, MAX_TOKENS, num_threads=7)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)


def test_loader_refuses_other_models(tmp_path):
    spec = {"model": {"type": "BPE", "vocab": {}, "merges": []}, "normalizer": None,
            "pre_tokenizer": None, "post_processor": None, "added_tokens": []}
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
    assert native_tokenizer.load(tmp_path) is None
    assert _core.WordPieceTokenizer.unicode_version == "14.0.0"


def test_vocab_as_list_and_added_token_normalized():
    """A vocabulary given as a list in id order builds the same tokenizer; a `normalized` added
    token is looked for in its normalized form (tokenizers normalizes its content too)."""
    path = PRESETS[0].values[0]
    if path is None:
        pytest.skip("the efficient preset's tokenizer.json is not available")
    spec = json.loads(path.read_text(encoding="utf-8"))
    vocab = spec["model"]["vocab"]
    spec["model"]["vocab"] = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    spec["added_tokens"].append({"id": len(vocab), "content": "[FOO]", "special": True,
                                 "single_word": False, "lstrip": False, "rstrip": False,
                                 "normalized": True})
    params = native_tokenizer.params_from_json(spec)
    native = _core.WordPieceTokenizer(params.pop("vocab"), **params)
    spec["model"]["vocab"] = vocab
    hf = tokenizers.Tokenizer.from_str(json.dumps(spec))
    hf.no_padding()
    hf.no_truncation()
    texts = ["a [FOO] b [foo]c", "[Foo][CLS]", "x"]
    ids, cu, _ = native.encode_batch(texts, None)
    for i, text in enumerate(texts):
        assert ids[cu[i]:cu[i + 1]].tolist() == hf.encode(text).ids, text


# --- offsets: encode_with_offsets against tokenizers' encode(text, add_special_tokens=False) ---

# Where normalization changes the alignment: expansions (U+0130 lowercases to i + U+0307, which
# strip_accents drops or a piece boundary can split), NFD with marks dropped or reordered
# (U+1E69 is s + U+0323 + U+0307; U+0316 sorts before U+0301), Hangul jamo, removed characters
# at the start, in and at the end of a word, CJK spacing, unknown and over-long words, and
# added tokens written in the text (raw ones and mpnet's normalized <unk>).
_OFFSET_PROBES = [
    "İstanbul", "İİİ", "İ\u0301", "\u0130\u0307x", "i\u0307x", "ﬁ", "ﬁx", "ﬃx", "e\u0301",
    "e\u0301x", "e\u0301\u0301\u0316\u0301x", "a\u0301\u0316b", "\u1e69\u0316\u0301",
    "ṩ\u0316x", "\u0344a", "a\u0f73b", "\u1f88\u0345x", "\u0345a", "a\u0345", "\u0390x", "ǰ",
    "x\U0001d16d\U0001d165", "é\U0001d165", "Straße", "ẞ", "ǅǅ", "Ǆa", "ΣΊΣΥΦΟΣ", "Ⅻ",
    "東京ab", "a\u3000b", "한국어를 대한민국", "zzqxjkv", "x" * 101, "é" * 101, "e\u0301" * 101,
    "\u200bab", "a\u200bb", "ab\u200b", "a\x00b", "👩\u200d👩\u200d👧", "[CLS] a[SEP]b",
    "[cls]", "<s>a</s>", "x<unk>y <UNK> [UNK]", "hello-world U.S.A. 3.14", "",
]


def _compare_offsets(path: Path, texts: list[str], normalizer_overrides: dict | None = None,
                     skip: set[int] = frozenset()) -> None:
    """Asserts equal ids and offsets for every text, except texts holding a character of
    ``skip`` (the listed Unicode version differences, whose tokens differ)."""
    hf = _hf(path, normalizer_overrides)
    native = _native(path, normalizer_overrides)
    want = hf.encode_batch(texts, add_special_tokens=False)
    for i, text in enumerate(texts):
        ids, offsets = native.encode_with_offsets(text)
        assert ids.dtype == np.int32 and offsets.dtype == np.int32
        assert ids.shape == (len(want[i].ids),) or skip, (i, text)
        assert offsets.shape == (ids.shape[0], 2)
        got = list(map(tuple, offsets.tolist()))
        if ids.tolist() == want[i].ids and got == want[i].offsets:
            continue
        if skip and any(ord(c) in skip for c in text):
            continue
        first = next((k for k, (a, b) in enumerate(zip(got, want[i].offsets)) if a != b),
                     min(len(got), len(want[i].offsets)))
        pytest.fail(f"text {i} {text[:200]!r}: ids equal {ids.tolist() == want[i].ids}, native "
                    f"offsets {got[max(0, first - 2):first + 3]} != tokenizers "
                    f"{want[i].offsets[max(0, first - 2):first + 3]} at token {first} "
                    f"({want[i].tokens[max(0, first - 2):first + 3]})")


@pytest.mark.parametrize("path", PRESETS)
def test_offsets_fixtures_wordnet_and_fuzz(path):
    seed = 20
    print(f"fuzz seed {seed}")
    _compare_offsets(path, _OFFSET_PROBES + _fixture_texts() + _wordnet_passages()
                     + _fuzz_texts(seed, 5000))


@NORMALIZER_SWITCHES
def test_offsets_normalizer_switches(overrides):
    path = PRESETS[0].values[0]
    if path is None:
        pytest.skip("the efficient preset's tokenizer.json is not available")
    texts = _OFFSET_PROBES + _fixture_texts()[:300] + _fuzz_texts(7, 800)
    _compare_offsets(path, texts, overrides)


@pytest.mark.parametrize("path", PRESETS)
def test_offsets_single_code_points(path):
    """Every code point, between letters and alone: only the listed characters differ."""
    cps = [c for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    _compare_offsets(path, [f"a{chr(c)}b {chr(c)}" for c in cps],
                     skip=UNICODE_VERSION_DIFFERENCES)


def test_offsets_edges():
    path = PRESETS[0].values[0]
    if path is None:
        pytest.skip("the efficient preset's tokenizer.json is not available")
    native = _native(path)
    ids, offsets = native.encode_with_offsets("")
    assert ids.shape == (0,) and offsets.shape == (0, 2) and offsets.dtype == np.int32
    # Chunk boundaries of long texts (every 2 kB, after whitespace) keep counting code points.
    text = ("naïve İstanbul 東京 " * 400).strip()
    ids, offsets = native.encode_with_offsets(text)
    assert [text[a:b] for a, b in offsets.tolist()[:6]] == ["naïve", "İstanbul", "東", "京",
                                                            "naïve", "İstanbul"]
    assert offsets[-1].tolist() == [len(text) - 1, len(text)]
    for bad in (b"abc", 3, None):
        with pytest.raises(TypeError, match="text must be a str"):
            native.encode_with_offsets(bad)
    with pytest.raises(UnicodeEncodeError):
        native.encode_with_offsets("a\ud800b")


def test_text_tokenizer_offsets_native_and_tokenizers():
    """TextTokenizer.encode_with_offsets gives the same lists from either path."""
    from sutra.tokenization import TextTokenizer

    path = PRESETS[0].values[0]
    if path is None:
        pytest.skip("the efficient preset's tokenizer.json is not available")
    native = TextTokenizer(path)
    plain = TextTokenizer(path, native=False)
    assert native.is_native and not plain.is_native
    for text in _OFFSET_PROBES + _fuzz_texts(5, 50):
        got = native.encode_with_offsets(text)
        assert got == plain.encode_with_offsets(text), text
        assert all(type(i) is int for i in got[0])
        assert all(type(o) is tuple and type(o[0]) is int for o in got[1])
    with pytest.raises(ValueError, match="lone surrogate U\\+D800 at position 1"):
        native.encode_with_offsets("a\ud800b")


def test_text_tokenizer_arrays_with_tokenizers_match_its_truncation():
    """TextTokenizer(native=False).encode_arrays (the path of RoBERTa, XLM-R: the tokenizers
    batch call flattened by _core.flatten_token_ids, texts too long to tokenize whole cut from
    a prefix) equals tokenizers' own truncation, one text at a time, and counts the cut texts."""
    from sutra.tokenization import PREFIX_CHARS_PER_TOKEN, TextTokenizer

    path = PRESETS[0].values[0]
    if path is None:
        pytest.skip("the efficient preset's tokenizer.json is not available")
    plain = TextTokenizer(path, native=False)
    texts = _fuzz_texts(11, 300)
    whole = _hf(path)
    for max_tokens in (None, MAX_TOKENS, 16, 2):
        reference = _hf(path)
        if max_tokens is not None:
            reference.enable_truncation(max_tokens)
        batches = [texts, texts[5:6], []]
        if max_tokens is not None:  # one text over the prefix threshold: the list path
            batches.append(texts[:40] + ["word " * (max_tokens * PREFIX_CHARS_PER_TOKEN)])
        for batch in batches:
            want = [reference.encode(t).ids for t in batch]
            tokens, cut = plain.encode_arrays(batch, max_tokens)
            ids, cu = tokens.ids, tokens.cu_seqlens
            assert ids.dtype == np.int32 and cu.dtype == np.int32 and len(cu) == len(batch) + 1
            got = [ids[cu[i]:cu[i + 1]].tolist() for i in range(len(batch))]
            assert got == want, max_tokens
            full = [len(whole.encode(t).ids) for t in batch]
            assert cut == sum(max_tokens is not None and n > max_tokens for n in full)


def test_flatten_token_ids_refuses_what_is_not_token_ids():
    ids, cu, cut = _core.flatten_token_ids([[101, 7, 8, 102], [], [101, 102]], 3, 1)
    assert ids.tolist() == [101, 7, 102, 101, 102] and cu.tolist() == [0, 3, 3, 5]
    assert cut.tolist() == [True, False, False]
    with pytest.raises(ValueError, match=r"sequences\[1\]\[0\] is not a token id"):
        _core.flatten_token_ids([[1], [-1]])
    with pytest.raises(ValueError, match=r"sequences\[0\]\[1\] is not a token id"):
        _core.flatten_token_ids([[1, "2"]])
    with pytest.raises(ValueError, match=r"sequences\[0\]\[0\] is not a token id"):
        _core.flatten_token_ids([[2 ** 40]])
    with pytest.raises(TypeError, match=r"sequences\[0\] must be a list of token ids"):
        _core.flatten_token_ids([(1, 2)])
    with pytest.raises(ValueError, match="max_tokens must be"):
        _core.flatten_token_ids([[1, 2]], 0, 1)


def test_prefix_path_cjk_ranges_are_tokenizers_own():
    """The prefix cut of the tokenizers path (TextTokenizer.encode_cut) takes a CJK ideograph
    for a word boundary: exactly the code points that tokenizers' BertNormalizer isolates."""
    from sutra.tokenization import _CJK_IDEOGRAPH

    normalizer = tokenizers.normalizers.BertNormalizer(
        clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False)
    points = [*range(0x2E80, 0xA000), *range(0xF900, 0xFB00), *range(0x20000, 0x30000)]
    differ = [hex(cp) for cp in points
              if (normalizer.normalize_str(chr(cp)) == f" {chr(cp)} ")
              != (_CJK_IDEOGRAPH.match(chr(cp)) is not None)]
    assert differ == []
