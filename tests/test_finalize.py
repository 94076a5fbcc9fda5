"""Collecting the library's objects runs no Python code where they are
collected: a Ctrl-C must not be lost in a finalizer (see subiso/_finalize.py)."""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading

import helpers

import subiso
from subiso import _finalize, _hub
from subiso._shared import CarriedFds

T = 30


def _garbage_cycle(port: subiso.ReceivePort) -> list[object]:
    """One of each object of ours that cleans up after itself, in a cycle."""
    carried = CarriedFds()
    carried.fds.append(os.open(os.devnull, os.O_RDONLY))
    isolate = subiso.Isolate.spawn(helpers.reply_entry, port.send_port)
    box: list[object] = [
        subiso.Pool(1, debug_name="dropped"),
        isolate,
        subiso.SharedBuffer(b"shared" * 100),
        subiso.TransferableBuffer(b"transfer" * 100),
        carried,
    ]
    box.append(box)
    return box


def _python_calls_while_collecting() -> list[str]:
    entered: list[str] = []

    def profile(frame, event, _arg):
        if event == "call":
            entered.append(f"{frame.f_code.co_filename}:{frame.f_code.co_qualname}")

    sys.setprofile(profile)
    try:
        gc.collect()
    finally:
        sys.setprofile(None)
    return entered


def test_collecting_the_librarys_objects_runs_no_python_code_in_that_thread():
    """When a signal interrupts a blocking call, CPython runs the garbage
    collection that is due before the signal's handler. A finalizer in
    Python code that it runs takes the signal: the KeyboardInterrupt was
    raised in it and only printed. A pool nobody referenced did that, and
    one Ctrl-C left the main thread waiting for good (1 run in ~90)."""
    shared_before = helpers.open_fds("memfd:subiso-shared")
    transfer_before = helpers.open_fds("memfd:subiso-transfer")
    null_before = helpers.open_fds(os.devnull)
    pool_threads = {t for t in threading.enumerate() if t.name.startswith("subiso-pool-")}
    with subiso.ReceivePort() as port:
        box = _garbage_cycle(port)
        assert port.receive(timeout=T) == "started"
        gc.collect()  # whatever else was garbage; the cycle is still referenced
        del box

        entered = _python_calls_while_collecting()

    ours = [name for name in entered if f"{os.sep}subiso{os.sep}" in name]
    assert ours == [], f"Python code of subiso ran as it was collected: {ours}"
    # The cleanup still happens, on the finalizer thread.
    assert _finalize.settle(T)
    for thread in threading.enumerate():
        if thread.name.startswith("subiso-pool-") and thread not in pool_threads:
            thread.join(T)  # the dropped pool's collector shuts it down
            assert not thread.is_alive()
    assert _hub.settle(T)
    assert helpers.open_fds("memfd:subiso-shared") == shared_before
    assert helpers.open_fds("memfd:subiso-transfer") == transfer_before
    assert helpers.open_fds(os.devnull) == null_before


def test_a_cleanup_that_fails_is_reported_and_the_next_one_runs(caplog):
    """The finalizer thread's safety net: one job's error is logged and
    does not end it."""

    class Owner:
        pass

    def fails():
        raise RuntimeError("cleanup failed")

    ran = threading.Event()
    first, second = Owner(), Owner()
    _finalize.at_collect(first, fails)
    _finalize.at_collect(second, ran.set)
    with caplog.at_level(logging.ERROR, logger="subiso"):
        del first, second
        assert ran.wait(T)
        assert _finalize.settle(T)
    assert "a cleanup of collected objects failed" in caplog.text
    assert "RuntimeError: cleanup failed" in caplog.text
