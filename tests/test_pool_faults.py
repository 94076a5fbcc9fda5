"""Pool faults: results that cannot come back, callbacks that call back, a
forgotten pool, and a collector that breaks."""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import signal
import sys
import threading
import weakref

import helpers
import pytest

import subiso
from subiso import _backend, _isolate, _pool

T = 30


def _task_functions():
    """Functions for pool isolates, sent by value (their qualnames hold
    ``<locals>``), so that an isolate need not import this test module."""

    def gated(port, then="return"):
        """Send a gate port on ``port``, wait for a word on it, then end as ``then``."""
        import subiso

        gate = subiso.ReceivePort()
        port.send(gate.send_port)
        word = gate.receive(timeout=60)
        gate.close()
        if then == "raise":
            raise ValueError(word)
        if then == "die":
            subiso.Isolate.exit()
        return word

    def loads_by_raising():
        """A result that pickles, but whose unpickling raises ValueError."""

        class Unloadable:
            def __reduce__(self):
                return (int, ("not a number",))

        return Unloadable()

    def of_a_ghost_module():
        """An instance of a class of a module that exists in this isolate only."""
        import sys
        import types

        module = types.ModuleType("subiso_test_ghost")

        class Ghost:
            pass

        Ghost.__module__ = module.__name__
        Ghost.__qualname__ = "Ghost"
        module.Ghost = Ghost
        sys.modules[module.__name__] = module
        return Ghost()

    return gated, loads_by_raising, of_a_ghost_module


gated, loads_by_raising, of_a_ghost_module = _task_functions()


def _shut_down_in_time(pool, timeout=T):
    """``pool.shutdown()`` on a helper thread; whether it returned in time."""
    thread = threading.Thread(target=pool.shutdown, name="test-pool-shutdown", daemon=True)
    thread.start()
    thread.join(timeout)
    return not thread.is_alive()


class _Probe:
    """A done-callback that asks whether another thread can use the pool
    while the callback runs (it cannot if the callback runs under the
    pool's lock)."""

    def __init__(self, pool):
        self.pool = pool
        self.answers = []
        self.threads = []
        self.called = threading.Event()

    def __call__(self, task):
        answered = threading.Event()

        def ask():
            self.pool.stats()
            answered.set()

        thread = threading.Thread(target=ask, name="test-pool-probe")
        self.threads.append(thread)
        thread.start()
        self.answers.append(answered.wait(T))
        self.called.set()

    def join(self):
        for thread in self.threads:
            thread.join(T)
        return self.answers


# -- results that cannot be unpickled ---------------------------------------------


@pytest.mark.parametrize(
    ("make", "cause"),
    [(loads_by_raising, ValueError), (of_a_ghost_module, ModuleNotFoundError)],
    ids=["reduce-raises", "ghost-class"],
)
def test_a_result_that_cannot_be_unpickled_fails_its_task_only(make, cause):
    pool = subiso.Pool(1, debug_name="unloadable")
    try:
        with pytest.raises(subiso.NotSendableError, match="could not be unpickled") as info:
            pool.submit(make).result(timeout=T)
        assert isinstance(info.value.__cause__, cause)
        assert pool.submit(helpers.square, 3).result(timeout=T) == 9  # the pool goes on
        stats = pool.stats()
        # The call itself completed: its result fails to load in the thread
        # that asks for it (unpickling is never the collector's).
        assert stats.failed == 0 and stats.completed == 2 and stats.replaced == 0
    finally:
        assert _shut_down_in_time(pool)


def test_a_map_with_an_unloadable_result_fails_at_that_batch():
    with subiso.Pool(2) as pool:
        results = pool.map(
            lambda x: loads_by_raising() if x == 50 else x, range(100), chunksize=10, timeout=T
        )
        assert [next(results) for _ in range(50)] == list(range(50))
        with pytest.raises(subiso.NotSendableError, match="could not be unpickled"):
            next(results)
        assert list(pool.map(helpers.square, range(10))) == [i * i for i in range(10)]


# -- no user code on the collector --------------------------------------------------


def test_a_result_is_unpickled_by_the_thread_that_asks_never_by_the_collector():
    with subiso.Pool(1) as pool:
        task = pool.submit(helpers.says_where_it_loads)
        done = threading.Event()
        task.add_done_callback(lambda _: done.set())
        assert done.wait(T)  # ended by the collector (nobody waited)
        results = []
        asker = threading.Thread(target=lambda: results.append(task.result()), name="the-asker")
        asker.start()
        asker.join(T)
        assert results == ["the-asker"]
        assert task.result() == "the-asker"  # decoded once


