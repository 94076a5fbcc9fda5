"""The subinterpreter peers of this Python, named so the report says whose they are.

On 3.14+ they are the stdlib's (``concurrent.futures.InterpreterPoolExecutor``,
``concurrent.interpreters`` queues); on 3.13 the interpreters-pep-734
backport's. This is the one module in perf/ that tests the Python version.
anyio's ``to_interpreter`` (its own switch inside) is a peer wherever it
imports and completes a call: ``anyio_problem`` says why not elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

STDLIB = sys.version_info >= (3, 14)
SOURCE = "stdlib" if STDLIB else "backport"

INTERPRETER_POOL = f"InterpreterPoolExecutor ({SOURCE})"
INTERPRETER_QUEUE = f"interpreters.Queue ({SOURCE})"
ANYIO = "anyio.to_interpreter"

# Where an interpreter finds the Queue class that attaches to a queue by id.
# (Passing the queue object itself through prepare_main fails on 3.13:
# "_interpqueues module not imported yet".)
_QUEUE_MODULE = "concurrent.interpreters" if STDLIB else "interpreters_backport.interpreters.queues"


def interpreters_module():
    """``concurrent.interpreters``, or the backport's ``interpreters`` on 3.13."""
    if STDLIB:
        from concurrent import interpreters
    else:
        from interpreters_backport import interpreters
    return interpreters


def interpreter_pool(workers: int):
    if STDLIB:
        from concurrent.futures import InterpreterPoolExecutor
    else:
        from interpreters_backport.concurrent.futures.interpreter import InterpreterPoolExecutor
    return InterpreterPoolExecutor(workers)


class QueueEcho:
    """An interpreter echoing every item from one queue to another, until None."""

    def __enter__(self) -> QueueEcho:
        if STDLIB:
            from concurrent import interpreters

            create_queue = interpreters.create_queue
        else:
            from interpreters_backport import interpreters
            from interpreters_backport.interpreters.queues import create as create_queue

        self.to_worker, self.from_worker = create_queue(), create_queue()
        self._interp = interpreters.create()
        self._thread = threading.Thread(target=self._interp.exec, args=(self._code(),))
        self._thread.start()
        return self

    def _code(self) -> str:
        return (
            f"from {_QUEUE_MODULE} import Queue\n"
            f"inq, outq = Queue({self.to_worker.id}), Queue({self.from_worker.id})\n"
            "while (m := inq.get()) is not None:\n"
            "    outq.put(m)\n"
        )

    def __exit__(self, *exc) -> None:
        self.to_worker.put(None)
        self._thread.join()
        self._interp.close()


class QueueProducer(QueueEcho):
    """An interpreter that, for each count it gets from one queue, puts that
    many sensor readings ``(i, f"sensor-{i % 100}", float(i))`` on another,
    then None; it ends at None."""

    def _code(self) -> str:
        return (
            f"from {_QUEUE_MODULE} import Queue\n"
            f"inq, outq = Queue({self.to_worker.id}), Queue({self.from_worker.id})\n"
            "while (count := inq.get()) is not None:\n"
            "    for i in range(count):\n"
            "        outq.put((i, f'sensor-{i % 100}', float(i)))\n"
            "    outq.put(None)\n"
        )


_ANYIO_PROBE = """
import anyio, anyio.to_interpreter, tasks
assert anyio.run(anyio.to_interpreter.run_sync, tasks.tiny, 1) == 2
"""


def anyio_problem() -> str | None:
    """Why ``anyio.to_interpreter`` cannot be a peer here, or None if it can.

    The probe runs in a child process so that a crash is a reason, not the end
    of the benchmark, and no interpreter outlives it in this one.
    """
    path = [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)))
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _ANYIO_PROBE],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        return "a probe call did not return within 60 s"
    if probe.returncode == 0:
        return None
    lines = probe.stderr.strip().splitlines()
    return lines[-1] if lines else f"the probe exited with status {probe.returncode}"


def with_interpreter_peers(chosen: list[str]) -> tuple[list[str], dict[str, str]]:
    """``chosen``, then the stdlib's InterpreterPoolExecutor and anyio's
    ``to_interpreter`` where this Python has them; why the others are left out."""
    chosen = list(chosen)
    skipped = {}
    if STDLIB:
        chosen.append(INTERPRETER_POOL)
    else:
        skipped[INTERPRETER_POOL] = "measured on 3.14+ only"
    problem = anyio_problem()
    if problem is None:
        chosen.append(ANYIO)
    else:
        skipped[ANYIO] = problem
    return chosen, skipped
