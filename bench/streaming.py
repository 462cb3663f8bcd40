"""Streaming / serving benchmark: `sutra serve` under load vs direct batched `encode()`.

Measures, with all-MiniLM-L6-v2 on this machine, in one run:

1. direct ``Embedder.encode()`` throughput (batch size 32, WordNet example sentences) in four
   layouts (ONNX Runtime threads over one batch; one single-threaded caller; one single-threaded
   caller per core, without and with the packed graph loaded), before and after the server runs;
   the baseline is the best layout's mean of the two;
2. single-request latency of the idle server (one request at a time);
3. the server's saturation throughput (closed loop: 64 connections sending back to back, 256
   on the GPU, fewer where their requests would fill more than 3/4 of the server's buffer of
   1024 inputs), and where its CPU time goes: the event loop's thread vs the compute threads,
   per request;
4. open-loop load with Poisson arrivals at increasing rates: p50/p99 latency vs offered load
   (latency counted from each request's scheduled arrival, so a stalled server cannot hide
   queueing: no coordinated omission);
5. the maximum sustainable rate (highest offered rate that is served in full, without 503s and
   with p99 under 1 s; the grid's last step refined by bisection) as a ratio of (1), and p99 at
   80% of it.

With ``--repeat N``, (2)-(5) run N times, each against a fresh server, with (1) measured before
the first and after every repetition; each repetition is compared with the direct measurements
next to it in time, and the targets are judged on the median repetition (every repetition's
figures are reported).

Every request is ``POST /v1/embeddings`` with ``--texts-per-request`` sentences (default one;
``input`` is a list when more) and ``encoding_format: base64`` (what the official openai client
sends); rates are reported in requests/s and texts/s (requests/s x texts per request), and
texts/s is what is compared with direct ``encode()``. The load generator is a minimal asyncio
HTTP/1.1 client with keep-alive connections, run in this process (``--client-procs K``: in K
processes, each with its own event loop and connections, sending 1/K of the Poisson arrivals or
of the closed-loop connections; latencies are pooled): on a small machine it shares the cores
with the server, and that cost is part of what is measured; the CPU time of both is reported per
load level, with which of them (the server's event-loop thread, the load generator) was
CPU-saturated.

    python bench/streaming.py --repeat 3 --output bench/results/streaming_cpu.md

Needs WordNet (``apt-get install wordnet-base``, see bench/corpus.py) and the default model; or,
with ``--corpus-dir DIR``, DIR/sentences.json (a JSON list of strings, written by
``python bench/gpu_e2e.py --dump-corpus bench/data/wordnet``) instead of WordNet.

GPU mode (``--backend cuda``): the server runs with ``--backend cuda`` (and ``--batch-size 256
--max-latency-ms 2`` unless ``--server-arg`` sets them); the baseline is the GPU engine's own
throughput, ``Embedder(model, backend="cuda").encode(texts)`` in one call over all the texts
(median of 5 after a warm-up), with ``encode()`` in calls of ``--texts-per-request`` texts from
one thread next to it; both are measured in a child process, so that the load generator holds
no CUDA context and the GPU is free while the server runs. The CPU layouts of (1) are skipped;
the open-loop grid has fewer levels (7 + 2 bisection steps + the 80% level; up to 3 more above
the grid while its top level is still sustained); the targets are p99 < 25 ms at 80% of the
maximum sustainable rate (the ratio to direct ``encode()`` is reported, without a target). Which
part was CPU-saturated at each level (the server's event-loop thread, its compute thread, the
load generator) is reported, to tell where the HTTP layer rather than the GPU sets the limit.
On an H200 machine (16 cores), for requests of 1 and of 32 texts
(about 1.5 to 2 minutes each with ``--duration 4``):

    python bench/streaming.py --backend cuda --model carry/minilm-fp16 \\
        --corpus-dir bench/data/wordnet --texts-per-request 1 --client-procs 4 --duration 4 \\
        --output $OUT/streaming_gpu_1.md
    python bench/streaming.py --backend cuda --model carry/minilm-fp16 \\
        --corpus-dir bench/data/wordnet --texts-per-request 32 --client-procs 4 --duration 4 \\
        --output $OUT/streaming_gpu_32.md
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import corpus  # noqa: E402

BATCH = 32
LOAD_FRACTIONS = (0.1, 0.25, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.15)
# Fewer levels on the GPU (the run of both request sizes has to fit in a few minutes there).
CUDA_LOAD_FRACTIONS = (0.25, 0.5, 0.7, 0.8, 0.9, 1.0, 1.15)
# The targets: sustained rate as a ratio of direct encode(), p99 at 80% of that rate.
TARGET_RATIO = 0.8
TARGET_P99_MS = 100.0
# On the GPU: p99 at 80% of the maximum sustainable rate; the ratio is reported, no target.
CUDA_TARGET_P99_MS = 25.0
CUDA_SERVER_DEFAULTS = {"--batch-size": "256", "--max-latency-ms": "2"}
REFINE_STEPS = 2  # extra levels bisecting the step where the server stops keeping up
EXTEND_STEPS = 3  # on the GPU, levels above the grid while its top level is still sustained
CLOSED_LOOP_CONNECTIONS = 64
# On the GPU, enough requests in flight for the server's batches of 256 to fill.
CUDA_CLOSED_LOOP_CONNECTIONS = 256
SERVER_BUFFER_SIZE = 1024  # sutra serve's default --buffer-size (inputs queued or computing)
SATURATED = 0.9  # cores used by a single-threaded part from which it counts as CPU-saturated
CUDA_DIRECT_ROUNDS = 5


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
                connection.close()
                if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                    raise
                continue
            except BaseException:
                connection.close()
                raise
            self.idle.append(connection)
            return status, data
        connection = await Connection.open(self.host, self.port)
        try:
            status, data = await connection.post("/v1/embeddings", body)
        except BaseException:
            connection.close()
            raise
        self.idle.append(connection)
        return status, data

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()


def _body(texts: list[str], model: str) -> bytes:
    """One request: a string ``input`` for one text (as before), a list for several. ``model``
    is the name given to ``sutra serve --model``, which the server always accepts."""
    payload: str | list[str] = texts[0] if len(texts) == 1 else texts
    return json.dumps({"model": model, "input": payload, "encoding_format": "base64"}).encode()


def request_bodies(texts: list[str], per_request: int, model: str) -> list[bytes]:
    """The texts in consecutive groups of ``per_request`` (a short last group dropped), each
    group one request body: encoded once, as the generator shares the cores."""
    groups = [texts[i:i + per_request] for i in range(0, len(texts) - per_request + 1,
                                                       per_request)]
    return [_body(group, model) for group in groups]


# -- measurements --------------------------------------------------------------------------------


def direct_encode_throughput(model: str, texts: list[str], threads: int | None, callers: int,
                             packed: bool = False, rounds: int = 3) -> float:
    """Texts per second of ``Embedder.encode`` (batch 32) over all ``texts``: one embedder with
    ``threads`` ONNX Runtime threads (``None``: every core), called from ``callers`` threads at
    once, each on its share of the texts; with ``packed``, its packed graph is loaded, so
    ``encode()`` may pack a batch instead of padding it (as the server's embedder may). The
    median of ``rounds``."""
    from concurrent.futures import ThreadPoolExecutor

    import sutra

    embedder = sutra.Embedder(model, backend="cpu", batch_size=BATCH, num_threads=threads)
    if packed:
        embedder.backend.load_packed()
    shares = [texts[i::callers] for i in range(callers)]
    with ThreadPoolExecutor(callers) as pool:
        def run() -> None:
            list(pool.map(lambda share: embedder.encode(share, batch_size=BATCH,
                                                        show_progress_bar=False), shares))

        embedder.encode(texts[:BATCH * 2], show_progress_bar=False)  # warm-up
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    embedder = None  # freed before the next layout loads its own (a `del` here reads to pyflakes
    # as an undefined name in run()'s closure)
    return len(texts) / float(np.median(times))


# Direct encode() layouts; the best is the baseline. ONNX Runtime's own threads over one batch,
# and (the layout of `sutra serve`) single-threaded compute called from one thread per core.
DIRECT_LAYOUTS = (
    ("1 caller, ONNX Runtime on every core", None, 1, False),
    ("1 caller, 1 ONNX Runtime thread", 1, 1, False),
    ("1 caller per core, 1 ONNX Runtime thread each", 1, os.cpu_count() or 1, False),
    ("1 caller per core, 1 ONNX Runtime thread each, packed graph loaded", 1,
     os.cpu_count() or 1, True),
)


def cuda_layouts(per_request: int) -> tuple[str, str]:
    """The direct measurements on the GPU; the first is the baseline."""
    return ("the GPU engine, one `encode()` call over all the texts",
            f"the GPU engine, `encode()` calls of {per_request} text"
            f"{'s' if per_request > 1 else ''} from one thread")


def cuda_direct_throughput(model: str, texts: list[str], per_request: int,
                           rounds: int = CUDA_DIRECT_ROUNDS) -> list[float]:
    """Texts per second of ``Embedder(model, backend="cuda").encode``: in one call over all
    ``texts`` (the median of ``rounds`` after a warm-up call), and in calls of ``per_request``
    texts from one thread (the median of 3 rounds of at least a second each, after a warm-up).
    Run in a child process (see measure_direct)."""
    import sutra

    embedder = sutra.Embedder(model, backend="cuda")
    embedder.encode(texts, show_progress_bar=False)  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        embedder.encode(texts, show_progress_bar=False)
        times.append(time.perf_counter() - start)
    one_call = len(texts) / float(np.median(times))
    groups = [texts[i:i + per_request] for i in range(0, len(texts) - per_request + 1,
                                                       per_request)]
    for group in groups[:50]:  # warm-up
        embedder.encode(group, show_progress_bar=False)
    rates = []
    calls = 0
    for _ in range(3):
        done = 0
        start = time.perf_counter()
        while True:
            embedder.encode(groups[calls % len(groups)], show_progress_bar=False)
            calls += 1
            done += 1
            elapsed = time.perf_counter() - start
            if elapsed >= 1.0 and done >= 20:
                break
        rates.append(done * per_request / elapsed)
    return [one_call, float(np.median(rates))]


async def idle_latency(pool: Pool, bodies: list[bytes], count: int) -> np.ndarray:
    """``count`` requests one at a time, cycling through ``bodies``; seconds each."""
    latencies = []
    for index in range(count):
        start = time.perf_counter()
        status, _ = await pool.post(bodies[index % len(bodies)])
        latencies.append(time.perf_counter() - start)
        assert status == 200, status
    return np.asarray(latencies)


def _wall_offset() -> float:
    """time.time() - time.perf_counter(): converts this process's perf_counter readings to wall
    time, which the load-generator processes share."""
    return time.time() - time.perf_counter()


async def _sleep_until(wall: float | None) -> None:
    if wall is not None:
        delay = wall - time.time()
        if delay > 0:
            await asyncio.sleep(delay)


async def closed_loop_raw(host: str, port: int, bodies: list[bytes], connections: int,
                          duration: float, start_at: float | None = None) -> dict:
    """``connections`` clients sending back to back for ``duration`` seconds (from ``start_at``,
    wall time, when given): how many were answered 200 and 503, and when it started and ended
    (wall time). A 503 (the server's buffer is full) is counted, and its client waits 1 ms."""
    await _sleep_until(start_at)
    offset = _wall_offset()
    done = 0
    rejected = 0
    stop = time.perf_counter() + duration

    async def client(index: int) -> None:
        nonlocal done, rejected
        connection = await Connection.open(host, port)
        while time.perf_counter() < stop:
            status, _ = await connection.post("/v1/embeddings", bodies[index % len(bodies)])
            if status == 200:
                done += 1
            elif status == 503:
                rejected += 1
                await asyncio.sleep(0.001)
            else:
                raise AssertionError(f"status {status}")
            index += connections
        connection.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(connections)))
    end = time.perf_counter()
    return {"done": done, "rejected": rejected, "start": start + offset, "end": end + offset}


