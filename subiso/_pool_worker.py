"""The loop each pool isolate runs (``Pool``'s other half, in the isolate).

A worker imports this module and no more of the pool: the pool's own module
(its books, the executor's face) pulls in concurrent.futures, logging,
typing and dataclasses, which would cost every worker milliseconds and
megabytes. It imports what every fresh isolate has loaded already; what only
a rare path needs (a module refused by isolates), where it is needed.

What travels on a pool's results port: workers send plain tuples, which
cross without pickling, ``(kind, worker index, payload)``. A result that is
not plain travels as its own encoded item, so that the collector knows
whose it is even when it cannot unpickle it.
"""

from __future__ import annotations

# (All on the way of every fresh isolate already: they cost a worker nothing.)
from ._ports import ReceivePort, _deliver, _Local
from ._runtime import IsolateKilled, _is_awaitable, _IsolateExit
from ._wire import PICKLED, PLAIN, decode, encode, encode_exception, load_owning, shareable

TYPE_CHECKING = False  # typing costs an import in every fresh isolate
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

_VALUE = "ok"  # payload: the result, plain
_PICKLED = "pickled"  # payload: the result's encoded item
_ERROR = "err"  # payload: encode_exception(error)
_READY = "ready"  # payload: (inbox queue id, inbox wake-up fd)
_INIT_FAILED = "initfail"  # payload: encode_exception(error)
_EXIT = "exit"  # (kind, index): the on_exit response of a worker's isolate


def worker_main(config: tuple[Any, ...]) -> None:
    """The loop each pool isolate runs."""
    results, index, initializer, initargs, watchers = config
    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as error:  # the user's: it goes to the pool, which breaks
            results._send_item((PLAIN, (_INIT_FAILED, index, encode_exception(error))))
            return
    inbox = ReceivePort("pool worker")
    port = inbox.send_port
    results._send_item((PLAIN, (_READY, index, (port._qid, port._wfd))))
    # Functions pickled by reference, by their pickle: tasks repeat them.
    functions: dict[bytes, Any] = {}
    while True:
        # From taking a task to holding its arguments, a kill waits: one that
        # landed in between would leave the file descriptors of the task's
        # TransferableBuffers open for good (they left the sender with it).
        shielded = _Local.shield is not None and _Local.shield()
        try:
            item = inbox._receive_item(None)
            if item[0] == PLAIN and item[1] is None:
                break
            loaded: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | Exception
            try:
                if len(item) > 2 and item[2]:  # its buffers' descriptors: none left open
                    loaded = load_owning(item[2], _load_task, functions, *item[1])
                else:
                    loaded = _load_task(functions, *item[1])
            except Exception as error:
                loaded = error
        finally:
            if shielded:
                _Local.unshield()  # type: ignore[misc]
        try:
            if isinstance(loaded, Exception):
                loaded = _reload_by_value(loaded, item)
            fn, args, kwargs = loaded
            result = fn(*args, **kwargs)
            if _is_awaitable(result):
                import asyncio

                result = asyncio.run(result)
            encoded = encode(result, "result")
            # A map batch says how many of its calls failed: stats() counts
            # them without unpickling its outcomes.
            failed = sum(1 for o in result if o[0] == "err") if fn is run_batch else 0
            if encoded[0] == PLAIN:
                item = (PLAIN, (_VALUE, index, result, failed))
            else:  # the file descriptors and buffers it carries ride on the outer item
                item = (PLAIN, (_PICKLED, index, shareable(encoded), failed), *encoded[2:])
        except (IsolateKilled, _IsolateExit):
            raise  # the isolate ends: the task fails with BrokenIsolateError
        except BaseException as error:  # SystemExit too, as a process pool delivers it
            item = (PLAIN, (_ERROR, index, encode_exception(error), 0))
        _deliver(results._qid, results._wfd, item, watchers)  # (see _Core.watchers)
    inbox.close()


def _load_task(
    functions: dict[bytes, Any],
    fn_bytes: bytes,
    args_item: Any,
    kwargs_item: Any,
    by_reference: bool,
) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """A task's function and arguments, decoded. A function pickled by value
    is loaded afresh for each task, as a process pool does: a copy that an
    earlier task changed is never seen again."""
    fn = functions.get(fn_bytes) if by_reference else None
    if fn is None:
        fn = decode((PICKLED, fn_bytes))
        if by_reference:
            functions[fn_bytes] = fn
            if len(functions) > 256:
                functions.pop(next(iter(functions)))
    return fn, decode(args_item), decode(kwargs_item) if kwargs_item[1] else {}


def _reload_by_value(
    error: Exception, item: tuple[Any, ...]
) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """A task that did not load because isolates refuse a module it names
    by reference: the task again, from the main interpreter, with that
    module's functions and classes by value (see _fallback.py).

    Raises:
        Exception: why the task cannot load (``error``, if not that).
    """
    from ._exceptions import explain_import_refusal
    from ._fallback import RELOAD, refused_modules

    modules = refused_modules(error)
    if not modules or (len(item) > 2 and item[2]):  # (its buffers' descriptors are closed)
        raise error
    from . import _host

    fn_bytes, args_item, kwargs_item, _by_reference = item[1]
    why = str(explain_import_refusal(error)).partition(":")[0]
    reloaded: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] = _host.call(
        RELOAD, tuple((name, why) for name in modules), (PICKLED, fn_bytes), args_item, kwargs_item
    )
    return reloaded


def run_batch(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Run several map calls in one task; each call's outcome is its own."""
    outcomes: list[tuple[Any, ...]] = []
    for args in calls:
        try:
            outcomes.append(("ok", fn(*args)))
        except (IsolateKilled, _IsolateExit):
            raise
        except BaseException as error:  # SystemExit too: that call's exception
            outcomes.append(("err", encode_exception(error)))
    return outcomes
