"""Interpreters, raw cross-interpreter queues and wake-up fds.

This is the one module that knows which Python it runs on: CPython 3.13
(the private ``_interpreters``/``_interpqueues`` modules that the
``interpreters-pep-734`` backport also stands on) or 3.14+ (the stdlib's
``concurrent.interpreters``). Nothing else in the package tests the version.

Everything here is cheap to import: a fresh isolate imports this module
first, and what it imports is most of what an isolate costs.

Queues carry only shareable values (the wire layer pickles everything else),
so the queues never pickle on their own. An item on a queue belongs to the
interpreter that put it there: CPython drops it when that interpreter is
destroyed, which the isolate layer accounts for before destroying one.
"""

from __future__ import annotations

import _interpqueues
import _interpreters
import os
import select
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

# -- CPython faults, by version --------------------------------------------------
#
# Each workaround elsewhere tests one of these, so that it applies only where
# the fault was measured (README, "Compatibility").

#: sys._current_frames() while isolates run frees a bad pointer and aborts the
#: process: measured on 3.13.0, not on 3.13.18, 3.14.10 or 3.15.2
#: (perf/faults.py). The patch releases in between are unmeasured and taken
#: as faulty.
CURRENT_FRAMES_CRASHES: Final = (3, 13) <= sys.version_info[:3] < (3, 13, 18)

#: Destroying an isolated interpreter keeps ~1.7-2.1 MiB of its memory (more
#: after more imports): every 3.13 release measured (3.13.0, 3.13.18);
#: 3.14.10 and 3.15.2 keep nothing measurable (perf/faults.py).
LEAKS_PER_INTERPRETER: Final = sys.version_info < (3, 14)

#: os.fork() while a subinterpreter exists kills the child before its code
#: runs (gh-139759): every version measured, 3.13.0 to 3.15.2 (perf/faults.py).
FORK_KILLS_CHILD: Final = True

#: Destroying a queue while another thread of the destroyer's interpreter
#: puts to it can freeze the process: CPython spins, GIL held, until no put
#: is inside the queue, and a put waiting for the cross-interpreter
#: registry's lock needs that GIL back. Froze 5/5, 4/5, 3/5 and 5/5 runs of
#: 40 closes on 3.13.0, 3.13.18, 3.14.10 and 3.15.2 (perf/faults.py): every
#: version. The hub then has queues destroyed by the reaper (_reaper.py).
QUEUE_DESTROY_FREEZES: Final = True

# The flag for "items left by a destroyed interpreter vanish"
# (concurrent.interpreters' UNBOUND_REMOVE), in both versions' _interpqueues.
_UNBOUND_REMOVE: Final = 1
# Every error of the module derives from QueueError; NotFound is told apart.
_EmptyError: type[BaseException] = _interpqueues.QueueError


class QueueFullError(Exception):
    """A put on a queue that holds its ``maxsize`` items."""


if sys.version_info >= (3, 14):
    # Queues are made and used through _interpqueues, the module under the
    # stdlib's concurrent.interpreters: on the hottest path, Queue.put_nowait
    # and get_nowait would add a Python frame and an unbound-item check per
    # message, and ports already know what they put. concurrent.interpreters
    # itself (about 11 ms to import in a fresh interpreter, most of it pickle
    # and threading) is imported only where interpreters are made: the main
    # interpreter.

    def queue_create(maxsize: int = 0) -> int:
        """Create a queue (of at most ``maxsize`` items, if not 0); items left
        by a destroyed interpreter vanish. It lives until queue_destroy
        (nothing binds or releases it)."""
        qid: int = _interpqueues.create(maxsize, _UNBOUND_REMOVE, -1)
        return qid

    def queue_put(qid: int, item: object) -> None:
        """Put ``item`` (shareable).

        Raises:
            QueueNotFoundError: the queue is gone.
            QueueFullError: it holds its ``maxsize`` items.
        """
        try:
            _interpqueues.put(qid, item, -1)
        except QueueNotFoundError:
            raise
        except _EmptyError:  # (every error of the module but NotFound: full)
            raise QueueFullError(f"queue {qid} is full") from None

    def queue_get(qid: int) -> object:
        """Return the next item, or ``EMPTY``."""
        try:
            item, unbound = _interpqueues.get(qid)
        except QueueNotFoundError:
            raise
        except _EmptyError:
            return EMPTY
        return EMPTY if unbound is not None else item

