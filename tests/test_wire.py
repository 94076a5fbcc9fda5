"""The wire: a window of items that need a release, then out of band; bounded ports.

CPython drops the releases of queue items past 300 pending calls toward one
interpreter (see _mailbag): these tests stream far past the window, in every
shape a program does, and check that every message arrives in order, that
the window holds, and that nothing is left behind.
"""

from __future__ import annotations

import asyncio
import marshal
import os
import threading

import helpers
import pytest
import wire_helpers

import subiso
from subiso import _backend, _hub, _mailbag, _ports

STREAM = 3 * _ports.WINDOW + 1_000  # far past the window


def _memfds(name: str) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(f"/memfd:{name}"):
                count += 1
        except OSError:
            pass
    return count


def _assert_window(state: tuple[int, int, int, bool], out_of_band: bool = True) -> None:
    tokens, in_flight, window, used_mailbag = state
    assert tokens + in_flight <= window
    assert in_flight <= window
    if out_of_band:
        assert used_mailbag, "the stream never went past the window"


def test_messages_received_promptly_never_leave_the_window():
    """A ping-pong: each message is released soon after it is taken, so
    its token comes back and nothing goes out of band, on either side."""
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(wire_helpers.echo_then_report, port.send_port)
        inbox = port.receive(timeout=30)
        for i in range(3 * _ports.WINDOW):
            inbox.send(i)
            assert port.receive(timeout=30) == i
        inbox.send(None)
        tokens, _in_flight, window, used_mailbag = port.receive(timeout=30)
        assert iso.join(30)
    assert not used_mailbag, "a ping-pong went out of band"
    assert tokens >= window - 2  # (the last replies may still be held)
    _ports._released()
    assert len(_ports._tokens) >= _ports.WINDOW - 2


def test_backlog_read_after_the_sender_waits():
    with subiso.ReceivePort() as port, subiso.ReceivePort() as done:
        iso = subiso.Isolate.spawn(
            wire_helpers.stream_then_wait, (port.send_port, done.send_port, STREAM)
        )
        state, go = done.receive(timeout=30)  # all sent, none read yet
        _assert_window(state)
        received = [port.receive(timeout=30) for _ in range(STREAM)]
        assert received == [(i, f"sensor-{i % 7}", i * 0.5) for i in range(STREAM)]
        go.send("go")
        assert iso.join(30)


def test_a_backlog_gives_its_memory_back_once_its_sender_is_destroyed(monkeypatch):
    """The queue nodes of a backlog are freed as it is read, in chunks the C
    heap keeps (30 MiB after 300,000 messages): the runner of a sender that
    went out of band this often has them given back after the destroy."""
    given_back = threading.Event()
    monkeypatch.setattr(_backend, "give_back_freed_memory", given_back.set)
    count = _hub.BACKLOG_TO_GIVE_BACK + 500
    with subiso.ReceivePort() as port, subiso.ReceivePort() as done:
        iso = subiso.Isolate.spawn(
            wire_helpers.stream_then_wait, (port.send_port, done.send_port, count)
        )
        _state, go = done.receive(timeout=30)
        for _ in range(count):
            port.receive(timeout=30)
        go.send("go")
        assert iso.join(30)
    assert _hub.settle(30)
    assert given_back.is_set()


def test_a_short_stream_leaves_the_heap_alone(monkeypatch):
    given_back = threading.Event()
    monkeypatch.setattr(_backend, "give_back_freed_memory", given_back.set)
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(wire_helpers.stream_and_exit, (port.send_port, STREAM))
        assert [port.receive(timeout=30)[0] for _ in range(STREAM)] == list(range(STREAM))
        assert iso.join(30)
    assert _hub.settle(30)
    assert not given_back.is_set()


def test_giving_freed_memory_back_is_harmless():
    _backend.give_back_freed_memory()
    _backend.give_back_freed_memory()


