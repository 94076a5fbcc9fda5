"""Plain functions the tests run in isolates (importable by reference there)."""

from __future__ import annotations

import time

COUNTER = [0]


def square(x):
    return x * x


def call(fn, *args):
    return fn(*args)


def add(a, b=0, *, c=0):
    return a + b + c


def bump():
    COUNTER[0] += 1
    return COUNTER[0]


class Boom(Exception):
    pass


def boom(message):
    raise Boom(message)


def unpicklable_error():
    import threading

    raise ValueError(threading.Lock())


def echo_entry(port):
    """Spawn entry: reply on ``port`` with a port of our own, echo until None."""
    import subiso

    inbox = subiso.ReceivePort()
    port.send(inbox.send_port)
    for message in inbox:
        if message is None:
            inbox.close()
            break
        port.send(("echo", message))


def listen_entry(port):
    import subiso

    inbox = subiso.ReceivePort()

    def handle(message):
        if message == "stop":
            inbox.close()
        else:
            port.send(("got", message))

    inbox.listen(handle)
    port.send(inbox.send_port)


async def async_entry(port):
    import asyncio

    import subiso

    inbox = subiso.ReceivePort()
    port.send(inbox.send_port)
    message = await inbox.receive_async(timeout=30)
    await asyncio.sleep(0)
    port.send(("async", message))
    inbox.close()


def spin():
    """A loop that calls no Python function. (Its own function holds no
    handler: on CPython 3.13 before 3.13.18, an exception raised at its
    jump skips the handlers of the frame it is raised in.)"""
    while True:
        pass


def busy_entry(port):
    port.send("busy")
    while True:
        pass


async def awaiting_entry(port):
    """Await until killed; say so if the kill came as a cancellation."""
    import asyncio

    port.send("awaiting")
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        port.send("cancelled")
        raise


def busy_entry_telling_what_its_kill_imported(port):
    """Loop until killed; then say which of pickle's and ctypes' modules
    were loaded by then."""
    import sys

    port.send("busy")
    try:
        spin()
    except BaseException:
        loaded = ("_pickle", "pickle", "subiso._pickling", "ctypes", "_ctypes")
        port.send(tuple(m for m in loaded if m in sys.modules))
        raise


def failing_entry(message):
    raise RuntimeError(f"entry failed: {message}")


def exit_entry(port):
    import subiso

    subiso.Isolate.exit(port, "last words")
    raise AssertionError("not reached")


def burst_entry(args):
    port, n = args
    for i in range(n):
        port.send(i)


def current_name(_):
    import subiso

    return subiso.Isolate.current().debug_name


def photos(n):
    album = {"title": "shared"}
    return [{"id": i, "album": album, "title": f"photo {i}"} for i in range(n)]


def slow_square(x):
    time.sleep(0.001)
    return x * x


def pausable_entry(port):
    """Reply to every message on a listened port (for pause/resume and ordering)."""
    import subiso

    inbox = subiso.ReceivePort()

    def handle(message):
        if message == "stop":
            inbox.close()
        else:
            port.send(message)

    inbox.listen(handle)
    port.send(inbox.send_port)


def slow_handler_entry(port):
    """Each message takes a while; kill(BEFORE_NEXT_EVENT) lets the current one finish."""
    import subiso

    inbox = subiso.ReceivePort()

    def handle(message):
        gate = subiso.ReceivePort()
        port.send(("started", gate.send_port))
        gate.receive(timeout=30)  # wait until the test says go
        gate.close()
        port.send(("finished", message))

    inbox.listen(handle)
    port.send(inbox.send_port)


def nonfatal_entry(port):
    import subiso

    inbox = subiso.ReceivePort()

    def handle(message):
        if message == "stop":
            inbox.close()
        elif message == "raise":
            raise ValueError("handler failed")
        else:
            port.send(("alive", message))

    inbox.listen(handle)
    port.send(inbox.send_port)


def name_lookup(name):
    import subiso

    return subiso.IsolateNameServer.lookup_port_by_name(name)


def register_own_port(name):
    """In an isolate: register a port of its own under ``name``, and end."""
    import subiso

    return subiso.IsolateNameServer.register_port_with_name(subiso.ReceivePort().send_port, name)


def name_register(args):
    import subiso

    port, name = args
    return subiso.IsolateNameServer.register_port_with_name(port, name)


