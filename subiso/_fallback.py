"""Callables whose module isolates refuse travel by value.

A module that imports, at its top, something isolated isolates refuse (a
single-phase extension such as psutil's, which ``dask.distributed`` pulls
in) cannot be imported in an isolate, though most of what it defines never
uses that something. When an isolate reports such a refusal, the modules
that the message named by reference are learnt about:

- ``run`` and ``spawn`` (and so ``Agent`` and a pool's initializer) probe
  them in a fresh isolate of the same kind, once per module and process
  (``probe``): the call itself may have raised the refusal, and must not
  run twice;
- a pool worker, which fails to load a task before it runs any of it,
  names them from the refusal's traceback (``refused_modules``) and asks
  the main interpreter for the task again (``reload``, a host call).

The modules refused join ``_pickling.by_value_modules``, whose functions and
classes subiso's own pickler sends by value from then on, and the work is
sent once more; each is logged once. cloudpickle's
``register_pickle_by_value`` is not used: it is process-wide, and would
change what Dask and every other library ship.

Threads: ``by_value_modules`` and ``loads_fine`` are sets that any thread
may add to (an add is atomic); a module is at worst probed twice.
"""

from __future__ import annotations

import functools
import io
import logging
import sys

from ._exceptions import SubinterpreterImportError, explain_import_refusal
from ._pickling import by_value_modules

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_log = logging.getLogger("subiso")

#: Modules a probe imported in an isolate: a refusal is not theirs.
loads_fine: set[str] = set()

#: The name of the host call with which a pool worker asks for a task again.
RELOAD = "subiso: reload by value"


def refuses(error: BaseException) -> bool:
    """Whether ``error`` is CPython's refusal to load a module in an isolate."""
    return isinstance(explain_import_refusal(error), SubinterpreterImportError)


def _by_value_helps(module: str, error: BaseException) -> bool:
    """Whether sending ``module``'s functions by value may avoid ``error``,
    a refusal: not if the package refused is ``module``'s own (numpy's
    functions and classes are numpy)."""
    refused = explain_import_refusal(error)
    if not isinstance(refused, SubinterpreterImportError):
        return False
    return module.partition(".")[0] != (refused.name or "").partition(".")[0]


def probe(modules: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(In an isolate.) Import each of ``modules``; those refused, with why."""
    import importlib

    refused = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as error:
            if _by_value_helps(name, error):
                refused.append((name, str(explain_import_refusal(error)).partition(":")[0]))
    return tuple(refused)


def refused_modules(error: BaseException) -> tuple[str, ...]:
    """(In an isolate.) The module whose import, begun by loading a
    message, ``error`` (a refusal) ended: the outermost module body in its
    traceback; none if that is of the package refused."""
    traceback = error.__traceback__
    while traceback is not None:
        frame = traceback.tb_frame
        if frame.f_code.co_name == "<module>":
            name = frame.f_globals.get("__name__")
            if isinstance(name, str) and name != "__main__" and _by_value_helps(name, error):
                return (name,)
            return ()
        traceback = traceback.tb_next
    return ()


def learn(refused: tuple[tuple[str, str], ...], probed: tuple[str, ...] = ()) -> bool:
    """Send the functions and classes of the ``refused`` modules by value
    from now on (logged once each); the rest of ``probed`` load fine.
    Whether any module was new."""
    loads_fine.update(set(probed) - {name for name, _ in refused})
    new = False
    for name, why in refused:
        if name in by_value_modules:
            continue
        by_value_modules.add(name)
        new = True
        _log.info(
            "isolates refuse to import module %s (%s): its functions and classes "
            "travel by value from now on, so only what they use must load there",
            name,
            why,
        )
    return new


def unprobed_modules(payload: object) -> tuple[str, ...]:
    """The modules ``payload`` names by reference (functions and classes, a
    bound method's class, a partial's function) that were not probed yet,
    outside the standard library and subiso."""
    recorder = _recorder_class()(io.BytesIO(), 5)
    recorder.modules = set()
    try:
        recorder.dump(payload)
    except Exception:
        pass  # what it found so far is all there is to probe
    finally:
        recorder.drop()
    return tuple(
        sorted(
            name
            for name in recorder.modules
            if name not in loads_fine
            and name not in by_value_modules
            and name.partition(".")[0] not in sys.stdlib_module_names
            and name.partition(".")[0] not in ("subiso", "builtins", "__main__")
        )
    )


def for_isolates(fn: Any) -> Any:
    """``fn``, or, if it is a function or class of a module that travels by
    value, a wrapper that makes it travel so (a run's or spawn's target is
    otherwise sent by name, without pickling)."""
    if not by_value_modules:
        return fn
    from ._pickling import ByValue

    if getattr(fn, "__module__", None) in by_value_modules:
        return ByValue(fn)
    return fn


def reload(
    modules: tuple[tuple[str, str], ...], fn_item: Any, args_item: Any, kwargs_item: Any
) -> tuple[Any, ...]:
    """(The host call ``RELOAD``, in the main interpreter.) A pool worker
    could not load a task because isolates refuse ``modules``: they travel
    by value from now on; the task's parts, loaded here, go back so."""
    from ._wire import decode

    learn(modules)
    return (
        decode(fn_item),
        decode(args_item),
        decode(kwargs_item) if kwargs_item[1] else {},
    )


@functools.cache
def _recorder_class() -> Any:
    from ._pickling import Pickler
    from ._shared import SharedBuffer
    from ._wire import TransferableBuffer, _FunctionType, _importable

    class Recorder(Pickler):
        """Pickles to learn which modules a message names by reference."""

        modules: set[str]

        def reducer_override(self, obj: Any) -> Any:
            kind = type(obj)
            if kind is TransferableBuffer or kind is SharedBuffer:
                return (bytes, ())  # (nothing of theirs changes hands)
            if (kind is _FunctionType or isinstance(obj, type)) and _importable(obj):
                self.modules.add(obj.__module__)
            return super().reducer_override(obj)

    return Recorder
