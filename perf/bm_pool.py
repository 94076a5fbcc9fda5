"""Pools: subiso.Pool(2) against the executors people use today.

Peers, same run, 2 workers each: ProcessPoolExecutor (forkserver and spawn;
fork crashes with live subinterpreters), ThreadPoolExecutor, and
InterpreterPoolExecutor (the stdlib's on 3.14+, the interpreters-pep-734
backport's on 3.13; see peers.py). Workloads: one task round trip; a map of
20,000 tiny tasks (chunksize 1 and 64); 8 CPU-bound tasks (against running
them serially); an 8 MiB bytes echo. Pools are created and warmed outside the
timed region.

Also, where it works, ``anyio.to_interpreter.run_sync`` in one anyio event
loop (asyncio backend), capacity limiter of 2: the round trip is one awaited
call; its map is a task group of 5,000 concurrent calls (a quarter of the
others', as each call costs several times theirs), at most 2 in flight; it
has no chunking. The gate matters: run_sync takes an idle worker, or creates
one, before it waits for a thread and hands the worker back only after the
call, so 5,000 unbounded concurrent calls would create about 5,000
interpreters.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pyperf

sys.path.insert(0, str(Path(__file__).parent))
import inner
import peers
import tasks

import subiso

WORKERS = 2
MAP_ITEMS = 20_000
ANYIO_MAP_ITEMS = 5_000
CPU_TASKS = 8
ECHO_BYTES = 8 << 20
# Operations per pyperf loop (see inner.py): round trips, maps, CPU batches, echoes.
PER_LOOP = {"round trip": 256, "map": 1, "cpu": 1, "echo": 4}


PEERS = {
    "subiso.Pool": lambda: subiso.Pool(WORKERS),
    "ProcessPool (forkserver)": lambda: ProcessPoolExecutor(
        WORKERS, mp_context=multiprocessing.get_context("forkserver")
    ),
    "ProcessPool (spawn)": lambda: ProcessPoolExecutor(
        WORKERS, mp_context=multiprocessing.get_context("spawn")
    ),
    "ThreadPool": lambda: ThreadPoolExecutor(WORKERS),
    peers.INTERPRETER_POOL: lambda: peers.interpreter_pool(WORKERS),
}


def _warm(pool) -> None:
    list(pool.map(tasks.tiny, range(WORKERS * 4)))


def round_trip(make):
    def bench(loops: int) -> float:
        with make() as pool:
            _warm(pool)
            start = time.perf_counter()
            for i in range(loops):
                pool.submit(tasks.tiny, i).result()
            return time.perf_counter() - start

    return bench


def tiny_map(make, chunksize: int):
    def bench(loops: int) -> float:
        with make() as pool:
            _warm(pool)
            start = time.perf_counter()
            for _ in range(loops):
                for _ in pool.map(tasks.tiny, range(MAP_ITEMS), chunksize=chunksize):
                    pass
            return time.perf_counter() - start

    return bench


def cpu_bound(make):
    def bench(loops: int) -> float:
        with make() as pool:
            _warm(pool)
            start = time.perf_counter()
            for _ in range(loops):
                list(pool.map(tasks.cpu, [tasks.CPU_N] * CPU_TASKS))
            return time.perf_counter() - start

    return bench


def cpu_serial(loops: int) -> float:
    start = time.perf_counter()
    for _ in range(loops):
        for _ in range(CPU_TASKS):
            tasks.cpu()
    return time.perf_counter() - start


def echo(make):
    def bench(loops: int) -> float:
        payload = bytes(ECHO_BYTES)
        with make() as pool:
            _warm(pool)
            start = time.perf_counter()
            for _ in range(loops):
                pool.submit(tasks.echo, payload).result()
            return time.perf_counter() - start

    return bench


async def _anyio_map(limiter, items) -> list[int]:
    import anyio
    from anyio.to_interpreter import run_sync

    gate = anyio.CapacityLimiter(WORKERS)
    results = [0] * len(items)

    async def call(i: int, item: int) -> None:
        async with gate:
            results[i] = await run_sync(tasks.tiny, item, limiter=limiter)

    async with anyio.create_task_group() as group:
        for i, item in enumerate(items):
            group.start_soon(call, i, item)
    return results


def _anyio(body):
    """Time ``body(limiter, loops)`` in one anyio event loop, its workers warm."""

    def bench(loops: int) -> float:
        import anyio

        async def main() -> float:
            limiter = anyio.CapacityLimiter(WORKERS)
            await _anyio_map(limiter, range(WORKERS * 4))
            start = time.perf_counter()
            await body(limiter, loops)
            return time.perf_counter() - start

        # anyio keeps a loop's idle workers until exit, when it destroys them.
        return anyio.run(main)

    return bench


async def _anyio_round_trip(limiter, loops: int) -> None:
    from anyio.to_interpreter import run_sync

    for i in range(loops):
        await run_sync(tasks.tiny, i, limiter=limiter)


async def _anyio_tiny_map(limiter, loops: int) -> None:
    for _ in range(loops):
        await _anyio_map(limiter, range(ANYIO_MAP_ITEMS))


if __name__ == "__main__":
    runner = pyperf.Runner()
    args = runner.parse_args()
    # The master decides whether anyio is a peer; its workers only run what it asks for.
    problem = None if args.worker else peers.anyio_problem()
    if problem is not None:
        print(f"skipping {peers.ANYIO}: {problem}", file=sys.stderr, flush=True)
    runner.metadata["description"] = __doc__.splitlines()[0]
    runner.metadata["workers"] = str(WORKERS)
    runner.metadata["interpreter_peers"] = peers.SOURCE
    runner.metadata["map_items"] = str(MAP_ITEMS)
    runner.metadata["cpu_tasks"] = str(CPU_TASKS)
    runner.metadata["echo_bytes"] = str(ECHO_BYTES)
    inner.add(runner, "cpu: serial", cpu_serial, PER_LOOP["cpu"])
    for name, make in PEERS.items():
        inner.add(runner, f"round trip: {name}", round_trip(make), PER_LOOP["round trip"])
        inner.add(runner, f"map chunksize 1: {name}", tiny_map(make, 1), PER_LOOP["map"])
        inner.add(runner, f"map chunksize 64: {name}", tiny_map(make, 64), PER_LOOP["map"])
        inner.add(runner, f"cpu: {name}", cpu_bound(make), PER_LOOP["cpu"])
        inner.add(runner, f"echo 8 MiB: {name}", echo(make), PER_LOOP["echo"])
    # Last, so that a master that skips them numbers the others as its workers do.
    if problem is None:
        inner.add(
            runner,
            f"round trip: {peers.ANYIO}",
            _anyio(_anyio_round_trip),
            PER_LOOP["round trip"],
        )
        inner.add(
            runner,
            f"map chunksize 1: {peers.ANYIO}",
            _anyio(_anyio_tiny_map),
            PER_LOOP["map"],
            metadata={"map_items": str(ANYIO_MAP_ITEMS)},
        )