def host_call(name, *args, **kwargs):
    import subiso

    return subiso.host.call(name, *args, **kwargs)


def call_and_reply(args):
    import subiso

    port, i = args
    port.send(subiso.host.call("meet", i))


STATE = {"calls": 0}


def count_calls(_=None):
    STATE["calls"] += 1
    return STATE["calls"]


def init_state(value):
    STATE["init"] = value


def read_init(_=None):
    return STATE.get("init")


def wait_on_gate(gate_name):
    """A pool task that blocks until the test sends on the named port's gate."""
    import subiso

    gate = subiso.ReceivePort()
    subiso.IsolateNameServer.lookup_port_by_name(gate_name).send(gate.send_port)
    gate.receive(timeout=60)
    gate.close()
    return "released"


def record(args):
    port, label = args
    port.send(label)
    return label


def spin_forever(port):
    port.send("spinning")
    while True:
        pass


def die():
    import subiso

    subiso.Isolate.exit()


def failing_init():
    raise RuntimeError("init failed")


def counter_factory(start=0):
    return {"count": start}


def increment(state):
    state["count"] += 1
    return state


def bad_update(state):
    raise ValueError("bad update")


def boom_on_three(x):
    if x == 3:
        raise Boom(str(x))
    return x


def identity(x):
    return x


@__import__("dataclasses").dataclass
class Point:
    x: int
    y: object = None


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("refuses to be pickled")


def announce_then_spin(port):
    port.send("started")
    while True:
        pass


def stream_forever(port):
    i = 0
    while True:
        port.send(i)
        i += 1


def receive_forever(port):
    import subiso

    inbox = subiso.ReceivePort()
    port.send(inbox.send_port)
    inbox.receive()  # never comes


def sender(args):
    port, sender_id, count = args
    for i in range(count):
        port.send((sender_id, i))


def send_view_and_exit(port):
    buffer = bytearray(b"owned by a dying isolate" * 1000)
    port.send(memoryview(buffer))


def spin_after_event(name):
    """On a Dask worker's isolate: say it started (through the worker), then spin."""
    import subiso

    subiso.host.call("dask_event_set", name)
    while True:
        pass


def where():
    """(process id, interpreter id) of the caller."""
    import _interpreters
    import os

    return os.getpid(), _interpreters.get_current()[0]


def exit_process():
    import os

    os._exit(3)


def busy_sum(n):
    """Pure-Python work: the isolate's thread stays in the eval loop."""
    total = 0
    for i in range(n):
        total += i
    return total


# -- entry points for the stress harness (tests/stress.py) -------------------


def stress_stream(args):
    """Send ``(sender, 0)`` ... ``(sender, count - 1)``, then ``(sender, "end")``."""
    port, sender_id, count = args
    for i in range(count):
        port.send((sender_id, i))
    port.send((sender_id, "end"))


def stress_relay(port):
    """Forward every message to ``port`` unchanged until ``("stop",)``."""
    import subiso

    inbox = subiso.ReceivePort()
    port.send(("inbox", inbox.send_port))
    for message in inbox:
        if message == ("stop",):
            inbox.close()
            break
        port.send(message)


def stress_listen_relay(port):
    """Like ``stress_relay``, from a listened port on the isolate's event loop."""
    import subiso

    inbox = subiso.ReceivePort()

    def handle(message):
        if message == ("stop",):
            inbox.close()
        else:
            port.send(message)

    inbox.listen(handle)
    port.send(("inbox", inbox.send_port))


def stress_value(x):
    """A pool task whose result the caller can predict."""
    return (x * 2654435761) % 4294967296


def stress_buffer_digest(buffer):
    """Materialize a TransferableBuffer; return (length, crc32) of what it holds."""
    import zlib

    view = buffer.materialize()
    try:
        return len(view), zlib.crc32(view)
    finally:
        view.release()


def stress_buffer_check(args):
    """Check a TransferableBuffer against (length, crc32); send back
    ``("checked", ok, copy)`` with a fresh TransferableBuffer of its bytes."""
    import zlib

    import subiso

    port, buffer, nbytes, crc = args
    view = buffer.materialize()
    ok = len(view) == nbytes and zlib.crc32(view) == crc
    copy = subiso.TransferableBuffer(view)
    view.release()
    port.send(("checked", ok, copy))


def reply_entry(port):
    port.send("started")


