"""Ports: ``ReceivePort``, ``RawReceivePort`` and ``SendPort``.

Thread rule (who may touch what):

- ``SendPort.send`` / ``_deliver``, and the receive fast path (looking at the
  queue, spinning on it): any thread, no lock. The queue is CPython's and
  hands each item to exactly one taker.
- A port's lifecycle state (``_closed``, ``_holders``, ``_waker``,
  ``_keepalive``, which loops watch it, ``_handler_loop``): any thread, under
  the port's ``_lock``, which only slow paths take (parking, close, listen,
  keep-alive, loop watch), never once per message.
- What an asyncio loop owns (its reader on the waker, its list of awaiting
  futures in ``_loops``): that loop's thread only. Any number of loops, on
  their threads, may await one port. Another thread posts with
  ``call_soon_threadsafe``; a loop that is not running has no owner at that
  moment and is handled in place (a closed one is not touched at all).
- The dispatcher's set of listened ports: under the dispatcher's lock;
  handlers run on the dispatcher's thread (or the port's loop).
- The waker: whoever may read or drain it holds it (a receiver parked on
  it, the loop watching it, a dispatcher turn polling it). Only holders
  drain it; the last holder to let go of a closed port recycles it, exactly
  once (taken under the lock). Draining may take a wake-up meant for
  another holder, so a holder that leaves while the port is closed, or
  while messages wait, wakes the others again.
- The fd gate (``_fd_gate``): one token, a byte in a pipe, for the whole process. A put of an
  item that carries file descriptors holds it, and so does the last drain
  and destroy of a closed port's queue: no such item lands in between, where
  the destroy would free it with its descriptors still open.

A port is a cross-interpreter queue plus a wake-up fd. ``send`` puts an
encoded message on the queue and writes the fd; a receiver first spins on the
queue for a few microseconds (a hot ping-pong never sleeps), then parks on the
fd with poll. asyncio watches the same fd with ``add_reader``.

Handlers given to ``listen`` run on the owning isolate's event loop: the
running asyncio loop when there is one, else this interpreter's dispatcher
(the isolate's own loop once its entry returns; a daemon thread in the main
interpreter).
"""

from __future__ import annotations

import _thread
import os
import sys
import time
from _collections import deque  # type: ignore[import-not-found]

from . import _backend
from ._backend import EMPTY, queue_get
from ._exceptions import NotSendableError, PortClosedError, report_uncaught
from ._wire import PLAIN, decode, encode, mark_sent, register_send_port, release_item

TYPE_CHECKING = False  # typing costs an import in every fresh isolate
if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from typing import Any, ClassVar

__all__ = ("RawReceivePort", "ReceivePort", "SendPort")

_perf_counter = time.perf_counter
_yield = getattr(os, "sched_yield", lambda: time.sleep(0))
_SPIN_MIN = 2e-6
_SPIN_MAX = 100e-6
_NEVER = 1 << 62  # a count never reached

#: Items an interpreter may have on queues, or taken and not yet released,
#: that need a release: CPython keeps 300 of its pending calls toward an
#: interpreter and drops the rest, and other code of the process may need
#: some (see _mailbag).
WINDOW = 200


class _Process:
    """Process-wide ids every interpreter learns at start-up."""

    hub_wfd: int = -1  # wakes the main interpreter's hub (reaping, spawning)
    hub_qid: int = -1  # the hub's queue, in isolates
    # Non-empty while the hub waits to hear of queues that drain or go: one
    # token per exited isolate waiting to be destroyed, and one per settle().
    zombie_qid: int = -1
    reaper_qid: int = -1  # the reaper's queue (_reaper.py), while it runs
    reaper_wfd: int = -1
    fd_gate: tuple[int, int] = (-1, -1)  # see _fd_gate; isolates learn it at start
    # In the main interpreter: the queues posted to the reaper that may still
    # exist. The hub waits for them to be gone (see _exited.Zombie.received).
    reaping: ClassVar[set[int]] = set()
    reaping_limit = 64  # prune it when it grows to this (see _prune_reaping)


class _Local:
    """This interpreter's port state."""

    sent_to: ClassVar[set[int]] = set()  # queues this interpreter put items on
    ports: ClassVar[dict[int, _Port]] = {}  # open ports by queue id
    interrupt_fd: int = -1  # readable when this isolate is being killed
    on_interrupt: Callable[[], None] | None = None
    # In an isolate: keep a kill from landing in library code that must not
    # be cut (shield() is True if unshield() must follow; unshield raises
    # the kill that waited), and run a port's handler as user code.
    shield: Callable[[], bool] | None = None
    unshield: Callable[[], None] | None = None
    run_handler: Callable[[Callable[[Any], object], Any], object] | None = None
    dispatcher: _Dispatcher | None = None
    keepalive = 0  # open ports that keep the isolate alive
    keepalive_changed: Callable[[], None] | None = None
    report_error: Callable[[BaseException], None] | None = None
    before_event: Callable[[], bool] | None = None  # False: stop dispatching
    # The main interpreter runs user threads beside ours; an isolate's own
    # thread has its GIL to itself (its control thread is parked).
    runtime_threads_shared = True


def _library[F: Callable[..., Any]](method: F) -> F:
    """Mark a port method that takes a lock as library code: a kill raised
    into the isolate's thread waits until it returns (landing inside, it
    would leave the lock held, and the isolate could never close its ports)."""

    def protected(*args: Any, **kwargs: Any) -> Any:
        shield = _Local.shield
        if shield is None or not shield():
            return method(*args, **kwargs)
        try:
            return method(*args, **kwargs)
        finally:
            _Local.unshield()  # type: ignore[misc]

    protected.__name__ = method.__name__
    protected.__doc__ = method.__doc__
    return protected  # type: ignore[return-value]


def _deliver(qid: int, wfd: int, item: tuple[Any, ...], watchers: int = -1) -> bool:
    """Put ``item`` on queue ``qid`` and write its waker ``wfd``; with a
    ``watchers`` queue, write it only if that holds a token (see _watched).
    False if the port is closed (the item is dropped)."""
    # Noted before the put: an exited isolate is destroyed only once what it
    # put is received, and a kill may end this one right after the put.
    _Local.sent_to.add(qid)
    if len(item) > 3 and _Local.shield is not None and _Local.shield():
        # Buffers change hands between the put and mark_sent: a kill must
        # not land in between, or the sender's copy closes what was sent.
        try:
            put = _put(qid, item)
            if put and _watched(watchers):
                _backend.wake(wfd)
        finally:
            _Local.unshield()  # type: ignore[misc]
        return put
    if not _put(qid, item):
        return False
    if _watched(watchers):
        _backend.wake(wfd)
    return True


