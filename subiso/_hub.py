"""The hub: the main interpreter's service that starts, reaps and serves isolates.

Every isolate runs on a native thread the hub starts in the main interpreter
(``interpreter_exec`` switches that thread into the new interpreter for the
isolate's whole life), so an isolate never owns the thread of another and can
exit while its children live on. Isolates that spawn, look up a name or call
the host ask the hub through its queue.

The hub keeps a few *spare* isolates warm (interpreter created, runtime
imported, control thread parked): creating an interpreter costs milliseconds,
taking a spare costs microseconds. A spare is used once, like any isolate.

When an isolate has exited, its interpreter is destroyed as soon as nothing it
sent is still waiting on a queue: CPython drops queued items together with the
interpreter that put them, and a message must outlive its sender (Dart's
``Isolate.exit(port, result)`` is the common case). Until then it is a
*zombie*. A queue it sent to is done with once it is seen empty, or, for a
queue whose consumer counts what it takes (the hub's own, and ports of the
main interpreter), once that count reaches a ticket drawn when the hub first
looked: a busy queue may never be seen empty. Receivers that drain a queue
or reach a ticket wake the hub to look again. Isolates post the queues of
their closed ports to the reaper through the hub, so the reaper's queue holds
nothing of theirs.

Threads and what they may touch:

- ``_Hub.live``, ``spares``, ``warming``, ``zombies``, ``destroying`` and
  ``closing``: any thread, under ``_Hub.lock`` only, and no blocking call and
  no user code under it.
- ``_Hub.wanted`` (spares are wanted): any thread sets it and wakes the hub;
  the hub thread starts spares and clears it, under the lock, once they are
  all warm or warming.
- A ``_Booted`` record: its runner thread (the isolate's own thread) from the
  start; other threads only read ``control`` and ``thread``.
- The hub queue: any interpreter posts a typed request (``post``); only the
  hub thread takes from it. A request whose payload cannot be loaded fails
  that request alone; an error of the hub's own code fails the request with
  ``BrokenServiceError`` and the hub goes on serving (its safety net).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from typing import NamedTuple, cast

from . import _backend, _finalize
from . import _reaper as reaper
from ._drive import drive, drive_async
from ._exceptions import BrokenServiceError, IsolateSpawnError
from ._ports import (
    DESTROY,
    ReceivePort,
    SendPort,
    _deliver,
    _destroy_queue,
    _fd_gate,
    _Local,
    _Process,
    _prune_reaping,
)
from ._runtime import BOOTSTRAP, IMMEDIATE, READY, Kill, Runtime
from ._wire import MIXED, PLAIN, decode, decode_exception, encode, encode_exception, shareable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from typing import Any

SPARES = min(2, os.cpu_count() or 1)

# How long process exit waits for the hub thread to finish what it is doing.
HUB_EXIT_SECONDS = 30.0

#: Exited isolates kept by unreceived messages that are worth a warning
#: (then twice as many, and so on).
ZOMBIES_TO_MENTION = 16

# After this long, process exit says which isolate it is still waiting for.
EXIT_NOTICE_SECONDS = 5.0

# Requests isolates send to the hub, by kind: the module that serves them.
_SERVICES = {"names": "_names", "host": "_host"}

_log = logging.getLogger("subiso")

# Run at interpreter exit before any isolate is killed (registered by the
# layers above the hub at import, so there is no order to get wrong).
before_exit: list[Callable[[], None]] = []


def check_isolation(isolation: str) -> None:
    if isolation not in _backend.ISOLATIONS:
        raise ValueError(f"isolation must be 'isolated' or 'legacy', not {isolation!r}")


# -- what travels on the hub queue ---------------------------------------------


class Request(NamedTuple):
    """A question an isolate asks the hub; the answer goes to ``reply``."""

    kind: str  # "acquire", or a service of _SERVICES
    reply: SendPort
    payload: tuple[Any, ...]


def _request_item(kind: str, reply: SendPort, payload: tuple[Any, ...]) -> tuple[Any, ...]:
    """A request as a queue item whose head (kind, reply port) always loads,
    so that a payload the main interpreter cannot load fails only its call."""
    body = encode(payload, "argument")
    return (
        MIXED,
        ((PLAIN, kind), (PLAIN, reply._qid), (PLAIN, reply._wfd), shareable(body)),
        *body[2:],  # the payload's fds and transferables, for _deliver
    )


def _load_request(item: tuple[Any, ...]) -> tuple[str, SendPort, tuple[Any, ...] | None, Any]:
    """(kind, reply, payload, error loading the payload)."""
    head_kind, head_qid, head_wfd, body = item[1]
    reply = SendPort(decode(head_qid), decode(head_wfd))
    try:
        return decode(head_kind), reply, decode(body), None
    except BaseException as error:
        return decode(head_kind), reply, None, error


# -- the hub (main interpreter only) ------------------------------------------


class _Booted:
    """An isolate the hub started: its control port and what its runner needs."""

    def __init__(self, isolation: str) -> None:
        self.isolation = isolation
        self.ctl_qid = _backend.queue_create()
        self.ctl_waker = _backend.waker_new()
        self.report_qid = _backend.queue_create()
        self.interrupt = _backend.waker_new()
        self.control = SendPort(self.ctl_qid, self.ctl_waker[1])
        self.interp: object = None  # the interpreter, once created
        self.thread: threading.Thread | None = None


class _AnyCapability:
    """The hub's own key: at interpreter exit every isolate is killed."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0

    def __reduce__(self) -> str:
        return "ANY_CAPABILITY"


