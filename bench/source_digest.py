"""A digest of the sources a benchmark ran, to find the commit a result belongs to.

The device machine receives a copy of the working tree whose ``.git`` does not follow the
session's commits, so ``git rev-parse HEAD`` there names an older commit. The benchmarks record
this digest instead (sha256 over the path and bytes of every source file of the native core, the
kernels and the Python package, in path order); here it is computed for the working tree or for
any commit, so that a results page can name the commit whose sources match.

    python bench/source_digest.py                  # the working tree
    python bench/source_digest.py --commit 7997f51 # one commit
    python bench/source_digest.py --find 3fa2c1d0e9b8 --last 40   # which recent commit matches
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("cmake", "cpp", "cuda", "python")
TOP_FILES = ("CMakeLists.txt", "pyproject.toml")
SUFFIXES = (".py", ".pyi", ".h", ".cc", ".cu", ".cuh", ".inc", ".in", ".cmake", ".txt", ".typed")


def is_source(path: str) -> bool:
    """Whether `path` (relative, with '/') is one of the files the digest covers."""
    if path in TOP_FILES:
        return True
    return path.split("/", 1)[0] in FOLDERS and path.endswith(SUFFIXES) \
        and "__pycache__" not in path and ".egg-info/" not in path


def digest(paths: Iterable[str], read: Callable[[str], bytes]) -> str:
    """The first 12 hex digits of sha256 over each path and its bytes, in path order."""
    h = hashlib.sha256()
    for path in sorted(p for p in paths if is_source(p)):
        h.update(path.encode() + b"\0")
        data = read(path)
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:12]


def working_tree_digest(root: Path = ROOT) -> str:
    """The digest of the files under `root` as they are now (tracked or not)."""
    paths = [p.relative_to(root).as_posix()
             for p in [*(root / f for f in TOP_FILES if (root / f).is_file()),
                       *(q for folder in FOLDERS if (root / folder).is_dir()
                         for q in (root / folder).rglob("*") if q.is_file())]]
    return digest(paths, lambda p: (root / p).read_bytes())


def _git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True,
                          capture_output=True).stdout


def commit_digest(commit: str) -> str:
    """The digest of the files of `commit`."""
    paths = _git("ls-tree", "-r", "--name-only", commit, "--", *FOLDERS, *TOP_FILES)
    return digest(paths.decode().split(), lambda p: _git("show", f"{commit}:{p}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit", help="digest of this commit instead of the working tree")
    parser.add_argument("--find", metavar="DIGEST", help="print the commits whose digest matches")
    parser.add_argument("--last", type=int, default=30, help="commits --find looks through")
    args = parser.parse_args()
    if args.find:
        commits = _git("rev-list", f"--max-count={args.last}", "HEAD").decode().split()
        matches = [c[:10] for c in commits if commit_digest(c) == args.find]
        print("\n".join(matches) if matches else f"no commit of the last {args.last} matches")
    else:
        print(commit_digest(args.commit) if args.commit else working_tree_digest())


if __name__ == "__main__":
    main()
