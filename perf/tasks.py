"""Task functions the benchmarks run on every peer.

They live in an importable module (not ``__main__``) so that every peer,
including the InterpreterPoolExecutors and anyio's worker interpreters,
can unpickle them. Modules only some tasks need are imported inside them:
a fresh isolate importing this module pays for what its task uses.
"""

from __future__ import annotations

CPU_N = 300_000
# The service benchmark's document: about 198 KB of JSON, which ``render``
# turns around in about 5 ms of CPU on the 2-core machine of the README's figures.
DOCUMENT_ITEMS = 1_350


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


def document(items: int = DOCUMENT_ITEMS) -> str:
    """A deterministic JSON catalogue of ``items`` products (seeded)."""
    import json
    import random

    rng = random.Random(items)
    products = [
        {
            "id": i,
            "name": f"product-{i}",
            "price": round(rng.uniform(1, 500), 2),
            "tags": [f"tag{rng.randrange(50)}" for _ in range(3)],
            "stock": {"warehouse": rng.randrange(10), "count": rng.randrange(1000)},
            "active": rng.random() < 0.8,
        }
        for i in range(items)
    ]
    return json.dumps({"version": 1, "products": products})


def render(text: str) -> str:
    """A service request's work: decode a catalogue, keep the active products
    with their stock value, most valuable first, and encode the answer."""
    import json

    catalogue = json.loads(text)
    products = [
        dict(product, value=round(product["price"] * product["stock"]["count"], 2))
        for product in catalogue["products"]
        if product["active"]
    ]
    products.sort(key=lambda product: product["value"], reverse=True)
    return json.dumps(
        {"version": catalogue["version"], "count": len(products), "products": products}
    )


# The batch benchmark's log lines: "<epoch seconds> <LEVEL> [<service>] <METHOD>
# <path> <status> <latency>ms user=<name>", parsed with this pattern.
LOG_LINE = (
    r"^(?P<time>\d+\.\d{3}) (?P<level>[A-Z]+) \[(?P<service>[\w-]+)\] (?P<method>[A-Z]+) "
    r"(?P<path>\S+) (?P<status>\d{3}) (?P<latency>\d+\.\d)ms user=(?P<user>\w+)$"
)


def log_chunks(count: int, size: int, seed: int = 0) -> list[str]:
    """``count`` chunks of synthetic log text of about ``size`` characters
    each, the same for a given seed (lines drawn from 4,096 seeded ones,
    each with its own timestamp)."""
    import random

    rng = random.Random(seed)
    levels = ("INFO",) * 16 + ("DEBUG",) * 6 + ("WARNING",) * 3 + ("ERROR",)
    services = ("auth", "billing", "catalog", "search", "cart", "gateway", "mail-out")
    methods = ("GET",) * 6 + ("POST", "POST", "PUT", "DELETE")
    resources = ("items", "users", "orders", "sessions", "invoices", "carts")
    statuses = ("200",) * 20 + ("201", "204", "301", "304", "400", "401", "404", "500", "503")
    bodies = [
        f"{rng.choice(levels)} [{rng.choice(services)}] {rng.choice(methods)} "
        f"/api/v1/{rng.choice(resources)}/{rng.randrange(100_000)} {rng.choice(statuses)} "
        f"{rng.uniform(0.2, 900):.1f}ms user=user{rng.randrange(5_000)}"
        for _ in range(4096)
    ]
    start = 1_796_000_000.0 + seed
    chunks, line = [], 0
    for _ in range(count):
        lines, length = [], 0
        while length < size:
            text = f"{start + line * 0.037:.3f} {bodies[(line * 2_654_435_761) % 4096]}\n"
            lines.append(text)
            length += len(text)
            line += 1
        chunks.append("".join(lines))
    return chunks


def analyse_log(chunk: str) -> tuple[int, int, float, str, int]:
    """A batch task: parse a chunk's lines (stdlib ``re``), count the errors
    and sum the latencies, hash it (SHA-256) and compress it (zlib).
    Returns (lines, server errors, total latency ms, digest, compressed size)."""
    import hashlib
    import re
    import zlib

    lines = errors = 0
    latency = 0.0
    for match in re.finditer(LOG_LINE, chunk, re.MULTILINE):
        lines += 1
        if match["status"][0] == "5" or match["level"] == "ERROR":
            errors += 1
        latency += float(match["latency"])
    data = chunk.encode()
    return (
        lines,
        errors,
        round(latency, 1),
        hashlib.sha256(data).hexdigest(),
        len(zlib.compress(data)),
    )


def analyse_logs(chunks: list[str]) -> list[tuple[int, int, float, str, int]]:
    """A batch of ``analyse_log`` calls, for peers whose calls take one item."""
    return [analyse_log(chunk) for chunk in chunks]