def test_a_done_callback_that_blocks_holds_up_no_result_of_its_pool():
    with subiso.Pool(2) as pool:
        release = threading.Event()
        blocked = threading.Event()
        ran_on = []

        def blocks(_):
            ran_on.append(threading.current_thread().name)
            blocked.set()
            release.wait(T)

        first = pool.submit(helpers.square, 2)
        first.add_done_callback(blocks)
        try:
            assert blocked.wait(T)
            assert not ran_on[0].startswith("subiso-pool-"), ran_on  # not the collector
            # Results keep coming, also to code that waits on no task itself.
            tasks = [pool.submit(helpers.square, i) for i in range(20)]
            done, _ = concurrent.futures.wait(tasks, timeout=T)
            assert len(done) == 20
        finally:
            release.set()
        assert first.result(timeout=T) == 4


def test_a_system_exit_in_a_task_is_its_exception_and_the_isolate_serves_on():
    with subiso.Pool(1) as pool:
        with pytest.raises(SystemExit) as info:
            pool.submit(sys.exit, 3).result(timeout=T)
        assert info.value.code == 3
        outcomes = []
        for code in (4, 5):
            try:
                outcomes.append(pool.submit(sys.exit, code).result(timeout=T))
            except SystemExit as error:
                outcomes.append(error.code)
        assert outcomes == [4, 5]
        with pytest.raises(SystemExit):  # a map's call, at its place
            list(pool.map(sys.exit, [6]))
        assert pool.submit(helpers.square, 3).result(timeout=T) == 9
        stats = pool.stats()
        assert stats.replaced == 0 and stats.failed == 4, stats


def test_pool_isolates_are_named_after_their_pool():
    with subiso.Pool(2, debug_name="crunch") as named, subiso.Pool(1) as unnamed:
        assert sorted(w.isolate.debug_name for w in named._core.workers.values()) == [
            "crunch-0",
            "crunch-1",
        ]
        (isolate,) = [w.isolate for w in unnamed._core.workers.values()]
        assert isolate.debug_name.startswith("Pool-") and isolate.debug_name.endswith("-0")
        assert isolate.debug_name.count("-") == 2 and isolate.debug_name.split("-")[1].isdigit()


# -- no user callback under the pool's lock, no lock across blocking calls ---------


def test_done_callbacks_that_submit_to_each_others_pools_do_not_deadlock():
    a = subiso.Pool(1, debug_name="a")
    b = subiso.Pool(1, debug_name="b")
    both_in_callbacks = threading.Barrier(2, timeout=T)
    followups = {}
    submitted = {"a": threading.Event(), "b": threading.Event()}
    errors = []

    def submit_to(name, other, x):
        def callback(task):
            try:
                both_in_callbacks.wait()  # each pool's callbacks thread now runs one
                followups[name] = other.submit(helpers.square, x)
            except BaseException as error:
                errors.append(error)
            submitted[name].set()

        return callback

    try:
        with subiso.ReceivePort() as port:
            first_a = a.submit(gated, port.send_port)
            first_b = b.submit(gated, port.send_port)
            first_a.add_done_callback(submit_to("a", b, 2))
            first_b.add_done_callback(submit_to("b", a, 3))
            gates = [port.receive(timeout=T) for _ in range(2)]
            for gate in gates:
                gate.send("go")
            assert first_a.result(timeout=T) == first_b.result(timeout=T) == "go"
            assert submitted["a"].wait(T) and submitted["b"].wait(T), "the pools deadlocked"
            assert not errors
            assert sorted(task.result(timeout=T) for task in followups.values()) == [4, 9]
    finally:
        assert _shut_down_in_time(a) and _shut_down_in_time(b)


@pytest.mark.parametrize("end", ["return", "raise", "die", "cancel"])
def test_a_done_callback_runs_without_the_pools_lock(end):
    pool = subiso.Pool(1)
    probe = _Probe(pool)
    try:
        with subiso.ReceivePort() as port:
            task = pool.submit(gated, port.send_port, end)
            task.add_done_callback(probe)
            gate = port.receive(timeout=T)  # the task runs: the callback waits for its end
            if end == "cancel":
                assert task.cancel()
            else:
                gate.send("go")
            assert probe.called.wait(T)
            assert probe.join() == [True]
            assert pool.submit(helpers.square, 2).result(timeout=T) == 4
    finally:
        assert _shut_down_in_time(pool)


