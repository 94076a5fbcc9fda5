"""Faults: kills mid-traffic, interrupts, ordering under load, leaks."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import helpers
import pytest

import subiso
from subiso import _backend, _exited, _hub, _wire
from subiso._ports import SendPort
from subiso._runtime import Kill, load_request

T = 60


def test_killed_while_sending_leaves_a_usable_port():
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(helpers.stream_forever, port.send_port)
        first = [port.receive(timeout=T) for _ in range(100)]
        assert first == list(range(100))
        iso.kill(subiso.IMMEDIATE)
        assert iso.join(T)
        rest = []
        while (item := port._poll_item()) is not _backend.EMPTY:
            rest.append(_wire.decode(item))
        assert rest == list(range(100, 100 + len(rest)))  # in order, none lost before the kill
        port.send_port.send("still works")
        assert port.receive(timeout=T) == "still works"


def test_killed_while_receiving():
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(helpers.receive_forever, port.send_port)
        inbox = port.receive(timeout=T)
        iso.kill(subiso.IMMEDIATE)
        assert iso.join(T)
        inbox.send("dropped")  # the port is gone: dropped silently


@pytest.mark.parametrize("receive", ["receive", "receive_async"])
def test_a_kill_between_taking_a_message_and_loading_its_buffer_leaks_no_fd(receive):
    import service_helpers

    entry = {
        "receive": service_helpers.receive_a_buffer_while_killed,
        "receive_async": service_helpers.receive_a_buffer_while_killed_async,
    }[receive]
    before = helpers.open_fds("memfd:subiso-transfer")
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(entry, port.send_port)
        inbox = port.receive(timeout=T)
        inbox.send(("buffer", subiso.TransferableBuffer(b"x" * (1 << 20))))
        assert iso.join(T)
        assert port._poll_item() is _backend.EMPTY, "the kill did not end the isolate"
    assert _hub.settle(T)
    assert helpers.open_fds("memfd:subiso-transfer") == before, "its memfd was left open"


def test_a_message_that_fails_to_load_leaks_none_of_its_buffers():
    import gc

    import service_helpers

    before = helpers.open_fds("memfd:subiso-transfer")
    with subiso.ReceivePort() as port:
        first = subiso.TransferableBuffer(b"a" * 4096)
        last = subiso.TransferableBuffer(b"b" * 4096)
        port.send_port.send((first, service_helpers.OnlyInIsolates(), last))
        with pytest.raises(RuntimeError, match="cannot be rebuilt"):
            port.receive(timeout=T)
        port.send_port.send("after")
        assert port.receive(timeout=T) == "after"
    gc.collect()  # the traceback's frames hold the buffer that did arrive
    assert helpers.open_fds("memfd:subiso-transfer") == before, "a memfd was left open"


@pytest.mark.parametrize("entry", [helpers.receive_forever, helpers.echo_entry, helpers.busy_entry])
def test_every_kill_ends_the_isolate(entry):
    """The kill wakes a blocked receive and also raises into the thread: both
    land, in either order, and neither may strand the isolate (the raise
    used to surface inside the runtime's own bookkeeping and wedge it)."""
    for _ in range(25):
        with subiso.ReceivePort() as port:
            iso = subiso.Isolate.spawn(entry, port.send_port)
            port.receive(timeout=T)
            iso.kill(subiso.IMMEDIATE)
            assert iso.join(T)


@contextlib.contextmanager
def _ctrl_c_once_started(port):
    """Ctrl-C (SIGINT to the main thread) once the isolate says "started"."""
    started = threading.Event()

    def interrupt_when_started():
        assert port.receive(timeout=T) == "started"
        started.set()
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # as Ctrl-C does

    helper = threading.Thread(target=interrupt_when_started)
    helper.start()
    try:
        yield started
    finally:
        helper.join(T)


def test_keyboard_interrupt_during_run_kills_the_isolate(ctrl_c):
    with subiso.ReceivePort() as port:
        with _ctrl_c_once_started(port) as started, pytest.raises(KeyboardInterrupt):
            subiso.run(helpers.announce_then_spin, port.send_port)
        assert started.is_set()


def test_a_second_ctrl_c_while_run_kills_its_isolate_still_kills_it(ctrl_c, monkeypatch):
    interrupted = _interrupt_the_first_kill(monkeypatch)  # a second Ctrl-C
    with subiso.ReceivePort() as port:
        with _ctrl_c_once_started(port), pytest.raises(KeyboardInterrupt):
            subiso.run(helpers.announce_then_spin, port.send_port)
    assert interrupted
    assert _hub.settle(T), "the isolate was left spinning"


def test_a_ctrl_c_that_lands_as_run_starts_its_isolate_kills_it(monkeypatch):
    with subiso.ReceivePort() as port:
        helpers.interrupt_after_next_send(monkeypatch)  # in the start command's wake-up
        with pytest.raises(KeyboardInterrupt):
            subiso.run(helpers.announce_then_spin, port.send_port)
        monkeypatch.undo()
    assert _hub.settle(T), "the isolate was left spinning"


def test_keyboard_interrupt_during_pool_map(ctrl_c):
    with subiso.Pool(1) as pool, subiso.ReceivePort() as port:
        with _ctrl_c_once_started(port), pytest.raises(KeyboardInterrupt):
            list(pool.map(helpers.announce_then_spin, [port.send_port]))
        assert pool.submit(helpers.square, 3).result(timeout=T) == 9  # replaced, still working


def _interrupt_the_first_kill(monkeypatch) -> list[Kill]:
    """A Ctrl-C that lands just before the first Kill request is posted."""
    send_item = SendPort._send_item
    interrupted: list[Kill] = []

    def send_interrupted_once(self, item):
        if item[0] == _wire.PLAIN and not interrupted:
            request = load_request(item)
            if isinstance(request, Kill):
                interrupted.append(request)
                raise KeyboardInterrupt
        return send_item(self, item)

    monkeypatch.setattr(SendPort, "_send_item", send_interrupted_once)
    return interrupted


@contextlib.contextmanager
def _pool_must_end(pool):
    """Fail, rather than hang, if the block does not end: after T seconds
    the pool's workers are killed from outside."""
    left, hung = threading.Event(), []

    def watchdog():
        if not left.wait(T):
            hung.append(True)
            for worker in list(pool._core.workers.values()):
                worker.isolate.kill(subiso.IMMEDIATE)

    guard = threading.Thread(target=watchdog)
    guard.start()
    try:
        yield
    finally:
        left.set()
        guard.join(T)
    assert not hung, "the pool waited for a worker nobody killed"


def test_a_second_ctrl_c_that_cuts_a_pool_kill_short_still_ends_the_pool(ctrl_c, monkeypatch):
    """Ctrl-C stops a pool's work: its running task is cancelled and its
    worker killed. A second Ctrl-C that landed after the task was marked
    cancelled but before the kill was posted left that worker spinning, and
    the pool's exit (a join, which no Ctrl-C cuts) waited for it for good."""
    interrupted = _interrupt_the_first_kill(monkeypatch)
    pool = subiso.Pool(1)
    with _pool_must_end(pool), subiso.ReceivePort() as port:
        with _ctrl_c_once_started(port), pytest.raises(KeyboardInterrupt):
            with pool:
                list(pool.map(helpers.announce_then_spin, [port.send_port]))
    assert interrupted


def test_a_cancel_that_ctrl_c_cut_short_does_not_hang_shutdown(monkeypatch):
    interrupted = _interrupt_the_first_kill(monkeypatch)
    pool = subiso.Pool(1)
    with _pool_must_end(pool), subiso.ReceivePort() as port:
        task = pool.submit(helpers.announce_then_spin, port.send_port)
        assert port.receive(timeout=T) == "started"
        with pytest.raises(KeyboardInterrupt):
            task.cancel()  # caught, and the program goes on
        assert interrupted
        pool.shutdown(wait=True)
    assert task.cancelled()  # settled by its worker's exit, which the cancel had decided


def _ordering(senders: int, each: int) -> None:
    with subiso.ReceivePort() as port:
        isolates = [
            subiso.Isolate.spawn(helpers.sender, (port.send_port, s, each)) for s in range(senders)
        ]
        seen = [-1] * senders
        for _ in range(senders * each):
            sender_id, i = port.receive(timeout=T)
            assert i == seen[sender_id] + 1, "lost, duplicated or reordered"
            seen[sender_id] = i
        assert seen == [each - 1] * senders
        for iso in isolates:
            assert iso.join(T)


def test_many_senders_keep_order_per_sender():
    _ordering(4, 5_000)


@pytest.mark.slow
def test_million_messages_soak():
    _ordering(4, 250_000)


def test_senders_while_the_port_closes():
    port = subiso.ReceivePort()
    isolates = [subiso.Isolate.spawn(helpers.sender, (port.send_port, s, 20_000)) for s in range(3)]
    for _ in range(100):
        port.receive(timeout=T)
    port.close()
    for iso in isolates:
        assert iso.join(T)


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _raw_interpreter_growth(count: int) -> float:
    """RSS growth (MiB) per isolated interpreter created and destroyed by
    CPython alone: 3.13 leaks the arenas of every isolated interpreter that
    interned a string (gh-110411), whoever drives it; 3.14 does not."""
    code = "import _pickle, _thread, select, marshal"
    before = _rss_mib()
    for _ in range(count):
        interp = _backend.interpreter_create("isolated")
        _backend.interpreter_exec(interp, code)
        _backend.interpreter_destroy(interp)
    return (_rss_mib() - before) / count


def _runs_do_not_leak(count: int) -> float:
    """RSS growth (MiB) over ``count`` runs, checked against what CPython
    alone keeps; fds, interpreters and threads must not grow at all."""
    for i in range(20):
        subiso.run(helpers.square, i)
    assert _hub.settle(T)
    raw = _raw_interpreter_growth(count // 2) if _backend.LEAKS_PER_INTERPRETER else 0.0
    rss, fds, interpreters = _rss_mib(), _fds(), len(_backend.interpreter_ids())
    threads = threading.active_count()
    for i in range(count):
        assert subiso.run(helpers.square, i) == i * i
    assert _hub.settle(T)
    grown = _rss_mib() - rss
    # What subiso itself may add to CPython's own per-interpreter leak.
    per_run = grown / count
    assert per_run < raw * 2.5 + 0.1, f"RSS grew {per_run:.2f} MiB per run (CPython: {raw:.2f})"
    assert _fds() <= fds + 4, "fds leaked"
    assert len(_backend.interpreter_ids()) <= interpreters, "interpreters leaked"
    assert threading.active_count() <= threads + 2, "threads leaked"
    return grown


def test_runs_do_not_leak():
    _runs_do_not_leak(100)


@pytest.mark.slow
def test_400_runs_do_not_leak():
    grown = _runs_do_not_leak(400)
    if not _backend.LEAKS_PER_INTERPRETER:  # nothing of CPython's to allow for
        assert grown < 40, f"RSS grew {grown:.1f} MiB over 400 runs"


@pytest.mark.slow
def test_thousand_live_isolates():
    with subiso.ReceivePort() as port:
        isolates = []
        for _ in range(1000):
            isolates.append(subiso.Isolate.spawn(helpers.pausable_entry, port.send_port))
            port.receive(timeout=T)
        for iso in isolates:
            iso.kill(subiso.IMMEDIATE)
        for iso in isolates:
            assert iso.join(T)


def test_memoryviews_outlive_the_interpreter_that_owned_them():
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(helpers.send_view_and_exit, port.send_port)
        assert iso.join(T)
        view = port.receive(timeout=T)
        assert _hub.settle(T)  # the owner is destroyed by now
        assert bytes(view[:8]) == b"owned by" and len(view) == 24_000


def test_an_exited_isolate_outlives_the_reaper_s_work_on_a_queue_it_sent_to():
    """The reaper drains a closed port's queue, then destroys it. A get of
    its can still be inside CPython, turning an item of an exited isolate
    into an object and releasing the isolate's data, after the queue looks
    empty; destroying that isolate then crashed 3.13.0 (in the reaper's
    queue_get) or logged InterpreterNotFoundError. So a queue handed to the
    reaper is done with only once it no longer exists."""
    from subiso._ports import _destroy_queue, _Process

    assert subiso.run(helpers.square, 2) == 4  # the hub, and with it the reaper, runs
    qid = _backend.queue_create()
    zombie = _exited.Zombie(None, (qid,))
    _Process.reaping.add(qid)  # as _destroy_queue does before it posts the queue
    try:
        assert not zombie.received(lambda _: None), "an empty queue the reaper holds is not done"
    finally:
        _Process.reaping.discard(qid)
    _destroy_queue(qid)  # the reaper destroys it: then it is done with
    deadline = time.monotonic() + T
    while _backend.queue_exists(qid) and time.monotonic() < deadline:
        _backend.wait_readable([], 0.001)
    assert not _backend.queue_exists(qid)
    assert zombie.received(lambda _: None)


def test_a_take_in_flight_when_the_hub_counts_does_not_reap_the_sender_early():
    """A receiver takes an item off the queue, then counts it. If the hub
    draws its ticket in between (the item gone from the queue, not yet
    counted), a ticket of taken + waiting comes one short: the sender was
    destroyed with its last message still queued, and CPython removed it
    (seen once on 3.15 as a bounded port that lost one of three messages)."""
    with subiso.ReceivePort() as port:
        for i in range(3):
            port.send_port.send(i)
        zombie = _exited.Zombie(None, (port._qid,))
        ports = {port._qid: port}
        # The receiver's take, cut where the hub's look lands: the item left
        # the queue, the port has not counted it yet.
        port.started += 1
        first = _backend.queue_get(port._qid)
        assert not zombie.received(ports.get)
        port.taken += 1
        assert first is not _backend.EMPTY
        assert port.receive(timeout=T) == 1
        assert not zombie.received(ports.get), "one message still waits"
        assert port.receive(timeout=T) == 2
        assert zombie.received(ports.get)
