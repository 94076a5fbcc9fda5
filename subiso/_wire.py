"""How a message crosses between isolates.

An encoded message ("item") is a shareable tuple that a raw queue can carry:

- ``(PLAIN, value)``: None, bool, int (64-bit), float, str, bytes and tuples
  of these travel as themselves. Nothing is pickled; the receiver gets a copy.
- ``(PICKLED, data)``: everything else, pickle protocol 5 (``_pickling``,
  loaded on first use). Functions and classes that cannot be pickled by
  reference (lambdas, closures, anything from ``__main__``) go by value:
  functions through a light path built on ``marshal`` (no import needed in
  the receiver), classes through cloudpickle (imported only where such a
  payload is sent or arrives).
- ``(PICKLED, data, fds)``: the message carries ``TransferableBuffer``s or
  ``SharedBuffer``s (_shared.py), whose memory travels as memfd file
  descriptors, never copied; so do large pickle-5 out-of-band buffers.
- ``(MIXED, parts, fds)``: a tuple holding large str/bytes or SharedBuffers,
  encoded part by part so that those travel as themselves rather than
  inside a pickle.
- ``(SHARED, nbytes, (fd,))``: a ``SharedBuffer``, unpickled.
- ``(PORT, (qid, wfd[, space]))``: a message that is a ``SendPort``, unpickled.

The work that starts a fresh isolate travels plain when it can (see
``plain_function``, and ``start_item`` in _runtime.py): such an isolate
never loads pickle.

Large lists and dicts can also be sent as a *stream*: several pickles made by
one pickler, so that references shared between items survive, which the
receiver unpickles slice by slice without stalling its event loop.
"""

from __future__ import annotations

import _thread
import marshal
import os
import sys

# (_functools, not functools: that would cost an import in every isolate)
from _functools import partial as _partial  # type: ignore[import-not-found]
from _weakref import ref as _ref

from ._exceptions import NotSendableError, RemoteError, explain_import_refusal, format_exception

TYPE_CHECKING = False  # typing costs an import in every fresh isolate

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any
    from typing import NamedTuple as Message
    from weakref import ref

    from ._pickling import Pickler
else:

    class _Field:
        # A message's field by position (namedtuple's accessor is in
        # _collections, which costs a fresh isolate 0.3 ms to import).
        __slots__ = ("__doc__", "_index")

        def __init__(self, index, doc):
            self._index = index
            self.__doc__ = doc

        def __get__(self, message, owner=None):
            return self if message is None else message[self._index]

        def __set__(self, message, value):
            raise AttributeError("can't set attribute")

    class _MessageType(type):
        """``typing.NamedTuple``'s class syntax for tuples with named fields,
        without typing or collections: neither is loaded when a fresh
        isolate starts. Fields come from the class's annotations, which the
        defining module keeps as strings (``from __future__ import
        annotations``)."""

        def __new__(mcls, name, bases, namespace):
            fields = tuple(namespace["__annotations__"])
            body = {
                "__slots__": (),
                "__module__": namespace["__module__"],
                "__qualname__": namespace["__qualname__"],
                "__doc__": namespace.get("__doc__"),
                "__new__": _message_new(name, fields),
                "__getnewargs__": _message_args,
                "__repr__": _message_repr,
                "__match_args__": fields,
                "_fields": fields,
            }
            for i, field in enumerate(fields):
                body[field] = _Field(i, f"{name}.{field}")
            for key, value in namespace.items():  # methods, class constants
                if not key.startswith("__") and key not in body:
                    body[key] = value
            return type.__new__(type, name, (tuple,), body)

    def _message_new(name, fields):
        def __new__(cls, *args, **kwargs):
            if kwargs:
                args += tuple(kwargs.pop(field) for field in fields[len(args) :] if field in kwargs)
            if kwargs or len(args) != len(fields):
                raise TypeError(f"{name} takes the fields {', '.join(fields)}")
            return tuple.__new__(cls, args)

        return __new__

    def _message_args(self):
        return tuple(self)

    def _message_repr(self):
        parts = ", ".join(
            f"{field}={value!r}" for field, value in zip(self._fields, self, strict=True)
        )
        return f"{type(self).__name__}({parts})"

    Message = type.__new__(_MessageType, "Message", (), {})

