"""The ``Isolate`` handle, one-shot ``run``, and the hub that owns isolates.

The hub lives in the main interpreter. Every isolate runs on a native thread
the hub starts there (``_interpreters.exec`` switches that thread into the new
interpreter for the isolate's whole life), so an isolate never owns the
thread of another and can exit while its children live on. Isolates that
spawn ask the hub through its queue.

The hub keeps a few *spare* isolates warm (interpreter created, runtime
imported, control thread parked): creating an interpreter costs milliseconds,
taking a spare costs microseconds. A spare is used once, like any isolate.

When an isolate has exited, its interpreter is destroyed as soon as nothing it
sent is still waiting on a queue: CPython drops queued items together with the
interpreter that put them, and a message must outlive its sender (Dart's
``Isolate.exit(port, result)`` is the common case). Until then it is a
*zombie*; receivers that drain a queue wake the hub to look again.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from time import perf_counter as _perf_counter
from typing import cast

from . import _backend, _runtime
from ._exceptions import BrokenIsolateError, IsolateSpawnError, NotSendableError
from ._ports import ReceivePort, SendPort, _Local, _Process
from ._runtime import BEFORE_NEXT_EVENT, BOOTSTRAP, IMMEDIATE, Capability, Runtime
from ._wire import PICKLED, StreamDecoder, decode, decode_exception, encode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

__all__ = (
    "BEFORE_NEXT_EVENT",
    "IMMEDIATE",
    "Capability",
    "Isolate",
    "compute",
    "compute_async",
    "run",
    "run_async",
)

SPARES = min(2, os.cpu_count() or 1)

# How long process exit waits for the hub thread to finish what it is doing.
HUB_EXIT_SECONDS = 30.0

# Requests isolates send to the hub, by kind: the module that serves them.
_SERVICES = {"names": "_names", "host": "_host"}


def _check_isolation(isolation: str) -> None:
    if isolation not in _backend.ISOLATIONS:
        raise ValueError(f"isolation must be 'isolated' or 'legacy', not {isolation!r}")


class _SpawnNotSendableError(IsolateSpawnError, NotSendableError):
    """The entry or message of a spawn cannot cross (both kinds of error)."""


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


class _Hub:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.spares: deque[_Booted] = deque()  # warm, waiting for work
        self.warming: deque[_Booted] = deque()  # spares still starting up
        self.live: dict[int, _Booted] = {}  # by control queue id, spares included
        self.zombies: list[tuple[object, tuple[int, ...]]] = []
        self.destroying = 0
        self.closing = False
        self.queue = _backend.queue_create()
        self.rfd, self.wfd = _backend.waker_new()
        self.zombie_qid = _backend.queue_create()
        _Process.hub_wfd = self.wfd
        _Process.zombie_qid = self.zombie_qid
        self.thread = threading.Thread(target=self._serve, name="subiso-hub", daemon=True)
        self.thread.start()
        threading._register_atexit(self.shutdown)  # type: ignore[attr-defined]
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
        booted.thread.start()
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
        """Warm spares up to ``SPARES``; called once the work in hand is under
        way, so that warming does not compete with it for the cores."""
        while True:
            with self.lock:
                if self.closing or len(self.spares) + len(self.warming) >= SPARES:
                    return
            self._start("isolated", spare=True)

    def _runner(self, booted: _Booted) -> None:
        error = None
        try:
            booted.interp = _backend.interpreter_create(booted.isolation)
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error is None:
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
                    ),
                },
            )
            error = _backend.interpreter_exec(booted.interp, BOOTSTRAP)
        self._finish(booted, error)

    def _finish(self, booted: _Booted, error: str | None) -> None:
        report = _backend.queue_get(booted.report_qid)
        _backend.queue_destroy(booted.report_qid)
        if report is _backend.EMPTY:  # the runtime never ran to its end
            self._fail_start_commands(booted, error or "the isolate ended without a report")
            _backend.queue_destroy(booted.ctl_qid)
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
                self.zombies.append((booted.interp, sent_to))
                _backend.queue_put(self.zombie_qid, 0)
        self._reap()

    def _fail_start_commands(self, booted: _Booted, error: str) -> None:
        while True:
            try:
                item = _backend.queue_get(booted.ctl_qid)
            except _backend.QueueNotFoundError:
                return
            if item is _backend.EMPTY:
                return
            try:
                request = decode(item)  # type: ignore[arg-type]
            except BaseException:
                continue
            if request[0] == "start":
                request[5].send(("spawnerror", error))

    def _reap(self) -> None:
        """Destroy every exited isolate whose sent messages were all received."""
        with self.lock:
            ready = [
                zombie
                for zombie in self.zombies
                if not any(_backend.queue_count(qid) for qid in zombie[1])
            ]
            for zombie in ready:
                self.zombies.remove(zombie)
                _backend.queue_get(self.zombie_qid)
            self.destroying += len(ready)
        for interp, _ in ready:
            _backend.interpreter_destroy(interp)
        with self.lock:
            self.destroying -= len(ready)
            self.changed.notify_all()

    # -- the hub thread ---------------------------------------------------------

    def _serve(self) -> None:
        while not self.closing:
            _backend.wait_readable([self.rfd], None)
            _backend.waker_drain(self.rfd)
            while (item := _backend.queue_get(self.queue)) is not _backend.EMPTY:
                self._handle(decode(item))  # type: ignore[arg-type]
            self._reap()

    def _handle(self, request: tuple[Any, ...]) -> None:
        if request[0] == "ready":  # a spare finished starting up
            with self.lock:
                for booted in self.warming:
                    if booted.ctl_qid == request[1]:
                        self.warming.remove(booted)
                        self.spares.append(booted)
                        break
            return
        kind, reply = request[0], request[-1]
        if kind == "acquire":
            try:
                reply.send(("ok", self.acquire(request[1])))
            except BaseException as error:
                reply.send(("error", f"{type(error).__name__}: {error}"))
            self.replenish()
            return
        # Services over isolates answer requests from isolates here; each
        # module is imported the first time an isolate asks for it.
        module = f"subiso.{_SERVICES[kind]}"
        __import__(module)
        sys.modules[module].serve(request)

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
        """Wait until no isolate but the spares is left; True if so in time."""
        with self.lock:
            return self.changed.wait_for(lambda: self._busy() == 0, timeout)

    def shutdown(self) -> None:
        """At interpreter exit: kill every isolate, join, destroy what is left."""
        with self.lock:
            self.closing = True
            booted = list(self.live.values())
        for each in booted:
            try:
                each.control.send(("kill", _ANY_CAPABILITY, IMMEDIATE))
            except BaseException:
                pass
        for each in booted:
            if each.thread is not None and each.thread is not threading.current_thread():
                each.thread.join()
        # The hub thread may be destroying an interpreter right now. It must
        # be done before the process finalizes: CPython would end that
        # interpreter a second time and crash (seen on 3.14 and 3.15).
        _backend.wake(self.wfd)
        if self.thread is not threading.current_thread():
            self.thread.join(HUB_EXIT_SECONDS)
        if self.thread.is_alive():
            return  # wedged in a service: destroying beside it could crash
        with self.lock:
            zombies, self.zombies = self.zombies, []
        for interp, _ in zombies:
            _backend.interpreter_destroy(interp)


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


class _AnyCapability:
    """The hub's own key: at interpreter exit every isolate is killed."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return 0

    def __reduce__(self) -> str:
        return "_ANY_CAPABILITY"


