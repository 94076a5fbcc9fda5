"""Task functions the pool benchmark runs on every peer.

They live in an importable module (not ``__main__``) so that every peer,
including the InterpreterPoolExecutors and anyio's worker interpreters,
can unpickle them.
"""

from __future__ import annotations

CPU_N = 300_000


def tiny(x: int) -> int:
    return x + 1


def cpu(n: int = CPU_N) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def echo(data: bytes) -> bytes:
    return data


def echo_isolate(port) -> None:
    """Isolate entry: hand back an inbox, then echo every message until None.

    A TransferableBuffer goes back as a new one (a buffer is used once).
    """
    import subiso

    inbox = subiso.ReceivePort()
    port.send(inbox.send_port)
    for message in inbox:
        if message is None:
            inbox.close()
            return
        if isinstance(message, subiso.TransferableBuffer):
            view = message.materialize()
            message = subiso.TransferableBuffer(view)
            view.release()
        port.send(message)


def shm_echo(name: str) -> str:
    """ProcessPool task: attach a multiprocessing shared_memory block by
    name, as a worker handed one must, and hand the name back."""
    from multiprocessing import shared_memory

    block = shared_memory.SharedMemory(name, track=False)  # the creator unlinks it
    block.close()
    return name


def int64_sum(args) -> int:
    """Sum int64s ``start:stop`` of a buffer, read in place."""
    buffer, start, stop = args
    with memoryview(buffer) as view, view.cast("q") as numbers:
        return sum(numbers[start:stop])


def crc_and_hold(args) -> int:
    """Pool task: read all of ``data`` (so that its pages are resident),
    say so, and hold it until told to let go: the memory benchmark measures
    while every worker holds its data."""
    import zlib

    import subiso

    data, ready = args
    crc = zlib.crc32(data)
    with subiso.ReceivePort() as release:
        ready.send(release.send_port)
        release.receive()
    return crc


def shm_crc_and_hold(conn) -> None:
    """Process target: wait for the name of a shared_memory block, attach
    it, read all of it, say so, and hold it until told to let go."""
    import zlib
    from multiprocessing import shared_memory

    block = shared_memory.SharedMemory(conn.recv(), track=False)  # the creator unlinks it
    zlib.crc32(block.buf)
    conn.send("ready")
    conn.recv()
    block.close()
