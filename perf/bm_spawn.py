"""Starting work: one-shot runs and isolate spawns against starting processes.

subiso: ``subiso.run`` of a trivial function, with calls 20 ms apart
(latency; pre-warmed spares make these cheap) and back to back (a fresh
interpreter for every call); ``Isolate.spawn`` until the first message.
Peers, same run: a multiprocessing Process started and joined (forkserver,
spawn); a ProcessPoolExecutor's first task (cold start, forkserver); an
InterpreterPoolExecutor's first task (the stdlib's on 3.14+, the backport's
on 3.13, see peers.py); and CPython's own rate of creating and closing bare
interpreters, on one thread and on one thread per core at once, the bound
for fresh runs back to back. Not a peer but a yardstick: the same, a thread
per core, with subiso's isolate runtime imported in each interpreter before
it is closed (what the runtime's import alone costs a fresh run).
Run with ``--loops 1``: every value is one call, so percentiles are per call.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyperf

sys.path.insert(0, str(Path(__file__).parent))
import peers

import subiso

SPACING = 0.020  # seconds between calls in the latency benchmark
BARE_EACH = 8  # bare interpreters each thread creates and closes per value


def noop(*_):
    return None


def first_message(port):
    port.send("up")


def bench_run_spaced(loops: int) -> float:
    total = 0.0
    for _ in range(loops):
        time.sleep(SPACING)
        start = time.perf_counter()
        subiso.run(noop)
        total += time.perf_counter() - start
    return total


def bench_run_back_to_back(loops: int) -> float:
    start = time.perf_counter()
    for _ in range(loops):
        subiso.run(noop)
    return time.perf_counter() - start


def bench_spawn_first_message(loops: int) -> float:
    total = 0.0
    for _ in range(loops):
        time.sleep(SPACING)
        with subiso.ReceivePort() as port:
            start = time.perf_counter()
            iso = subiso.Isolate.spawn(first_message, port.send_port)
            port.receive(timeout=60)
            total += time.perf_counter() - start
            iso.join(60)
    return total


def _process_bench(method: str):
    def bench(loops: int) -> float:
        ctx = multiprocessing.get_context(method)
        start = time.perf_counter()
        for _ in range(loops):
            process = ctx.Process(target=noop)
            process.start()
            process.join()
        return time.perf_counter() - start

    return bench


def bench_process_pool_cold(loops: int) -> float:
    ctx = multiprocessing.get_context("forkserver")
    start = time.perf_counter()
    for _ in range(loops):
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            pool.submit(int).result()
    return time.perf_counter() - start


def bench_interpreter_pool_cold(loops: int) -> float:
    start = time.perf_counter()
    for _ in range(loops):
        with peers.interpreter_pool(1) as pool:
            # A builtin: the backport's workers cannot unpickle functions from
            # __main__ and then spin forever instead of failing.
            pool.submit(int).result()
    return time.perf_counter() - start


# What an isolate runs first (see subiso._runtime.BOOTSTRAP), up to its start.
RUNTIME_IMPORT = f"import sys\nsys.path[:] = {sys.path!r}\nfrom subiso import _runtime\n"


def _bare_create_close(threads: int, code: str | None = None):
    """Time per interpreter of creating and closing ``BARE_EACH`` bare
    (isolated) interpreters on each of ``threads`` threads at once; each
    runs ``code`` in between, if given."""

    def bench(loops: int) -> float:
        interpreters = peers.interpreters_module()

        def work() -> None:
            for _ in range(BARE_EACH):
                interpreter = interpreters.create()
                if code is not None:
                    interpreter.exec(code)
                interpreter.close()

        workers = [threading.Thread(target=work) for _ in range(threads)]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return (time.perf_counter() - start) / (threads * BARE_EACH) * loops

    return bench


CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    runner = pyperf.Runner()
    runner.metadata["description"] = __doc__.splitlines()[0]
    runner.metadata["spacing_s"] = str(SPACING)
    runner.bench_time_func("run, calls 20 ms apart", bench_run_spaced)
    runner.bench_time_func("run, back to back", bench_run_back_to_back)
    runner.bench_time_func("Isolate.spawn to first message", bench_spawn_first_message)
    runner.bench_time_func("Process start+join (forkserver)", _process_bench("forkserver"))
    runner.bench_time_func("Process start+join (spawn)", _process_bench("spawn"))
    runner.bench_time_func("first task: ProcessPoolExecutor (forkserver)", bench_process_pool_cold)
    runner.bench_time_func(f"first task: {peers.INTERPRETER_POOL}", bench_interpreter_pool_cold)
    runner.bench_time_func("bare interpreter create+close, 1 thread", _bare_create_close(1))
    runner.bench_time_func(
        "bare interpreter create+close, a thread per core", _bare_create_close(CORES)
    )
    runner.bench_time_func(
        "interpreter create+runtime import+close, a thread per core",
        _bare_create_close(CORES, RUNTIME_IMPORT),
    )
