"""Exited isolates that wait for what they sent: the hub's books of them.

An isolate's interpreter is destroyed only once the messages it put on
queues are taken (CPython drops an item with the interpreter that put it),
and the mailbag segments it handed over at exit are closed once their
records are read. Both belong to the hub thread, which looks again after
each batch of work and whenever a receiver says a queue drained.
"""

from __future__ import annotations

from . import _backend
from ._ports import _Process

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class Zombie:
    """An exited isolate whose interpreter waits for what it sent to be taken.

    The hub thread's: ``waiting`` maps each queue it sent to that may still
    hold its items to a ticket, -1 until one is drawn.
    """

    __slots__ = ("booted", "interp", "waiting")

    def __init__(self, interp: object, sent_to: tuple[int, ...], booted: Any = None) -> None:
        self.interp = interp
        self.booted = booted
        self.waiting = dict.fromkeys(sent_to, -1)

    def received(self, counter_of: Callable[[int], Any]) -> bool:
        """Look again; True once nothing it sent waits on a queue.

        ``counter_of(qid)`` is the consumer of the queue, if it counts its
        takes: ``started`` before each look at the queue, ``taken`` after it
        (found or not), and it wakes the hub when ``taken`` reaches
        ``wake_at``. The ticket is ``started`` read after the queue's count,
        plus that count: once ``taken`` reaches it, at least ``count`` takes
        begun after the count are done, and in a FIFO queue the first
        ``count`` of those took every item waiting then (or found it empty).
        The isolate puts no more, so all of its items are gone. The ticket
        errs late (a take cut short leaves ``taken`` behind), never early: a
        take in flight at the look, its item gone and not yet counted, is
        in ``started`` already.

        A queue posted to the reaper is done with only once it no longer
        exists: a get of the reaper's can still be inside CPython after the
        queue looks empty, releasing this isolate's data there (3.13 does it
        in the interpreter that made it: destroyed meanwhile, it crashed).
        """
        for qid, ticket in list(self.waiting.items()):
            if qid in _Process.reaping and _backend.queue_exists(qid):
                continue  # the reaper destroys it, then wakes the hub
            waiting = _backend.queue_count(qid)
            if not waiting:
                del self.waiting[qid]
                continue
            counter = counter_of(qid)
            if counter is None:
                continue  # until the queue is seen empty
            if ticket < 0:
                ticket = self.waiting[qid] = counter.started + waiting
            if ticket < counter.wake_at:
                counter.wake_at = ticket
            if counter.taken >= ticket:  # also after the wake-up was set: none is lost
                del self.waiting[qid]
        return not self.waiting


class Handed:
    """The mailbag segments an exited isolate handed over (see _mailbag):
    records its receivers have not read yet. Their memory is the
    descriptors', not the interpreter's, which need not wait for them.
    The hub's; it empties and closes each segment once every record in it
    is consumed.
    """

    __slots__ = ("orphans", "segments")

    def __init__(self, segments: tuple[tuple[int, int], ...]) -> None:
        # [descriptor, head, how far its records are known consumed]
        self.segments = [[fd, head, 0] for fd, head in segments]
        self.orphans: dict[int, float] = {}  # queues seen gone, since when (_mailbag._orphaned)

    def settled(self) -> bool:
        """Look again, closing the segments now read; True once all are."""
        from . import _mailbag

        left = []
        for segment in self.segments:
            fd, head, offset = segment
            segment[2] = _mailbag.read_up_to(fd, head, offset, self.orphans)
            if segment[2] >= head:
                _mailbag.discard(fd)
            else:
                left.append(segment)
        self.segments = left
        return not left
