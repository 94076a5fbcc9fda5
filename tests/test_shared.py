"""SharedBuffer: immutable bytes shared by reference, freed with the last holder."""

from __future__ import annotations

import copy
import gc
import io
import mmap
import os
import pickle
import signal
import threading

import helpers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import subiso
from subiso import _hub, _pickling
from subiso._wire import PICKLED, decode, encode, mark_sent

T = 30
MEMFD = "memfd:subiso-shared"


def _settled_fds_and_maps() -> tuple[int, int, int]:
    """Open memfds of SharedBuffers, their mappings, and those mappings' Rss
    (KiB), once nothing is left to collect or reap."""
    gc.collect()
    assert _hub.settle(T)
    return (helpers.open_fds(MEMFD), *helpers.memory_mapped(MEMFD))


@pytest.fixture
def baseline():
    """Fails the test if it leaves SharedBuffer memory behind."""
    before = _settled_fds_and_maps()
    yield
    assert _settled_fds_and_maps() == before, "SharedBuffer fds or mappings were left behind"


def test_it_reads_like_bytes():
    data = bytes(range(256)) * 1000
    buffer = subiso.SharedBuffer(data)
    assert len(buffer) == len(data)
    assert buffer[3] == 3 and buffer[-1] == 255
    part = buffer[10:20]
    assert type(part) is memoryview and part.readonly and part == data[10:20]
    assert bytes(buffer) == data and list(buffer)[:4] == [0, 1, 2, 3]
    assert buffer == data and buffer == bytearray(data) and buffer != data[:-1]
    assert buffer == subiso.SharedBuffer(data) and hash(buffer) == hash(data)
    assert {buffer: 1}[data] == 1  # a key like the bytes it holds
    assert repr(buffer) == "<SharedBuffer 256,000 bytes>"
    assert copy.copy(buffer) is buffer and copy.deepcopy(buffer) is buffer
    empty = subiso.SharedBuffer(b"")
    assert len(empty) == 0 and bytes(empty) == b"" and empty == b""
    # Any buffer: a view of ints is taken as its bytes.
    assert subiso.SharedBuffer(memoryview(bytearray(b"abcd")).cast("I")) == b"abcd"


def test_a_shared_buffer_of_a_shared_buffer_shares_its_memory():
    first = subiso.SharedBuffer(b"x" * 4096)
    second = subiso.SharedBuffer(first)
    assert second == first and helpers.inode(second) == helpers.inode(first)


def test_a_buffer_holds_one_descriptor_also_once_mapped(baseline):
    before = helpers.open_fds(MEMFD)
    buffer = subiso.SharedBuffer(b"x" * 4096)
    assert buffer[:2] == b"xx"  # mapped now
    assert helpers.open_fds(MEMFD) == before + 1
    del buffer


def test_every_write_raises():
    buffer = subiso.SharedBuffer(b"immutable" * 1000)
    view = memoryview(buffer)
    with pytest.raises(TypeError):
        view[0] = 1
    with pytest.raises(TypeError):
        view[0:2] = b"ab"
    with pytest.raises(TypeError):
        buffer[0] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        buffer[0:2] = b"ab"  # type: ignore[index]
    with pytest.raises(TypeError):
        buffer._map.write(b"x")  # the mapping itself is read-only
    with pytest.raises((TypeError, BufferError)):
        io.BytesIO(b"ab").readinto(buffer)  # asks for a writable buffer
    # The memory is sealed: not even the descriptor writes, resizes or maps it writable.
    with pytest.raises(PermissionError):
        os.pwrite(buffer._fd, b"x", 0)
    with pytest.raises(PermissionError):
        os.ftruncate(buffer._fd, 1)
    with pytest.raises(PermissionError):
        mmap.mmap(buffer._fd, len(buffer))  # shared and writable
    assert bytes(buffer[:9]) == b"immutable"


def test_it_travels_by_reference_to_isolates_and_back(baseline):
    buffer = subiso.SharedBuffer(os.urandom(1 << 20))
    here = helpers.inode(buffer)
    assert subiso.run(helpers.shared_identity, buffer) == (here, True)
    back = subiso.run(helpers.identity, buffer)
    assert type(back) is subiso.SharedBuffer and helpers.inode(back) == here and back == buffer
    with subiso.Pool(2) as pool:
        assert pool.submit(helpers.shared_identity, buffer).result(T) == (here, True)
        # In containers, both ways; twice in one message, one buffer arrives.
        out = pool.submit(helpers.identity, {"a": [buffer, (buffer,)]}).result(T)
        assert out["a"][0] is out["a"][1][0] and helpers.inode(out["a"][0]) == here
        many = list(pool.map(helpers.shared_identity, [buffer] * 8))
        assert many == [(here, True)] * 8
    with subiso.ReceivePort() as port:
        port.send_port.send(["over a port", buffer])
        received = port.receive(timeout=T)[1]
        assert helpers.inode(received) == here
    del back, out, received


