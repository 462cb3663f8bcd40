"""Real English text from WordNet 3.0 (Debian's `wordnet-base`, `apt-get install wordnet-base`).

WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. THIS SOFTWARE AND
DATABASE IS PROVIDED "AS IS" AND PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES,
EXPRESS OR IMPLIED. The full license is in /usr/share/doc/wordnet-base/copyright and in
bench/WORDNET_LICENSE.

Each synset line of ``data.{noun,verb,adj,adv}`` ends in a gloss: a definition followed by quoted
example sentences, separated by ``;``.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

WORDNET_DIR = Path("/usr/share/wordnet")
_QUOTED = re.compile(r'"([^"]+)"')


def _glosses(wordnet_dir: Path = WORDNET_DIR):
    files = [wordnet_dir / f"data.{pos}" for pos in ("noun", "verb", "adj", "adv")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"WordNet data not found ({', '.join(missing)}); install it with "
            "`apt-get install wordnet-base`"
        )
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:
                    continue  # the license header
                yield line.split("|", 1)[1].strip()


def examples(limit: int | None = None, wordnet_dir: Path = WORDNET_DIR) -> list[str]:
    """WordNet's example sentences (about 10 tokens each), in file order, deduplicated."""
    seen: dict[str, None] = {}
    for gloss in _glosses(wordnet_dir):
        for sentence in _QUOTED.findall(gloss):
            sentence = sentence.strip()
            if len(sentence.split()) >= 3:
                seen.setdefault(sentence[0].upper() + sentence[1:], None)
        if limit is not None and len(seen) >= limit:
            break
    return list(seen)[:limit]


def definitions(limit: int | None = None, wordnet_dir: Path = WORDNET_DIR) -> list[str]:
    """WordNet's definitions (the gloss without its examples)."""
    out: list[str] = []
    for gloss in _glosses(wordnet_dir):
        definition = gloss.split(";")[0].strip()
        if definition and not definition.startswith('"'):
            out.append(definition)
        if limit is not None and len(out) >= limit:
            break
    return out


def passages(count: int, words: int = 140, seed: int = 0,
             wordnet_dir: Path = WORDNET_DIR) -> list[str]:
    """``count`` passages of about ``words`` words, each joined from random definitions."""
    rng = random.Random(seed)
    pool = definitions(wordnet_dir=wordnet_dir)
    out = []
    for _ in range(count):
        parts: list[str] = []
        n = 0
        while n < words:
            d = rng.choice(pool)
            parts.append(d[0].upper() + d[1:] + ".")
            n += len(d.split())
        out.append(" ".join(parts))
    return out


def sample_sentences(count: int, seed: int = 0, wordnet_dir: Path = WORDNET_DIR) -> list[str]:
    """``count`` example sentences drawn without replacement by a fixed seed."""
    pool = examples(wordnet_dir=wordnet_dir)
    return random.Random(seed).sample(pool, count)


def distillation_corpus(seed: int = 0, wordnet_dir: Path = WORDNET_DIR) -> list[str]:
    """Every example sentence and definition (about 159k texts), deduplicated and shuffled by
    ``seed``: the corpus of bench/distill.py."""
    texts = examples(wordnet_dir=wordnet_dir)
    texts += [d[0].upper() + d[1:] for d in definitions(wordnet_dir=wordnet_dir)]
    texts = list(dict.fromkeys(texts))
    random.Random(seed).shuffle(texts)
    return texts


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python bench/corpus.py OUT.txt   (writes the distillation corpus, "
                 "one text per line)")
    corpus = distillation_corpus()
    Path(sys.argv[1]).write_text("\n".join(corpus) + "\n", encoding="utf-8")
    print(f"{len(corpus)} texts -> {sys.argv[1]}")