def test_a_stream_from_an_isolate_that_exited():
    with subiso.ReceivePort() as port, subiso.ReceivePort() as done:
        iso = subiso.Isolate.spawn(
            wire_helpers.stream_and_report, (port.send_port, done.send_port, STREAM)
        )
        assert iso.join(30)  # every message still waits on the port
        _assert_window(done.receive(timeout=30))
        received = [port.receive(timeout=30) for _ in range(STREAM)]
        assert received == [(i, "x" * (i % 50)) for i in range(STREAM)]
    assert _hub.settle(20)
    hub = _hub.current_hub()
    assert hub is not None and not hub.handed  # its mailbag segments were closed
    assert _memfds("subiso-mailbag") <= 3  # the main interpreter's own, at most


def test_an_exited_isolates_unread_stream_is_dropped_with_its_port():
    port = subiso.ReceivePort()
    iso = subiso.Isolate.spawn(wire_helpers.stream_and_exit, (port.send_port, STREAM))
    assert iso.join(30)
    assert port.receive(timeout=30) == (0, "")
    port.close()  # the rest is dropped: its records are consumed
    assert _hub.settle(20)
    hub = _hub.current_hub()
    assert hub is not None and not hub.handed


def test_main_streams_to_an_isolate():
    with subiso.ReceivePort() as replies:
        iso = subiso.Isolate.spawn(wire_helpers.sum_stream, replies.send_port)
        inbox = replies.receive(timeout=30)
        for i in range(STREAM):
            inbox.send(i)
            assert len(_ports._in_flight) <= _ports.WINDOW
        inbox.send(None)
        total, count, _ = replies.receive(timeout=60)
        assert (total, count) == (sum(range(STREAM)), STREAM)
        assert iso.join(30)
    _assert_window(wire_helpers.window_state(), out_of_band=False)


def test_an_agent_under_many_updates():
    import helpers

    agent = subiso.Agent.create(helpers.counter_factory)
    try:
        for _ in range(STREAM):
            agent.update(helpers.increment)
        assert agent.read(lambda state: state["count"]) == STREAM
    finally:
        agent.kill()


def test_several_sender_threads_in_one_isolate():
    threads, count = 4, 1_000
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(wire_helpers.threads_stream, (port.send_port, threads, count))
        seen: dict[int, list[int]] = {n: [] for n in range(threads)}
        for _ in range(threads * count):
            name, i = port.receive(timeout=30)
            seen[name].append(i)
        assert all(got == list(range(count)) for got in seen.values())  # per sender, in order
        _done, state = port.receive(timeout=30)
        _assert_window(state)
        assert iso.join(30)


def _tokens_after_a_full_look() -> int:
    _ports._unswept[0] = 0
    _ports._sweep()
    return len(_ports._tokens)


def test_a_ctrl_c_right_after_a_put_keeps_the_window_whole(monkeypatch):
    """A Ctrl-C lands at any call in the main thread, here as the put
    returns: the item keeps its token until it is released."""
    real = _ports._queue_put

    def interrupted(qid, item):
        real(qid, item)
        monkeypatch.setattr(_ports, "_queue_put", real)
        raise KeyboardInterrupt

    with subiso.ReceivePort() as port:
        before = _tokens_after_a_full_look()
        monkeypatch.setattr(_ports, "_queue_put", interrupted)
        with pytest.raises(KeyboardInterrupt):
            port.send_port.send("x")
        assert _tokens_after_a_full_look() == before - 1  # held by the item, unread
        assert port.receive(timeout=5) == "x"  # it was sent
    assert _tokens_after_a_full_look() == before