async def open_loop_raw(pool: Pool, bodies: list[bytes], rate: float, duration: float,
                        seed: int, start_at: float | None = None) -> dict:
    """Poisson arrivals at ``rate`` per second for ``duration`` seconds (from ``start_at``, wall
    time, when given): every latency (seconds, from the scheduled arrival), status counts, how
    late each request was sent, and when it started and ended (wall time)."""
    rng = random.Random(seed)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    failures: list[str] = []
    tasks = []

    async def one(scheduled: float, body: bytes) -> None:
        try:
            status, _ = await pool.post(body)
        except (OSError, EOFError) as exc:  # counted as an error (status -1), not fatal
            status = -1
            if not failures:
                failures.append(repr(exc))
        statuses[status] = statuses.get(status, 0) + 1
        if status == 200:
            latencies.append(time.perf_counter() - scheduled)

    lateness: list[float] = []  # how late the generator sent each request (its own stalls)
    # No garbage collection while the level runs: a full collection of this process would delay
    # the sends, and the delay would count as the server's latency.
    gc.collect()
    gc.disable()
    try:
        await _sleep_until(start_at)
        offset = _wall_offset()
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
            lateness.append(time.perf_counter() - at)
            tasks.append(asyncio.ensure_future(one(at, bodies[index % len(bodies)])))
            index += 1
        await asyncio.gather(*tasks)
        end = time.perf_counter()
    finally:
        gc.enable()
    return {"latencies": np.asarray(latencies), "lateness": np.asarray(lateness),
            "statuses": statuses, "sent": index, "start": start + offset, "end": end + offset,
            "failures": failures}


