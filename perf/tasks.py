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
