"""Leaving the process with live, even busy, isolates is clean."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import subiso

ROOT = Path(__file__).parent.parent
T = 30

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


def _leave(script, status):
    """Run ``script`` (formatted with the tests' folder) in a new process:
    it says it is leaving, then the process exits cleanly with ``status``."""
    result = subprocess.run(
        [sys.executable, "-c", script.format(tests=str(Path(__file__).parent))],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert "leaving" in result.stdout
    assert "Fatal Python error" not in result.stderr, result.stderr
    assert result.returncode == status, result.stderr
    return result


def test_exit_with_busy_isolates_is_clean_and_keeps_the_exit_code():
    _leave(SCRIPT, 3)


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
    leaving = threading.Event()
    threading._register_atexit(leaving.set)  # (runs before the hub's own exit hook)

    def start_when_exit_began(thread):
        # The first spare's thread starts only once the process is leaving.
        if thread.name == "subiso-spare" and not leaving.is_set():
            if not leaving.wait(30):
                raise AssertionError("the process never began to leave")
        start(thread)

    threading.Thread.start = start_when_exit_began
    assert subiso.run(len, "ab") == 2  # then the hub warms spares
    print("leaving", flush=True)
    """
)


def test_exit_while_a_spare_is_being_started_is_clean():
    """The hub thread was starting a spare's thread as the process began
    to leave: exit must kill and join it too (it used to try to join a
    thread that had not started, and crashed, seen on 3.14)."""
    result = subprocess.run(
        [sys.executable, "-c", SPARE_SCRIPT], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert "leaving" in result.stdout
    assert result.stderr == ""
    assert result.returncode == 0


INTERRUPTED_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys, time
    import subiso

    mode, api = sys.argv[1], sys.argv[2]

    def work(_=None):
        os.write(1, b"started\\n")
        if mode == "busy":
            while True:
                pass
        time.sleep(1)  # one blocking C call: a kill waits for it

    if api == "run":
        subiso.run(work)
    elif api == "map":
        with subiso.Pool(2) as pool:
            list(pool.map(work, range(2)))
    elif api == "submit":  # no block: the pool lives until exit
        subiso.Pool(2).submit(work).result()
    else:
        asyncio.run(subiso.run_async(work))
    """
)

GAPS = (0.005, 0.02, 0.05, 0.1)


@pytest.mark.parametrize("api", ["run", "map", "run_async"])
@pytest.mark.parametrize("mode", ["busy", "sleeping"])
def test_a_second_ctrl_c_while_exiting_is_survived(mode, api):
    """Ctrl-C, then Ctrl-C again while the process leaves: it used to abort
    in CPython ("Py_EndInterpreter: not the last thread") or hang in
    threading's shutdown. Now exit waits for the isolates' blocking calls
    and ends as a Ctrl-C does, with its exit status."""
    with contextlib.ExitStack() as children:
        started = []
        for gap in GAPS:
            child = children.enter_context(_interrupted_child(mode, api))
            child.send_signal(signal.SIGINT)
            time.sleep(gap)  # the gap between the two presses is the subject here
            child.send_signal(signal.SIGINT)
            started.append((gap, child))
        for gap, child in started:
            _check_interrupted_exit(child, f"second Ctrl-C {gap * 1000:g} ms later")


@contextlib.contextmanager
def _interrupted_child(mode, api):
    with subprocess.Popen(
        # (-X faulthandler: a crash shows where each thread was.)
        [sys.executable, "-X", "faulthandler", "-c", INTERRUPTED_SCRIPT, mode, api],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as child:
        try:
            assert child.stdout.readline() == "started\n"
            yield child
        finally:
            if child.returncode is None:
                child.kill()
                child.communicate()


def _check_interrupted_exit(child, what):
    try:
        _, stderr = child.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"exit hung: {what}") from None
    context = f"{what}:\n{stderr}"
    assert "Fatal Python error" not in stderr, context
    assert child.returncode == -signal.SIGINT, context
    assert "KeyboardInterrupt" in stderr, context
    # A Ctrl-C in CPython's own exit code (printing the traceback, an atexit
    # callback) is CPython's to report; none may come from subiso's.
    for ignored in stderr.split("Exception ignored")[1:]:
        assert "/subiso/" not in ignored.split("\n\n")[0], context


@pytest.mark.parametrize("api", ["run", "map", "submit", "run_async"])
def test_one_ctrl_c_ends_the_process_as_an_interrupt(api):
    """One Ctrl-C ends the process, killed by SIGINT as without isolates.
    A pool's work is stopped, not waited for (that took two more Ctrl-Cs).
    On 3.13 an isolate starting as the process left reset CPython's record
    of the unhandled KeyboardInterrupt, and the exit status became 1."""
    with _interrupted_child("busy", api) as child:
        child.send_signal(signal.SIGINT)
        _check_interrupted_exit(child, "one Ctrl-C")


LEAKED_LOCK_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import helpers, subiso

    port = subiso.ReceivePort()
    with subiso.Pool(1) as pool:
        pool.submit(helpers.announce_then_spin, port.send_port)
        assert port.receive(timeout=30) == "started"
        # A Ctrl-C that lands just after a `with lock:` took the lock, before
        # the block began, leaves the lock held: as here, in the pool's.
        pool._core.lock.acquire()
        print("leaving", flush=True)
        raise KeyboardInterrupt
    """
)