__all__ = (
    "Message",
    "TransferableBuffer",
    "decode",
    "encode",
    "encode_exception",
    "release_item",
)

PLAIN = 0
PICKLED = 1
MIXED = 2
PORT = 3
SHARED = 4
PROTOCOL = 5

# SendPort, given by _ports (which this module cannot import): a message that
# is a send port, as a worker's first message to its parent most often is,
# travels as (PORT, (queue id, waker fd)), unpickled.
_SendPort: Any = None


def register_send_port(kind: type) -> None:
    global _SendPort
    _SendPort = kind


# SharedBuffer, set by _shared when it is imported (it imports this module).
_SharedBuffer: Any = None


_FunctionType: Any = type(lambda: None)
_ModuleType = type(sys)
_BuiltinFunctionType = type(len)
_ATOMS = frozenset({type(None), bool, float, str, bytes})
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def is_plain(value: object, depth: int = 0) -> bool:
    """Whether ``value`` travels as itself, unpickled (``PLAIN``)."""
    kind = type(value)
    if kind in _ATOMS:
        return True
    if kind is int:
        return _INT_MIN <= value <= _INT_MAX  # type: ignore[operator]
    if kind is tuple and depth < 8:
        return all(is_plain(part, depth + 1) for part in value)  # type: ignore[attr-defined]
    return False


# -- by-value functions and classes -------------------------------------------


def _importable(obj: Any) -> bool:
    """Whether pickle's by-reference lookup finds this very object in a receiver."""
    module_name = getattr(obj, "__module__", None)
    if not module_name or module_name == "__main__":
        return False
    module = sys.modules.get(module_name)
    if module is None:
        return False
    found: Any = module
    for part in obj.__qualname__.split("."):
        if part == "<locals>":
            return False
        found = getattr(found, part, None)
        if found is None:
            return False
    return found is obj


def by_reference(obj: Any) -> tuple[str, str] | None:
    """``(module, qualified name)`` if ``obj`` pickles as a reference to
    itself (a module-level function or class, a builtin function), which no
    later change to any object can make stale; else None."""
    kind = type(obj)
    if kind is _BuiltinFunctionType:
        owner = obj.__self__
        if owner is not None and type(owner) is not _ModuleType:
            return None  # a method of some object: pickled with that object
    elif kind is not _FunctionType and not isinstance(obj, type):
        return None
    if not _importable(obj):
        return None
    return obj.__module__, obj.__qualname__


def _code_names(code: Any, names: set[str]) -> set[str]:
    names.update(code.co_names)
    for const in code.co_consts:
        if type(const) is type(code):
            _code_names(const, names)
    return names


def _import_module(name: str) -> Any:
    __import__(name)
    return sys.modules[name]


# -- functions for fresh isolates ---------------------------------------------


def plain_function(fn: Any) -> tuple[Any, ...] | None:
    """``fn`` as a plain value for ``load_function``, if it can be one: a
    function or class found by name, as ``(module, qualified name)``; a
    function sent by value that needs only its code, plain defaults and
    globals that are plain values or modules, as ``(code, name, qualified
    name, module, defaults, plain globals, module globals)``. Else None.

    A fresh isolate loads such a function without pickle, which it would
    otherwise import for it (3 ms)."""
    found = by_reference(fn)
    if found is not None:
        return found
    if type(fn) is not _FunctionType or fn.__closure__ or fn.__kwdefaults__ or fn.__dict__:
        return None
    if fn.__defaults__ is not None and not is_plain(fn.__defaults__):
        return None
    source = fn.__globals__
    plain, modules = [], []
    for name in _code_names(fn.__code__, set()):
        if name not in source or name == "__builtins__":
            continue
        value = source[name]
        if type(value) is _ModuleType:
            modules.append((name, value.__name__))
        elif is_plain(value):
            plain.append((name, value))
        else:
            return None
    return (
        marshal.dumps(fn.__code__),
        fn.__name__,
        fn.__qualname__,
        fn.__module__,
        fn.__defaults__,
        tuple(plain),
        tuple(modules),
    )


