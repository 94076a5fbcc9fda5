"""SharedBuffer: immutable bytes that any number of isolates read in place.

``SharedBuffer(data)`` copies ``data`` once into a sealed memfd, memory that
no interpreter owns. Sending one sends a duplicate of its file descriptor;
the receiver maps the same physical pages read-only. So a send costs the
same at 1 KiB and at 1 GiB, and 8 isolates reading a 1 GiB table hold it once.

Lifetime needs no bookkeeping of ours: each SharedBuffer, in whichever
interpreter, owns one descriptor and at most one mapping and closes them
once it is collected (a memoryview keeps its mapping alive, as it keeps any
exporter; the descriptor is closed by a weakref callback in C, see
``_wire.close_at_collect``), and the kernel frees the pages once the last
descriptor and the last mapping are gone. An isolate that exits or is
killed drops its own; a message that is dropped or never received has its
descriptors closed with it (``_wire.release_item``). No view can outlive the
memory it reads, whichever interpreter goes first.

The seals (no write, no resize) make the memory immutable for everyone who
holds the descriptor, not only for the views handed out here.

Threads: a SharedBuffer is immutable; its mapping is made on first use, under
one lock for all buffers (it is taken once in a buffer's life).
"""

from __future__ import annotations

import _thread
import os

from . import _wire

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any
    from weakref import ref

    from ._pickling import Pickler

__all__ = ("SharedBuffer",)

_MEMFD = hasattr(os, "memfd_create")
_mapping = _thread.allocate_lock()  # held while a buffer maps its memory, once in its life


class SharedBuffer:
    """Immutable bytes that travel by reference: every isolate that receives
    one reads the same memory, with no copy.

    ``SharedBuffer(data)`` copies ``data`` (anything with the buffer
    protocol) once. It then reads like ``bytes`` without being one:
    ``memoryview(buf)`` is read-only, ``len(buf)``, ``buf[i]``, ``buf[a:b]``
    (a read-only memoryview, no copy), ``bytes(buf)`` (a copy), and hashing and
    equality by content (equal to ``bytes`` of the same content).

    Sent in a message, an argument, a result or an Agent's state, it arrives
    as a SharedBuffer over the same pages. Pickled outside subiso (for
    another process), it goes as a copy of its bytes.
    """

    __slots__ = ("__weakref__", "_fd", "_hash", "_inline", "_map", "_nbytes")
    _fd: int  # the memfd this buffer owns; -1 when the bytes are inline
    _nbytes: int
    _inline: bytes | None  # (an empty buffer, or no memfd on this system)
    _map: Any  # the read-only mapping, made on first use
    _hash: int | None

    def __init__(self, data: Any) -> None:
        self._map = self._hash = self._inline = None
        self._fd = -1
        if type(data) is SharedBuffer:  # immutable: share, do not copy
            self._nbytes = data._nbytes
            if data._fd >= 0:
                self._own(os.dup(data._fd))
            else:
                self._inline = data._inline
            return
        view = memoryview(data).cast("B")
        self._nbytes = view.nbytes
        if not self._nbytes or not _MEMFD:
            self._inline = bytes(view)
            return
        import fcntl

        # Sealed: no write, no resize, for anyone who holds the descriptor.
        seals = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
        self._own(_wire.memfd_copy(view, "subiso-shared", seals))

    def _own(self, fd: int) -> None:
        """Hold ``fd`` for good: it is closed once this buffer is collected."""
        self._fd = fd
        _wire.close_at_collect(self, (fd,))

    def _view(self) -> memoryview:
        if self._inline is not None:
            return memoryview(self._inline)
        mapped = self._map
        if mapped is None:
            with _mapping:
                if self._map is None:
                    import mmap

                    # (trackfd=False: the mapping takes no descriptor of its own.)
                    self._map = mmap.mmap(
                        self._fd,
                        self._nbytes,
                        flags=mmap.MAP_SHARED,
                        prot=mmap.PROT_READ,
                        trackfd=False,
                    )
                mapped = self._map
        return memoryview(mapped)

    def __buffer__(self, flags: int) -> memoryview:
        return self._view()

    def __len__(self) -> int:
        return self._nbytes

    def __getitem__(self, key: Any) -> Any:
        return self._view()[key]

    def __iter__(self) -> Any:
        return iter(self._view())

    def __bytes__(self) -> bytes:
        return self._view().tobytes()

    def __eq__(self, other: object) -> bool:
        if other is self:
            return True
        if type(other) is SharedBuffer and self._nbytes != other._nbytes:
            return False
        try:
            theirs = memoryview(other)  # type: ignore[arg-type]
        except TypeError:
            return NotImplemented
        if theirs.nbytes != self._nbytes:
            return False
        try:
            theirs = theirs.cast("B")
        except TypeError:  # not contiguous
            return self._view().tobytes() == theirs.tobytes()
        return self._view() == theirs

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(self._view())  # == hash(bytes(self)), without the copy
        return self._hash

    def __repr__(self) -> str:
        return f"<SharedBuffer {self._nbytes:,} bytes>"

    def __copy__(self) -> SharedBuffer:
        return self

    def __deepcopy__(self, memo: object) -> SharedBuffer:
        return self

    def __reduce__(self) -> Any:
        # Plain pickling (another process): the bytes, copied.
        return (SharedBuffer, (bytes(self),))

    def _item(self) -> tuple[Any, ...]:
        """Sent as a message of its own or a part of a tuple: no pickle.
        The message owns a duplicate of the descriptor until it is received."""
        fd = os.dup(self._fd)
        carried = CarriedFds()
        carried.fds.append(fd)
        return (_wire.SHARED, self._nbytes, (fd,), [carried])

    def _reduce_for(self, pickler: Pickler) -> Any:
        """How a subiso message carries it: a duplicate of the descriptor,
        which the message owns until the receiver's buffer takes it."""
        if self._fd < 0:
            return (SharedBuffer, (self._inline,))
        fd = os.dup(self._fd)
        pickler.carry_fd(fd)
        return (_arrive, (fd, self._nbytes))


def _arrive(fd: int, nbytes: int) -> SharedBuffer:
    """The receiving end of ``SharedBuffer._reduce_for``: a buffer that owns
    ``fd`` now. (A module-level function: the cheapest callable to pickle.)"""
    self = SharedBuffer.__new__(SharedBuffer)
    self._map = self._hash = self._inline = None
    self._nbytes = nbytes
    self._own(fd)
    unowned = getattr(_wire._loading, "unowned", None)
    if unowned is not None:
        unowned.discard(fd)  # this buffer closes it now
    return self


_wire._SharedBuffer = SharedBuffer


class CarriedFds:
    """The descriptors a message duplicated for its SharedBuffers: closed
    if the message is never put on a queue (``_wire.mark_sent`` hands them
    to the queue, whose receiver or reaper closes them)."""

    __slots__ = ("__weakref__", "_watch", "fds")

    def __init__(self) -> None:
        self.fds: list[int] = []
        self._watch: ref[Any] | None = _wire.close_at_collect(self, self.fds)

    def _mark_sent(self) -> None:
        self._detach()
        self.fds = []

    def close(self) -> None:
        self._detach()
        fds, self.fds = self.fds, []
        _wire._close_all(fds)

    def _detach(self) -> None:
        _wire.detach_fds(self._watch)
        self._watch = None
