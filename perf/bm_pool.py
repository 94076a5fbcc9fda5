"""Pools: subiso.Pool(2) against the executors people use today.

Peers, same run, 2 workers each: ProcessPoolExecutor (forkserver and spawn;
fork crashes with live subinterpreters), ThreadPoolExecutor, and the
interpreters-pep-734 backport's InterpreterPoolExecutor. Workloads: one task
round trip; a map of 20,000 tiny tasks (chunksize 1 and 64); 8 CPU-bound
tasks (against running them serially); an 8 MiB bytes echo. Pools are
created and warmed outside the timed region.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pyperf

sys.path.insert(0, str(Path(__file__).parent))
import tasks

import subiso

WORKERS = 2
MAP_ITEMS = 20_000
CPU_TASKS = 8
ECHO_BYTES = 8 << 20


def _interpreter_pool(n: int):
    from interpreters_backport.concurrent.futures.interpreter import InterpreterPoolExecutor

    return InterpreterPoolExecutor(n)


PEERS = {
    "subiso.Pool": lambda: subiso.Pool(WORKERS),
    "ProcessPool (forkserver)": lambda: ProcessPoolExecutor(
        WORKERS, mp_context=multiprocessing.get_context("forkserver")
    ),
    "ProcessPool (spawn)": lambda: ProcessPoolExecutor(
        WORKERS, mp_context=multiprocessing.get_context("spawn")
    ),
    "ThreadPool": lambda: ThreadPoolExecutor(WORKERS),
    "InterpreterPool (backport)": lambda: _interpreter_pool(WORKERS),
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


if __name__ == "__main__":
    runner = pyperf.Runner()
    runner.metadata["description"] = __doc__.splitlines()[0]
    runner.metadata["workers"] = str(WORKERS)
    runner.metadata["map_items"] = str(MAP_ITEMS)
    runner.metadata["cpu_tasks"] = str(CPU_TASKS)
    runner.metadata["echo_bytes"] = str(ECHO_BYTES)
    runner.bench_time_func("cpu: serial", cpu_serial)
    for name, make in PEERS.items():
        runner.bench_time_func(f"round trip: {name}", round_trip(make))
        runner.bench_time_func(f"map chunksize 1: {name}", tiny_map(make, 1))
        runner.bench_time_func(f"map chunksize 64: {name}", tiny_map(make, 64))
        runner.bench_time_func(f"cpu: {name}", cpu_bound(make))
        runner.bench_time_func(f"echo 8 MiB: {name}", echo(make))
