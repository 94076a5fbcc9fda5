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

from time import perf_counter as _perf_counter
from typing import NamedTuple

from . import _backend, _finalize, _runtime
from ._drive import drive, drive_async, driven
from ._exceptions import IsolateSpawnError, NotSendableError, PortClosedError
from ._hub import Acquire, check_isolation, replenish
from ._hub import settle as settle
from ._ports import ReceivePort, SendPort
from ._run import _running
from ._runtime import (
    BEFORE_NEXT_EVENT,
    IMMEDIATE,
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

# A join looks again at the exit port at least this often (seconds), in case
# the thread that saw the exit first was cut short before it said so.
_EXIT_LOOK = 1.0


TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from typing import Any, NoReturn

__all__ = ("BEFORE_NEXT_EVENT", "IMMEDIATE", "Capability", "Isolate")


class _SpawnNotSendableError(IsolateSpawnError, NotSendableError):
    """The entry or message of a spawn cannot cross (both kinds of error)."""


class _Started(NamedTuple):
    """Wait for the new isolate to say it started."""

    ack: ReceivePort

    def wait(self) -> Any:
        return self.ack.receive()

    async def wait_async(self) -> Any:
        return await self.ack.receive_async()


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
        result: R = drive(_running(computation, (), {}, debug_name, isolation))
        return result

    @staticmethod
    async def run_async[R](
        computation: Callable[[], R],
        *,
        debug_name: str | None = None,
        isolation: str = "isolated",
    ) -> R:
        """Dart's ``Isolate.run`` for asyncio."""
        result: R = await drive_async(_running(computation, (), {}, debug_name, isolation))
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

    def kill(self, priority: int = IMMEDIATE) -> None:
        """Stop the isolate: ``IMMEDIATE`` interrupts even a busy Python loop
        (a blocking C call finishes first); ``BEFORE_NEXT_EVENT`` lets the
        running handler finish and drops the rest."""
        self._request(Kill(self.terminate_capability, priority))

    def pause(self, resume_capability: Capability | None = None) -> Capability:
        """Queue port events until ``resume(capability)``; returns the capability."""
        capability = resume_capability or Capability()
        self._request(Pause(capability))
        return capability

    def resume(self, capability: Capability) -> None:
        self._request(Resume(capability))

    def ping(self, port: SendPort, response: Any = None, priority: int = IMMEDIATE) -> None:
        """Send ``response`` on ``port`` from the isolate (now, or before its next event)."""
        self._request(Ping(port, response, priority))

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
) -> Generator[Any, Any, Isolate]:
    """The conversation of ``Isolate.spawn``, plus the response its ``on_exit``
    port gets (for services such as the pool, that tell their isolates apart
    by it). Drive it with ``_drive.drive`` or ``drive_async``."""
    check_isolation(isolation)
    if not callable(entry):
        raise TypeError(f"entry {entry!r} is not callable")
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
                    (
                        entry,
                        message,
                        (paused, errors_are_fatal, on_exit, on_error, exit_response),
                        handle._exit_port.send_port,
                    ),
                )
            )
        except NotSendableError as error:
            handle._exit_port.close()
            raise _SpawnNotSendableError(str(error)) from error
        try:
            handle._control = yield Acquire(isolation)
            handle._control._send_item(job)
            started = yield _Started(ack)
        except BaseException:
            handle._exit_port.close()
            raise
    replenish()
    if started[0] != "started":
        handle._exited = True
        handle._exit_port.close()
        raise IsolateSpawnError(f"the isolate could not start: {started[1]}")
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