else:
    _SHARED_ONLY: Final = 0

    def queue_create(maxsize: int = 0) -> int:
        """Create a queue (of at most ``maxsize`` items, if not 0); items left
        by a destroyed interpreter vanish."""
        qid: int = _interpqueues.create(maxsize, _SHARED_ONLY, _UNBOUND_REMOVE)
        return qid

    def queue_put(qid: int, item: object) -> None:
        """Put ``item`` (shareable).

        Raises:
            QueueNotFoundError: the queue is gone.
            QueueFullError: it holds its ``maxsize`` items.
        """
        try:
            _interpqueues.put(qid, item, _SHARED_ONLY, _UNBOUND_REMOVE)
        except QueueNotFoundError:
            raise
        except _EmptyError:  # (every error of the module but NotFound: full)
            raise QueueFullError(f"queue {qid} is full") from None

    def queue_get(qid: int) -> object:
        """Return the next item, or ``EMPTY``."""
        try:
            item, _fmt, unbound = _interpqueues.get(qid)
        except QueueNotFoundError:
            raise
        except _EmptyError:
            return EMPTY
        return EMPTY if unbound is not None else item


def _register_queue_types() -> None:
    """Give the module its high-level classes before the first empty get.

    Otherwise that get imports them (``concurrent.interpreters`` on 3.14+,
    ``test.support.interpreters`` on 3.13: 10-23 ms, in every interpreter).
    The main interpreter registers the stdlib's (or the backport's) own
    classes, so that code using them there keeps working; an isolate we own
    registers three small ones of ours. (If code in an isolate imports the
    stdlib's module later, it registers its own in their place.)
    """
    if _interpreters.get_current()[0] == _interpreters.get_main()[0]:
        try:
            if sys.version_info >= (3, 14):
                import concurrent.interpreters._queues  # noqa: F401 - registers
            else:
                import interpreters_backport.interpreters.queues  # noqa: F401 - registers
            return
        except ImportError:
            pass

    class Queue:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self.args = args

    class QueueEmpty(_interpqueues.QueueError):
        pass

    class QueueFull(_interpqueues.QueueError):
        pass

    _interpqueues._register_heap_types(Queue, QueueEmpty, QueueFull)  # type: ignore[attr-defined]


_register_queue_types()


QueueNotFoundError: type[BaseException] = _interpqueues.QueueNotFoundError
InterpreterError: type[BaseException] = _interpreters.InterpreterError
NotShareableError: type[BaseException] = _interpreters.NotShareableError


class _Empty:
    __slots__ = ()

    def __repr__(self) -> str:
        return "EMPTY"


EMPTY = _Empty()


def queue_destroy(qid: int) -> None:
    """Destroy a queue and what it holds; later puts raise QueueNotFoundError."""
    try:
        _interpqueues.destroy(qid)
    except QueueNotFoundError:
        pass


def queue_count(qid: int) -> int:
    """Items waiting on the queue; 0 once it is destroyed."""
    try:
        n: int = _interpqueues.get_count(qid)
    except QueueNotFoundError:
        return 0
    return n


def queue_empty(qid: int) -> bool:
    """Whether the queue exists and holds nothing."""
    try:
        return not _interpqueues.get_count(qid)
    except QueueNotFoundError:
        return False


def queue_exists(qid: int) -> bool:
    try:
        _interpqueues.get_count(qid)
    except QueueNotFoundError:
        return False
    return True


