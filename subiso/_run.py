"""One-shot work: ``run``, ``run_async``, ``compute``: a call in a fresh isolate.

The caller sends the call as a start command to a fresh (usually warm) isolate
and waits on a reply port for the result, which comes as one item or, when it
is large, as a stream of pickled slices. The isolate exits after the call.
One conversation (:func:`running`) serves the sync and the async API.

Threads: everything here belongs to the thread (or task) that called.
"""

from __future__ import annotations

from time import perf_counter as _perf_counter
from typing import NamedTuple, cast

from . import _backend, _fallback
from ._drive import PAUSE, drive, drive_async
from ._exceptions import BrokenIsolateError, IsolateSpawnError, SubinterpreterImportError
from ._hub import Acquire, answer_item, answer_item_async, check_isolation, replenish
from ._pickling import StreamDecoder
from ._ports import ReceivePort, SendPort
from ._runtime import IMMEDIATE, Capability, Kill, Start, request_item, start_item
from ._wire import PICKLED, PLAIN, decode, decode_exception, release_item

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from typing import Any

__all__ = ("compute", "compute_async", "run", "run_async")

# Event-loop time run_async spends unpickling a streamed result in one turn.
DELIVERY_BUDGET = 0.003

# (start, end) of every turn spent unpickling, when a benchmark sets a list.
delivery_log: list[tuple[float, float]] | None = None


class _Next(NamedTuple):
    """Wait for the next item on the reply port (an exit notice if the
    isolate is gone without one: see ``answer_item``)."""

    reply: ReceivePort
    control: SendPort

    def wait(self) -> tuple[Any, ...]:
        return answer_item(self.reply, self.control)

    async def wait_async(self) -> tuple[Any, ...]:
        return await answer_item_async(self.reply, self.control)


def _result(kind: str, payload: Any = None) -> Any:
    if kind == "ok":
        return payload
    if kind == "err":
        raise decode_exception(payload)
    if kind == "spawnerror":
        raise IsolateSpawnError(f"the isolate could not start: {payload}")
    raise BrokenIsolateError("the isolate exited before it returned a result")


def running(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    debug_name: str | None,
    isolation: str,
) -> Generator[Any, Any, Any]:
    """The conversation of one ``run``: start the call, then take its
    result; once more, by value, if isolates refuse a module it names."""
    check_isolation(isolation)
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    try:
        return (yield from _calling(fn, args, kwargs, debug_name, isolation))
    except SubinterpreterImportError:
        if not (yield from refused_by_isolates((fn, args, kwargs), isolation)):
            raise
    return (yield from _calling(fn, args, kwargs, debug_name, isolation))


def refused_by_isolates(payload: object, isolation: str) -> Generator[Any, Any, bool]:
    """Whether isolates of this kind refuse to import a module that
    ``payload`` names by reference: each such module, probed once per
    process in a fresh isolate, travels by value from now on (_fallback.py)."""
    modules = _fallback.unprobed_modules(payload)
    if not modules:
        return False
    refused = yield from _calling(_fallback.probe, (modules,), {}, "probe", isolation)
    return _fallback.learn(refused, modules)


def _calling(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    debug_name: str | None,
    isolation: str,
) -> Generator[Any, Any, Any]:
    """One call in a fresh isolate: start it, then take its result."""
    # Once the isolate has answered, a spare is warmed in its place: only
    # after this call is done with, since starting one takes the main
    # interpreter's GIL, which the call's last steps need too.
    warm = False
    try:
        with ReceivePort() as reply:
            terminate = Capability()
            job = start_item(
                Start(
                    "run",
                    debug_name,
                    None,
                    terminate,
                    reply.send_port,
                    None,
                    (_fallback.for_isolates(fn), args, kwargs),
                )
            )
            control = yield Acquire(isolation, debug_name if type(debug_name) is str else None)
            try:
                if not control._send_item(job):
                    raise BrokenIsolateError("the isolate ended before the call reached it")
                message = decode((yield _Next(reply, control)))
                warm = True
                if message[0] != "stream":
                    return _result(*message)
                decoder = StreamDecoder(message[1])
                while not decoder.done:
                    item = yield _Next(reply, control)
                    began = _perf_counter()
                    # Unpickle the slices that are waiting, up to a turn's budget;
                    # then an event loop runs (the sync API just goes on).
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
                    yield PAUSE
                return decoder.result()
            except BaseException as error:
                if not isinstance(error, Exception):
                    # Ctrl-C, a cancelled task: stop the work, and wait until
                    # the isolate has exited before the error goes on. (A
                    # second one stops the wait; the kill is posted.)
                    _kill(control, terminate)
                    yield from _until_exit(reply, control)
                raise
    finally:
        if warm:
            replenish()


def _until_exit(reply: ReceivePort, control: SendPort) -> Generator[Any, Any]:
    """Wait for the isolate's exit notice on the reply port; what comes
    before it (a result it had sent already) is dropped."""
    while True:
        item = yield _Next(reply, control)
        if item[0] == PLAIN and item[1] == ("exit",):
            return
        release_item(item)


def _kill(control: Any, terminate: Capability) -> None:
    """Stop the isolate of a call that was interrupted or cancelled. A
    second Ctrl-C while the kill is sent must not leave it running."""
    while True:
        try:
            control._send_item(request_item(Kill(terminate, IMMEDIATE)))
            return
        except KeyboardInterrupt:
            continue  # (if the kill was posted already, a second one is harmless)
        except BaseException:
            return  # the isolate is gone already: nothing to stop


def run[**P, R](fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run ``fn(*args, **kwargs)`` in a fresh isolate and return its result.

    The isolate is used for this call only and is gone afterwards.

    Raises:
        NotSendableError: ``fn``, an argument or the result cannot cross.
        BrokenIsolateError: the isolate died before it returned.
        Exception: what ``fn`` raised, as its own type when it can be sent
            back, with the remote traceback as a ``RemoteError`` ``__cause__``.
    """
    result: R = drive(running(fn, args, kwargs, None, "isolated"))
    return result


async def run_async[**P, R](fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``run`` for asyncio: never blocks the event loop, even for a huge result."""
    result: R = await drive_async(running(fn, args, kwargs, None, "isolated"))
    return result


def compute[M, R](callback: Callable[[M], R], message: M) -> R:
    """Flutter's ``compute``: ``run(callback, message)``."""
    result: R = drive(running(callback, (message,), {}, None, "isolated"))
    return result


async def compute_async[M, R](callback: Callable[[M], R], message: M) -> R:
    """Flutter's ``compute`` for asyncio."""
    result: R = await drive_async(running(callback, (message,), {}, None, "isolated"))
    return result
