"""Ports: ReceivePort, RawReceivePort, SendPort."""

from __future__ import annotations

import asyncio
import pickle
import threading

import pytest

import subiso


def test_fifo_and_values_are_copies():
    with subiso.ReceivePort() as port:
        data = [1, 2]
        port.send_port.send(data)
        for i in range(100):
            port.send_port.send(i)
        received = port.receive(timeout=5)
        received.append(3)
        assert data == [1, 2]
        assert [port.receive(timeout=5) for _ in range(100)] == list(range(100))


def test_receive_timeout():
    with subiso.ReceivePort() as port, pytest.raises(TimeoutError):
        port.receive(timeout=0.01)


def test_closed_port_raises_and_drops_sends():
    port = subiso.ReceivePort()
    sender = port.send_port
    sender.send("lost")
    port.close()
    port.close()
    sender.send("dropped")  # silently
    with pytest.raises(subiso.PortClosedError):
        port.receive(timeout=1)


def test_close_wakes_a_blocked_receiver():
    port = subiso.ReceivePort()
    errors = []
    started = threading.Event()

    def wait():
        started.set()
        try:
            port.receive(timeout=30)
        except subiso.PortClosedError as error:
            errors.append(error)

    thread = threading.Thread(target=wait)
    thread.start()
    assert started.wait(5)
    port.close()
    thread.join(10)
    assert not thread.is_alive() and errors


def test_send_port_equality_hash_and_pickle():
    with subiso.ReceivePort() as port:
        a, b = port.send_port, port.send_port
        assert a == b and hash(a) == hash(b)
        assert pickle.loads(pickle.dumps(a)) == a
        travelled = subiso.run(lambda p: p, a)
        assert travelled == a and {a: 1}[travelled] == 1


def test_receive_port_is_not_sendable():
    with subiso.ReceivePort() as port, subiso.ReceivePort() as other:
        with pytest.raises(subiso.NotSendableError, match="send_port"):
            other.send_port.send(port)
        other.send_port.send("still works")
        assert other.receive(timeout=5) == "still works"


def test_iteration_ends_when_closed():
    port = subiso.ReceivePort()
    for i in range(3):
        port.send_port.send(i)
    seen = []
    for message in port:
        seen.append(message)
        if len(seen) == 3:
            port.close()
    assert seen == [0, 1, 2]


def test_first_closes():
    port = subiso.ReceivePort()
    port.send_port.send("one")
    assert port.first(timeout=5) == "one"
    assert port.is_closed


def test_listen_in_main_runs_on_the_dispatcher():
    got = []
    done = threading.Event()
    port = subiso.ReceivePort()

    def handler(message):
        got.append(message)
        if len(got) == 3:
            done.set()

    port.listen(handler)
    for i in range(3):
        port.send_port.send(i)
    assert done.wait(10)
    port.close()
    assert got == [0, 1, 2]


def test_raw_receive_port_handler():
    got = threading.Event()
    raw = subiso.RawReceivePort(lambda message: got.set(), debug_name="raw")
    assert raw.keep_isolate_alive
    raw.send_port.send("hello")
    assert got.wait(10)
    raw.keep_isolate_alive = False
    raw.close()


def test_receive_async_and_async_for():
    async def main():
        port = subiso.ReceivePort()
        loop = asyncio.get_running_loop()
        loop.call_soon(port.send_port.send, "a")
        first = await port.receive_async(timeout=5)
        with pytest.raises(TimeoutError):
            await port.receive_async(timeout=0.01)
        for i in range(3):
            port.send_port.send(i)
        seen = []
        async for message in port:
            seen.append(message)
            if len(seen) == 3:
                port.close()
        return first, seen

    assert asyncio.run(main()) == ("a", [0, 1, 2])


def test_listen_inside_asyncio_uses_the_loop():
    async def main():
        port = subiso.ReceivePort()
        got = asyncio.Event()
        seen = []

        def handler(message):
            seen.append(message)
            got.set()

        port.listen(handler)
        port.send_port.send("x")
        await asyncio.wait_for(got.wait(), 5)
        port.close()
        return seen

    assert asyncio.run(main()) == ["x"]


def test_transferable_buffer():
    buffer = subiso.TransferableBuffer(b"abc" * 1000)
    assert len(buffer) == 3000
    with subiso.ReceivePort() as port:
        port.send_port.send({"payload": buffer})
        with pytest.raises(ValueError):
            buffer.materialize()
        received = port.receive(timeout=5)["payload"]
        view = received.materialize()
        assert bytes(view[:3]) == b"abc" and len(view) == 3000
        with pytest.raises(ValueError):
            received.materialize()
    local = subiso.TransferableBuffer(bytearray(b"xy"))
    assert bytes(local.materialize()) == b"xy"


def test_transferable_buffer_crosses_isolates():
    buffer = subiso.TransferableBuffer(bytes(range(256)) * 4096)
    total = subiso.run(lambda b: sum(b.materialize()), buffer)
    assert total == sum(range(256)) * 4096
