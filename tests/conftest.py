"""Shared fixtures: every test must leave no isolate, thread or port behind."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from subiso import _backend, _hub
from subiso._ports import _Local

SETTLE_SECONDS = 20
# Threads that live as long as the process, once started.
_PROCESS_THREADS = (
    "subiso-spare",
    "subiso-hub",
    "subiso-reaper",
    "subiso-port-dispatcher",
    "subiso-finalizer",
    "subiso-task-callbacks",
)


def _our_threads() -> set[threading.Thread]:
    return {
        t
        for t in threading.enumerate()
        if t.name.startswith("subiso-") and t.name not in _PROCESS_THREADS
    }


def _hub_state() -> str:
    hub = _hub.current_hub()
    if hub is None:
        return "no hub"
    # (The hub thread's books, read from here: a snapshot for a failure's message.)
    zombies = [(z.interp, {q: _backend.queue_count(q) for q in z.waiting}) for z in hub.zombies]
    return (
        f"live={len(hub.live)} spares={len(hub.spares)} warming={len(hub.warming)} "
        f"ending={[e.name for e in list(hub.ending.values())]} zombies={zombies} "
        f"threads={[t.name for t in threading.enumerate()]}"
    )


@pytest.fixture(autouse=True)
def no_leaks():
    threads_before = set(threading.enumerate())
    ports_before = set(_Local.ports)
    yield
    assert _hub.settle(SETTLE_SECONDS), f"isolates were left behind: {_hub_state()}"
    # Runner threads of exited isolates may still be leaving (after reaping
    # others, one zombie at a time): give them the same time to end.
    deadline = time.monotonic() + SETTLE_SECONDS
    for thread in set(threading.enumerate()) - threads_before:
        # (and a pool's callbacks thread, which ends after its collector)
        if thread.name.startswith(("subiso-isolate", "subiso-callbacks-")):
            thread.join(max(0.0, deadline - time.monotonic()))
    leaked_threads = [
        t
        for t in set(threading.enumerate()) - threads_before
        if t.name not in _PROCESS_THREADS
        and not t.name.startswith("subiso-host")  # the host-call pool lives on
    ]
    assert not leaked_threads, f"threads left behind: {leaked_threads}"
    hub = _hub.current_hub()
    ready = 0 if hub is None else len(hub.spares)
    warming = 0 if hub is None else len(hub.warming)  # their interpreter may not exist yet
    reaper = 0 if hub is None or hub.reaper is None else 1  # (made with the first isolate)
    interpreters = len(_backend.interpreter_ids()) - reaper
    assert 1 + ready <= interpreters <= 1 + ready + warming, (
        f"interpreters left behind: {interpreters} for {ready} spares, {warming} warming"
    )
    leaked_ports = set(_Local.ports) - ports_before
    assert not leaked_ports, f"ports left open: {[_Local.ports[q] for q in leaked_ports]}"


@pytest.fixture
def ctrl_c():
    """Ctrl-C raises KeyboardInterrupt in the main thread, as in a terminal,
    also where this process was started with SIGINT ignored (a shell's
    background job)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
