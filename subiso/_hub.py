"""The hub: the main interpreter's actor that starts and reaps isolates.

Every isolate runs on a native thread of its own, a *runner*, that the hub
starts in the main interpreter (``interpreter_exec`` switches that thread into
the new interpreter for the isolate's whole life), so an isolate never owns
the thread of another and can exit while its children live on. Isolates that
spawn, look up a name or call the host ask the hub through its queue.

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
or reach a ticket wake the hub to look again.

Threads, and who may touch what:

- ``subiso-hub``, the hub thread, a service: it owns every table of the hub
  (``live``, ``warming``, ``zombies``, ``ending``, the settle waiters) and
  nobody else touches them, but for process exit once the hub thread is
  gone. It runs no user code and
  waits on nothing but its wake-up fd: it never unpickles a payload (a host
  call's arguments are decoded by the host worker that runs it), never
  destroys an interpreter and never joins a thread.
- Any other thread of the main interpreter posts a typed message to the
  hub's mailbox (``post``) and, when it needs an answer, waits on the
  message's ``Reply`` (blocking, or awaiting it on an event loop). An
  isolate posts to the hub's queue and waits on a reply port.
- The spares a client may take without asking: ``spares``, a channel the
  hub thread appends to and any thread takes from (``deque.popleft``).
- A runner thread: creates its interpreter, runs the isolate, posts
  ``Exited``, waits until the hub says that what the isolate sent has been
  received, then destroys the interpreter (running its atexit hooks and
  joining the threads it left: the isolate's own code, on its own thread)
  and posts ``Destroyed``. The hub logs once if a destruction takes long.

The hub's safety net: a request it cannot carry out fails alone, with its
error, and the hub serves on. A failure of the hub itself breaks it: every
waiter gets ``BrokenServiceError("hub")`` chained to the cause, it is logged
once, and later requests raise the same. Process exit still ends every
isolate (``shutdown`` then works from the books the hub left).
"""

from __future__ import annotations

import _thread
import atexit
import os
import sys
import threading
import time
from _collections import deque  # type: ignore[import-not-found]

from . import _backend, _finalize
from . import _reaper as reaper
from ._drive import drive, drive_async
from ._exceptions import BrokenServiceError, IsolateSpawnError
from ._exit import ExitInterrupts
from ._exited import Handed, Zombie
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
    _put,
    get_item,
)
from ._runtime import (
    BOOTSTRAP,
    IMMEDIATE,
    READY,
    REPORT_BACKLOG,
    REPORT_END,
    REPORT_MAILBAG,
    REPORT_SENT_TO,
    REPORT_SPACE,
    REPORT_WAKER,
    Runtime,
    kill_any_item,
)
from ._wire import (
    MIXED,
    PLAIN,
    Message,
    decode,
    decode_exception,
    encode,
    encode_exception,
    release_item,
    shareable,
)

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

# After this long, the hub says which isolate's interpreter is still being
# destroyed (its atexit hooks run, the threads it left are joined).
DESTROY_NOTICE_SECONDS = 5.0

# How often the hub looks again at the records exited isolates sent out of
# band (see _mailbag), while some are not read: their segments are emptied
# and closed once all are (or look orphaned). A queue that empties wakes it
# too; a read does not (that would cost every read a system call).
HANDED_LOOK_SECONDS = 0.25

# How often a wait for an isolate's answer looks whether the isolate is gone
# (its answer may have been lost with it: a start command that reached a
# dying spare, say).
LOOK_SECONDS = 1.0

# Requests isolates send to the hub, by kind: the module that serves them.
_SERVICES = {"names": "_names", "host": "_host"}

# Run at interpreter exit before any isolate is killed (registered by the
# layers above the hub at import, so there is no order to get wrong).
before_exit: list[Callable[[], None]] = []


def _log() -> Any:
    import logging  # (not at import: a plain `import subiso` should stay light)

    return logging.getLogger("subiso")


def check_isolation(isolation: str) -> None:
    if isolation not in _backend.ISOLATIONS:
        raise ValueError(f"isolation must be 'isolated' or 'legacy', not {isolation!r}")


