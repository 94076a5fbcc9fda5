"""``IsolateNameServer``: one registry of named ports per process.

The registry lives in the main interpreter. Code there uses it directly,
under a lock; an isolate asks the hub, which answers from the same table, so
every isolate sees one registry. A name is never overwritten.
"""

from __future__ import annotations

import threading

from . import _hub
from ._drive import drive
from ._ports import SendPort
from ._runtime import Runtime
from ._wire import PLAIN, encode_exception

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ("IsolateNameServer",)

_ports: dict[str, SendPort] = {}
_lock = threading.Lock()


def _register(port: SendPort, name: str) -> bool:
    with _lock:
        if name in _ports:
            return False
        _ports[name] = port
        return True


def _lookup(name: str) -> SendPort | None:
    with _lock:
        return _ports.get(name)


def _remove(name: str) -> bool:
    with _lock:
        return _ports.pop(name, None) is not None


_OPERATIONS: dict[str, Callable[..., Any]] = {
    "register": _register,
    "lookup": _lookup,
    "remove": _remove,
}


def serve(body: tuple[Any, ...], reply: SendPort) -> None:
    """Answer a name request from an isolate (on the hub thread). Its body
    is plain (see ``_call``): nothing of the caller's is unpickled here."""
    if body[0] != PLAIN:
        raise TypeError("a name request must be plain")
    operation, name, port = body[1]
    args = (name,) if port is None else (SendPort(*port), name)
    try:
        reply.send(("ok", _OPERATIONS[operation](*args)))
    except Exception as error:
        reply.send(("err", encode_exception(error)))


def _call(operation: str, name: str, port: SendPort | None = None) -> Any:
    if Runtime.current is None:
        args = (name,) if port is None else (port, name)
        return _OPERATIONS[operation](*args)
    plain_port = None if port is None else port._fields()
    return drive(_hub.asking("names", operation, name, plain_port))


def _check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"a port name must be a str, not {type(name).__name__}")
    return name


class IsolateNameServer:
    """Flutter's ``IsolateNameServer``: ports by name, the same from every isolate."""

    def __init__(self) -> None:
        raise TypeError("IsolateNameServer is used through its static methods")

    @staticmethod
    def register_port_with_name(port: SendPort, name: str) -> bool:
        """Register ``port`` as ``name``; False if the name is taken (never overwrites)."""
        if not isinstance(port, SendPort):
            raise TypeError(f"expected a SendPort, not {type(port).__name__}")
        result: bool = _call("register", _check_name(name), port)
        return result

    @staticmethod
    def lookup_port_by_name(name: str) -> SendPort | None:
        """The port registered as ``name``, or None."""
        result: SendPort | None = _call("lookup", _check_name(name))
        return result

    @staticmethod
    def remove_port_name_mapping(name: str) -> bool:
        """Forget ``name``; False if it was not registered."""
        result: bool = _call("remove", _check_name(name))
        return result
