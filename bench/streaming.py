"""Streaming / serving benchmark: `sutra serve` under load vs direct batched `encode()`.

Measures, with all-MiniLM-L6-v2 on this machine, in one run:

1. direct ``Embedder.encode()`` throughput (batch size 32, WordNet example sentences), the
   baseline;
2. single-request latency of the idle server (one request at a time, one text each);
3. the server's saturation throughput (closed loop: 64 connections sending back to back);
4. open-loop load with Poisson arrivals at increasing rates: p50/p99 latency vs offered load
   (latency counted from each request's scheduled arrival, so a stalled server cannot hide
   queueing: no coordinated omission);
5. the maximum sustainable rate (highest offered rate that is served in full, without 503s and
   with p99 under 1 s) as a ratio of (1), and p99 at 80% of it.

Every request is ``POST /v1/embeddings`` with one sentence and ``encoding_format: base64`` (what
the official openai client sends). The load generator is a minimal asyncio HTTP/1.1 client with
keep-alive connections, run in this process: on a small machine it shares the cores with the
server, and that cost is part of what is measured.

    python bench/streaming.py --output bench/results/streaming_cpu.md

Needs WordNet (``apt-get install wordnet-base``, see bench/corpus.py) and the default model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import corpus  # noqa: E402

BATCH = 32
LOAD_FRACTIONS = (0.1, 0.25, 0.5, 0.7, 0.8, 0.9, 1.0, 1.15)


# -- a minimal HTTP/1.1 client -------------------------------------------------------------------


class Connection:
    """One keep-alive connection that POSTs JSON and reads a Content-Length response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, host)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        response_head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(response_head[9:12])
        length = 0
        for line in response_head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