def test_an_isolate_makes_one_and_sends_it_onwards(baseline):
    made = subiso.run(helpers.make_shared, b"made in an isolate" * 100)
    assert made == b"made in an isolate" * 100
    # On to another isolate, and back: the same memory all the way.
    assert subiso.run(helpers.inode, made) == helpers.inode(made)
    del made


def test_an_agent_keeps_one_as_its_state(baseline):
    buffer = subiso.SharedBuffer(b"agent state" * 1000)
    agent = subiso.Agent.create(helpers.identity, buffer)
    try:
        assert agent.read(helpers.inode, timeout=T) == helpers.inode(buffer)
        agent.update(lambda state: subiso.SharedBuffer(bytes(state) + b"!"))
        assert agent.read(len, timeout=T) == len(buffer) + 1
    finally:
        final = agent.exit(timeout=T)
    assert bytes(final[-1:]) == b"!"
    del final


def test_the_memory_outlives_the_isolate_that_made_it(baseline):
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(helpers.send_shared_and_exit, port.send_port)
        assert iso.join(T)
        received = port.receive(timeout=T)
    assert _hub.settle(T)  # its interpreter is destroyed now that its message arrived
    assert received == b"made by an isolate that has exited" * 1000
    del received


def test_buffers_a_module_holds_are_freed_as_the_isolate_ends(baseline):
    """A buffer's descriptor is closed by a weakref's callback; as an
    interpreter ends, its modules are cleared, and had the table that keeps
    the weakrefs been cleared before the module that holds the buffer, the
    descriptor would have stayed open."""
    before = helpers.open_fds("memfd:subiso-transfer")
    subiso.run(helpers.keep_buffers_in_a_global)
    assert _hub.settle(T)
    assert helpers.open_fds("memfd:subiso-transfer") == before


def test_a_receiver_killed_while_holding_one_frees_it(baseline):
    buffer = subiso.SharedBuffer(b"held" * (1 << 18))
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(helpers.hold_shared_forever, port.send_port)
        port.receive(timeout=T).send(buffer)
        assert port.receive(timeout=T) == ("holding", len(buffer))
        del buffer  # only the isolate holds it now
        gc.collect()
        assert helpers.open_fds(MEMFD) >= 1
        iso.kill(subiso.IMMEDIATE)
        assert iso.join(T)


def test_one_in_a_dropped_message_or_a_closed_ports_queue_is_freed(baseline):
    buffer = subiso.SharedBuffer(b"dropped" * 10000)
    port = subiso.ReceivePort()
    send = port.send_port
    send.send([buffer])  # queued, never received
    port.close()
    send.send([buffer])  # to a closed port: dropped
    del buffer


def test_one_sent_as_its_port_closes_is_freed(baseline):
    # The reaper drains a closed port's queue, then destroys it: a put in
    # between would leave the item's memfd open once the queue is gone.
    _hub.the_hub()  # with its reaper
    buffer = subiso.SharedBuffer(b"queued" * 10000)
    for _ in range(1000):
        port = subiso.ReceivePort()
        port.close()
        port.send_port.send(buffer)  # lands in the queue if the reaper has not destroyed it
    del buffer
    gc.collect()
    assert _hub.settle(T)
    assert helpers.open_fds(MEMFD) == 0


def _tokens(gate):
    """How many tokens the fd gate holds (bytes in its pipe), once the
    reaper, which takes it to destroy queues, has nothing left to do."""
    import array
    import fcntl
    import termios

    assert _hub.settle(T)
    count = array.array("i", [0])
    fcntl.ioctl(gate[0], termios.FIONREAD, count)
    return count[0]


def test_the_fd_gate_gives_its_token_back_once_whatever_cuts_a_step_short(
    baseline, monkeypatch, ctrl_c
):
    from subiso import _ports

    gate = _ports._fd_gate()
    buffer = subiso.SharedBuffer(b"gate" * 1000)
    queue_put = _ports._queue_put
    main = threading.main_thread().ident
    with subiso.ReceivePort() as port:

        def failing(qid, item):
            raise OSError("the put failed")

        monkeypatch.setattr(_ports, "_queue_put", failing)
        with pytest.raises(OSError):
            port.send_port.send(buffer)
        assert _tokens(gate) == 1  # given back, and once

        def interrupted(qid, item):
            signal.pthread_kill(main, signal.SIGINT)  # a Ctrl-C as the token is held
            return queue_put(qid, item)

        monkeypatch.setattr(_ports, "_queue_put", interrupted)
        with pytest.raises(KeyboardInterrupt):  # raised once the token is back
            port.send_port.send(buffer)
        monkeypatch.undo()
        assert _tokens(gate) == 1
        assert port.receive(timeout=T) == buffer  # the send was done
    del buffer