def _watched(watchers: int) -> bool:
    """Whether a receiver may wait on the waker: always, unless the port's
    receivers keep a ``watchers`` queue, with a token in it for each that
    waits on the waker (or may, from the look that comes before its wait).

    Writing a waker that nobody polls costs a system call; one that a
    thread polls wakes it, also when it has nothing to do. With a watchers
    queue no wake-up is lost: the receiver puts its token before it looks
    at the port a last time and then waits; the sender puts its item before
    it counts the tokens. Both are operations on queues under their mutexes,
    so either the receiver's look sees the item, or the sender sees the
    token and writes the waker.
    """
    return watchers < 0 or not _backend.queue_empty(watchers)  # (gone: write it)


# -- the window (see _mailbag) -------------------------------------------------
#
# This interpreter's tokens: one is taken for every item it puts that needs a
# release (every encoded message is a tuple), and given back once CPython has
# released it here. A put with no token to take goes out of band. The items
# put are kept in ``_in_flight``, fresh tuples nothing else refers to: while
# the queue, or a receiver's release on its way here, holds one, its
# reference count says so. Taking a token and giving one back are atomic
# (list.pop, list.append): with any number of sending threads, at most
# WINDOW releases of ours are in flight toward this interpreter; a token lost
# to an interruption only narrows the window.

_tokens: list[None] = [None] * WINDOW
_in_flight: deque[tuple[Any, ...]] = deque()
_getrefcount = sys.getrefcount


def _oldest(in_flight: deque[tuple[Any, ...]]) -> tuple[tuple[Any, ...], int]:
    """Take the oldest item in flight, with its reference count. The one
    place that counts: what ``getrefcount`` says of an object depends on
    the code around it (3.14 borrows references where it can), so the
    count of an item nothing holds is measured with this same code."""
    wire = in_flight.popleft()
    return wire, _getrefcount(wire)


_HELD_BY_A_LOCAL = _oldest(deque([tuple([0, 0])]))[1]


def _released() -> None:
    """Give back the tokens of the items CPython has released, looking from
    the oldest up to the first one still held, which goes to the back: an
    item that stays held (on a port nobody reads) never hides the others.
    Amortized O(1) a put: each look frees a token or moves one item."""
    in_flight = _in_flight
    while in_flight:
        try:
            wire, count = _oldest(in_flight)
        except IndexError:  # another thread took the last
            return
        if count > _HELD_BY_A_LOCAL:  # still held by the queue or a release
            in_flight.append(wire)
            return
        _tokens.append(None)


_SWEEP_EVERY = 32  # puts out of band between two sweeps that freed nothing
_unswept = [0]


def _sweep() -> bool:
    """Look at every item in flight (the window is full); True if a token
    is free after. After a sweep that freed nothing (a stream outruns its
    receiver), the next waits ``_SWEEP_EVERY`` puts: a sweep costs a look at
    each of the WINDOW items."""
    if _unswept[0]:
        _unswept[0] -= 1
        return False
    for _ in range(len(_in_flight)):
        try:
            wire, count = _oldest(_in_flight)
        except IndexError:
            break
        if count > _HELD_BY_A_LOCAL:
            _in_flight.append(wire)
        else:
            _tokens.append(None)
    if not _tokens:
        _unswept[0] = _SWEEP_EVERY
        return False
    return True


def _put(qid: int, item: tuple[Any, ...], gated: bool = False) -> bool:
    """Put ``item`` on the queue with a token of the window, or out of band
    if none is free; False if the port is closed (it is dropped). One that
    carries descriptors goes through the fd gate (``gated``: it holds it).

    The token goes with the item's wire into ``_in_flight`` before the put,
    and comes back once nothing but ``_in_flight`` holds the wire: at once
    if it was never put (a full or closed port, an interruption), after
    CPython's release if it was. (An interruption between taking the token
    and tracking the wire, which only the main thread sees, loses it: the
    window narrows.)

    Raises:
        QueueFull: a bounded port is full (nothing was put).
    """
    if not gated and len(item) > 2 and item[2]:
        return _through_gate(_put, qid, item, True)
    if _tokens:
        if _in_flight:
            _released()
    elif not _sweep():  # (every _SWEEP_EVERY puts while the window stays full)
        return _put_out_of_band(qid, item)
    try:
        _tokens.pop()
    except IndexError:  # another thread took the last
        return _put_out_of_band(qid, item)
    # A fresh tuple, that only the queue and _in_flight refer to. It holds
    # the token from here on: whatever cuts the put short, its reference
    # count says whether it was put (see _released).
    wire = (item[0], item[1]) if len(item) == 2 else (item[0], item[1], item[2])
    _in_flight.append(wire)
    try:
        _queue_put(qid, wire)
    except _backend.QueueNotFoundError:
        release_item(item)  # dropped, as in Dart
        mark_sent(item)
        return False
    if len(item) > 3:
        mark_sent(item)
    if _mailbag is not None and _mailbag.untidy():
        held = hold_interrupts()  # segments a stream filled and its receiver emptied
        try:
            _mailbag.tidy()
        finally:
            held.release()
    return True


_queue_put = _backend.queue_put


def _put_out_of_band(qid: int, item: tuple[Any, ...]) -> bool:
    """Past the window: write ``item`` to this interpreter's mailbag and put
    the int that names it. (One that lands after the last drain of a
    closing port is an orphan, which the mailbag consumes later; one that
    carries descriptors goes through the fd gate, as in the window.)

    A Ctrl-C in the main thread between the write and the put (the only
    interruption that can land in library code) leaves a record that
    nobody will take: it is consumed as an orphan once its port closes.
    """
    global _mailbag
    if _mailbag is None:
        from . import _mailbag
    key = _mailbag.write((item[0], item[1], item[2]) if len(item) > 2 else (item[0], item[1]), qid)
    try:
        _backend.queue_put(qid, key)
    except _backend.QueueNotFoundError:
        _mailbag.unwrite(key)
        release_item(item)  # dropped, as in Dart
        mark_sent(item)
        return False
    except BaseException:  # a full bounded port (or a Ctrl-C): nothing was put
        _mailbag.unwrite(key)
        raise
    mark_sent(item)
    return True