def open_fds(kind: str) -> int:
    """How many of this process's open fds link to something named ``kind``."""
    import os

    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += kind in os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass  # the listing's own fd, or one closed meanwhile
    return count


class Account:
    """State a task reads (``balance``) or changes in its own copy (``bump``)."""

    def __init__(self) -> None:
        self.n = 0

    def balance(self) -> int:
        return self.n

    def bump(self) -> int:
        self.n += 1
        return self.n


def total(values):
    return sum(values)


def interrupt_after_next_send(monkeypatch) -> None:
    """Make this thread's next port send raise KeyboardInterrupt once its
    item is put, as a Ctrl-C that lands in the wake-up after the put
    (the library's threads send too: theirs are left alone)."""
    import threading

    from subiso._ports import SendPort

    send_item = SendPort._send_item
    armed = [True]
    caller = threading.get_ident()

    def send_then_interrupt(self, item):
        sent = send_item(self, item)
        if armed and threading.get_ident() == caller and armed.pop():
            raise KeyboardInterrupt
        return sent

    monkeypatch.setattr(SendPort, "_send_item", send_then_interrupt)


# -- SharedBuffer ---------------------------------------------------------------


def shared_identity(buffer):
    """Which memory the buffer that arrived reads (its memfd's inode), and
    whether it reads it in place (a mapping, not a copy)."""
    import mmap
    import os

    memoryview(buffer)
    return os.fstat(buffer._fd).st_ino, type(buffer._map) is mmap.mmap


def inode(buffer):
    import os

    return os.fstat(buffer._fd).st_ino


def shared_sum(args):
    """The sum of a slice of a SharedBuffer of int64, read in place."""
    buffer, start, stop = args
    return sum(memoryview(buffer).cast("q")[start:stop])


def make_shared(data):
    import subiso

    return subiso.SharedBuffer(data)


def hold_shared_forever(port):
    """Receive a SharedBuffer, say so, and hold it until killed."""
    import subiso

    inbox = subiso.ReceivePort()
    port.send(inbox.send_port)
    held = inbox.receive()
    port.send(("holding", len(held)))
    inbox.receive()  # never comes


def send_shared_and_exit(port):
    import subiso

    port.send(subiso.SharedBuffer(b"made by an isolate that has exited" * 1000))


class Blob:
    """A user class whose bytes pickle out of band (pickle protocol 5)."""

    def __init__(self, data):
        self.data = data

    def __reduce_ex__(self, protocol):
        import pickle

        if protocol >= 5:
            return (Blob, (pickle.PickleBuffer(self.data),))
        return (Blob, (bytes(self.data),))


def blob_identity(blob):
    """What a Blob that arrived holds: its type, and whether it reads a
    mapping (shared memory) in place."""
    import mmap

    data = blob.data
    return type(data).__name__, type(data) is memoryview and type(data.obj) is mmap.mmap


def memory_mapped(kind: str) -> tuple[int, int]:
    """How many mappings of this process are of ``kind``, and their Rss in KiB."""
    count = rss = 0
    current = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header
                current = kind in line
                count += current
            elif current and first == "Rss:":
                rss += int(line.split()[1])
    return count, rss


def long_list_with_buffers(data):
    """A result long enough to be streamed, carrying buffers of every kind."""
    import subiso

    items = list(range(subiso._wire.STREAM_MIN_ITEMS + 100))
    items[10] = subiso.SharedBuffer(data)
    items[-10] = subiso.TransferableBuffer(data)
    items[-5] = Blob(bytearray(data))
    return items


def refuse_to_load():
    raise RuntimeError("this cannot be loaded here")


class FailsToLoad:
    """Pickles, and fails when it is unpickled."""

    def __reduce__(self):
        return (refuse_to_load, ())


KEPT: list[object] = []


def keep_buffers_in_a_global(_=None):
    """Leave a SharedBuffer and a TransferableBuffer in this module's global
    as the isolate exits: they go as its modules are cleared."""
    import subiso

    KEPT.append(subiso.SharedBuffer(b"kept" * 1000))
    KEPT.append(subiso.TransferableBuffer(b"kept" * 1000))


def _rebuilt_on():
    """Called where the value below is unpickled: says on which thread."""
    import threading

    return threading.current_thread().name


class SaysWhereItLoads:
    def __reduce__(self):
        return (_rebuilt_on, ())


def says_where_it_loads():
    return SaysWhereItLoads()