_ANY_CAPABILITY = _AnyCapability()

_hub: _Hub | None = None
_hub_lock = threading.Lock()


def _the_hub() -> _Hub:
    global _hub
    if _hub is None:
        with _hub_lock:
            if _hub is None:
                _hub = _Hub()
    return _hub


def _replenish() -> None:
    if _hub is not None:
        _hub.replenish()


def _put_hub_request(request: tuple[Any, ...]) -> None:
    runtime = Runtime.current
    assert runtime is not None
    _backend.queue_put(runtime.hub_qid, encode(request))
    _Local.sent_to.add(runtime.hub_qid)
    _backend.wake(_Process.hub_wfd)


def _hub_answer(answer: tuple[Any, ...]) -> Any:
    status, value = answer
    if status == "ok":
        return value
    if status == "err":
        raise decode_exception(value)
    raise IsolateSpawnError(value)


def hub_request(kind: str, *payload: Any) -> Any:
    """Ask the hub in the main interpreter (from an isolate) and wait for the answer.

    Raises:
        Exception: what the service raised, as itself.
    """
    with ReceivePort() as reply:
        _put_hub_request((kind, *payload, reply.send_port))
        return _hub_answer(reply.receive())


async def hub_request_async(kind: str, *payload: Any) -> Any:
    with ReceivePort() as reply:
        _put_hub_request((kind, *payload, reply.send_port))
        return _hub_answer(await reply.receive_async())