def test_the_fd_gate_waits_for_a_slow_holder_and_never_holds_two_tokens(
    baseline, monkeypatch, ctrl_c
):
    """A holder slower than any guess (here another thread holding the
    token on purpose) is waited for, also through a Ctrl-C: the gate used
    to "mend" a token it thought lost after 0.5 s, and then held two."""
    from subiso import _backend, _ports

    gate = _ports._fd_gate()
    buffer = subiso.SharedBuffer(b"slow" * 1000)
    waiting = threading.Event()
    wait_readable = _backend.wait_readable

    def noted_wait(fds, timeout):
        if gate[0] in fds:
            waiting.set()  # the sender waits for the token
        return wait_readable(fds, timeout)

    def slow_holder():
        taken = _ports._take_gate()
        held.set()
        assert waiting.wait(T)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        threading.Event().wait(0.7)  # slower than the old mend, on purpose
        os.write(taken[1], b"t")

    held = threading.Event()
    holder = threading.Thread(target=slow_holder)
    holder.start()
    assert held.wait(T)
    monkeypatch.setattr(_backend, "wait_readable", noted_wait)
    try:
        with subiso.ReceivePort() as port:
            with pytest.raises(KeyboardInterrupt):
                port.send_port.send(buffer)
            assert port.receive(timeout=T) == buffer
    finally:
        holder.join(T)
    del buffer
    assert _tokens(gate) == 1


def test_a_thousand_churned_buffers_leave_nothing(baseline):
    with subiso.Pool(2) as pool, subiso.ReceivePort() as port:
        for i in range(1000):
            buffer = subiso.SharedBuffer(i.to_bytes(8, "little") * 512)
            port.send_port.send(buffer)
            assert port.receive(timeout=T) == buffer
            if i % 50 == 0:
                assert pool.submit(helpers.shared_identity, buffer).result(T)[1]
        del buffer


def test_a_buffer_alone_or_in_tuples_travels_unpickled(baseline):
    buffer = subiso.SharedBuffer(b"unpickled" * 1000)
    where = {
        buffer: lambda message: message,
        (1, buffer): lambda message: message[1],
        ("a", (buffer, None)): lambda message: message[1][0],
    }
    for message, find in where.items():
        item = encode(message)
        assert item[0] != PICKLED
        mark_sent(item)  # (as a put does: the item owns its descriptors now)
        arrived = find(decode(item))
        assert type(arrived) is subiso.SharedBuffer and arrived == buffer
        assert helpers.inode(arrived) == helpers.inode(buffer)
        del arrived


def test_a_task_whose_arguments_fail_to_load_leaves_no_descriptor_open(baseline):
    buffer = subiso.SharedBuffer(b"orphan" * 1000)
    with subiso.Pool(1) as pool:
        for message in ((helpers.FailsToLoad(), buffer), [helpers.FailsToLoad(), buffer]):
            with pytest.raises(RuntimeError, match="cannot be loaded here"):
                pool.submit(helpers.identity, message).result(T)
    del buffer


def test_pickled_outside_subiso_it_is_a_copy():
    buffer = subiso.SharedBuffer(b"to another process" * 100)
    copied = pickle.loads(pickle.dumps(buffer))
    assert copied == buffer and helpers.inode(copied) != helpers.inode(buffer)


def test_large_out_of_band_buffers_travel_as_shared_buffers(baseline):
    data = bytearray(os.urandom(_pickling.OUT_OF_BAND_MIN))
    item = encode(helpers.Blob(data))
    assert len(item[1]) < 1024, "the bytes were pickled"
    del item  # (its descriptors are closed with it)
    # It arrives as a read-only view of shared memory, and can be sent on.
    assert subiso.run(helpers.blob_identity, helpers.Blob(data)) == ("memoryview", True)
    back = subiso.run(helpers.identity, helpers.Blob(data))
    assert type(back.data) is memoryview and back.data.readonly and back.data == data
    # Small ones stay in the pickle, as themselves.
    assert subiso.run(helpers.blob_identity, helpers.Blob(bytearray(b"small"))) == (
        "bytearray",
        False,
    )
    del back


def test_buffers_in_a_streamed_result_arrive_whole(baseline):
    data = os.urandom(_pickling.OUT_OF_BAND_MIN)
    items = subiso.run(helpers.long_list_with_buffers, data)
    assert type(items[10]) is subiso.SharedBuffer and items[10] == data
    with items[-10].materialize() as view:
        assert view == data
    assert bytes(items[-5].data) == data
    assert items[11:-11] == list(range(11, len(items) - 11))
    del items


leaves = st.binary(max_size=300).map(subiso.SharedBuffer) | st.integers() | st.text(max_size=5)
containers = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=10,
)


def _same(a, b):
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(containers)
def test_containers_of_shared_buffers_round_trip(value):
    with subiso.ReceivePort() as port:
        port.send_port.send(value)
        assert _same(value, port.receive(timeout=T))