_mailbag: Any = None  # the module, once this interpreter sent or took out of band


def get_item(qid: int) -> object:
    """The next item of a message queue, or EMPTY; an out-of-band one is
    read from its sender's mailbag (and consumed there).

    Raises:
        QueueNotFoundError: the queue is gone.
    """
    item = queue_get(qid)
    if type(item) is int:
        return _take_out_of_band(item)
    return item


def _take_out_of_band(key: int) -> object:
    global _mailbag
    if _mailbag is None:
        from . import _mailbag
    try:
        item: tuple[Any, ...] = _mailbag.take(key)
    except LookupError:  # dropped: its port was closed as it came
        return EMPTY
    return item  # (the hub looks at an exited sender's records now and then)


DESTROY = "destroy"  # to the hub: (PLAIN, (DESTROY, qid)), a queue for the reaper


def _destroy_queue(qid: int) -> None:
    """Destroy a drained queue that other threads may still be putting to.

    The reaper does it when there is one: destroying it here could freeze
    the process (see _reaper.py). An isolate posts it through the hub, like
    a message: the hub counts what it takes off its queue, so an isolate that
    exits right after waits only for the hub to take the post (the reaper's
    queue, which others keep busy, then holds nothing of isolates).
    """
    hub = _Process.hub_qid
    if hub >= 0:
        _Local.sent_to.add(hub)  # before the put, as in _deliver
        if _put(hub, (PLAIN, (DESTROY, qid))):
            _backend.wake(_Process.hub_wfd)
            return
    reaper = _Process.reaper_qid
    if reaper >= 0:
        _Local.sent_to.add(reaper)
        _Process.reaping.add(qid)  # before the put: the hub must not see it done early
        if len(_Process.reaping) >= _Process.reaping_limit:
            _prune_reaping()
            _Process.reaping_limit = max(64, 2 * len(_Process.reaping))
        try:
            _backend.queue_put(reaper, qid)  # (an int: it needs no release)
        except _backend.QueueNotFoundError:
            pass  # the reaper stopped meanwhile
        else:
            _backend.wake(_Process.reaper_wfd)
            return
    _through_gate(_drain_and_destroy, qid)
    _drained()


def _drain(qid: int) -> None:
    """Drop what waits on a closed port's queue: as many items as it held
    when this began (senders may outpace a drain that waits for the end;
    what lands later goes with the queue, see _drain_and_destroy)."""
    try:
        waiting = _backend.queue_count(qid)
    except _backend.QueueNotFoundError:
        return
    for _ in range(waiting):
        item = queue_get(qid)
        if item is EMPTY:
            return
        release_item(item)  # type: ignore[arg-type]


def _drain_and_destroy(qid: int) -> None:
    """The last drain and the destroy of a closed port's queue, through the
    fd gate (see _fd_gate): no item that carries descriptors lands after
    the drain. One that lands then holds nothing to close: CPython frees a
    tuple with the queue, and an out-of-band record becomes an orphan,
    which its sender's mailbag consumes (see _mailbag)."""
    _drain(qid)
    _backend.queue_destroy(qid)


_gate_made = _thread.allocate_lock()
_GATE_NOTICE_SECONDS = 5.0  # no holder keeps the gate for more than microseconds


def _fd_gate() -> tuple[int, int]:
    """The process's fd gate: a pipe that holds one byte, the token, while
    nobody puts an item that carries descriptors or destroys a closed
    port's queue.

    CPython frees what a destroyed queue still holds, but not the memfds
    an item names; a put that lands after the destroyer's last drain would
    leave them open for good. The main interpreter makes the gate the first
    time it needs it; isolates and the reaper learn it at start. (A pipe,
    not a queue: CPython drops a queued item with the interpreter that put
    it, and a token given back by an isolate would vanish with it.)

    It never holds two tokens, and never loses its one: a holder gives the
    token back in a ``finally``, and nothing can cut a holder short in
    between. In an isolate a kill never lands in library code (see
    ``Runtime._kill_callback``), and in the main thread a Ctrl-C waits until
    the token is back (``hold_interrupts``)."""
    if _Process.fd_gate[0] < 0:
        with _gate_made:
            if _Process.fd_gate[0] < 0:
                rfd, wfd = os.pipe()
                os.write(wfd, b"t")
                _Process.fd_gate = (rfd, wfd)
    return _Process.fd_gate


def _through_gate[R](step: Callable[..., R], *args: Any) -> R:
    """``step(*args)`` holding the fd gate's token."""
    held = hold_interrupts()
    try:
        gate = _take_gate()
        try:
            return step(*args)
        finally:
            os.write(gate[1], b"t")
    finally:
        held.release()  # a Ctrl-C that came meanwhile is raised now


def _take_gate() -> tuple[int, int]:
    """Take the fd gate's token, waiting while another holds it; the gate
    (to give the token back to). Holders keep it for microseconds: one
    that keeps it for seconds is said once, and waited for."""
    gate = _fd_gate()
    if not _backend.wait_readable([gate[0]], _GATE_NOTICE_SECONDS):
        import logging

        logging.getLogger("subiso").warning(
            "waiting %.0f s for the fd gate, which holders keep for microseconds",
            _GATE_NOTICE_SECONDS,
        )
    os.read(gate[0], 1)  # (blocks while a quicker taker holds it)
    return gate


class _HeldInterrupts:
    """Ctrl-Cs that came while the main thread held something it must give
    back: raised by ``release``, as the handler that was there raises them."""

    __slots__ = ("caught", "previous")

    def __init__(self, previous: Any) -> None:
        self.previous = previous
        self.caught: list[Any] = []

    def _caught(self, signum: int, frame: Any) -> None:
        self.caught.append(frame)

    def release(self) -> None:
        previous = self.previous
        if previous is None:
            return
        import signal

        signal.signal(signal.SIGINT, previous)
        if self.caught:
            previous(signal.SIGINT, self.caught[0])


_NOTHING_HELD = _HeldInterrupts(None)
_MAIN_THREAD = _thread._get_main_thread_ident()  # type: ignore[attr-defined]


