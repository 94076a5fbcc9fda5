"""Ports used from several threads at once: close, receive and release races.

Each test forces one interleaving with hooks on the port's internal steps:
a thread stops at a named step until the test lets it go, so the order is
fixed by events, never by sleeps. A thread that a bug would leave blocked
is a daemon and is woken at the end, so a failure does not hang the run.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections import Counter
from typing import Any

import pytest

import subiso
from subiso import _backend, _ports

WAIT = 10  # seconds: every wait in these tests ends by then


class Pause:
    """Where one thread stops: ``reached`` once it is there, it goes on at ``go``."""

    def __init__(self, result: Any = None, skip: bool = False) -> None:
        self.reached = threading.Event()
        self.go = threading.Event()
        self.result = result
        self.skip = skip  # return ``result`` instead of doing the step

    def release(self) -> None:
        self.go.set()


class Steps:
    """Hooks on port internals; a thread known by a role stops where told."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.roles: dict[int, str] = {}
        self.pauses: dict[tuple[str, str], Pause] = {}
        self.freed: Counter[tuple[int, int]] = Counter()
        self.dropped = 0
        self._lock = threading.Lock()
        self._patch_before(monkeypatch, _backend, "wait_readable")
        self._patch_before(monkeypatch, _backend, "waker_drain")
        self._patch_before(monkeypatch, _ports, "_destroy_queue")
        self._patch_before(monkeypatch, _backend, "waker_free")
        self._patch_before(monkeypatch, _ports._Port, "_park")
        self._patch_before(monkeypatch, _ports._Port, "_set_keepalive")
        self._patch_after(monkeypatch, _ports._Port, "_spin_get")
        release_item = _ports.release_item

        def counting_release(item: Any) -> None:
            with self._lock:
                self.dropped += 1
            release_item(item)

        monkeypatch.setattr(_ports, "release_item", counting_release)

    def pause(self, role: str, step: str, **kwargs: Any) -> Pause:
        pause = self.pauses[role, step] = Pause(**kwargs)
        return pause

    def _hit(self, step: str) -> Pause | None:
        role = self.roles.get(threading.get_ident())
        if role is None:
            return None
        with self._lock:
            pause = self.pauses.pop((role, step), None)
        if pause is not None:
            pause.reached.set()
            assert pause.go.wait(WAIT), f"{role} was never let go at {step}"
        return pause

    def _patch_before(self, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def hooked(*args: Any) -> Any:
            if name == "waker_free":
                with self._lock:
                    self.freed[args[0]] += 1
            pause = self._hit(name)
            if pause is not None and pause.skip:
                return pause.result
            return original(*args)

        monkeypatch.setattr(owner, name, hooked)

    def _patch_after(self, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def hooked(*args: Any) -> Any:
            result = original(*args)
            self._hit(name)
            return result

        monkeypatch.setattr(owner, name, hooked)


class Worker:
    """A daemon thread in a role; ``outcome`` is what ``fn`` returned or raised."""

    def __init__(self, steps: Steps, role: str, fn: Any) -> None:
        self.outcome: Any = None
        self.done = threading.Event()

        def run() -> None:
            steps.roles[threading.get_ident()] = role
            try:
                self.outcome = fn()
            except BaseException as error:
                self.outcome = error
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run, name=f"test-{role}", daemon=True)
        self.thread.start()

    def join(self) -> Any:
        assert self.done.wait(WAIT), f"{self.thread.name} did not end"
        self.thread.join(WAIT)
        return self.outcome


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch):
    return Steps(monkeypatch)


@pytest.fixture
def rescue():
    """Wake what a failing test left blocked on a port's waker, then wait for it."""
    left: list[tuple[Worker, int, Steps]] = []
    yield left
    for worker, wfd, steps in left:
        for pause in list(steps.pauses.values()):
            pause.release()
        _backend.wake(wfd)
        worker.thread.join(WAIT)
    # A twice-freed waker would be handed to two ports: keep the bug contained.
    free = _backend._free_wakers
    free[:] = list(dict.fromkeys(free))


# -- 1. close wakes a blocked receiver, whatever step it is at ------------------------


@pytest.mark.parametrize("step", ["_spin_get", "_park", "waker_drain", "wait_readable"])
def test_close_wakes_a_receiver_at_every_step(steps, rescue, step):
    port = subiso.ReceivePort()
    pause = steps.pause("receiver", step)
    receiver = Worker(steps, "receiver", port.receive)  # no timeout: waits for the close
    rescue.append((receiver, port.send_port._wfd, steps))
    assert pause.reached.wait(WAIT)
    port.close()
    pause.release()
    assert isinstance(receiver.join(), subiso.PortClosedError)


# -- 2. a waker is released exactly once -------------------------------------------


