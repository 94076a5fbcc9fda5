"""Sharing read-only data: the memory it costs, and reading it in parallel.

Memory: every worker of a pool of ``WORKERS`` reads all of a ``SIZE`` table
and holds it; we measure how much the proportional set size (PSS: shared
pages split fairly between their mappings) of every process involved grows.
subiso: ``Pool(8)`` given a ``SharedBuffer`` (one copy for all), and given
``bytes`` (a copy per worker). Peer: 8 forkserver processes attaching the
same ``multiprocessing.shared_memory`` block.

Throughput: a ``THROUGHPUT_SIZE`` SharedBuffer of int64 summed by one
isolate, and by two isolates reading disjoint halves at once (the data is
not copied: each task reads the shared pages in place).

Writes a pyperf suite (values in bytes or seconds) with -o FILE.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from multiprocessing import shared_memory
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import tasks
from bm_memory import dump_suite

import subiso
from subiso import _hub

WORKERS = 8
SIZE = 1 << 30
THROUGHPUT_SIZE = 256 << 20
REPEATS = 3
T = 600


def _pss(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Pss")


def _table(size: int) -> bytes:
    """``size`` bytes that are not all one page (no zero-page tricks)."""
    block = bytes(range(256)) * 4096
    return block * (size // len(block)) + block[: size % len(block)]


def pool_growth(make_payload, size: int) -> float:
    """PSS bytes this process grows by, from before the table is made to
    while every worker holds it."""
    with subiso.Pool(WORKERS) as pool, subiso.ReceivePort() as ready:
        list(pool.map(abs, range(4 * WORKERS)))  # every worker started
        time.sleep(0.5)
        before = _pss()
        payload = make_payload(size)
        running = [
            pool.submit(tasks.crc_and_hold, (payload, ready.send_port)) for _ in range(WORKERS)
        ]
        releases = [ready.receive(timeout=T) for _ in range(WORKERS)]  # all hold it at once
        grown = _pss() - before
        for release in releases:
            release.send(None)
        crcs = {task.result(T) for task in running}
        assert len(crcs) == 1, "the workers read different data"
        del payload
    _hub.settle(60)
    return grown


def processes_growth(size: int) -> float:
    """PSS bytes this process and ``WORKERS`` idle processes grow by, from
    before the table is made to while every process holds it, attached to
    one shared_memory block."""
    ctx = multiprocessing.get_context("forkserver")
    pipes, children = [], []
    for _ in range(WORKERS):
        here, there = ctx.Pipe()
        children.append(ctx.Process(target=tasks.shm_crc_and_hold, args=(there,)))
        pipes.append(here)
    for child in children:
        child.start()
    time.sleep(0.5)
    before = _pss() + sum(_pss(child.pid) for child in children)
    block = shared_memory.SharedMemory(create=True, size=size)
    try:
        block.buf[:size] = _table(size)
        for here in pipes:
            here.send(block.name)
        for here in pipes:
            assert here.recv() == "ready"
        grown = _pss() + sum(_pss(child.pid) for child in children) - before
        for here in pipes:
            here.send(None)
        for child in children:
            child.join(T)
        return grown
    finally:
        block.close()
        block.unlink()


def sums(size: int) -> tuple[float, float]:
    """Seconds to sum ``size`` bytes of int64 in one isolate, and in two
    isolates reading halves at once (medians of ``REPEATS``)."""
    count = size // 8
    buffer = subiso.SharedBuffer(_table(size))
    one, two = [], []
    with subiso.Pool(2) as pool:
        expected = pool.submit(tasks.int64_sum, (buffer, 0, count)).result(T)  # warm: pages mapped
        for _ in range(REPEATS):
            start = time.perf_counter()
            assert pool.submit(tasks.int64_sum, (buffer, 0, count)).result(T) == expected
            one.append(time.perf_counter() - start)
            start = time.perf_counter()
            halves = [
                pool.submit(tasks.int64_sum, (buffer, 0, count // 2)),
                pool.submit(tasks.int64_sum, (buffer, count // 2, count)),
            ]
            assert sum(half.result(T) for half in halves) == expected
            two.append(time.perf_counter() - start)
    return statistics.median(one), statistics.median(two)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--size", type=int, default=SIZE, help="bytes of the shared table")
    args = parser.parse_args()
    mib = 1 << 20
    gib = f"{args.size / (1 << 30):g} GiB"
    results: dict[str, tuple[float, str]] = {}

    print(f"  share: Pool({WORKERS}) reading a {gib} SharedBuffer...", flush=True)
    results[f"share: PSS growth, Pool({WORKERS}) holding a {gib} SharedBuffer"] = (
        pool_growth(lambda size: subiso.SharedBuffer(_table(size)), args.size),
        "byte",
    )
    print(f"  share: {WORKERS} processes attaching {gib} of shared_memory...", flush=True)
    results[f"share: PSS growth, {WORKERS} processes holding {gib} of shared_memory"] = (
        processes_growth(args.size),
        "byte",
    )
    print(f"  share: Pool({WORKERS}) given {gib} of bytes...", flush=True)
    results[f"share: PSS growth, Pool({WORKERS}) holding {gib} of bytes"] = (
        pool_growth(_table, args.size),
        "byte",
    )
    print(f"  share: summing {THROUGHPUT_SIZE // mib} MiB of int64...", flush=True)
    one, two = sums(THROUGHPUT_SIZE)
    summed = f"share: sum {THROUGHPUT_SIZE // mib} MiB int64 SharedBuffer"
    results[f"{summed}, 1 isolate"] = (one, "second")
    results[f"{summed}, 2 isolates"] = (two, "second")

    dump_suite(results, args.output, __doc__.splitlines()[0])
    for name, (value, unit) in results.items():
        shown = f"{value / mib:,.0f} MiB" if unit == "byte" else f"{value:.3f} s"
        print(f"{name}: {shown}")


if __name__ == "__main__":
    main()