def test_shutdown_cancels_queued_tasks_without_the_pools_lock():
    pool = subiso.Pool(1)
    probe = _Probe(pool)
    try:
        with subiso.ReceivePort() as port:
            running = pool.submit(gated, port.send_port)
            gate = port.receive(timeout=T)
            queued = pool.submit(helpers.square, 3)
            queued.add_done_callback(probe)
            pool.shutdown(wait=False, cancel_futures=True)
            assert queued.cancelled()
            assert probe.join() == [True]
            gate.send("go")
            assert running.result(timeout=T) == "go"
    finally:
        assert _shut_down_in_time(pool)


def test_shutdown_from_a_done_callback_does_not_hang():
    pool = subiso.Pool(1)
    returned = threading.Event()

    def shut_down(task):
        pool.shutdown()  # on the collector's thread: it cannot wait for itself
        returned.set()

    try:
        task = pool.submit(helpers.square, 5)
        task.add_done_callback(shut_down)
        assert task.result(timeout=T) == 25
        assert returned.wait(T)
    finally:
        assert _shut_down_in_time(pool)


def test_the_pool_is_usable_while_a_replacement_isolate_starts(monkeypatch):
    spawn = _pool.spawn_isolate
    armed = False
    entered = threading.Event()
    release = threading.Event()

    def gated_spawn(*args, **kwargs):
        if armed:
            entered.set()
            release.wait(T)
        return spawn(*args, **kwargs)

    monkeypatch.setattr(_pool, "spawn_isolate", gated_spawn)
    pool = subiso.Pool(1)
    probe = _Probe(pool)
    try:
        armed = True
        with pytest.raises(subiso.BrokenIsolateError):
            pool.submit(helpers.die).result(timeout=T)
        assert entered.wait(T)  # the collector is starting the replacement
        probe(None)
        assert probe.join() == [True]
        queued = pool.submit(helpers.square, 7)  # accepted while the isolate starts
        release.set()
        assert queued.result(timeout=T) == 49
        assert pool.stats().replaced == 1
    finally:
        release.set()
        assert _shut_down_in_time(pool)


# -- a pool nobody references --------------------------------------------------------


def _forgotten_pool():
    pool = subiso.Pool(1, debug_name="forgotten")
    task = pool.submit(helpers.square, 3)
    (collector,) = [t for t in threading.enumerate() if t.name == "subiso-pool-forgotten"]
    return weakref.ref(pool), task, collector


def test_a_pool_nobody_references_is_collected_and_its_isolates_stop():
    pool_ref, task, collector = _forgotten_pool()
    gc.collect()
    assert pool_ref() is None
    assert task.result(timeout=T) == 9  # work taken before still completes
    collector.join(T)
    assert not collector.is_alive()
    assert _isolate.settle(T)


# -- the collector's safety net ------------------------------------------------------


class _BusyCollector:
    """Keeps a pool's collector from the results port until ``release()``
    (it stops as it comes to take them), so that only a thread that waits
    can take the pool's results."""

    def __init__(self, pool, monkeypatch):
        self.entered = threading.Event()
        self.released = threading.Event()
        collector = pool._core.thread
        take_all = _pool._Core.take_all
        first: list[subiso.Task[int]] = []

        def held(core):
            take_all(core)
            if threading.current_thread() is not collector or self.released.is_set():
                return
            if first and first[0].done():  # it took the first task's result: now it stays
                self.entered.set()
                self.released.wait(T)

        monkeypatch.setattr(_pool._Core, "take_all", held)
        first.append(pool.submit(helpers.square, 0))  # nobody waits: the collector takes it
        assert self.entered.wait(T)

    def release(self):
        self.released.set()


