"""subiso: Dart's isolate model on CPython subinterpreters.

Each isolate is a subinterpreter with its own GIL on its own native thread;
ports carry messages between them. See README.md for a tour.

This face only re-exports. It resolves names lazily (PEP 562): a fresh
isolate imports ``subiso`` on its way to the runtime, and must not pay for
the parts of the package it does not use.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import _host as host  # noqa: F401 - the face's module-valued name
    from ._agent import Agent as Agent
    from ._exceptions import BrokenIsolateError as BrokenIsolateError
    from ._exceptions import BrokenServiceError as BrokenServiceError
    from ._exceptions import IsolateError as IsolateError
    from ._exceptions import IsolateSpawnError as IsolateSpawnError
    from ._exceptions import NotSendableError as NotSendableError
    from ._exceptions import PortClosedError as PortClosedError
    from ._exceptions import RemoteError as RemoteError
    from ._exceptions import SubinterpreterImportError as SubinterpreterImportError
    from ._exceptions import __excepthook__ as __excepthook__
    from ._exceptions import excepthook as excepthook
    from ._isolate import BEFORE_NEXT_EVENT as BEFORE_NEXT_EVENT
    from ._isolate import IMMEDIATE as IMMEDIATE
    from ._isolate import Isolate as Isolate
    from ._isolate import KillPriority as KillPriority
    from ._names import IsolateNameServer as IsolateNameServer
    from ._pool import Pool as Pool
    from ._pool import PoolStats as PoolStats
    from ._pool import Priority as Priority
    from ._pool import Task as Task
    from ._ports import RawReceivePort as RawReceivePort
    from ._ports import ReceivePort as ReceivePort
    from ._ports import SendPort as SendPort
    from ._run import compute as compute
    from ._run import compute_async as compute_async
    from ._run import run as run
    from ._run import run_async as run_async
    from ._runtime import Capability as Capability
    from ._shared import SharedBuffer as SharedBuffer
    from ._wire import TransferableBuffer as TransferableBuffer

_EXPORTS = {
    "Agent": "_agent",
    "BEFORE_NEXT_EVENT": "_isolate",
    "BrokenIsolateError": "_exceptions",
    "BrokenServiceError": "_exceptions",
    "Capability": "_runtime",
    "IMMEDIATE": "_isolate",
    "Isolate": "_isolate",
    "IsolateError": "_exceptions",
    "IsolateNameServer": "_names",
    "IsolateSpawnError": "_exceptions",
    "KillPriority": "_isolate",
    "NotSendableError": "_exceptions",
    "Pool": "_pool",
    "PoolStats": "_pool",
    "PortClosedError": "_exceptions",
    "Priority": "_pool",
    "RawReceivePort": "_ports",
    "ReceivePort": "_ports",
    "RemoteError": "_exceptions",
    "SendPort": "_ports",
    "SharedBuffer": "_shared",
    "SubinterpreterImportError": "_exceptions",
    "Task": "_pool",
    "TransferableBuffer": "_wire",
    "__excepthook__": "_exceptions",
    "compute": "_run",
    "compute_async": "_run",
    "excepthook": "_exceptions",
    "host": "_host",
    "run": "_run",
    "run_async": "_run",
}

__all__ = tuple(sorted(_EXPORTS))


def __getattr__(name: str) -> object:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'subiso' has no attribute {name!r}")
    __import__(f"subiso.{module_name}")
    module = sys.modules[f"subiso.{module_name}"]
    value = module if name == "host" else getattr(module, name)
    if value is not module and (isinstance(value, type) or callable(value)):
        try:
            value.__module__ = "subiso"  # pickles and tracebacks name the face
        except (AttributeError, TypeError):
            pass
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _start_the_hub() -> None:
    """In the main interpreter, start the hub now (one parked thread): no
    later call, on an event loop's thread say, then starts a thread. An
    isolate, which imports this package on its way to its runtime, starts
    nothing."""
    import _interpreters

    if _interpreters.get_current()[0] == _interpreters.get_main()[0]:
        from ._hub import start

        start()


_start_the_hub()