def summarize_open_loop(raws: list[dict], duration: float) -> dict[str, float]:
    """One load level's figures from every load generator's share of it."""
    values = np.concatenate([raw["latencies"] for raw in raws]) * 1e3
    late = np.concatenate([raw["lateness"] for raw in raws]) * 1e3
    statuses: dict[int, int] = {}
    for raw in raws:
        for status, count in raw["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    sent = sum(raw["sent"] for raw in raws)
    # From the start to the last answer, and at least the level's duration: where the last
    # arrival came early and was answered before the end, ok / elapsed would exceed the offered
    # rate (levels of a few requests).
    start = min(raw["start"] for raw in raws)
    elapsed = max(max(raw["end"] for raw in raws), start + duration) - start
    for raw in raws:
        for failure in raw.get("failures", ())[:1]:
            print(f"  a request failed: {failure}", file=sys.stderr)
    return {
        "offered": sent / duration,
        "achieved": len(values) / elapsed,
        "p50": float(np.percentile(values, 50)) if len(values) else float("nan"),
        "p99": float(np.percentile(values, 99)) if len(values) else float("nan"),
        "ok": len(values),
        "sent": sent,
        "rejected": statuses.get(503, 0),
        "errors": sum(n for s, n in statuses.items() if s not in (200, 503)),
        "late_p99": float(np.percentile(late, 99)) if len(late) else float("nan"),
        "late_max": float(late.max()) if len(late) else float("nan"),
    }


def _nan_row() -> dict[str, float]:
    nan = float("nan")
    return {"offered": nan, "achieved": nan, "p50": nan, "p99": nan, "ok": 0, "sent": 0,
            "rejected": 0, "errors": 0, "late_p99": nan, "late_max": nan, "client_cores": nan,
            "client_max_cores": nan, "server_cores": nan, "loop_cores": nan,
            "thread_max_cores": nan}


class CpuMeter:
    """CPU seconds used by the load generator (this process, and the ``client_pids`` processes
    where it runs in several) and by the server process (and its event-loop thread)."""

    def __init__(self, server_pid: int, client_pids: tuple[int, ...] = ()) -> None:
        self.server_pid = server_pid
        self.client_pids = client_pids
        self.tick = os.sysconf("SC_CLK_TCK")

    def _seconds(self, path: str) -> float:
        with open(path, encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick

    def server_seconds(self) -> float:
        return self._seconds(f"/proc/{self.server_pid}/stat")

    def event_loop_seconds(self) -> float:
        """CPU seconds of the server's main thread, which runs the event loop (uvicorn, the
        app, the batcher); every other thread of the server computes or waits for compute."""
        return self._seconds(f"/proc/{self.server_pid}/task/{self.server_pid}/stat")

    def other_threads_seconds(self) -> dict[int, float]:
        """CPU seconds of each of the server's threads but the main one."""
        seconds = {}
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{self.server_pid}/task")]
        except OSError:
            return seconds
        for tid in tids:
            if tid != self.server_pid:
                try:
                    seconds[tid] = self._seconds(f"/proc/{self.server_pid}/task/{tid}/stat")
                except OSError:  # the thread ended
                    pass
        return seconds

    def snapshot(self) -> dict:
        """``clients``: each load-generator process's CPU seconds (this one's alone when it is
        the only one); ``client``: every load-generator process and this one together."""
        own = time.process_time()
        clients = [self._seconds(f"/proc/{pid}/stat") for pid in self.client_pids] or [own]
        client = own + (sum(clients) if self.client_pids else 0.0)
        return {"wall": time.perf_counter(), "client": client, "clients": clients,
                "server": self.server_seconds(), "loop": self.event_loop_seconds(),
                "threads": self.other_threads_seconds()}

    @staticmethod
    def shares(before: dict, after: dict) -> dict[str, float]:
        """Cores used on average: ``client`` (the load generator, all its processes),
        ``client_max`` (its busiest process), ``server``, the server's event-loop thread and its
        busiest other thread (a compute thread)."""
        wall = after["wall"] - before["wall"]
        threads = [seconds - before["threads"].get(tid, 0.0)
                   for tid, seconds in after["threads"].items()]
        return {"client_cores": (after["client"] - before["client"]) / wall,
                "thread_max_cores": max(threads, default=0.0) / wall,
                "client_max_cores": max(a - b for a, b in zip(after["clients"],
                                                              before["clients"])) / wall,
                "server_cores": (after["server"] - before["server"]) / wall,
                "loop_cores": (after["loop"] - before["loop"]) / wall}


def sustained(row: dict[str, float]) -> bool:
    return (row["rejected"] == 0 and row["errors"] == 0 and row["p99"] < 1000
            and row["achieved"] >= 0.97 * row["offered"])


# -- load generators -----------------------------------------------------------------------------


class InProcessLoad:
    """The load generator in this process, on the event loop that runs the benchmark."""

    procs = 1
    pids: tuple[int, ...] = ()

    def __init__(self, host: str, port: int, bodies: list[bytes]) -> None:
        self.host, self.port, self.bodies = host, port, bodies
        self.pool = Pool(host, port)

    async def open_loop(self, rate: float, duration: float, seed: int,
                        meter: CpuMeter) -> dict[str, float]:
        self.pool.close()  # start every level with fresh connections
        before = meter.snapshot()
        raw = await open_loop_raw(self.pool, self.bodies, rate, duration, seed)
        row = summarize_open_loop([raw], duration)
        row.update(CpuMeter.shares(before, meter.snapshot()))
        return row

    async def closed_loop(self, connections: int, duration: float,
                          meter: CpuMeter) -> tuple[dict, dict, dict]:
        before = meter.snapshot()
        raw = await closed_loop_raw(self.host, self.port, self.bodies, connections, duration)
        return raw, before, meter.snapshot()

    def close(self) -> None:
        self.pool.close()


def _load_worker(pipe, host: str, port: int, bodies: list[bytes]) -> None:
    """A load-generator process: runs the jobs its parent sends, each on a fresh event loop,
    and sends back the raw results (or ``("error", traceback)``)."""
    pipe.send("ready")
    while True:
        job = pipe.recv()
        if job is None:
            return
        try:
            if job[0] == "open":
                _, rate, duration, seed, start_at = job

                async def run_open(rate=rate, duration=duration, seed=seed, start_at=start_at):
                    pool = Pool(host, port)
                    try:
                        return await open_loop_raw(pool, bodies, rate, duration, seed, start_at)
                    finally:
                        pool.close()

                result = _run_client(run_open())
            else:
                _, connections, duration, start_at = job
                result = _run_client(closed_loop_raw(host, port, bodies, connections, duration,
                                                     start_at))
        except BaseException:  # noqa: BLE001 - reported to the parent, which raises
            result = ("error", traceback.format_exc())
        pipe.send(result)


class ProcessLoad:
    """The load generator in ``procs`` processes (spawned: no threads or CUDA state of this one
    inherited), each with its own event loop and connections; this process coordinates. Each
    level starts in every process at the same wall time, a moment after the jobs are sent."""

    START_DELAY = 0.25  # seconds from sending the jobs to the common start

    def __init__(self, host: str, port: int, bodies: list[bytes], procs: int) -> None:
        self.host, self.port, self.procs = host, port, procs
        context = multiprocessing.get_context("spawn")
        self.pipes, self.processes = [], []
        try:
            for k in range(procs):
                parent, child = context.Pipe()
                # Each process starts at a different place in the bodies.
                shift = k * len(bodies) // procs
                process = context.Process(target=_load_worker, daemon=True,
                                          args=(child, host, port, bodies[shift:] + bodies[:shift]))
                process.start()
                child.close()
                self.pipes.append(parent)
                self.processes.append(process)
            for pipe in self.pipes:
                if pipe.recv() != "ready":
                    raise RuntimeError("a load-generator process did not start")
        except BaseException:
            self.close()
            raise
        self.pids = tuple(process.pid for process in self.processes)

    def _collect(self, pipes, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        results = []
        for pipe in pipes:
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"a load-generator process gave no result in {timeout:g} s")
            results.append(pipe.recv())
        for result in results:
            if isinstance(result, tuple) and result[0] == "error":
                raise RuntimeError(f"a load-generator process failed:\n{result[1]}")
        return results

    async def _run(self, jobs: list[tuple], duration: float,
                   meter: CpuMeter) -> tuple[list[dict], dict, dict]:
        """Send ``jobs`` (one per process, or fewer), wait for the common start, then for every
        result; CPU snapshots at the start and at the end."""
        start_at = time.time() + self.START_DELAY
        pipes = self.pipes[:len(jobs)]
        for pipe, job in zip(pipes, jobs):
            pipe.send((*job, start_at))
        await _sleep_until(start_at)
        before = meter.snapshot()
        # The server answers every request within its --timeout (30 s by default).
        results = await asyncio.to_thread(self._collect, pipes, duration + 120)
        return results, before, meter.snapshot()

    async def open_loop(self, rate: float, duration: float, seed: int,
                        meter: CpuMeter) -> dict[str, float]:
        # Independent Poisson processes at rate/K each add up to one at the full rate.
        jobs = [("open", rate / self.procs, duration, seed * 1000 + k) for k in range(self.procs)]
        raws, before, after = await self._run(jobs, duration, meter)
        row = summarize_open_loop(raws, duration)
        row.update(CpuMeter.shares(before, after))
        return row

    async def closed_loop(self, connections: int, duration: float,
                          meter: CpuMeter) -> tuple[dict, dict, dict]:
        split = [connections // self.procs + (k < connections % self.procs)
                 for k in range(self.procs)]
        jobs = [("closed", n, duration) for n in split if n > 0]
        raws, before, after = await self._run(jobs, duration, meter)
        raw = {"done": sum(r["done"] for r in raws), "rejected": sum(r["rejected"] for r in raws),
               "start": min(r["start"] for r in raws), "end": max(r["end"] for r in raws)}
        return raw, before, after

    def close(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(None)
            except OSError:
                pass
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
        for pipe in self.pipes:
            pipe.close()


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


def _has_option(arguments: list[str], name: str) -> bool:
    return any(a == name or a.startswith(name + "=") for a in arguments)


def server_arguments(args: argparse.Namespace) -> list[str]:
    """What this run adds to ``sutra serve --model M --port 0 --log-level warning``."""
    if args.backend != "cuda":
        return list(args.server_arg)
    extra = ["--backend", "cuda"]
    for name, value in CUDA_SERVER_DEFAULTS.items():
        if not _has_option(args.server_arg, name):
            extra += [name, value]
    return extra + list(args.server_arg)


def buffer_size(arguments: list[str]) -> int:
    """The server's --buffer-size among ``arguments`` (its default otherwise)."""
    for index, argument in enumerate(arguments):
        if argument.startswith("--buffer-size="):
            return int(argument.split("=", 1)[1])
        if argument == "--buffer-size" and index + 1 < len(arguments):
            return int(arguments[index + 1])
    return SERVER_BUFFER_SIZE


def _run_client(coroutine):
    """Run the load generator on uvloop where it is installed (sutra depends on it on Linux
    and macOS): the generator shares the cores with the server, so the less CPU it takes per
    request, the less it disturbs what is measured (its cores are reported per load level)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


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


def gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "? (nvidia-smi not available)"
    return "; ".join(line.strip() for line in out.splitlines()) or "?"


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


async def run_server_benchmarks(host: str, port: int, server_pid: int, bodies: list[bytes],
                                duration: float, load, connections: int,
                                fractions: tuple[float, ...], idle_count: int,
                                extend: bool = False) -> dict:
    """Idle latency, closed-loop saturation, the open-loop grid (``fractions`` of saturation;
    with ``extend``, up to EXTEND_STEPS more levels above it, each 1.3x the last, while the
    highest is still sustained), its bisection, and the level at 80% of the maximum
    sustainable rate."""
    pool = load.pool if isinstance(load, InProcessLoad) else Pool(host, port)
    meter = CpuMeter(server_pid, load.pids)
    await idle_latency(pool, bodies, 50)  # warm the server and the connection
    idle = await idle_latency(pool, bodies, idle_count) * 1e3
    raw, before, after = await load.closed_loop(connections, duration, meter)
    saturation = raw["done"] / (raw["end"] - raw["start"])
    saturation_cpu = CpuMeter.shares(before, after)
    served = max(raw["done"], 1)
    saturation_cpu["loop_ms"] = (after["loop"] - before["loop"]) / served * 1e3
    saturation_cpu["compute_ms"] = ((after["server"] - before["server"]) / served * 1e3
                                    - saturation_cpu["loop_ms"])
    saturation_cpu["rejected"] = raw["rejected"]
    print(f"  saturation {saturation:8.1f} req/s ({connections} connections, "
          f"{raw['rejected']} answered 503)  cores: client {saturation_cpu['client_cores']:.2f} "
          f"server {saturation_cpu['server_cores']:.2f} (event loop "
          f"{saturation_cpu['loop_cores']:.2f})", file=sys.stderr)

    async def level(rate: float, seed: int) -> dict[str, float]:
        if not rate > 0:  # nothing was sustained: no rate to take 80% of
            return _nan_row()
        row = await load.open_loop(rate, duration, seed, meter)
        print(f"  offered {row['offered']:8.1f}/s  achieved {row['achieved']:8.1f}/s  "
              f"p50 {row['p50']:8.1f} ms  p99 {row['p99']:8.1f} ms  503: {row['rejected']}  "
              f"cores: client {row['client_cores']:.2f} server {row['server_cores']:.2f} "
              f"(event loop {row['loop_cores']:.2f})  "
              f"sends late p99 {row['late_p99']:.1f} max {row['late_max']:.1f} ms",
              file=sys.stderr)
        return row

    rows = []
    for i, fraction in enumerate(fractions):
        row = await level(fraction * saturation, seed=i)
        row["fraction"] = fraction
        rows.append(row)
    # Where closed-loop saturation underestimates what the server sustains open loop (too few
    # connections to fill its batches), the grid's top level is still sustained: go higher.
    for i in range(EXTEND_STEPS if extend else 0):
        top = max(rows, key=lambda r: r["fraction"])
        if not sustained(top):
            break
        fraction = round(top["fraction"] * 1.3, 4)
        row = await level(fraction * saturation, seed=30 + i)
        row["fraction"] = fraction
        rows.append(row)
    # The grid's steps are 5% of saturation apart: bisect the step where sustained turns into
    # not sustained, twice, so the estimate is not up to a whole step low.
    for i in range(REFINE_STEPS):
        ordered = sorted(rows, key=lambda r: r["fraction"])
        best = max((r for r in ordered if sustained(r)), key=lambda r: r["fraction"],
                   default=None)
        above = [r for r in ordered if best is not None and r["fraction"] > best["fraction"]]
        if not above:
            break
        fraction = (best["fraction"] + above[0]["fraction"]) / 2
        row = await level(fraction * saturation, seed=50 + i)
        row["fraction"] = fraction
        rows.append(row)
    rows.sort(key=lambda r: r["fraction"])
    good = [row for row in rows if sustained(row)]
    max_sustained = max((row["achieved"] for row in good), default=float("nan"))
    best_row = max(good, key=lambda r: r["achieved"], default=None)
    at_80 = await level(0.8 * max_sustained, seed=99)
    pool.close()
    return {"idle": idle, "saturation": saturation, "saturation_cpu": saturation_cpu,
            "rows": rows, "max_sustained": max_sustained, "best_row": best_row, "at_80": at_80,
            "connections": connections}


# -- the report ----------------------------------------------------------------------------------


def _targets(args: argparse.Namespace) -> tuple[float | None, float, str]:
    """(ratio target or None, p99 target in ms, the name of the set)."""
    if args.backend == "cuda":
        return None, CUDA_TARGET_P99_MS, "GPU targets"
    return TARGET_RATIO, TARGET_P99_MS, "CPU targets"


def _saturated(shares: dict[str, float], backend: str) -> list[str]:
    """Which parts were CPU-saturated, from their cores used."""
    found = []
    if shares["loop_cores"] >= SATURATED:
        found.append("server event loop")
    if backend == "cuda" and shares["thread_max_cores"] >= SATURATED:
        found.append("server compute thread")
    if shares["client_max_cores"] >= SATURATED:
        found.append("load generator")
    if backend != "cuda" and (shares["server_cores"] + shares["client_cores"]
                              >= SATURATED * (os.cpu_count() or 1)):
        found.append("all cores")
    return found


def _limit_sentence(what: str, shares: dict[str, float], texts_per_s: float, direct: float,
                    backend: str) -> str:
    """Where the limit was at one load, in words: the server's CPU, the load generator's, or
    the engine (compared with direct ``encode()``), and by how much."""
    share = texts_per_s / direct
    if not share > 0:
        return f"{what}: nothing answered."
    engine = "the GPU engine" if backend == "cuda" else "direct `encode()`"
    cores = (f"server event-loop thread {shares['loop_cores']:.2f} cores, server's other "
             f"threads {shares['server_cores'] - shares['loop_cores']:.2f} (the busiest "
             f"{shares['thread_max_cores']:.2f}), load generator "
             f"{shares['client_cores']:.2f} (busiest process {shares['client_max_cores']:.2f})")
    found = _saturated(shares, backend)
    head = f"{what}: {texts_per_s:.0f} texts/s = {share:.0%} of {engine} ({direct:.0f} texts/s); " \
           f"{cores}."
    if "load generator" in found:
        return (f"{head} **The load generator was CPU-saturated**: the server may sustain more "
                "than this; run again with more `--client-procs`.")
    if share >= SATURATED:
        busy = f" (CPU-saturated as well: {', '.join(found)})" if found else ""
        return f"{head} **The engine's own rate (that of {engine}) sets the limit**{busy}."
    if "server event loop" in found:
        return (f"{head} **The server's event-loop thread (HTTP, JSON, batching: Python) was "
                f"CPU-saturated**: the HTTP layer, not {engine}, sets the limit, "
                f"{1 / share:.1f}x below {engine}'s direct rate.")
    if "server compute thread" in found:
        return (f"{head} **The server's compute thread was busy all the time** (it tokenizes, "
                "calls the engine one pass at a time and waits for the GPU, a wait CUDA may "
                "spin; its CPU time cannot tell Python from GPU time): the single engine caller, "
                f"not the HTTP layer, sets the limit, {1 / share:.1f}x below {engine}'s rate in "
                "one large call.")
    if "all cores" in found:
        return (f"{head} **All {os.cpu_count()} cores were busy** (server and load generator "
                "together): the machine's CPU sets the limit.")
    return (f"{head} Neither the server's event loop nor the load generator was CPU-saturated, "
            f"and the rate is {1 / share:.1f}x below {engine}'s: the limit is elsewhere "
            "(batch waits, too few requests in flight, or the engine at the server's batch "
            "sizes).")


def render(reps: list[dict], direct_runs: list[list[float]], best: int,
           args: argparse.Namespace, command: str, load_before: str, load_after: str) -> str:
    cuda = args.backend == "cuda"
    per_request = args.texts_per_request
    model = "all-MiniLM-L6-v2" if args.model == "efficient" else args.model
    where = "GPU (`--backend cuda`)" if cuda else "CPU"
    texts_word = "one sentence" if per_request == 1 else f"{per_request} sentences"
    if cuda:
        extra = " ".join(server_arguments(args))
        server = (f"- Server: `sutra serve` with `{extra}` (this script adds `--batch-size 256 "
                  "--max-latency-ms 2` unless `--server-arg` sets them); "
                  f"{texts_word} per request, `encoding_format: base64`.")
    else:
        extra = " ".join(args.server_arg) or "none"
        server = (f"- Server: `sutra serve` defaults (extra arguments: {extra}); {texts_word} "
                  "per request, `encoding_format: base64`.")
    k = args.client_procs
    generator = ("this script" if k == 1 else
                 f"this script in {k} processes, each with its own event loop and connections, "
                 f"sending 1/{k} of the arrivals and of the closed-loop connections; latencies "
                 "pooled")
    server += (f" The load generator ({generator}: asyncio on uvloop, raw keep-alive HTTP/1.1) "
               "runs on the same machine and shares its cores; its CPU use is reported.")
    if args.corpus_dir:
        source = (f"sentences sampled (seed 0) from {args.corpus_dir}/sentences.json "
                  f"({args.corpus_size} WordNet example sentences)")
    else:
        source = "WordNet example sentences (bench/corpus.py, seed 0)"
    lines = [
        f"# Streaming server on {where}: `sutra serve` vs direct `encode()` ({model})",
        "",
        f"- Machine: {machine()}",
    ]
    if cuda:
        lines.append(f"- GPU: {args.gpu}")
    lines += [
        f"- Load average (1, 5, 15 min) before: {load_before}; after: {load_after}",
        f"- Command: `{command}`",
        server,
        f"- Texts: {len(args.texts_used)} {source}, {len(args.bodies)} distinct requests of "
        f"{per_request}; {args.duration:g} s per load level; open-loop latency counted from the "
        "scheduled arrival. Rates in requests/s; texts/s = requests/s x "
        f"{per_request}, which is what is compared with direct `encode()`.",
    ]
    if cuda:
        lines.append(
            "- Baseline: the GPU engine's own throughput on the same texts, "
            "`sutra.Embedder(model, backend=\"cuda\").encode(texts)` in one call over all of "
            f"them (median of {CUDA_DIRECT_ROUNDS} after a warm-up), in a child process (the GPU "
            "is free while the server runs); next to it, `encode()` in calls of "
            f"{per_request} text{'s' if per_request > 1 else ''} from one thread. Measured "
            "before the first repetition and after each one; a repetition's baseline is the "
            "mean of the measurements just before and just after it. The CPU layouts "
            "(ONNX Runtime threads, packed graph, one caller per core) do not apply on the GPU "
            f"and are skipped; the open-loop grid has {len(CUDA_LOAD_FRACTIONS)} levels "
            f"(fractions {', '.join(f'{f:g}' for f in CUDA_LOAD_FRACTIONS)} of saturation) "
            f"instead of {len(LOAD_FRACTIONS)}, plus up to {EXTEND_STEPS} levels above them "
            "(each 1.3x the last) while the top one is still sustained, the bisection steps and "
            "the 80% level.")
    else:
        lines.append(
            f"- Baseline: the best direct `encode()` layout (batch {BATCH}, all texts, "
            "length-sorted by `encode()`; best by its mean over every direct measurement "
            "below). Direct `encode()` is measured before the first repetition and after each "
            "one; a repetition's baseline is the mean of the measurements just before and just "
            "after it (this machine's speed drifts by several percent within minutes).")
    lines += [f"- {note}" for note in args.note]
    lines += _render_verdict(reps, args)
    names = cuda_layouts(per_request) if cuda else [layout[0] for layout in DIRECT_LAYOUTS]
    lines += [
        "",
        "## Direct `encode()` layouts (texts/s)",
        "",
        "| layout | " + " | ".join(_direct_label(i, len(reps)) for i in range(len(direct_runs)))
        + " |",
        "|---|" + "---|" * len(direct_runs),
    ]
    for index, name in enumerate(names):
        marker = " (baseline)" if index == best else ""
        lines.append(f"| {name}{marker} | "
                     + " | ".join(f"{run[index]:.0f}" for run in direct_runs) + " |")
    for number, results in enumerate(reps, 1):
        title = f"Repetition {number}" if len(reps) > 1 else "Details"
        lines += ["", f"## {title}", ""] + _render_repetition(results, args, len(reps))
    lines += [
        "",
        "Sustained: every request answered 200, none rejected, achieved >= 97% of offered, "
        "p99 < 1 s. "
        + (f"On the GPU, while the grid's top level is still sustained, up to {EXTEND_STEPS} "
           "levels above it follow, each 1.3x the last. " if cuda else "")
        + "After the grid, two more levels bisect the step between the highest "
        "sustained level and the next one. The maximum sustainable rate is the highest achieved "
        "rate among sustained levels. Cores: CPU seconds per second of wall time (this machine "
        f"has {os.cpu_count()}); the server's event loop (uvicorn, the app, the batcher) runs on "
        "its main thread, so it is CPU-saturated near 1.0 core. CPU-saturated (per level): "
        f"the server's event-loop thread at >= {SATURATED:g} cores; the load generator when its "
        f"busiest process used >= {SATURATED:g} cores (each runs one event loop)"
        + ("; the server's compute thread (the one engine caller: its busiest thread but the "
           f"main one) at >= {SATURATED:g} cores, which includes its waits on the GPU where CUDA "
           "spins"
           if cuda else f"; all cores when server and load generator together used >= "
           f"{SATURATED:g} of the {os.cpu_count()}")
        + ". Sends late: how long after its scheduled arrival the load generator sent each "
        "request (it shares the cores with the server; a stall there is counted as latency, "
        "never hidden).",
        "",
    ]
    return "\n".join(lines)


def _direct_label(index: int, repetitions: int) -> str:
    if repetitions == 1:
        return "before the server" if index == 0 else "after the server"
    return "before repetition 1" if index == 0 else f"after repetition {index}"


def _ratio(results: dict, per_request: int) -> float:
    """The maximum sustainable rate in texts/s as a ratio of the direct baseline."""
    return results["max_sustained"] * per_request / results["direct"]


def _render_verdict(reps: list[dict], args: argparse.Namespace) -> list[str]:
    """The targets, judged on the median repetition; every repetition's figures shown."""
    n = args.texts_per_request
    target_ratio, target_p99, target_set = _targets(args)
    ratios = [_ratio(r, n) for r in reps]
    p99s = [r["at_80"]["p99"] for r in reps]
    lines = ["", "## Summary", ""]
    if len(reps) > 1:
        lines += [
            "| repetition | baseline (texts/s) | saturation (req/s) | maximum sustainable (req/s "
            "/ texts/s) | ratio | p50 / p99 at 80% of it (ms) |",
            "|---|---|---|---|---|---|",
        ]
        for number, r in enumerate(reps, 1):
            lines.append(f"| {number} | {r['direct']:.0f} | {r['saturation']:.0f} | "
                         f"{r['max_sustained']:.0f} / {r['max_sustained'] * n:.0f} | "
                         f"{_ratio(r, n):.2f}x | "
                         f"{r['at_80']['p50']:.1f} / {r['at_80']['p99']:.1f} |")
        lines.append("")
    ratio, p99 = float(np.median(ratios)), float(np.median(p99s))
    met_p99 = sum(x < target_p99 for x in p99s)
    what = "median of the repetitions" if len(reps) > 1 else "this run"
    median = reps[int(np.argsort(ratios)[len(ratios) // 2])]
    lines += [
        f"Targets: the {target_set}"
        + (f" (p99 < {target_p99:g} ms at 80% of the maximum sustainable rate; the ratio to "
           "direct `encode()` is reported, without a target)." if target_ratio is None else
           f" (maximum sustainable rate >= {target_ratio:g}x direct `encode()`, p99 < "
           f"{target_p99:g} ms at 80% of it)."),
        "",
        f"| target ({target_set}) | {what} | met in |",
        "|---|---|---|",
    ]
    if target_ratio is None:
        lines.append(f"| maximum sustainable rate vs the GPU engine's direct `encode()` (no "
                     f"target) | **{ratio:.2f}x** ({median['max_sustained']:.0f} req/s = "
                     f"{median['max_sustained'] * n:.0f} texts/s) | - |")
    else:
        met_ratio = sum(x >= target_ratio for x in ratios)
        lines.append(f"| maximum sustainable rate >= {target_ratio:g}x direct `encode()` | "
                     f"**{ratio:.2f}x** | {met_ratio} of {len(reps)} |")
    lines.append(f"| p99 < {target_p99:g} ms at 80% of the maximum sustainable rate | "
                 f"**{p99:.1f} ms** | {met_p99} of {len(reps)} |")
    lines += ["", "Where the limit is" + (" (the median repetition):" if len(reps) > 1 else ":"),
              ""]
    lines += _render_limits(median, args)
    return lines


def _render_limits(results: dict, args: argparse.Namespace) -> list[str]:
    n = args.texts_per_request
    sat = results["saturation_cpu"]
    lines = ["- " + _limit_sentence(f"At saturation (closed loop, {results['connections']} "
                                    f"connections: {results['saturation']:.0f} req/s)", sat,
                                    results["saturation"] * n, results["direct"], args.backend)]
    best = results["best_row"]
    if best is not None:
        lines.append("- " + _limit_sentence(
            f"At the maximum sustainable rate ({best['achieved']:.0f} req/s)", best,
            best["achieved"] * n, results["direct"], args.backend))
    else:
        lines.append("- No open-loop level was sustained.")
    if args.backend == "cuda":
        calls = results["direct_per_request"] / n
        lines.append(f"- Direct `encode()` in calls of {n} text{'s' if n > 1 else ''} from one "
                     f"thread: {results['direct_per_request']:.0f} texts/s = {calls:.0f} "
                     f"calls/s; the server's maximum sustainable rate is "
                     f"{results['max_sustained'] / calls:.2f}x that, its saturation rate "
                     f"{results['saturation'] / calls:.2f}x.")
    return lines


def _render_repetition(results: dict, args: argparse.Namespace,
                       repetitions: int) -> list[str]:
    cuda = args.backend == "cuda"
    n = args.texts_per_request
    target_ratio, target_p99, _ = _targets(args)
    idle = results["idle"]
    direct = results["direct"]
    at_80 = results["at_80"]
    sat_cpu = results["saturation_cpu"]
    if cuda:
        per_call = n / results["direct_per_request"] * 1e3
        compute_note = (f"(direct `encode()` of {n} text{'s' if n > 1 else ''} from one thread: "
                        f"{per_call:.2f} ms per call, wall time)")
    else:
        compute_note = (f"(direct `encode()`: {(os.cpu_count() or 1) / direct * 1e3:.2f} ms, its "
                        "cores / its throughput)")
    unit = "request" if n == 1 else f"request of {n}"
    lines = [
        "| measure | value | target |",
        "|---|---|---|",
        f"| direct `encode()` throughput (baseline{'' if cuda else ' layout'}; mean of the "
        f"measurements before and after) | {direct:.0f} texts/s | |",
        f"| idle single-request latency p50 / p99 ({len(idle)} requests of {n}) | "
        f"{np.percentile(idle, 50):.1f} / {np.percentile(idle, 99):.1f} ms | |",
        f"| server saturation throughput ({results['connections']} closed-loop clients) | "
        f"{results['saturation']:.0f} req/s = {results['saturation'] * n:.0f} texts/s "
        f"({results['saturation'] * n / direct:.2f}x direct; cores used: server "
        f"{sat_cpu['server_cores']:.2f} (event loop {sat_cpu['loop_cores']:.2f}), load "
        f"generator {sat_cpu['client_cores']:.2f}; {sat_cpu['rejected']} answered 503) | |",
        f"| server CPU per {unit} at saturation | event loop thread {sat_cpu['loop_ms']:.2f} ms, "
        f"compute threads {sat_cpu['compute_ms']:.2f} ms {compute_note} | |",
        f"| maximum sustainable rate (open loop) | {results['max_sustained']:.0f} req/s = "
        f"{results['max_sustained'] * n:.0f} texts/s (**{_ratio(results, n):.2f}x** direct; "
        f"{results['max_sustained'] * n / results['direct_max']:.2f}x the fastest single direct "
        f"measurement around it, {results['direct_max']:.0f} texts/s) "
        f"| {'' if target_ratio is None else f'>= {target_ratio:g}x'} |",
        f"| p50 / p99 at 80% of it ({at_80['offered']:.0f} req/s offered) | {at_80['p50']:.1f} / "
        f"**{at_80['p99']:.1f}** ms | p99 < {target_p99:g} ms |",
    ]
    if repetitions > 1:
        lines += ["", "Where the limit is:", ""] + _render_limits(results, args)
    lines += [
        "",
        "Latency vs offered load (Poisson arrivals):",
        "",
        "| offered (req/s) | fraction of saturation | achieved (req/s) | achieved (texts/s) "
        "| x direct | p50 (ms) | p99 (ms) | 503 | sustained "
        "| server cores (event loop / busiest other thread) "
        "| load generator cores (busiest process) | CPU-saturated | sends late p99 / max (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    labelled = [(f"{row['fraction']:.4g}", row) for row in results["rows"]]
    for label, row in labelled + [("0.8 of max sustainable", at_80)]:
        saturated = ", ".join(_saturated(row, args.backend)) or "none"
        lines.append(
            f"| {row['offered']:.0f} | {label} | {row['achieved']:.0f} | "
            f"{row['achieved'] * n:.0f} | {row['achieved'] * n / direct:.2f} | "
            f"{row['p50']:.1f} | {row['p99']:.1f} | {row['rejected']} | "
            f"{'yes' if sustained(row) else 'no'} | {row['server_cores']:.2f} "
            f"({row['loop_cores']:.2f} / {row['thread_max_cores']:.2f}) | "
            f"{row['client_cores']:.2f} ({row['client_max_cores']:.2f}) | {saturated} | "
            f"{row['late_p99']:.1f} / {row['late_max']:.1f} |"
        )
    return lines


def measure_direct(model: str, texts: list[str], backend: str, per_request: int) -> list[float]:
    if backend == "cuda":
        # In a child process: this one (the load generator) holds no CUDA context, and the GPU's
        # memory is free again when the server starts.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rates = pool.submit(cuda_direct_throughput, model, texts, per_request).result()
        for name, rate in zip(cuda_layouts(per_request), rates):
            print(f"direct encode(), {name}: {rate:.0f} texts/s", file=sys.stderr)
        return rates
    rates = []
    for name, threads, callers, packed in DIRECT_LAYOUTS:
        rates.append(direct_encode_throughput(model, texts, threads, callers, packed))
        print(f"direct encode(), {name}: {rates[-1]:.0f} texts/s", file=sys.stderr)
    return rates


def load_texts(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """``--texts`` sentences drawn without replacement by seed 0: from WordNet
    (bench/corpus.py), or from ``--corpus-dir``'s sentences.json."""
    if not args.corpus_dir:
        args.corpus_size = None
        return corpus.sample_sentences(args.texts, seed=0)
    path = Path(args.corpus_dir) / "sentences.json"
    try:
        pool = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        parser.error(f"cannot read {path}: {exc}")
    if not isinstance(pool, list) or not all(isinstance(t, str) for t in pool):
        parser.error(f"{path} is not a JSON list of strings")
    if args.texts > len(pool):
        parser.error(f"--texts {args.texts} is more than the {len(pool)} sentences in {path}")
    args.corpus_size = len(pool)
    return random.Random(0).sample(pool, args.texts)


def raise_open_files_limit() -> None:
    """The soft limit on open files up to the hard one (inherited by the server and the load
    generator's processes): at an overloaded level the open loop opens a connection for every
    request in flight, which may be thousands on the GPU."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = 1 << 20 if hard == resource.RLIM_INFINITY else min(hard, 1 << 20)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="efficient",
                        help="registry name or model folder (default: %(default)s)")
    parser.add_argument("--backend", choices=("cpu", "cuda"), default="cpu",
                        help="cpu (default): the server on ONNX Runtime against the CPU layouts "
                             "of direct encode(); cuda: `sutra serve --backend cuda` against the "
                             "GPU engine's direct encode()")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per load level")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--texts-per-request", type=int, default=1, metavar="N",
                        help="texts in each POST /v1/embeddings (default 1)")
    parser.add_argument("--corpus-dir", metavar="DIR",
                        help="read the texts from DIR/sentences.json (a JSON list of strings, "
                             "from `python bench/gpu_e2e.py --dump-corpus DIR`) instead of "
                             "WordNet")
    parser.add_argument("--client-procs", type=int, default=1, metavar="K",
                        help="load-generator processes (default 1: in this process)")
    parser.add_argument("--connections", type=int, default=None,
                        help="closed-loop connections for the saturation measurement (default: "
                             f"{CLOSED_LOOP_CONNECTIONS}, {CUDA_CLOSED_LOOP_CONNECTIONS} with "
                             "--backend cuda; fewer where that many requests would hold more "
                             "than 3/4 of the server's --buffer-size inputs)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="server runs, each with its own baseline; the targets are judged on "
                             "the median (this machine's speed drifts between runs)")
    parser.add_argument("--output", help="write the markdown report here")
    parser.add_argument("--server-arg", action="append", default=[],
                        help="extra argument for sutra serve (repeatable; write "
                             "--server-arg=--batch-size=64)")
    parser.add_argument("--note", action="append", default=[],
                        help="a line for the report's header (repeatable)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    if args.texts_per_request < 1:
        parser.error(f"--texts-per-request must be at least 1, got {args.texts_per_request}")
    if args.client_procs < 1:
        parser.error(f"--client-procs must be at least 1, got {args.client_procs}")
    if args.texts < args.texts_per_request:
        parser.error("--texts must be at least --texts-per-request")
    raise_open_files_limit()
    command = "python bench/streaming.py " + " ".join(
        a for a in sys.argv[1:] if a not in args.note and a != "--note")
    texts = load_texts(args, parser)
    args.texts_used = texts
    per_request = args.texts_per_request
    bodies = request_bodies(texts, per_request, args.model)
    args.bodies = bodies
    extra = server_arguments(args)
    connections = args.connections
    if connections is None:
        most = CUDA_CLOSED_LOOP_CONNECTIONS if args.backend == "cuda" else CLOSED_LOOP_CONNECTIONS
        # No more inputs in flight than 3/4 of the server's buffer: beyond it, it answers 503.
        connections = min(most, max(1, buffer_size(extra) * 3 // 4 // per_request))
    fractions = CUDA_LOAD_FRACTIONS if args.backend == "cuda" else LOAD_FRACTIONS
    idle_count = 300 if per_request == 1 else 100
    args.gpu = gpu_name() if args.backend == "cuda" else None
    load_before = load_average()
    print(f"load average before: {load_before}; server: sutra serve {' '.join(extra)}",
          file=sys.stderr)
    # Direct encode() before the first repetition and after each one: every repetition has a
    # baseline measured next to it in time.
    direct_runs = [measure_direct(args.model, texts, args.backend, per_request)]
    reps = []
    for number in range(1, args.repeat + 1):
        if args.repeat > 1:
            print(f"repetition {number} of {args.repeat}", file=sys.stderr)
        process, host, port, log = start_server(args.model, extra)
        load = None
        try:
            if args.client_procs == 1:
                load = InProcessLoad(host, port, bodies)
            else:
                load = ProcessLoad(host, port, bodies, args.client_procs)
            reps.append(_run_client(run_server_benchmarks(
                host, port, process.pid, bodies, args.duration, load, connections, fractions,
                idle_count, extend=args.backend == "cuda")))
        finally:
            if load is not None:
                load.close()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
            log.unlink(missing_ok=True)
        direct_runs.append(measure_direct(args.model, texts, args.backend, per_request))
    load_after = load_average()
    # The baseline layout: on CPU the best by its mean over every measurement; on the GPU the
    # one call over all texts. A repetition's baseline is that layout's mean of the measurements
    # just before and just after it. The largest single measurement around it is also reported:
    # as the maximum of noisy samples it sits above every layout's typical speed.
    if args.backend == "cuda":
        best = 0
    else:
        best = max(range(len(DIRECT_LAYOUTS)),
                   key=lambda i: float(np.mean([run[i] for run in direct_runs])))
    for index, results in enumerate(reps):
        around = direct_runs[index:index + 2]
        results["direct"] = float(np.mean([run[best] for run in around]))
        results["direct_max"] = max(max(run) for run in around)
        if args.backend == "cuda":
            results["direct_per_request"] = float(np.mean([run[1] for run in around]))
    report = render(reps, direct_runs, best, args, command, load_before, load_after)
    print(report)
    if args.output:
        Path(args.output).write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