def hold_interrupts() -> _HeldInterrupts:
    """In the main thread of the main interpreter: let a Ctrl-C wait until
    ``release`` (it would otherwise land at any bytecode). Elsewhere no
    signal handler runs, and this holds nothing."""
    if _thread.get_ident() != _MAIN_THREAD or _Local.shield is not None:
        return _NOTHING_HELD  # (not the main thread, or an isolate's)
    import signal

    previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):
        return _NOTHING_HELD  # ignored, or the default (the OS ends the process)
    held = _HeldInterrupts(previous)
    try:
        signal.signal(signal.SIGINT, held._caught)
    except ValueError:  # not the main interpreter's main thread after all
        return _NOTHING_HELD
    return held


def _prune_reaping() -> int:
    """Forget the queues the reaper has destroyed (other threads add
    meanwhile); how many."""
    gone = 0
    for qid in list(_Process.reaping):
        if not _backend.queue_exists(qid):
            _Process.reaping.discard(qid)
            gone += 1
    return gone


def _interruptible(fds: list[int]) -> list[int]:
    """``fds`` and, in an isolate, its interrupt fd: a kill ends the wait."""
    if _Local.interrupt_fd >= 0:
        fds.append(_Local.interrupt_fd)
    return fds


def _heed_interrupt(ready: list[int]) -> None:
    """After a wait on _interruptible fds: if a kill ended it, raise it here
    (on the isolate's own thread; see Runtime._on_interrupt)."""
    if _Local.interrupt_fd in ready and _Local.on_interrupt is not None:
        _Local.on_interrupt()


def _drained() -> None:
    """A queue just emptied (or closed): an exited isolate that sent to it
    may be waiting for that before the hub destroys its interpreter."""
    if _Process.zombie_qid >= 0 and _backend.queue_count(_Process.zombie_qid):
        _backend.wake(_Process.hub_wfd)


class SendPort:
    """The sending end of a port; cheap, hashable, sendable anywhere in the process.

    Two SendPorts to the same port compare equal, also after travelling
    through other isolates.
    """

    __slots__ = ("_qid", "_space", "_wfd")

    def __init__(self, qid: int, wfd: int, space: int = -1) -> None:
        self._qid = qid
        self._wfd = wfd
        self._space = space  # a bounded port's: readable when a message was taken

    def _fields(self) -> tuple[int, ...]:
        """What it is rebuilt from, anywhere in the process."""
        return (self._qid, self._wfd) if self._space < 0 else (self._qid, self._wfd, self._space)

    def send(self, message: object, timeout: float | None = None) -> None:
        """Send ``message``. To an unbounded port it never blocks; to a port
        made with ``maxsize``, it waits while the port holds that many
        unreceived messages. Dropped silently if the port is closed.

        Raises:
            NotSendableError: naming the part of ``message`` that cannot cross;
                nothing was sent.
            TimeoutError: the bounded port stayed full ``timeout`` seconds.
        """
        item = encode(message)
        if self._space < 0:
            _deliver(self._qid, self._wfd, item)
            return
        deadline = None if timeout is None else _perf_counter() + timeout
        while True:
            try:
                _deliver(self._qid, self._wfd, item)
                return
            except _backend.QueueFullError:
                self._wait_for_space(deadline, timeout)

    def _wait_for_space(self, deadline: float | None, timeout: float | None) -> None:
        """Wait until a message was taken off this bounded port (or a while:
        another sender may have drained the wake-up meant for this one).

        Raises:
            TimeoutError: ``deadline`` passed.
        """
        step = _SPACE_LOOK
        if deadline is not None:
            step = min(step, deadline - _perf_counter())
            if step <= 0:
                raise TimeoutError(f"{self!r} stayed full for {timeout} s")
        ready = _backend.wait_readable(_interruptible([self._space]), step)
        _heed_interrupt(ready)
        _backend.waker_drain(self._space)

    async def send_async(self, message: object, timeout: float | None = None) -> None:
        """``send`` for asyncio: waits for room on a bounded port without
        blocking the event loop.

        Raises:
            NotSendableError: naming the part of ``message`` that cannot cross.
            TimeoutError: the bounded port stayed full ``timeout`` seconds.
        """
        item = encode(message)
        if self._space < 0:
            _deliver(self._qid, self._wfd, item)
            return
        import asyncio

        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            try:
                _deliver(self._qid, self._wfd, item)
                return
            except _backend.QueueFullError:
                step = _SPACE_LOOK
                if deadline is not None:
                    step = min(step, deadline - loop.time())
                    if step <= 0:
                        raise TimeoutError(f"{self!r} stayed full for {timeout} s") from None
                await _space_on(loop, self._space, step)

    def _send_item(self, item: tuple[Any, ...]) -> bool:
        """Send an encoded item, never waiting; False if it was dropped: the
        port is closed, or a bounded port is full (the library's own
        notices to a port of the user's, such as an exit, never wait)."""
        try:
            return _deliver(self._qid, self._wfd, item)
        except _backend.QueueFullError:
            release_item(item)
            mark_sent(item)
            return False

    def _notify(self, message: object) -> bool:
        """``send`` for the library's notices (an exit, an error, a ping's
        answer): never waits; dropped if a bounded port is full.

        Raises:
            NotSendableError: as ``send``.
        """
        return self._send_item(encode(message))

    def __eq__(self, other: object) -> bool:
        return type(other) is SendPort and other._qid == self._qid

    def __hash__(self) -> int:
        return hash((SendPort, self._qid))

    def __repr__(self) -> str:
        return f"<SendPort {self._qid}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (SendPort, self._fields())


register_send_port(SendPort)

# Seconds a sender waiting for room on a bounded port waits before it looks again.
_SPACE_LOOK = 0.05


async def _space_on(loop: Any, fd: int, timeout: float) -> None:
    """Until ``fd`` (a bounded port's room waker) is readable, or ``timeout``
    passes, on ``loop`` (its thread). One reader per fd and loop serves every
    sender of that loop that waits (``_space_waiters``, the loop's own)."""
    import asyncio

    key = (id(loop), fd)
    waiters = _space_waiters.get(key)
    if waiters is None:
        waiters = _space_waiters[key] = []

        def readable() -> None:
            _backend.waker_drain(fd)
            for future in _space_waiters.pop(key, ()):
                if not future.done():
                    future.set_result(None)
            loop.remove_reader(fd)

        loop.add_reader(fd, readable)
    future = loop.create_future()
    waiters.append(future)
    try:
        await asyncio.wait_for(future, timeout)
    except TimeoutError:
        pass
    finally:
        if future in waiters:
            waiters.remove(future)
        if not waiters and _space_waiters.get(key) is waiters:
            del _space_waiters[key]
            loop.remove_reader(fd)