# -- interpreters -------------------------------------------------------------
#
# An interpreter is known by a handle: the stdlib's ``Interpreter`` on 3.14+,
# its id on 3.13. Only this module looks inside.

ISOLATIONS = ("isolated", "legacy")


def _check_isolation(isolation: str) -> None:
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be 'isolated' or 'legacy', not {isolation!r}")


if sys.version_info >= (3, 14):

    def _stdlib() -> Any:
        """``concurrent.interpreters``, imported where interpreters are made."""
        from concurrent import interpreters

        return interpreters

    def interpreter_create(isolation: str) -> object:
        """Create an interpreter: ``"isolated"`` (own GIL) or ``"legacy"`` (shares the main GIL)."""
        _check_isolation(isolation)
        if isolation == "isolated":
            return _stdlib().create()
        # The stdlib creates isolated interpreters only; a legacy one is made
        # the same way with the other configuration, then handled alike.
        iid = _interpreters.create(_interpreters.new_config("legacy"), reqrefs=True)
        return _stdlib().Interpreter(iid, _ownsref=True)  # type: ignore[call-arg]

    def interpreter_destroy(interp: object) -> None:
        try:
            interp.close()  # type: ignore[attr-defined]
        except InterpreterError:
            pass

    def interpreter_exec(interp: object, code: str) -> str | None:
        """Run ``code`` in the interpreter's ``__main__`` on this thread.

        Returns None, or the formatted error when the code raised.
        """
        try:
            interp.exec(code)  # type: ignore[attr-defined]
        except _stdlib().ExecutionFailed as failed:
            return str(failed.excinfo.formatted or failed)
        return None

    def interpreter_set_main(interp: object, attrs: dict[str, object]) -> None:
        """Bind shareable values in the interpreter's ``__main__``."""
        interp.prepare_main(attrs)  # type: ignore[attr-defined]

    def interpreter_ids() -> list[int]:
        return [interp.id for interp in _stdlib().list_all()]

else:

    def interpreter_create(isolation: str) -> object:
        """Create an interpreter: ``"isolated"`` (own GIL) or ``"legacy"`` (shares the main GIL)."""
        _check_isolation(isolation)
        config = _interpreters.new_config(isolation)  # type: ignore[arg-type]
        iid: int = _interpreters.create(config)
        return iid

    def interpreter_destroy(interp: object) -> None:
        try:
            _interpreters.destroy(interp)  # type: ignore[arg-type]
        except InterpreterError:
            pass

    def interpreter_exec(interp: object, code: str) -> str | None:
        """Run ``code`` in the interpreter's ``__main__`` on this thread.

        Returns None, or the formatted error when the code raised.
        """
        excinfo = _interpreters.exec(interp, code)  # type: ignore[arg-type]
        if excinfo is None:
            return None
        text = getattr(excinfo, "formatted", None) or getattr(excinfo, "msg", None)
        return str(text or excinfo)

    def interpreter_set_main(interp: object, attrs: dict[str, object]) -> None:
        """Bind shareable values in the interpreter's ``__main__``.

        Every value is checked first: a non-shareable one crashes 3.13.0.
        """
        for name, value in attrs.items():
            if not _interpreters.is_shareable(value):
                raise TypeError(f"{name}={value!r} is not shareable")
        _interpreters.set___main___attrs(interp, attrs)  # type: ignore[arg-type]

    def interpreter_ids() -> list[int]:
        return [entry[0] for entry in _interpreters.list_all()]


def main_ended_in_interrupt() -> bool:
    """At exit: the program ended in a KeyboardInterrupt nobody caught
    (which CPython prints, and records as ``sys.last_exc``). Never in an
    interactive session, where that is the last line's."""
    if hasattr(sys, "ps1") or sys.flags.interactive:
        return False
    return isinstance(getattr(sys, "last_exc", None), KeyboardInterrupt)


