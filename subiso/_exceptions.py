"""The exceptions subiso raises.

The tree::

    Exception
    └── IsolateError                  base of everything subiso raises
        ├── RemoteError               an error raised in another isolate, as text
        ├── IsolateSpawnError         an isolate could not start
        ├── NotSendableError          (also TypeError) a value cannot cross isolates
        ├── PortClosedError           receive on a port that *you* closed
        ├── BrokenIsolateError        the *other side* died while a caller waited on it
        │   └── BrokenServiceError    a library service (hub, pool collector, agent)
        │                             failed; its waiters are failed with this
        └── SubinterpreterImportError (also ImportError) an extension module refused
                                      to load in this isolate

"Closed" and "broken" are kept apart on purpose: a closed port is an orderly
end that the owner chose; a broken isolate is a failure somebody else caused.

Every exception here pickles (``__reduce__``), because it will cross isolates.
"""

from __future__ import annotations

import sys

__all__ = (
    "SubinterpreterImportError",
    "BrokenIsolateError",
    "BrokenServiceError",
    "IsolateError",
    "IsolateSpawnError",
    "NotSendableError",
    "PortClosedError",
    "RemoteError",
)


class IsolateError(Exception):
    """Base class of every error subiso raises."""


class RemoteError(IsolateError):
    """An error raised in another isolate, carried back as text.

    Raised by ``run``, ``Pool`` and ``Agent`` when the remote exception could
    not be sent back as itself; otherwise it is attached as the ``__cause__``
    of the re-raised exception so that the remote traceback is not lost.

    Attributes:
        description: ``"TypeName: message"`` of the remote exception.
        stack_description: the remote traceback, formatted.
    """

    def __init__(self, description: str, stack_description: str = "") -> None:
        super().__init__(description, stack_description)
        self.description = description
        self.stack_description = stack_description

    def __str__(self) -> str:
        if not self.stack_description:
            return self.description
        return f"{self.description}\n\nRemote traceback:\n{self.stack_description.rstrip()}"

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.description, self.stack_description))


class IsolateSpawnError(IsolateError):
    """An isolate could not start: its entry was not sendable, a module
    refused to load in an isolated interpreter, the bootstrap failed."""


class NotSendableError(IsolateError, TypeError):
    """A value cannot cross between isolates.

    Raised at the call that tried to send it (``send``, ``run``, ``submit``,
    ...), naming the offending object and where it sat in the message. Nothing
    was sent; the port or pool stays usable.
    """


class PortClosedError(IsolateError):
    """``receive`` on a port that is closed and has nothing left to give."""


class BrokenIsolateError(IsolateError):
    """The isolate died (killed, ``Isolate.exit``, a crash) while a caller
    waited on it."""


class BrokenServiceError(BrokenIsolateError):
    """A service thread of subiso (the hub, a pool's collector, an agent)
    met an error it could not handle. Every caller that waited on it gets
    this error instead of waiting forever; the cause is chained.

    Attributes:
        service: which service broke, e.g. ``"hub"`` or ``"pool collector"``.
    """

    def __init__(self, service: str, detail: str = "") -> None:
        message = f"the {service} of subiso broke" + (f": {detail}" if detail else "")
        super().__init__(message)
        self.service = service
        self.detail = detail

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.service, self.detail))


class SubinterpreterImportError(ImportError, IsolateError):
    """An extension module refused to load in this isolate.

    CPython raises a plain ImportError, worded by version and module:
    "module X does not support loading in subinterpreters" (the module
    refuses isolated interpreters; every version), or "module 'X' can only
    be loaded once per process" (3.14+: the module lives in one interpreter
    only, and another one loaded it first); numpy raises "cannot load module
    more than once per process" in any isolate, legacy too, once the main
    interpreter imported it. subiso re-raises it as this subclass, whose
    message names the module (or package) and the way out.
    """

    def __reduce__(self) -> tuple[object, ...]:
        return (_subinterpreter_import_error, (str(self), self.name, self.path))


def _subinterpreter_import_error(
    message: str, name: str | None, path: str | None = None
) -> SubinterpreterImportError:
    return SubinterpreterImportError(message, name=name, path=path)


# CPython's refusals ("module X <words>"), each with what to do about it.
_REFUSALS = (
    (
        "does not support loading in subinterpreters",
        "isolated interpreters refuse it: run this work with isolation='legacy', "
        "a subinterpreter that shares the main GIL, or keep the module in the main "
        "interpreter and call it there through subiso.host",
    ),
    (
        "can only be loaded once per process",
        "it lives in one interpreter of the process only and another one loaded "
        "it first, so isolation='legacy' does not help: import it in the main "
        "interpreter alone and call it there through subiso.host, or run this "
        "work in a process pool",
    ),
)

