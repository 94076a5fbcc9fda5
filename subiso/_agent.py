"""``Agent``: state that lives in its own isolate (the pub package isolate_agents).

Who owns what:

- The state: only the agent's isolate, on its one thread, in ``_serve``. It
  never leaves the isolate unless a read or the exit asks for it.
- The ``Agent`` handle: any thread of the interpreter that created it. Its
  bookkeeping (the update error, the generation, why it ended) and its events
  port are touched only under ``Agent._lock``; ``exit`` calls take turns.
- A reply port: the one call that made it, on the thread or task that waits.

The agent is an actor: it takes typed messages from its inbox one at a time
(``_Update``, ``_Read``, ``_Reset``, ``_Exit``) and tells the handle what
happened on the events port (``_Ready``, ``_Failed``, ``_UpdateFailed``,
``_Broken``, and ``_Exited`` when the isolate exits). An error in a user
function is the user's: it goes back to the caller, or into ``error``. An
error of the loop itself is caught by one safety net: the agent says it is
broken and ends, and every caller then gets ``BrokenServiceError``.

Nobody waits forever on a dead agent: each wait for an answer has its reply
port registered as an exit listener of the isolate, and looks between
bounded waits whether the isolate is gone (see ``_waits``).
"""

from __future__ import annotations

import threading
from time import monotonic as _monotonic
from typing import NamedTuple, overload

from . import _backend
from ._backend import EMPTY
from ._drive import drive, drive_async
from ._exceptions import BrokenIsolateError, BrokenServiceError, PortClosedError, RemoteError
from ._hub import check_isolation
from ._isolate import IMMEDIATE, Isolate, spawning
from ._ports import ReceivePort, SendPort
from ._wire import decode, decode_exception, encode_exception

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator
    from typing import Any

__all__ = ("Agent",)

# Seconds a wait for an answer blocks before it looks whether the isolate is
# gone. The exit listener ends the wait at once; the look is for a listener
# that reached the isolate too late to be registered (it had exited already).
WATCH_SECONDS = 0.25

# Seconds kill() and exit() wait for the isolate to be gone.
JOIN_SECONDS = 60.0


# -- messages -----------------------------------------------------------------
# To the agent's inbox:


class _Update(NamedTuple):
    fn: Callable[[Any], Any]


class _Read(NamedTuple):
    query: Callable[[Any], Any] | None  # None: the state itself
    reply: SendPort


class _Reset(NamedTuple):
    generation: int


class _Exit(NamedTuple):
    reply: SendPort


# To a reply port:


class _Answer(NamedTuple):
    ok: bool
    value: Any  # the result, or the encoded exception when not ok


# To the events port:


class _Ready(NamedTuple):
    inbox: SendPort


class _Failed(NamedTuple):
    error: tuple[Any, ...]  # the factory's exception, encoded


class _UpdateFailed(NamedTuple):
    generation: int
    error: tuple[Any, ...]


class _Broken(NamedTuple):
    detail: str
    error: tuple[Any, ...]  # the loop's exception, encoded


class _Exited(NamedTuple):
    """The isolate has exited: its exit listeners (events and reply ports) get this."""


# -- the agent's isolate ------------------------------------------------------


def _agent_main(config: tuple[Any, ...]) -> None:
    """The agent's isolate: build the state, then serve requests in order."""
    factory, args, events = config
    inbox = ReceivePort("agent")
    try:
        state = factory(*args)
    except Exception as failure:
        events.send(_Failed(encode_exception(failure)))
        return
    events.send(_Ready(inbox.send_port))
    try:
        _serve(state, inbox, events)
    except Exception as failure:  # the safety net: the loop itself failed
        detail = f"its loop failed: {type(failure).__name__}: {failure}"
        events.send(_Broken(detail, encode_exception(failure)))
        # Returning ends the isolate: every waiter's exit listener tells it.


def _serve(state: Any, inbox: ReceivePort, events: SendPort) -> None:
    error: tuple[Any, ...] | None = None  # of the failed update; updates skip meanwhile
    generation = 0
    for request in inbox:
        match request:
            case _Update(fn):
                if error is not None:
                    continue
                try:
                    state = fn(state)
                except Exception as failure:
                    error = encode_exception(failure)
                    events.send(_UpdateFailed(generation, error))
            case _Read(query, reply):
                _answer(reply, query, state)
            case _Reset(generation):
                error = None
            case _Exit(reply):
                _answer(reply, None, state)
                return  # requests queued behind the exit are dropped with the inbox
            case _:
                raise TypeError(f"unknown request {request!r}")