def test_waker_is_released_once_when_a_receiver_leaves_during_close(steps, rescue):
    port = subiso.ReceivePort()
    waker = (port._rfd, port.send_port._wfd)
    # The receiver's wait ends with nothing ready (as at a timeout) once the
    # close is under way; both then release the port's waker.
    parked = steps.pause("receiver", "wait_readable", skip=True, result=[])
    receiver_frees = steps.pause("receiver", "waker_free")
    closing = steps.pause("closer", "_destroy_queue")
    receiver = Worker(steps, "receiver", port.receive)
    rescue.append((receiver, waker[1], steps))
    assert parked.reached.wait(WAIT)
    closer = Worker(steps, "closer", port.close)
    assert closing.reached.wait(WAIT)
    parked.release()
    assert receiver_frees.reached.wait(WAIT)
    closing.release()
    assert closer.join() is None
    receiver_frees.release()
    assert isinstance(receiver.join(), subiso.PortClosedError)
    assert steps.freed[waker] == 1
    assert _backend._free_wakers.count(waker) == 1


def test_racing_closes_release_once(steps):
    """Many closes at once: one releases the waker and the keep-alive, once."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(200):
            keepalive = _ports._Local.keepalive
            port = subiso.RawReceivePort()
            waker = (port._rfd, port.send_port._wfd)
            freed = steps.freed[waker]  # a recycled waker was freed before
            barrier = threading.Barrier(3, timeout=WAIT)

            def close(port: Any = port, barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                port.close()

            closers = [threading.Thread(target=close) for _ in range(3)]
            for thread in closers:
                thread.start()
            for thread in closers:
                thread.join(WAIT)
            assert steps.freed[waker] == freed + 1
            assert _ports._Local.keepalive == keepalive
    finally:
        sys.setswitchinterval(switch)
        _backend._free_wakers[:] = list(dict.fromkeys(_backend._free_wakers))


def test_a_closed_port_never_keeps_its_isolate_alive(steps, monkeypatch):
    """keep_isolate_alive set from one thread while another closes the port."""
    keepalive = _ports._Local.keepalive
    port = subiso.RawReceivePort()
    port.keep_isolate_alive = False
    setting = steps.pause("setter", "_set_keepalive")

    def set_flag() -> None:
        port.keep_isolate_alive = True

    setter = Worker(steps, "setter", set_flag)
    try:
        assert setting.reached.wait(WAIT)
        port.close()
        setting.release()
        assert setter.join() is None
        assert _ports._Local.keepalive == keepalive
    finally:
        setting.release()
        _ports._Local.keepalive = keepalive


# -- 3. asyncio state is touched only on its loop's thread ---------------------------


class OwnedLoop(asyncio.SelectorEventLoop):
    """A loop that records every call made on it from another thread."""

    owner: int | None = None

    def __init__(self) -> None:
        super().__init__()
        self.foreign: list[str] = []

    def _check(self, name: str) -> None:
        if self.owner is not None and threading.get_ident() != self.owner:
            self.foreign.append(name)

    def call_soon(self, *args: Any, **kwargs: Any) -> Any:
        self._check("call_soon")
        return super().call_soon(*args, **kwargs)

    def add_reader(self, *args: Any) -> Any:
        self._check("add_reader")
        return super().add_reader(*args)

    def remove_reader(self, fd: Any) -> bool:
        self._check("remove_reader")
        return super().remove_reader(fd)


def _run_loop_thread(main: Any) -> tuple[threading.Thread, OwnedLoop, dict[str, Any]]:
    loop = OwnedLoop()
    loop.set_debug(True)  # asyncio's own checks raise on a foreign call too
    out: dict[str, Any] = {}

    def run() -> None:
        loop.owner = threading.get_ident()
        try:
            out["result"] = loop.run_until_complete(main(loop))
        except BaseException as error:
            out["result"] = error
        finally:
            loop.owner = None
            loop.close()

    thread = threading.Thread(target=run, name="test-loop", daemon=True)
    thread.start()
    return thread, loop, out


@pytest.mark.parametrize("timeout", [None, 60])
def test_close_from_another_thread_ends_receive_async_on_its_loop(timeout):
    port = subiso.ReceivePort()
    pending = threading.Event()

    async def main(loop: OwnedLoop) -> Any:
        task = asyncio.ensure_future(port.receive_async(timeout))
        await asyncio.sleep(0)  # the task's first step: it now waits on the port
        pending.set()
        try:
            return await asyncio.wait_for(task, WAIT)
        except BaseException as error:
            return error

    thread, loop, out = _run_loop_thread(main)
    try:
        assert pending.wait(WAIT)
        port.close()
        thread.join(WAIT)
        assert not thread.is_alive(), "the awaiter did not end"
        assert isinstance(out["result"], subiso.PortClosedError)
        assert loop.foreign == []
    finally:
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(WAIT)


def test_handler_removed_from_another_thread_leaves_the_loop_alone():
    port = subiso.RawReceivePort()
    listening = threading.Event()
    got: list[Any] = []
    handles: dict[str, Any] = {}

    async def main(loop: OwnedLoop) -> Any:
        removed = handles["removed"] = asyncio.Event()
        delivered = asyncio.Event()

        def handler(message: Any) -> None:
            got.append(message)
            delivered.set()

        port.handler = handler  # on the loop: it watches the port
        port.send_port.send("one")
        await asyncio.wait_for(delivered.wait(), WAIT)
        listening.set()
        await asyncio.wait_for(removed.wait(), WAIT)
        return port._loops

    thread, loop, out = _run_loop_thread(main)
    try:
        assert listening.wait(WAIT)
        port.handler = None  # from this thread, while the loop runs
        loop.call_soon_threadsafe(handles["removed"].set)  # runs after what was posted
        thread.join(WAIT)
        assert not thread.is_alive()
        assert got == ["one"]
        assert out["result"] == {}  # the loop stopped watching, on its own thread
        assert loop.foreign == []
    finally:
        port.close()
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(WAIT)


def test_event_loops_on_two_threads_share_a_port():
    port = subiso.ReceivePort()
    pending = [threading.Event(), threading.Event()]

    def awaiting(index: int) -> Any:
        async def main(loop: OwnedLoop) -> Any:
            task = asyncio.ensure_future(port.receive_async(WAIT))
            await asyncio.sleep(0)  # the task's first step: it now waits on the port
            pending[index].set()
            return await task

        return main

    runs = [_run_loop_thread(awaiting(0)), _run_loop_thread(awaiting(1))]
    try:
        assert all(event.wait(WAIT) for event in pending)
        port.send_port.send("a")
        port.send_port.send("b")
        for thread, _, _ in runs:
            thread.join(WAIT)
            assert not thread.is_alive(), "an awaiter did not end"
        assert sorted(out["result"] for _, _, out in runs) == ["a", "b"]
        assert all(loop.foreign == [] for _, loop, _ in runs)
        assert port._loops == {}  # both stopped watching, on their own threads
    finally:
        port.close()
        for thread, loop, _ in runs:
            if thread.is_alive():
                loop.call_soon_threadsafe(loop.stop)
                thread.join(WAIT)


def test_a_loop_that_drained_another_loops_wake_up_passes_it_on():
    """Two messages wake the port once; one loop takes that wake-up off the
    fd while the other is busy, and takes one message: the other loop must
    still be woken for the second."""
    port = subiso.ReceivePort()
    pending = [threading.Event(), threading.Event()]
    busy, free = threading.Event(), threading.Event()

    def awaiting(index: int) -> Any:
        async def main(loop: OwnedLoop) -> Any:
            task = asyncio.ensure_future(port.receive_async(WAIT))
            await asyncio.sleep(0)
            pending[index].set()
            return await task

        return main

    first, second = _run_loop_thread(awaiting(0)), _run_loop_thread(awaiting(1))

    def block() -> None:
        busy.set()
        free.wait(WAIT)

    try:
        assert all(event.wait(WAIT) for event in pending)
        second[1].call_soon_threadsafe(block)
        assert busy.wait(WAIT)
        port.send_port.send("a")
        port.send_port.send("b")
        first[0].join(WAIT)  # it drained the fd and took one
        assert first[2]["result"] in ("a", "b")
        free.set()
        second[0].join(WAIT)
        assert not second[0].is_alive(), "the second loop was never woken"
        assert {first[2]["result"], second[2]["result"]} == {"a", "b"}
    finally:
        free.set()
        port.close()
        for thread, loop, _ in (first, second):
            if thread.is_alive():
                loop.call_soon_threadsafe(loop.stop)
                thread.join(WAIT)


# -- 4. several receivers, one closer ----------------------------------------------


def test_close_wakes_every_receiver_though_one_drained_the_wake_up(steps, rescue):
    """One receiver is still about to poll when another, which takes the
    close's wake-up off the fd, leaves: the first must still see the close."""
    port = subiso.ReceivePort()
    wfd = port.send_port._wfd
    polling = steps.pause("parked", "wait_readable")
    draining = steps.pause("late", "waker_drain")
    parked = Worker(steps, "parked", port.receive)
    rescue.append((parked, wfd, steps))
    assert polling.reached.wait(WAIT)
    late = Worker(steps, "late", port.receive)
    rescue.append((late, wfd, steps))
    assert draining.reached.wait(WAIT)
    port.close()
    draining.release()
    assert isinstance(late.join(), subiso.PortClosedError)
    polling.release()
    assert isinstance(parked.join(), subiso.PortClosedError)


