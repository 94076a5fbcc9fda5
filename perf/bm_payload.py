"""Moving data: a payload sent to a parallel worker and echoed back, 1 KiB .. 64 MiB.

subiso, through ports to an echoing isolate: ``bytes`` (shareable: copied
once on each receive, never pickled); an object graph (a list of dicts
holding 1 KiB bytearrays: pickled both ways); a ``TransferableBuffer``
(memfd: not copied in transit; a new one is made for the way back).
Peers, same run: ``bytes`` through a multiprocessing Pipe to a forkserver
process, and through a ProcessPoolExecutor (forkserver) task.
Value: seconds per round trip; the report turns it into MiB/s.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyperf

sys.path.insert(0, str(Path(__file__).parent))
import inner
import tasks

import subiso

SIZES = {
    "1 KiB": 1 << 10,
    "64 KiB": 64 << 10,
    "1 MiB": 1 << 20,
    "8 MiB": 8 << 20,
    "64 MiB": 64 << 20,
}
# Round trips per pyperf loop, by size (see inner.py).
PER_LOOP = {"1 KiB": 256, "64 KiB": 128, "1 MiB": 16, "8 MiB": 2, "64 MiB": 1}


def graph(size: int) -> list[dict[str, object]]:
    """An object graph of about ``size`` bytes: dicts holding 1 KiB bytearrays."""
    return [{"id": i, "blob": bytearray(1024)} for i in range(max(1, size // 1024))]


class _Echo:
    def __enter__(self):
        self.port = subiso.ReceivePort()
        self.iso = subiso.Isolate.spawn(tasks.echo_isolate, self.port.send_port)
        self.inbox = self.port.receive(timeout=60)
        return self

    def __exit__(self, *exc):
        self.inbox.send(None)
        self.iso.join(60)
        self.port.close()


def bench_message(make_payload):
    def bench(loops: int) -> float:
        payload = make_payload()
        with _Echo() as echo:
            echo.inbox.send(payload)
            echo.port.receive()
            start = time.perf_counter()
            for _ in range(loops):
                echo.inbox.send(payload)
                echo.port.receive()
            return time.perf_counter() - start

    return bench


def bench_transferable(size: int):
    def bench(loops: int) -> float:
        data = bytes(size)
        with _Echo() as echo:
            start = time.perf_counter()
            for _ in range(loops):
                echo.inbox.send(subiso.TransferableBuffer(data))
                echo.port.receive().materialize().release()
            return time.perf_counter() - start

    return bench


def _echo_pipe(conn) -> None:
    while (message := conn.recv_bytes()) != b"":
        conn.send_bytes(message)


def bench_pipe(size: int):
    def bench(loops: int) -> float:
        payload = bytes(size)
        ctx = multiprocessing.get_context("forkserver")
        here, there = ctx.Pipe()
        process = ctx.Process(target=_echo_pipe, args=(there,))
        process.start()
        here.send_bytes(payload)
        here.recv_bytes()
        start = time.perf_counter()
        for _ in range(loops):
            here.send_bytes(payload)
            here.recv_bytes()
        elapsed = time.perf_counter() - start
        here.send_bytes(b"")
        process.join()
        return elapsed

    return bench


def bench_process_pool(size: int):
    def bench(loops: int) -> float:
        payload = bytes(size)
        ctx = multiprocessing.get_context("forkserver")
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            pool.submit(tasks.echo, payload).result()
            start = time.perf_counter()
            for _ in range(loops):
                pool.submit(tasks.echo, payload).result()
            return time.perf_counter() - start

    return bench


if __name__ == "__main__":
    runner = pyperf.Runner()
    runner.metadata["description"] = __doc__.splitlines()[0]
    for label, size in SIZES.items():
        n = PER_LOOP[label]
        inner.add(
            runner,
            f"echo {label} bytes, subiso port",
            bench_message(lambda size=size: bytes(size)),
            n,
        )
        inner.add(
            runner,
            f"echo {label} object graph, subiso port",
            bench_message(lambda size=size: graph(size)),
            n,
        )
        inner.add(runner, f"echo {label} TransferableBuffer", bench_transferable(size), n)
        inner.add(runner, f"echo {label} bytes, mp Pipe", bench_pipe(size), n)
        inner.add(runner, f"echo {label} bytes, ProcessPool", bench_process_pool(size), n)
