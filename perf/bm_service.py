"""Service: an asyncio service answering 300 requests of ~5 ms of JSON work, 32 at a time.

Each request runs ``tasks.render`` (decode a ~200 KB JSON catalogue, pick and
sort, encode the answer: about 5 ms of CPU) away from the event loop; 32
worker coroutines pull the requests from a queue. Meanwhile a 1 ms ticker on
the loop records the largest gap between its ticks beyond the 1 ms it asked
for: how long the loop could not answer anyone else.

Ways, each in its own fresh process, alternating, over several rounds:
``subiso.run_async`` (a fresh isolate per request); ``Pool.run_async`` on a
``subiso.Pool(2)`` made and warmed before the timed part; and, as the
yardstick for ``run_async``'s throughput, the same requests as blocking
``subiso.run`` calls from 32 plain threads (no event loop: throughput and
latency only). Peers, same run, through ``loop.run_in_executor``:
ProcessPoolExecutor(2) (forkserver), ThreadPoolExecutor(2) and, on 3.14+,
the stdlib's InterpreterPoolExecutor(2) (see peers.py); and
``anyio.to_interpreter.run_sync`` (capacity limiter of 2, at most 2 calls
let in at once, as in bm_pool) where it works.

Per way and round: requests per second (all requests over the time from the
first taken to the last answered), latency p50 and p99 (from a worker
coroutine taking a request to its answer), the largest loop gap. Writes a
pyperf suite (one value per round; the table shows medians) with -o FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import pyperf

sys.path.insert(0, str(Path(__file__).parent))
import peers
import procs
import tasks

HERE = Path(__file__).parent

REQUESTS = 300
CONCURRENCY = 32
WORKERS = 2  # of every pool and executor
TICK = 0.001  # seconds the ticker sleeps between ticks
ROUNDS = 3
SETTLE = 0.3  # seconds after warming, before the timed part
WAY_TIMEOUT = 300  # seconds a way may take, its process's start included

RUN_ASYNC = "subiso.run_async"
POOL = f"subiso.Pool({WORKERS}).run_async"
THREADS = f"subiso.run from {CONCURRENCY} threads"
PROCESS_POOL = "ProcessPool (forkserver)"
THREAD_POOL = "ThreadPool"

# Ways that must work: a failure of one of them fails the benchmark. A peer
# that fails is left out of the results, with its error shown.
OURS = (RUN_ASYNC, POOL, THREADS)


def _check(answer: str, expected: int) -> None:
    if len(answer) != expected:
        raise RuntimeError(f"an answer of {len(answer)} characters, not {expected}")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Ticker:
    """Ticks every ``TICK`` seconds; keeps the largest lateness while on."""

    def __init__(self) -> None:
        self.largest_gap = 0.0
        self.measuring = False
        self._stop = False

    async def run(self) -> None:
        last = time.perf_counter()
        while not self._stop:
            await asyncio.sleep(TICK)
            now = time.perf_counter()
            if self.measuring:
                self.largest_gap = max(self.largest_gap, now - last - TICK)
            last = now

    def stop(self) -> None:
        self._stop = True


async def serve(call, text: str, expected: int, warm: int) -> dict:
    """Answer ``REQUESTS`` requests through ``call``, ``CONCURRENCY`` at a
    time, after ``warm`` untimed ones, with the ticker watching."""
    for _ in range(warm):
        _check(await call(text), expected)
    await asyncio.sleep(SETTLE)

    requests: asyncio.Queue[int] = asyncio.Queue()
    for i in range(REQUESTS):
        requests.put_nowait(i)
    latencies: list[float] = []

    async def worker() -> None:
        while True:
            try:
                requests.get_nowait()
            except asyncio.QueueEmpty:
                return
            began = time.perf_counter()
            answer = await call(text)
            latencies.append(time.perf_counter() - began)
            _check(answer, expected)

    ticker = Ticker()
    ticking = asyncio.create_task(ticker.run())
    await asyncio.sleep(10 * TICK)
    ticker.measuring = True
    start = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(CONCURRENCY):
            group.create_task(worker())
    elapsed = time.perf_counter() - start
    ticker.measuring = False
    ticker.stop()
    await ticking
    return {"elapsed": elapsed, "latencies": latencies, "gap": ticker.largest_gap}


def serve_threads(text: str, expected: int) -> dict:
    """The yardstick: the same requests as blocking ``subiso.run`` calls
    from ``CONCURRENCY`` plain threads, no event loop."""
    import subiso

    for _ in range(2):  # as run_async is warmed
        _check(subiso.run(tasks.render, text), expected)
    time.sleep(SETTLE)
    taken = itertools.count()  # next() on it is atomic: each request is taken once
    latencies: list[float] = []

    def worker() -> None:
        while next(taken) < REQUESTS:
            began = time.perf_counter()
            answer = subiso.run(tasks.render, text)
            latencies.append(time.perf_counter() - began)
            _check(answer, expected)

    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"elapsed": time.perf_counter() - start, "latencies": latencies, "gap": None}


async def _in_executor(make, text: str, expected: int) -> dict:
    loop = asyncio.get_running_loop()
    with make() as executor:

        def call(text: str):
            return loop.run_in_executor(executor, tasks.render, text)

        return await serve(call, text, expected, warm=2 * WORKERS)


async def _anyio(text: str, expected: int) -> dict:
    import anyio
    from anyio.to_interpreter import run_sync

    limiter = anyio.CapacityLimiter(WORKERS)
    # run_sync takes (or creates) a worker interpreter before it waits for
    # the limiter: let only as many calls in as there are workers.
    gate = asyncio.Semaphore(WORKERS)

    async def call(text: str) -> str:
        async with gate:
            return await run_sync(tasks.render, text, limiter=limiter)

    return await serve(call, text, expected, warm=2 * WORKERS)


def measure(way: str) -> dict:
    """Set up one way in this (fresh) process and serve the requests."""
    outcome = _measure(way)
    if "subiso" in sys.modules:
        outcome["subiso_path"] = str(Path(sys.modules["subiso"].__file__).parent)
    return outcome


def _measure(way: str) -> dict:
    text = tasks.document()
    expected = len(tasks.render(text))
    if way == THREADS:
        return serve_threads(text, expected)
    if way == RUN_ASYNC:
        import subiso

        async def fresh(text: str) -> str:
            return await subiso.run_async(tasks.render, text)

        return asyncio.run(serve(fresh, text, expected, warm=2))
    if way == POOL:
        import subiso

        async def pooled() -> dict:
            with subiso.Pool(WORKERS) as pool:

                async def call(text: str) -> str:
                    return await pool.run_async(tasks.render, text)

                return await serve(call, text, expected, warm=2 * WORKERS)

        return asyncio.run(pooled())
    if way == PROCESS_POOL:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("forkserver")
        return asyncio.run(
            _in_executor(lambda: ProcessPoolExecutor(WORKERS, mp_context=context), text, expected)
        )
    if way == THREAD_POOL:
        from concurrent.futures import ThreadPoolExecutor

        return asyncio.run(_in_executor(lambda: ThreadPoolExecutor(WORKERS), text, expected))
    if way == peers.INTERPRETER_POOL:
        return asyncio.run(_in_executor(lambda: peers.interpreter_pool(WORKERS), text, expected))
    if way == peers.ANYIO:
        return asyncio.run(_anyio(text, expected))
    raise ValueError(f"unknown way {way!r}")


def ways() -> tuple[list[str], dict[str, str]]:
    """The ways this Python has, and why the others are left out."""
    return peers.with_interpreter_peers([RUN_ASYNC, POOL, THREADS, PROCESS_POOL, THREAD_POOL])


def run_way(way: str) -> dict | None:
    """One way in a fresh process; None if it failed (its stderr shown)."""
    return procs.run_fresh(__file__, way, [], WAY_TIMEOUT)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:,.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="write a pyperf suite here")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--worker", metavar="WAY", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        Path(args.result).write_text(json.dumps(measure(args.worker)))
        return

    text = tasks.document()
    renders = []
    for _ in range(30):
        began = time.process_time()
        tasks.render(text)
        renders.append(time.process_time() - began)
    render_cpu = statistics.median(renders)
    print(f"  service: one render costs {render_cpu * 1e3:.2f} ms of CPU here", flush=True)

    chosen, skipped = ways()
    for way, why in skipped.items():
        print(f"  service: skipping {way}: {why}", file=sys.stderr, flush=True)
    metadata: dict[str, str | int | float] = {}
    results: dict[str, dict[str, list[float]]] = {way: {} for way in chosen}
    failed: dict[str, str] = {}
    for r in range(args.rounds):
        # Each round starts one way later, so no way always follows the same one.
        for way in chosen[r % len(chosen) :] + chosen[: r % len(chosen)]:
            if way in failed:
                continue
            print(f"  service round {r + 1}/{args.rounds}: {way}...", flush=True)
            outcome = run_way(way)
            if outcome is None:
                if way in OURS:
                    sys.exit(f"bm_service: {way} failed")
                failed[way] = "failed (its error is printed above)"
                continue
            if "subiso_path" in outcome and "subiso_path" not in metadata:
                metadata["subiso_path"] = outcome["subiso_path"]
                print(f"  service: subiso from {outcome['subiso_path']}", flush=True)
            figures = results[way]
            latencies = outcome["latencies"]
            figures.setdefault("requests/s", []).append(REQUESTS / outcome["elapsed"])
            figures.setdefault("latency p50", []).append(_percentile(latencies, 0.50))
            figures.setdefault("latency p99", []).append(_percentile(latencies, 0.99))
            if outcome["gap"] is not None:
                figures.setdefault("largest loop gap", []).append(outcome["gap"])
    for way in failed:
        del results[way]
    skipped.update(failed)

    metadata |= {
        "description": __doc__.splitlines()[0],
        "requests": REQUESTS,
        "concurrency": CONCURRENCY,
        "workers": WORKERS,
        "tick_s": TICK,
        "document_items": tasks.DOCUMENT_ITEMS,
        "document_bytes": len(text),
        "render_cpu_s": render_cpu,
        "rounds": args.rounds,
        "interpreter_peers": peers.SOURCE,
        "python_version": platform.python_version(),
        "ways": ", ".join(results),
    }
    if skipped:
        metadata["skipped"] = "; ".join(f"{way}: {why}" for way, why in skipped.items())
    if args.output:
        benchmarks = []
        for way, figures in results.items():
            for figure, values in figures.items():
                unit = "integer" if figure == "requests/s" else "second"
                meta = dict(metadata, name=f"service {way}: {figure}", unit=unit)
                values = [max(value, 1e-9) for value in values]
                run = pyperf.Run(values, metadata=meta, collect_metadata=False)
                benchmarks.append(pyperf.Benchmark([run]))
        pyperf.BenchmarkSuite(benchmarks).dump(args.output, replace=True)

    print(
        f"\nasyncio service: {REQUESTS} requests of {render_cpu * 1e3:.1f} ms JSON work "
        f"({len(text) / 1000:,.0f} KB), {CONCURRENCY} at a time; "
        f"median of {args.rounds} rounds [every round]"
    )
    header = ("way", "requests/s", "latency p50", "latency p99", "largest loop gap")
    rows = [header]
    for way, figures in results.items():
        gaps = figures.get("largest loop gap")
        rows.append(
            (
                way,
                f"{statistics.median(figures['requests/s']):,.0f}",
                _ms(statistics.median(figures["latency p50"])),
                _ms(statistics.median(figures["latency p99"])),
                _ms(statistics.median(gaps) if gaps else None),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print()
    for way, figures in results.items():
        rates = ", ".join(f"{v:,.0f}" for v in figures["requests/s"])
        gaps = ", ".join(_ms(v) for v in figures.get("largest loop gap", []))
        print(f"{way}: requests/s [{rates}]" + (f"; largest gaps [{gaps}]" if gaps else ""))
    if RUN_ASYNC in results and THREADS in results:
        ratio = statistics.median(results[RUN_ASYNC]["requests/s"]) / statistics.median(
            results[THREADS]["requests/s"]
        )
        print(f"{RUN_ASYNC} throughput: {ratio:.2f}x the {THREADS} yardstick")


if __name__ == "__main__":
    main()
