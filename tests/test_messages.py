"""Messages: random nested values round-trip; unsendable ones are named."""

from __future__ import annotations

import math
import threading

import helpers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import subiso

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=64)
)
hashables = st.recursive(scalars, lambda inner: st.tuples(inner, inner), max_leaves=4)
messages = st.recursive(
    scalars | st.builds(bytearray, st.binary(max_size=32)),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5) | st.integers(), inner, max_size=4)
        | st.frozensets(hashables, max_size=4)
        | st.sets(hashables, max_size=4)
        | st.builds(helpers.Point, st.integers(), inner)
        | st.builds(lambda text: ValueError(text), st.text(max_size=10))
    ),
    max_leaves=12,
)


def same(a, b):
    if isinstance(a, BaseException):
        return type(a) is type(b) and a.args == b.args
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return type(a) is type(b) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, helpers.Point):
        return type(b) is helpers.Point and a.x == b.x and same(a.y, b.y)
    return type(a) is type(b) and a == b


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=5))
def test_messages_round_trip_through_a_port_in_order(batch):
    with subiso.ReceivePort() as port:
        for message in batch:
            port.send_port.send(message)
        received = [port.receive(timeout=10) for _ in batch]
    assert all(same(a, b) for a, b in zip(batch, received, strict=True))


@pytest.fixture(scope="module")
def echo():
    port = subiso.ReceivePort()
    iso = subiso.Isolate.spawn(helpers.echo_entry, port.send_port)
    inbox = port.receive(timeout=30)
    yield port, inbox
    inbox.send(None)
    assert iso.join(30)
    port.close()


@pytest.fixture(autouse=True)
def no_leaks():  # the module's echo isolate lives across tests on purpose
    yield


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_messages_round_trip_through_an_isolate(echo, message):
    port, inbox = echo
    inbox.send(("m", message))  # wrapped: a bare None tells the echo to stop
    kind, (_, back) = port.receive(timeout=30)
    assert kind == "echo" and same(message, back)


def test_large_buffers_round_trip(echo):
    port, inbox = echo
    blob = bytes(range(256)) * 40_000
    inbox.send((blob, bytearray(blob), [blob[:10]]))
    _, back = port.receive(timeout=30)
    assert back[0] == blob and back[1] == bytearray(blob) and back[2] == [blob[:10]]


def _generator():
    yield 1


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (threading.Lock(), "lock"),
        (_generator(), "generator"),
        (helpers.Unpicklable(), "Unpicklable"),
    ],
)
def test_unsendable_values_are_named_with_their_path(value, named):
    with subiso.ReceivePort() as port:
        port.send_port.send("before")
        with pytest.raises(subiso.NotSendableError, match=named) as info:
            port.send_port.send({"outer": [1, value]})
        assert "message['outer'][1]" in str(info.value)
        port.send_port.send("after")
        assert port.receive(timeout=10) == "before"
        assert port.receive(timeout=10) == "after"


def test_open_file_and_port_are_not_sendable(tmp_path):
    with subiso.ReceivePort() as port, open(tmp_path / "f", "w") as handle:
        with pytest.raises(subiso.NotSendableError, match="TextIOWrapper"):
            port.send_port.send(handle)
        with pytest.raises(subiso.NotSendableError, match="ReceivePort"):
            port.send_port.send([port])
