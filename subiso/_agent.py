"""``Agent``: state that lives in its own isolate (the pub package isolate_agents).

The state is built inside the agent's isolate by ``factory(*args)`` and never
leaves it unless asked: ``update(fn)`` sends a function that replaces the
state with ``fn(state)`` (fire and forget, applied in order), ``read(query)``
sends back ``query(state)``. After an update raises, its error is kept and
later updates are skipped until ``reset_error()``; reads keep working.
"""

from __future__ import annotations

from ._backend import EMPTY
from ._exceptions import BrokenIsolateError, RemoteError
from ._isolate import Isolate, _check_isolation, spawn_isolate
from ._ports import ReceivePort, SendPort
from ._wire import decode, decode_exception

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ("Agent",)


def _agent_main(config: tuple[Any, ...]) -> None:
    """The agent's isolate: build the state, then serve requests in order."""
    factory, args, events = config
    from ._ports import ReceivePort
    from ._wire import encode_exception

    inbox = ReceivePort("agent")
    try:
        state = factory(*args)
    except Exception as failure:
        events.send(("failed", encode_exception(failure)))
        return
    events.send(("ready", inbox.send_port))
    error: tuple[Any, ...] | None = None
    generation = 0
    for request in inbox:
        kind = request[0]
        if kind == "update":
            if error is not None:
                continue
            try:
                state = request[1](state)
            except Exception as failure:
                error = encode_exception(failure)
                events.send(("error", generation, error))
        elif kind == "read":
            _, query, reply = request
            try:
                reply.send(("ok", state if query is None else query(state)))
            except Exception as failure:
                reply.send(("err", encode_exception(failure)))
        elif kind == "reset":
            error = None
            generation = request[1]
        elif kind == "exit":
            request[1].send(("ok", state))
            inbox.close()


class Agent:
    """A handle on state kept in its own isolate."""

    def __init__(self, isolate: Isolate, inbox: SendPort, events: ReceivePort) -> None:
        self._isolate = isolate
        self._inbox = inbox
        self._events = events
        self._error: RemoteError | None = None
        self._generation = 0
        self._gone = False

    @staticmethod
    def _start(
        factory: Callable[..., Any], args: tuple[Any, ...], isolation: str
    ) -> tuple[Isolate, ReceivePort]:
        _check_isolation(isolation)
        if not callable(factory):
            raise TypeError(f"factory {factory!r} is not callable")
        events = ReceivePort("agent events")
        try:
            isolate = spawn_isolate(
                _agent_main,
                (factory, args, events.send_port),
                on_exit=events.send_port,
                exit_response=("exit",),
                debug_name=getattr(factory, "__name__", "agent"),
                isolation=isolation,
            )
        except BaseException:
            events.close()
            raise
        return isolate, events

    @classmethod
    def _ready(cls, isolate: Isolate, events: ReceivePort, first: tuple[Any, ...]) -> Agent:
        if first[0] != "ready":
            events.close()
            isolate.join(60)
            if first[0] == "failed":
                raise decode_exception(first[1])
            raise BrokenIsolateError("the agent's isolate exited while it was being built")
        return cls(isolate, first[1], events)

    @classmethod
    def create(cls, factory: Callable[..., Any], *args: Any, isolation: str = "isolated") -> Agent:
        """Build ``factory(*args)`` inside a new isolate and return its agent.

        Raises:
            Exception: what ``factory`` raised, as itself.
            NotSendableError: ``factory`` or an argument cannot cross.
        """
        isolate, events = cls._start(factory, args, isolation)
        return cls._ready(isolate, events, events.receive())

    @classmethod
    async def create_async(
        cls, factory: Callable[..., Any], *args: Any, isolation: str = "isolated"
    ) -> Agent:
        """``create`` for asyncio."""
        isolate, events = cls._start(factory, args, isolation)
        return cls._ready(isolate, events, await events.receive_async())

    def _check(self) -> None:
        if self._gone:
            raise BrokenIsolateError("the agent has exited")

    def update(self, fn: Callable[[Any], Any]) -> None:
        """Replace the state with ``fn(state)`` in the agent's isolate; returns at once.

        Updates apply in the order sent; after one raises, later ones are
        skipped until ``reset_error()``.

        Raises:
            NotSendableError: ``fn`` cannot cross.
        """
        self._check()
        self._inbox.send(("update", fn))

    def _read_reply(self, reply: tuple[Any, ...]) -> Any:
        self._drain_events()
        status, value = reply
        if status == "ok":
            return value
        if status == "err":
            raise decode_exception(value)
        self._gone = True
        raise BrokenIsolateError("the agent's isolate died before it answered")

    def read(self, query: Callable[[Any], Any] | None = None) -> Any:
        """Return ``query(state)``, or the state itself, from the agent's isolate.

        Raises:
            BrokenIsolateError: the agent is gone.
            Exception: what ``query`` raised, as itself.
        """
        self._check()
        with ReceivePort() as port:
            self._ask(("read", query, port.send_port), port)
            try:
                return self._read_reply(port.receive())
            finally:
                self._isolate.remove_on_exit_listener(port.send_port)

    async def read_async(self, query: Callable[[Any], Any] | None = None) -> Any:
        """``read`` for asyncio."""
        self._check()
        with ReceivePort() as port:
            self._ask(("read", query, port.send_port), port)
            try:
                return self._read_reply(await port.receive_async())
            finally:
                self._isolate.remove_on_exit_listener(port.send_port)

    def _ask(self, request: tuple[Any, ...], port: ReceivePort) -> None:
        """Send a request whose answer comes on ``port``; if the agent dies
        first, ``port`` hears of it instead."""
        self._isolate.add_on_exit_listener(port.send_port, ("exit", None))
        self._inbox.send(request)

    def _drain_events(self) -> None:
        while (item := self._events._poll_item()) is not EMPTY:
            event = decode(item)  # type: ignore[arg-type]
            if event[0] == "error" and event[1] == self._generation:
                remote = decode_exception(event[2])
                cause = remote if isinstance(remote, RemoteError) else remote.__cause__
                self._error = cause if isinstance(cause, RemoteError) else RemoteError(str(remote))
            elif event[0] == "exit":
                self._gone = True

    @property
    def error(self) -> RemoteError | None:
        """The error of the update that failed (a ``RemoteError``), or None."""
        self._drain_events()
        return self._error

    def reset_error(self) -> None:
        """Forget the error; later updates apply again."""
        self._check()
        self._drain_events()
        self._generation += 1
        self._error = None
        self._inbox.send(("reset", self._generation))

    def exit(self) -> Any:
        """End the agent and return its final state.

        Raises:
            BrokenIsolateError: the agent is gone already.
        """
        self._check()
        with ReceivePort() as port:
            self._ask(("exit", port.send_port), port)
            state = self._read_reply(port.receive())
        self._gone = True
        self._isolate.join(60)
        self._events.close()
        return state

    def kill(self) -> None:
        """Stop the agent at once; its state is lost."""
        if not self._gone:
            self._gone = True
            self._isolate.kill()
            self._isolate.join(60)
            self._events.close()

    def __repr__(self) -> str:
        return f"<Agent {'gone' if self._gone else 'alive'}>"
