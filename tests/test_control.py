"""The control plane: pause/resume, ping, listeners, errors, kill priorities."""

from __future__ import annotations

import enum

import helpers
import pytest

import subiso

T = 30


def _start(entry):
    port = subiso.ReceivePort()
    iso = subiso.Isolate.spawn(entry, port.send_port)
    inbox = port.receive(timeout=T)
    return port, iso, inbox


def test_pause_queues_events_until_every_capability_resumes():
    port, iso, inbox = _start(helpers.pausable_entry)
    try:
        first = iso.pause()
        second = iso.pause(subiso.Capability())
        again = iso.pause(first)  # pausing twice with one capability needs one resume
        assert again == first
        inbox.send("while paused")
        with_pong = subiso.ReceivePort()
        iso.ping(with_pong.send_port, "pong")  # control is served while paused
        assert with_pong.receive(timeout=T) == "pong"
        with_pong.close()
        iso.resume(first)
        iso.ping(port.send_port, "still paused", priority=subiso.IMMEDIATE)
        assert port.receive(timeout=T) == "still paused"
        iso.resume(second)
        assert port.receive(timeout=T) == "while paused"
        inbox.send("stop")
        assert iso.join(T)
    finally:
        port.close()


def test_resume_always_lets_a_paused_start_run_its_entry():
    # The control thread and the paused start once waited on one wake-up fd:
    # when the control thread drained the resume's wake-up, the start slept on.
    for _ in range(20):
        port = subiso.ReceivePort()
        try:
            iso = subiso.Isolate.spawn(helpers.reply_entry, port.send_port, paused=True)
            iso.resume(iso.pause_capability)
            assert port.receive(timeout=10) == "started"
            assert iso.join(T)
        finally:
            port.close()


def test_ping_before_next_event_comes_after_the_running_handler():
    port, iso, inbox = _start(helpers.pausable_entry)
    try:
        inbox.send("a")
        assert port.receive(timeout=T) == "a"
        iso.ping(port.send_port, "ping", priority=subiso.BEFORE_NEXT_EVENT)
        assert port.receive(timeout=T) == "ping"
        inbox.send("stop")
        assert iso.join(T)
    finally:
        port.close()


def test_exit_listeners_with_response_and_removal():
    port, iso, inbox = _start(helpers.pausable_entry)
    kept, removed = subiso.ReceivePort(), subiso.ReceivePort()
    try:
        iso.add_on_exit_listener(kept.send_port, response=("gone", 1))
        iso.add_on_exit_listener(removed.send_port, response="never")
        iso.remove_on_exit_listener(removed.send_port)
        inbox.send("stop")
        assert kept.receive(timeout=T) == ("gone", 1)
        assert iso.join(T)
        # the isolate is gone and its exit listeners fired: nothing more comes
        assert removed._poll_item() is subiso._backend.EMPTY
    finally:
        for p in (port, kept, removed):
            p.close()


def test_errors_not_fatal_keep_the_isolate_serving():
    port, iso, inbox = _start(helpers.nonfatal_entry)
    errors = subiso.ReceivePort()
    try:
        iso.set_errors_fatal(False)
        iso.add_error_listener(errors.send_port)
        inbox.send("raise")
        description, stack = errors.receive(timeout=T)
        assert "handler failed" in description and "handle" in stack
        inbox.send(1)
        assert port.receive(timeout=T) == ("alive", 1)
        iso.remove_error_listener(errors.send_port)
        iso.set_errors_fatal(True)
        inbox.send("raise")
        assert iso.join(T)  # fatal again: the isolate exits
    finally:
        port.close()
        errors.close()