_space_waiters: dict[tuple[int, int], list[Any]] = {}


class _Port:
    """The mechanics shared by ReceivePort and RawReceivePort."""

    def __init__(self, debug_name: str | None, maxsize: int = 0) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be 0 (unbounded) or more, not {maxsize}")
        self._lock = _thread.allocate_lock()
        self.debug_name = debug_name
        self.maxsize = maxsize
        self._qid = _backend.queue_create(maxsize)
        # A bounded port's room waker, written after each take (see SendPort.send).
        self._space = _backend.space_new() if maxsize else -1
        self._rfd, self._wfd = self._waker = _backend.waker_new()
        self._closed = False
        self._holders = 0  # parked receivers, the watching loop, dispatcher turns
        self._spin = _SPIN_MIN
        self._spin_max = _SPIN_MAX  # 0 for a receiver that must never spin
        self._handler: Callable[[Any], object] | None = None
        self._keepalive = False
        # Takes begun and takes done (each a look at the queue, found or not):
        # the hub reaps an exited isolate that sent here once ``taken``
        # reaches its ticket (_exited.Zombie), and sets wake_at to hear of it.
        self.started = 0
        self.taken = 0
        self.wake_at = _NEVER
        # The asyncio loops watching this port, each with its awaiting
        # futures (a list owned by that loop's thread).
        self._loops: dict[Any, list[Any]] = {}
        self._handler_loop: Any = None  # the loop that runs the handler, if one does
        _Local.ports[self._qid] = self

    @property
    def send_port(self) -> SendPort:
        return SendPort(self._qid, self._wfd, self._space)

    def _get(self) -> object:
        # Counted before and after: an item that left the queue is in
        # ``started`` already, where the hub's ticket counts it (_exited.Zombie).
        self.started += 1
        try:
            item = get_item(self._qid)
        except _backend.QueueNotFoundError:  # closed by another thread meanwhile
            self.taken += 1
            raise PortClosedError(f"{self!r} is closed") from None
        self.taken = taken = self.taken + 1
        if item is not EMPTY:
            if self._space >= 0:
                _backend.wake(self._space)  # room for a waiting sender
            if taken >= self.wake_at:
                self.wake_at = _NEVER  # the hub sets it again if it still waits
                _drained()
            elif not _backend.queue_count(self._qid):
                _drained()
        elif taken >= self.wake_at:
            self.wake_at = _NEVER
            _drained()
        return item

    # -- holding the waker ------------------------------------------------------

    @_library
    def _hold(self) -> bool:
        """Become a holder of the waker; False if the port is closed."""
        with self._lock:
            if self._closed:
                return False
            self._holders += 1
            return True

    @_library
    def _release(self, receiver: bool = False) -> None:
        """Stop holding the waker; the last holder of a closed port recycles it.

        A holder may have drained a wake-up meant for another: when others
        still hold it, the close (or, for a ``receiver``, a waiting message)
        is passed on with a fresh one.
        """
        waker = None
        with self._lock:
            self._holders -= 1
            if self._closed:
                if self._holders:
                    _backend.wake(self._wfd)
                else:
                    waker, self._waker = self._waker, None  # type: ignore[assignment]
            elif receiver and self._holders and _backend.queue_count(self._qid):
                _backend.wake(self._wfd)
        if waker is not None:
            _backend.waker_free(waker)

    # -- blocking receive -------------------------------------------------------

    def _receive_item(self, timeout: float | None) -> tuple[Any, ...]:
        deadline = None if timeout is None else _perf_counter() + timeout
        while True:
            if self._closed:
                raise PortClosedError(f"{self!r} is closed")
            item = self._get()
            if item is not EMPTY:
                return item  # type: ignore[return-value]
            item = self._spin_get()
            if item is not EMPTY:
                return item  # type: ignore[return-value]
            remaining = None
            parked = _perf_counter()
            if deadline is not None:
                remaining = deadline - parked
                if remaining <= 0:
                    raise TimeoutError(f"nothing arrived on {self!r} within {timeout} s")
            item = self._park(remaining)
            if item is not EMPTY:
                return item  # type: ignore[return-value]
            self._adapt_spin(_perf_counter() - parked)

    def _spin_get(self, look: Callable[[], object] | None = None) -> object:
        """Look at the queue for up to ``self._spin`` seconds: take an item,
        or what ``look()`` returns if not EMPTY (for a receiver that takes
        under a lock of its own: it only looks).

        In an interpreter with other threads it yields the GIL every few looks
        (``sched_yield``): a spinning receiver must not keep them from running.
        """
        end = _perf_counter() + self._spin
        get = look or self._get
        every = 32 if _Local.runtime_threads_shared else 0
        turns = 0
        while _perf_counter() < end:
            item = get()
            if item is not EMPTY:
                return item
            turns += 1
            if turns == every:
                turns = 0
                _yield()  # releases the GIL: another thread may take it
        return EMPTY

    def _adapt_spin(self, parked_for: float) -> None:
        """Spin next time about as long as this wait lasted, if that was short:
        a message that comes back within microseconds is caught without
        parking; a port that stays quiet stops costing CPU."""
        if parked_for < self._spin_max:
            self._spin = min(self._spin_max, max(self._spin, parked_for * 2))
        else:
            self._spin = min(self._spin_max, max(_SPIN_MIN, self._spin / 4))

    @_library
    def _park(self, timeout: float | None) -> object:
        """Wait on the waker until something may have happened; return an item
        found on the last look before waiting, else EMPTY.

        The receiver holds the waker before that last look: a close or a send
        after it writes the fd, which the wait then sees.

        Raises:
            PortClosedError: the port is closed.
        """
        with self._lock:  # self._hold(), inlined: this is once per wait
            if self._closed:
                raise PortClosedError(f"{self!r} is closed")
            self._holders += 1
        try:
            _backend.waker_drain(self._rfd)
            if self._closed:  # its wake-up may be the one just drained
                raise PortClosedError(f"{self!r} is closed")
            item = self._get()
            if item is not EMPTY:
                return item
            ready = _backend.wait_readable(_interruptible([self._rfd]), timeout)
        finally:
            self._release(receiver=True)
        _heed_interrupt(ready)
        return EMPTY

    @_library
    def _wait(
        self,
        timeout: float | None,
        bell: int = -1,
        ready: Callable[[], bool] | None = None,
        *,
        interruptible: bool = False,
    ) -> None:
        """Park until an item may wait, ``ready()`` may be true, or ``timeout``
        passes; take nothing. For receivers that take under a lock of their
        own (a pool's results), each with a waker of its own, ``bell`` (its
        read end): whoever makes ``ready()`` true rings it. (The port's waker
        cannot carry that: another holder may drain it and see nothing to do.)
        Without them, it waits for an item only (or the close).
        ``interruptible``: a kill of this isolate ends the wait, as a receive's.

        Raises:
            PortClosedError: the port is closed.
        """
        if not self._hold():
            raise PortClosedError(f"{self!r} is closed")
        ready_fds: list[int] = []
        try:
            _backend.waker_drain(self._rfd)
            if bell >= 0:
                _backend.waker_drain(bell)
            if self._closed:
                raise PortClosedError(f"{self!r} is closed")
            if (ready is not None and ready()) or _backend.queue_count(self._qid):
                return
            fds = [self._rfd] if bell < 0 else [self._rfd, bell]
            ready_fds = _backend.wait_readable(
                _interruptible(fds) if interruptible else fds, timeout
            )
        finally:
            self._release(receiver=True)
        _heed_interrupt(ready_fds)

    def _poll_item(self) -> object:
        """The next item if one is waiting, else EMPTY; never blocks."""
        if self._closed:
            return EMPTY
        return self._get()

    # -- asyncio: the loop's own thread -----------------------------------------

    @_library
    def _take(self) -> object:
        """The next message, decoded, if one waits, else EMPTY. Library code:
        a kill waits from taking the message to holding it (see receive)."""
        item = self._get()
        return item if item is EMPTY else decode(item)  # type: ignore[arg-type]

    async def _receive_item_async(
        self, timeout: float | None, take: Callable[[], object] | None = None
    ) -> Any:
        """Await the next item, as it came off the queue, or as ``take()``
        returns it (``self._take``: the next message)."""
        import asyncio

        take = take or self._get
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._closed:
                raise PortClosedError(f"{self!r} is closed")
            item = take()
            if item is not EMPTY:
                return item
            waiter = loop.create_future()
            waiters = self._watch(loop)
            waiters.append(waiter)
            try:
                item = take()  # it may have arrived before the reader was set
                if item is not EMPTY:
                    return item
                if deadline is None:
                    await waiter
                else:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise TimeoutError(f"nothing arrived on {self!r} within {timeout} s")
                    try:
                        await asyncio.wait_for(waiter, remaining)
                    except TimeoutError:
                        pass  # the next turn looks at the queue once more, then gives up
            finally:
                if waiter in waiters:
                    waiters.remove(waiter)
                self._unwatch_if_idle(loop)

    @_library
    def _watch(self, loop: Any) -> list[Any]:
        """Let ``loop`` (running on this thread) watch the waker; its list of
        awaiting futures.

        Raises:
            PortClosedError: the port is closed.
        """
        with self._lock:
            if self._closed:
                raise PortClosedError(f"{self!r} is closed")
            waiters = self._loops.get(loop)
            if waiters is not None:
                return waiters
            self._loops[loop] = waiters = []
            self._holders += 1
        loop.add_reader(self._rfd, self._on_readable, loop)
        return waiters

    def _unwatch_if_idle(self, loop: Any) -> None:
        waiters = self._loops.get(loop)
        if waiters or waiters is None:
            return
        if self._handler is not None and self._handler_loop is loop:
            return
        if not self._on_owner(loop, self._unwatch_if_idle, loop):
            return
        self._unwatch(loop)

    @_library
    def _unwatch(self, loop: Any) -> None:
        """Stop ``loop`` watching the waker (on its thread, or it is not running)."""
        with self._lock:
            if self._loops.pop(loop, None) is None:
                return
        if not loop.is_closed():
            loop.remove_reader(self._rfd)
        # Its reader drained the waker for all holders: messages its awaiters
        # left are passed on to the others (other loops, parked threads).
        self._release(receiver=True)

    def _close_on_loop(self, loop: Any) -> None:
        """The part of ``close`` that belongs to ``loop``: wake its awaiters
        (each then sees the close) and stop watching."""
        if not loop.is_closed():
            for waiter in self._loops.get(loop, ()):
                if not waiter.done():
                    waiter.set_result(None)
        self._unwatch(loop)

    @staticmethod
    def _on_owner(loop: Any, callback: Callable[..., object], *args: Any) -> bool:
        """True if the caller may act on ``loop`` now; else ``callback(*args)``
        is posted to the loop's thread (False)."""
        if loop.is_closed() or not loop.is_running() or _running_loop() is loop:
            return True
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # closed meanwhile: nothing of it runs any more
            return True
        return False

    @_library
    def _on_readable(self, loop: Any) -> None:
        _backend.waker_drain(self._rfd)
        for waiter in self._loops.get(loop, ()):
            if not waiter.done():
                waiter.set_result(None)
        if self._handler is not None and self._handler_loop is loop:
            self._dispatch_ready()

    # -- handlers -----------------------------------------------------------------

    @_library
    def _dispatch_ready(self) -> None:
        """Hand every waiting message to the handler (on the owning loop).
        Library code: the handler runs as user code, and a kill waits from
        taking a message to holding it (see ReceivePort.receive)."""
        while self._handler is not None and not self._closed:
            if _Local.before_event is not None and not _Local.before_event():
                return
            try:
                item = self._get()
            except PortClosedError:  # closed by another thread meanwhile
                return
            if item is EMPTY:
                return
            try:
                message = decode(item)  # type: ignore[arg-type]
                handler = self._handler
                if handler is not None:
                    if _Local.run_handler is not None:
                        _Local.run_handler(handler, message)  # as user code
                    else:
                        handler(message)
            except BaseException as error:  # a handler's, to the excepthook; the loop serves on
                _report(error)

    @_library
    def _set_handler(self, handler: Callable[[Any], object] | None, keepalive: bool) -> None:
        running = None if handler is None else _running_loop()
        with self._lock:
            if self._closed:
                raise PortClosedError(f"{self!r} is closed")
            self._handler = handler
            change = self._keepalive_to(keepalive)
            # A loop runs the handler: the one already running it, else this
            # thread's; with none, the dispatcher does.
            old = loop = self._handler_loop
            if handler is None:
                loop = None
            elif loop is None or loop.is_closed():
                loop = running
            self._handler_loop = loop
        _count_keepalive(change)
        if loop is None and handler is not None:
            _dispatcher().add(self)
            return
        if _Local.dispatcher is not None:
            _Local.dispatcher.remove(self)
        if loop is None:
            if old is not None:
                self._unwatch_if_idle(old)
        elif self._on_owner(loop, self._start_handler_on, loop):
            self._start_handler_on(loop)  # it hands over what waits, on its own thread

    def _start_handler_on(self, loop: Any) -> None:
        if self._handler is None or self._handler_loop is not loop or loop.is_closed():
            return
        try:
            self._watch(loop)
        except PortClosedError:
            return
        loop.call_soon(self._dispatch_ready)

    def _keepalive_to(self, keepalive: bool) -> int:
        """Set the flag (under the lock); the change to the count, -1, 0 or 1."""
        if keepalive == self._keepalive:
            return 0
        self._keepalive = keepalive
        return 1 if keepalive else -1

    @_library
    def _set_keepalive(self, keepalive: bool) -> None:
        with self._lock:
            change = 0 if self._closed else self._keepalive_to(keepalive)
        _count_keepalive(change)

    @_library
    def close(self) -> None:
        """Close the port; what was not received yet is dropped. Idempotent."""
        waker = None
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._handler = None
            change = self._keepalive_to(False)
            loops = list(self._loops)
            self._handler_loop = None
            holders = self._holders
            if not holders:
                waker, self._waker = self._waker, None  # type: ignore[assignment]
        _count_keepalive(change)
        _Local.ports.pop(self._qid, None)
        if _Local.dispatcher is not None:
            _Local.dispatcher.remove(self)
        _drain(self._qid)
        _destroy_queue(self._qid)
        if self._space >= 0:
            # Waiting senders look again and find the port closed (one that
            # comes later looks again within _SPACE_LOOK: the waker is
            # recycled as a room waker, see _backend.space_new).
            _backend.wake(self._space)
            _backend.space_free(self._space)
        for loop in loops:
            if self._on_owner(loop, self._close_on_loop, loop):
                self._close_on_loop(loop)
        if holders:
            _backend.wake(self._wfd)  # holders see the close; the last recycles the waker
        elif waker is not None:
            _backend.waker_free(waker)

    @property
    def is_closed(self) -> bool:
        return self._closed

    def __reduce__(self) -> Any:
        raise NotSendableError(
            f"{type(self).__name__} cannot be sent to another isolate; send its send_port"
        )

    def __class_getitem__(cls, item: object) -> type:
        return cls

    def __repr__(self) -> str:
        name = f" {self.debug_name!r}" if self.debug_name else ""
        state = " closed" if self._closed else ""
        return f"<{type(self).__name__}{name} {self._qid}{state}>"


