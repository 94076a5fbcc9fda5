"""Entries and values for the tests of subiso's own services (hub, runtime)."""

from __future__ import annotations


def _refuse_main() -> object:
    """Unpickles in an isolate, raises in the main interpreter."""
    from subiso import _runtime

    if _runtime.Runtime.current is None:
        raise RuntimeError("this value cannot be rebuilt in the main interpreter")
    return "rebuilt"


class OnlyInIsolates:
    """A value that pickles anywhere and unpickles only inside isolates."""

    def __reduce__(self) -> tuple[object, ...]:
        return (_refuse_main, ())


def host_call_unloadable(name: str) -> object:
    import subiso

    return subiso.host.call(name, OnlyInIsolates())


def host_call_size(args: tuple[str, int]) -> object:
    import subiso

    name, size = args
    return subiso.host.call(name, b"x" * size)


def raising_entry(message: object) -> None:
    raise ValueError(f"entry raised on {message!r}")


async def async_entry(port: object, value: object) -> None:
    import asyncio

    await asyncio.sleep(0)
    port.send(("async", value))  # type: ignore[attr-defined]


def nested_run(text: str) -> int:
    import subiso

    return subiso.run(len, text)  # type: ignore[no-any-return]


async def awaiting_forever(port: object) -> None:
    import subiso

    inbox = subiso.ReceivePort()
    port.send("waiting")  # type: ignore[attr-defined]
    await inbox.receive_async()


async def busy_async(port: object) -> None:
    port.send("busy")  # type: ignore[attr-defined]
    while True:
        pass


def send_buffer_and_linger_after_the_put(args: tuple[object, bytes]) -> None:
    """Send a TransferableBuffer, and linger in library code right after its
    queue put, where a kill must not land, until the kill has had its chance."""
    import time

    import subiso
    from subiso import _backend, _ports, _runtime

    port, payload = args
    runtime = _runtime.Runtime.current
    assert runtime is not None
    put = _ports._queue_put

    def put_then_linger(qid: int, item: object) -> None:
        put(qid, item)
        _ports._queue_put = put
        _backend.wake(port._wfd)  # type: ignore[attr-defined]  # the receiver may look now
        while not runtime.killed:
            pass  # the receiver has the message now and kills this isolate
        deadline = time.monotonic() + 0.3  # well past the kill's grace
        while time.monotonic() < deadline:
            pass

    _ports._queue_put = put_then_linger
    port.send(subiso.TransferableBuffer(payload))  # type: ignore[attr-defined]
    while True:
        pass


def async_work_after_a_kill() -> str:
    """Run async work in an isolate that a kill reached before any event loop
    ran (the state kill() leaves): the work must end at once."""
    import asyncio

    from subiso import _runtime

    runtime = _runtime.Runtime.current
    assert runtime is not None
    runtime.exiting = True
    try:
        runtime.run_async(asyncio.sleep(3600))
    except _runtime.IsolateKilled:
        return "ended"
    return "slept"


def _refuse_isolates() -> object:
    from subiso import _runtime

    if _runtime.Runtime.current is not None:
        raise RuntimeError("this value cannot be rebuilt in an isolate")
    return "rebuilt"


class OnlyInMain:
    """A value that pickles anywhere and unpickles only in the main interpreter."""

    def __reduce__(self) -> tuple[object, ...]:
        return (_refuse_isolates, ())


def spin() -> None:
    """A loop that calls no Python function. (Its own function holds no
    handler: on CPython 3.13 before 3.13.18, an exception raised at its
    jump skips the handlers of the frame it is raised in.)"""
    while True:
        pass


def swallows_the_first_kill(port: object) -> None:
    """Busy user code that swallows one kill, as `except BaseException: pass`
    does (or a weakref callback, where the raise may also land)."""
    port.send("busy")  # type: ignore[attr-defined]
    try:
        spin()
    except BaseException:
        port.send("swallowed")  # type: ignore[attr-defined]
    spin()


def parks_in_a_loop(port: object) -> None:
    """User code that spends its time inside the port's own locking (short
    parked waits), where a kill's raise must not land."""
    import subiso

    inbox = subiso.ReceivePort()
    port.send("parking")  # type: ignore[attr-defined]
    while True:
        try:
            inbox.receive(timeout=0.0002)
        except TimeoutError:
            pass


def open_and_close_a_port(_=None):
    import subiso

    subiso.ReceivePort().close()
    return "closed"


def kill_while_a_buffer_arrives() -> None:
    """In an isolate (an entry's first step, or a pool initializer): make the
    next TransferableBuffer that arrives here wait,
    before taking its file descriptor, until a kill (IMMEDIATE, from another
    thread, as any kill comes) was dealt with: a kill that may land then,
    lands then."""
    import threading
    import time

    from subiso import _wire
    from subiso._runtime import IMMEDIATE, Runtime

    runtime = Runtime.current
    arrive = _wire.TransferableBuffer._arrive

    def arrive_after_a_kill(fd, nbytes, inline):
        if fd >= 0 and not runtime.killed:
            killer = threading.Thread(target=runtime.kill, args=(IMMEDIATE,))
            killer.start()
            deadline = time.monotonic() + 10
            while killer.is_alive() and time.monotonic() < deadline:
                pass  # bytecode checks: where the kill's raise lands, if it may
        return arrive(fd, nbytes, inline)

    _wire.TransferableBuffer._arrive = arrive_after_a_kill


def receive_a_buffer_while_killed(port):
    import subiso

    kill_while_a_buffer_arrives()
    inbox = subiso.ReceivePort()
    port.send(inbox.send_port)
    inbox.receive()
    port.send("not killed")


async def receive_a_buffer_while_killed_async(port):
    import subiso

    kill_while_a_buffer_arrives()
    inbox = subiso.ReceivePort()
    port.send(inbox.send_port)
    await inbox.receive_async()
    port.send("not killed")


def report_a_readable_interrupt(port):
    """Listen on an inbox; tell ``port`` this isolate's interrupt waker (to
    write to), then answer every message with whether that waker is readable."""
    import select

    import subiso
    from subiso._ports import _Local
    from subiso._runtime import Runtime

    inbox = subiso.ReceivePort()

    def answer(message):
        if message == "stop":
            inbox.close()
            return
        poller = select.poll()
        poller.register(_Local.interrupt_fd, select.POLLIN)
        port.send(bool(poller.poll(0)))

    inbox.listen(answer)
    port.send((inbox.send_port, Runtime.current.interrupt[1]))


def hooks_then_raises(port):
    """Replace this isolate's ``subiso.excepthook`` with one that tells
    ``port`` what it was given, then fail outside any listener."""
    import subiso

    def hook(args):
        port.send((args.exc_type.__name__, str(args.exc_value), args.isolate, args.fatal))

    subiso.excepthook = hook
    raise ValueError("unheard")


def host_call_with_where_it_loads(name: str) -> object:
    """Host-call ``name`` with a value that, unpickled, says on which thread."""
    import helpers

    import subiso

    return subiso.host.call(name, helpers.SaysWhereItLoads())


def lookup(name: str) -> object:
    import subiso

    return subiso.IsolateNameServer.lookup_port_by_name(name)
