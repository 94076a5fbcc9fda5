"""The ``Isolate`` handle: spawn, control (kill, pause, ping, listeners), join.

A handle is a value: it holds the isolate's control port and the
capabilities it was given, pickles by those, and may be used from any thread
of any isolate. A control request is a typed message (see ``_runtime``) put
on the control port, carried out by the isolate's control thread, and
ignored without the right capability, as in Dart. The hub (``_hub``) starts
and reaps the isolates behind the handles; ``_run`` does one-shot calls.

Threads: a handle's fields are set once, before it is shared, except
``_exited`` (set by whoever sees the exit first; it only ever becomes True)
and the exit port, which the thread that spawned reads (``join``).
"""

from __future__ import annotations

import enum
from time import perf_counter as _perf_counter
from typing import NamedTuple

from . import _backend, _fallback, _finalize, _runtime
from ._backend import EMPTY
from ._drive import drive, drive_async, driven
from ._exceptions import (
    IsolateSpawnError,
    NotSendableError,
    PortClosedError,
    SubinterpreterImportError,
)
from ._hub import Acquire, answer_item, answer_item_async, check_isolation, replenish
from ._hub import settle as settle
from ._ports import ReceivePort, SendPort
from ._run import refused_by_isolates, running
from ._runtime import (
    AddErrorListener,
    AddExitListener,
    Capability,
    Kill,
    Pause,
    Ping,
    RemoveErrorListener,
    RemoveExitListener,
    Resume,
    Runtime,
    SetErrorsFatal,
    Start,
    request_item,
    start_item,
)
from ._wire import decode

# A join looks again at the exit port at least this often (seconds), in case
# the thread that saw the exit first was cut short before it said so.
_EXIT_LOOK = 1.0


TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from typing import Any, NoReturn

__all__ = ("BEFORE_NEXT_EVENT", "IMMEDIATE", "Capability", "Isolate", "KillPriority")


class KillPriority(enum.IntEnum):
    """When a kill (or a ping) takes effect, as Dart's ``Isolate.immediate``
    and ``Isolate.beforeNextEvent``."""

    #: At once: even busy user code is stopped (a blocking C call finishes first).
    IMMEDIATE = 0
    #: Before the isolate's next event: the running handler, or the entry,
    #: finishes first; what is queued after it is dropped.
    BEFORE_NEXT_EVENT = 1


IMMEDIATE = KillPriority.IMMEDIATE
BEFORE_NEXT_EVENT = KillPriority.BEFORE_NEXT_EVENT


class _SpawnNotSendableError(IsolateSpawnError, NotSendableError):
    """The entry or message of a spawn cannot cross (both kinds of error)."""


class _Answer(NamedTuple):
    """Wait for the new isolate to say it started, or that it did not."""

    ack: ReceivePort
    control: SendPort

    def wait(self) -> tuple[Any, ...]:
        return answer_item(self.ack, self.control)

    async def wait_async(self) -> tuple[Any, ...]:
        return await answer_item_async(self.ack, self.control)


class _Exit(NamedTuple):
    """Wait until the isolate has exited (a spawn's own handle)."""

    isolate: Isolate

    def wait(self) -> None:
        self.isolate.join()

    async def wait_async(self) -> None:
        await self.isolate._wait_for_exit_async()


