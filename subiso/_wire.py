"""How a message crosses between isolates.

An encoded message ("item") is a shareable tuple that a raw queue can carry:

- ``(PLAIN, value)``: None, bool, int (64-bit), float, str, bytes and tuples
  of these travel as themselves. Nothing is pickled; the receiver gets a copy.
- ``(PICKLED, data)``: everything else, pickle protocol 5. Functions and
  classes that cannot be pickled by reference (lambdas, closures, anything
  from ``__main__``) go by value: functions through a light path built on
  ``marshal`` (no import needed in the receiver), classes through cloudpickle
  (imported only where such a payload is sent or arrives).
- ``(PICKLED, data, fds)``: the message carries ``TransferableBuffer``s,
  whose memory travels as memfd file descriptors, never copied.
- ``(MIXED, parts, fds)``: a tuple holding large str/bytes, encoded part by
  part so that those travel as themselves rather than inside a pickle.

Large lists and dicts can also be sent as a *stream*: several pickles made by
one pickler, so that references shared between items survive, which the
receiver unpickles slice by slice without stalling its event loop.
"""

from __future__ import annotations

import _pickle
import _thread
import io
import marshal
import os
import sys

from ._exceptions import NotSendableError, RemoteError, explain_import_refusal

TYPE_CHECKING = False  # typing costs an import in every fresh isolate

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any
    from typing import NamedTuple as Message
else:

    class _MessageType(type):
        """``typing.NamedTuple``'s class syntax at the cost of
        ``collections.namedtuple`` (collections is loaded at start-up,
        typing is not). Fields come from the class's annotations, which the
        defining module keeps as strings (``from __future__ import
        annotations``)."""

        def __new__(mcls, name, bases, namespace):
            from collections import namedtuple

            fields = tuple(namespace["__annotations__"])
            cls = namedtuple(name, fields, module=namespace["__module__"])
            cls.__qualname__ = namespace["__qualname__"]
            cls.__doc__ = namespace.get("__doc__") or cls.__doc__
            return cls

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
PROTOCOL = 5

_FunctionType: Any = type(lambda: None)
_CellType = type((lambda x: lambda: x)(0).__closure__[0])  # type: ignore[index]
_ModuleType = type(sys)
_BuiltinFunctionType = type(len)
_ATOMS = frozenset({type(None), bool, float, str, bytes})
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def _is_plain(value: object, depth: int = 0) -> bool:
    kind = type(value)
    if kind in _ATOMS:
        return True
    if kind is int:
        return _INT_MIN <= value <= _INT_MAX  # type: ignore[operator]
    if kind is tuple and depth < 8:
        return all(_is_plain(part, depth + 1) for part in value)  # type: ignore[attr-defined]
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


def _make_function(code_bytes: bytes, name: str, globals_: dict[str, Any], n_cells: int) -> Any:
    globals_.setdefault("__builtins__", __builtins__)
    closure = tuple(_CellType() for _ in range(n_cells)) if n_cells else None
    return _FunctionType(marshal.loads(code_bytes), globals_, name, None, closure)


def _set_function_state(fn: Any, state: tuple[Any, ...]) -> Any:
    needed, defaults, kwdefaults, cells, attrs, qualname, module = state
    fn.__globals__.update(needed)
    fn.__defaults__ = defaults
    fn.__kwdefaults__ = kwdefaults
    for cell, value in zip(fn.__closure__ or (), cells, strict=True):
        if value is not _EMPTY_CELL:
            cell.cell_contents = value
    fn.__dict__.update(attrs)
    fn.__qualname__ = qualname
    fn.__module__ = module
    return fn


class _EmptyCell:
    def __reduce__(self) -> str:
        return "_EMPTY_CELL"


_EMPTY_CELL = _EmptyCell()


def _import_module(name: str) -> Any:
    __import__(name)
    return sys.modules[name]


def _cloudpickle_loads(data: bytes) -> Any:
    import cloudpickle  # noqa: F401 - registers what its pickles need

    return _pickle.loads(data)


