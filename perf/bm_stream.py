"""Stream: 100,000 small messages from a producer to the main interpreter.

Each message is a sensor reading ``(i, f"sensor-{i % 100}", float(i))``,
made by the producer as it sends it; the main interpreter receives them one
by one until the producer's end marker (None). The producer is started and
warmed before the timed part; each timed stream starts when main asks for
``MESSAGES`` readings and ends when it has received the last.

subiso: an isolate sending on a ``SendPort``, main calling ``receive()``.
Peers, same run: a forkserver process sending down a multiprocessing
``Pipe`` (``send``/``recv``) and through a multiprocessing ``Queue``
(``put``/``get``, a feeder thread in the producer); an interpreter putting
on a cross-interpreter ``interpreters.Queue`` (the stdlib's on 3.14+, the
backport's on 3.13, see peers.py), read with ``get()``. That queue has no
wake-up: ``get()`` on an empty queue sleeps 10 ms and looks again, so a
consumer that keeps up with its producer sleeps 10 ms at a time; it is
measured as long as a stream takes less than ``QUEUE_PEER_LIMIT`` seconds
(the value is then still comparable), and left out, saying so, otherwise.

Value: seconds per stream of ``MESSAGES`` messages.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pyperf

sys.path.insert(0, str(Path(__file__).parent))
import peers
import streams

import subiso

MESSAGES = 100_000
WARM_MESSAGES = 1_000  # a stream before the timed ones
QUEUE_PEER_LIMIT = 10.0  # seconds a stream of the interpreters.Queue peer may take
WAIT = 120.0  # seconds any single wait may take


def _streams(loops: int, ask: Callable[[int], object], take: Callable[[], object]) -> float:
    """Ask the producer for a warm-up stream, then ``loops`` streams of
    ``MESSAGES``; read each to its None. The seconds the measured ones took."""
    elapsed = 0.0
    for count in (WARM_MESSAGES, *[MESSAGES] * loops):
        start = time.perf_counter()
        ask(count)
        got = 0
        while take() is not None:
            got += 1
        if count == MESSAGES:
            elapsed += time.perf_counter() - start
        if got != count:
            raise RuntimeError(f"received {got} of {count}")
    return elapsed


def bench_subiso(loops: int) -> float:
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(streams.sensor_streamer, port.send_port)
        inbox = port.receive(timeout=WAIT)
        elapsed = _streams(loops, inbox.send, partial(port.receive, timeout=WAIT))
        inbox.send(0)
        iso.join(WAIT)
    return elapsed


def bench_pipe(loops: int) -> float:
    ctx = multiprocessing.get_context("forkserver")
    here, there = ctx.Pipe()
    process = ctx.Process(target=streams.pipe_streamer, args=(there,))
    process.start()
    elapsed = _streams(loops, here.send, here.recv)
    here.send(0)
    process.join(WAIT)
    return elapsed


def bench_mp_queue(loops: int) -> float:
    ctx = multiprocessing.get_context("forkserver")
    requests, readings = ctx.Queue(), ctx.Queue()
    process = ctx.Process(target=streams.queue_streamer, args=(requests, readings))
    process.start()
    elapsed = _streams(loops, requests.put, partial(readings.get, timeout=WAIT))
    requests.put(0)
    process.join(WAIT)
    return elapsed


def bench_interpreter_queue(loops: int) -> float:
    with peers.QueueProducer() as producer:
        return _streams(
            loops, producer.to_worker.put, partial(producer.from_worker.get, timeout=WAIT)
        )


def queue_peer_problem() -> str | None:
    """Why the interpreters.Queue peer is left out here, or None."""
    try:
        took = bench_interpreter_queue(1)
    except Exception as error:  # a peer that fails is left out, saying why
        return f"{type(error).__name__}: {error}"
    if took > QUEUE_PEER_LIMIT:
        return f"a stream took {took:.1f} s (limit {QUEUE_PEER_LIMIT:g} s)"
    return None


if __name__ == "__main__":
    runner = pyperf.Runner(loops=1)  # one stream is long enough to time
    runner.metadata["description"] = __doc__.splitlines()[0]
    runner.metadata["messages"] = MESSAGES
    runner.metadata["message"] = repr(streams.sensor(MESSAGES - 1))
    runner.metadata["subiso_path"] = str(Path(subiso.__file__).parent)
    runner.bench_time_func(f"stream {MESSAGES:,}: subiso port", bench_subiso)
    runner.bench_time_func(f"stream {MESSAGES:,}: mp Pipe (forkserver)", bench_pipe)
    runner.bench_time_func(f"stream {MESSAGES:,}: mp Queue (forkserver)", bench_mp_queue)
    # Only the parent decides (a worker process is told which benchmark to run).
    problem = None if runner.args.worker else queue_peer_problem()
    if problem is None:
        runner.bench_time_func(
            f"stream {MESSAGES:,}: {peers.INTERPRETER_QUEUE}", bench_interpreter_queue
        )
    else:
        print(f"stream: leaving out {peers.INTERPRETER_QUEUE}: {problem}", file=sys.stderr)