def test_a_waiting_thread_takes_results_while_the_collector_is_away(monkeypatch):
    # A thread that waits for a task takes the results itself: its own, and
    # those other threads wait for.
    with subiso.Pool(1) as pool:
        busy = _BusyCollector(pool, monkeypatch)
        try:
            second = pool.submit(helpers.square, 2)
            others = []
            other = threading.Thread(
                target=lambda: others.append(pool.submit(helpers.square, 4).result(timeout=T))
            )
            other.start()
            assert [pool.submit(helpers.square, 3).result(timeout=T)] == [9]
            assert second.result(timeout=T) == 4
            other.join(T)
            assert others == [16]
            assert pool.stats().completed == 4
        finally:
            busy.release()


@pytest.mark.parametrize("taker", ["collector", "waiting thread"])
def test_a_fault_in_taking_results_fails_every_waiter_and_breaks_the_pool(
    taker, monkeypatch, caplog
):
    # Two isolates are kept busy; the first result taken meets the fault. With
    # a busy collector a third isolate runs the queued tasks (their results
    # wait for the thread that waits); else they stay queued.
    pool = subiso.Pool(2 if taker == "collector" else 3, debug_name="faulty")
    (collector,) = [t for t in threading.enumerate() if t.name == "subiso-pool-faulty"]
    probe = _Probe(pool)
    busy = None
    try:
        with subiso.ReceivePort() as port:
            running = [pool.submit(gated, port.send_port) for _ in range(2)]
            gates = [port.receive(timeout=T) for _ in range(2)]  # two isolates are busy
            if taker == "waiting thread":
                busy = _BusyCollector(pool, monkeypatch)

            def act(self, item, outcomes):
                raise RuntimeError("injected fault")

            monkeypatch.setattr(_pool._Core, "_act", act)
            with caplog.at_level(logging.ERROR, logger="subiso"):
                queued = [pool.submit(helpers.square, i) for i in range(3)]
                queued[0].add_done_callback(probe)
                gates[0].send("go")  # (a word to a killed isolate is dropped)
                if taker == "collector":
                    assert probe.called.wait(T)  # failed by the collector: nobody waited
                for task in running + queued:
                    with pytest.raises(subiso.BrokenServiceError, match="pool collector") as info:
                        task.result(timeout=T)
                    assert info.value.service == "pool collector"
                    assert isinstance(info.value.__cause__, RuntimeError)
                if busy is not None:
                    busy.release()
                collector.join(T)
                assert not collector.is_alive()
            with pytest.raises(subiso.BrokenServiceError, match="injected fault") as info:
                pool.submit(helpers.square, 1)
            assert isinstance(info.value.__cause__, RuntimeError)
            assert probe.join() == [True]
    finally:
        if busy is not None:
            busy.release()
        assert _shut_down_in_time(pool)
    (record,) = [r for r in caplog.records if r.name == "subiso" and r.levelno == logging.ERROR]
    assert isinstance(record.exc_info[1], RuntimeError)
    assert record.threadName == (collector.name if taker == "collector" else "MainThread")


def test_a_thread_waiting_for_a_task_hears_another_thread_cancel_it(monkeypatch):
    # The waiting thread takes results itself and parks on the results port;
    # cancelling a queued task sends nothing there, yet must wake it.
    with subiso.Pool(1) as pool, subiso.ReceivePort() as port:
        running = pool.submit(gated, port.send_port)
        gate = port.receive(timeout=T)
        queued = pool.submit(helpers.square, 3)
        parked = threading.Event()
        wait_readable = _backend.wait_readable

        def watched(fds, timeout):
            if pool._core.leader_bell[0] in fds:
                parked.set()  # the waiting thread parks (after its last look)
            return wait_readable(fds, timeout)

        monkeypatch.setattr(_backend, "wait_readable", watched)

        def cancel_once_parked():
            assert parked.wait(T)
            queued.cancel()

        canceller = threading.Thread(target=cancel_once_parked)
        canceller.start()
        try:
            with pytest.raises(concurrent.futures.CancelledError):
                queued.result(timeout=T)
        finally:
            canceller.join(T)
        gate.send("go")
        assert running.result(timeout=T) == "go"


def test_a_ctrl_c_while_the_main_thread_takes_results_loses_none(ctrl_c, monkeypatch):
    # The main thread waits and takes results itself (the collector is
    # busy); Ctrl-C lands while it acts on one: it is raised once that result
    # is handed over, and the task is not lost.
    with subiso.Pool(1) as pool:
        busy = _BusyCollector(pool, monkeypatch)
        act = _pool._Core._act

        def interrupted(self, item, outcomes):
            monkeypatch.setattr(_pool._Core, "_act", act)  # once
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            act(self, item, outcomes)  # (an interrupt not held back lands by here)

        try:
            task = pool.submit(helpers.square, 3)
            monkeypatch.setattr(_pool._Core, "_act", interrupted)
            with pytest.raises(KeyboardInterrupt):
                task.result(timeout=T)
            assert task.result(timeout=0) == 9
        finally:
            busy.release()


