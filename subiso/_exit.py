"""Ctrl-C while the process exits: the first stops the wait for work, the
next ends the process if isolates still block in C calls.

The hub's exit (``Hub.shutdown``, main thread) holds an ``ExitInterrupts``
while it waits; its handler reads the hub's books lock-free, as a snapshot.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from . import _backend

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._hub import Hub


def _log() -> Any:
    import logging  # (not at import: a plain `import subiso` should stay light)

    return logging.getLogger("subiso")


class ExitInterrupts:
    """SIGINT while the process exits (a Python handler runs in the main
    thread only, so elsewhere this does nothing).

    The first Ctrl-C of the exit goes to the handler that was there
    (KeyboardInterrupt, as a rule) if exit still waits for the work of
    pools: that wait stops, and the isolates are killed and waited for. A
    program that ended in a KeyboardInterrupt had that first Ctrl-C already.
    The next one, while isolates still block in C calls, ends the process
    at once, as an unhandled Ctrl-C does: killed by SIGINT, after stdio is
    flushed and the isolates left behind are named. The handler runs between
    two bytecodes of the main thread: it takes no lock of ours."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        interrupted = _backend.main_ended_in_interrupt()
        self.raising = not interrupted
        self.presses = 0 if interrupted else -1  # Ctrl-Cs of the exit's own, once it kills
        self.previous: Any = None
        self.joining: list[threading.Thread] | None = None  # known once isolates are killed
        self.pressed = False  # a Ctrl-C the join loop has to act on

    def __enter__(self) -> ExitInterrupts:
        if threading.current_thread() is not threading.main_thread():
            return self
        handler = signal.getsignal(signal.SIGINT)
        if not callable(handler):
            return self  # ignored, or the default (the OS ends the process)
        try:
            signal.signal(signal.SIGINT, self._interrupted)
        except KeyboardInterrupt:  # one was pending: as if it came just after
            signal.signal(signal.SIGINT, self._interrupted)
            self.previous = handler
            if self.raising:  # the exit's first: the wait for work is skipped
                self.raising = False
                self.presses = 0
            else:
                self._interrupted(signal.SIGINT, None)
            return self
        self.previous = handler
        return self

    def hold(self) -> None:
        """The wait for work is over: isolates are killed from now on."""
        self.raising = False

    def _interrupted(self, signum: int, frame: Any) -> None:
        if self.raising:
            self.raising = False  # once only: the handler may raise
            self.presses = 0
            self.previous(signum, frame)
            return
        self.presses += 1
        if self.joining is not None:
            # The exit's join loop acts on it within 50 ms, outside this
            # handler (which may have cut a write to stderr short).
            self.pressed = True
            return
        # Not in the join loop yet: what the hub has (a snapshot, read lock-free).
        left = [b.thread.name for b in list(self.hub.live.values()) if b.thread.is_alive()]
        if left and self.presses >= 1:
            _end_process_now(left)

    def heed(self, threads: list[threading.Thread]) -> None:
        """In the exit's join loop: act on a Ctrl-C its handler noted."""
        if not self.pressed:
            return
        self.pressed = False
        left = [t.name for t in threads if t.is_alive()]
        if not left:
            return  # nothing left to wait for: exit ends on its own
        if self.presses >= 1:
            _end_process_now(left)
        _log().warning("exit waits for isolates to end: %s", ", ".join(left))

    def __exit__(self, *exc_info: object) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _end_process_now(left: list[str]) -> None:
    """End the process as an unhandled Ctrl-C does (killed by SIGINT), at
    once: isolates in blocking C calls cannot be waited for."""
    try:
        _log().warning(
            "a second Ctrl-C while exiting: the process ends now, without waiting for "
            "isolates in blocking calls (%s)",
            ", ".join(left),
        )
    except BaseException:  # the process ends next, said or not
        pass
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except BaseException:  # a stream that cannot flush: the others still do
            pass
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.raise_signal(signal.SIGINT)
    os._exit(128 + signal.SIGINT)  # (only if SIGINT could not end it)
