"""Isolate entries and peer producers of the stream benchmarks (bm_stream,
bm_wire_memory).

They live in an importable module, not a script's ``__main__``, so that an
isolate or a worker process loads them by reference, as a user's would.
"""

from __future__ import annotations


def sensor(i: int) -> tuple[int, str, float]:
    """The stream's message: a reading from one of 100 sensors."""
    return (i, f"sensor-{i % 100}", float(i))


def send_small(args) -> None:
    """Isolate entry: send ``count`` tuples ``(i, "x")`` to ``out``; then, if
    ``hold_to`` is a port, send it a port of ours and wait there until told
    to go (a sender that waits, running no Python code meanwhile)."""
    out, count, hold_to = args
    for i in range(count):
        out.send((i, "x"))
    if hold_to is not None:
        import subiso

        with subiso.ReceivePort() as hold:
            hold_to.send(hold.send_port)
            hold.receive(timeout=600)


def send_sensors(args) -> None:
    """Isolate entry: send ``count`` sensor readings to ``out``, then None."""
    out, count = args
    for i in range(count):
        out.send((i, f"sensor-{i % 100}", float(i)))
    out.send(None)


def sensor_streamer(reply) -> None:
    """Isolate entry: hand back an inbox; for each count received, send that
    many sensor readings, then None; stop at a count of 0."""
    import subiso

    with subiso.ReceivePort() as inbox:
        reply.send(inbox.send_port)
        while count := inbox.receive(timeout=600):
            for i in range(count):
                reply.send((i, f"sensor-{i % 100}", float(i)))
            reply.send(None)


def drain(reply) -> None:
    """Isolate entry: hand back an inbox; count what arrives, answering the
    count at each None; stop at "stop"."""
    import subiso

    with subiso.ReceivePort() as inbox:
        reply.send(inbox.send_port)
        count = 0
        for message in inbox:
            if message is None:
                reply.send(count)
                count = 0
            elif message == "stop":
                return
            else:
                count += 1


def increment(state: int) -> int:
    return state + 1


def pipe_sensors(conn, count: int) -> None:
    """Process peer: ``count`` sensor readings down a multiprocessing Pipe, then None."""
    for i in range(count):
        conn.send((i, f"sensor-{i % 100}", float(i)))
    conn.send(None)


def pipe_streamer(conn) -> None:
    """Process peer: for each count received, that many readings, then None; stop at 0."""
    while count := conn.recv():
        pipe_sensors(conn, count)


def queue_streamer(requests, readings) -> None:
    """Process peer: as ``pipe_streamer``, over multiprocessing Queues."""
    while count := requests.get():
        for i in range(count):
            readings.put((i, f"sensor-{i % 100}", float(i)))
        readings.put(None)
