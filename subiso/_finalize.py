"""Cleanup of collected objects that cannot swallow a Ctrl-C.

When a signal interrupts a blocking call, CPython first runs any garbage
collection that is due, then the signal's handler (``PyErr_CheckSignals``).
A finalizer written in Python (``__del__``, a weakref callback) that this
collection runs in the main thread enters a Python frame, and the signal is
handled there: the KeyboardInterrupt is raised inside the finalizer, printed
as "Exception ignored", and lost. The main thread goes back to its wait, and
one Ctrl-C no longer ends the program. (A pool that nobody referenced any
more lost one that way: its weakref callback took it.)

So the library's finalizers run no Python code where the object is
collected. Each is a weakref whose callback is C code only:

- ``at_collect(obj, fn, *args)`` runs Python code: the callback is
  ``SimpleQueue.put`` of the job (its ``block`` parameter takes the weakref,
  and a SimpleQueue ignores it), and a daemon thread of the main
  interpreter, ``subiso-finalizer`` (started by the hub), takes the jobs
  and runs them. In an
  isolate no thread handles signals, and the job runs in the callback, as
  ``__del__`` would. A job must not reference ``obj`` (it would never be
  collected) and may run on any thread.
- ``_wire.close_at_collect(obj, fds)`` closes file descriptors (the
  buffers' memfds) in place, in any interpreter, with no Python code at all
  (see there). A hop to the thread per dropped buffer made a SharedBuffer's
  round trip to a pool task 10-50% slower.

The weakrefs live in module tables until their object goes (a weakref that
is itself collected never calls back).
"""

from __future__ import annotations

import _thread
import os

# (_functools, not functools: that would cost an import in every isolate)
from _functools import partial  # type: ignore[import-not-found]
from _weakref import ref
from itertools import count

from . import _backend

TYPE_CHECKING = False
if TYPE_CHECKING:
    from _queue import SimpleQueue
    from collections.abc import Callable
    from typing import Any

_Job = tuple[int, "Callable[..., object]", tuple["Any", ...]]

# The weakrefs that carry the jobs, by key: a weakref that is itself
# collected never calls back, so each lives here until its job is taken.
_live: dict[int, ref[Any]] = {}
_next_key = count().__next__


class _Service:
    """The main interpreter's job queue and the thread that empties it."""

    jobs: SimpleQueue[_Job] | None = None  # None in an isolate
    started = False
    starting = _thread.allocate_lock()


if _backend.current_interpreter_id() == _backend.main_interpreter_id():
    from _queue import SimpleQueue as _SimpleQueue  # (an extension module: not in isolates)

    _Service.jobs = _SimpleQueue()


def at_collect(obj: object, fn: Callable[..., object], *args: Any) -> None:
    """Run ``fn(*args)`` once ``obj`` is collected. (It starts no thread: the
    hub starts the finalizer's, see ``start``.)"""
    key = _next_key()
    job = (key, fn, args)
    jobs = _Service.jobs
    if jobs is not None and _Service.started:
        callback: Callable[[Any], object] = partial(jobs.put, job)  # C only (see above)
    else:  # an isolate, or the main interpreter before the hub or past its exit
        callback = partial(_run, job)
    _live[key] = ref(obj, callback)


def settle(timeout: float) -> bool:
    """Wait until the jobs posted so far have run; False if ``timeout``
    seconds passed first (for tests, which look at what a job frees)."""
    jobs = _Service.jobs
    if jobs is None or not _Service.started:
        return True
    done = _thread.allocate_lock()
    done.acquire()
    jobs.put((-1, done.release, ()))
    return done.acquire(timeout=timeout)


def _run(job: _Job, _ref: object = None) -> None:
    key, fn, args = job
    _live.pop(key, None)
    fn(*args)


def _serve(jobs: SimpleQueue[_Job]) -> None:
    """The finalizer thread, a service. Its safety net: a job that fails (a
    cleanup of the library's own, so a fault of ours) is logged, and the
    next one runs; nothing waits on a job."""
    while True:
        job = jobs.get()
        try:
            _run(job)
        except BaseException:  # a service: one cleanup's failure is logged, the next runs
            _report(job)
        del job  # (what it held goes now, not when the next one comes)


def _report(job: _Job) -> None:
    try:
        import logging

        logging.getLogger("subiso").exception("a cleanup of collected objects failed: %r", job[1])
    except BaseException:
        pass  # interpreter exit: logging may be gone


def start() -> bool:
    """Start the finalizer thread (the hub thread does, as it starts: so that
    no call on an event loop's thread starts it); False if threads can no
    longer start."""
    import threading

    with _Service.starting:
        if not _Service.started:
            thread = threading.Thread(
                target=_serve, args=(_Service.jobs,), name="subiso-finalizer", daemon=True
            )
            try:
                _backend.start_thread(thread)
            except RuntimeError:  # the interpreter is exiting
                return False
            _Service.started = True
    return True


def _after_fork_in_child() -> None:
    """The thread did not come along: start another on the same queue."""
    _Service.starting = _thread.allocate_lock()
    if _Service.started:
        _Service.started = False
        start()


if _Service.jobs is not None and hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