class ReceivePort(_Port):
    """A port that receives messages: block, iterate, await or listen.

    Messages from one sender arrive in the order sent, none lost, none
    duplicated. ``close()`` drops what was not received yet, as in Dart.
    """

    def __init__(self, debug_name: str | None = None, *, maxsize: int = 0) -> None:
        super().__init__(debug_name, maxsize)

    def receive(self, timeout: float | None = None) -> Any:
        """Return the next message, blocking until one arrives.

        Raises:
            PortClosedError: the port is closed (also while waiting).
            TimeoutError: nothing arrived within ``timeout`` seconds.
        """
        # Library code (``_library``, inlined: once per message): in an
        # isolate's thread, a kill waits from taking the message to holding
        # it; one that landed in between would leave the file descriptors of
        # its TransferableBuffers open for good. Waiting still ends at once
        # on a kill (by the interrupt fd).
        shield = _Local.shield
        if shield is None or not shield():
            return decode(self._receive_item(timeout))
        try:
            return decode(self._receive_item(timeout))
        finally:
            _Local.unshield()  # type: ignore[misc]

    async def receive_async(self, timeout: float | None = None) -> Any:
        """Await the next message without blocking the event loop.

        Raises:
            PortClosedError: the port is closed (also while waiting).
            TimeoutError: nothing arrived within ``timeout`` seconds.
        """
        return await self._receive_item_async(timeout, self._take)

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                yield self.receive()
            except PortClosedError:
                return

    async def __aiter__(self) -> AsyncIterator[Any]:
        while True:
            try:
                yield await self.receive_async()
            except PortClosedError:
                return

    def listen(self, handler: Callable[[Any], object]) -> None:
        """Call ``handler(message)`` for every message, on the owning isolate's
        event loop; the port then keeps its isolate alive until closed."""
        self._set_handler(handler, keepalive=True)

    def first(self, timeout: float | None = None) -> Any:
        """Return the next message, then close the port.

        Raises:
            PortClosedError: the port was closed.
            TimeoutError: nothing arrived within ``timeout`` seconds.
        """
        try:
            return self.receive(timeout)
        finally:
            self.close()

    def __enter__(self) -> ReceivePort:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class RawReceivePort(_Port):
    """A port whose messages all go to ``handler`` on the owning event loop.

    Messages wait until a handler is set. While open and
    ``keep_isolate_alive`` is true (the default), it keeps its isolate alive.
    """

    def __init__(
        self, handler: Callable[[Any], object] | None = None, debug_name: str | None = None
    ) -> None:
        super().__init__(debug_name)
        self._set_keepalive(True)
        if handler is not None:
            self._set_handler(handler, keepalive=True)

    @property
    def handler(self) -> Callable[[Any], object] | None:
        return self._handler

    @handler.setter
    def handler(self, handler: Callable[[Any], object] | None) -> None:
        self._set_handler(handler, keepalive=self._keepalive)

    @property
    def keep_isolate_alive(self) -> bool:
        return self._keepalive

    @keep_isolate_alive.setter
    def keep_isolate_alive(self, flag: bool) -> None:
        self._set_keepalive(bool(flag))