ANY_CAPABILITY = _AnyCapability()


class Zombie:
    """An exited isolate whose interpreter waits for what it sent to be taken.

    Owned by the hub (under ``Hub.lock``): ``waiting`` maps each queue it sent
    to that may still hold its items to a ticket, -1 until one is drawn.
    """

    __slots__ = ("interp", "waiting")

    def __init__(self, interp: object, sent_to: tuple[int, ...]) -> None:
        self.interp = interp
        self.waiting = dict.fromkeys(sent_to, -1)

    def received(self, counter_of: Callable[[int], Any]) -> bool:
        """Look again; True once nothing it sent waits on a queue.

        ``counter_of(qid)`` is the consumer of the queue, if it counts what it
        takes (``taken``) and wakes the hub when that reaches ``wake_at``.
        Items are taken in order and the isolate puts no more, so its items
        are gone once ``taken`` reaches what was taken plus what was waiting
        at the first look. The count is read first: the ticket errs late,
        never early.

        A queue posted to the reaper is done with only once it no longer
        exists: a get of the reaper's can still be inside CPython after the
        queue looks empty, releasing this isolate's data there (3.13 does it
        in the interpreter that made it: destroyed meanwhile, it crashed).
        """
        for qid, ticket in list(self.waiting.items()):
            if qid in _Process.reaping and _backend.queue_exists(qid):
                continue  # the reaper destroys it, then wakes the hub
            waiting = _backend.queue_count(qid)
            if not waiting:
                del self.waiting[qid]
                continue
            counter = counter_of(qid)
            if counter is None:
                continue  # until the queue is seen empty
            if ticket < 0:
                ticket = self.waiting[qid] = counter.taken + waiting
            if ticket < counter.wake_at:
                counter.wake_at = ticket
            if counter.taken >= ticket:  # also after the wake-up was set: none is lost
                del self.waiting[qid]
        return not self.waiting


