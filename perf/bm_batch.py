"""Batch: 1,000 chunks of log text parsed, hashed and compressed by 2 workers.

Each of ``CHUNKS`` chunks is about ``CHUNK_CHARS`` characters of synthetic
log lines (``tasks.log_chunks``, deterministic); each task
(``tasks.analyse_log``) parses the chunk's lines with the stdlib's ``re``,
counts errors and sums latencies, takes its SHA-256 and compresses it with
zlib. The program makes the executor, warms it with one tiny task per
worker, then ``executor.map(analyse_log, chunks, chunksize=CHUNKSIZE)`` and
takes every result; then it shuts the executor down.

Ways, each in its own fresh process, alternating, over several rounds:
``subiso.Pool(2)``; peers ``ProcessPoolExecutor(2)`` (forkserver),
``ThreadPoolExecutor(2)`` (hashlib and zlib release the GIL, ``re`` does
not), on 3.14+ the stdlib's ``InterpreterPoolExecutor(2)`` (see peers.py;
its ``map`` ignores ``chunksize``, as a thread pool's does), and
``anyio.to_interpreter.run_sync`` where it works (batches of ``CHUNKSIZE``
chunks, at most 2 calls at once, as in bm_service).

Per way and round: the map's wall time (from the call to the last result)
and the peak proportional set size (PSS) of the whole process tree (the
program and every process it started: a forkserver and its workers),
sampled every ``SAMPLE_INTERVAL`` seconds from before the executor is made
until it is shut down; also the whole program's time (executor made, warmed,
mapped, shut down). The report gives min / median / max over the rounds.
Writes a pyperf suite (one value per round) with -o FILE.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import peers
import procs
import tasks

CHUNKS = 1_000
CHUNK_CHARS = 40_000
CHUNKSIZE = 8
WORKERS = 2
ROUNDS = 3
SEED = 1
SAMPLE_INTERVAL = 0.025  # seconds between PSS samples of the process tree
WAY_TIMEOUT = 300  # seconds a way's process may take, its start included

POOL = f"subiso.Pool({WORKERS})"
PROCESS_POOL = "ProcessPool (forkserver)"
THREAD_POOL = "ThreadPool"
OURS = (POOL,)


def _anyio_map(chunks: list[str]) -> tuple[list, float]:
    """(the results, the map's seconds): warmed with one tiny call per
    worker, then batches of ``CHUNKSIZE`` chunks."""
    import asyncio

    import anyio
    from anyio.to_interpreter import run_sync

    batches = [chunks[i : i + CHUNKSIZE] for i in range(0, len(chunks), CHUNKSIZE)]
    results: list = [None] * len(batches)

    async def main() -> float:
        limiter = anyio.CapacityLimiter(WORKERS)
        # run_sync takes (or creates) a worker interpreter before it waits for
        # the limiter: let only as many calls in as there are workers.
        gate = asyncio.Semaphore(WORKERS)

        async def one(fn, arg):
            async with gate:
                return await run_sync(fn, arg, limiter=limiter)

        async def batch(i: int) -> None:
            results[i] = await one(tasks.analyse_logs, batches[i])

        await asyncio.gather(*(one(tasks.tiny, i) for i in range(WORKERS)))
        start = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for i in range(len(batches)):
                group.create_task(batch(i))
        return time.perf_counter() - start

    mapped = asyncio.run(main())
    return [result for batch in results for result in batch], mapped


def _executor(way: str):
    if way == POOL:
        import subiso

        return subiso.Pool(WORKERS)
    if way == PROCESS_POOL:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("forkserver"))
    if way == THREAD_POOL:
        from concurrent.futures import ThreadPoolExecutor

        return ThreadPoolExecutor(WORKERS)
    if way == peers.INTERPRETER_POOL:
        return peers.interpreter_pool(WORKERS)
    raise ValueError(f"unknown way {way!r}")


def measure(way: str, chunks_count: int) -> dict:
    """The batch program in this (fresh) process, one way."""
    chunks = tasks.log_chunks(chunks_count, CHUNK_CHARS, SEED)
    before = procs.tree(procs.pss)
    with procs.PeakSampler(lambda: procs.tree(procs.pss), SAMPLE_INTERVAL) as sampler:
        began = time.perf_counter()
        if way == peers.ANYIO:
            results, mapped = _anyio_map(chunks)
        else:
            with _executor(way) as executor:
                list(executor.map(tasks.tiny, range(WORKERS)))
                start = time.perf_counter()
                results = list(executor.map(tasks.analyse_log, chunks, chunksize=CHUNKSIZE))
                mapped = time.perf_counter() - start
        program = time.perf_counter() - began
    first = tasks.analyse_log(chunks[0])
    if len(results) != len(chunks) or results[0] != first:
        raise RuntimeError(f"{len(results)} results, the first {results[0]!r}, not {first!r}")
    return {
        "map": mapped,
        "program": program,
        "peak_pss": sampler.peak,
        "pss_before": before,
        "samples": len(sampler.samples),
        "lines": sum(result[0] for result in results),
        "subiso_path": procs.subiso_path(),
    }


def ways() -> tuple[list[str], dict[str, str]]:
    """The ways this Python has, and why the others are left out."""
    return peers.with_interpreter_peers([POOL, PROCESS_POOL, THREAD_POOL])


def _spread(values: list[float], show) -> str:
    return " / ".join(show(v) for v in (min(values), statistics.median(values), max(values)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="write a pyperf suite here")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--chunks", type=int, default=CHUNKS)
    parser.add_argument("--worker", metavar="WAY", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        Path(args.result).write_text(json.dumps(measure(args.worker, args.chunks)))
        return

    chosen, skipped = ways()
    for way, why in skipped.items():
        print(f"  batch: skipping {way}: {why}", file=sys.stderr, flush=True)
    results: dict[str, dict[str, list[float]]] = {way: {} for way in chosen}
    failed: dict[str, str] = {}
    metadata: dict[str, object] = {}
    for r in range(args.rounds):
        for way in procs.rotated(chosen, r):
            if way in failed:
                continue
            print(f"  batch round {r + 1}/{args.rounds}: {way}...", flush=True)
            outcome = procs.run_fresh(__file__, way, ["--chunks", str(args.chunks)], WAY_TIMEOUT)
            if outcome is None:
                if way in OURS:
                    sys.exit(f"bm_batch: {way} failed")
                failed[way] = "failed (its error is printed above)"
                continue
            if outcome["subiso_path"] and "subiso_path" not in metadata:
                metadata["subiso_path"] = outcome["subiso_path"]
                print(f"  batch: subiso from {outcome['subiso_path']}", flush=True)
            figures = results[way]
            for key in ("map", "program", "peak_pss", "pss_before"):
                figures.setdefault(key, []).append(outcome[key])
    for way in failed:
        del results[way]
    skipped.update(failed)

    metadata |= {
        "description": __doc__.splitlines()[0],
        "chunks": args.chunks,
        "chunk_chars": CHUNK_CHARS,
        "chunksize": CHUNKSIZE,
        "workers": WORKERS,
        "seed": SEED,
        "sample_interval_s": SAMPLE_INTERVAL,
        "rounds": args.rounds,
        "interpreter_peers": peers.SOURCE,
        "python_version": platform.python_version(),
        "ways": ", ".join(results),
    }
    if skipped:
        metadata["skipped"] = "; ".join(f"{way}: {why}" for way, why in skipped.items())
    if args.output:
        named = {"map": "map seconds", "program": "program seconds", "peak_pss": "peak PSS"}
        suite = {
            f"batch {way}: {label}": (figures[key], "byte" if key == "peak_pss" else "second")
            for way, figures in results.items()
            for key, label in named.items()
        }
        procs.dump_suite(suite, args.output, metadata)

    print(
        f"\nbatch: {args.chunks:,} log chunks of {CHUNK_CHARS / 1000:.0f} KB, "
        f"map(chunksize={CHUNKSIZE}) on {WORKERS} workers; min / median / max of "
        f"{args.rounds} rounds, Python {platform.python_version()}"
    )
    header = ("way", "map time", "peak PSS, process tree", "whole program")
    rows = [header]
    for way, figures in results.items():
        rows.append(
            (
                way,
                _spread(figures["map"], lambda v: f"{v:.2f}") + " s",
                _spread(figures["peak_pss"], lambda v: f"{v / 1e6:,.0f}") + " MB",
                _spread(figures["program"], lambda v: f"{v:.2f}") + " s",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
