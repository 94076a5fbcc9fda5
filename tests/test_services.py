"""The library's own services (the hub, each isolate's runtime) survive
what users send them, and fail their waiters clearly when they break."""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import random
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import helpers
import pytest
import service_helpers

import subiso
from subiso import _backend, _hub

TIMEOUT = 30


def _until_exit(errors: subiso.ReceivePort, exits: subiso.ReceivePort) -> list[object]:
    """Every error reported before the isolate's exit message."""
    exits.receive(timeout=TIMEOUT)
    seen = []
    while True:
        try:
            seen.append(errors.receive(timeout=0))
        except TimeoutError:
            return seen


def test_a_failed_entry_with_non_fatal_errors_reports_one_error():
    with subiso.ReceivePort() as errors, subiso.ReceivePort() as exits:
        subiso.Isolate.spawn(
            service_helpers.raising_entry,
            "boom",
            errors_are_fatal=False,
            on_error=errors.send_port,
            on_exit=exits.send_port,
        )
        reported = _until_exit(errors, exits)
    assert len(reported) == 1, reported
    assert "ValueError: entry raised on 'boom'" in str(reported[0])


def test_host_call_carries_large_bytes():
    subiso.host.register("size", len)
    try:
        assert subiso.run(service_helpers.host_call_size, ("size", 200_000)) == 200_000
        assert subiso.run(service_helpers.host_call_size, ("size", 10)) == 10
    finally:
        subiso.host.unregister("size")


def test_a_host_call_argument_the_main_interpreter_cannot_load_fails_that_call_only():
    subiso.host.register("echo", lambda value: value)
    subiso.host.register("size", len)
    try:
        with pytest.raises(RuntimeError, match="cannot be rebuilt in the main interpreter"):
            subiso.run(service_helpers.host_call_unloadable, "echo")
        # the hub lives on: host calls and spawns from isolates still work
        assert subiso.run(service_helpers.host_call_size, ("size", 3)) == 3
    finally:
        subiso.host.unregister("echo")
        subiso.host.unregister("size")


def test_spawn_recognises_a_partial_of_an_async_entry():
    with subiso.ReceivePort() as port:
        entry = functools.partial(service_helpers.async_entry, port.send_port)
        iso = subiso.Isolate.spawn(entry, 7)
        assert port.receive(timeout=TIMEOUT) == ("async", 7)
        assert iso.join(TIMEOUT)


def test_a_dropped_handle_does_not_keep_its_exited_isolate():
    with subiso.ReceivePort() as exits:
        subiso.Isolate.spawn(service_helpers.raising_entry, "dropped", on_exit=exits.send_port)
        exits.receive(timeout=TIMEOUT)
    # the fixture checks that the interpreter is destroyed


def test_a_request_the_hub_cannot_carry_out_fails_alone(monkeypatch, caplog):
    from subiso import _host

    serve = _host.serve
    failed = []

    def fails_once(body, reply):
        if not failed:
            failed.append(True)
            raise RuntimeError("injected into one request")
        serve(body, reply)

    subiso.host.register("size", len)
    try:
        monkeypatch.setattr(_host, "serve", fails_once)
        with caplog.at_level(logging.WARNING, logger="subiso"):
            with pytest.raises(RuntimeError, match="injected into one request"):
                subiso.run(service_helpers.host_call_size, ("size", 3))
        assert "the hub could not carry out a 'host' request" in caplog.text
        # the hub serves on: the next request goes through, and so do spawns from isolates
        assert subiso.run(service_helpers.host_call_size, ("size", 3)) == 3
        assert subiso.run(service_helpers.nested_run, "abc") == 3
    finally:
        subiso.host.unregister("size")


BROKEN_HUB_SCRIPT = textwrap.dedent(
    """
    import logging, sys, threading
    sys.path.insert(0, {tests!r})
    import service_helpers, subiso
    from subiso import _hub

    logging.basicConfig(level=logging.ERROR, format="%(name)s %(levelname)s: %(message)s")
    _hub.SPARES = 0  # every isolate is asked of the hub
    hub = _hub.the_hub()
    reap = _hub.Hub._reap

    def fails_on_the_hub_thread(self):
        if threading.current_thread() is hub.thread:
            raise RuntimeError("injected into the hub loop")
        return reap(self)

    assert subiso.run(len, "ab") == 2
    _hub.Hub._reap = fails_on_the_hub_thread
    for attempt in range(3):  # the hub breaks at its next turn, and stays broken
        try:
            subiso.run(len, "ab")
        except subiso.BrokenServiceError as error:
            assert error.service == "hub", error
            assert "injected into the hub loop" in str(error.__cause__), error.__cause__
            print("broken", attempt, flush=True)
    print("leaving", flush=True)
    """
)