def keep_interrupted_exit_status() -> None:
    """At exit, once every isolate has ended. CPython 3.13 keeps one record,
    for the whole process, that the main module ended in KeyboardInterrupt
    (the process then ends as killed by SIGINT, as a shell expects), and the
    run of any string (``exec``, ``eval``, a namedtuple or a dataclass made)
    in any interpreter resets it: an isolate that starts or runs as the
    process exits turns a Ctrl-C into exit status 1. The record is set again
    the one way Python code can: a string whose run ends in KeyboardInterrupt.
    3.14 keeps the record out of reach."""
    if sys.version_info < (3, 14) and main_ended_in_interrupt():
        try:
            exec("raise KeyboardInterrupt")
        except KeyboardInterrupt:
            pass


def current_interpreter_id() -> int:
    iid: int = _interpreters.get_current()[0]
    return iid


def main_interpreter_id() -> int:
    iid: int = _interpreters.get_main()[0]
    return iid


# -- wake-up fds --------------------------------------------------------------
#
# A waker is a pair of process-wide fds (read end, write end); with eventfd it
# is one fd twice. Any interpreter may write to it, and select/asyncio can
# watch it. A waker fd is never closed while the process runs, only recycled:
# a sender holding a stale SendPort may still write to it after its port
# closed, and that write must never reach an unrelated file that reused the
# number. A stray wake-up on a recycled waker must be harmless to whoever
# owns it next: receivers always re-check their queue, and an isolate's
# interrupt waker counts only with the kill flag (Runtime._on_interrupt).

_ONE = (1).to_bytes(8, sys.byteorder)
_HAS_EVENTFD = hasattr(os, "eventfd")
_free_wakers: list[tuple[int, int]] = []


# The queue of free wakers any interpreter may take (-1 until the hub made
# it). Only the main interpreter puts there, because CPython drops an item
# with the interpreter that put it: an isolate hands its free wakers to the
# hub when it exits.
_shared_free_qid = -1
_owns_shared_free = False
_LOCAL_FREE = 8  # the main interpreter keeps this many at hand, shares the rest


def share_free_wakers(qid: int, spaces_qid: int, owner: bool) -> None:
    """Take wakers from (and, if ``owner``, give them back to) queue ``qid``,
    and room wakers from queue ``spaces_qid``."""
    global _shared_free_qid, _owns_shared_free, _shared_spaces_qid
    _shared_free_qid, _owns_shared_free, _shared_spaces_qid = qid, owner, spaces_qid


def waker_new() -> tuple[int, int]:
    """A waker from this interpreter's free list, the process's, or a fresh one."""
    if _free_wakers:
        return _free_wakers.pop()
    if _shared_free_qid >= 0:
        try:
            item = queue_get(_shared_free_qid)
        except QueueNotFoundError:
            item = EMPTY
        if item is not EMPTY:  # an int (it needs no release): read end << 32 | write end
            shared: int = item  # type: ignore[assignment]
            return (shared >> 32, shared & 0xFFFFFFFF)
    if _HAS_EVENTFD:
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        return (fd, fd)
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    return (rfd, wfd)


def waker_free(waker: tuple[int, int]) -> None:
    """Give a waker back for reuse (drained, so it starts quiet)."""
    waker_drain(waker[0])
    if _owns_shared_free and len(_free_wakers) >= _LOCAL_FREE:
        queue_put(_shared_free_qid, (waker[0] << 32) | waker[1])
    else:
        _free_wakers.append(waker)


def free_waker_count() -> int:
    """Free wakers and room wakers at hand here and in the process's queues
    (open fds kept for reuse)."""
    shared = queue_count(_shared_free_qid) if _shared_free_qid >= 0 else 0
    if _shared_spaces_qid >= 0:
        shared += queue_count(_shared_spaces_qid)
    return len(_free_wakers) + len(_free_spaces) + shared


def wakers_take_free() -> list[tuple[int, int]]:
    """Hand this interpreter's free wakers to another (at isolate exit)."""
    taken = _free_wakers[:]
    _free_wakers.clear()
    return taken


