"""The name server and calls into the main isolate."""

from __future__ import annotations

import threading

import helpers
import pytest

import subiso


def test_register_lookup_remove_from_main():
    with subiso.ReceivePort() as port:
        name = "test-main"
        assert subiso.IsolateNameServer.register_port_with_name(port.send_port, name)
        assert not subiso.IsolateNameServer.register_port_with_name(port.send_port, name)
        assert subiso.IsolateNameServer.lookup_port_by_name(name) == port.send_port
        assert subiso.IsolateNameServer.remove_port_name_mapping(name)
        assert not subiso.IsolateNameServer.remove_port_name_mapping(name)
        assert subiso.IsolateNameServer.lookup_port_by_name(name) is None


def test_one_registry_from_every_isolate():
    with subiso.ReceivePort() as port, subiso.ReceivePort() as other:
        assert subiso.IsolateNameServer.register_port_with_name(port.send_port, "shared")
        try:
            assert subiso.run(helpers.name_lookup, "shared") == port.send_port
            assert not subiso.run(helpers.name_register, (other.send_port, "shared"))
            assert subiso.run(helpers.name_register, (other.send_port, "from-isolate"))
            assert subiso.IsolateNameServer.lookup_port_by_name("from-isolate") == other.send_port
        finally:
            subiso.IsolateNameServer.remove_port_name_mapping("shared")
            subiso.IsolateNameServer.remove_port_name_mapping("from-isolate")


def test_concurrent_registration_has_one_winner():
    with subiso.ReceivePort() as port:
        winners = [subiso.run(helpers.name_register, (port.send_port, "race")) for _ in range(3)]
        winners.append(subiso.IsolateNameServer.register_port_with_name(port.send_port, "race"))
        assert winners.count(True) == 1
        subiso.IsolateNameServer.remove_port_name_mapping("race")


def test_a_mapping_outlives_its_isolate_until_removed():
    # As in Dart: the registry does not watch isolates (README).
    assert subiso.run(helpers.register_own_port, "outlives")
    try:
        stale = subiso.IsolateNameServer.lookup_port_by_name("outlives")
        assert isinstance(stale, subiso.SendPort)
        stale.send("dropped")  # as on any closed port
    finally:
        assert subiso.IsolateNameServer.remove_port_name_mapping("outlives")
    assert subiso.IsolateNameServer.lookup_port_by_name("outlives") is None


def test_host_call_runs_in_the_main_interpreter():
    main_thread_ids = set()

    def handler(a, b=0):
        main_thread_ids.add(threading.get_ident())
        return ("main", a + b, subiso.Isolate.current().control_port is None)

    subiso.host.register("adder", handler)
    try:
        assert subiso.host.call("adder", 1, b=2) == ("main", 3, True)
        assert subiso.run(helpers.host_call, "adder", 4, b=5) == ("main", 9, True)
    finally:
        subiso.host.unregister("adder")


def test_host_errors_and_unknown_names():
    def fails():
        raise KeyError("nope")

    subiso.host.register("fails", fails)
    try:
        with pytest.raises(KeyError):
            subiso.run(helpers.host_call, "fails")
        with pytest.raises(LookupError, match="missing"):
            subiso.run(helpers.host_call, "missing")
        with pytest.raises(LookupError):
            subiso.host.call("missing")
        with pytest.raises(ValueError):
            subiso.host.register("fails", fails)
    finally:
        subiso.host.unregister("fails")
    with pytest.raises(LookupError):
        subiso.host.unregister("fails")


def test_host_calls_from_many_isolates_at_once():
    gate = threading.Barrier(3, timeout=30)

    def meet(i):
        gate.wait()  # three calls must be in the handler together
        return i

    subiso.host.register("meet", meet)
    try:
        with subiso.ReceivePort() as port:
            isos = [
                subiso.Isolate.spawn(helpers.call_and_reply, (port.send_port, i)) for i in range(3)
            ]
            assert sorted(port.receive(timeout=30) for _ in range(3)) == [0, 1, 2]
            for iso in isos:
                assert iso.join(30)
    finally:
        subiso.host.unregister("meet")
