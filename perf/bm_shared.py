"""Sharing read-only data: a buffer sent to a pool task and back, 1 KiB .. 1 GiB.

subiso, a ``Pool(1)`` task that returns what it was given: a ``SharedBuffer``
(sent by reference: the cost should not depend on the size), ``bytes``
(copied each way), a ``TransferableBuffer`` (moved: handed back without being
materialized, so never copied either), and a tiny message (``None``), the
floor. Peers, same run: a ProcessPoolExecutor (forkserver) task handed a
``multiprocessing.shared_memory`` block by name (it attaches and detaches);
the stdlib's InterpreterPoolExecutor (the backport's on 3.13) echoing
``bytes``, up to 64 MiB. The buffers are made once, outside the timed loop.
Value: seconds per round trip.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import shared_memory
from pathlib import Path

import pyperf

sys.path.insert(0, str(Path(__file__).parent))
import inner
import peers
import tasks

import subiso

SIZES = {
    "1 KiB": 1 << 10,
    "1 MiB": 1 << 20,
    "64 MiB": 64 << 20,
    "1 GiB": 1 << 30,
}

# The InterpreterPoolExecutor pickles its arguments and results: 64 MiB took
# 2.2 s a round trip on 3.13's backport, and 1 GiB did not finish in 20 min.
INTERPRETER_POOL_MAX = 64 << 20

# Round trips per pyperf loop (see inner.py): a buffer sent by reference
# costs the same at every size; bytes are copied each way.
BY_REFERENCE_PER_LOOP = 64
BYTES_PER_LOOP = {"1 KiB": 64, "1 MiB": 4, "64 MiB": 1, "1 GiB": 1}


def _round_trips(pool, make_payload, loops: int) -> float:
    payload = make_payload()
    payload = pool.submit(tasks.echo, payload).result()  # warm, and the payload as it comes back
    start = time.perf_counter()
    for _ in range(loops):
        payload = pool.submit(tasks.echo, payload).result()
    return time.perf_counter() - start


def bench_subiso(make_payload):
    def bench(loops: int) -> float:
        with subiso.Pool(1) as pool:
            return _round_trips(pool, make_payload, loops)

    return bench


def bench_interpreter_pool(size: int):
    def bench(loops: int) -> float:
        with peers.interpreter_pool(1) as pool:
            return _round_trips(pool, lambda: bytes(size), loops)

    return bench


def bench_shared_memory(size: int):
    def bench(loops: int) -> float:
        block = shared_memory.SharedMemory(create=True, size=size)
        try:
            ctx = multiprocessing.get_context("forkserver")
            with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                pool.submit(tasks.shm_echo, block.name).result()
                start = time.perf_counter()
                for _ in range(loops):
                    pool.submit(tasks.shm_echo, block.name).result()
                return time.perf_counter() - start
        finally:
            block.close()
            block.unlink()

    return bench


if __name__ == "__main__":
    runner = pyperf.Runner()
    runner.metadata["description"] = __doc__.splitlines()[0]
    by_reference = BY_REFERENCE_PER_LOOP
    inner.add(
        runner,
        "share: tiny message (None), subiso.Pool",
        bench_subiso(lambda: None),
        by_reference,
    )
    for label, size in SIZES.items():
        inner.add(
            runner,
            f"share {label}: SharedBuffer, subiso.Pool",
            bench_subiso(lambda size=size: subiso.SharedBuffer(bytes(size))),
            by_reference,
        )
        inner.add(
            runner,
            f"share {label}: TransferableBuffer, subiso.Pool",
            bench_subiso(lambda size=size: subiso.TransferableBuffer(bytes(size))),
            by_reference,
        )
        inner.add(
            runner,
            f"share {label}: bytes, subiso.Pool",
            bench_subiso(lambda size=size: bytes(size)),
            BYTES_PER_LOOP[label],
        )
        inner.add(
            runner,
            f"share {label}: shared_memory by name, ProcessPool (forkserver)",
            bench_shared_memory(size),
            by_reference,
        )
        if size <= INTERPRETER_POOL_MAX:
            inner.add(
                runner,
                f"share {label}: bytes, {peers.INTERPRETER_POOL}",
                bench_interpreter_pool(size),
                BYTES_PER_LOOP[label],
            )