def wakers_add_free(wakers: object) -> None:
    """Take the free wakers an exited isolate handed over (main interpreter)."""
    for waker in wakers:  # type: ignore[attr-defined]
        waker_free((int(waker[0]), int(waker[1])))


# -- room wakers ----------------------------------------------------------------
#
# A bounded port's senders wait for room on an eventfd of the port's, which
# its receiver writes after each take. Room wakers are recycled apart from
# wakers: a sender holding a stale SendPort of a closed bounded port may
# still drain one, which a port's waker must never suffer (its receiver
# would miss a wake-up), while the senders of the bounded port that owns it
# next merely look again a little later (_ports._SPACE_LOOK).

_free_spaces: list[int] = []
_shared_spaces_qid = -1  # as _shared_free_qid, for room wakers


def space_new() -> int:
    """A room waker from this interpreter's free list, the process's, or a fresh one."""
    if _free_spaces:
        return _free_spaces.pop()
    if _shared_spaces_qid >= 0:
        try:
            item = queue_get(_shared_spaces_qid)
        except QueueNotFoundError:
            item = EMPTY
        if item is not EMPTY:
            fd: int = item  # type: ignore[assignment]
            return fd
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def space_free(fd: int) -> None:
    """Give a room waker back for reuse (not drained: a wake-up left in it
    only makes a sender of its next port look once more)."""
    if _owns_shared_free and len(_free_spaces) >= _LOCAL_FREE:
        queue_put(_shared_spaces_qid, fd)
    else:
        _free_spaces.append(fd)


def spaces_take_free() -> list[int]:
    """Hand this interpreter's free room wakers to another (at isolate exit)."""
    taken = _free_spaces[:]
    _free_spaces.clear()
    return taken


# Signals the kernel sends to the process, which it may hand to any thread
# that does not block them. CPython runs their Python handlers in the main
# thread, and a main thread blocked in a C call (a poll) sees one only if the
# kernel chose it: handed to another thread, a Ctrl-C was never seen.
_PROCESS_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM")


def start_thread(thread: Any) -> None:
    """Start ``thread`` (a library thread) with the process's signals blocked
    in it and in every thread it starts, isolates included: the kernel then
    hands them to the main thread, which handles them."""
    import signal

    if not hasattr(signal, "pthread_sigmask"):
        thread.start()
        return
    blocked = {getattr(signal, name) for name in _PROCESS_SIGNALS if hasattr(signal, name)}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        thread.start()  # (it inherits this thread's mask)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def give_back_freed_memory() -> None:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``).

    A backlog of messages leaves its queue nodes' memory (about 100 bytes a
    message, malloc'd by the sending thread, freed by the receiver) in free
    chunks that glibc keeps: 30 MiB after 300,000 messages, given back by
    one trim in ~5 ms (3.14.10, 3.15.2). Elsewhere (no glibc) it does nothing.
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (ImportError, OSError, AttributeError):  # not glibc: nothing to give back
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim: Any = None  # glibc's malloc_trim, once looked up; False where absent


def wake(wfd: int) -> None:
    try:
        os.write(wfd, _ONE)
    except (BlockingIOError, OSError):
        pass  # a full pipe or a saturated eventfd is readable already


def waker_drain(rfd: int) -> None:
    try:
        while os.read(rfd, 4096):
            if _HAS_EVENTFD:
                break
    except (BlockingIOError, OSError):
        pass


def wait_readable(fds: list[int], timeout: float | None) -> list[int]:
    """Block until one of ``fds`` is readable or ``timeout`` seconds pass.

    poll, not select: select cannot watch fd numbers past 1024, and a process
    with a thousand isolates has more fds than that.
    """
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    ms = None if timeout is None else max(0, int(timeout * 1000 + 0.999))
    return [fd for fd, _ in poller.poll(ms)]