# numpy's own refusal (and its kind's): it names no module.
_ONCE_PER_PROCESS = "cannot load module more than once per process"
_ONCE_PER_PROCESS_ADVICE = (
    "it loads once per process, and the main interpreter (or another isolate) "
    "loaded it first, so isolation='legacy' does not help: call it in the main "
    "interpreter through subiso.host, or run this work in a process pool"
)


def _package_importing(error: BaseException) -> str | None:
    """The top-level package whose module body ``error`` came from: the
    innermost module body in its traceback."""
    name = None
    traceback = error.__traceback__
    while traceback is not None:
        frame = traceback.tb_frame
        if frame.f_code.co_name == "<module>":
            name = frame.f_globals.get("__name__")
        traceback = traceback.tb_next
    return name.partition(".")[0] if isinstance(name, str) else None


def explain_import_refusal(error: BaseException) -> BaseException:
    """Turn CPython's refusal to load a module into an error that says what to do."""
    if not isinstance(error, ImportError) or isinstance(error, SubinterpreterImportError):
        return error
    text = str(error)
    if _ONCE_PER_PROCESS in text:
        package = _package_importing(error) or error.name
        said = f"package {package} {_ONCE_PER_PROCESS}" if package else _ONCE_PER_PROCESS
        explained = SubinterpreterImportError(
            f"{said}: {_ONCE_PER_PROCESS_ADVICE}", name=package, path=error.path
        )
        explained.__cause__ = error if text.strip() != _ONCE_PER_PROCESS else None
        explained.__traceback__ = error.__traceback__
        return explained
    for words, advice in _REFUSALS:
        at = text.find(words)
        if at < 0:
            continue
        # CPython's sentence, "module X <words>", may come inside a package's
        # own text (numpy wraps it in a page of advice): it goes first, with
        # what to do, and the package's text stays in the cause.
        start = text.rfind("module ", 0, at)
        start = 0 if start < 0 else start
        sentence = text[start : at + len(words)]
        parts = sentence.split()
        module = parts[1].strip("'\"") if len(parts) > 2 else None
        explained = SubinterpreterImportError(
            f"{sentence}: {advice}", name=module or error.name, path=error.path
        )
        if (text[:start] + text[at + len(words) :]).strip():
            explained.__cause__ = error
        explained.__traceback__ = error.__traceback__
        return explained
    return error


# -- uncaught errors ---------------------------------------------------------------


class IsolateExceptHookArgs:
    """What ``subiso.excepthook`` is given (as ``threading.ExceptHookArgs``):
    the error, the isolate's debug name (None: the main interpreter, or no
    name), and whether the isolate exits because of it."""

    __slots__ = ("exc_traceback", "exc_type", "exc_value", "fatal", "isolate")

    def __init__(self, error: BaseException, isolate: str | None, fatal: bool) -> None:
        self.exc_type = type(error)
        self.exc_value = error
        self.exc_traceback = error.__traceback__
        self.isolate = isolate
        self.fatal = fatal


def format_exception(error: BaseException) -> tuple[str, str]:
    """(description, stack): the error's one line, and its whole traceback."""
    import traceback

    description = "".join(traceback.format_exception_only(type(error), error)).strip()
    stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return description, stack


def describe_error(error: BaseException) -> list[str]:
    """``[description, stack]``, as Dart hands errors to error listeners."""
    return list(format_exception(explain_import_refusal(error)))


def excepthook(args: IsolateExceptHookArgs, /) -> None:
    """Report an uncaught error that no error listener hears: to stderr.

    Runs in the interpreter where the error happened. Replace it there
    (``subiso.excepthook = hook``, in the main interpreter or in an
    isolate) to report elsewhere; ``subiso.__excepthook__`` keeps this one.
    """
    where = f"isolate {args.isolate}" if args.isolate else "isolate"
    exits = ", which exits" if args.fatal else ""
    sys.stderr.write(f"Uncaught error in {where}{exits}:\n{describe_error(args.exc_value)[1]}")
    sys.stderr.flush()


__excepthook__ = excepthook


def report_uncaught(error: BaseException, isolate: str | None, fatal: bool) -> None:
    """Hand ``error`` to ``subiso.excepthook`` as it is now; if the hook
    itself fails, report that with ``sys.excepthook``, as threading does."""
    face = sys.modules.get("subiso")
    hook = getattr(face, "excepthook", excepthook) if face is not None else excepthook
    try:
        hook(IsolateExceptHookArgs(error, isolate, fatal))
    except Exception as failure:
        sys.excepthook(type(failure), failure, failure.__traceback__)