def _running_loop() -> Any:
    # Absent while another thread is still importing asyncio; then no loop
    # can be running in this one.
    get_running_loop = getattr(sys.modules.get("asyncio"), "get_running_loop", None)
    if get_running_loop is None:
        return None
    try:
        return get_running_loop()
    except RuntimeError:
        return None


_keepalive_lock = _thread.allocate_lock()


def _count_keepalive(change: int) -> None:
    """Add ``change`` to the open ports that keep this isolate alive."""
    if change:
        with _keepalive_lock:
            _Local.keepalive += change
        if _Local.keepalive_changed is not None:
            _Local.keepalive_changed()


def _report(error: BaseException) -> None:
    """A handler's uncaught error. In an isolate, its runtime decides; on
    the main interpreter's dispatcher thread, any error goes to
    ``subiso.excepthook`` and the dispatcher serves on; on an asyncio loop,
    KeyboardInterrupt and SystemExit stop the loop, as asyncio does with its
    own callbacks."""
    if _Local.report_error is not None:
        _Local.report_error(error)
        return
    dispatcher = _Local.dispatcher
    on_dispatcher = dispatcher is not None and dispatcher._thread == _thread.get_ident()
    if not on_dispatcher and isinstance(error, (KeyboardInterrupt, SystemExit)):
        raise error
    try:
        report_uncaught(error, None, False)
    except BaseException:  # (the hooks themselves failed: say so, serve on)
        if not on_dispatcher:
            raise
        import logging

        logging.getLogger("subiso").exception("a port handler's error could not be reported")