def load_function(function: tuple[Any, ...]) -> Any:
    """The function of ``plain_function``. Loading it imports the modules
    it needs: code that may fail, or block, like a call."""
    if len(function) == 2:
        module, qualname = function
        found = _import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
        return found
    code, name, qualname, module, defaults, plain, modules = function
    globals_ = {"__name__": module, "__builtins__": __builtins__, **dict(plain)}
    for global_name, module_name in modules:
        globals_[global_name] = _import_module(module_name)
    fn = _FunctionType(marshal.loads(code), globals_, name, defaults)
    fn.__qualname__ = qualname
    fn.__module__ = module
    return fn


# -- TransferableBuffer -------------------------------------------------------

_OWNED, _SENT, _USED = "owned", "sent away", "materialized"


def memfd_copy(view: memoryview, name: str, seals: int = 0) -> int:
    """A new memfd holding a copy of ``view`` (bytes), sealed with ``seals``
    (``fcntl.F_SEAL_*``) if any."""
    flags = os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if seals else 0)
    fd = os.memfd_create(name, flags)
    try:
        written = 0  # write(), not a mapping: the kernel fills its pages without faults
        while written < view.nbytes:
            written += os.write(fd, view[written:])
        if seals:
            import fcntl

            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except BaseException:
        os.close(fd)
        raise
    return fd


