"""Entries the wire tests run in isolates (importable by reference there)."""

from __future__ import annotations

import threading


def window_state():
    """This interpreter's window: (tokens free, items in flight, WINDOW, mailbag used)."""
    from subiso import _ports

    return (len(_ports._tokens), len(_ports._in_flight), _ports.WINDOW, _ports._mailbag is not None)


def stream_then_wait(args):
    """Send ``count`` small tuples to ``port``, report the window on
    ``done``, then wait on a port of its own until told to go."""
    import subiso

    port, done, count = args
    for i in range(count):
        port.send((i, f"sensor-{i % 7}", i * 0.5))
    with subiso.ReceivePort() as go:
        done.send((window_state(), go.send_port))
        go.receive(timeout=60)


def stream_and_exit(args):
    port, count = args
    for i in range(count):
        port.send((i, "x" * (i % 50)))
    port.send(("done", window_state()))


def stream_and_report(args):
    """Send ``count`` messages to ``port``, then the window to ``done``."""
    port, done, count = args
    for i in range(count):
        port.send((i, "x" * (i % 50)))
    done.send(window_state())


def sum_stream(reply):
    """Receive ints until None; reply with their sum and the count."""
    import subiso

    with subiso.ReceivePort() as inbox:
        reply.send(inbox.send_port)
        total = count = 0
        for message in inbox:
            if message is None:
                break
            total += message
            count += 1
        reply.send((total, count, window_state()))


def threads_stream(args):
    """``threads`` threads of this isolate each send ``count`` messages."""
    port, threads, count = args

    def send(name):
        for i in range(count):
            port.send((name, i))

    workers = [threading.Thread(target=send, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    port.send(("done", window_state()))


def buffers_stream(args):
    """Send ``count`` SharedBuffers (items that carry descriptors)."""
    import subiso

    port, count = args
    for i in range(count):
        port.send((i, subiso.SharedBuffer(b"%06d" % i * 100)))
    port.send(("done", window_state()))


def fill_then_exit(port):
    """Fill a bounded port; the exit notice to it must not wait."""
    for i in range(3):
        port.send(i)


def echo_then_report(reply):
    """Echo what arrives; at None, report this interpreter's window."""
    import subiso

    with subiso.ReceivePort() as inbox:
        reply.send(inbox.send_port)
        for message in inbox:
            if message is None:
                reply.send(window_state())
                return
            reply.send(message)
