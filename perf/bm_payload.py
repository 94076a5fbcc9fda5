"""Moving data: a payload sent to a parallel worker and echoed back.

subiso: bytes through ports (shareable: copied once on each receive, never
pickled), and a TransferableBuffer (memfd: not copied at all in transit).
Peer, same run: a multiprocessing Pipe to a forkserver process.
Value: seconds per round trip; the report turns it into MiB/s.
"""

from __future__ import annotations

import multiprocessing
import time

import pyperf

import subiso

SIZES = {"1 MiB": 1 << 20, "64 MiB": 64 << 20}


def _echo(port):
    import subiso

    inbox = subiso.ReceivePort()
    port.send(inbox.send_port)
    for message in inbox:
        if message is None:
            inbox.close()
            return
        if isinstance(message, subiso.TransferableBuffer):
            view = message.materialize()
            message = subiso.TransferableBuffer(view)  # a new one goes back
            view.release()
        port.send(message)


class _Echo:
    def __enter__(self):
        self.port = subiso.ReceivePort()
        self.iso = subiso.Isolate.spawn(_echo, self.port.send_port)
        self.inbox = self.port.receive(timeout=60)
        return self

    def __exit__(self, *exc):
        self.inbox.send(None)
        self.iso.join(60)
        self.port.close()


def bench_bytes(size: int):
    def bench(loops: int) -> float:
        payload = bytes(size)
        with _Echo() as echo:
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
        start = time.perf_counter()
        for _ in range(loops):
            here.send_bytes(payload)
            here.recv_bytes()
        elapsed = time.perf_counter() - start
        here.send_bytes(b"")
        process.join()
        return elapsed

    return bench


if __name__ == "__main__":
    runner = pyperf.Runner()
    runner.metadata["description"] = __doc__.splitlines()[0]
    for label, size in SIZES.items():
        runner.bench_time_func(f"echo {label} bytes, subiso port", bench_bytes(size))
        runner.bench_time_func(f"echo {label} TransferableBuffer", bench_transferable(size))
        runner.bench_time_func(f"echo {label} bytes, mp Pipe", bench_pipe(size))