class _Pickler(_pickle.Pickler):
    """Protocol 5, with by-value fallbacks and TransferableBuffer support."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, PROTOCOL)
        self.transferables: list[TransferableBuffer] = []
        self._globals: dict[int, dict[str, Any]] = {}

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is _FunctionType:
            return NotImplemented if _importable(obj) else self._reduce_function(obj)
        if kind is TransferableBuffer:
            return obj._reduce_for(self)
        if kind is _ModuleType:
            return (_import_module, (obj.__name__,))
        if kind is memoryview:
            # A copy: a view into another interpreter's memory would dangle
            # once that interpreter is destroyed.
            return (memoryview, (obj.tobytes(),))
        if isinstance(obj, type) and not _importable(obj) and obj.__module__ != "builtins":
            import cloudpickle

            return (_cloudpickle_loads, (cloudpickle.dumps(obj, PROTOCOL),))
        return NotImplemented

    def _reduce_function(self, fn: Any) -> Any:
        code = fn.__code__
        source_globals = fn.__globals__
        # One fresh globals dict per source module and message, so functions
        # sent together see each other (pickle memoizes the dict).
        shared = self._globals.setdefault(id(source_globals), {"__name__": fn.__module__})
        needed = {
            name: source_globals[name]
            for name in _code_names(code, set())
            if name in source_globals and name != "__builtins__"
        }
        cells = []
        for cell in fn.__closure__ or ():
            try:
                cells.append(cell.cell_contents)
            except ValueError:
                cells.append(_EMPTY_CELL)
        state = (
            needed,
            fn.__defaults__,
            fn.__kwdefaults__,
            tuple(cells),
            dict(fn.__dict__),
            fn.__qualname__,
            fn.__module__,
        )
        args = (marshal.dumps(code), fn.__name__, shared, len(cells))
        return (_make_function, args, state, None, None, _set_function_state)


# -- TransferableBuffer -------------------------------------------------------

_OWNED, _SENT, _USED = "owned", "sent away", "materialized"


class TransferableBuffer:
    """A buffer that moves between isolates without being copied.

    ``TransferableBuffer(data)`` copies ``data`` once into memory that no
    interpreter owns (a memfd on Linux); sending it hands that memory to the
    receiver, which maps it with ``materialize()``. It can be materialized
    once, wherever it ends up (also where it was made, if it was never sent).

    Raises:
        ValueError: on a second ``materialize()``, or when it was sent away.
    """

    __slots__ = ("__weakref__", "_fd", "_inline", "_nbytes", "_state")

    def __init__(self, data: Any) -> None:
        view = memoryview(data).cast("B")
        self._nbytes = view.nbytes
        self._state = _OWNED
        self._fd = -1
        self._inline: bytes | None = None
        if self._nbytes and hasattr(os, "memfd_create"):
            fd = os.memfd_create("subiso-transfer", os.MFD_CLOEXEC)
            try:
                written = 0  # write(), not a mapping: the kernel fills its pages without faults
                while written < self._nbytes:
                    written += os.write(fd, view[written:])
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        else:
            self._inline = bytes(view)

    @classmethod
    def _arrive(cls, fd: int, nbytes: int, inline: bytes | None) -> TransferableBuffer:
        self = cls.__new__(cls)
        self._fd, self._nbytes, self._inline, self._state = fd, nbytes, inline, _OWNED
        unowned = getattr(_loading, "unowned", None)
        if unowned is not None:
            unowned.discard(fd)  # this buffer closes it now
        return self

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

        try:
            mapped = mmap.mmap(self._fd, self._nbytes)
        finally:
            os.close(self._fd)
            self._fd = -1
        return memoryview(mapped)

    def _reduce_for(self, pickler: _Pickler) -> Any:
        if self._state is not _OWNED:
            raise ValueError(f"this TransferableBuffer was already {self._state}")
        pickler.transferables.append(self)
        return (TransferableBuffer._arrive, (self._fd, self._nbytes, self._inline))

    def _mark_sent(self) -> None:
        self._state = _SENT
        self._fd = -1

    def __reduce__(self) -> Any:
        raise NotSendableError("a TransferableBuffer travels only in subiso messages")

    def __del__(self) -> None:
        if self._fd >= 0 and self._state is not _SENT:
            try:
                os.close(self._fd)
            except OSError:
                pass


def release_item(item: tuple[Any, ...]) -> None:
    """Free what an undelivered item holds outside the queue (memfds)."""
    if len(item) > 2:
        _close_all(item[2])


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


# -- encode / decode ----------------------------------------------------------


def _describe(obj: object) -> str:
    text = repr(obj)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(obj).__qualname__} {text}"


def _children(obj: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(obj, (list, tuple)):
        for i, part in enumerate(obj):
            yield f"[{i}]", part
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield f" key {key!r}", key
            yield f"[{key!r}]", value
    elif isinstance(obj, (set, frozenset)):
        for part in obj:
            yield f" element {part!r}", part
    else:
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict):
            for key, value in attrs.items():
                yield f".{key}", value
        for name in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, name):
                yield f".{name}", getattr(obj, name)


def _find_culprit(obj: Any, path: str, depth: int = 0) -> tuple[str, Any]:
    """The innermost part of ``obj`` that does not pickle, with its path."""
    if depth < 32:
        for suffix, child in _children(obj):
            try:
                _Pickler(io.BytesIO()).dump(child)
            except Exception:
                return _find_culprit(child, path + suffix, depth + 1)
    return path, obj


def not_sendable(obj: object, error: BaseException, what: str = "message") -> NotSendableError:
    path, culprit = _find_culprit(obj, what)
    where = "" if path == what else f" at {path}"
    return NotSendableError(
        f"cannot send {_describe(culprit)}{where}: {type(error).__name__}: {error}"
    )


_BIG = 64 * 1024


def _holds_big_plain(value: object, depth: int = 0) -> bool:
    """Whether a tuple carries a large str/bytes that should not be pickled."""
    kind = type(value)
    if kind is str or kind is bytes:
        return len(value) >= _BIG  # type: ignore[arg-type]
    if kind is tuple and depth < 3:
        return any(_holds_big_plain(part, depth + 1) for part in value)  # type: ignore[attr-defined]
    return False


def _encode_mixed(message: tuple[Any, ...], what: str) -> tuple[Any, ...]:
    """A tuple encoded part by part, so that its large plain parts travel
    as themselves instead of inside a pickle (a 20 MB str costs a copy, not
    a pickling on the sender's thread)."""
    parts = [encode(part, f"{what}[{i}]") for i, part in enumerate(message)]
    fds = tuple(fd for part in parts if len(part) > 2 for fd in part[2])
    transferables = [t for part in parts if len(part) > 3 for t in part[3]]
    return (MIXED, tuple(shareable(part) for part in parts), fds, transferables)


def encode(message: object, what: str = "message") -> tuple[Any, ...]:
    """Encode ``message`` into a shareable item.

    Raises:
        NotSendableError: naming the part of ``message`` that cannot cross.
    """
    if _is_plain(message):
        return (PLAIN, message)
    if type(message) is tuple and _holds_big_plain(message):
        return _encode_mixed(message, what)
    buffer = io.BytesIO()
    pickler = _Pickler(buffer)
    try:
        pickler.dump(message)
    except NotSendableError:
        raise
    except (Exception, RecursionError) as error:
        raise not_sendable(message, error, what) from error
    if pickler.transferables:
        fds = tuple(t._fd for t in pickler.transferables if t._fd >= 0)
        return (PICKLED, buffer.getvalue(), fds, pickler.transferables)
    return (PICKLED, buffer.getvalue())


def shareable(item: tuple[Any, ...]) -> tuple[Any, ...]:
    """The part of an encoded item that goes on a queue."""
    return item[:3] if len(item) > 3 else item


def mark_sent(item: tuple[Any, ...]) -> None:
    """After a successful put: the item's TransferableBuffers have left."""
    if len(item) > 3:
        for transferable in item[3]:
            transferable._mark_sent()


# Per thread, while an item that carries file descriptors loads: those that no
# TransferableBuffer took yet (closed if the load fails).
_loading = _thread._local()


def decode(item: tuple[Any, ...]) -> Any:
    tag = item[0]
    if tag == PLAIN:
        return item[1]
    if len(item) > 2 and item[2]:
        return _decode_owning(item)
    if tag == MIXED:
        return tuple(decode(part) for part in item[1])
    return _pickle.loads(item[1])


def _decode_owning(item: tuple[Any, ...]) -> Any:
    """Decode an item that carries memfds, none of which may be left open:
    if loading fails, it closes those that no TransferableBuffer took (the
    buffers that took theirs close them when they go)."""
    outer = getattr(_loading, "unowned", None)
    _loading.unowned = unowned = set(item[2])
    try:
        if item[0] == MIXED:
            return tuple(decode(part) for part in item[1])
        return _pickle.loads(item[1])
    except BaseException:
        _close_all(unowned)
        raise
    finally:
        _loading.unowned = outer
        if outer is not None:
            outer.difference_update(item[2])  # a part's fds: dealt with above


# -- exceptions ---------------------------------------------------------------


def _format_exception(error: BaseException) -> tuple[str, str]:
    import traceback

    description = "".join(traceback.format_exception_only(type(error), error)).strip()
    stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return description, stack


def encode_exception(error: BaseException) -> tuple[Any, ...]:
    """Encode an exception with its traceback text, for ``decode_exception``."""
    error = explain_import_refusal(error)
    description, stack = _format_exception(error)
    pickled: bytes | None
    try:
        buffer = io.BytesIO()
        _Pickler(buffer).dump(error)
        pickled = buffer.getvalue()
        _pickle.loads(pickled)  # what cannot come back is sent as text only
    except BaseException:
        pickled = None
    return (description, stack, pickled)


def decode_exception(payload: tuple[Any, ...]) -> BaseException:
    """The remote exception, as itself when possible, with a RemoteError cause."""
    description, stack, pickled = payload
    remote = RemoteError(description, stack)
    if pickled is None:
        return remote
    try:
        error = _pickle.loads(pickled)
    except BaseException:
        return remote
    if not isinstance(error, BaseException):
        return remote
    error.__cause__ = remote
    return error


def describe_error(error: BaseException) -> list[str]:
    """``[description, stack]``, as Dart hands errors to error listeners."""
    return list(_format_exception(explain_import_refusal(error)))


# -- streams of large lists and dicts -----------------------------------------

STREAM_MIN_ITEMS = 4096
# Pickling time per slice. Unpickling a slice can take two or three times
# longer (object construction), and the receiver batches small slices up to
# its own time budget, so slices are kept small.
_SLICE_SECONDS = 0.0005


def streamable(value: object) -> bool:
    kind = type(value)
    return (kind is list or kind is dict or kind is tuple) and len(value) >= STREAM_MIN_ITEMS  # type: ignore[arg-type]


def encode_stream(value: Any) -> Iterator[tuple[Any, ...]]:
    """Yield ``value`` as a header item and slice items.

    One pickler makes every slice, so objects shared between slices stay
    shared; slices are sized to about ``_SLICE_SECONDS`` of pickling.

    Raises:
        NotSendableError: naming the part of ``value`` that cannot cross.
    """
    from time import perf_counter

    kind = type(value)
    items = list(value.items()) if kind is dict else value
    yield (PLAIN, (kind.__name__, len(items)))
    buffer = io.BytesIO()
    pickler = _Pickler(buffer)
    start, size = 0, 64
    while start < len(items):
        chunk = items[start : start + size]
        began = perf_counter()
        try:
            pickler.dump(list(chunk))
        except (Exception, RecursionError) as error:
            raise not_sendable(value, error, "result") from error
        spent = perf_counter() - began
        start += len(chunk)
        yield (PICKLED, buffer.getvalue())
        buffer.seek(0)
        buffer.truncate()
        if spent > 0:
            size = max(16, min(size * 4, int(len(chunk) * _SLICE_SECONDS / spent)))


class _Feed(io.RawIOBase):
    """A file the unpickler reads from while slices keep arriving."""

    def __init__(self) -> None:
        self._data = b""
        self._pos = 0

    def add(self, data: bytes) -> None:
        self._data = self._data[self._pos :] + data
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else min(len(self._data), self._pos + size)
        data = self._data[self._pos : end]
        self._pos = end
        return data

    def readline(self, size: int | None = -1) -> bytes:
        end = self._data.find(b"\n", self._pos) + 1 or len(self._data)
        data = self._data[self._pos : end]
        self._pos = end
        return data


class StreamDecoder:
    """Rebuilds a streamed value one slice at a time."""

    def __init__(self, header: tuple[Any, ...]) -> None:
        self._kind, self.expected = header
        self._feed = _Feed()
        self._unpickler = _pickle.Unpickler(self._feed)
        self._items: list[Any] = []

    @property
    def done(self) -> bool:
        return len(self._items) >= int(self.expected)

    def add(self, item: tuple[Any, ...]) -> None:
        self._feed.add(item[1])
        self._items.extend(self._unpickler.load())

    def result(self) -> Any:
        if self._kind == "dict":
            return dict(self._items)
        if self._kind == "tuple":
            return tuple(self._items)
        return self._items