class Hub:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.spares: deque[_Booted] = deque()  # warm, waiting for work
        self.warming: deque[_Booted] = deque()  # spares still starting up
        self.live: dict[int, _Booted] = {}  # by control queue id, spares included
        self.zombies: list[Zombie] = []
        self.mention_at = ZOMBIES_TO_MENTION  # see _mention_zombies
        # Items the hub thread took off its queue (Zombie.received); the hub
        # looks at its zombies after each batch, so it needs no wake-up.
        self.taken = 0
        self.wake_at = 0
        self.destroying = 0
        self.starting = 0  # threads in _start, in the books and not yet started
        self.closing = False
        self.exited = False  # shutdown is done
        self.joining: list[threading.Thread] = []  # by shutdown, in the main thread
        self.wanted = False  # see replenish
        self.queue = _backend.queue_create()
        self.rfd, self.wfd = _backend.waker_new()
        self.zombie_qid = _backend.queue_create()
        self.free_wakers_qid = _backend.queue_create()
        _backend.share_free_wakers(self.free_wakers_qid, owner=True)
        # One token for the whole process: an isolate imports ctypes (to
        # raise a kill into its thread) only while it holds the token. Two
        # imports at once in two interpreters crashed CPython (3.13.0, in
        # ctypes' class definitions) and hung it.
        self.ctypes_token = os.pipe()
        os.write(self.ctypes_token[1], b"t")
        _Process.hub_wfd = self.wfd
        _Process.zombie_qid = self.zombie_qid
        self.reaper = Reaper(self.wfd, self.zombie_qid)
        self.thread = threading.Thread(target=self._serve, name="subiso-hub", daemon=True)
        _backend.start_thread(self.thread)
        threading._register_atexit(self.shutdown)  # type: ignore[attr-defined]
        atexit.register(self.shutdown)
        if _backend.FORK_KILLS_CHILD and hasattr(os, "register_at_fork"):
            os.register_at_fork(before=_warn_before_fork)

    # -- starting isolates ----------------------------------------------------

    def _start(self, isolation: str, spare: bool) -> _Booted:
        booted = _Booted(isolation)
        name = "subiso-spare" if spare else "subiso-isolate"
        booted.thread = threading.Thread(target=self._runner, args=(booted,), name=name)
        with self.lock:
            if self.closing:
                raise RuntimeError("cannot start an isolate: the interpreter is shutting down")
            self.live[booted.ctl_qid] = booted
            if spare:
                self.warming.append(booted)
            self.starting += 1
        try:
            _backend.start_thread(booted.thread)
        except BaseException:  # no thread to be had: nobody has its control port yet
            with self.lock:
                self.live.pop(booted.ctl_qid, None)
                if booted in self.warming:
                    self.warming.remove(booted)
            _backend.queue_destroy(booted.ctl_qid)
            _backend.queue_destroy(booted.report_qid)
            _backend.waker_free(booted.ctl_waker)
            _backend.waker_free(booted.interrupt)
            raise
        finally:
            with self.lock:
                self.starting -= 1
                self.changed.notify_all()
        return booted

    def acquire(self, isolation: str) -> SendPort:
        """The control port of an isolate waiting for its start command."""
        booted = None
        if isolation == "isolated":
            with self.lock:
                if self.closing:
                    raise RuntimeError("cannot start an isolate: the interpreter is shutting down")
                if self.spares:
                    booted = self.spares.popleft()
                elif self.warming:  # ready sooner than one started now
                    booted = self.warming.popleft()
        if booted is None:
            booted = self._start(isolation, spare=False)
        elif booted.thread is not None:
            booted.thread.name = "subiso-isolate"
        return booted.control

    def replenish(self) -> None:
        """Have the hub thread warm spares up to ``SPARES``; called once the
        work in hand is under way, so that warming does not compete with it
        for the cores. Starting a thread waits until it runs, which on busy
        cores can take milliseconds: not the caller's to wait for."""
        with self.lock:
            self.wanted = True
        _backend.wake(self.wfd)

    def _replenish(self) -> None:
        while True:
            with self.lock:
                if self.closing or len(self.spares) + len(self.warming) >= SPARES:
                    self.wanted = False  # only now: settle() sees no gap
                    self.changed.notify_all()
                    return
            try:
                self._start("isolated", spare=True)
            except RuntimeError:  # shutting down, or no thread to be had: acquire starts its own
                with self.lock:
                    self.wanted = False
                    self.changed.notify_all()
                return

    def _runner(self, booted: _Booted) -> None:
        error = None
        try:
            booted.interp = _backend.interpreter_create(booted.isolation)
            _backend.interpreter_set_main(
                booted.interp,
                {
                    "_subiso_path": tuple(sys.path),
                    "_subiso_argv": tuple(sys.argv),
                    "_subiso_params": (
                        booted.ctl_qid,
                        booted.ctl_waker[1],
                        booted.ctl_waker[0],
                        booted.report_qid,
                        booted.interrupt,
                        self.wfd,
                        self.zombie_qid,
                        self.queue,
                        booted.isolation,
                        self.free_wakers_qid,
                        self.reaper.queue,
                        self.reaper.waker[1],
                        self.ctypes_token,
                        _fd_gate(),
                    ),
                },
            )
            error = _backend.interpreter_exec(booted.interp, BOOTSTRAP)
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self._finish(booted, error)

    def _finish(self, booted: _Booted, error: str | None) -> None:
        report = _backend.queue_get(booted.report_qid)
        _backend.queue_destroy(booted.report_qid)
        if report is _backend.EMPTY:  # the runtime never ran to its end
            if booted.interp is not None and not self.closing:
                _log.error("an isolate ended without running its teardown: %s", error)
            self._fail_start_commands(booted, error or "the isolate ended without a report")
            _destroy_queue(booted.ctl_qid)  # a thread may be sending it a request
            sent_to: tuple[int, ...] = ()
        else:
            sent_to, wakers = cast("tuple[tuple[int, ...], object]", report)
            _backend.wakers_add_free(wakers)
        _backend.waker_free(booted.ctl_waker)
        _backend.waker_free(booted.interrupt)
        with self.lock:
            self.live.pop(booted.ctl_qid, None)
            for waiting in (self.spares, self.warming):
                if booted in waiting:
                    waiting.remove(booted)
            if booted.interp is not None:
                self.zombies.append(Zombie(booted.interp, sent_to))
                _backend.queue_put(self.zombie_qid, 0)
            self.changed.notify_all()
        self._reap()
        self._mention_zombies()

    def _mention_zombies(self) -> None:
        """Warn when exited isolates pile up behind ports nobody reads."""
        with self.lock:
            count = len(self.zombies)
            if count < ZOMBIES_TO_MENTION // 2:
                self.mention_at = ZOMBIES_TO_MENTION
            if count < self.mention_at:
                return
            self.mention_at = 2 * count
            waited_on = Counter(qid for zombie in self.zombies for qid in zombie.waiting)
        ports = [
            f"port {qid} holds messages of {n}"
            for qid, n in waited_on.most_common()
            if qid != self.queue and _backend.queue_count(qid)
        ]
        _log.warning(
            "%d exited isolates are kept alive by the messages they sent, not yet "
            "received (%s): each keeps its interpreter's memory until they are "
            "received or the port is closed",
            count,
            "; ".join(ports[:3]) + ("; ..." if len(ports) > 3 else ""),
        )

    def _fail_start_commands(self, booted: _Booted, error: str) -> None:
        from ._runtime import Start, load_request, release_start

        while True:
            try:
                item = _backend.queue_get(booted.ctl_qid)
            except _backend.QueueNotFoundError:
                return
            if item is _backend.EMPTY:
                return
            try:
                request = load_request(item)  # type: ignore[arg-type]
            except BaseException:
                continue
            if type(request) is Start:
                release_start(request)
                request.notify.send(("spawnerror", error))

    def _counter(self, qid: int) -> Any:
        """The consumer of a queue that counts what it takes, if there is one."""
        return self if qid == self.queue else _Local.ports.get(qid)

    def _reap(self, most: int = -1) -> int:
        """Destroy exited isolates whose sent messages were all received, one
        at a time, so that the threads that reap share the work; at most
        ``most`` of them if it is not negative. Returns how many."""
        done = 0
        if _prune_reaping():  # settle() may wait for the reaper
            with self.lock:
                self.changed.notify_all()
        while done != most:
            with self.lock:
                zombie = next((z for z in self.zombies if z.received(self._counter)), None)
                if zombie is None:
                    break
                self.zombies.remove(zombie)
                _backend.queue_get(self.zombie_qid)
                self.destroying += 1
            try:
                _backend.interpreter_destroy(zombie.interp)
            finally:
                with self.lock:
                    self.destroying -= 1
                    self.changed.notify_all()
            done += 1
        return done

    # -- the hub thread ---------------------------------------------------------

    def _serve(self) -> None:
        while not self.closing:
            try:
                _backend.wait_readable([self.rfd], None)
                _backend.waker_drain(self.rfd)
                while (item := _backend.queue_get(self.queue)) is not _backend.EMPTY:
                    self.taken += 1
                    try:
                        self._take(cast("tuple[Any, ...]", item))
                    except BaseException:  # a request that cannot be read or answered
                        _log.exception("the hub dropped a request it could not answer")
                if self.wanted:
                    self._replenish()
                # One at a time, requests in between: the next zombies may
                # wait for them to be taken.
                if self._reap(most=1):
                    _backend.wake(self.wfd)
            except BaseException:  # the safety net: log, and go on serving
                _log.exception("the hub met an error; it goes on serving")

    def _take(self, item: tuple[Any, ...]) -> None:
        if item[0] == PLAIN:  # from the runtime of an isolate
            notice, arg = item[1]
            if notice == READY:  # a spare finished starting up
                self._warm(arg)
            elif notice == DESTROY:  # a closed port's queue, for the reaper
                _destroy_queue(arg)
            return
        kind, reply, payload, error = _load_request(item)
        try:
            if error is not None:  # the caller's payload: fail that call only
                raise error
            self._handle(Request(kind, reply, cast("tuple[Any, ...]", payload)))
        except BaseException as failure:
            if error is None:
                broken = BrokenServiceError("hub", f"{type(failure).__name__}: {failure}")
                broken.__cause__ = failure
                _log.error("the hub failed a %r request", kind, exc_info=failure)
                failure = broken
            reply.send(("err", encode_exception(failure)))

    def _warm(self, ctl_qid: int) -> None:
        with self.lock:
            for booted in self.warming:
                if booted.ctl_qid == ctl_qid:
                    self.warming.remove(booted)
                    self.spares.append(booted)
                    self.changed.notify_all()
                    break

    def _handle(self, request: Request) -> None:
        if request.kind == "acquire":
            try:
                request.reply.send(("ok", self.acquire(*request.payload)))
            finally:
                self._replenish()
            return
        # Services over isolates answer requests from isolates here; each
        # module is imported the first time an isolate asks for it.
        module = f"subiso.{_SERVICES[request.kind]}"
        __import__(module)
        sys.modules[module].serve(request.payload, request.reply)

    # -- leaving ----------------------------------------------------------------

    def _busy(self) -> int:
        return (
            len(self.live)
            - len(self.spares)
            - len(self.warming)
            + len(self.zombies)
            + self.destroying
        )

    def settle(self, timeout: float) -> bool:
        """Wait until no isolate but the spares is left, the spares asked
        for are warm, and the reaper has destroyed the queues posted to it
        (with what was left in them); True if so in time."""

        def settled() -> bool:
            _prune_reaping()
            idle = self._busy() == 0 and not self.wanted and not self.warming
            return idle and not _Process.reaping

        # A token on the zombie queue: meanwhile the reaper wakes the hub
        # after each batch it destroys, and the hub's prune notifies.
        _backend.queue_put(self.zombie_qid, 0)
        try:
            with self.lock:
                return self.changed.wait_for(settled, timeout)
        finally:
            _backend.queue_get(self.zombie_qid)

    def shutdown(self) -> None:
        """At interpreter exit: let the layers above finish (a Pool's queued
        and running tasks complete, as in concurrent.futures), then kill
        every isolate, join, destroy what is left.

        A Ctrl-C stops the wait for work, as it would in a program; from
        then on exit waits for the isolates to end, which no interrupt can
        shorten: an interpreter finalized under a live thread aborts the
        process. Runs once (threading's exit hook; atexit, should an
        interrupt have kept threading from calling it)."""
        if self.exited:
            return
        with _ExitInterrupts(self) as interrupts:
            try:
                for hook in before_exit:
                    try:
                        hook()
                    except Exception:
                        _log.exception("exit could not wait for the work of isolates")
            except BaseException:  # Ctrl-C while it waits: what is left is killed
                _log.warning("exit stopped waiting for the work of isolates", exc_info=True)
            interrupts.hold()
            self._end_isolates()
        self.exited = True
        _backend.keep_interrupted_exit_status()

    def _end_isolates(self) -> None:
        with self.lock:
            self.closing = True
            # A thread put in the books just before must start before it can be joined.
            self.changed.wait_for(lambda: self.starting == 0)
            booted = list(self.live.values())
        self.joining = [each.thread for each in booted if each.thread is not None]
        for each in booted:
            try:
                each.control.send(Kill(ANY_CAPABILITY, IMMEDIATE))
            except BaseException:
                _log.exception("could not ask an isolate to exit")
        for each in booted:
            if each.thread is not None and each.thread is not threading.current_thread():
                # An isolate inside a blocking C call ends when the call
                # returns; its interpreter must not be finalized before.
                each.thread.join(EXIT_NOTICE_SECONDS)
                if each.thread.is_alive():
                    _log.warning(
                        "process exit waits for an isolate in a blocking call (%s)",
                        each.thread.name,
                    )
                    each.thread.join()
        self.reaper.stop()
        # The hub thread may be destroying an interpreter right now. It must
        # be done before the process finalizes: CPython would end that
        # interpreter a second time and crash (seen on 3.14 and 3.15).
        _backend.wake(self.wfd)
        if self.thread is not threading.current_thread():
            self.thread.join(HUB_EXIT_SECONDS)
        if self.thread.is_alive():
            _log.error("the hub did not stop in time; exited isolates are left to CPython")
            return  # wedged in a service: destroying beside it could crash
        with self.lock:
            zombies, self.zombies = self.zombies, []
        for zombie in zombies:
            _backend.interpreter_destroy(zombie.interp)