def test_a_hub_that_fails_stays_broken_and_the_process_still_exits():
    """The hub's safety net: a failure of the hub itself fails its waiters
    with BrokenServiceError chained to the cause, is logged once, and later
    requests raise the same. Exit still ends every isolate."""
    result = subprocess.run(
        [sys.executable, "-c", BROKEN_HUB_SCRIPT.format(tests=str(Path(__file__).parent))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "leaving" in result.stdout, result.stderr
    assert result.stdout.count("broken") >= 2, result.stdout
    assert result.stderr.count("the hub failed") == 1, result.stderr
    assert "Fatal Python error" not in result.stderr


def test_join_from_several_threads_at_once():
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(helpers.listen_entry, port.send_port)
        inbox = port.receive(timeout=TIMEOUT)
        joined: list[object] = []
        waiting = threading.Barrier(5)

        def join() -> None:
            waiting.wait(TIMEOUT)
            try:
                joined.append(iso.join(TIMEOUT))
            except BaseException as error:
                joined.append(error)

        threads = [threading.Thread(target=join) for _ in range(4)]
        for thread in threads:
            thread.start()
        waiting.wait(TIMEOUT)
        inbox.send("stop")
        for thread in threads:
            thread.join(TIMEOUT)
    assert joined == [True] * 4


@pytest.mark.parametrize("entry", [service_helpers.awaiting_forever, service_helpers.busy_async])
def test_kill_ends_an_async_entry(entry):
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(entry, port.send_port)
        port.receive(timeout=TIMEOUT)
        iso.kill(subiso.IMMEDIATE)
        assert iso.join(TIMEOUT)


def test_a_kill_right_after_a_buffer_was_put_keeps_the_buffer_whole():
    """The kill arrives while the sender is still in the library, between the
    queue put and marking the buffer sent: it must wait until the library is
    done, or the sender's copy of the buffer closes memory the receiver maps."""
    payload = bytes(range(256)) * 64
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(
            service_helpers.send_buffer_and_linger_after_the_put, (port.send_port, payload)
        )
        buffer = port.receive(timeout=TIMEOUT)
        iso.kill(subiso.IMMEDIATE)
        assert iso.join(TIMEOUT)
        view = buffer.materialize()
        try:
            assert bytes(view) == payload
        finally:
            view.release()


def _eventfds() -> int:
    return helpers.open_fds("eventfd")


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts fds in /proc")
def test_isolates_recycle_their_wake_up_fds():
    def cycle() -> None:
        with subiso.ReceivePort() as port:
            iso = subiso.Isolate.spawn(helpers.listen_entry, port.send_port)
            port.receive(timeout=TIMEOUT).send("stop")
            assert iso.join(TIMEOUT)

    for _ in range(10):  # the process's free wakers fill up
        cycle()
    assert _hub.settle(TIMEOUT)
    before = _eventfds()
    for _ in range(20):
        cycle()
    assert _hub.settle(TIMEOUT)
    assert _eventfds() - before <= 4  # each cycle used to leave two behind


def test_a_kill_before_the_event_loop_runs_ends_the_async_work():
    assert subiso.run(service_helpers.async_work_after_a_kill) == "ended"


def test_a_control_request_the_isolate_cannot_load_leaves_it_controllable():
    with subiso.ReceivePort() as port, subiso.ReceivePort() as pings:
        iso = subiso.Isolate.spawn(helpers.listen_entry, port.send_port)
        port.receive(timeout=TIMEOUT)
        iso.ping(pings.send_port, service_helpers.OnlyInMain())  # fails in the isolate
        iso.ping(pings.send_port, "pong")
        assert pings.receive(timeout=TIMEOUT) == "pong"
        iso.kill(subiso.IMMEDIATE)
        assert iso.join(TIMEOUT)


def test_a_kill_that_user_code_swallows_is_raised_again():
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(service_helpers.swallows_the_first_kill, port.send_port)
        assert port.receive(timeout=TIMEOUT) == "busy"
        iso.kill(subiso.IMMEDIATE)
        assert port.receive(timeout=TIMEOUT) == "swallowed"
        assert iso.join(TIMEOUT)


def test_kills_of_an_isolate_parking_on_a_port_all_end_it():
    for _ in range(30):
        with subiso.ReceivePort() as port:
            iso = subiso.Isolate.spawn(service_helpers.parks_in_a_loop, port.send_port)
            port.receive(timeout=TIMEOUT)
            iso.kill(subiso.IMMEDIATE)
            assert iso.join(TIMEOUT)


def test_cancelling_running_pool_tasks_never_strands_a_worker():
    """Each cancel kills a busy worker; the raise must never leave a lock of
    the library held (the worker lived on, killed, and the pool stalled)."""
    rng = random.Random(3)
    with subiso.Pool(2) as pool:
        for _ in range(30):
            tasks = [pool.submit(helpers.busy_sum, 10**6) for _ in range(4)]
            for task in tasks:
                if rng.random() < 0.5:
                    task.cancel()
            _, pending = concurrent.futures.wait(tasks, timeout=TIMEOUT)
            assert not pending, pool.stats()


def test_an_exited_isolate_is_destroyed_while_the_hub_queue_stays_busy(monkeypatch):
    # Under load the hub's queue always holds somebody's request, so it is
    # never seen empty; every isolate posted to it (at least that it was ready).
    from subiso._ports import _deliver
    from subiso._wire import PLAIN

    hub = _hub.the_hub()
    real_count = _backend.queue_count
    monkeypatch.setattr(_backend, "queue_count", lambda qid: real_count(qid) + (qid == hub.queue))
    assert subiso.run(len, "ab") == 2
    _deliver(hub.queue, hub.wfd, (PLAIN, ("nothing", None)))  # one more request is taken
    assert _hub.settle(TIMEOUT), "the exited isolate stayed a zombie behind the hub's queue"


def test_an_isolate_that_closed_a_port_is_destroyed_while_the_reaper_stays_busy(monkeypatch):
    # Every isolate that closes a port hands its queue to the reaper, so under
    # load the reaper's queue is never seen empty either.
    from subiso._ports import _Process

    _hub.the_hub()  # starts the reaper
    reaper_qid = _Process.reaper_qid
    real_count = _backend.queue_count
    monkeypatch.setattr(_backend, "queue_count", lambda qid: real_count(qid) + (qid == reaper_qid))
    assert subiso.run(service_helpers.open_and_close_a_port) == "closed"
    assert _hub.settle(TIMEOUT), "the exited isolate stayed a zombie behind the reaper's queue"


def test_a_stray_write_to_a_recycled_interrupt_waker_does_not_spin_the_isolate():
    """Wakers are recycled, never closed (a late write must not land in a
    file that reused the fd number), and a sender wakes after its put: when
    the receiver took the message and closed the port first, that wake-up
    lands on the waker's next owner. Owned as an isolate's interrupt waker,
    it must not make the isolate's loop spin as if a kill never ended."""
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(service_helpers.report_a_readable_interrupt, port.send_port)
        try:
            inbox, interrupt_wfd = port.receive(timeout=TIMEOUT)
            _backend.wake(interrupt_wfd)  # the stray write
            # The loop drains it at its next wait. A question may still be
            # answered in the turn that was under way when the write landed
            # (a turn hands over every message waiting), so ask again: left
            # undrained, the waker would stay readable to every question.
            answers = []
            for _ in range(20):
                inbox.send("readable?")
                answers.append(port.receive(timeout=TIMEOUT))
                if answers[-1] is False:
                    break
            assert answers[-1] is False, f"the stray wake-up was never drained: {answers}"
            inbox.send("stop")
            assert iso.join(TIMEOUT)
        finally:
            iso.kill(subiso.IMMEDIATE)
            iso.join(TIMEOUT)


def test_spares_are_warmed_by_the_hub_thread_not_by_the_caller(monkeypatch):
    # Starting a thread waits until it runs, which on busy cores can take
    # milliseconds: a run's caller asks for spares and goes on.
    hub = _hub.the_hub()
    starters = []
    started = threading.Event()
    original = hub._start

    def start(isolation, spare):
        if spare:
            starters.append(threading.current_thread().name)
            started.set()
        return original(isolation, spare)

    monkeypatch.setattr(hub, "_start", start)
    for _ in range(2 * _hub.SPARES + 1):
        assert subiso.run(helpers.square, 3) == 9
    assert started.wait(TIMEOUT)
    assert set(starters) == {"subiso-hub"}


class _Heard(logging.Handler):
    """Sets ``said`` once the subiso logger says something with ``words`` in it."""

    def __init__(self, words):
        super().__init__()
        self.words = words
        self.said = threading.Event()
        self.records = []

    def emit(self, record):
        if self.words in record.getMessage():
            self.records.append(record)
            self.said.set()


def test_exited_isolates_kept_by_an_unread_port_are_mentioned():
    heard = _Heard("kept alive")
    logging.getLogger("subiso").addHandler(heard)
    try:
        with subiso.ReceivePort() as unread:
            for _ in range(_hub.ZOMBIES_TO_MENTION):
                isolate = subiso.Isolate.spawn(lambda port: port.send(b"x"), unread.send_port)
                assert isolate.join(TIMEOUT)
            assert heard.said.wait(TIMEOUT)
        (record,) = heard.records
        assert record.levelno == logging.WARNING
        said = record.getMessage()
        assert said.startswith(
            f"{_hub.ZOMBIES_TO_MENTION} exited isolates are kept alive by the messages "
            f"they sent, not yet received (port {unread._qid} holds messages of "
            f"{_hub.ZOMBIES_TO_MENTION}"
        )
        assert said.endswith(
            "each keeps its interpreter's memory until they are received or the port is closed"
        )
    finally:
        logging.getLogger("subiso").removeHandler(heard)
    assert _hub.settle(TIMEOUT), "closing the port did not free them"


def test_the_hub_serves_on_while_an_exited_isolate_is_destroyed(monkeypatch):
    """Destroying an interpreter runs its atexit hooks and joins the threads
    it left: user code, which may take seconds. That happens on the
    isolate's own thread (its runner), never on the hub's, which goes on
    answering name lookups, host calls and spawns from isolates meanwhile."""
    release = threading.Event()
    destroying = threading.Event()
    where = []
    destroy = _backend.interpreter_destroy

    def slow_destroy(interp):
        where.append(threading.current_thread().name)
        destroying.set()
        release.wait(TIMEOUT)  # as an atexit hook, or a thread left running, would
        destroy(interp)

    monkeypatch.setattr(_backend, "interpreter_destroy", slow_destroy)
    try:
        iso = subiso.Isolate.spawn(helpers.square, 2)
        assert iso.join(TIMEOUT)
        assert destroying.wait(TIMEOUT)
        with subiso.ReceivePort() as port:
            assert subiso.IsolateNameServer.register_port_with_name(port.send_port, "waits")
            try:
                assert subiso.run(service_helpers.lookup, "waits") == port.send_port
                assert subiso.run(service_helpers.nested_run, "abc") == 3
            finally:
                subiso.IsolateNameServer.remove_port_name_mapping("waits")
    finally:
        release.set()
    assert _hub.settle(TIMEOUT)
    assert where and "subiso-hub" not in where, where


def test_a_host_calls_arguments_are_unpickled_by_its_worker_not_the_hub():
    subiso.host.register("echo", lambda value: value)
    try:
        where = subiso.run(service_helpers.host_call_with_where_it_loads, "echo")
    finally:
        subiso.host.unregister("echo")
    assert where.startswith("subiso-host"), where


REAPER_LATER_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import helpers, subiso
from subiso import _backend, _hub

hub = _hub.current_hub()
started_while_callers_waited = []
start = _hub.Reaper.start

def recording_start(self):
    started_while_callers_waited.append(bool(hub.starting))
    start(self)

_hub.Reaper.start = recording_start
with subiso.ReceivePort() as port:
    iso = subiso.Isolate.spawn(helpers.square, 3)
    closed = port._qid
assert iso.join(30)
assert _hub.settle(30)
print("started", started_while_callers_waited, "queue left", _backend.queue_exists(closed))
"""


def test_the_reaper_starts_once_no_caller_waits_and_then_destroys_what_waited():
    """Making the reaper's interpreter costs ~10 ms: not on the way of the
    first isolate a caller waits for. A port closed around that first spawn
    (posted to the reaper, running or not yet) is destroyed."""
    result = subprocess.run(
        [sys.executable, "-c", REAPER_LATER_SCRIPT.format(tests=str(Path(__file__).parent))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started [False] queue left False", result.stdout
