"""What runs inside each isolate: bootstrap, control thread, event loop.

An isolate's life, on the native thread that runs it:

1. The bootstrap (``BOOTSTRAP`` below, run in the new interpreter's
   ``__main__``) sets ``sys.path`` and calls :func:`main`.
2. :func:`main` starts the control thread, which owns the control port, and
   waits for its start command: ``run`` (one call, then exit) or ``spawn``
   (an entry, then the event loop while a listening port keeps it alive).
   A spare isolate waits here, warm, until somebody needs one.
3. Teardown closes every port, tells exit listeners, stops the control thread
   and leaves a report (the queues it sent to, its wake-up fds) for the main
   interpreter, which destroys the interpreter once nothing it sent is still
   waiting on a queue (CPython drops such items with their interpreter).

The control thread is served even while user code is busy: ``kill(IMMEDIATE)``
arms a ``sys.monitoring`` tool whose callback raises IsolateKilled on the
isolate's thread at its next jump or call in user code (see ``_arm_kill``),
and wakes any wait on a port. Control requests are also drained by the
event loop before each port event, so a request takes effect before any port
event that arrives after the call that made it.
"""

from __future__ import annotations

import _thread
import sys
from os import urandom as _urandom
from time import monotonic as _monotonic

from . import _backend, _ports, _wire
from ._backend import EMPTY
from ._exceptions import describe_error, report_uncaught
from ._ports import RawReceivePort, ReceivePort, SendPort, _Local, _Process
from ._wire import (
    MIXED,
    PLAIN,
    Message,
    decode,
    encode,
    encode_exception,
    is_plain,
    load_function,
    plain_function,
    release_item,
    shareable,
    streamable,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

IMMEDIATE = 0
BEFORE_NEXT_EVENT = 1

# Seconds a kill(IMMEDIATE) of an async isolate waits for user code to leave
# an await by itself (its task cancelled) before it raises IsolateKilled
# into the thread.
KILL_GRACE = 0.01

# Seconds between raises into user code that swallowed the one before.
KILL_RETRY = 0.05

# sys.monitoring tool ids a kill may take, in order (0-2 are named for
# debuggers, coverage and profilers; 6 and 7 are CPython's own).
_KILL_TOOLS = (4, 3, 5, 2, 1, 0)

# Code from here is library code, where a kill never lands.
_LIBRARY = __file__.rpartition("/")[0] + "/"

# The switch interval of an isolate once it is killed (see Runtime.kill).
KILL_SWITCH_INTERVAL = 0.0001

BOOTSTRAP = """\
import sys
sys.path[:] = _subiso_path
sys.argv[:] = _subiso_argv
from subiso import _runtime
_runtime.main(_subiso_params)
"""


class Capability:
    """An unforgeable token; equal to itself after travelling between isolates."""

    __slots__ = ("_token",)

    def __init__(self) -> None:
        self._token = _urandom(16)

    def __eq__(self, other: object) -> bool:
        return type(other) is Capability and other._token == self._token

    def __hash__(self) -> int:
        return hash(self._token)

    def __repr__(self) -> str:
        return f"<Capability {self._token.hex()[:8]}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_capability, (self._token,))


def _capability(token: bytes) -> Capability:
    capability = Capability.__new__(Capability)
    capability._token = token
    return capability


# -- control requests: what travels on an isolate's control port --------------

READY = "ready"  # to the hub: a spare finished starting up, (PLAIN, (READY, ctl_qid))

# What an isolate leaves in its report queue at exit: ints, (kind << 60) | value.
REPORT_END = 0  # last: the teardown ran to its end
REPORT_SENT_TO = 1  # a queue it put items on
REPORT_WAKER = 2  # a free waker, read end << 32 | write end
REPORT_MAILBAG = 3  # a segment of its mailbag with records not consumed: fd << 40 | head
REPORT_SPACE = 4  # a free room waker (see _backend.space_new)
REPORT_BACKLOG = 5  # it sent this many messages out of band (a backlog outran its receivers)


class Start(Message):
    """Give a waiting isolate its work: one call ("run") or an entry ("spawn").

    It travels as a ``start_item``; the isolate that takes it keeps the
    payload encoded until its own thread loads it (``load_payload``)."""

    kind: str
    debug_name: str | None
    pause_cap: Capability | None
    terminate_cap: Capability | None
    notify: SendPort  # gets ("started",), the run's result, or why it did not start
    exit_port: SendPort | None  # a spawn's: gets ("exit",) when the isolate exits
    payload: tuple[Any, ...]  # (fn, args, kwargs), or (entry, message, options)


_START = "start"  # the tag of a start command's head


def start_item(start: Start) -> tuple[Any, ...]:
    """A start command as an item for a control port.

    Its head, which the control thread needs to keep the command and to
    answer it, travels plain and always loads. The payload loads later, on
    the isolate's own thread: an import that fails or blocks there is the
    caller's to hear of or to kill, as if the call had done it. And work
    whose payload is plain starts without pickle (see ``_plain_payload``).

    Raises:
        NotSendableError: naming the part of the payload that cannot cross.
    """
    kind, debug_name, pause_cap, terminate_cap, notify, exit_port, payload = start
    head = (
        _START,
        kind,
        debug_name,
        None if pause_cap is None else pause_cap._token,
        None if terminate_cap is None else terminate_cap._token,
        notify._qid,
        notify._wfd,
        None if exit_port is None else (exit_port._qid, exit_port._wfd),
    )
    body = _plain_payload(kind, payload) or encode(payload, "call" if kind == "run" else kind)
    return (MIXED, ((PLAIN, head), shareable(body)), *body[2:])


def _plain_payload(kind: str, payload: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The payload as a plain item, if its function is plain (see
    ``plain_function``) and its values are plain or send ports: the common
    ``run(f, 1, 2)`` and ``Isolate.spawn(entry, port.send_port)``."""
    if kind == "run":
        fn, args, kwargs = payload
        values = (*args, *kwargs.values())
        extra: tuple[Any, ...] = tuple(kwargs)
    else:
        fn, message, (paused, fatal, on_exit, on_error, exit_response) = payload
        values = (message, on_exit, on_error, exit_response)
        extra = (paused, fatal)
    function = plain_function(fn)
    if function is None:
        return None
    tagged: list[tuple[Any, ...]] = []
    for value in values:
        if type(value) is SendPort:
            tagged.append((_A_PORT, *value._fields()))
        elif is_plain(value):
            tagged.append((_A_VALUE, value))
        else:
            return None
    return (PLAIN, (function, tuple(tagged), extra))


_A_VALUE, _A_PORT = 0, 1


def _untag(tagged: tuple[Any, ...]) -> Any:
    return tagged[1] if tagged[0] == _A_VALUE else SendPort(*tagged[1:])


def load_request(item: tuple[Any, ...]) -> object:
    """A control request from its item; a start command's payload stays
    encoded (and must be loaded with ``load_payload`` or released)."""
    if item[0] == MIXED and item[1][0][0] == PLAIN and item[1][0][1][0] == _START:
        (_tag, kind, debug_name, pause, terminate, qid, wfd, exit_port) = item[1][0][1]
        return Start(
            kind,
            debug_name,
            None if pause is None else _capability(pause),
            None if terminate is None else _capability(terminate),
            SendPort(qid, wfd),
            None if exit_port is None else SendPort(*exit_port),
            item[1][1],
        )
    if item[0] == PLAIN and type(item[1]) is tuple and item[1][:1] == (_KILL,):
        return Kill(_capability(item[1][1]), item[1][2])
    if item[0] == PLAIN and type(item[1]) is tuple and item[1][:1] == (_KILL_ANY,):
        return Kill(ANY_CAPABILITY, item[1][1])
    return decode(item)


def load_payload(start: Start) -> tuple[Any, ...]:
    """``(fn, args, kwargs)`` for a run, ``(entry, message, options)`` for a
    spawn. Loading may import the caller's modules: code that may fail, or
    block, like the call."""
    if start.payload[0] != PLAIN:
        return decode(start.payload)  # type: ignore[no-any-return]
    function, tagged, extra = start.payload[1]
    fn = load_function(function)
    values = tuple(_untag(value) for value in tagged)
    if start.kind == "run":
        split = len(values) - len(extra)
        return fn, values[:split], dict(zip(extra, values[split:], strict=True))
    message, on_exit, on_error, exit_response = values
    paused, fatal = extra
    return fn, message, (paused, fatal, on_exit, on_error, exit_response)


def release_start(start: Start) -> None:
    """Free what an unloaded start command holds outside the queue."""
    release_item(start.payload)


class Kill(Message):
    capability: object
    priority: int


_KILL = "kill"  # the tag of a kill that travels plain
_KILL_ANY = "kill any"  # the tag of the hub's kill, which needs no capability


class _AnyCapability:
    """The hub's key: it kills isolates that have not been given work (a
    spare), or all of them at process exit."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0


ANY_CAPABILITY = _AnyCapability()


def kill_any_item(priority: int) -> tuple[Any, ...]:
    """The hub's kill, as an item for a control port."""
    return (PLAIN, (_KILL_ANY, priority))


def request_item(request: object) -> tuple[Any, ...]:
    """A control request as an item for a control port.

    A kill travels plain, so that it loads without pickle: its first import,
    on a control thread that shares the GIL with a busy loop, waits a switch
    interval for every file it reads, and made kills 10-20 ms late.

    Raises:
        NotSendableError: naming the part of the request that cannot cross.
    """
    if type(request) is Kill and type(request.capability) is Capability:
        return (PLAIN, (_KILL, request.capability._token, request.priority))
    return encode(request)


class Ping(Message):
    port: SendPort
    response: object
    priority: int


class Pause(Message):
    capability: object


class Resume(Message):
    capability: object


class AddExitListener(Message):
    port: SendPort
    response: object


class RemoveExitListener(Message):
    port: SendPort


class AddErrorListener(Message):
    port: SendPort


class RemoveErrorListener(Message):
    port: SendPort


class SetErrorsFatal(Message):
    flag: bool


class IsolateKilled(BaseException):
    """Raised into an isolate's thread to stop it; never seen outside."""


class _IsolateExit(BaseException):
    """Unwinds ``Isolate.exit()`` to the runtime."""


class Runtime:
    """The state of the isolate this interpreter is."""

    current: Runtime | None = None

    def __init__(self, params: tuple[Any, ...]) -> None:
        (
            self.ctl_qid,
            self.ctl_wfd,
            self.ctl_rfd,
            self.report_qid,
            self.interrupt,
            _Process.hub_wfd,
            _Process.zombie_qid,
            self.hub_qid,
            self.isolation,
            free_wakers_qid,
            free_spaces_qid,
            _Process.reaper_qid,
            _Process.reaper_wfd,
            _Process.fd_gate,
        ) = params
        _Process.hub_qid = self.hub_qid
        _backend.share_free_wakers(free_wakers_qid, free_spaces_qid, owner=False)
        self.debug_name: str | None = None
        self.pause_cap: object = None
        self.terminate_cap: object = None
        _Local.interrupt_fd = self.interrupt[0]
        _Local.runtime_threads_shared = False
        _Local.on_interrupt = self._on_interrupt
        _Local.shield = self._shield
        _Local.unshield = self._enter_user_code
        _Local.run_handler = self._run_handler
        _Local.report_error = self.report_error
        _Local.before_event = self.before_event
        _Local.keepalive_changed = self._wake_loop
        self.job_ready = _thread.allocate_lock()
        self.job_ready.acquire()
        # Held while a paused start waits; _wake_loop releases it to make the
        # start look again (its own wake-up: the control thread drains ctl_rfd).
        self.start_gate = _thread.allocate_lock()
        self.start_gate.acquire()
        self.job: Start | None = None
        self.taking = _thread.allocate_lock()  # see take_next
        self.thread_id = _thread.get_ident()
        self.killed = False
        self.exiting = False
        # Whether user code runs on the isolate's thread: only that thread
        # writes it, and the kill's monitoring callback (see _arm_kill), which
        # runs on that thread too, reads it. No other thread decides.
        self.in_user_code = False
        self.kill_tool: int | None = None  # the sys.monitoring tool id, once armed
        self.last_raise = 0.0  # when the callback last raised IsolateKilled
        self.paused: dict[object, int] = {}  # by the capability that paused
        self.errors_fatal = True
        self.exit_listeners: list[tuple[SendPort, object]] = []
        self.own_exit_ports: list[SendPort] = []  # the spawn's (or run's) own, told last
        self.error_listeners: list[SendPort] = []
        self.loop: Any = None  # the asyncio loop, when the entry is async
        self.done_event: Any = None  # set when the asyncio loop may finish
        self.main_task: Any = None  # the asyncio task of run_async, while it runs
        self.later: list[Any] = []  # actions for the loop (BEFORE_NEXT_EVENT pings)
        self.refused: list[Start] = []  # start commands that came too late
        self.stopping = False  # the control thread ends (teardown)
        Runtime.current = self

    # -- control --------------------------------------------------------------

    def control_thread(self) -> None:
        while not self.stopping:
            try:
                if self.take_next():
                    continue
            except _backend.QueueNotFoundError:
                return
            _backend.wait_readable([self.ctl_rfd], None)
            _backend.waker_drain(self.ctl_rfd)

    def take_next(self) -> bool:
        """Carry out the next control request; False if none waits.

        The control thread and, ahead of a port event, the isolate's own
        thread both take requests: one at a time, so that they are carried
        out in the order they were sent (an exit listener removed right
        after it was added stays removed). No user code runs under the lock,
        and no raise lands there: the isolate's thread takes requests only
        outside user code.

        Raises:
            QueueNotFoundError: the control queue is gone (teardown).
        """
        with self.taking:
            item = _ports.get_item(self.ctl_qid)
            if item is EMPTY:
                return False
            self.take(item)
        return True

    def take(self, item: object) -> None:
        """Carry out one control request; one that cannot be loaded or
        carried out is dropped and logged, and control goes on (the safety
        net of the control thread: a kill must always get through)."""
        try:
            self.apply(load_request(item))  # type: ignore[arg-type]
        except IsolateKilled:
            raise  # on the isolate's thread, draining before an event
        except BaseException:  # one request this isolate cannot load or apply: logged, dropped
            import logging

            logging.getLogger("subiso").exception(
                "isolate %s dropped a control request", self.debug_name or self.ctl_qid
            )

    def apply(self, request: object) -> None:
        """Carry out one control request (on the control thread, or on the
        isolate's thread when its loop drains requests before an event)."""
        if isinstance(request, Start):
            if self.exiting or self.job is not None or not self.job_ready.locked():
                self.refused.append(request)  # teardown tells its sender
            else:
                # Its capabilities hold from now on: a kill that comes right
                # behind the start, before the isolate's thread took the job,
                # must not be ignored (the call would run on for good).
                self.pause_cap, self.terminate_cap = request.pause_cap, request.terminate_cap
                self.job = request
                self.job_ready.release()
        elif isinstance(request, Kill):
            if request.capability is ANY_CAPABILITY or request.capability == self.terminate_cap:
                self.kill(request.priority)
        elif isinstance(request, Ping):
            port, response, priority = request
            if priority == IMMEDIATE:
                port._notify(response)
            else:
                self._later(lambda: port._notify(response))
        elif isinstance(request, Pause):
            self.paused[request.capability] = 1
        elif isinstance(request, Resume):
            self.paused.pop(request.capability, None)
            self._wake_loop()
        elif isinstance(request, AddExitListener):
            self.exit_listeners = [(p, r) for p, r in self.exit_listeners if p != request.port]
            self.exit_listeners.append((request.port, request.response))
        elif isinstance(request, RemoveExitListener):
            self.exit_listeners = [(p, r) for p, r in self.exit_listeners if p != request.port]
        elif isinstance(request, AddErrorListener):
            if request.port not in self.error_listeners:
                self.error_listeners.append(request.port)
        elif isinstance(request, RemoveErrorListener):
            self.error_listeners = [p for p in self.error_listeners if p != request.port]
        elif isinstance(request, SetErrorsFatal):
            self.errors_fatal = bool(request.flag)

    def _later(self, action: Any) -> None:
        self.later.append(action)
        self._wake_loop()

    def kill(self, priority: int) -> None:
        if self.job_ready.locked() and self.job is None:
            self.job_ready.release()  # a spare, killed before it had work
        self.exiting = True
        if priority == IMMEDIATE and not self.killed:
            self.killed = True
            _backend.wake(self.interrupt[1])  # a wait on a port ends now
            self._wake_loop()  # an asyncio loop cancels its work now
            # On the isolate's own thread (a request drained before an
            # event) the loop raises next. From the control thread: code
            # waiting on a port is library code, and leaves by the interrupt
            # fd; code awaiting leaves within the grace, as the asyncio loop
            # cancels its work; busy user code ends by the monitoring
            # callback, at its next jump or call.
            if _thread.get_ident() != self.thread_id:
                if self.isolation == "isolated":  # (a legacy one shares the main GIL)
                    # This thread shares the GIL with user code that may be
                    # busy: each time it blocks (the grace's sleeps), getting
                    # the GIL back would take a switch interval, 5 ms. The
                    # isolate is on its way out: from now on it switches often.
                    sys.setswitchinterval(KILL_SWITCH_INTERVAL)
                if self.loop is not None:
                    self._grace()
                self._arm_kill()
        else:
            self._wake_loop()

    def _grace(self) -> None:
        """Give user code that awaits a moment to leave, as the asyncio loop
        cancels its work: a raise inside asyncio's own machinery, which runs
        as user code while the entry awaits, would leave the loop broken."""
        import time

        deadline = time.monotonic() + KILL_GRACE
        while self.in_user_code and time.monotonic() < deadline:
            time.sleep(0.001)

    # Stopping busy user code. sys.monitoring's state is per interpreter, and
    # a tool armed from the control thread reaches the isolate's thread at
    # its next jump (a loop) or Python call (recursion, builtins calling
    # back): the callback runs on that thread, between its bytecodes, and
    # raises IsolateKilled there, but only while the thread runs user code
    # (``in_user_code``, which only that thread writes) and never at a
    # location in subiso's own code. So no raise can land in library code,
    # and no flag is shared between threads. User code that swallows the
    # exception gets it again KILL_RETRY seconds later, so that its
    # ``finally`` blocks get to run.

    def _arm_kill(self) -> None:
        """Arm the kill's monitoring tool (on the control thread)."""
        monitoring = sys.monitoring
        for tool in _KILL_TOOLS:
            try:
                monitoring.use_tool_id(tool, "subiso kill")
            except ValueError:  # taken, by a profiler or coverage: try the next
                continue
            events = monitoring.events
            monitoring.register_callback(tool, events.JUMP, self._kill_callback)
            monitoring.register_callback(tool, events.PY_START, self._kill_callback)
            self.kill_tool = tool
            monitoring.set_events(tool, events.JUMP | events.PY_START)
            return
        import logging

        logging.getLogger("subiso").warning(
            "isolate %s: every sys.monitoring tool id is taken, so its kill lands "
            "only when its code next calls subiso or returns to it",
            self.debug_name or self.ctl_qid,
        )

    def _kill_callback(self, code: Any, offset: int, *rest: Any) -> Any:
        """A jump or a call on some thread of this isolate, after the kill."""
        if _thread.get_ident() != self.thread_id:
            return None
        if code.co_filename.startswith(_LIBRARY):
            return sys.monitoring.DISABLE  # never here, whoever runs it
        if not self.in_user_code:
            return None
        now = _monotonic()
        if now - self.last_raise < KILL_RETRY:
            return None
        self.last_raise = now
        raise IsolateKilled

    def _disarm_kill(self) -> None:
        """Give the monitoring tool back (on the isolate's thread, at teardown)."""
        tool, self.kill_tool = self.kill_tool, None
        if tool is None:
            return
        monitoring = sys.monitoring
        monitoring.set_events(tool, 0)
        monitoring.register_callback(tool, monitoring.events.JUMP, None)
        monitoring.register_callback(tool, monitoring.events.PY_START, None)
        monitoring.free_tool_id(tool)

    def _enter_user_code(self) -> None:
        self.in_user_code = True
        if self.killed:
            self.in_user_code = False
            raise IsolateKilled

    def _shield(self) -> bool:
        """Library code called from user code that must not be cut: leave
        user code for its length. True if the caller must unshield after."""
        if not self.in_user_code or _thread.get_ident() != self.thread_id:
            return False
        self.in_user_code = False
        return True

    def _run_handler(self, handler: Any, message: Any) -> object:
        """Call a port's handler as user code (the dispatch around it is not)."""
        if self.in_user_code or _thread.get_ident() != self.thread_id:
            return handler(message)
        self._enter_user_code()
        try:
            return handler(message)
        finally:
            self.in_user_code = False

    def _on_interrupt(self) -> None:
        """The interrupt waker is readable: a kill, or a stray write. Wakers
        are recycled, and a sender writes its port's waker after its put, by
        when the receiver may have closed the port: the write then lands on
        the waker's next owner. Left readable, it would spin every wait."""
        if not self.killed:
            _backend.waker_drain(self.interrupt[0])
            if not self.killed:  # a kill sets it before it writes: none was drained
                return
        if _thread.get_ident() == self.thread_id:
            raise IsolateKilled

    def before_event(self) -> bool:
        """Drain control requests ahead of a port event; False: do not dispatch."""
        while True:
            try:
                if not self.take_next():
                    break
            except _backend.QueueNotFoundError:
                break
        if self.killed:
            raise IsolateKilled
        return not self.exiting and not self.paused

    def _wake_loop(self) -> None:
        if self.loop is not None:
            try:
                self.loop.call_soon_threadsafe(self._check_done)
            except RuntimeError:
                pass
        elif _Local.dispatcher is not None:
            _Local.dispatcher.wake()
        if self.start_gate.locked():
            try:
                self.start_gate.release()
            except RuntimeError:
                pass  # released by another thread meanwhile: the start looks again anyway

    def _check_done(self) -> None:
        """On the asyncio loop's thread: end the work if the isolate exits."""
        if self.exiting and self.main_task is not None:
            self.main_task.cancel()  # run_async turns this into IsolateKilled
        if self.done_event is not None and self._finished():
            self.done_event.set()

    def _finished(self) -> bool:
        return self.exiting or _Local.keepalive <= 0

    # -- errors ---------------------------------------------------------------

    def report_error(self, error: BaseException) -> None:
        if isinstance(error, (IsolateKilled, _IsolateExit)):
            raise error
        if isinstance(error, SystemExit):
            self.exiting = True
            self._wake_loop()
            return
        message = describe_error(error)
        for port in self.error_listeners:
            port._notify(message)
        if not self.error_listeners:
            report_uncaught(error, self.debug_name, self.errors_fatal)
        if self.errors_fatal:
            self.exiting = True
            self._wake_loop()

    # -- running user code ----------------------------------------------------

    def call_user(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self._enter_user_code()
        try:
            result = fn(*args, **kwargs)
        finally:
            self.in_user_code = False
        if _is_awaitable(result):
            result = self.run_async(result)  # user code again while it runs
        return result

    def run_async(self, awaitable: Any) -> Any:
        """Run ``awaitable`` on a new event loop; user code while it runs
        (making and closing the loop is not: a raise there breaks asyncio)."""
        import asyncio

        async def main() -> Any:
            self.loop = asyncio.get_running_loop()
            self.done_event = asyncio.Event()
            self.main_task = asyncio.current_task()
            self._check_done()  # a kill that came before the loop ran
            self._enter_user_code()
            try:
                return await awaitable
            finally:
                self.in_user_code = False
                self.loop = self.main_task = None

        try:
            return asyncio.run(main())
        except asyncio.CancelledError:
            if self.exiting:  # cancelled by _check_done: the isolate is killed or exits
                raise IsolateKilled from None
            raise
        finally:
            close = getattr(awaitable, "close", None)
            if close is not None:
                close()  # cancelled before it began: no "never awaited" warning

    def serve(self) -> None:
        """The event loop after the entry returned: while a port keeps it alive."""
        dispatcher = _ports._dispatcher()
        while not self.exiting and _Local.keepalive > 0:
            while self.later:
                self.call_user(self.later.pop(0))
            dispatcher.run_once(None)  # library code; handlers run as user code

    async def serve_async(self) -> None:
        """The asyncio face of ``serve``: wait until no port keeps us alive."""
        import asyncio

        self.loop = asyncio.get_running_loop()
        self.done_event = asyncio.Event()
        dispatcher = _Local.dispatcher
        if dispatcher is not None:  # ports listened before the loop ran move onto it
            for port in list(dispatcher._ports.values()):
                dispatcher.remove(port)
                port._set_handler(port._handler, port._keepalive)
        while not self._finished():
            self.done_event.clear()
            while self.later:
                self.later.pop(0)()
            await self.done_event.wait()

    # -- jobs -----------------------------------------------------------------

    def do_run(self, fn: Any, args: Any, kwargs: Any, reply: SendPort) -> None:
        try:
            result = self.call_user(fn, *args, **kwargs)
        except (IsolateKilled, _IsolateExit):
            raise
        except BaseException as error:  # the work's own: it goes back to the caller
            reply.send(("err", encode_exception(error)))
            return
        if streamable(result):
            from ._pickling import encode_stream

            try:
                items = encode_stream(result)
                header = next(items)
                first = next(items, None)
            except BaseException as error:  # the result cannot travel: the caller hears why
                reply.send(("err", encode_exception(error)))
                return
            reply.send(("stream", header[1]))
            if first is not None:
                reply._send_item(first)
                for item in items:
                    reply._send_item(item)
            return
        try:
            item = encode(("ok", result), "result")
        except BaseException as error:  # the result cannot travel: the caller hears why
            reply.send(("err", encode_exception(error)))
            return
        reply._send_item(item)

    def do_spawn(
        self,
        entry: Any,
        message: Any,
        paused: bool,
        ack: SendPort,
    ) -> None:
        if paused:
            self.paused[self.pause_cap] = 1
        ack.send(("started",))
        self.exit_listeners = [(p, r) for p, r in self.exit_listeners if p != ack]
        while self.paused and not self.exiting:  # a paused start waits for resume or kill
            self.start_gate.acquire()
        if self.exiting:
            return
        if _is_coroutine_function(entry):
            work = self._async_entry(entry, message)
            try:
                self.run_async(work)
            finally:
                work.close()  # a kill before it began: no "never awaited" warning
            return
        try:
            self.call_user(entry, message)  # what the entry returns is dropped, as in Dart
        except (IsolateKilled, _IsolateExit):
            raise
        except BaseException as error:  # an uncaught error: to the error listeners, as in Dart
            self.report_error(error)
        self.serve()

    async def _async_entry(self, entry: Any, message: Any) -> None:
        try:
            await entry(message)
        except (IsolateKilled, _IsolateExit):
            raise
        except BaseException as error:  # an uncaught error: to the error listeners, as in Dart
            self.report_error(error)
        await self.serve_async()


def _is_coroutine_function(fn: Any) -> bool:
    """``inspect.iscoroutinefunction`` without importing inspect in every isolate."""
    functools = sys.modules.get("functools")  # not loaded: fn is no partial
    while functools is not None and isinstance(fn, functools.partial):
        fn = fn.func
    if getattr(fn, "_is_coroutine_marker", None) is not None:  # inspect.markcoroutinefunction
        return True
    fn = getattr(fn, "__func__", fn)  # a bound method
    code = getattr(fn, "__code__", None)
    return code is not None and bool(code.co_flags & 0x180)  # CO_COROUTINE | CO_ITERABLE_COROUTINE


def _is_awaitable(value: object) -> bool:
    return type(value).__name__ == "coroutine" and hasattr(value, "__await__")


def main(params: tuple[Any, ...]) -> None:
    """The isolate's whole life; returns when it has exited."""
    runtime = Runtime(params)
    control = _thread.start_joinable_thread(runtime.control_thread, daemon=False)
    try:
        _life(runtime)
    finally:
        _teardown(runtime, control)


def _life(runtime: Runtime) -> None:
    # Warm now. (Inline, not through _hub: that module and its imports are
    # the main interpreter's, and would slow every isolate's start-up.)
    _ports._deliver(runtime.hub_qid, _Process.hub_wfd, (PLAIN, (READY, runtime.ctl_qid)))
    runtime.job_ready.acquire()
    if runtime.job is None:
        return
    start, runtime.job = runtime.job, None
    kind, runtime.debug_name, runtime.pause_cap, runtime.terminate_cap, notify, exit_port, _ = start
    # Until a spawn has started (a kill may stop it loading), the one who
    # asked hears of an exit; a spawn's exit port always does.
    runtime.exit_listeners.append((notify, ("exit",)))
    runtime.own_exit_ports = [notify]
    if exit_port is not None:
        runtime.exit_listeners.append((exit_port, ("exit",)))
        runtime.own_exit_ports.append(exit_port)
    try:
        try:
            if len(start.payload) > 2 and start.payload[2]:
                # It carries TransferableBuffers: no kill may land between
                # taking their fds and a buffer owning each.
                payload = load_payload(start)
            else:
                payload = runtime.call_user(load_payload, start)
        except (IsolateKilled, _IsolateExit):
            raise
        except BaseException as error:  # the caller's modules do not load here
            if kind == "run":
                notify.send(("err", encode_exception(error)))
            else:
                notify.send(("spawnerror", describe_error(error)[0]))
            return
        if kind == "run":
            fn, args, kwargs = payload
            runtime.do_run(fn, args, kwargs, notify)
        else:
            entry, message, options = payload
            paused, fatal, on_exit, on_error, exit_response = options
            runtime.errors_fatal = fatal
            if on_exit is not None:
                runtime.exit_listeners.append((on_exit, exit_response))
            if on_error is not None:
                runtime.error_listeners.append(on_error)
            runtime.do_spawn(entry, message, paused, notify)
    except (IsolateKilled, _IsolateExit):
        pass
    except BaseException as error:  # a failure of the runtime itself: say it, then exit
        try:
            runtime.report_error(error)
        except BaseException:  # the last word: logged, and the teardown still runs
            import logging

            logging.getLogger("subiso").exception("an isolate could not report its failure")


def _teardown(runtime: Runtime, control: Any) -> None:
    runtime.exiting = True
    # Library code from here on: the kill's callback raises nothing.
    runtime.in_user_code = False
    runtime.stopping = True
    _backend.wake(runtime.ctl_wfd)
    control.join()
    runtime._disarm_kill()  # (the control thread, which arms it, has ended)
    _ports.close_all_ports()
    _wire.close_watched_fds()
    _drain_control(runtime)
    _backend.queue_destroy(runtime.ctl_qid)
    # The user's listeners first: once the spawn's own exit port hears of
    # the exit (and ``join`` returns), every exit notice is on its way.
    own = runtime.own_exit_ports
    for port, response in sorted(runtime.exit_listeners, key=lambda pair: pair[0] in own):
        port._notify(response)
    runtime.exit_listeners = []
    # The report, as ints (an int needs no release: this interpreter runs no
    # more code to release anything, see _mailbag).
    report = runtime.report_qid
    for qid in _Local.sent_to:
        _backend.queue_put(report, (REPORT_SENT_TO << 60) | qid)
    for rfd, wfd in _backend.wakers_take_free():
        _backend.queue_put(report, (REPORT_WAKER << 60) | (rfd << 32) | wfd)
    for space in _backend.spaces_take_free():
        _backend.queue_put(report, (REPORT_SPACE << 60) | space)
    if _ports._mailbag is not None:
        for fd, head in _ports._mailbag.hand_over():
            _backend.queue_put(report, (REPORT_MAILBAG << 60) | (fd << 40) | head)
        _backend.queue_put(report, (REPORT_BACKLOG << 60) | _ports._mailbag.written())
    _backend.queue_put(report, REPORT_END)


def _drain_control(runtime: Runtime) -> None:
    """Answer what was asked of this isolate after it began to exit: a start
    command is told the isolate exited, an exit listener hears it now. (A
    request that arrives after this last look is one made after the exit:
    as in Dart, it gets no answer.)"""
    pending: list[Start] = runtime.refused + ([runtime.job] if runtime.job is not None else [])
    runtime.refused = []
    while (item := _ports.get_item(runtime.ctl_qid)) is not EMPTY:
        try:
            request = load_request(item)  # type: ignore[arg-type]
        except BaseException:
            continue  # a request this isolate cannot load: as if never sent
        if type(request) is Start:
            pending.append(request)
        elif type(request) in (AddExitListener, RemoveExitListener):
            runtime.apply(request)
    runtime.job = None
    for start in pending:
        release_start(start)
        start.notify.send(("exit",))


def exit_current(port: SendPort | None, message: object) -> None:
    """``Isolate.exit``: send the last message, then end this isolate."""
    if port is not None:
        port.send(message)
    if Runtime.current is None:
        raise SystemExit(0)
    raise _IsolateExit


__all__ = ("BOOTSTRAP", "Capability", "RawReceivePort", "ReceivePort", "Runtime", "main")
