"""Isolate.spawn, lifetime, exit, errors, kill."""

from __future__ import annotations

import time

import helpers
import pytest

import subiso

T = 30  # every wait has a timeout


def test_spawn_and_talk():
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(helpers.echo_entry, port.send_port, debug_name="echo")
        inbox = port.receive(timeout=T)
        inbox.send("hi")
        assert port.receive(timeout=T) == ("echo", "hi")
        inbox.send(None)
        assert iso.join(T)
        assert not iso.is_alive()


def test_listen_keeps_the_isolate_alive_until_closed():
    with subiso.ReceivePort() as port, subiso.ReceivePort() as exits:
        iso = subiso.Isolate.spawn(helpers.listen_entry, port.send_port, on_exit=exits.send_port)
        inbox = port.receive(timeout=T)
        assert iso.is_alive()
        inbox.send(1)
        assert port.receive(timeout=T) == ("got", 1)
        inbox.send("stop")
        assert exits.receive(timeout=T) is None
        assert iso.join(T)


def test_async_entry():
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(helpers.async_entry, port.send_port)
        inbox = port.receive(timeout=T)
        inbox.send("ping")
        assert port.receive(timeout=T) == ("async", "ping")
        assert iso.join(T)


def test_uncaught_error_goes_to_listeners_and_is_fatal():
    with subiso.ReceivePort() as errors, subiso.ReceivePort() as exits:
        iso = subiso.Isolate.spawn(
            helpers.failing_entry, "x", on_error=errors.send_port, on_exit=exits.send_port
        )
        description, stack = errors.receive(timeout=T)
        assert "entry failed: x" in description and "failing_entry" in stack
        assert exits.receive(timeout=T) is None
        assert iso.join(T)


def test_exit_sends_the_last_message_even_after_the_isolate_is_gone():
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(helpers.exit_entry, port.send_port)
        assert iso.join(T)
        assert port.receive(timeout=T) == "last words"


def test_messages_outlive_their_sender():
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(helpers.burst_entry, (port.send_port, 500))
        assert iso.join(T)
        assert [port.receive(timeout=T) for _ in range(500)] == list(range(500))


def test_kill_immediate_stops_a_busy_loop():
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(helpers.busy_entry, port.send_port)
        assert port.receive(timeout=T) == "busy"
        iso.kill(subiso.IMMEDIATE)
        assert iso.join(T)


def test_context_manager_kills_and_joins():
    with subiso.ReceivePort() as port:
        with subiso.Isolate.spawn(helpers.busy_entry, port.send_port) as iso:
            assert port.receive(timeout=T) == "busy"
        assert not iso.is_alive()


def test_unsendable_entry():
    import threading

    lock = threading.Lock()
    with pytest.raises(subiso.IsolateSpawnError) as info:
        subiso.Isolate.spawn(helpers.echo_entry, lock)
    assert isinstance(info.value, subiso.NotSendableError)


def test_current_in_main_and_in_isolate():
    assert subiso.Isolate.current().control_port is None
    name = subiso.Isolate.run(lambda: subiso.Isolate.current().debug_name, debug_name="n")
    assert name == "n"


def test_spawn_async():
    import asyncio

    async def main():
        port = subiso.ReceivePort()
        iso = await subiso.Isolate.spawn_async(helpers.echo_entry, port.send_port)
        inbox = await port.receive_async(timeout=T)
        inbox.send(None)
        assert iso.join(T)
        port.close()

    asyncio.run(main())


def test_nested_run_inside_an_isolate():
    assert subiso.run(lambda: subiso.run(helpers.square, 6)) == 36


def test_an_exited_isolate_is_destroyed_while_its_port_stays_busy():
    # The isolate's message shares the queue with a steady stream, so the
    # queue is never seen empty: the interpreter must still be destroyed once
    # its message was received, not when the stream pauses.
    from subiso import _hub

    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(helpers.burst_entry, (port.send_port, 1))
        assert iso.join(T)
        hub = _hub.current_hub()
        port.send_port.send("ours")  # always one of ours waiting behind
        assert port.receive(timeout=T) == 0
        deadline = time.monotonic() + T
        gone = False
        while not gone and time.monotonic() < deadline:
            port.send_port.send("ours")
            port.receive(timeout=T)  # the port never empties
            gone = hub.settle(0.01)
        assert gone, "the exited isolate stayed a zombie behind a busy port"


def test_a_ctrl_c_as_join_learns_of_the_exit_loses_no_exit(monkeypatch):
    """join took the exit message off its port, then marked the isolate
    exited: a Ctrl-C in between lost the message, and every later join
    (the pool's collector, the exit's own) waited for good."""
    iso = subiso.Isolate.spawn(helpers.square, 3)  # ends at once
    mark = subiso.Isolate._mark_exited
    armed = [True]

    def interrupted_first(self):
        if armed:
            armed.pop()
            raise KeyboardInterrupt  # as a Ctrl-C landing just before the mark
        mark(self)

    monkeypatch.setattr(subiso.Isolate, "_mark_exited", interrupted_first)
    with pytest.raises(KeyboardInterrupt):
        iso.join(T)
    assert iso.join(T), "the exit was lost"
    assert not iso.is_alive()
