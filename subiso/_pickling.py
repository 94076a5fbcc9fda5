"""The half of the wire that pickles (see _wire.py for the formats).

Loaded on first use: ``_pickle`` imports functools and collections, which
cost a fresh isolate about 3 ms, and a ``run`` whose call and result are
plain never needs them.

Functions that cannot be pickled by reference go by value through a light
path built on ``marshal`` (no import needed in the receiver); classes go
through cloudpickle, imported only where such a payload is sent or arrives.
So do the functions and classes of ``by_value_modules``, modules that
isolates refuse to import (see _fallback.py); such a class comes back to an
interpreter that has its module as that interpreter's own class.
"""

from __future__ import annotations

import _pickle
import io
import marshal
import sys

from ._exceptions import NotSendableError
from ._shared import CarriedFds, SharedBuffer
from ._wire import (
    PICKLED,
    PLAIN,
    PROTOCOL,
    TransferableBuffer,
    _code_names,
    _FunctionType,
    _import_module,
    _importable,
    _ModuleType,
    load_owning,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pickle import PickleBuffer
    from typing import Any

_CellType = type((lambda x: lambda: x)(0).__closure__[0])  # type: ignore[index]

loads = _pickle.loads


def dumps(message: object, what: str) -> tuple[bytes, tuple[int, ...], Sequence[Any]]:
    """``message`` pickled; the file descriptors it carries; and what hands
    them over once the message is sent (``_wire.mark_sent``).

    Raises:
        NotSendableError: naming the part of ``message`` that cannot cross.
    """
    buffer = io.BytesIO()
    out_of_band: list[PickleBuffer] = []
    pickler = Pickler(buffer, PROTOCOL, buffer_callback=out_of_band.append)
    try:
        pickler.dump(message)
        if out_of_band:
            data = _with_out_of_band(pickler, buffer, out_of_band)
        else:
            data = buffer.getvalue()
    except BaseException as error:
        pickler.drop()
        if isinstance(error, NotSendableError) or not isinstance(
            error, (Exception, RecursionError)
        ):
            raise
        raise not_sendable(message, error, what) from error
    return data, tuple(pickler.fds), pickler.handed


def round_trips(error: BaseException) -> bytes | None:
    """``error`` pickled, if it also loads back here; else None."""
    try:
        buffer = io.BytesIO()
        Pickler(buffer, PROTOCOL).dump(error)
        pickled = buffer.getvalue()
        _pickle.loads(pickled)
    except BaseException:  # the caller then sends the error as text and a traceback
        return None
    return pickled


# -- by-value functions and classes -------------------------------------------

#: Modules whose functions and classes travel by value, though they are
#: importable here: isolates refuse to import them (see _fallback.py). In an
#: isolate: the modules of the classes that arrived so.
by_value_modules: set[str] = set()


class ByValue:
    """A function or class that must be pickled (by value), not sent by name."""

    __slots__ = ("fn",)

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __reduce__(self) -> Any:
        return (_itself, (self.fn,))


def _itself(obj: Any) -> Any:
    return obj


def _class_here_or_value(module: str, qualname: str, value: bytes) -> Any:
    """A class of a module that travels by value: this interpreter's own if
    it has that module (the caller does), else the class from its value."""
    found: Any = sys.modules.get(module)
    if found is not None:
        for part in qualname.split("."):
            found = getattr(found, part, None)
        if isinstance(found, type):
            return found
    by_value_modules.add(module)  # sent on, it goes back the same way
    return _cloudpickle_loads(value)


_ByValuePickler: Any = None


def _class_value(cls: type) -> bytes:
    """``cls`` pickled by value by cloudpickle, with the functions and classes
    of ``by_value_modules`` that it holds (cloudpickle would send them by
    reference: its own by-value registry is process-wide)."""
    global _ByValuePickler
    if _ByValuePickler is None:
        import cloudpickle
        from cloudpickle import cloudpickle as internals

        class ByValuePickler(cloudpickle.Pickler):  # type: ignore[misc]
            def reducer_override(self, obj: Any) -> Any:
                kind = type(obj)
                if kind is _FunctionType and obj.__module__ in by_value_modules:
                    return self._dynamic_function_reduce(obj)
                if isinstance(obj, type) and obj.__module__ in by_value_modules:
                    return internals._dynamic_class_reduce(obj)
                return super().reducer_override(obj)

        _ByValuePickler = ByValuePickler
    buffer = io.BytesIO()
    _ByValuePickler(buffer, PROTOCOL).dump(cls)
    return buffer.getvalue()


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


def _cloudpickle_loads(data: bytes) -> Any:
    import cloudpickle  # noqa: F401 - registers what its pickles need

    return _pickle.loads(data)


# -- out-of-band buffers --------------------------------------------------------

#: A pickle-5 out-of-band buffer (``PickleBuffer``) at least this large
#: travels as a SharedBuffer; smaller ones are copied.
OUT_OF_BAND_MIN = 256 * 1024


def _with_out_of_band(pickler: Pickler, file: io.BytesIO, buffers: list[PickleBuffer]) -> bytes:
    """The pickle in ``file`` and the out-of-band ``buffers`` that its
    pickling set aside, as one message: large buffers go as SharedBuffers,
    their bytes copied once and never pickled; small ones as copies."""
    parts = tuple(_part(buffer) for buffer in buffers)
    data = file.getvalue()
    file.seek(0)
    file.truncate()
    pickler.clear_memo()
    pickler.dump(_OutOfBand(data, parts))  # the same pickler: the same books
    return file.getvalue()


def _part(buffer: PickleBuffer) -> SharedBuffer | bytes | bytearray:
    try:
        raw = buffer.raw()
    except BufferError:  # not contiguous
        return memoryview(buffer).tobytes()
    except TypeError:  # (raw() refuses a buffer that a Python class exports, PEP 688)
        raw = memoryview(buffer).cast("B")
    if raw.nbytes >= OUT_OF_BAND_MIN:
        return SharedBuffer(raw)
    return bytes(raw) if raw.readonly else bytearray(raw)  # as pickled in band


class _OutOfBand:
    """A pickle and its out-of-band buffers, as one message."""

    __slots__ = ("buffers", "data")

    def __init__(self, data: bytes, buffers: tuple[Any, ...]) -> None:
        self.data, self.buffers = data, buffers

    def __reduce__(self) -> Any:
        return (_load_out_of_band, (self.data, self.buffers))


def _load_out_of_band(data: bytes, buffers: tuple[Any, ...]) -> Any:
    # Read-only views of the shared mappings. (Not the SharedBuffers: CPython's
    # PickleBuffer refuses what a Python class exports, PEP 688, so an object
    # holding one could not be sent on.) A view keeps its mapping alive.
    views = [b._view() if type(b) is SharedBuffer else b for b in buffers]
    return _pickle.loads(data, buffers=views)


class Pickler(_pickle.Pickler):
    """Protocol 5, with by-value fallbacks, TransferableBuffers and
    SharedBuffers, and large out-of-band buffers sent as SharedBuffers."""

    # The books below start as these class-wide empties, replaced on first
    # use: most messages carry nothing, and a pickler is made per message
    # (one with no ``__init__`` of its own: that would cost more than the rest).
    fds: tuple[int, ...] | list[int] = ()  # what the message carries
    handed: tuple[Any, ...] | list[Any] = ()  # TransferableBuffers, CarriedFds: _wire.mark_sent
    _carried: CarriedFds | None = None
    _globals: dict[int, dict[str, Any]] | None = None

    def _hand(self, holder: Any, fd: int) -> None:
        if type(self.handed) is tuple:
            self.fds, self.handed = [], []
        self.handed.append(holder)  # type: ignore[union-attr]
        if fd >= 0:
            self.fds.append(fd)  # type: ignore[union-attr]

    def carry_fd(self, fd: int) -> None:
        """Carry ``fd``, a duplicate that the message owns until it is received."""
        if self._carried is None:
            self._carried = CarriedFds()
            self._hand(self._carried, -1)
        self._carried.fds.append(fd)
        self.fds.append(fd)  # type: ignore[union-attr]

    def hand_over(self, transferable: TransferableBuffer) -> None:
        """Carry the memory of ``transferable``, which leaves with the message."""
        self._hand(transferable, transferable._fd)

    def drop(self) -> None:
        """The message will not be sent: close the duplicates it carries."""
        if self._carried is not None:
            self._carried.close()

    def take_books(self) -> tuple[tuple[int, ...], tuple[Any, ...] | list[Any]]:
        """What the pickle made so far carries; the books start afresh."""
        books = tuple(self.fds), self.handed
        self.fds = self.handed = ()
        self._carried = None
        return books

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is _FunctionType:
            if _importable(obj) and obj.__module__ not in by_value_modules:
                return NotImplemented
            return self._reduce_function(obj)
        if kind is TransferableBuffer or kind is SharedBuffer:
            return obj._reduce_for(self)
        if kind is _ModuleType:
            return (_import_module, (obj.__name__,))
        if kind is memoryview:
            # A copy: a view into another interpreter's memory would dangle
            # once that interpreter is destroyed.
            return (memoryview, (obj.tobytes(),))
        if isinstance(obj, type):
            module = obj.__module__
            if module in by_value_modules:
                return (_class_here_or_value, (module, obj.__qualname__, _class_value(obj)))
            if module != "builtins" and not _importable(obj):
                import cloudpickle

                return (_cloudpickle_loads, (cloudpickle.dumps(obj, PROTOCOL),))
        return NotImplemented

    def _reduce_function(self, fn: Any) -> Any:
        code = fn.__code__
        source_globals = fn.__globals__
        # One fresh globals dict per source module and message, so functions
        # sent together see each other (pickle memoizes the dict).
        if self._globals is None:
            self._globals = {}
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


# -- what cannot be sent ------------------------------------------------------


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
                Pickler(io.BytesIO(), PROTOCOL).dump(child)
            except Exception:
                return _find_culprit(child, path + suffix, depth + 1)
    return path, obj


def not_sendable(obj: object, error: BaseException, what: str = "message") -> NotSendableError:
    path, culprit = _find_culprit(obj, what)
    where = "" if path == what else f" at {path}"
    return NotSendableError(
        f"cannot send {_describe(culprit)}{where}: {type(error).__name__}: {error}"
    )


# -- streams of large lists and dicts -----------------------------------------

# Pickling time per slice. Unpickling a slice can take two or three times
# longer (object construction), and the receiver batches small slices up to
# its own time budget, so slices are kept small.
_SLICE_SECONDS = 0.0005


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
    # (No buffer_callback: slices share one memo, so out-of-band buffers are
    # pickled in band, while SharedBuffers and TransferableBuffers are not.)
    pickler = Pickler(buffer, PROTOCOL)
    start, size = 0, 64
    while start < len(items):
        chunk = items[start : start + size]
        began = perf_counter()
        try:
            pickler.dump(list(chunk))
        except (Exception, RecursionError) as error:
            pickler.drop()
            raise not_sendable(value, error, "result") from error
        spent = perf_counter() - began
        start += len(chunk)
        fds, handed = pickler.take_books()
        yield (PICKLED, buffer.getvalue(), fds, handed) if handed else (PICKLED, buffer.getvalue())
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
        if len(item) > 2 and item[2]:  # it carries descriptors
            self._items.extend(load_owning(item[2], self._unpickler.load))
        else:
            self._items.extend(self._unpickler.load())

    def result(self) -> Any:
        if self._kind == "dict":
            return dict(self._items)
        if self._kind == "tuple":
            return tuple(self._items)
        return self._items