class _ExitInterrupts:
    """SIGINT while the process exits (a Python handler runs in the main
    thread only, so elsewhere this does nothing). Until ``hold``, the first
    interrupt goes to the handler that was there (KeyboardInterrupt, as a
    rule); after that, an interrupt only says what exit waits for. The
    handler runs between two bytecodes of the main thread: it takes no lock."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.raising = True
        self.previous: Any = None

    def __enter__(self) -> _ExitInterrupts:
        if threading.current_thread() is not threading.main_thread():
            return self
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):
            return self  # ignored, or the default (the OS ends the process)
        try:
            signal.signal(signal.SIGINT, self._interrupted)
        except KeyboardInterrupt:  # one was pending: it stops the wait for work
            self.raising = False
            signal.signal(signal.SIGINT, self._interrupted)
        self.previous = handler
        return self

    def hold(self) -> None:
        self.raising = False

    def _interrupted(self, signum: int, frame: Any) -> None:
        if self.raising:
            self.raising = False  # once only: the handler may raise
            self.previous(signum, frame)
            return
        threads = [thread.name for thread in self.hub.joining if thread.is_alive()]
        if threads:
            _log.warning("exit waits for isolates to end: %s", ", ".join(threads))

    def __exit__(self, *exc_info: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


class Reaper:
    """The main interpreter's side of the reaper (see _reaper.py): its queue,
    its thread (which runs the reaper's interpreter) and its stop."""

    def __init__(self, hub_wfd: int, zombie_qid: int) -> None:
        self.queue = _backend.queue_create()
        self.waker = _backend.waker_new()
        self.interp: object = _backend.interpreter_create("isolated")
        params = (self.queue, self.waker[0], hub_wfd, zombie_qid, _fd_gate())
        _backend.interpreter_set_main(
            self.interp, {"_subiso_path": tuple(sys.path), "_subiso_params": params}
        )
        self.thread = threading.Thread(target=self._run, name="subiso-reaper", daemon=True)
        _Process.reaper_qid, _Process.reaper_wfd = self.queue, self.waker[1]
        _backend.start_thread(self.thread)

    def _run(self) -> None:
        try:
            error = _backend.interpreter_exec(self.interp, reaper.BOOTSTRAP)
            if error is not None:
                _log.error("the reaper failed: %s", error)
        except BaseException:
            _log.exception("the reaper failed")
        finally:
            # From now on ports destroy their queues themselves; what was
            # posted and not reaped is destroyed here.
            _Process.reaper_qid = -1
            self._destroy_posted()

    def _destroy_posted(self) -> None:
        while (item := _backend.queue_get(self.queue)) is not _backend.EMPTY:
            target = cast("tuple[int, int]", item)[1]
            if target != reaper.STOP:
                reaper.destroy(target)

    def stop(self) -> None:
        """At exit, once the isolates ended: stop the reaper and destroy its
        interpreter (CPython would otherwise finalize it at exit)."""
        _backend.queue_put(self.queue, (PLAIN, reaper.STOP))
        _backend.wake(self.waker[1])
        self.thread.join(HUB_EXIT_SECONDS)
        if self.thread.is_alive():
            _log.error("the reaper did not stop in time")
            return
        if self.interp is not None:
            _backend.interpreter_destroy(self.interp)
            self.interp = None
        self._destroy_posted()  # posted after the stop
        _backend.queue_destroy(self.queue)
        _backend.waker_free(self.waker)


FORK_WARNING = (
    "os.fork() while subiso isolates are alive: the child process will hang or "
    "crash in CPython (gh-139759), before any of its code runs. Start processes "
    "with multiprocessing's 'forkserver' or 'spawn' method, or with subprocess."
)


def _warn_before_fork() -> None:
    """At-fork hook: the child cannot tell (it never runs), so the parent does."""
    if len(_backend.interpreter_ids()) > 1:
        import warnings

        warnings.warn(FORK_WARNING, RuntimeWarning, stacklevel=2)


_hub: Hub | None = None
_hub_lock = threading.Lock()


def the_hub() -> Hub:
    global _hub
    if _hub is None:
        with _hub_lock:
            if _hub is None:
                _hub = Hub()
    return _hub


def current_hub() -> Hub | None:
    """The hub, if one was started (for tests and benchmarks)."""
    return _hub


def replenish() -> None:
    if _hub is not None:
        _hub.replenish()


def settle(timeout: float = 10.0) -> bool:
    """Wait until the cleanups of collected objects have run (a pool's
    shutdown among them) and only spare isolates are left (for tests and
    benchmarks)."""
    deadline = time.monotonic() + timeout
    if not _finalize.settle(timeout):
        return False
    return True if _hub is None else _hub.settle(max(0.0, deadline - time.monotonic()))


# -- asking the hub (from any interpreter) -------------------------------------


def _answer(answer: tuple[Any, ...]) -> Any:
    status, value = answer
    if status == "ok":
        return value
    if status == "err":
        raise decode_exception(value)
    raise IsolateSpawnError(value)


class _Ask(NamedTuple):
    """Wait for the hub's answer (one step of a conversation, see _drive)."""

    reply: ReceivePort

    def wait(self) -> Any:
        return self.reply.receive()

    async def wait_async(self) -> Any:
        return await self.reply.receive_async()


def asking(kind: str, *payload: Any) -> Generator[Any, Any, Any]:
    """Ask the hub in the main interpreter (from an isolate) for the answer.

    Raises:
        NotSendableError: an argument cannot cross.
        BrokenServiceError: the hub failed this request.
        Exception: what the service raised, as itself.
    """
    runtime = Runtime.current
    assert runtime is not None
    with ReceivePort("hub reply") as reply:
        _deliver(runtime.hub_qid, _Process.hub_wfd, _request_item(kind, reply.send_port, payload))
        return _answer((yield _Ask(reply)))


class Acquire(NamedTuple):
    """Get the control port of a fresh isolate waiting for its start command."""

    isolation: str

    def wait(self) -> SendPort:
        if Runtime.current is None:
            return the_hub().acquire(self.isolation)
        return cast("SendPort", drive(asking("acquire", self.isolation)))

    async def wait_async(self) -> SendPort:
        if Runtime.current is None:
            return the_hub().acquire(self.isolation)
        return cast("SendPort", await drive_async(asking("acquire", self.isolation)))