def _acquire(isolation: str) -> SendPort:
    """Control port of a fresh isolate waiting for its start command."""
    if Runtime.current is None:
        return _the_hub().acquire(isolation)
    port: SendPort = hub_request("acquire", isolation)
    return port


async def _acquire_async(isolation: str) -> SendPort:
    if Runtime.current is None:
        return _the_hub().acquire(isolation)
    port: SendPort = await hub_request_async("acquire", isolation)
    return port


# -- one-shot work ------------------------------------------------------------


def _run_job(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    debug_name: str | None,
    reply: ReceivePort,
) -> tuple[tuple[Any, ...], Capability]:
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    terminate = Capability()
    job = encode(
        ("start", "run", debug_name, None, terminate, reply.send_port, (fn, args, kwargs)),
        "call",
    )
    return job, terminate


def _result(kind: str, payload: Any = None) -> Any:
    if kind == "ok":
        return payload
    if kind == "err":
        raise decode_exception(payload)
    if kind == "spawnerror":
        raise IsolateSpawnError(f"the isolate could not start: {payload}")
    raise BrokenIsolateError("the isolate exited before it returned a result")


def _kill_on_interrupt(control: SendPort, terminate: Capability) -> None:
    try:
        control.send(("kill", terminate, IMMEDIATE))
    except BaseException:
        pass


def _run(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    debug_name: str | None,
    isolation: str,
) -> Any:
    _check_isolation(isolation)
    with ReceivePort() as reply:
        job, terminate = _run_job(fn, args, kwargs, debug_name, reply)
        control = _acquire(isolation)
        control._send_item(job)
        try:
            message = decode(reply._receive_item(None))
            _replenish()
            if message[0] != "stream":
                return _result(*message)
            decoder = StreamDecoder(message[1])
            while not decoder.done:
                item = reply._receive_item(None)
                if item[0] != PICKLED:
                    return _result(*decode(item))
                decoder.add(item)
            return decoder.result()
        except BaseException as error:
            if not isinstance(error, Exception):  # KeyboardInterrupt: stop the work too
                _kill_on_interrupt(control, terminate)
            raise


async def _run_async(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    debug_name: str | None,
    isolation: str,
) -> Any:
    import asyncio

    _check_isolation(isolation)
    with ReceivePort() as reply:
        job, terminate = _run_job(fn, args, kwargs, debug_name, reply)
        control = await _acquire_async(isolation)
        control._send_item(job)
        try:
            message = decode(await reply._receive_item_async(None))
            _replenish()
            if message[0] != "stream":
                return _result(*message)
            decoder = StreamDecoder(message[1])
            while not decoder.done:
                item = await reply._receive_item_async(None)
                began = _perf_counter()
                # Unpickle slices while they are waiting, up to the turn's
                # budget, then let the loop run.
                while True:
                    if item[0] != PICKLED:
                        return _result(*decode(item))
                    decoder.add(item)
                    if decoder.done or _perf_counter() - began > DELIVERY_BUDGET:
                        break
                    waiting = reply._poll_item()
                    if waiting is _backend.EMPTY:
                        break
                    item = cast("tuple[Any, ...]", waiting)
                if delivery_log is not None:
                    delivery_log.append((began, _perf_counter()))
                await asyncio.sleep(0)
            return decoder.result()
        except BaseException:
            _kill_on_interrupt(control, terminate)
            raise