def test_wait_sees_a_running_task_that_was_cancelled():
    with subiso.Pool(1) as pool, subiso.ReceivePort() as port:
        task = pool.submit(gated, port.send_port)
        port.receive(timeout=T)  # it runs
        assert task.cancel()
        done, not_done = concurrent.futures.wait([task], timeout=T)
        assert done == {task} and not not_done
        assert [*concurrent.futures.as_completed([task], timeout=T)] == [task]


def test_wait_sees_queued_tasks_that_shutdown_cancelled():
    with subiso.Pool(1) as pool, subiso.ReceivePort() as port:
        running = pool.submit(gated, port.send_port)
        gate = port.receive(timeout=T)
        queued = [pool.submit(helpers.square, i) for i in range(3)]
        assert queued[0].cancel()  # by its owner first: counted once
        pool.shutdown(wait=False, cancel_futures=True)
        done, not_done = concurrent.futures.wait(queued, timeout=T)
        assert done == set(queued) and not not_done
        assert pool.stats().cancelled == 3
        gate.send("go")
        assert running.result(timeout=T) == "go"


def test_a_replaced_worker_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="subiso"), subiso.Pool(1, debug_name="p") as pool:
        with pytest.raises(subiso.BrokenIsolateError):
            pool.submit(helpers.die).result(timeout=T)
        assert pool.submit(helpers.square, 3).result(timeout=T) == 9
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "subiso"]
    assert said == [
        (logging.WARNING, "the pool isolate p-0 died running a task; a new one replaces it")
    ]


def test_a_worker_killed_to_cancel_its_task_is_logged_as_information(caplog):
    port = subiso.ReceivePort()
    try:
        with caplog.at_level(logging.INFO, logger="subiso"), subiso.Pool(1, debug_name="p") as pool:
            task = pool.submit(helpers.spin_forever, port.send_port)
            assert port.receive(timeout=T) == "spinning"
            assert task.cancel()
            assert pool.submit(helpers.square, 3).result(timeout=T) == 9
    finally:
        port.close()
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "subiso"]
    assert said == [
        (logging.INFO, "the pool isolate p-0 was killed to cancel its task; a new one replaces it")
    ]


def test_a_ctrl_c_in_a_pool_block_stops_its_work(ctrl_c):
    """Ctrl-C stops a ProcessPoolExecutor's workers (they get the signal
    too); a Pool's block stops its tasks the same way instead of waiting
    for work that never ends."""
    with subiso.ReceivePort() as port:
        with pytest.raises(KeyboardInterrupt):
            with subiso.Pool(2) as pool:
                running = pool.submit(helpers.spin_forever, port.send_port)
                others = [pool.submit(helpers.spin_forever, port.send_port) for _ in range(3)]
                assert port.receive(timeout=T) == "spinning"
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                running.result(timeout=T)
    assert running.cancelled()
    assert all(task.cancelled() for task in others)
    assert pool.stats().cancelled == 4


@pytest.mark.parametrize("failing", [0, 2])
def test_a_worker_that_cannot_start_leaves_no_isolate_of_the_pool(monkeypatch, failing):
    """The workers start side by side (one on the constructor's thread, the
    others on threads of their own): one that fails, wherever it starts,
    fails the constructor once the others started, and they are ended."""
    spawn = _pool.spawn_isolate
    calls = []
    lock = threading.Lock()

    def spawn_or_fail(*args, **kwargs):
        with lock:
            calls.append(None)
            mine = len(calls) - 1
        if mine == failing:
            raise subiso.IsolateSpawnError("no isolate for this one")
        return spawn(*args, **kwargs)

    monkeypatch.setattr(_pool, "spawn_isolate", spawn_or_fail)
    with pytest.raises(subiso.IsolateSpawnError, match="no isolate for this one"):
        subiso.Pool(3)
    assert len(calls) == 3
    assert not [t for t in threading.enumerate() if t.name.endswith("-start")]
    # (the suite's check after each test finds no isolate left)