class Reply:
    """The answer to one request: set once by the hub thread, waited for by
    the asker (blocking, or awaiting on its event loop).

    Whoever decides first wins: the hub, answering, or the asker, giving up
    (``cancel``). They decide by popping ``_claim`` (atomic), so no lock is
    shared with the hub and an event loop's thread never waits on it.
    """

    __slots__ = ("_claim", "_done", "_loops", "error", "value")

    def __init__(self) -> None:
        self._claim = [True]
        self._done = _thread.allocate_lock()
        self._done.acquire()
        self._loops: list[tuple[Any, Any]] = []  # (loop, future) of awaiting askers
        self.value: Any = None
        self.error: BaseException | None = None

    def answer(self, value: Any = None, error: BaseException | None = None) -> bool:
        """Set the answer (the hub); False if the asker gave up first."""
        # Written before the claim is taken: an asker that finds it taken
        # (``cancel`` is False) reads the answer at once.
        self.value, self.error = value, error
        try:
            self._claim.pop()
        except IndexError:
            return False
        self._done.release()
        for loop, future in list(self._loops):
            try:
                loop.call_soon_threadsafe(_wake_future, future)
            except RuntimeError:
                pass  # that loop is closed: nobody awaits there any more
        return True

    def cancel(self) -> bool:
        """Give up (the asker); False if the answer was set first."""
        try:
            self._claim.pop()
        except IndexError:
            return False
        return True

    @property
    def done(self) -> bool:
        return not self._done.locked()

    def result(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value

    def wait(self, timeout: float | None = None) -> bool:
        """Block until answered; False if ``timeout`` passed first."""
        if not self._done.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            return False
        self._done.release()
        return True

    async def wait_async(self) -> None:
        """Await the answer without blocking the event loop."""
        import asyncio

        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._loops.append((loop, future))
        try:
            if self.done:  # answered before this asker was listed
                return
            await future
        finally:
            self._loops.remove((loop, future))


def _wake_future(future: Any) -> None:
    if not future.done():
        future.set_result(None)


# -- what travels on the hub's mailbox (threads of the main interpreter) ---------------


class _Booted:
    """An isolate the hub started: its control port and what its runner needs.

    Its runner thread owns it from the start; other threads read ``control``,
    ``thread`` and ``name`` only."""

    def __init__(self, isolation: str, spare: bool) -> None:
        self.isolation = isolation
        self.spare = spare
        self.ctl_qid = _backend.queue_create()
        self.ctl_waker = _backend.waker_new()
        self.report_qid = _backend.queue_create()
        self.interrupt = _backend.waker_new()
        self.control = SendPort(self.ctl_qid, self.ctl_waker[1])
        self.interp: object = None  # the interpreter, once created
        name = "subiso-spare" if spare else "subiso-isolate"
        self.thread = threading.Thread(target=_run_isolate, args=(self,), name=name, daemon=True)
        # Released by the hub once what the isolate sent was received (or at
        # exit): the runner then destroys the interpreter.
        self.may_destroy = _thread.allocate_lock()
        self.may_destroy.acquire()

    def named(self, debug_name: str | None) -> _Booted:
        """Name its thread after the work it is given (its debug name, if any)."""
        self.thread.name = "subiso-isolate" + (f" {debug_name}" if debug_name else "")
        return self


class _Ending:
    """An exited isolate until its interpreter is destroyed (the hub's)."""

    __slots__ = ("booted", "name", "since")

    def __init__(self, booted: _Booted) -> None:
        self.booted = booted
        self.name = booted.thread.name
        self.since = 0.0  # when its runner was told to destroy it; -1 once mentioned


class AcquireRequest(Message):
    """A fresh isolate, waiting for its start command, for the asker."""

    isolation: str
    debug_name: str | None  # (names its thread)
    reply: Reply  # gets the isolate's _Booted


class GiveBack(Message):
    """An isolate acquired and not used (its asker was interrupted)."""

    booted: _Booted


class Exited(Message):
    """A runner's isolate ended (posted by the runner)."""

    booted: _Booted
    sent_to: tuple[int, ...]  # the queues it put items on
    wakers: tuple[Any, ...]  # the free wakers it hands back
    mailbag: tuple[tuple[int, int], ...]  # its mailbag's segments still read: (fd, head)
    spaces: tuple[int, ...]  # the free room wakers it hands back
    backlog: int  # messages it sent out of band


class Destroyed(Message):
    """A runner destroyed its interpreter."""

    booted: _Booted


class Settle(Message):
    """Answer once only spares are left (tests and benchmarks)."""

    reply: Reply


class Shutdown(Message):
    """Process exit: kill every isolate; answer with the runner threads to join."""

    reply: Reply


_REPLENISH = "replenish"
_STOP = "stop"


# How many runner threads create, or destroy, an interpreter at once. Both
# contend for the main interpreter's GIL and the runtime's locks (16 threads
# creating and destroying bare interpreters kept a thread of the main
# interpreter from its GIL for 31 ms at a time, against 4-5 ms with one or
# two at once; 3.14.10). An isolate a caller waits for is created one at a
# time, and spares are not warmed meanwhile (``Hub.starting``): with 32
# fresh isolates starting, an event loop stalled for 0.4 s, 22-34 ms with
# two created at once, 10-14 ms with one. Spares, warmed while no caller
# waits, are created two at a time: fresh runs back to back went 25% slower
# with one.
_CREATING = threading.BoundedSemaphore(1)
_CREATING_SPARE = threading.BoundedSemaphore(2)
_DESTROYING = threading.BoundedSemaphore(1)
# A destruction runs the isolate's atexit hooks and joins the threads it
# left: one that takes this long lets the next go beside it.
_DESTROY_TURN_SECONDS = 1.0
# An isolate that sent this many messages out of band (a backlog its
# receivers let pile up) has the C heap's free pages given back once it is
# destroyed (_backend.give_back_freed_memory): ~1 MiB of queue nodes.
BACKLOG_TO_GIVE_BACK = 10_000


def _run_isolate(booted: _Booted) -> None:
    """The runner thread (see the module docstring)."""
    hub = _hub
    assert hub is not None
    error = None
    try:
        with _CREATING_SPARE if booted.spare else _CREATING:
            booted.interp = _backend.interpreter_create(booted.isolation)
            _backend.interpreter_set_main(
                booted.interp,
                {
                    "_subiso_path": tuple(sys.path),
                    "_subiso_argv": tuple(sys.argv),
                    "_subiso_params": hub.params(booted),
                },
            )
        error = _backend.interpreter_exec(booted.interp, BOOTSTRAP)
    except BaseException as exc:  # the runner must still read the report and end its books
        error = f"{type(exc).__name__}: {exc}"
    report = _read_report(booted)
    _backend.queue_destroy(booted.report_qid)
    if report is None:  # the runtime never ran to its end
        if booted.interp is not None and not hub.closing:
            _log().error("an isolate ended without running its teardown: %s", error)
        _fail_start_commands(booted, error or "the isolate ended without a report")
        _destroy_queue(booted.ctl_qid)  # a thread may be sending it a request
        report = Exited(booted, (), (), (), (), 0)
    backlog = report.backlog
    hub.post(report)
    if booted.interp is None:
        return
    booted.may_destroy.acquire()
    turn = _DESTROYING.acquire(timeout=_DESTROY_TURN_SECONDS)
    try:
        _backend.interpreter_destroy(booted.interp)
        if backlog >= BACKLOG_TO_GIVE_BACK:
            # Every message it sent is received by now: the nodes of the
            # queues that held them are free, in chunks the C heap keeps.
            _backend.give_back_freed_memory()
    finally:
        if turn:
            _DESTROYING.release()
        hub.post(Destroyed(booted))


def _read_report(booted: _Booted) -> Exited | None:
    """What an isolate left in its report queue, or None if its teardown did
    not run to its end (see _runtime.REPORT_END)."""
    sent_to: list[int] = []
    wakers: list[tuple[int, int]] = []
    mailbag: list[tuple[int, int]] = []
    spaces: list[int] = []
    backlog = 0
    value_mask = (1 << 60) - 1
    while (entry := _backend.queue_get(booted.report_qid)) is not _backend.EMPTY:
        kind, value = entry >> 60, entry & value_mask  # type: ignore[operator]
        if kind == REPORT_END:
            return Exited(
                booted, tuple(sent_to), tuple(wakers), tuple(mailbag), tuple(spaces), backlog
            )
        if kind == REPORT_SENT_TO:
            sent_to.append(value)
        elif kind == REPORT_WAKER:
            wakers.append((value >> 32, value & 0xFFFFFFFF))
        elif kind == REPORT_MAILBAG:
            mailbag.append((value >> 40, value & ((1 << 40) - 1)))
        elif kind == REPORT_SPACE:
            spaces.append(value)
        elif kind == REPORT_BACKLOG:
            backlog = value
    return None


def _fail_start_commands(booted: _Booted, error: str) -> None:
    """Tell the senders of start commands that reached an isolate which never
    ran that it did not start (the runner, after the isolate ended)."""
    from ._runtime import Start, load_request, release_start

    while True:
        try:
            item = get_item(booted.ctl_qid)
        except _backend.QueueNotFoundError:
            return
        if item is _backend.EMPTY:
            return
        try:
            request = load_request(item)  # type: ignore[arg-type]
        except Exception:
            continue  # a request nobody can answer: as if never sent
        if type(request) is Start:
            release_start(request)
            request.notify.send(("spawnerror", error))


class Hub:
    """The hub (main interpreter only); see the module docstring."""

    def __init__(self) -> None:
        # -- channels, any thread:
        self.queue = _backend.queue_create()  # requests and notices from isolates
        self.rfd, self.wfd = _backend.waker_new()
        self.mailbox: deque[Any] = deque()  # messages from threads of this interpreter
        self.spares: deque[_Booted] = deque()  # spares anyone may take (popleft)
        self.zombie_qid = _backend.queue_create()
        self.free_wakers_qid = _backend.queue_create()
        self.free_spaces_qid = _backend.queue_create()
        _backend.share_free_wakers(self.free_wakers_qid, self.free_spaces_qid, owner=True)
        _Process.hub_wfd = self.wfd
        _Process.zombie_qid = self.zombie_qid
        # Written by the hub thread, read by anyone:
        self.closing = False
        self.broken: BrokenServiceError | None = None
        self.reaper: Reaper | None = None
        # -- the hub thread's alone:
        self.live: dict[int, _Booted] = {}  # by control queue id, spares included
        self.warming: set[int] = set()  # spares not ready yet
        self.starting: set[int] = set()  # isolates started for a caller, not ready yet
        self.zombies: list[Zombie] = []  # exited, waiting for what they sent to be taken
        self.ending: dict[int, _Ending] = {}  # exited and not yet destroyed, zombies included
        self.handed: list[Handed] = []  # exited isolates' records not read yet
        self.mention_at = ZOMBIES_TO_MENTION  # see _mention_zombies
        # Items the hub thread took off its queue (Zombie.received); the hub
        # looks at its zombies after each batch, so it needs no wake-up.
        self.taken = 0
        self.wake_at = 0
        self.wanted = False  # spares are wanted
        self.settling: list[Reply] = []
        self.exited = False  # shutdown is done (the main thread's)
        self.pid = os.getpid()
        self.thread = threading.Thread(target=self._serve, name="subiso-hub", daemon=True)
        _backend.start_thread(self.thread)
        threading._register_atexit(self.shutdown)  # type: ignore[attr-defined]
        atexit.register(self.shutdown)
        if _backend.FORK_KILLS_CHILD and hasattr(os, "register_at_fork"):
            os.register_at_fork(before=_warn_before_fork, after_in_child=_forget_the_parents)

    # -- any thread ---------------------------------------------------------------------

    def post(self, message: object) -> None:
        """Hand ``message`` to the hub thread; never blocks."""
        self.mailbox.append(message)
        _backend.wake(self.wfd)

    def ask(self, message: Any) -> Reply:
        """Post a message that carries a ``Reply``; it fails at once if the hub is broken."""
        broken = self.broken
        if broken is None:
            self.post(message)
            broken = self.broken  # broke meanwhile: it may not have seen the message
        if broken is not None:
            message.reply.answer(error=_again(broken))
        return message.reply  # type: ignore[no-any-return]

    def take_spare(self, debug_name: str | None) -> _Booted | None:
        """A warm (or warming) spare, if one is at hand."""
        try:
            booted: _Booted = self.spares.popleft()
        except IndexError:
            return None
        return booted.named(debug_name)

    def acquire(self, isolation: str, debug_name: str | None = None) -> _Booted:
        """An isolate waiting for its start command (blocking).

        Raises:
            RuntimeError: the process is exiting.
            BrokenServiceError: the hub is broken.
        """
        if isolation == "isolated" and (spare := self.take_spare(debug_name)) is not None:
            return spare
        reply = self.ask(AcquireRequest(isolation, debug_name, Reply()))
        try:
            while not reply.wait(LOOK_SECONDS):
                if not self.thread.is_alive() and self.broken is None:
                    raise BrokenServiceError("hub", "its thread has ended")
        except BaseException:
            self._abandon(reply)
            raise
        booted: _Booted = reply.result()
        return booted

    async def acquire_async(self, isolation: str, debug_name: str | None = None) -> _Booted:
        """``acquire`` for an event loop's thread: it only posts and awaits."""
        if isolation == "isolated" and (spare := self.take_spare(debug_name)) is not None:
            return spare
        reply = self.ask(AcquireRequest(isolation, debug_name, Reply()))
        try:
            await reply.wait_async()
        except BaseException:
            self._abandon(reply)
            raise
        booted: _Booted = reply.result()
        return booted

    def _abandon(self, reply: Reply) -> None:
        """The asker of ``reply`` gives up: an isolate the hub set aside for it goes back."""
        if not reply.cancel() and reply.error is None:
            self.post(GiveBack(reply.value))

    def replenish(self) -> None:
        """Have the hub warm spares up to ``SPARES``; called once the work in
        hand is under way, so that warming does not compete with it for the
        cores."""
        self.post(_REPLENISH)

    def params(self, booted: _Booted) -> tuple[Any, ...]:
        """What the runtime of ``booted`` is started with (its runner's)."""
        reaper_ = self.reaper
        return (
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
            self.free_spaces_qid,
            -1 if reaper_ is None else reaper_.queue,
            -1 if reaper_ is None else reaper_.waker[1],
            _fd_gate(),
        )

    # -- the hub thread -----------------------------------------------------------------

    def _serve(self) -> None:
        """The hub thread: its loop, and the one safety net around it."""
        try:
            _finalize.start()
            while self._turn():
                pass
        except BaseException as error:  # the safety net: every waiter hears of it
            self._break(error)

    def _turn(self) -> bool:
        """Wait for work, then do what waits; False once told to stop."""
        _backend.wait_readable([self.rfd], self._timeout())
        _backend.waker_drain(self.rfd)
        mailbox = self.mailbox
        while mailbox:
            message = mailbox.popleft()
            if message is _STOP:
                return False
            self._receive(message)
        while (item := get_item(self.queue)) is not _backend.EMPTY:
            self.taken += 1
            self._take(item)  # type: ignore[arg-type]
        if not self.starting:
            self._start_reaper()
        self._reap()
        if self.wanted:
            self._replenish()
        self._mention_slow_destructions()
        if self.settling and self._settled():
            settling, self.settling = self.settling, []
            for reply in settling:
                reply.answer(True)
            _backend.queue_get(self.zombie_qid)  # (its token: see _receive)
        return True

    def _timeout(self) -> float | None:
        """Until the next destruction worth a mention, or the next look at
        the records an exited isolate sent out of band that look orphaned
        (see _mailbag), if any."""
        deadlines = [
            ending.since + DESTROY_NOTICE_SECONDS
            for ending in self.ending.values()
            if ending.since > 0
        ]
        if self.handed:
            deadlines.append(time.monotonic() + HANDED_LOOK_SECONDS)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _receive(self, message: Any) -> None:
        """Act on a message from a thread of the main interpreter."""
        if isinstance(message, AcquireRequest):
            try:
                booted = self._acquire(message.isolation, message.debug_name)
            except BaseException as error:  # this request fails alone
                message.reply.answer(error=error)
                return
            if not message.reply.answer(booted):  # its asker gave up meanwhile
                self._give_back(booted)
        elif isinstance(message, Exited):
            self._exited(message)
        elif isinstance(message, Destroyed):
            self.ending.pop(message.booted.ctl_qid, None)
        elif isinstance(message, GiveBack):
            self._give_back(message.booted)
        elif message is _REPLENISH:
            self.wanted = True
        elif isinstance(message, Settle):
            if not self.settling:
                # A token on the zombie queue: meanwhile receivers and the
                # reaper wake the hub when queues drain or go.
                _backend.queue_put(self.zombie_qid, 0)
            self.settling.append(message.reply)
        elif isinstance(message, Shutdown):
            self._shutdown(message.reply)
        else:
            raise TypeError(f"the hub got an unknown message {message!r}")

    def _take(self, item: tuple[Any, ...]) -> None:
        """Act on an item from an isolate: a notice, or a request."""
        if item[0] == PLAIN:  # a notice from the runtime of an isolate
            notice, arg = item[1]
            if notice == READY:  # an isolate finished starting up
                self.warming.discard(arg)
                self.starting.discard(arg)
            elif notice == DESTROY:  # a closed port's queue, for the reaper
                _destroy_queue(arg)
            elif notice == GIVE_BACK:  # an acquired isolate its asker did not use
                booted = self.live.get(arg)
                if booted is not None:
                    self._give_back(booted)
            return
        kind, reply, body = _request_head(item)
        try:
            if kind == "acquire":
                isolation, debug_name = decode(body)
                booted = self._acquire(isolation, debug_name)
                answer = (PLAIN, ("ok-isolate", booted.ctl_qid, booted.ctl_waker[1]))
                if _put(reply._qid, answer):
                    _backend.wake(reply._wfd)
                else:
                    self._give_back(booted)  # its asker has gone
            else:
                # Services over isolates answer here; each module is imported
                # the first time an isolate asks. The body stays encoded:
                # the service decodes it, never on this thread if it is not
                # plain (see _host).
                module = f"subiso.{_SERVICES[kind]}"
                __import__(module)
                sys.modules[module].serve(body, reply)
        except BaseException as failure:  # this request fails alone
            release_item(body)  # (what it carries was not handed on)
            _log().warning("the hub could not carry out a %r request", kind, exc_info=True)
            reply.send(("err", encode_exception(failure)))

    def _acquire(self, isolation: str, debug_name: str | None) -> _Booted:
        if self.closing:
            raise RuntimeError("cannot start an isolate: the interpreter is shutting down")
        if isolation == "isolated" and (spare := self.take_spare(debug_name)) is not None:
            return spare
        booted = self._start(isolation, spare=False).named(debug_name)
        self.starting.add(booted.ctl_qid)
        return booted

    def _give_back(self, booted: _Booted) -> None:
        """An isolate that waits for a start command nobody will send."""
        if booted.ctl_qid not in self.live:
            return  # it has exited meanwhile
        if booted.isolation == "isolated" and not self.closing:
            booted.thread.name = "subiso-spare"
            self.spares.append(booted)
        else:
            booted.control._send_item(kill_any_item(IMMEDIATE))

    def _start(self, isolation: str, spare: bool) -> _Booted:
        if self.reaper is None and _backend.QUEUE_DESTROY_FREEZES:
            # Other interpreters are about to exist: from now on ports hand
            # the queues they close to the reaper (see _reaper.py).
            self.reaper = Reaper(self.wfd, self.zombie_qid)
        booted = _Booted(isolation, spare)
        self.live[booted.ctl_qid] = booted
        if spare:
            self.warming.add(booted.ctl_qid)
        try:
            _backend.start_thread(booted.thread)
        except BaseException:  # no thread to be had: nobody has its control port yet
            del self.live[booted.ctl_qid]
            self.warming.discard(booted.ctl_qid)
            _backend.queue_destroy(booted.ctl_qid)
            _backend.queue_destroy(booted.report_qid)
            _backend.waker_free(booted.ctl_waker)
            _backend.waker_free(booted.interrupt)
            raise
        return booted

    def _replenish(self) -> None:
        if self.starting:
            # Callers wait for isolates that start: spares, which would start
            # beside them, wait for them (see _CREATING).
            return
        while not self.closing and len(self.spares) < SPARES:
            try:
                self.spares.append(self._start("isolated", spare=True))
            except Exception:  # no thread or fd to be had now: acquire starts its own
                _log().warning("the hub could not warm a spare isolate", exc_info=True)
                break
        self.wanted = False

    def _exited(self, exited: Exited) -> None:
        booted = exited.booted
        self.live.pop(booted.ctl_qid, None)
        self.warming.discard(booted.ctl_qid)
        self.starting.discard(booted.ctl_qid)
        try:
            self.spares.remove(booted)  # a spare that ended (a kill at exit, a failed start)
        except ValueError:
            pass
        _backend.wakers_add_free(exited.wakers)
        for space in exited.spaces:
            _backend.space_free(space)
        _backend.waker_free(booted.ctl_waker)
        _backend.waker_free(booted.interrupt)
        if booted.interp is not None:
            self.zombies.append(Zombie(booted.interp, exited.sent_to, booted))
            self.ending[booted.ctl_qid] = _Ending(booted)
            _backend.queue_put(self.zombie_qid, 0)
            self._mention_zombies()
        if exited.mailbag:
            self.handed.append(Handed(exited.mailbag))
            _backend.queue_put(self.zombie_qid, 0)  # receivers that read wake the hub

    @property
    def started(self) -> int:
        """Takes begun, as a port counts them (Zombie.received): the hub's
        own, on the thread that looks, so none is in flight."""
        return self.taken

    def _start_reaper(self) -> None:
        """Make the reaper's interpreter, if the reaper waits for it: at the
        first turn with no caller waiting for an isolate to start."""
        if self.reaper is not None and self.reaper.thread is None and not self.closing:
            try:
                self.reaper.start()
            except Exception:  # ports then destroy their own queues
                _log().error("the reaper could not start", exc_info=True)

    def _counter(self, qid: int) -> Any:
        """The consumer of a queue that counts what it takes, if there is one."""
        return self if qid == self.queue else _Local.ports.get(qid)

    def _reap(self) -> None:
        """Let the runners of exited isolates whose messages were all received
        destroy their interpreters, and close the mailbag segments now read."""
        _prune_reaping()
        if self.zombies:
            left = []
            for zombie in self.zombies:
                if self.closing or zombie.received(self._counter):
                    _backend.queue_get(self.zombie_qid)
                    self._destroy(zombie.booted)
                else:
                    left.append(zombie)
            self.zombies = left
        if self.handed and not self.closing:  # (at exit, a receiver may read them still)
            handed = []
            for each in self.handed:
                if each.settled():
                    _backend.queue_get(self.zombie_qid)
                else:
                    handed.append(each)
            self.handed = handed

    def _destroy(self, booted: _Booted) -> None:
        """Tell the runner of ``booted`` to destroy its interpreter."""
        ending = self.ending.get(booted.ctl_qid)
        if ending is not None:
            ending.since = time.monotonic()
        booted.may_destroy.release()

    def _mention_slow_destructions(self) -> None:
        """Say once which isolate's interpreter takes long to destroy."""
        now = time.monotonic()
        for ending in self.ending.values():
            if ending.since > 0 and now - ending.since >= DESTROY_NOTICE_SECONDS:
                _log().warning(
                    "the interpreter of isolate %s has been ending for %.0f s: CPython runs "
                    "its atexit hooks and waits for the threads it left running",
                    ending.name,
                    now - ending.since,
                )
                ending.since = -1.0  # mentioned once

    def _mention_zombies(self) -> None:
        """Warn when exited isolates pile up behind ports nobody reads."""
        count = len(self.zombies)
        if count < ZOMBIES_TO_MENTION // 2:
            self.mention_at = ZOMBIES_TO_MENTION
        if count < self.mention_at:
            return
        from collections import Counter

        waited_on = Counter(qid for zombie in self.zombies for qid in zombie.waiting)
        ports = [
            f"port {qid} holds messages of {n}"
            for qid, n in waited_on.most_common()
            if qid != self.queue and _backend.queue_count(qid)
        ]
        if not ports:
            return  # the queues they wait on drain as we speak
        self.mention_at = 2 * count
        _log().warning(
            "%d exited isolates are kept alive by the messages they sent, not yet "
            "received (%s): each keeps its interpreter's memory until they are "
            "received or the port is closed",
            count,
            "; ".join(ports[:3]) + ("; ..." if len(ports) > 3 else ""),
        )

    def _settled(self) -> bool:
        _prune_reaping()
        busy = len(self.live) - len(self.spares) + len(self.ending)
        return (
            not busy
            and not self.wanted
            and not self.warming
            and not _Process.reaping
            and not self.handed
        )

    def _shutdown(self, reply: Reply) -> None:
        """Process exit: take no more work, kill every isolate, and tell the
        main thread which runner threads to join."""
        self.closing = True
        self.spares.clear()
        for booted in self.live.values():
            booted.control._send_item(kill_any_item(IMMEDIATE))
        self._reap()  # (closing: every exited isolate may be destroyed now)
        threads = [booted.thread for booted in self.live.values()]
        threads += [ending.booted.thread for ending in self.ending.values()]
        reply.answer(threads)

    def _break(self, cause: BaseException) -> None:
        """The safety net: the hub itself failed. Fail every waiter, say it
        once, and refuse later requests; exit still ends the isolates."""
        broken = BrokenServiceError("hub", f"{type(cause).__name__}: {cause}")
        broken.__cause__ = cause
        self.broken = broken
        try:
            _log().error("the hub failed; requests to it fail from now on", exc_info=cause)
        except BaseException:  # (logging gone at exit): the waiters are failed all the same
            pass
        failure = ("err", encode_exception(broken))
        while self.mailbox:
            message = self.mailbox.popleft()
            reply = getattr(message, "reply", None)
            if isinstance(reply, Reply):
                reply.answer(error=_again(broken))
        for reply in self.settling:
            reply.answer(error=_again(broken))
        while (item := get_item(self.queue)) is not _backend.EMPTY:
            if item[0] != PLAIN:  # type: ignore[index]
                try:
                    _request_head(item)[1].send(failure)  # type: ignore[arg-type]
                except BaseException:  # a request that cannot be answered: the next one can
                    pass
        # Isolates that ask from now on find the queue gone (see _Ask).
        _backend.queue_destroy(self.queue)

    # -- leaving ----------------------------------------------------------------

    def settle(self, timeout: float) -> bool:
        """Wait until no isolate but the spares is left, the spares asked
        for are warm, and the reaper has destroyed the queues posted to it
        (with what was left in them); True if so in time."""
        reply = self.ask(Settle(Reply()))
        if not reply.wait(timeout):
            reply.cancel()
            return False
        return reply.error is None

    def shutdown(self) -> None:
        """At interpreter exit: let the layers above finish (a Pool's queued
        and running tasks complete, as in concurrent.futures), then kill
        every isolate, join, destroy what is left.

        A first Ctrl-C stops the wait for work, as it would in a program;
        from then on exit waits for the isolates to end, and another Ctrl-C
        ends the process at once if some still block in a C call (see
        _exit.ExitInterrupts). Runs once (threading's exit hook; atexit, should
        an interrupt have kept threading from calling it)."""
        if self.exited or self.pid != os.getpid():
            return
        with ExitInterrupts(self) as interrupts:
            try:
                for hook in before_exit:
                    try:
                        hook()
                    except Exception:
                        _log().exception("exit could not wait for the work of isolates")
            except BaseException:  # Ctrl-C while it waits: what is left is killed
                _log().warning("exit stopped waiting for the work of isolates", exc_info=True)
            interrupts.hold()
            self._end_isolates(interrupts)
        self.exited = True
        _backend.keep_interrupted_exit_status()

    def _end_isolates(self, interrupts: ExitInterrupts) -> None:
        threads: list[threading.Thread] = []
        if self.thread.is_alive() and self.broken is None:
            reply = self.ask(Shutdown(Reply()))
            if reply.wait(HUB_EXIT_SECONDS) and reply.error is None:
                threads = reply.value
        if not threads and (self.broken is not None or not self.thread.is_alive()):
            # The hub cannot help: its books are ours now (its thread is done).
            # Every isolate it knew of is killed, and its runner destroys its
            # interpreter as soon as it has exited.
            self.thread.join(HUB_EXIT_SECONDS)
            self.closing = True
            known = {id(b): b for b in self.live.values()}
            known.update((id(e.booted), e.booted) for e in self.ending.values())
            for booted in known.values():
                booted.control._send_item(kill_any_item(IMMEDIATE))
                if booted.may_destroy.locked():
                    booted.may_destroy.release()
                threads.append(booted.thread)
        interrupts.joining = threads
        notice = time.monotonic() + EXIT_NOTICE_SECONDS
        for thread in threads:
            # An isolate inside a blocking C call ends when the call
            # returns; its interpreter must not be finalized before. (Short
            # joins: the signal handler runs between them.)
            while thread.is_alive():
                thread.join(0.05)
                interrupts.heed(threads)
                if thread.is_alive() and notice and time.monotonic() > notice:
                    notice = 0.0
                    _log().warning(
                        "process exit waits for isolates in blocking calls (%s); "
                        "press Ctrl-C %s to end the process without them",
                        ", ".join(t.name for t in threads if t.is_alive()),
                        "again" if interrupts.presses >= 0 else "twice",
                    )
        if self.thread.is_alive():
            self.post(_STOP)
            self.thread.join(HUB_EXIT_SECONDS)
            if self.thread.is_alive():
                _log().error("the hub did not stop in time")
        if self.reaper is not None:
            self.reaper.stop()


class Reaper:
    """The main interpreter's side of the reaper (see _reaper.py): its queue,
    its thread (which runs the reaper's interpreter) and its stop. The hub
    thread makes it before the first isolate starts: from then on ports post
    the queues they close to it. Its interpreter, which takes ~10 ms to
    make, is made by ``start`` at the hub's first turn with no caller
    waiting for an isolate; what was posted meanwhile waits on its queue."""

    def __init__(self, hub_wfd: int, zombie_qid: int) -> None:
        self.queue = _backend.queue_create()
        self.waker = _backend.waker_new()
        self.hub_wfd, self.zombie_qid = hub_wfd, zombie_qid
        self.interp: object = None
        self.thread: threading.Thread | None = None
        _Process.reaper_qid, _Process.reaper_wfd = self.queue, self.waker[1]

    def start(self) -> None:
        """Make its interpreter and start its thread (the hub thread's)."""
        self.thread = threading.Thread(target=self._run, name="subiso-reaper", daemon=True)
        try:
            self.interp = _backend.interpreter_create("isolated")
            params = (self.queue, self.waker[0], self.hub_wfd, self.zombie_qid, _fd_gate())
            _backend.interpreter_set_main(
                self.interp, {"_subiso_path": tuple(sys.path), "_subiso_params": params}
            )
            _backend.start_thread(self.thread)
        except BaseException:  # no reaper: ports destroy their queues themselves, as before it
            _Process.reaper_qid = -1
            if self.interp is not None and self.thread.ident is None:
                _backend.interpreter_destroy(self.interp)
                self.interp = None
            self._destroy_posted()
            raise

    def _run(self) -> None:
        try:
            error = _backend.interpreter_exec(self.interp, reaper.BOOTSTRAP)
            if error is not None:
                _log().error("the reaper failed: %s", error)
        except BaseException:  # the reaper's thread: logged, ports then destroy their own queues
            _log().exception("the reaper failed")
        finally:
            # From now on ports destroy their queues themselves; what was
            # posted and not reaped is destroyed here.
            _Process.reaper_qid = -1
            self._destroy_posted()

    def _destroy_posted(self) -> None:
        while (target := _backend.queue_get(self.queue)) is not _backend.EMPTY:
            if target != reaper.STOP:
                reaper.destroy(target)  # type: ignore[arg-type]

    def stop(self) -> None:
        """At exit, once the isolates ended: stop the reaper and destroy its
        interpreter (CPython would otherwise finalize it at exit)."""
        _Process.reaper_qid = -1
        _backend.queue_put(self.queue, reaper.STOP)
        _backend.wake(self.waker[1])
        if self.thread is not None and self.thread.ident is not None:
            self.thread.join(HUB_EXIT_SECONDS)
        if self.thread is not None and self.thread.is_alive():
            _log().error("the reaper did not stop in time")
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


def _forget_the_parents() -> None:
    """In a forked child: the fd gate's pipe is the parent's (it shares the
    token): the child makes its own on first use."""
    _Process.fd_gate = (-1, -1)


def _again(error: BrokenServiceError) -> BrokenServiceError:
    """A fresh copy of the error that broke a service, for each later caller."""
    again = BrokenServiceError(error.service, error.detail)
    again.__cause__ = error.__cause__
    return again


_hub: Hub | None = None
_hub_lock = _thread.allocate_lock()


def start() -> Hub:
    """Start the hub (main interpreter only): when ``subiso`` is imported
    there, so that no later call, on an event loop's thread say, starts a
    thread. A process forked since gets a hub of its own on first use."""
    global _hub
    hub = _hub
    if hub is None or hub.pid != os.getpid():
        with _hub_lock:
            hub = _hub
            if hub is None or hub.pid != os.getpid():
                hub = _hub = Hub()
    return hub


def the_hub() -> Hub:
    hub = _hub
    if hub is None or hub.pid != os.getpid():
        return start()
    return hub


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

GIVE_BACK = "give back"  # to the hub: (PLAIN, (GIVE_BACK, ctl_qid)), an acquired isolate not used


def _request_item(kind: str, reply: SendPort, payload: tuple[Any, ...]) -> tuple[Any, ...]:
    """A request as a queue item whose head (kind, reply port) always loads,
    so that a payload the main interpreter cannot load fails only its call."""
    body = encode(payload, "argument")
    return (
        MIXED,
        ((PLAIN, kind), (PLAIN, reply._qid), (PLAIN, reply._wfd), shareable(body)),
        *body[2:],  # the payload's fds and transferables, for _deliver
    )


def _request_head(item: tuple[Any, ...]) -> tuple[str, SendPort, tuple[Any, ...]]:
    """(kind, reply port, body still encoded) of a request item. (The body
    carries its own file descriptors, if any.)"""
    head_kind, head_qid, head_wfd, body = item[1]
    return head_kind[1], SendPort(head_qid[1], head_wfd[1]), body


def _answer(answer: tuple[Any, ...]) -> Any:
    status = answer[0]
    if status == "ok":
        return answer[1]
    if status == "ok-isolate":
        return SendPort(answer[1], answer[2])
    if status == "err":
        raise decode_exception(answer[1])
    raise IsolateSpawnError(answer[1])


class _Ask(Message):
    """Wait for the hub's answer on ``reply`` (one step of a conversation,
    see _drive). Between bounded waits it looks whether the hub is gone
    (broken): its answer would never come."""

    reply: ReceivePort

    def wait(self) -> Any:
        while True:
            try:
                return self.reply.receive(LOOK_SECONDS)
            except TimeoutError:
                self._check()

    async def wait_async(self) -> Any:
        while True:
            try:
                return await self.reply.receive_async(LOOK_SECONDS)
            except TimeoutError:
                self._check()

    def _check(self) -> None:
        runtime = Runtime.current
        if runtime is not None and not _backend.queue_exists(runtime.hub_qid):
            raise BrokenServiceError("hub", "it no longer takes requests")


def asking(kind: str, *payload: Any) -> Generator[Any, Any, Any]:
    """Ask the hub in the main interpreter (from an isolate) for the answer.

    Raises:
        NotSendableError: an argument cannot cross.
        BrokenServiceError: the hub is broken.
        Exception: what the service raised, as itself.
    """
    runtime = Runtime.current
    assert runtime is not None
    with ReceivePort("hub reply") as reply:
        item = _request_item(kind, reply.send_port, payload)
        _Local.sent_to.add(runtime.hub_qid)  # before the put, as in _deliver
        if not _put(runtime.hub_qid, item):
            raise BrokenServiceError("hub", "it no longer takes requests")
        _backend.wake(_Process.hub_wfd)
        try:
            answer = yield _Ask(reply)
        except BaseException:
            if kind == "acquire":
                _give_back_unused(reply)
            raise
        return _answer(answer)


def _give_back_unused(reply: ReceivePort) -> None:
    """An isolate asker was interrupted: an isolate the hub already sent
    goes back to it. (One the hub sends after the port closed, it takes back
    itself: its answer cannot be put.)"""
    item = reply._poll_item()
    if item is _backend.EMPTY:
        return
    answer = decode(item)  # type: ignore[arg-type]
    if answer[0] == "ok-isolate":
        runtime = Runtime.current
        assert runtime is not None
        _deliver(runtime.hub_qid, _Process.hub_wfd, (PLAIN, (GIVE_BACK, answer[1])))


class Acquire(Message):
    """Get the control port of a fresh isolate waiting for its start command."""

    isolation: str
    debug_name: str | None  # of the work it is for (names its thread)

    def wait(self) -> SendPort:
        if Runtime.current is None:
            return the_hub().acquire(self.isolation, self.debug_name).control
        port: SendPort = drive(asking("acquire", self.isolation, self.debug_name))
        return port

    async def wait_async(self) -> SendPort:
        if Runtime.current is None:
            return (await the_hub().acquire_async(self.isolation, self.debug_name)).control
        port: SendPort = await drive_async(asking("acquire", self.isolation, self.debug_name))
        return port


_EXITED = (PLAIN, ("exit",))


def answer_item(port: ReceivePort, control: SendPort) -> tuple[Any, ...]:
    """The next item on ``port``, where the isolate behind ``control``
    answers; its exit notice if it is gone without answering.

    Between bounded waits it looks whether the isolate is gone: its
    teardown destroys its control queue after the last answer it will ever
    send, and a start command that reached it as it died is never answered.
    """
    while True:
        try:
            return port._receive_item(LOOK_SECONDS)
        except TimeoutError:
            if not _backend.queue_exists(control._qid):
                item = port._poll_item()
                return _EXITED if item is _backend.EMPTY else item  # type: ignore[return-value]


async def answer_item_async(port: ReceivePort, control: SendPort) -> tuple[Any, ...]:
    """``answer_item`` for an event loop."""
    while True:
        try:
            item: tuple[Any, ...] = await port._receive_item_async(LOOK_SECONDS)
            return item
        except TimeoutError:
            if not _backend.queue_exists(control._qid):
                looked = port._poll_item()
                return _EXITED if looked is _backend.EMPTY else looked  # type: ignore[return-value]
