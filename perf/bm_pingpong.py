"""Port ping-pong: one message there and back between two parallel workers.

subiso: main isolate <-> a spawned isolate echoing on ports.
Peers, same run: multiprocessing Pipe to a forkserver process; a
cross-interpreter ``interpreters.Queue`` to an interpreter echoing on another
(the stdlib's on 3.14+, the backport's on 3.13, see peers.py; both poll with
a 10 ms sleep).
Value: seconds per round trip (an int message).
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from pathlib import Path

import pyperf

sys.path.insert(0, str(Path(__file__).parent))
import inner
import peers
import tasks

import subiso

MESSAGE = 12345


def bench_subiso(loops: int) -> float:
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(tasks.echo_isolate, port.send_port)
        inbox = port.receive(timeout=60)
        for _ in range(100):
            inbox.send(MESSAGE)
            port.receive()
        start = time.perf_counter()
        for _ in range(loops):
            inbox.send(MESSAGE)
            port.receive()
        elapsed = time.perf_counter() - start
        inbox.send(None)
        iso.join(60)
    return elapsed


def _echo_pipe(conn) -> None:
    while (message := conn.recv()) is not None:
        conn.send(message)


def bench_pipe(loops: int) -> float:
    ctx = multiprocessing.get_context("forkserver")
    here, there = ctx.Pipe()
    process = ctx.Process(target=_echo_pipe, args=(there,))
    process.start()
    for _ in range(100):
        here.send(MESSAGE)
        here.recv()
    start = time.perf_counter()
    for _ in range(loops):
        here.send(MESSAGE)
        here.recv()
    elapsed = time.perf_counter() - start
    here.send(None)
    process.join()
    return elapsed


def bench_interpreter_queue(loops: int) -> float:
    with peers.QueueEcho() as echo:
        echo.to_worker.put(MESSAGE)
        echo.from_worker.get()
        start = time.perf_counter()
        for _ in range(loops):
            echo.to_worker.put(MESSAGE)
            echo.from_worker.get()
        return time.perf_counter() - start


if __name__ == "__main__":
    runner = pyperf.Runner()
    runner.metadata["description"] = __doc__.splitlines()[0]
    runner.metadata["message"] = repr(MESSAGE)
    inner.add(runner, "pingpong subiso port", bench_subiso, 4096)
    inner.add(runner, "pingpong mp Pipe (forkserver)", bench_pipe, 1024)
    # It polls with a 10 ms sleep: a round trip takes about that long.
    inner.add(runner, f"pingpong {peers.INTERPRETER_QUEUE}", bench_interpreter_queue, 4)