class _Dispatcher:
    """This interpreter's loop for listened ports when no asyncio loop runs them.

    In an isolate it is the isolate's own event loop, turned by its thread
    (``Runtime.serve``). In the main interpreter it runs on a daemon thread
    of its own, ``subiso-port-dispatcher``: the main isolate's event loop
    for ``listen`` handlers, so it runs user code by design, and nothing in
    the library waits on it. Its safety net: a handler's uncaught error
    (any BaseException) goes to ``subiso.excepthook`` and the loop serves
    on; a failure of the loop itself is logged once and breaks it, and
    later ``listen`` calls raise ``BrokenServiceError``.
    """

    def __init__(self) -> None:
        self._ports: dict[int, _Port] = {}
        self._rfd, self._wfd = _backend.waker_new()
        self._started = False
        self._thread = 0  # the ident of its own thread, in the main interpreter
        self._lock = _thread.allocate_lock()
        self.broken: BaseException | None = None

    @_library
    def add(self, port: _Port) -> None:
        if self.broken is not None:
            from ._exceptions import BrokenServiceError

            error = BrokenServiceError("port dispatcher", str(self.broken))
            error.__cause__ = self.broken.__cause__
            raise error
        with self._lock:
            self._ports[port._rfd] = port
        _backend.wake(self._wfd)

    @_library
    def remove(self, port: _Port) -> None:
        with self._lock:
            if self._ports.get(port._rfd) is port:
                del self._ports[port._rfd]
        _backend.wake(self._wfd)

    def wake(self) -> None:
        _backend.wake(self._wfd)

    @_library
    def run_once(self, timeout: float | None) -> None:
        """Wait for port events and dispatch them (the isolate's loop turn)."""
        with self._lock:
            listed = list(self._ports.values())
        # The turn holds each waker it polls and drains: a port closed meanwhile
        # recycles its waker only once the turn has let go of it.
        ports = []
        for port in listed:
            if port._hold():
                ports.append(port)
            else:  # closed while being added
                with self._lock:
                    if self._ports.get(port._rfd) is port:
                        del self._ports[port._rfd]
        try:
            self._turn(ports, timeout)
        finally:
            for port in ports:
                port._release()

    def _turn(self, ports: list[_Port], timeout: float | None) -> None:
        fds = _interruptible([self._rfd] + [port._rfd for port in ports])
        # Messages may be waiting from before the handler was set; but while
        # the isolate is paused they stay waiting, and looking again at once
        # would spin.
        may_dispatch = _Local.before_event is None or _Local.before_event()
        for port in ports if may_dispatch else ():
            if port._handler is not None and _backend.queue_count(port._qid):
                # Messages wait: look without waiting, so that a stray write
                # to the interrupt waker is drained now, not when next idle.
                timeout = 0
                break
        ready = _backend.wait_readable(fds, timeout)
        _heed_interrupt(ready)
        _backend.waker_drain(self._rfd)
        for port in ports:
            _backend.waker_drain(port._rfd)
            port._dispatch_ready()

    def start_thread(self) -> None:
        """Run forever on a daemon thread (the main interpreter's loop)."""
        import threading

        self._started = True
        _backend.start_thread(
            threading.Thread(target=self._forever, name="subiso-port-dispatcher", daemon=True)
        )

    def _forever(self) -> None:
        self._thread = _thread.get_ident()
        try:
            while True:
                self.run_once(None)
        except BaseException as cause:  # the safety net: the loop itself failed
            from ._exceptions import BrokenServiceError

            broken = BrokenServiceError("port dispatcher", f"{type(cause).__name__}: {cause}")
            broken.__cause__ = cause
            self.broken = broken
            import logging

            logging.getLogger("subiso").error(
                "the port dispatcher failed: handlers of listened ports no longer run here",
                exc_info=cause,
            )


_dispatcher_made = _thread.allocate_lock()


def _dispatcher() -> _Dispatcher:
    """This interpreter's dispatcher, made (and in the main interpreter,
    started) once."""
    dispatcher = _Local.dispatcher
    if dispatcher is None:
        with _dispatcher_made:
            dispatcher = _Local.dispatcher
            if dispatcher is None:
                dispatcher = _Dispatcher()
                if _backend.current_interpreter_id() == _backend.main_interpreter_id():
                    dispatcher.start_thread()
                _Local.dispatcher = dispatcher
    return dispatcher


def close_all_ports() -> None:
    """Close every port of this interpreter and free its loop's waker (at
    isolate exit, when the isolate's thread runs nothing else)."""
    for port in list(_Local.ports.values()):
        port.close()
    dispatcher, _Local.dispatcher = _Local.dispatcher, None
    if dispatcher is not None and not dispatcher._started:
        _backend.waker_free((dispatcher._rfd, dispatcher._wfd))
