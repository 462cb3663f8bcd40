"""Splitting long texts into overlapping chunks without breaking characters.

Python strings are sequences of code points, so any slice is valid UTF-8 once encoded; what a
careless cut can still break is a user-perceived character made of several code points: a letter
and its combining accents, an emoji with a skin-tone modifier or variation selector, a ZWJ
sequence (family emoji), a flag (two regional indicators) or a CRLF pair. The boundary test below
keeps those together, and the chunker prefers to cut after whitespace.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

_ZWJ = "\u200d"


def _is_extender(char: str) -> bool:
    """Code points that attach to the one before them and so never start a chunk."""
    code = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Mc", "Me")  # combining marks
        or char == _ZWJ
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0xE0100 <= code <= 0xE01EF  # variation selectors supplement
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= code <= 0xE007F  # emoji tag sequences (subdivision flags)
    )


def _is_regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def is_safe_boundary(text: str, index: int) -> bool:
    """Whether cutting ``text`` before ``text[index]`` keeps every user-perceived character whole.

    ``0`` and ``len(text)`` are always safe. The rules are a practical subset of Unicode grapheme
    cluster boundaries (UAX #29): combining marks, ZWJ sequences, variation selectors, skin-tone
    modifiers, tag sequences, flag pairs and CRLF stay together.
    """
    if index <= 0 or index >= len(text):
        return True
    before, after = text[index - 1], text[index]
    if _is_extender(after) or before == _ZWJ:
        return False
    if before == "\r" and after == "\n":
        return False
    if _is_regional_indicator(before) and _is_regional_indicator(after):
        # Flags pair regional indicators from the start of a run: cut only after an even count.
        run = 0
        while index - 1 - run >= 0 and _is_regional_indicator(text[index - 1 - run]):
            run += 1
        return run % 2 == 0
    return True


@dataclass(frozen=True)
class TextSpan:
    """A chunk of a text: ``text[start:end]`` (code point offsets into the original string)."""

    start: int
    end: int


def chunk_text(text: str, chunk_size: int, chunk_overlap: int) -> list[TextSpan]:
    """Split ``text`` into overlapping chunks of at most ``chunk_size`` characters.

    A chunk ends after the last whitespace in its second half when there is one, otherwise at the
    last safe boundary (:func:`is_safe_boundary`) that fits. The next chunk starts about
    ``chunk_overlap`` characters before the previous end, moved forward to the start of a word
    when the overlap contains whitespace. Every chunk makes progress, and the chunks cover the
    text: the first starts at 0, the last ends at ``len(text)``, and each starts at or before the
    previous one's end.

    Edge semantics: an empty text gives no chunks; a text of at most ``chunk_size`` characters
    gives one chunk. A single user-perceived character longer than ``chunk_size`` code points (a
    letter with dozens of combining marks) is cut between code points, the only way to respect
    ``chunk_size``.

    Returns:
        spans in text order.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if not 0 <= chunk_overlap < chunk_size:
        raise ValueError(f"chunk_overlap must be in 0..{chunk_size - 1}, got {chunk_overlap}")
    length = len(text)
    spans: list[TextSpan] = []
    start = 0
    while start < length:
        end = min(start + chunk_size, length)
        if end < length:
            end = _choose_end(text, start, end)
        spans.append(TextSpan(start, end))
        if end >= length:
            break
        start = _choose_next_start(text, start, end, chunk_overlap)
    return spans


def _choose_end(text: str, start: int, limit: int) -> int:
    """The end of a chunk that starts at ``start`` and may reach ``limit`` (exclusive)."""
    # Prefer ending right after whitespace, but not so early that chunks become tiny.
    floor = start + max(1, (limit - start) // 2)
    for end in range(limit, floor - 1, -1):
        if text[end - 1].isspace() and is_safe_boundary(text, end):
            return end
    for end in range(limit, start, -1):
        if is_safe_boundary(text, end):
            return end
    return limit  # one oversized cluster: cut between code points rather than exceed the size


def _choose_next_start(text: str, start: int, end: int, overlap: int) -> int:
    """Where the chunk after ``[start, end)`` begins: ``overlap`` before ``end``, snapped."""
    if overlap == 0:
        return end
    candidate = max(end - overlap, start + 1)
    # Start at a word: the word start nearest to the target, searched up to half an overlap
    # further back (a little more overlap beats starting mid-word).
    lowest = max(start + 1, end - overlap - overlap // 2)
    word_starts = [p for p in range(lowest, end)
                   if text[p - 1].isspace() and not text[p].isspace()]
    if word_starts:
        return min(word_starts, key=lambda p: abs(p - candidate))
    for position in range(candidate, end + 1):
        if is_safe_boundary(text, position):
            return position
    return end


def chunk_token_ids(count: int, chunk_size: int, chunk_overlap: int) -> list[tuple[int, int]]:
    """``[start, end)`` windows over ``count`` tokens, ``chunk_size`` long, sharing
    ``chunk_overlap``.

    The last window ends at ``count``; ``count == 0`` gives no windows.
    """
    if chunk_size <= 0 or not 0 <= chunk_overlap < chunk_size:
        raise ValueError(
            f"need chunk_size > 0 and 0 <= chunk_overlap < chunk_size; got chunk_size="
            f"{chunk_size}, chunk_overlap={chunk_overlap}"
        )
    windows: list[tuple[int, int]] = []
    start = 0
    while start < count:
        end = min(start + chunk_size, count)
        windows.append((start, end))
        if end == count:
            break
        start = end - chunk_overlap
    return windows