# Event-loop time run_async spends unpickling a streamed result in one turn.
DELIVERY_BUDGET = 0.003

# (start, end) of every turn run_async spends unpickling, when a benchmark sets a list.
delivery_log: list[tuple[float, float]] | None = None


def run(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` in a fresh isolate and return its result.

    The isolate is used for this call only and is gone afterwards.

    Raises:
        NotSendableError: ``fn``, an argument or the result cannot cross.
        BrokenIsolateError: the isolate died before it returned.
        Exception: what ``fn`` raised, as its own type when it can be sent
            back, with the remote traceback as a ``RemoteError`` ``__cause__``.
    """
    return _run(fn, args, kwargs, None, "isolated")


async def run_async(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``run`` for asyncio: never blocks the event loop, even for a huge result."""
    return await _run_async(fn, args, kwargs, None, "isolated")


def compute(callback: Callable[[Any], Any], message: Any) -> Any:
    """Flutter's ``compute``: ``run(callback, message)``."""
    return _run(callback, (message,), {}, None, "isolated")


async def compute_async(callback: Callable[[Any], Any], message: Any) -> Any:
    """Flutter's ``compute`` for asyncio."""
    return await _run_async(callback, (message,), {}, None, "isolated")


# -- the Isolate handle -------------------------------------------------------


class Isolate:
    """A handle on an isolate: a subinterpreter with its own GIL and thread.

    Handles are sendable; a handle carries the capabilities it was given, and
    a control request without the right capability is ignored, as in Dart.
    """

    IMMEDIATE = IMMEDIATE
    BEFORE_NEXT_EVENT = BEFORE_NEXT_EVENT

    def __init__(
        self,
        control_port: SendPort | None,
        *,
        pause_capability: Capability | None = None,
        terminate_capability: Capability | None = None,
        debug_name: str | None = None,
    ) -> None:
        self._control = control_port
        self.pause_capability = pause_capability
        self.terminate_capability = terminate_capability
        self.debug_name = debug_name
        self._exit_port: ReceivePort | None = None
        self._exited = False

    @property
    def control_port(self) -> SendPort | None:
        """The isolate's control port (None for the main isolate)."""
        return self._control

    def __repr__(self) -> str:
        name = f" {self.debug_name!r}" if self.debug_name else ""
        where = "main" if self._control is None else self._control._qid
        return f"<Isolate{name} {where}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Isolate) and other._control == self._control

    def __hash__(self) -> int:
        return hash((Isolate, self._control))

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _isolate,
            (self._control, self.pause_capability, self.terminate_capability, self.debug_name),
        )

    # -- making isolates --------------------------------------------------------

    @staticmethod
    def _spawn_job(
        entry: Callable[[Any], Any],
        message: Any,
        paused: bool,
        errors_are_fatal: bool,
        on_exit: SendPort | None,
        on_error: SendPort | None,
        debug_name: str | None,
        isolation: str,
        exit_response: Any = None,
    ) -> tuple[Isolate, ReceivePort, tuple[Any, ...]]:
        _check_isolation(isolation)
        if not callable(entry):
            raise TypeError(f"entry {entry!r} is not callable")
        handle = Isolate(
            None,
            pause_capability=Capability(),
            terminate_capability=Capability(),
            debug_name=debug_name,
        )
        handle._exit_port = ReceivePort("exit")
        ack = ReceivePort("spawn")
        try:
            job = encode(
                (
                    "start",
                    "spawn",
                    debug_name,
                    handle.pause_capability,
                    handle.terminate_capability,
                    ack.send_port,
                    (
                        entry,
                        message,
                        (paused, errors_are_fatal, on_exit, on_error, exit_response),
                        handle._exit_port.send_port,
                    ),
                ),
                "spawn",
            )
        except NotSendableError as error:
            ack.close()
            handle._exit_port.close()
            raise _SpawnNotSendableError(str(error)) from error
        return handle, ack, job

    @staticmethod
    def _spawned(handle: Isolate, ack_message: tuple[Any, ...]) -> Isolate:
        if ack_message[0] != "started":
            handle._exited = True
            if handle._exit_port is not None:
                handle._exit_port.close()
            raise IsolateSpawnError(f"the isolate could not start: {ack_message[1]}")
        return handle

    @staticmethod
    def spawn(
        entry: Callable[[Any], Any],
        message: Any = None,
        *,
        paused: bool = False,
        errors_are_fatal: bool = True,
        on_exit: SendPort | None = None,
        on_error: SendPort | None = None,
        debug_name: str | None = None,
        isolation: str = "isolated",
    ) -> Isolate:
        """Start ``entry(message)`` in a new isolate and return its handle.

        Returns once the isolate has started. ``entry`` may be a function or
        an ``async def``, which then runs on the isolate's event loop.

        Raises:
            IsolateSpawnError: the isolate could not start (also a
                NotSendableError when ``entry`` or ``message`` cannot cross).
        """
        return spawn_isolate(
            entry, message, paused, errors_are_fatal, on_exit, on_error, debug_name, isolation
        )

    @staticmethod
    async def spawn_async(
        entry: Callable[[Any], Any],
        message: Any = None,
        *,
        paused: bool = False,
        errors_are_fatal: bool = True,
        on_exit: SendPort | None = None,
        on_error: SendPort | None = None,
        debug_name: str | None = None,
        isolation: str = "isolated",
    ) -> Isolate:
        """``spawn`` for asyncio."""
        handle, ack, job = Isolate._spawn_job(
            entry, message, paused, errors_are_fatal, on_exit, on_error, debug_name, isolation
        )
        with ack:
            handle._control = await _acquire_async(isolation)
            handle._control._send_item(job)
            started = await ack.receive_async()
        _replenish()
        return Isolate._spawned(handle, started)

    @staticmethod
    def run(
        computation: Callable[[], Any],
        *,
        debug_name: str | None = None,
        isolation: str = "isolated",
    ) -> Any:
        """Dart's ``Isolate.run``: ``computation()`` in a fresh isolate."""
        return _run(computation, (), {}, debug_name, isolation)

    @staticmethod
    async def run_async(
        computation: Callable[[], Any],
        *,
        debug_name: str | None = None,
        isolation: str = "isolated",
    ) -> Any:
        """Dart's ``Isolate.run`` for asyncio."""
        return await _run_async(computation, (), {}, debug_name, isolation)

    @staticmethod
    def current() -> Isolate:
        """The isolate this code runs in (the main isolate too)."""
        runtime = Runtime.current
        if runtime is None:
            return _MAIN
        return Isolate(
            SendPort(runtime.ctl_qid, runtime.ctl_wfd),
            pause_capability=runtime.pause_cap,  # type: ignore[arg-type]
            terminate_capability=runtime.terminate_cap,  # type: ignore[arg-type]
            debug_name=runtime.debug_name,
        )

    @staticmethod
    def exit(port: SendPort | None = None, message: Any = None) -> NoReturn:
        """Send ``message`` on ``port``, then end the current isolate at once.

        In the main isolate this raises ``SystemExit``.
        """
        _runtime.exit_current(port, message)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- control --------------------------------------------------------------

    def _request(self, *request: Any) -> None:
        if self._control is None:
            raise RuntimeError("the main isolate has no control port")
        self._control.send(request)

    def kill(self, priority: int = IMMEDIATE) -> None:
        """Stop the isolate: ``IMMEDIATE`` interrupts even a busy Python loop
        (a blocking C call finishes first); ``BEFORE_NEXT_EVENT`` lets the
        running handler finish and drops the rest."""
        self._request("kill", self.terminate_capability, priority)

    def pause(self, resume_capability: Capability | None = None) -> Capability:
        """Queue port events until ``resume(capability)``; returns the capability."""
        capability = resume_capability or Capability()
        self._request("pause", capability)
        return capability

    def resume(self, capability: Capability) -> None:
        self._request("resume", capability)

    def ping(self, port: SendPort, response: Any = None, priority: int = IMMEDIATE) -> None:
        """Send ``response`` on ``port`` from the isolate (now, or before its next event)."""
        self._request("ping", port, response, priority)

    def add_on_exit_listener(self, port: SendPort, response: Any = None) -> None:
        self._request("add_exit", port, response)

    def remove_on_exit_listener(self, port: SendPort) -> None:
        self._request("remove_exit", port)

    def add_error_listener(self, port: SendPort) -> None:
        self._request("add_error", port)

    def remove_error_listener(self, port: SendPort) -> None:
        self._request("remove_error", port)

    def set_errors_fatal(self, flag: bool) -> None:
        self._request("fatal", bool(flag))

    # -- waiting ----------------------------------------------------------------

    def is_alive(self) -> bool:
        if self._control is None:
            return True
        if self._exited:
            return False
        if self._exit_port is not None and self._exit_port._poll_item() is not _backend.EMPTY:
            self._mark_exited()
            return False
        return _backend.queue_exists(self._control._qid)

    def _mark_exited(self) -> None:
        self._exited = True
        if self._exit_port is not None:
            self._exit_port.close()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the isolate has exited; False if ``timeout`` passed first."""
        if self._control is None:
            raise RuntimeError("cannot join the main isolate")
        if self._exited:
            return True
        if self._exit_port is not None:
            try:
                self._exit_port.receive(timeout)
            except TimeoutError:
                return False
            self._mark_exited()
            return True
        with ReceivePort() as port:  # a handle that travelled: listen for the exit
            self.add_on_exit_listener(port.send_port)
            deadline = None if timeout is None else _perf_counter() + timeout
            while _backend.queue_exists(self._control._qid):
                step = 0.05 if deadline is None else min(0.05, deadline - _perf_counter())
                if step <= 0:
                    return False
                try:
                    port.receive(step)
                    break
                except TimeoutError:
                    continue
        self._exited = True
        return True

    def __enter__(self) -> Isolate:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._control is not None and self.is_alive():
            self.kill(IMMEDIATE)
        if self._control is not None:
            self.join()


def spawn_isolate(
    entry: Callable[[Any], Any],
    message: Any,
    paused: bool = False,
    errors_are_fatal: bool = True,
    on_exit: SendPort | None = None,
    on_error: SendPort | None = None,
    debug_name: str | None = None,
    isolation: str = "isolated",
    exit_response: Any = None,
) -> Isolate:
    """``Isolate.spawn``, plus the response its ``on_exit`` port gets (for
    services such as the pool, that tell their isolates apart by it)."""
    handle, ack, job = Isolate._spawn_job(
        entry,
        message,
        paused,
        errors_are_fatal,
        on_exit,
        on_error,
        debug_name,
        isolation,
        exit_response,
    )
    with ack:
        handle._control = _acquire(isolation)
        handle._control._send_item(job)
        started = ack.receive()
    _replenish()
    return Isolate._spawned(handle, started)


def _isolate(
    control: SendPort | None,
    pause: Capability | None,
    terminate: Capability | None,
    debug_name: str | None,
) -> Isolate:
    if control is None:
        return _MAIN
    return Isolate(
        control, pause_capability=pause, terminate_capability=terminate, debug_name=debug_name
    )


_MAIN = Isolate(None, debug_name="main")


def settle(timeout: float = 10.0) -> bool:
    """Wait until only spare isolates are left (for tests and benchmarks)."""
    return True if _hub is None else _hub.settle(timeout)