@pytest.mark.parametrize(
    "kill",
    [
        lambda iso: iso.kill(subiso.BEFORE_NEXT_EVENT),
        lambda iso: iso.kill(),  # the default, as in Dart
        lambda iso: iso.kill(subiso.Isolate.BEFORE_NEXT_EVENT),
    ],
    ids=["explicit", "default", "on Isolate"],
)
def test_kill_before_next_event_lets_the_handler_finish(kill):
    port, iso, inbox = _start(helpers.slow_handler_entry)
    try:
        inbox.send("first")
        started, gate = port.receive(timeout=T)  # the handler now waits on its gate
        assert started == "started"
        kill(iso)
        inbox.send("second")  # never handled: the kill comes first
        gate.send("go")
        assert port.receive(timeout=T) == ("finished", "first")
        assert iso.join(T)
        assert port._poll_item() is subiso._backend.EMPTY
    finally:
        port.close()


def test_kill_needs_the_terminate_capability():
    port, iso, _inbox = _start(helpers.pausable_entry)
    try:
        stranger = subiso.Isolate(iso.control_port)  # no capabilities
        stranger.kill(subiso.IMMEDIATE)
        iso.ping(port.send_port, "alive")
        assert port.receive(timeout=T) == "alive"
        assert iso.is_alive()
    finally:
        iso.kill(subiso.IMMEDIATE)
        assert iso.join(T)
        port.close()


def test_a_kill_cancels_an_awaiting_async_entry_rather_than_raising_into_it():
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(helpers.awaiting_entry, port.send_port)
        assert port.receive(timeout=T) == "awaiting"
        iso.kill(subiso.IMMEDIATE)
        assert port.receive(timeout=T) == "cancelled"
        assert iso.join(T)


def test_a_kill_loads_in_the_isolate_without_pickle():
    """The control thread shares the GIL with the loop it kills: importing
    pickle there to load the kill waited a switch interval per file read."""
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(
            helpers.busy_entry_telling_what_its_kill_imported, port.send_port
        )
        assert port.receive(timeout=T) == "busy"
        iso.kill(subiso.IMMEDIATE)
        assert port.receive(timeout=T) == ()
        assert iso.join(T)


def test_handles_travel_and_join():
    port, iso, _inbox = _start(helpers.pausable_entry)
    try:
        travelled = subiso.run(lambda handle: handle, iso)
        assert travelled == iso and travelled.terminate_capability == iso.terminate_capability
        travelled.kill(subiso.IMMEDIATE)
        assert travelled.join(T)
        assert iso.join(T)
    finally:
        port.close()


def test_a_kill_of_a_busy_loop_lands_by_monitoring_not_ctypes():
    """A kill arms a sys.monitoring tool in the isolate, whose callback
    raises on the isolate's own thread: ctypes is never imported (two
    imports at once in two interpreters crashed CPython 3.13.0), and the
    tool is given back at exit."""
    with subiso.ReceivePort() as port:
        isolates = [
            subiso.Isolate.spawn(helpers.busy_entry_telling_what_its_kill_imported, port.send_port)
            for _ in range(2)
        ]
        assert [port.receive(timeout=T) for _ in isolates] == ["busy", "busy"]
        for iso in isolates:
            iso.kill(subiso.IMMEDIATE)
        assert [port.receive(timeout=T) for _ in isolates] == [(), ()]
        for iso in isolates:
            assert iso.join(T)


def test_kill_priorities_are_an_enum_exported_three_ways():
    assert issubclass(subiso.KillPriority, enum.IntEnum)
    assert [p.name for p in subiso.KillPriority] == ["IMMEDIATE", "BEFORE_NEXT_EVENT"]
    assert subiso.IMMEDIATE is subiso.KillPriority.IMMEDIATE is subiso.Isolate.IMMEDIATE
    assert subiso.BEFORE_NEXT_EVENT is subiso.KillPriority.BEFORE_NEXT_EVENT
    assert subiso.Isolate.BEFORE_NEXT_EVENT is subiso.BEFORE_NEXT_EVENT
    assert (subiso.IMMEDIATE, subiso.BEFORE_NEXT_EVENT) == (0, 1)  # Dart's values
    port, iso, _inbox = _start(helpers.pausable_entry)
    try:
        with pytest.raises(ValueError):
            iso.kill(7)
        assert iso.is_alive()
    finally:
        iso.kill(subiso.IMMEDIATE)
        assert iso.join(T)
        port.close()