def test_a_waiting_message_never_leaves_a_receiver_parked(steps, rescue):
    """Two messages, two receivers: the one that drains both wake-ups takes one
    message; the other, parked, must still be woken for the second."""
    port = subiso.ReceivePort()
    wfd = port.send_port._wfd
    polling = steps.pause("parked", "wait_readable")
    draining = steps.pause("late", "waker_drain")
    try:
        parked = Worker(steps, "parked", port.receive)
        rescue.append((parked, wfd, steps))
        assert polling.reached.wait(WAIT)
        late = Worker(steps, "late", port.receive)
        rescue.append((late, wfd, steps))
        assert draining.reached.wait(WAIT)
        port.send_port.send("a")
        port.send_port.send("b")
        draining.release()
        first = late.join()
        polling.release()
        second = parked.join()
        assert {first, second} == {"a", "b"}
    finally:
        port.close()


@pytest.mark.parametrize("receivers", [2, 4])
def test_receivers_and_a_closer_lose_and_duplicate_nothing(steps, receivers):
    """Receivers take messages while the port closes under them: each ends,
    and every message sent is received once or dropped by the close."""
    port = subiso.ReceivePort()
    sender = port.send_port
    count = 2000
    started = threading.Barrier(receivers + 1, timeout=WAIT)
    halfway = threading.Event()
    got: list[list[Any]] = [[] for _ in range(receivers)]

    def receive_all(mine: list[Any]) -> None:
        started.wait()
        while True:
            try:
                mine.append(port.receive(timeout=WAIT))
            except subiso.PortClosedError:
                return
            if len(mine) == count // (2 * receivers):
                halfway.set()

    workers = [Worker(steps, f"r{i}", lambda i=i: receive_all(got[i])) for i in range(receivers)]
    started.wait()
    for i in range(count):
        sender.send(i)
    assert halfway.wait(WAIT)
    closer = Worker(steps, "closer", port.close)
    assert closer.join() is None
    for worker in workers:
        assert worker.join() is None, worker.outcome
    received = [m for mine in got for m in mine]
    assert len(received) == len(set(received))
    assert len(received) + steps.dropped == count
    for mine in got:
        assert mine == sorted(mine)  # one sender: each receiver sees its order


