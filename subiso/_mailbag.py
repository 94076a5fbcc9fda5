"""Messages out of band: what an interpreter sends past its window.

CPython releases a queue item's cross-interpreter data by posting a call to
the interpreter that put it, and that queue of calls holds 300 and drops the
rest (see DESIGN.md, "CPython loses cross-interpreter releases"): a dropped
release leaks the sender's objects, and pins its whole heap when it is
destroyed. So an interpreter puts at most ``_ports.WINDOW`` items that need
a release (every encoded message is a tuple) and have not been released yet
(``_ports._put``); past that, a message goes *out of band*: its item is
written, marshalled, into this interpreter's mailbag, and what goes on the
queue is an int naming the record. An int needs no release.

The mailbag is a list of segments, memfds this interpreter maps. A record is
a 24-byte header (payload size, a stamp, its state, its destination queue)
and the payload. The int names the segment's descriptor, the record's
offset and stamp. Whoever takes the int (``take``, or ``drop`` when a closed
port's queue is drained) reads the record through its interpreter's own
mapping of the segment (made at its first read, kept for the next ones)
and marks it consumed there; the sender reuses a segment once every record
in it is consumed, and keeps at most one spare. A descriptor stays open
while a record in its segment is not consumed: an isolate that exits hands
the segments that still hold records to the hub (in its report), which
waits for them as it waits for the messages an exited isolate sent.

A segment is emptied (its pages given back, every byte reading zero)
before its descriptor is closed (``discard``). So a receiver's mapping of a
closed segment keeps no memory, and one that a later segment's descriptor
number finds in its cache reads zeros: no record there is written, and the
receiver maps the descriptor afresh before it concludes anything.

A record whose int was lost with its queue (a put that landed after the
last drain of a closing port) is an *orphan*: still written, its queue
gone. Whoever looks after its segment (the sender's ``tidy``, the hub's
``read_up_to``) consumes it, closing the descriptors it carries, once its
queue has been seen gone for ``ORPHAN_SECONDS`` (every record for that
queue at once): a receiver that took its int just before the queue went
reads it within microseconds. A receiver that finds
a record consumed, or written over (its stamp differs), raises LookupError:
the port was closed as it received.

Threads: the mailbag's books belong to this interpreter, and whoever
changes them (``write``, ``tidy``, ``hand_over``) holds ``_lock``, taken on
the out-of-band path only. A kill never lands in library code; a Ctrl-C in
the main thread can, and at worst leaves a record written that nobody
takes (an orphan once its port closes) or a segment not yet in the books.
``take``, ``drop`` and ``read_up_to`` may run on any thread of any
interpreter: they touch records only.
"""

from __future__ import annotations

import _thread
import marshal
import os
from _struct import Struct
from _struct import error as _StructError  # type: ignore[attr-defined]
from collections import deque
from time import monotonic as _monotonic

from ._backend import queue_exists

TYPE_CHECKING = False
if TYPE_CHECKING:
    from mmap import mmap
    from typing import Any, ClassVar

SEGMENT = 1 << 20  # bytes; a larger record gets a segment of its own
_HEADER = Struct("<IIIIQ")  # payload size, stamp, state, (unused), destination queue
_HEADER_SIZE = _HEADER.size
_pack_header = _HEADER.pack_into
_unpack_header = _HEADER.unpack_from
_dumps = marshal.dumps
_loads = marshal.loads
_INLINE = 232  # payload bytes read with the header (most records fit)
_WRITTEN, _CONSUMED = 1, 2
_CONSUMED_BYTES = _CONSUMED.to_bytes(4, "little")
_STATE_AT = 8  # the state's offset in the header

#: Seconds a record must look orphaned before it is consumed (see above).
ORPHAN_SECONDS = 1.0

# An out-of-band item: stamp (26 bits) | descriptor (20 bits) | offset / 8 (17 bits).
# (A segment larger than SEGMENT holds one record, at offset 0.)
_FD_BITS, _OFFSET_BITS = 20, 17
_FD_MASK = (1 << _FD_BITS) - 1
_OFFSET_MASK = (1 << _OFFSET_BITS) - 1
_STAMPS = 1 << 26

_lock = _thread.allocate_lock()


