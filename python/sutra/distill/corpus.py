"""Reading a corpus file and splitting it into training and held-out texts."""

from __future__ import annotations

import os

import numpy as np


def read_corpus(path: str | os.PathLike[str]) -> list[str]:
    """One text per line (UTF-8); blank lines are skipped, surrounding whitespace stripped,
    duplicates kept once in first-seen order.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds no text, or is not UTF-8 (the message gives the line).
    """
    texts: dict[str, None] = {}
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}:{number} is not UTF-8 ({exc.reason})") from None
            if line:
                texts.setdefault(line, None)
    if not texts:
        raise ValueError(f"{path} holds no text (every line is blank); give one text per line")
    return list(texts)


def split_corpus(texts: list[str], test_size: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(train, test)``: a seeded shuffle, the last ``test_size`` texts held out."""
    if not 3 <= test_size < len(texts):
        raise ValueError(
            f"test_size={test_size} must be at least 3 and below the corpus size {len(texts)}"
        )
    order = np.random.default_rng(seed).permutation(len(texts))
    train = [texts[i] for i in order[:-test_size]]
    test = [texts[i] for i in order[-test_size:]]
    return train, test
