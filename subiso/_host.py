"""``subiso.host``: call functions that live in the main interpreter.

For objects that cannot move into an isolate (a connection, a GUI toolkit, a
module that refuses subinterpreters), register a handler in the main
interpreter and call it by name from any isolate, as Flutter's
``BackgroundIsolateBinaryMessenger`` lets background isolates reach the
platform. Calls from isolates run concurrently on a small pool of threads in
the main interpreter; a handler that raises sends its exception back to the
caller and the service goes on.
"""

from __future__ import annotations

import threading

from . import _fallback, _hub
from ._drive import drive, drive_async
from ._runtime import Runtime
from ._wire import decode, encode, encode_exception

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from concurrent.futures import ThreadPoolExecutor
    from typing import Any

    from ._ports import SendPort

__all__ = ("call", "call_async", "register", "unregister")

_handlers: dict[str, Callable[..., Any]] = {}
_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
WORKERS = 8  # host calls served at once


def _main_only(what: str) -> None:
    if Runtime.current is not None:
        raise RuntimeError(f"host.{what}() works in the main isolate only")


def register(name: str, handler: Callable[..., Any]) -> None:
    """Make ``handler`` callable from every isolate as ``host.call(name, ...)``.

    Raises:
        RuntimeError: outside the main isolate.
        ValueError: ``name`` is registered already.
    """
    _main_only("register")
    if not callable(handler):
        raise TypeError(f"handler {handler!r} is not callable")
    with _lock:
        if name in _handlers:
            raise ValueError(f"a host handler named {name!r} is registered already")
        _handlers[name] = handler


def unregister(name: str) -> None:
    """Remove the handler registered as ``name``.

    Raises:
        LookupError: no handler has that name.
    """
    _main_only("unregister")
    with _lock:
        if _handlers.pop(name, None) is None:
            raise LookupError(f"no host handler named {name!r}")


def _handler(name: str) -> Callable[..., Any]:
    with _lock:
        handler = _handlers.get(name)
    if handler is None and name == _fallback.RELOAD:  # the library's own
        handler = _fallback.reload
    if handler is None:
        raise LookupError(f"no host handler named {name!r}")
    return handler


def _run(body: tuple[Any, ...], reply: Any) -> None:
    """A host worker: decode the call (user code: its arguments unpickle
    here, never on the hub thread), run it, answer. Its safety net: whatever
    goes wrong goes back to the caller, and the worker serves on."""
    try:
        name, args, kwargs = decode(body)
        result = _handler(name)(*args, **kwargs)
        item = encode(("ok", result), "result")
    except BaseException as error:  # whatever the handler raised is its caller's
        try:
            reply.send(("err", encode_exception(error)))
        except BaseException:  # (the caller is gone): logged, the worker serves on
            import logging

            logging.getLogger("subiso").exception("a host call could not answer its caller")
    else:
        reply._send_item(item)


def serve(body: tuple[Any, ...], reply: SendPort) -> None:
    """Hand a call from an isolate, still encoded, to the host pool (on the hub thread)."""
    global _executor
    with _lock:
        if _executor is None:
            from concurrent.futures import ThreadPoolExecutor

            _executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="subiso-host")
    _executor.submit(_run, body, reply)


def call(name: str, /, *args: Any, **kwargs: Any) -> Any:
    """Run the handler registered as ``name`` in the main interpreter; return its result.

    Raises:
        LookupError: no handler has that name.
        NotSendableError: an argument or the result cannot cross.
        Exception: what the handler raised, as itself.
    """
    if Runtime.current is None:
        return _handler(name)(*args, **kwargs)
    return drive(_hub.asking("host", name, args, kwargs))


async def call_async(name: str, /, *args: Any, **kwargs: Any) -> Any:
    """``call`` for asyncio; in the main isolate the handler runs on a thread."""
    if Runtime.current is None:
        import asyncio

        handler = _handler(name)
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: handler(*args, **kwargs)
        )
    return await drive_async(_hub.asking("host", name, args, kwargs))