class Pool:
    """Idle connections reused; a new one is opened whenever every connection is busy."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[Connection] = []

    async def post(self, body: bytes) -> tuple[int, bytes]:
        while self.idle:
            connection = self.idle.pop()
            try:
                status, data = await connection.post("/v1/embeddings", body)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                # The server closed this keep-alive connection while it sat idle (uvicorn's
                # keep-alive timeout) before reading the request: safe to send it again.
                if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                    raise
                connection.close()
                continue
            self.idle.append(connection)
            return status, data
        connection = await Connection.open(self.host, self.port)
        status, data = await connection.post("/v1/embeddings", body)
        self.idle.append(connection)
        return status, data

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()


def _body(text: str) -> bytes:
    return json.dumps({"model": "all-MiniLM-L6-v2", "input": text,
                       "encoding_format": "base64"}).encode()


# -- measurements --------------------------------------------------------------------------------


def direct_encode_throughput(model: str, texts: list[str], rounds: int = 3) -> float:
    import sutra

    embedder = sutra.Embedder(model, batch_size=BATCH)
    embedder.encode(texts[:BATCH * 2], show_progress_bar=False)  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        embedder.encode(texts, batch_size=BATCH, show_progress_bar=False)
        times.append(time.perf_counter() - start)
    del embedder
    return len(texts) / float(np.median(times))


async def idle_latency(pool: Pool, texts: list[str]) -> np.ndarray:
    latencies = []
    for text in texts:
        start = time.perf_counter()
        status, _ = await pool.post(_body(text))
        latencies.append(time.perf_counter() - start)
        assert status == 200, status
    return np.asarray(latencies)


async def closed_loop(host: str, port: int, texts: list[str], connections: int,
                      duration: float) -> float:
    """Requests per second with ``connections`` clients sending back to back."""
    done = 0
    stop = time.perf_counter() + duration

    async def client(offset: int) -> None:
        nonlocal done
        connection = await Connection.open(host, port)
        index = offset
        while time.perf_counter() < stop:
            status, _ = await connection.post("/v1/embeddings",
                                              _body(texts[index % len(texts)]))
            assert status == 200, status
            done += 1
            index += connections
        connection.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(connections)))
    return done / (time.perf_counter() - start)


async def open_loop(pool: Pool, texts: list[str], rate: float, duration: float,
                    seed: int) -> dict[str, float]:
    """Poisson arrivals at ``rate`` per second for ``duration`` seconds."""
    rng = random.Random(seed)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    tasks = []

    async def one(scheduled: float, text: str) -> None:
        status, _ = await pool.post(_body(text))
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            latencies.append(time.perf_counter() - scheduled)

    start = time.perf_counter()
    at = start
    index = 0
    while True:
        at += rng.expovariate(rate)
        if at - start > duration:
            break
        delay = at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(at, texts[index % len(texts)])))
        index += 1
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    values = np.asarray(latencies) * 1e3
    return {
        "offered": index / duration,
        "achieved": len(latencies) / elapsed,
        "p50": float(np.percentile(values, 50)) if len(values) else float("nan"),
        "p99": float(np.percentile(values, 99)) if len(values) else float("nan"),
        "ok": len(latencies),
        "sent": index,
        "rejected": statuses.get(503, 0),
        "errors": sum(n for s, n in statuses.items() if s not in (200, 503)),
    }


def sustained(row: dict[str, float]) -> bool:
    return (row["rejected"] == 0 and row["errors"] == 0 and row["p99"] < 1000
            and row["achieved"] >= 0.97 * row["offered"])


# -- the server ------------------------------------------------------------------------------------


def start_server(model: str, extra: list[str]) -> tuple[subprocess.Popen, str, int, Path]:
    log = Path(tempfile.mkstemp(prefix="sutra-bench-", suffix=".log")[1])
    command = [sys.executable, "-m", "sutra", "serve", "--model", model, "--port", "0",
               "--log-level", "warning", *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = log.read_text()
        if "listening on http://" in text:
            address = text.split("listening on http://", 1)[1].split()[0]
            host, port = address.rsplit(":", 1)
            break
        if process.poll() is not None:
            raise RuntimeError(text)
        time.sleep(0.05)
    else:
        raise TimeoutError(log.read_text())
    import urllib.request

    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/ready", timeout=5) as r:
                if r.status == 200:
                    return process, host, int(port), log
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(log.read_text())


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}"


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


async def run_server_benchmarks(host: str, port: int, texts: list[str], duration: float,
                                direct: float) -> dict:
    pool = Pool(host, port)
    await idle_latency(pool, texts[:50])  # warm the server and the connection
    idle = await idle_latency(pool, texts[:300]) * 1e3
    saturation = await closed_loop(host, port, texts, 64, duration)
    rows = []
    for i, fraction in enumerate(LOAD_FRACTIONS):
        pool.close()  # start every level with fresh connections
        row = await open_loop(pool, texts, fraction * saturation, duration, seed=i)
        row["fraction"] = fraction
        rows.append(row)
        print(f"  offered {row['offered']:8.1f}/s  achieved {row['achieved']:8.1f}/s  "
              f"p50 {row['p50']:8.1f} ms  p99 {row['p99']:8.1f} ms  503: {row['rejected']}",
              file=sys.stderr)
    good = [row for row in rows if sustained(row)]
    max_sustained = max((row["achieved"] for row in good), default=float("nan"))
    pool.close()
    at_80 = await open_loop(pool, texts, 0.8 * max_sustained, duration, seed=99)
    pool.close()
    return {"idle": idle, "saturation": saturation, "rows": rows,
            "max_sustained": max_sustained, "at_80": at_80, "direct": direct}


def render(results: dict, args: argparse.Namespace, command: str, load_before: str,
           load_after: str) -> str:
    idle = results["idle"]
    direct = results["direct"]
    at_80 = results["at_80"]
    ratio = results["max_sustained"] / direct
    lines = [
        "# Streaming server on CPU: `sutra serve` vs direct `encode()` (all-MiniLM-L6-v2)",
        "",
        f"- Machine: {machine()}",
        f"- Load average (1, 5, 15 min) before: {load_before}; after: {load_after}",
        f"- Command: `{command}`",
        f"- Server: `sutra serve` defaults (batch size {BATCH}, max latency 5 ms, buffer 1024, "
        "every core for compute); one sentence per request, `encoding_format: base64`; the load "
        "generator (asyncio, keep-alive HTTP/1.1) runs on the same machine.",
        f"- Texts: {len(args.texts_used)} WordNet example sentences (bench/corpus.py, seed 0); "
        f"{args.duration:g} s per load level; open-loop latency counted from the scheduled "
        "arrival.",
        "",
        "## Summary",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| direct `encode()` throughput (batch {BATCH}) | {direct:.0f} texts/s | |",
        f"| idle single-request latency p50 / p99 | {np.percentile(idle, 50):.1f} / "
        f"{np.percentile(idle, 99):.1f} ms | |",
        f"| server saturation throughput (64 closed-loop clients) | "
        f"{results['saturation']:.0f} req/s ({results['saturation'] / direct:.2f}x direct) | |",
        f"| maximum sustainable rate (open loop) | {results['max_sustained']:.0f} req/s "
        f"(**{ratio:.2f}x** direct) | >= 0.8x |",
        f"| p50 / p99 at 80% of it ({at_80['offered']:.0f} req/s offered) | {at_80['p50']:.1f} / "
        f"**{at_80['p99']:.1f}** ms | p99 < 100 ms |",
        "",
        "## Latency vs offered load (Poisson arrivals)",
        "",
        "| offered (req/s) | fraction of saturation | achieved (req/s) | p50 (ms) | p99 (ms) "
        "| 503 | sustained |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['offered']:.0f} | {row['fraction']:.2f} | {row['achieved']:.0f} | "
            f"{row['p50']:.1f} | {row['p99']:.1f} | {row['rejected']} | "
            f"{'yes' if sustained(row) else 'no'} |"
        )
    lines += [
        "",
        "Sustained: every request answered 200, none rejected, achieved >= 97% of offered, "
        "p99 < 1 s. The maximum sustainable rate is the highest achieved rate among sustained "
        "levels.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="efficient")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per load level")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--output", help="write the markdown report here")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra argument for sutra serve (repeatable)")
    args = parser.parse_args()
    command = "python bench/streaming.py " + " ".join(sys.argv[1:])
    texts = corpus.sample_sentences(args.texts, seed=0)
    args.texts_used = texts
    load_before = load_average()
    print(f"load average before: {load_before}", file=sys.stderr)
    direct = direct_encode_throughput(args.model, texts)
    print(f"direct encode(): {direct:.0f} texts/s", file=sys.stderr)
    process, host, port, log = start_server(args.model, args.server_arg)
    try:
        results = asyncio.run(run_server_benchmarks(host, port, texts, args.duration, direct))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        log.unlink(missing_ok=True)
    load_after = load_average()
    report = render(results, args, command, load_before, load_after)
    print(report)
    if args.output:
        Path(args.output).write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