# -- the dispatcher survives a close from another thread -----------------------------


def test_close_while_the_dispatcher_dispatches_does_not_stop_it(steps, monkeypatch):
    first = subiso.ReceivePort()
    first.listen(lambda message: None)  # starts the main interpreter's dispatcher
    dispatcher = next(t for t in threading.enumerate() if t.name == "subiso-port-dispatcher")
    steps.roles[dispatcher.ident] = "dispatcher"  # type: ignore[index]
    dispatching = steps.pause("dispatcher", "before_event")

    def before_event() -> bool:
        if sys._getframe(1).f_code.co_name == "_dispatch_ready":
            steps._hit("before_event")  # between its look at the flag and at the queue
        return True

    monkeypatch.setattr(_ports._Local, "before_event", before_event)
    try:
        first.send_port.send("lost in the close")
        assert dispatching.reached.wait(WAIT)
        first.close()
    finally:
        dispatching.release()
    got = threading.Event()
    with subiso.ReceivePort() as second:
        second.listen(lambda message: got.set())
        second.send_port.send("still dispatched")
        assert got.wait(WAIT)


CLOSE_WHILE_SENDING = """
import sys, threading
sys.path.insert(0, sys.argv[1])
import helpers, subiso

for _ in range(20):
    port = subiso.ReceivePort()
    stop = threading.Event()

    def send_loop():
        i = 0
        while not stop.is_set():
            port.send_port.send((1, i))
            i += 1

    threads = [threading.Thread(target=send_loop) for _ in range(2)]
    isolates = [
        subiso.Isolate.spawn(helpers.stress_stream, (port.send_port, 2, 20_000))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    port.receive(timeout=10)  # the senders are under way
    port.close()
    stop.set()
    for thread in threads:
        thread.join()
    for isolate in isolates:
        assert isolate.join(30)
print("done")
"""


def test_close_while_threads_and_isolates_send_never_wedges_the_process():
    # CPython destroys a queue by spinning, GIL held, until no put or get is
    # inside it; a put by another thread of the same interpreter that had to
    # wait for the cross-interpreter registry's lock needs that GIL back to
    # finish. The whole process froze, most runs within ten rounds. It runs
    # in a child: a frozen process cannot fail a test.
    import subprocess
    from pathlib import Path

    try:
        child = subprocess.run(
            [sys.executable, "-c", CLOSE_WHILE_SENDING, str(Path(__file__).parent)],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("closing a port while threads and isolates sent to it froze the process")
    assert child.returncode == 0, child.stdout + child.stderr
    assert child.stdout.strip() == "done"