def _ending(handle: Isolate) -> Generator[Any, Any]:
    """Kill the isolate of a spawn that did not complete, and wait until it
    has exited. A second interruption stops the wait (the kill is posted)."""
    while True:
        try:
            handle.kill(IMMEDIATE)
            break
        except KeyboardInterrupt:
            continue  # (if the kill was posted already, a second one is harmless)
    yield _Exit(handle)


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
        isolate: Isolate = drive(
            spawning(
                entry, message, paused, errors_are_fatal, on_exit, on_error, debug_name, isolation
            )
        )
        return isolate

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
        isolate: Isolate = await drive_async(
            spawning(
                entry, message, paused, errors_are_fatal, on_exit, on_error, debug_name, isolation
            )
        )
        return isolate

    @staticmethod
    def run[R](
        computation: Callable[[], R],
        *,
        debug_name: str | None = None,
        isolation: str = "isolated",
    ) -> R:
        """Dart's ``Isolate.run``: ``computation()`` in a fresh isolate."""
        result: R = drive(running(computation, (), {}, debug_name, isolation))
        return result

    @staticmethod
    async def run_async[R](
        computation: Callable[[], R],
        *,
        debug_name: str | None = None,
        isolation: str = "isolated",
    ) -> R:
        """Dart's ``Isolate.run`` for asyncio."""
        result: R = await drive_async(running(computation, (), {}, debug_name, isolation))
        return result

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

    def _request(self, request: object) -> None:
        if self._control is None:
            raise RuntimeError("the main isolate has no control port")
        self._control._send_item(request_item(request))

    def kill(self, priority: KillPriority = BEFORE_NEXT_EVENT) -> None:
        """Stop the isolate: ``BEFORE_NEXT_EVENT`` (the default, as in Dart)
        lets the running handler or entry finish and drops the events queued
        after it; ``IMMEDIATE`` interrupts even a busy Python loop (a
        blocking C call finishes first).

        Raises:
            ValueError: ``priority`` is not a ``KillPriority``.
        """
        self._request(Kill(self.terminate_capability, int(KillPriority(priority))))

    def pause(self, resume_capability: Capability | None = None) -> Capability:
        """Queue port events until ``resume(capability)``; returns the capability."""
        capability = resume_capability or Capability()
        self._request(Pause(capability))
        return capability

    def resume(self, capability: Capability) -> None:
        self._request(Resume(capability))

    def ping(
        self, port: SendPort, response: Any = None, priority: KillPriority = IMMEDIATE
    ) -> None:
        """Send ``response`` on ``port`` from the isolate: at once (from its
        control thread), or before its next event."""
        self._request(Ping(port, response, int(KillPriority(priority))))

    def add_on_exit_listener(self, port: SendPort, response: Any = None) -> None:
        self._request(AddExitListener(port, response))

    def remove_on_exit_listener(self, port: SendPort) -> None:
        self._request(RemoveExitListener(port))

    def add_error_listener(self, port: SendPort) -> None:
        self._request(AddErrorListener(port))

    def remove_error_listener(self, port: SendPort) -> None:
        self._request(RemoveErrorListener(port))

    def set_errors_fatal(self, flag: bool) -> None:
        self._request(SetErrorsFatal(bool(flag)))

    # -- waiting ----------------------------------------------------------------

    def is_alive(self) -> bool:
        if self._control is None:
            return True
        if self._exited:
            return False
        if self._exit_port is not None and _backend.queue_count(self._exit_port._qid):
            self._mark_exited()
            return False
        return _backend.queue_exists(self._control._qid)

    def _mark_exited(self) -> None:
        self._exited = True
        if self._exit_port is not None:
            self._exit_port.close()

    def _wait_for_exit(self, port: ReceivePort, timeout: float | None) -> bool:
        """Wait until the exit message is on ``port``. It is looked at, never
        taken: a Ctrl-C that lands as a join learns of the exit leaves it
        there for the next join (taken, it was lost, and every later join
        waited for good). The first to see it closes the port, which wakes
        the others; each looks again every _EXIT_LOOK seconds at most."""
        deadline = None if timeout is None else _perf_counter() + timeout
        while not _backend.queue_count(port._qid):
            if self._exited:  # another thread saw the exit and closed the port
                return True
            step = _EXIT_LOOK
            if deadline is not None:
                step = min(step, deadline - _perf_counter())
                if step <= 0:
                    return False
            try:
                port._wait(step, interruptible=True)
            except PortClosedError:
                if self._exited:
                    return True
                raise
        self._mark_exited()
        return True

    async def _wait_for_exit_async(self) -> None:
        """``_wait_for_exit`` for an event loop, with no timeout (a spawn's own handle)."""
        port = self._exit_port
        assert port is not None
        qid = port._qid

        def look() -> object:
            return True if _backend.queue_count(qid) else EMPTY

        while not _backend.queue_count(qid):
            if self._exited:
                return
            try:
                await port._receive_item_async(_EXIT_LOOK, look)
            except TimeoutError:
                continue
            except PortClosedError:
                if self._exited:
                    return
                raise
        self._mark_exited()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the isolate has exited; False if ``timeout`` passed first."""
        if self._control is None:
            raise RuntimeError("cannot join the main isolate")
        if self._exited:
            return True
        if self._exit_port is not None:
            return self._wait_for_exit(self._exit_port, timeout)
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


def spawning(
    entry: Callable[[Any], Any],
    message: Any,
    paused: bool = False,
    errors_are_fatal: bool = True,
    on_exit: SendPort | None = None,
    on_error: SendPort | None = None,
    debug_name: str | None = None,
    isolation: str = "isolated",
    exit_response: Any = None,
    warm_spares: bool = True,
) -> Generator[Any, Any, Isolate]:
    """The conversation of ``Isolate.spawn``, plus the response its ``on_exit``
    port gets (for services such as the pool, that tell their isolates apart
    by it). Drive it with ``_drive.drive`` or ``drive_async``. Once more, by
    value, if isolates refuse a module that the entry or message names.

    ``warm_spares``: have the hub warm spare isolates once this one runs, as
    every spawn and ``run`` does; a pool, whose workers live on, does not
    want them (two idle interpreters, and their start beside its workers')."""
    check_isolation(isolation)
    if not callable(entry):
        raise TypeError(f"entry {entry!r} is not callable")
    options = (paused, errors_are_fatal, on_exit, on_error, exit_response)
    try:
        return (yield from _spawning(entry, message, options, debug_name, isolation, warm_spares))
    except IsolateSpawnError as error:
        refused = f"{SubinterpreterImportError.__name__}:" in str(error)
        if not refused or not (yield from refused_by_isolates((entry, message), isolation)):
            raise
    return (yield from _spawning(entry, message, options, debug_name, isolation, warm_spares))


def _spawning(
    entry: Callable[[Any], Any],
    message: Any,
    options: tuple[Any, ...],
    debug_name: str | None,
    isolation: str,
    warm_spares: bool = True,
) -> Generator[Any, Any, Isolate]:
    """One spawn: start the isolate, and wait until its entry runs."""
    handle = Isolate(
        None,
        pause_capability=Capability(),
        terminate_capability=Capability(),
        debug_name=debug_name,
    )
    handle._exit_port = ReceivePort("exit")
    # The isolate's exit message waits on this port; unread once the handle
    # is gone, it would keep the exited interpreter from being destroyed.
    _finalize.at_collect(handle, handle._exit_port.close)
    with ReceivePort("spawn") as ack:
        try:
            job = start_item(
                Start(
                    "spawn",
                    debug_name,
                    handle.pause_capability,
                    handle.terminate_capability,
                    ack.send_port,
                    handle._exit_port.send_port,
                    (_fallback.for_isolates(entry), message, options),
                )
            )
        except NotSendableError as error:
            handle._exit_port.close()
            raise _SpawnNotSendableError(str(error)) from error
        try:
            control = yield Acquire(isolation, debug_name if type(debug_name) is str else None)
        except BaseException:  # no isolate was set aside for this spawn (see Acquire)
            handle._exit_port.close()
            raise
        handle._control = control
        try:
            if not control._send_item(job):
                raise IsolateSpawnError("the isolate could not start: it ended before its work")
            started = decode((yield _Answer(ack, control)))
        except BaseException:
            # Cancelled, interrupted or failed once the isolate may have its
            # work: it ends before the error goes on (structured: nothing a
            # spawn starts outlives it unless the spawn returns its handle).
            try:
                yield from _ending(handle)
            finally:
                handle._exit_port.close()
            raise
    if warm_spares:
        replenish()
    if started[0] != "started":
        handle._exited = True
        handle._exit_port.close()
        why = started[1] if len(started) > 1 else "it exited before its entry ran"
        raise IsolateSpawnError(f"the isolate could not start: {why}")
    return handle


# ``Isolate.spawn`` for the library's services (the pool, the agent).
spawn_isolate = driven(spawning)


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
