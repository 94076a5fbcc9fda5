"""Leaving the process with live, even busy, isolates is clean."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).parent.parent

SCRIPT = textwrap.dedent(
    """
    import sys, threading
    sys.path.insert(0, {tests!r})
    import helpers, subiso

    port = subiso.ReceivePort()
    busy = subiso.Isolate.spawn(helpers.busy_entry, port.send_port)
    assert port.receive(timeout=30) == "busy"
    listening = subiso.Isolate.spawn(helpers.listen_entry, port.send_port)
    port.receive(timeout=30)
    started = threading.Event()

    def in_run():
        started.set()
        try:
            subiso.run(lambda: [0 for _ in iter(int, 1)])  # never returns by itself
        except BaseException:
            pass

    threading.Thread(target=in_run).start()
    started.wait(30)
    print("leaving", flush=True)
    sys.exit(3)
    """
)


def test_exit_with_busy_isolates_is_clean_and_keeps_the_exit_code():
    script = SCRIPT.format(tests=str(Path(__file__).parent))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert "leaving" in result.stdout
    assert "Fatal Python error" not in result.stderr, result.stderr
    assert result.returncode == 3, result.stderr


FORK_SCRIPT = textwrap.dedent(
    """
    import os, signal, subiso
    port = subiso.ReceivePort()
    iso = subiso.Isolate.spawn(lambda p: p.send("up"), port.send_port)
    assert port.receive(timeout=30) == "up"
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.kill(pid, signal.SIGKILL)  # the child hangs in CPython; do not wait for it
    os.waitpid(pid, 0)
    print("parent done", flush=True)
    """
)


def test_fork_with_live_isolates_is_explained():
    result = subprocess.run(
        [sys.executable, "-W", "always::RuntimeWarning", "-c", FORK_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert "parent done" in result.stdout, result.stderr
    assert "gh-139759" in result.stderr and "forkserver" in result.stderr


POOL_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import helpers, subiso

    with subiso.Pool(2) as pool:
        for i in range(300):
            assert pool.submit(helpers.square, i).result(timeout=30) == i * i
    print("leaving", flush=True)
    """
)


def test_exit_right_after_a_pool_is_clean():
    """The hub may be destroying a worker's interpreter as the process
    exits; finalization used to end it a second time and crash (about one
    exit in three on 3.14 and 3.15)."""
    script = POOL_SCRIPT.format(tests=str(Path(__file__).parent))
    for _ in range(6):
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
        )
        assert "leaving" in result.stdout
        assert "Fatal Python error" not in result.stderr, result.stderr
        assert "remaining subinterpreters" not in result.stderr, result.stderr
        assert result.returncode == 0, result.stderr


SPARE_SCRIPT = textwrap.dedent(
    """
    import threading, subiso
    from subiso import _hub

    start = threading.Thread.start
    held = threading.Event()

    def start_when_exit_began(thread):
        # The first spare's thread starts only once the process is leaving.
        if thread.name == "subiso-spare" and not held.is_set():
            held.set()
            hub = _hub.current_hub()
            for _ in range(2000):
                if hub.closing:
                    break
                threading.Event().wait(0.005)
            else:
                raise AssertionError("the process never began to leave")
        start(thread)

    threading.Thread.start = start_when_exit_began
    assert subiso.run(len, "ab") == 2  # then the hub warms spares
    assert held.wait(30)
    print("leaving", flush=True)
    """
)


def test_exit_while_a_spare_is_being_started_is_clean():
    """The hub thread had put a spare in its books and not yet started its
    thread when the process began to leave: exit tried to join a thread
    that had not started, left it to start during finalization, and
    crashed (seen on 3.14)."""
    result = subprocess.run(
        [sys.executable, "-c", SPARE_SCRIPT], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert "leaving" in result.stdout
    assert result.stderr == ""
    assert result.returncode == 0