def _answer(reply: SendPort, query: Callable[[Any], Any] | None, state: Any) -> None:
    """Send ``query(state)`` (or the state), or what went wrong in user code:
    the query, or pickling its result."""
    try:
        answer = _Answer(True, state if query is None else query(state))
    except Exception as failure:
        answer = _Answer(False, encode_exception(failure))
    try:
        reply.send(answer)
    except Exception as failure:
        reply.send(_Answer(False, encode_exception(failure)))


# -- the handle ---------------------------------------------------------------


class Agent[S]:
    """A handle on state (of type ``S``) kept in its own isolate."""

    def __init__(self, isolate: Isolate, inbox: SendPort, events: ReceivePort) -> None:
        self._isolate = isolate
        self._inbox = inbox
        self._events = events
        self._lock = threading.Lock()
        self._error: RemoteError | None = None
        self._generation = 0
        self._ended: str | None = None  # why the agent is gone, once it is
        self._broken: _Broken | None = None  # the loop failed (the safety net said so)
        self._released = False  # events port closed, isolate joined
        self._exit_lock = threading.Lock()
        self._exit_reply: ReceivePort | None = None  # an exit that timed out waits here

    # -- making agents ------------------------------------------------------------

    @staticmethod
    def _starting(
        factory: Callable[..., Any], args: tuple[Any, ...], isolation: str
    ) -> Generator[Any, Any, tuple[Isolate, ReceivePort]]:
        """The conversation that starts an agent's isolate (see _drive):
        its handle and the events port, once its isolate runs."""
        check_isolation(isolation)
        if not callable(factory):
            raise TypeError(f"factory {factory!r} is not callable")
        events = ReceivePort("agent events")
        try:
            isolate = yield from spawning(
                _agent_main,
                (factory, args, events.send_port),
                on_exit=events.send_port,
                exit_response=_Exited(),
                debug_name=getattr(factory, "__name__", "agent"),
                isolation=isolation,
            )
        except BaseException:
            events.close()
            raise
        return isolate, events

    @classmethod
    def _ready(cls, isolate: Isolate, events: ReceivePort, first: Any) -> Agent[S]:
        # The events port is the isolate's exit listener: waiting on it for
        # the first message cannot outlast the isolate.
        if isinstance(first, _Ready):
            return cls(isolate, first.inbox, events)
        events.close()
        if isinstance(first, _Failed):
            raise decode_exception(first.error)
        raise BrokenIsolateError("the agent's isolate exited while it was being built")

    @classmethod
    def create[*Ts](
        cls, factory: Callable[[*Ts], S], *args: *Ts, isolation: str = "isolated"
    ) -> Agent[S]:
        """Build ``factory(*args)`` inside a new isolate and return its agent.

        Raises:
            Exception: what ``factory`` raised, as itself.
            NotSendableError: ``factory`` or an argument cannot cross.
            BrokenIsolateError: the isolate exited before the state was built.
        """
        isolate, events = drive(cls._starting(factory, args, isolation))
        try:
            first = events.receive()
        except BaseException:  # interrupted: the agent's isolate ends with the call
            events.close()
            isolate.kill(IMMEDIATE)
            isolate.join(JOIN_SECONDS)
            raise
        agent = cls._ready(isolate, events, first)
        if not isinstance(first, _Ready):
            isolate.join(JOIN_SECONDS)
        return agent

    @classmethod
    async def create_async[*Ts](
        cls, factory: Callable[[*Ts], S], *args: *Ts, isolation: str = "isolated"
    ) -> Agent[S]:
        """``create`` for asyncio: it never blocks the event loop."""
        isolate, events = await drive_async(cls._starting(factory, args, isolation))
        try:
            first = await events.receive_async()
        except BaseException:  # cancelled: the agent's isolate ends with the call
            events.close()
            isolate.kill(IMMEDIATE)
            await isolate._wait_for_exit_async()
            raise
        if not isinstance(first, _Ready):
            try:
                return cls._ready(isolate, events, first)
            finally:
                await isolate._wait_for_exit_async()
        return cls._ready(isolate, events, first)

    # -- what the handle knows ----------------------------------------------------

    def _take_events(self) -> None:
        """Take in what the agent said on the events port. Under ``_lock``."""
        while not self._events.is_closed:
            item = self._events._poll_item()
            if item is EMPTY:
                return
            match decode(item):  # type: ignore[arg-type]
                case _UpdateFailed(generation, error) if generation == self._generation:
                    remote = decode_exception(error)
                    cause = remote if isinstance(remote, RemoteError) else remote.__cause__
                    self._error = (
                        cause if isinstance(cause, RemoteError) else RemoteError(str(remote))
                    )
                case _Broken() as broken:
                    self._broken = broken
                case _Exited():
                    self._end("the agent's isolate has exited")

    def _end(self, reason: str) -> None:
        """Record why the agent is gone (the first reason stays). Under ``_lock``."""
        if self._ended is None:
            self._ended = reason

    def _isolate_gone(self) -> bool:
        """Whether the isolate is past answering: its teardown destroys the
        control queue after the last answer it will ever send was sent."""
        control = self._isolate.control_port
        return control is None or not _backend.queue_exists(control._qid)

    def _ended_error(self) -> BrokenIsolateError:
        """The error a call on a gone agent raises; also releases what the
        handle holds. Call it once the agent is known to be gone."""
        with self._lock:
            self._take_events()
            self._end("the agent's isolate has exited")
            broken, reason = self._broken, self._ended
        self._release()
        if broken is not None:
            error: BrokenIsolateError = BrokenServiceError("agent", broken.detail)
            error.__cause__ = decode_exception(broken.error)  # the loop's own error
        else:
            error = BrokenIsolateError(reason)
        error.__suppress_context__ = True  # a port wait that ended, as it should
        return error

    def _check(self) -> None:
        """Raise if the agent is gone or asked to exit."""
        with self._lock:
            self._take_events()
            gone = self._ended is not None or self._broken is not None
            exiting = self._exit_reply is not None
        if gone or self._isolate_gone():
            raise self._ended_error()
        if exiting:
            raise BrokenIsolateError("the agent is exiting")

    def _release(self) -> None:
        """Close the events port and join the isolate, once. Only for a gone agent."""
        with self._lock:
            if self._released:
                return
            self._released = True
            self._events.close()
        self._isolate.join(JOIN_SECONDS)

    # -- waiting for answers ------------------------------------------------------

    def _ask(self, request: _Read | _Exit, port: ReceivePort) -> None:
        """Send a request whose answer comes on ``port``; if the isolate
        exits first, ``port`` hears of it instead."""
        self._isolate.add_on_exit_listener(port.send_port, _Exited())
        self._inbox.send(request)

    def _waits(self, timeout: float | None) -> Iterator[float]:
        """How long each look at a reply port may block, until one brings a
        message; raises once none can come, or when ``timeout`` has passed.

        A reply port hears the isolate's exit, but an exit listener sent
        after the isolate was torn down is lost: so between bounded looks,
        ask whether the isolate is gone, and then look once more without
        blocking (its answer, if it sent one, is there already).
        """
        deadline = None if timeout is None else _monotonic() + timeout
        while True:
            gone = self._isolate_gone()
            if gone:
                yield 0.0
                raise self._ended_error()
            remaining = None if deadline is None else deadline - _monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"the agent did not answer within {timeout} s")
            yield WATCH_SECONDS if remaining is None else min(WATCH_SECONDS, remaining)

    def _answered(self, message: _Answer | _Exited) -> Any:
        if isinstance(message, _Answer):
            if message.ok:
                return message.value
            raise decode_exception(message.value)
        raise self._ended_error()  # _Exited: the isolate exited before it answered

    def _forget(self, port: ReceivePort) -> None:
        if not self._isolate_gone():
            self._isolate.remove_on_exit_listener(port.send_port)

    def _wait(self, port: ReceivePort, timeout: float | None) -> _Answer | _Exited:
        """The answer or the exit, whichever ``port`` hears first."""
        for step in self._waits(timeout):
            try:
                message: _Answer | _Exited = port.receive(step)
            except TimeoutError:
                continue
            return message
        raise AssertionError("unreachable")  # pragma: no cover

    async def _wait_async(self, port: ReceivePort, timeout: float | None) -> _Answer | _Exited:
        for step in self._waits(timeout):
            try:
                message: _Answer | _Exited = await port.receive_async(step)
            except TimeoutError:
                continue
            return message
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the surface ----------------------------------------------------------------

    def update(self, fn: Callable[[S], S]) -> None:
        """Replace the state with ``fn(state)`` in the agent's isolate; returns at once.

        Updates apply in the order sent; after one raises, later ones are
        skipped until ``reset_error()``.

        Raises:
            NotSendableError: ``fn`` cannot cross.
            BrokenIsolateError: the agent is gone or exiting
                (``BrokenServiceError`` if its loop broke).
        """
        self._check()
        self._inbox.send(_Update(fn))

    @overload
    def read(self, query: None = None, *, timeout: float | None = None) -> S: ...
    @overload
    def read[R](self, query: Callable[[S], R], *, timeout: float | None = None) -> R: ...
    def read(self, query: Callable[[S], Any] | None = None, *, timeout: float | None = None) -> Any:
        """Return ``query(state)``, or the state itself, from the agent's isolate.

        Raises:
            BrokenIsolateError: the agent is gone or exiting, or its isolate
                exited before it answered (``BrokenServiceError`` if its
                loop broke).
            TimeoutError: no answer within ``timeout`` seconds; the read
                still runs in the agent, its answer is dropped.
            Exception: what ``query`` raised, as itself.
        """
        self._check()
        with ReceivePort("agent read") as port:
            self._ask(_Read(query, port.send_port), port)
            try:
                return self._answered(self._wait(port, timeout))
            finally:
                self._forget(port)

    @overload
    async def read_async(self, query: None = None, *, timeout: float | None = None) -> S: ...
    @overload
    async def read_async[R](
        self, query: Callable[[S], R], *, timeout: float | None = None
    ) -> R: ...
    async def read_async(
        self, query: Callable[[S], Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """``read`` for asyncio."""
        self._check()
        with ReceivePort("agent read") as port:
            self._ask(_Read(query, port.send_port), port)
            try:
                return self._answered(await self._wait_async(port, timeout))
            finally:
                self._forget(port)

    @property
    def error(self) -> RemoteError | None:
        """The error of the update that failed (a ``RemoteError``), or None."""
        with self._lock:
            self._take_events()
            return self._error

    def reset_error(self) -> None:
        """Forget the error; later updates apply again.

        Raises:
            BrokenIsolateError: the agent is gone or exiting.
        """
        self._check()
        with self._lock:
            self._generation += 1
            self._error = None
            generation = self._generation
        self._inbox.send(_Reset(generation))

    def exit(self, *, timeout: float | None = None) -> S:
        """End the agent once it has applied what was sent before, and return
        its final state.

        Raises:
            BrokenIsolateError: the agent is gone already, or its isolate
                exited before it answered (``BrokenServiceError`` if its
                loop broke).
            TimeoutError: no answer within ``timeout`` seconds. The agent
                still ends when it comes to the exit; call ``exit`` again to
                wait for its state, or ``kill``. Meanwhile other calls raise
                ``BrokenIsolateError``.
            NotSendableError: the final state cannot cross; the agent has
                ended all the same.
        """
        with self._exit_lock:
            with self._lock:
                port = self._exit_reply
            if port is None:
                self._check()
                port = ReceivePort("agent exit")
                with self._lock:
                    self._exit_reply = port
                self._ask(_Exit(port.send_port), port)
            # else an exit that timed out: its answer, or the exit, comes on its port
            try:
                message = self._wait(port, timeout)
            except PortClosedError:  # kill() closed it meanwhile
                message = _Exited()
            except TimeoutError:
                raise
            except Exception:
                port.close()
                raise
            port.close()
            if isinstance(message, _Answer):  # the agent ends after it answers
                with self._lock:
                    self._end("the agent has exited")
                self._release()
            state: S = self._answered(message)
            return state

    def kill(self) -> None:
        """Stop the agent at once; its state is lost. Idempotent."""
        with self._lock:
            self._end("the agent was killed")
            exit_reply = self._exit_reply
        self._isolate.kill(IMMEDIATE)
        if exit_reply is not None:
            exit_reply.close()  # an exit() waiting on it raises
        self._release()

    def __repr__(self) -> str:
        with self._lock:
            gone = self._ended is not None or self._broken is not None
        return f"<Agent {'gone' if gone or self._isolate_gone() else 'alive'}>"