def test_several_sender_threads_in_main():
    threads, count = 4, 1_000
    with subiso.ReceivePort() as replies:
        iso = subiso.Isolate.spawn(wire_helpers.sum_stream, replies.send_port)
        inbox = replies.receive(timeout=30)
        workers = [
            threading.Thread(target=lambda: [inbox.send(1) for _ in range(count)])
            for _ in range(threads)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        inbox.send(None)
        total, received, _ = replies.receive(timeout=60)
        assert total == received == threads * count
        assert iso.join(30)
    _assert_window(wire_helpers.window_state(), out_of_band=False)


def test_a_kill_mid_stream_loses_nothing_sent_and_leaves_nothing():
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(helpers.stream_forever, port.send_port)
        received = [port.receive(timeout=30) for _ in range(STREAM)]
        iso.kill(subiso.IMMEDIATE)
        assert iso.join(30)
        while True:  # what it sent before the kill, in order, then nothing
            try:
                received.append(port.receive(timeout=0.5))
            except TimeoutError:
                break
        assert received == list(range(len(received)))
    assert _hub.settle(20)
    hub = _hub.current_hub()
    assert hub is not None and not hub.handed


def test_items_that_carry_descriptors_past_the_window():
    before = _memfds("subiso-shared")
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(wire_helpers.buffers_stream, (port.send_port, STREAM))
        assert iso.join(60)
        for i in range(STREAM):
            n, buffer = port.receive(timeout=30)
            assert n == i and bytes(buffer) == b"%06d" % i * 100
            del buffer
        _assert_window(port.receive(timeout=30)[1])
    assert _hub.settle(20)
    assert _memfds("subiso-shared") <= before


def test_unread_items_that_carry_descriptors_are_closed_with_the_port():
    before = _memfds("subiso-shared")
    port = subiso.ReceivePort()
    iso = subiso.Isolate.spawn(wire_helpers.buffers_stream, (port.send_port, STREAM))
    assert iso.join(60)
    port.close()
    assert _hub.settle(20)
    assert _memfds("subiso-shared") <= before


# -- the mailbag --------------------------------------------------------------


def test_a_record_is_taken_once():
    with subiso.ReceivePort() as port:
        key = _mailbag.write((0, ("a", 1)), port._qid)
        assert _mailbag.take(key) == (0, ("a", 1))
        with pytest.raises(LookupError):
            _mailbag.take(key)
        assert _mailbag.drop(key) is None


def test_a_large_record_gets_a_segment_of_its_own():
    payload = (0, b"x" * (2 * _mailbag.SEGMENT))
    with subiso.ReceivePort() as port:
        key = _mailbag.write(payload, port._qid)
        assert _mailbag.take(key) == payload
        _mailbag.tidy()


def _segment_at(fd: int) -> _mailbag._Segment:
    """A fresh segment that got descriptor number ``fd`` (the lowest free one)."""
    spare = []
    try:
        for _ in range(20):
            segment = _mailbag._Segment(_mailbag.SEGMENT)
            if segment.fd == fd:
                return segment
            spare.append(segment)
        pytest.fail(f"descriptor {fd} was not reused")
    finally:
        for other in spare:
            other.close()


def _put_record(segment: _mailbag._Segment, stamp: int, item: tuple) -> int:
    payload = marshal.dumps(item)
    header = _mailbag._HEADER
    segment.map[header.size : header.size + len(payload)] = payload
    header.pack_into(segment.map, 0, len(payload), stamp, _mailbag._WRITTEN, 0, 0)
    return _mailbag._key(segment.fd, 0, stamp)


def test_a_mapping_of_an_earlier_segment_is_never_read_as_a_later_one():
    """Descriptor numbers are reused: a receiver that mapped the segment an
    earlier one had reads nothing there (it was emptied before it closed)
    and maps the new one before it concludes anything."""
    earlier = _mailbag._Segment(_mailbag.SEGMENT)
    fd = earlier.fd
    key = _put_record(earlier, 7, (0, "earlier"))
    assert _mailbag.take(key) == (0, "earlier")  # (this interpreter maps it)
    earlier.close()
    later = _segment_at(fd)
    try:
        assert _put_record(later, 7, (0, "later")) == key  # the very same int
        assert _mailbag.take(key) == (0, "later")
        with pytest.raises(LookupError):
            _mailbag.take(key)
    finally:
        later.close()


def test_an_orphaned_record_is_consumed_and_its_descriptors_closed(monkeypatch):
    monkeypatch.setattr(_mailbag, "ORPHAN_SECONDS", 0.0)
    port = subiso.ReceivePort()
    qid = port._qid
    fd = os.memfd_create("subiso-orphan-test")
    key = _mailbag.write((0, b"", (fd,)), qid)  # as if put after the port's last drain
    port.close()
    assert _hub.settle(20)  # the queue is gone
    segment = _mailbag._Mailbag.active
    assert segment is not None and segment.fd == _mailbag._fields(key)[0]
    assert _mailbag.read_up_to(segment.fd, segment.head, 0, {}) == segment.head
    with pytest.raises(OSError):
        os.fstat(fd)  # closed with its record
    with pytest.raises(LookupError):
        _mailbag.take(key)


def test_the_orphans_of_one_queue_go_together(monkeypatch):
    """Records whose queue is gone are orphans once it has been gone for
    ORPHAN_SECONDS: all of them at once. (Timed one record at a time, the
    640 orphans of a closed port an exited isolate streamed to took the hub
    640 s to consume, and its segment stayed open meanwhile.)"""
    now = [1000.0]
    monkeypatch.setattr(_mailbag, "_monotonic", lambda: now[0])
    port = subiso.ReceivePort()
    keys = [_mailbag.write((0, i), port._qid) for i in range(50)]
    port.close()
    assert _hub.settle(20)  # the queue is gone
    segment = _mailbag._Mailbag.active
    assert segment is not None
    fd, first, _stamp = _mailbag._fields(keys[0])
    end = _mailbag._fields(keys[-1])[1] + 1
    seen: dict[int, float] = {}
    assert _mailbag.read_up_to(fd, end, first, seen) == first  # seen gone just now
    now[0] += _mailbag.ORPHAN_SECONDS
    assert _mailbag.read_up_to(fd, end, first, seen) > _mailbag._fields(keys[-1])[1]
    for key in keys:
        with pytest.raises(LookupError):
            _mailbag.take(key)  # consumed


# -- bounded ports ------------------------------------------------------------


def test_maxsize_must_not_be_negative():
    with pytest.raises(ValueError):
        subiso.ReceivePort(maxsize=-1)


def test_a_full_bounded_port_makes_send_wait_until_its_timeout():
    with subiso.ReceivePort(maxsize=2) as port:
        port.send_port.send(1)
        port.send_port.send(2)
        with pytest.raises(TimeoutError):
            port.send_port.send(3, timeout=0.05)
        assert port.receive(timeout=5) == 1
        port.send_port.send(3, timeout=5)
        assert [port.receive(timeout=5), port.receive(timeout=5)] == [2, 3]


def test_a_sender_waits_for_the_receiver_of_a_bounded_port():
    with subiso.ReceivePort(maxsize=4) as port:
        iso = subiso.Isolate.spawn(wire_helpers.stream_and_exit, (port.send_port, 1_000))
        received = [port.receive(timeout=30) for _ in range(1_000)]
        assert received == [(i, "x" * (i % 50)) for i in range(1_000)]
        assert port.receive(timeout=30)[0] == "done"
        assert iso.join(30)


def test_a_send_to_a_closed_bounded_port_returns():
    port = subiso.ReceivePort(maxsize=1)
    sender = port.send_port
    sender.send(0)
    returned = threading.Event()

    def send():
        sender.send(1, timeout=30)  # waits: the port is full
        returned.set()

    thread = threading.Thread(target=send)
    thread.start()
    port.close()
    assert returned.wait(10)
    thread.join(10)
    sender.send(2)  # dropped, at once


def test_send_async_waits_without_blocking_the_loop():
    async def main():
        with subiso.ReceivePort(maxsize=2) as port:
            sender = port.send_port

            async def produce():
                for i in range(200):
                    await sender.send_async(i, timeout=30)

            producer = asyncio.create_task(produce())
            received = [await port.receive_async(timeout=30) for _ in range(200)]
            await producer
            assert received == list(range(200))
            await sender.send_async(0)
            await sender.send_async(1)
            with pytest.raises(TimeoutError):
                await sender.send_async(2, timeout=0.05)

    asyncio.run(main())


def test_the_librarys_notices_never_wait_on_a_full_bounded_port():
    with subiso.ReceivePort(maxsize=3) as port:
        iso = subiso.Isolate.spawn(
            wire_helpers.fill_then_exit, port.send_port, on_exit=port.send_port
        )
        assert iso.join(30)  # the exit notice was dropped: the port was full
        assert [port.receive(timeout=5) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(TimeoutError):
            port.receive(timeout=0.05)


def test_a_bounded_send_port_crosses_isolates():
    with subiso.ReceivePort(maxsize=1) as port:
        iso = subiso.Isolate.spawn(wire_helpers.stream_and_exit, (port.send_port, 50))
        assert [port.receive(timeout=30)[0] for _ in range(50)] == list(range(50))
        assert port.receive(timeout=30)[0] == "done"
        assert iso.join(30)
