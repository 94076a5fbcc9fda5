"""The reaper: destroys the queues of closed ports, in an interpreter of its own.

CPython destroys a queue by spinning, with the caller's GIL held, until no
put or get is inside it. A put by another thread of the caller's interpreter
can be inside it while it waits for the cross-interpreter registry's lock
(contended whenever isolates send), and it needs that GIL back to finish:
the whole process froze. The reaper's interpreter runs one thread, which
puts on no queue but the hub's wake-up, so its spin only ever waits for puts
that can finish.

Thread rule: a port (any interpreter, any thread) drains its closed queue
and posts the queue's id here (``_ports._destroy_queue``); only the reaper
thread takes from the reaper queue, drains again what arrived meanwhile and
destroys. The hub starts the reaper with itself and stops it at exit; while
there is none (no isolate started yet, so no other interpreter can be inside
a queue; or after exit), ports destroy their queues themselves. The reaper's
safety net: a queue it fails to destroy is logged and left, and if its loop
ends, the main interpreter destroys what is still posted.
"""

from __future__ import annotations

from . import _backend
from ._backend import EMPTY
from ._ports import _drain_and_destroy, _drained, _Process, _through_gate
from ._wire import release_item

TYPE_CHECKING = False  # typing costs an import in every fresh isolate
if TYPE_CHECKING:
    from typing import Any

BOOTSTRAP = """\
import sys
sys.path[:] = _subiso_path
from subiso import _reaper
_reaper.serve(_subiso_params)
"""

STOP = -1  # posted instead of a queue id: the reaper returns


def serve(params: tuple[Any, ...]) -> None:
    """The reaper's loop, in its own interpreter."""
    qid, rfd, _Process.hub_wfd, _Process.zombie_qid, _Process.fd_gate = params
    while True:
        _backend.wait_readable([rfd], None)
        _backend.waker_drain(rfd)
        while (target := _backend.queue_get(qid)) is not EMPTY:  # (ints: no release)
            if target == STOP:
                return
            destroy(target)  # type: ignore[arg-type]
        # Queues just went away: an exited isolate that sent to them (or
        # posted them here) may now be destroyed.
        _drained()


def destroy(qid: int) -> None:
    """Drop what still waits on the queue, then destroy it."""
    try:
        while (item := _backend.queue_get(qid)) is not EMPTY:
            release_item(item)  # type: ignore[arg-type]
        _through_gate(_drain_and_destroy, qid)  # what was put meanwhile, too
    except _backend.QueueNotFoundError:
        pass
    except BaseException:  # the safety net: one queue is left, the reaper goes on
        import logging

        logging.getLogger("subiso").exception("the reaper could not destroy queue %s", qid)