class TransferableBuffer:
    """A buffer that moves between isolates without being copied.

    ``TransferableBuffer(data)`` copies ``data`` once into memory that no
    interpreter owns (a memfd on Linux); sending it hands that memory to the
    receiver, which maps it with ``materialize()``. It can be materialized
    once, wherever it ends up (also where it was made, if it was never sent).

    Raises:
        ValueError: on a second ``materialize()``, or when it was sent away.
    """

    __slots__ = ("__weakref__", "_fd", "_inline", "_nbytes", "_state", "_watch")

    def __init__(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        self._nbytes = view.nbytes
        self._state = _OWNED
        self._fd = -1
        self._inline: bytes | None = None
        if self._nbytes and hasattr(os, "memfd_create"):
            self._own(memfd_copy(view, "subiso-transfer"))
        else:
            self._inline = bytes(view)

    @classmethod
    def _arrive(cls, fd: int, nbytes: int, inline: bytes | None) -> TransferableBuffer:
        self = cls.__new__(cls)
        self._fd, self._nbytes, self._inline, self._state = -1, nbytes, inline, _OWNED
        if fd >= 0:
            self._own(fd)
        unowned = getattr(_loading, "unowned", None)
        if unowned is not None:
            unowned.discard(fd)  # this buffer closes it now
        return self

    def _own(self, fd: int) -> None:
        """Hold ``fd``, closed with this buffer unless it is used or sent first."""
        self._fd = fd
        self._watch: ref[Any] | None = close_at_collect(self, (fd,))

    def _disown(self) -> int:
        fd, self._fd = self._fd, -1
        detach_fds(self._watch)
        self._watch = None
        return fd

    def __len__(self) -> int:
        return self._nbytes

    def __repr__(self) -> str:
        return f"<TransferableBuffer {self._nbytes} bytes, {self._state}>"

    def materialize(self) -> memoryview:
        """Return the contents as a writable memoryview; only once."""
        if self._state is not _OWNED:
            raise ValueError(f"this TransferableBuffer was already {self._state}")
        self._state = _USED
        if self._inline is not None or not self._nbytes:
            return memoryview(bytearray(self._inline or b""))
        import mmap

        fd = self._disown()
        try:
            mapped = mmap.mmap(fd, self._nbytes)
        finally:
            os.close(fd)
        return memoryview(mapped)

    def _reduce_for(self, pickler: Pickler) -> Any:
        if self._state is not _OWNED:
            raise ValueError(f"this TransferableBuffer was already {self._state}")
        pickler.hand_over(self)
        return (TransferableBuffer._arrive, (self._fd, self._nbytes, self._inline))

    def _mark_sent(self) -> None:
        self._state = _SENT
        if self._fd >= 0:
            self._disown()  # the message owns it now

    def __reduce__(self) -> Any:
        raise NotSendableError("a TransferableBuffer travels only in subiso messages")


def release_item(item: tuple[Any, ...] | int) -> None:
    """Free what an undelivered item holds outside the queue: its memfds,
    and, for an int, the record in its sender's mailbag (see _mailbag)."""
    if type(item) is int:
        from . import _mailbag

        _mailbag.drop(item)  # (it closes the descriptors the record names)
        return
    if len(item) > 2:  # type: ignore[arg-type]
        _close_all(item[2])  # type: ignore[index]


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


# The weakrefs of ``close_at_collect``, by id: a weakref hashes and compares
# as its object does (two equal SharedBuffers would share an entry, and
# hashing one maps its memory). The dead are pruned when the table has
# doubled since the last pruning. (Module globals, not a class: a class
# costs every fresh isolate a type object.)
_fd_watches: dict[int, ref[Any]] = {}
_fd_prune_at = 1024


def close_at_collect(obj: object, fds: list[int] | tuple[int, ...]) -> ref[Any]:
    """Close the descriptors in ``fds`` (a list may still grow) once ``obj``
    is collected, unless ``detach_fds`` is called first with the weakref
    returned.

    The weakref's callback is C code only (see _finalize for why a
    finalizer must not run Python code): ``dict.fromkeys`` drains
    ``map(os.close, fds)``, and the weakref it is called with is the value
    it ignores. It runs in place, in any interpreter."""
    global _fd_prune_at
    watch = _ref(obj, _partial(dict.fromkeys, map(os.close, fds)))
    live = _fd_watches
    live[id(watch)] = watch
    if len(live) >= _fd_prune_at:
        for key, each in list(live.items()):
            if each() is None:
                live.pop(key, None)
        _fd_prune_at = max(1024, 2 * len(live))
    return watch


def close_watched_fds() -> None:
    """At isolate exit, close what the buffers still alive hold (a user
    module's global, say). As the interpreter ends, CPython clears its
    modules in an order of its own: this table could go first, and a
    weakref that is gone never calls back."""
    live = _fd_watches
    while live:
        _, watch = live.popitem()
        callback = watch.__callback__
        if callback is not None and watch() is not None:
            try:
                callback(watch)  # (its map is spent: a later call closes nothing)
            except OSError:
                pass


def detach_fds(watch: ref[Any] | None) -> None:
    """Keep the descriptors open: they were closed or handed on by other
    means. (The caller drops ``watch`` too: a weakref still alive when its
    object goes calls back.)"""
    if watch is not None:
        _fd_watches.pop(id(watch), None)


# -- encode / decode ----------------------------------------------------------


_pickling_module: Any = None


def _pickling() -> Any:
    """The half of the wire that pickles, loaded the first time a message
    is not plain (a fresh isolate would otherwise pay 3 ms for it)."""
    global _pickling_module
    if _pickling_module is None:
        from . import _pickling as module

        _pickling_module = module
    return _pickling_module


_BIG = 64 * 1024


def _holds_big_plain(value: object, depth: int = 0) -> bool:
    """Whether a tuple carries a large str/bytes or a SharedBuffer, which
    should not be pickled."""
    kind = type(value)
    if kind is str or kind is bytes:
        return len(value) >= _BIG  # type: ignore[arg-type]
    if kind is _SharedBuffer:
        return True
    if kind is tuple and depth < 3:
        return any(_holds_big_plain(part, depth + 1) for part in value)  # type: ignore[attr-defined]
    return False


def _encode_mixed(message: tuple[Any, ...], what: str) -> tuple[Any, ...]:
    """A tuple encoded part by part, so that its large plain parts travel
    as themselves instead of inside a pickle (a 20 MB str costs a copy, not
    a pickling on the sender's thread)."""
    parts = [encode(part, f"{what}[{i}]") for i, part in enumerate(message)]
    fds = tuple(fd for part in parts if len(part) > 2 for fd in part[2])
    handed = [h for part in parts if len(part) > 3 for h in part[3]]
    return (MIXED, tuple(shareable(part) for part in parts), fds, handed)


def encode(message: object, what: str = "message") -> tuple[Any, ...]:
    """Encode ``message`` into a shareable item.

    Raises:
        NotSendableError: naming the part of ``message`` that cannot cross.
    """
    if is_plain(message):
        return (PLAIN, message)
    if type(message) is _SendPort:
        port: Any = message
        return (PORT, port._fields())
    if type(message) is tuple and _holds_big_plain(message):
        return _encode_mixed(message, what)
    if type(message) is _SharedBuffer and message._fd >= 0:  # type: ignore[attr-defined]
        return message._item()  # type: ignore[attr-defined,no-any-return]
    data, fds, handed = _pickling().dumps(message, what)
    if handed:  # TransferableBuffers, SharedBuffers: descriptors change hands
        return (PICKLED, data, fds, handed)
    return (PICKLED, data)


def shareable(item: tuple[Any, ...]) -> tuple[Any, ...]:
    """The part of an encoded item that goes on a queue."""
    return item[:3] if len(item) > 3 else item


def mark_sent(item: tuple[Any, ...]) -> None:
    """After a put (or a drop, after ``release_item``): the descriptors the
    item carries belong to the queue now, not to the TransferableBuffers or
    SharedBuffer duplicates (``_shared.CarriedFds``) that held them."""
    if len(item) > 3:
        for holder in item[3]:
            holder._mark_sent()


# Per thread, while an item that carries file descriptors loads: those that no
# TransferableBuffer or SharedBuffer took yet (closed if the load fails).
_loading = _thread._local()


def decode(item: tuple[Any, ...]) -> Any:
    tag = item[0]
    if tag == PLAIN:
        return item[1]
    if tag == PORT:
        return _SendPort(*item[1])
    if tag == SHARED:
        from ._shared import _arrive

        return _arrive(item[2][0], item[1])
    if len(item) > 2 and item[2]:
        return _decode_owning(item)
    if tag == MIXED:
        return _decode_parts(item[1])
    return _pickling().loads(item[1])


def _decode_owning(item: tuple[Any, ...]) -> Any:
    if item[0] == MIXED:
        return load_owning(item[2], _decode_parts, item[1])
    return load_owning(item[2], _pickling().loads, item[1])


def _decode_parts(parts: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(decode(part) for part in parts)


def load_owning(fds: tuple[int, ...], load: Callable[..., Any], *args: Any) -> Any:
    """``load(*args)``, which loads an item that carries memfds ``fds``, none
    of which may be left open: if it fails, close those that no
    TransferableBuffer or SharedBuffer took (the buffers that took theirs
    close them when they go)."""
    outer = getattr(_loading, "unowned", None)
    _loading.unowned = unowned = set(fds)
    try:
        return load(*args)
    except BaseException:
        _close_all(unowned)
        raise
    finally:
        _loading.unowned = outer
        if outer is not None:
            outer.difference_update(fds)  # a part's fds: dealt with above


# -- exceptions ---------------------------------------------------------------


def encode_exception(error: BaseException) -> tuple[Any, ...]:
    """Encode an exception with its traceback text, for ``decode_exception``."""
    error = explain_import_refusal(error)
    description, stack = format_exception(error)
    pickled = _pickling().round_trips(error)  # what cannot come back goes as text only
    return (description, stack, pickled)


def decode_exception(payload: tuple[Any, ...]) -> BaseException:
    """The remote exception, as itself when possible, with a RemoteError cause."""
    description, stack, pickled = payload
    remote = RemoteError(description, stack)
    if pickled is None:
        return remote
    try:
        error = _pickling().loads(pickled)
    except BaseException:  # its class does not load here: the RemoteError says what it was
        return remote
    if not isinstance(error, BaseException):
        return remote
    error.__cause__ = remote
    return error


# -- streams of large lists and dicts -----------------------------------------

STREAM_MIN_ITEMS = 4096


def streamable(value: object) -> bool:
    """Whether a result goes as a stream (``_pickling.encode_stream``)."""
    kind = type(value)
    return (kind is list or kind is dict or kind is tuple) and len(value) >= STREAM_MIN_ITEMS  # type: ignore[arg-type]