class _Segment:
    __slots__ = ("fd", "head", "map", "orphans", "outstanding", "size", "stamp")

    def __init__(self, size: int) -> None:
        import mmap as mmap_module

        self.size = size
        self.fd = os.memfd_create("subiso-mailbag", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            # (trackfd=False: mmap would keep a duplicate descriptor of its own)
            self.map: mmap = mmap_module.mmap(self.fd, size, trackfd=False)
        except BaseException:
            os.close(self.fd)
            raise
        self.head = 0  # where the next record goes
        self.stamp = int.from_bytes(os.urandom(4), "little") % _STAMPS
        self.outstanding: deque[int] = deque()  # offsets of records not seen consumed, in order
        self.orphans: dict[int, float] = {}  # queues seen gone, and since when (_orphaned)

    def settled(self) -> bool:
        """Whether every record written here is consumed, orphans included.
        Looks from the oldest record on and stops at the first one that
        waits to be read: amortized O(1) a record (a stream's receiver reads
        them in order; an orphan behind a record still to be read is found
        once that one is)."""
        view = self.map
        outstanding = self.outstanding
        while outstanding:
            at = outstanding[0]
            if view[at + _STATE_AT] != _CONSUMED:
                _size, stamp, _state, _, qid = _HEADER.unpack_from(view, at)
                if not _orphaned(self.orphans, qid):
                    return False
                drop(_key(self.fd, at, stamp))
            outstanding.popleft()
        return True

    def close(self) -> None:
        _empty(self.map)
        self.map.close()
        os.close(self.fd)


def _orphaned(seen: dict[int, float], qid: int) -> bool:
    """Whether a written record for queue ``qid`` is an orphan: the queue
    has been gone for ``ORPHAN_SECONDS``. ``seen`` keeps when each queue was
    first seen gone: the records of one queue are orphaned together (one
    at a time, a backlog of them took a second each), and a queue id is
    never used again."""
    if qid not in seen:
        if queue_exists(qid):
            return False
        seen[qid] = _monotonic()
    return _monotonic() - seen[qid] >= ORPHAN_SECONDS


class _Mailbag:
    """This interpreter's segments: the active one, and those it filled."""

    active: _Segment | None = None
    full: ClassVar[list[_Segment]] = []  # filled, with records maybe not consumed yet
    spare: _Segment | None = None
    puts = 0  # puts in the window since the last tidy
    written = 0  # records written, ever


def _round(n: int) -> int:
    return (n + 7) & ~7


def _key(fd: int, at: int, stamp: int) -> int:
    return (stamp << (_FD_BITS + _OFFSET_BITS)) | (fd << _OFFSET_BITS) | (at >> 3)


def write(item: tuple[Any, ...], qid: int) -> int:
    """Write ``item`` (a shareable tuple) for queue ``qid``; the int to put
    there instead."""
    payload = _dumps(item)
    size = len(payload)
    need = _HEADER_SIZE + ((size + 7) & ~7)
    with _lock:
        segment = _Mailbag.active
        if segment is None or segment.head + need > segment.size:
            segment = _segment_for(need)
        at = segment.head
        segment.head = at + need
        stamp = segment.stamp = (segment.stamp + 1) % _STAMPS
        view = segment.map
        view[at + _HEADER_SIZE : at + _HEADER_SIZE + size] = payload
        _pack_header(view, at, size, stamp, _WRITTEN, 0, qid)
        segment.outstanding.append(at)
        _Mailbag.written += 1
    return (stamp << (_FD_BITS + _OFFSET_BITS)) | (segment.fd << _OFFSET_BITS) | (at >> 3)


def unwrite(key: int) -> None:
    """A record written for a put that did not happen (a full port): free it."""
    fd, offset, _stamp = _fields(key)
    os.pwrite(fd, _CONSUMED_BYTES, offset + _STATE_AT)


def _segment_for(need: int) -> _Segment:
    """A new active segment, with room for ``need`` bytes (under the lock):
    the active one is full."""
    bag = _Mailbag
    segment = bag.active
    if segment is not None:
        bag.full.append(segment)
    _tidy()
    if need <= SEGMENT and bag.spare is not None:
        segment, bag.spare = bag.spare, None
    else:
        segment = _Segment(max(SEGMENT, need))
    bag.active = segment
    return segment


def untidy() -> bool:
    """Whether this interpreter's filled segments are due a look (every 64th
    put in the window while some wait: a stream that outran its receiver
    left them, and gives their memory back once they are read)."""
    bag = _Mailbag
    if not bag.full:
        return False
    bag.puts += 1
    return bag.puts % 64 == 0


def tidy() -> None:
    """Use again, or close, the filled segments whose records are all
    consumed; one is kept spare."""
    with _lock:
        _tidy()


def _tidy() -> None:
    bag = _Mailbag
    still = []
    for each in bag.full:
        if not each.settled():
            still.append(each)
        elif bag.spare is None and each.size == SEGMENT:
            each.head = 0
            each.orphans.clear()
            bag.spare = each
        else:
            each.close()
    bag.full = still


def _fields(key: int) -> tuple[int, int, int]:
    """(descriptor, offset, stamp) of an out-of-band item."""
    offset = (key & _OFFSET_MASK) << 3
    fd = (key >> _OFFSET_BITS) & _FD_MASK
    return fd, offset, key >> (_FD_BITS + _OFFSET_BITS)


# This interpreter's mappings of the segments it read from, by descriptor.
_maps: dict[int, mmap] = {}


def _map(fd: int) -> mmap:
    import mmap as mmap_module

    return mmap_module.mmap(fd, os.fstat(fd).st_size, trackfd=False)


def _written(view: mmap, offset: int, stamp: int) -> bool:
    try:
        _size, found, state, _, _qid = _unpack_header(view, offset)
    except _StructError:  # past the end of a smaller, earlier segment
        return False
    return bool(found == stamp and state == _WRITTEN)


def take(key: int) -> tuple[Any, ...]:
    """The item an out-of-band int names; its record is consumed.

    Raises:
        LookupError: the record was consumed, or written over: its port was
            closed as it was received (see the module docstring).
    """
    offset = (key & _OFFSET_MASK) << 3
    fd = (key >> _OFFSET_BITS) & _FD_MASK
    stamp = key >> (_FD_BITS + _OFFSET_BITS)
    view = _maps.get(fd)
    if view is None or not _written(view, offset, stamp):
        # The first read of this segment here, or a mapping of an earlier
        # segment with this descriptor number (emptied: it reads zeros).
        try:
            view = _maps[fd] = _map(fd)
        except (OSError, ValueError):  # the segment is gone
            raise LookupError("the out-of-band message was dropped with its port") from None
        if not _written(view, offset, stamp):
            raise LookupError("the out-of-band message was dropped with its port")
    start = offset + _HEADER_SIZE
    item: tuple[Any, ...] = _loads(view[start : start + _unpack_header(view, offset)[0]])
    view[offset + _STATE_AT : offset + _STATE_AT + 4] = _CONSUMED_BYTES
    return item


def drop(key: int) -> tuple[Any, ...] | None:
    """Consume the record of an item that will not be received (its port
    closed); the item, for its descriptors to be closed, or None if it was
    consumed already."""
    try:
        item = take(key)
    except LookupError:
        return None
    if len(item) > 2:
        for fd in item[2]:
            try:
                os.close(fd)
            except OSError:
                pass
    return item


def _empty(view: mmap) -> None:
    """Give back the pages of a segment: every byte reads zero from now on,
    through every mapping of it (see the module docstring)."""
    import mmap as mmap_module

    view.madvise(mmap_module.MADV_REMOVE)


def discard(fd: int) -> None:
    """Empty a handed-over segment, then close its descriptor (the hub's)."""
    try:
        view = _map(fd)
    except (OSError, ValueError):
        pass
    else:
        _empty(view)
        view.close()
    os.close(fd)


def written() -> int:
    """How many records this interpreter wrote (messages sent out of band)."""
    return _Mailbag.written


def segment_count() -> int:
    """The segments this interpreter keeps (open memfds)."""
    bag = _Mailbag
    return len(bag.full) + (bag.active is not None) + (bag.spare is not None)


def hand_over() -> tuple[tuple[int, int], ...]:
    """At isolate exit: the segments that still hold records not consumed,
    as (descriptor, head); their descriptors stay open for whoever waits for
    them (the hub). The others are closed."""
    bag = _Mailbag
    with _lock:
        segments = [*bag.full, *([bag.active] if bag.active is not None else [])]
        if bag.spare is not None:
            segments.append(bag.spare)
        bag.full, bag.active, bag.spare = [], None, None
        handed = []
        for segment in segments:
            if segment.settled():
                segment.close()
            else:
                segment.map.close()  # (the descriptor is what keeps the memory)
                handed.append((segment.fd, segment.head))
    return tuple(handed)


def read_up_to(fd: int, head: int, offset: int, orphans: dict[int, float]) -> int:
    """How far from ``offset`` the records of a handed-over segment are all
    consumed, orphans included (the hub's, for an exited isolate's segments;
    ``head`` once all are; ``orphans`` is kept between looks). Stops at the
    first record that waits to be read, as ``_Segment.settled`` does."""
    while offset < head:
        size, stamp, state, _, qid = _HEADER.unpack(os.pread(fd, _HEADER.size, offset))
        if state != _CONSUMED:
            if not _orphaned(orphans, qid):
                break
            drop(_key(fd, offset, stamp))
        offset += _HEADER.size + _round(size)
    return offset
