"""Distillation quality and speed table: projection and static students of all-mpnet-base-v2.

For each (student, student_dim) this trains on up to --max-train WordNet texts (teacher embeddings
from the cache after the first run), evaluates on --test-size held-out texts, exports the student
as a model folder, and times ``sutra.Embedder(folder).encode`` against the teacher's
``Embedder("high-quality").encode`` on the same held-out texts in the same process.

    apt-get install wordnet-base
    python bench/distill.py --corpus-out /tmp/wordnet.txt      # writes the corpus file, then runs
    python bench/distill.py --corpus /tmp/wordnet.txt --output bench/results/distill.md

The first run computes teacher embeddings for every training text (about 30 min for 100k texts
on 2 cores); they are cached under ~/.cache/sutra/distill and reused by later runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sutra.hardware import cpu_model

sys.path.insert(0, str(Path(__file__).parent))


def write_corpus(path: Path) -> int:
    import corpus

    texts = corpus.distillation_corpus()
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return len(texts)


def rate(fn, texts: list[str], repeats: int = 2) -> float:
    """texts/s: best of ``repeats`` timed calls after a warm-up on a few texts."""
    fn(texts[:16])
    best = min(_timed(fn, texts) for _ in range(repeats))
    return len(texts) / best


def _timed(fn, texts) -> float:
    start = time.perf_counter()
    fn(texts)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, help="one text per line")
    parser.add_argument("--corpus-out", type=Path, help="write the WordNet corpus file here first")
    parser.add_argument("--output", type=Path, help="markdown file for the table")
    parser.add_argument("--students", default="projection,static")
    parser.add_argument("--dims", default="384,256,128")
    parser.add_argument("--max-train", type=int, default=100_000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--speed-texts", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=10000)
    args = parser.parse_args()

    import sutra
    from sutra.distill import DistillationConfig, DistillationTrainer, read_corpus, split_corpus

    if args.corpus_out:
        print(f"corpus: {write_corpus(args.corpus_out)} texts -> {args.corpus_out}")
        args.corpus = args.corpus or args.corpus_out
    if args.corpus is None:
        parser.error("give --corpus or --corpus-out")
    texts = read_corpus(args.corpus)
    train_texts, test_texts = split_corpus(texts, args.test_size, seed=0)
    train_texts = train_texts[: args.max_train]
    speed_texts = test_texts[: args.speed_texts]
    teacher = sutra.Embedder("high-quality")
    lines = []

    def emit(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    start = time.perf_counter()
    collect = DistillationTrainer(DistillationConfig(), progress=True)
    collect.collect_teacher_embeddings(train_texts, teacher)
    teacher_seconds = time.perf_counter() - start
    teacher_rate_before = rate(teacher.encode, speed_texts)

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="sutra-distill-bench-"))
    try:
        for student in args.students.split(","):
            for dim in (int(d) for d in args.dims.split(",")):
                config = DistillationConfig(student_dim=dim, student=student,
                                            num_iterations=args.iterations)
                trainer = DistillationTrainer(config, progress=False)
                trainer.collect_teacher_embeddings(train_texts, teacher)  # cached
                log = trainer.train()
                metrics = trainer.evaluate(test_texts, teacher, measure_speed=False)
                folder = trainer.export_model(tmp / f"{student}-{dim}")
                exported = sutra.Embedder(str(folder))
                got = exported.encode(test_texts[:256])
                agree = float(np.einsum("ij,ij->i", got,
                                        trainer.encode(test_texts[:256], teacher)).min())
                student_rate = rate(exported.encode, speed_texts)
                rows.append(dict(student=student, dim=dim, metrics=metrics, log=log,
                                 rate=student_rate, agree=agree, pca=trainer.pca_explained))
                print(f"{student} {dim}: spearman {metrics.spearman_fidelity:.4f} "
                      f"recall@10 {metrics.recall_at_10:.4f} train {log.seconds:.1f}s "
                      f"({log.stopped}, best step {log.best_step}) {student_rate:.0f} texts/s",
                      flush=True)
                del exported
                shutil.rmtree(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    teacher_rate_after = rate(teacher.encode, speed_texts)
    teacher_rate = (teacher_rate_before + teacher_rate_after) / 2

    load = os.getloadavg()
    emit("# Distillation of all-mpnet-base-v2 (768-d): fidelity, size and CPU speed")
    emit()
    emit(f"- Machine: {cpu_model()}, {os.cpu_count()} logical "
         f"cores, Python {platform.python_version()}, sutra {sutra.__version__}")
    emit(f"- Command: `python bench/distill.py --corpus CORPUS --max-train {args.max_train} "
         f"--test-size {args.test_size} --iterations {args.iterations}`")
    emit(f"- Corpus: {len(texts)} WordNet 3.0 example sentences and definitions (bench/corpus.py, "
         f"shuffled by seed 0); {len(train_texts)} training texts, {len(test_texts)} held out "
         "(seed 0). Fidelity is measured on the held-out texts only.")
    emit(f"- Teacher embeddings of the training texts: {teacher_seconds:.1f} s in this run "
         "(from the cache when the run is not the first).")
    emit(f"- Speed: `sutra.Embedder(exported folder).encode` vs `sutra.Embedder(\"high-quality\")"
         f".encode` on the same {len(speed_texts)} held-out texts, best of 2, tokenization "
         f"included; teacher {teacher_rate_before:.0f} texts/s before the students and "
         f"{teacher_rate_after:.0f} after (the ratio uses the mean).")
    emit(f"- Load average after the run: {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}")
    emit()
    emit("| student | dim | spearman fidelity | recall@10 | MSE (cosines) | row cosine | "
         "bytes / embedding | texts/s | vs teacher | training s | stopped | export agreement |")
    emit("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m, log = r["metrics"], r["log"]
        emit(f"| {r['student']} | {r['dim']} | {m.spearman_fidelity:.4f} | "
             f"{m.recall_at_10:.4f} | {m.mean_squared_error:.6f} | {m.cosine_similarity:.4f} | "
             f"{4 * r['dim']} | {r['rate']:,.0f} | {r['rate'] / teacher_rate:.2f}x | "
             f"{log.seconds:.1f} | {log.stopped} (best step {log.best_step}) | "
             f"{r['agree']:.6f} |")
    emit()
    emit("bytes / embedding: float32 (the teacher's is 3072). Training s: PCA plus optimizer "
         "steps with held-out evaluations (the teacher's passes are not included). Export "
         "agreement: least cosine between the exported folder's embeddings and the trainer's "
         "numpy path on 256 held-out texts.")
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