def test_a_ctrl_c_that_leaves_a_pool_lock_held_does_not_hang_the_exit():
    """Ctrl-C can land between a lock's acquire and the `with` block that
    releases it. The main thread, leaving by the Ctrl-C, then holds the
    pool's lock for good; the exit waited for the collector, which waited
    for that lock (seen in a soak of two Ctrl-Cs, 1 in ~1,400 children).
    The exit now waits for the pool's isolates, not for its bookkeeping."""
    result = _leave(LEAKED_LOCK_SCRIPT, -signal.SIGINT)
    assert "KeyboardInterrupt" in result.stderr, result.stderr


SKIPPED_HOOK_SCRIPT = textwrap.dedent(
    """
    import sys, threading
    sys.path.insert(0, {tests!r})
    import helpers, subiso

    port = subiso.ReceivePort()
    subiso.Isolate.spawn(helpers.busy_entry, port.send_port)
    assert port.receive(timeout=30) == "busy"

    def interrupted():
        raise KeyboardInterrupt  # as a Ctrl-C that lands before the hub's turn

    threading._register_atexit(interrupted)  # (runs before the hub's hook)
    print("leaving", flush=True)
    """
)


def test_exit_ends_the_isolates_when_threading_never_calls_the_hub():
    """A Ctrl-C that lands in threading's exit hooks before the hub's skips
    them all: the isolates were left running and CPython aborted."""
    _leave(SKIPPED_HOOK_SCRIPT, 0)


def _blocked_signals(native_id):
    """The signal numbers a thread of this process blocks (from /proc)."""
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("SigBlk:"))
    mask = int(line.split()[1], 16)
    return {number for number in range(1, 65) if mask >> (number - 1) & 1}


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")
def test_library_threads_leave_ctrl_c_to_the_main_thread():
    """The kernel hands a Ctrl-C to any thread that does not block it, and
    CPython handles it only in the main thread: one handed to a library
    thread left the main thread in its wait for good (seen under load). So
    every library thread, isolates included, blocks it."""
    with subiso.Pool(1) as pool:
        isolate_thread = pool.submit(threading.get_native_id).result(T)
        library = [
            t
            for t in threading.enumerate()
            if t.name.startswith("subiso") and t.native_id is not None  # (not one starting now)
        ]
        assert {t.name.split("-")[1] for t in library} >= {"hub", "pool", "reaper"}
        for thread in library:
            assert signal.SIGINT in _blocked_signals(thread.native_id), thread.name
        assert signal.SIGINT in _blocked_signals(isolate_thread)
    assert signal.SIGINT not in _blocked_signals(threading.get_native_id())


BLOCKED_SCRIPT = textwrap.dedent(
    """
    import os, time, subiso
    from subiso import _hub

    _hub.EXIT_NOTICE_SECONDS = 0.1  # exit says soon what it waits for

    def sleeps(port):
        port.send("asleep")
        time.sleep(60)  # one blocking C call: no kill ends it

    port = subiso.ReceivePort()
    iso = subiso.Isolate.spawn(sleeps, port.send_port, debug_name="sleeper")
    assert port.receive(timeout=30) == "asleep"
    print("joining", flush=True)
    iso.join()
    """
)


def test_a_second_ctrl_c_ends_the_process_while_an_isolate_blocks_in_a_c_call():
    """The first Ctrl-C ends the program, and exit waits for the isolate,
    which a blocking C call keeps alive; the second ends the process at
    once, as an unhandled Ctrl-C does, naming what it leaves behind (it
    used to wait for the call, 60 s here)."""
    with subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-c", BLOCKED_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as child:
        try:
            assert child.stdout.readline() == "joining\n"
            child.send_signal(signal.SIGINT)
            said = []
            while not any("exit waits for isolates" in line for line in said):  # exit waits
                line = child.stderr.readline()
                assert line, "".join(said)
                said.append(line)
            child.send_signal(signal.SIGINT)
            began = time.monotonic()
            _, rest = child.communicate(timeout=30)
        finally:
            if child.returncode is None:
                child.kill()
                child.communicate()
    stderr = "".join(said) + rest
    assert time.monotonic() - began < 20, stderr
    assert child.returncode == -signal.SIGINT, stderr
    assert "Fatal Python error" not in stderr, stderr
    assert "KeyboardInterrupt" in stderr, stderr  # the program ended in the first
    assert "a second Ctrl-C while exiting" in stderr and "sleeper" in stderr, stderr
