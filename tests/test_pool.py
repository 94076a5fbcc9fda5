"""Pool: executor API, priorities, cancel, death and replacement."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import queue
import threading

import helpers
import pytest

import subiso

T = 30


def test_submit_map_and_executor_api():
    with subiso.Pool(2, debug_name="p") as pool:
        assert isinstance(pool, concurrent.futures.Executor)
        task = pool.submit(helpers.add, 1, 2, c=3)
        assert isinstance(task, concurrent.futures.Future)
        assert task.result(timeout=T) == 6
        assert list(pool.map(helpers.square, range(50))) == [i * i for i in range(50)]
        assert list(pool.map(helpers.add, range(20), range(20), chunksize=7)) == [
            2 * i for i in range(20)
        ]
        assert pool.submit(lambda: "closure ok").result(timeout=T) == "closure ok"
        stats = pool.stats()
        assert stats.size == 2 and stats.completed >= 3 and stats.failed == 0 and stats.queued == 0


def test_stats_count_calls_each_item_of_a_map_included():
    with subiso.Pool(2) as pool:
        assert list(pool.map(helpers.square, range(1000))) == [i * i for i in range(1000)]
        assert list(pool.map(helpers.add, range(10), range(10), chunksize=3)) == [
            2 * i for i in range(10)
        ]
        assert pool.submit(helpers.square, 3).result(timeout=T) == 9
        assert (pool.stats().completed, pool.stats().failed) == (1011, 0)
        # One batch of four calls, the fourth raises: three completed, one failed.
        with pytest.raises(helpers.Boom):
            list(pool.map(helpers.boom_on_three, range(4), chunksize=4))
        stats = pool.stats()
        assert (stats.completed, stats.failed, stats.cancelled) == (1014, 1, 0)


def test_a_task_sees_its_callable_as_it_is_when_submitted():
    account = helpers.Account()
    values = [1]
    sum_values = functools.partial(helpers.total, values)
    offset = 1

    def plus_offset(x):
        return x + offset

    with subiso.Pool(1) as pool:
        assert pool.submit(account.balance).result(T) == 0
        assert pool.submit(sum_values).result(T) == 1
        assert pool.submit(plus_offset, 1).result(T) == 2
        account.n = 5
        values.append(10)
        offset = 100
        assert pool.submit(account.balance).result(T) == 5
        assert pool.submit(sum_values).result(T) == 11
        assert pool.submit(plus_offset, 1).result(T) == 101
        # Each task gets its own copy, as with processes: what a task changed
        # in it is not seen by the next one.
        assert [pool.submit(account.bump).result(T) for _ in range(3)] == [6, 6, 6]
        assert account.n == 5


def test_a_pool_keeps_no_callable_alive():
    import gc
    import weakref

    with subiso.Pool(1) as pool:
        account = helpers.Account()
        gone = weakref.ref(account)
        assert pool.submit(account.balance).result(T) == 0
        assert pool.submit(functools.partial(helpers.total, [account.n])).result(T) == 0
        del account
        gc.collect()
        assert gone() is None, "the pool kept the task's callable alive"


def test_a_done_task_leaves_nothing_of_it_in_the_pool():
    import gc
    import weakref

    with subiso.Pool(1) as pool:
        argument = helpers.Account()
        task = pool.submit(helpers.identity, argument)
        result = task.result(T)
        assert isinstance(result, helpers.Account) and result is not argument
        refs = [weakref.ref(each) for each in (argument, task, result)]
        del argument, task, result
        gc.collect()
        assert [ref() for ref in refs] == [None, None, None]


def test_errors_come_back_as_themselves():
    with subiso.Pool(1) as pool:
        with pytest.raises(helpers.Boom, match="x") as info:
            pool.submit(helpers.boom, "x").result(timeout=T)
        assert isinstance(info.value.__cause__, subiso.RemoteError)
        assert pool.submit(helpers.square, 3).result(timeout=T) == 9
        assert pool.stats().failed == 1


def test_unsendable_argument_leaves_the_pool_usable():

    with subiso.Pool(1) as pool:
        with pytest.raises(subiso.NotSendableError, match="lock"):
            pool.submit(helpers.square, threading.Lock())
        assert pool.submit(helpers.square, 4).result(timeout=T) == 16


def test_module_state_persists_on_an_isolate_and_initializer_runs():
    with subiso.Pool(1, initializer=helpers.init_state, initargs=("ready",)) as pool:
        assert pool.submit(helpers.read_init).result(timeout=T) == "ready"
        calls = [pool.submit(helpers.count_calls).result(timeout=T) for _ in range(3)]
        assert calls == [1, 2, 3]


def test_a_done_callback_may_wait_for_another_task_of_its_pool():
    # Nobody waits for the first task: the collector completes it, and its
    # callback (on the task callbacks thread, never the collector) waits for
    # a second one.
    with subiso.Pool(2) as pool:
        later = queue.Queue()
        first = pool.submit(helpers.square, 2)
        first.add_done_callback(lambda _: later.put(pool.submit(helpers.square, 3).result(T)))
        assert later.get(timeout=T) == 9


def test_a_done_callback_on_the_collector_may_wait_for_a_replacement_isolate():
    # The isolate retires after the first task: the second needs a replacement,
    # which the collector starts while the done-callback waits.
    with subiso.Pool(1, max_tasks_per_isolate=1) as pool:
        later = queue.Queue()
        first = pool.submit(helpers.square, 2)
        first.add_done_callback(lambda _: later.put(pool.submit(helpers.square, 3).result(T)))
        assert later.get(timeout=T) == 9
        assert pool.submit(helpers.square, 4).result(timeout=T) == 16


def test_results_that_arrive_as_the_waiting_thread_leaves_reach_the_collector():
    # While a thread waits, it takes the results itself and the collector is
    # not woken for them; when it leaves, the collector is again. A result
    # landing just then must still complete its task, here seen only by a
    # done-callback. Many rounds, so the second result lands before, while
    # and after the first one's waiter leaves.
    with subiso.Pool(2) as pool:
        for i in range(300):
            heard = threading.Event()
            waited = pool.submit(helpers.square, i)
            other = pool.submit(helpers.slow_square, i % 3)
            other.add_done_callback(lambda _, heard=heard: heard.set())
            assert waited.result(timeout=T) == i * i
            assert heard.wait(T), f"round {i}: a result nobody waited for was never taken"


def test_a_ctrl_c_as_a_waiting_thread_starts_to_lead_leaves_no_leader_behind(monkeypatch):
    # A Ctrl-C landing just after a waiting thread became the one that takes
    # results (before its wait began) left it the leader for good: nobody took
    # results any more, and every later wait timed out.
    with subiso.Pool(1) as pool:
        core = pool._core
        unwatch = type(core)._unwatch
        armed = [True]

        def then_interrupted(self):
            unwatch(self)
            if armed and threading.current_thread() is threading.main_thread():
                armed.pop()
                raise KeyboardInterrupt

        monkeypatch.setattr(type(core), "_unwatch", then_interrupted)
        task = pool.submit(helpers.slow_square, 3)
        with pytest.raises(KeyboardInterrupt):
            task.result(timeout=T)
        assert not armed
        assert core.leader is None
        assert task.result(timeout=T) == 9
        assert pool.submit(helpers.square, 4).result(timeout=T) == 16


def test_max_tasks_per_isolate_recycles():
    with subiso.Pool(1, max_tasks_per_isolate=2) as pool:
        calls = [pool.submit(helpers.count_calls).result(timeout=T) for _ in range(5)]
        assert calls == [1, 2, 1, 2, 1]


def test_failing_initializer_breaks_the_pool():
    pool = subiso.Pool(1, initializer=helpers.failing_init)
    with pytest.raises(subiso.BrokenIsolateError, match="init failed"):
        pool.submit(helpers.square, 2).result(timeout=T)
    pool.shutdown()


def _gate(name):
    port = subiso.ReceivePort()
    assert subiso.IsolateNameServer.register_port_with_name(port.send_port, name)
    return port


def test_priority_order_with_a_gated_single_worker():
    gate_port = _gate("pool-gate")
    try:
        with subiso.Pool(1) as pool, subiso.ReceivePort() as log:
            blocker = pool.submit(helpers.wait_on_gate, "pool-gate")
            release = gate_port.receive(timeout=T)  # the worker is now busy
            order = [
                ("low", subiso.Priority.LOW),
                ("regular-1", subiso.Priority.REGULAR),
                ("immediately", subiso.Priority.IMMEDIATELY),
                ("regular-2", subiso.Priority.REGULAR),
                ("high", subiso.Priority.HIGH),
            ]
            tasks = [
                pool.execute(helpers.record, ((log.send_port, label),), priority=priority)
                for label, priority in order
            ]
            assert pool.stats().queued == 5 and pool.stats().busy == 1
            release.send("go")
            assert blocker.result(timeout=T) == "released"
            for task in tasks:
                task.result(timeout=T)
            seen = [log.receive(timeout=T) for _ in tasks]
            assert seen == ["immediately", "high", "regular-1", "regular-2", "low"]
    finally:
        subiso.IsolateNameServer.remove_port_name_mapping("pool-gate")
        gate_port.close()


def test_cancel_queued_and_running():
    with subiso.Pool(1) as pool, subiso.ReceivePort() as port:
        running = pool.submit(helpers.spin_forever, port.send_port)
        assert port.receive(timeout=T) == "spinning"
        queued = pool.submit(helpers.square, 5)
        assert queued.cancel() and queued.cancelled()
        assert running.cancel()
        assert running.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            running.result(timeout=T)
        assert pool.submit(helpers.square, 6).result(timeout=T) == 36  # the pool goes on
        stats = pool.stats()
        assert stats.cancelled == 2 and stats.replaced == 1


def test_dead_isolate_fails_its_task_and_is_replaced():
    with subiso.Pool(2) as pool:
        with pytest.raises(subiso.BrokenIsolateError):
            pool.submit(helpers.die).result(timeout=T)
        assert [pool.submit(helpers.square, i).result(timeout=T) for i in range(4)] == [
            0,
            1,
            4,
            9,
        ]
        assert pool.stats().replaced == 1


def test_asyncio_use():
    async def main():
        with subiso.Pool(2) as pool:
            task = pool.submit(helpers.square, 7)
            first = await task
            second = await pool.run_async(helpers.add, 1, b=1)
            gathered = await asyncio.gather(*(pool.run_async(helpers.square, i) for i in range(10)))
            return first, second, gathered

    assert asyncio.run(main()) == (49, 2, [i * i for i in range(10)])


def test_shutdown_cancel_futures_and_refuse_new_work():
    gate_port = _gate("pool-gate-2")
    try:
        pool = subiso.Pool(1)
        blocker = pool.submit(helpers.wait_on_gate, "pool-gate-2")
        release = gate_port.receive(timeout=T)
        queued = [pool.submit(helpers.square, i) for i in range(3)]
        pool.shutdown(wait=False, cancel_futures=True)  # while the blocker still runs
        release.send("go")
        pool.shutdown(wait=True)
        assert blocker.result(timeout=T) == "released"
        assert all(task.cancelled() for task in queued)
        with pytest.raises(RuntimeError):
            pool.submit(helpers.square, 1)
    finally:
        subiso.IsolateNameServer.remove_port_name_mapping("pool-gate-2")
        gate_port.close()


def test_shutdown_before_the_isolates_are_ready():
    for _ in range(5):
        with subiso.Pool(2):
            pass  # each isolate is told to stop once it says it is ready


def test_legacy_pool():
    with subiso.Pool(1, isolation="legacy") as pool:
        assert pool.submit(helpers.square, 3).result(timeout=T) == 9


def test_map_keeps_each_calls_exception_in_place():
    with subiso.Pool(2) as pool:
        results = pool.map(helpers.boom_on_three, range(200))
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(helpers.Boom, match="3"):
            next(results)


def _counting(pulled):
    """0, 1, 2, ... forever, appending each number to ``pulled`` as it is read."""
    for i in itertools.count():
        pulled.append(i)
        yield i


def test_map_buffersize_reads_an_endless_input_lazily():
    pulled = []
    with subiso.Pool(2) as pool:
        results = pool.map(helpers.square, _counting(pulled), buffersize=3)
        assert pulled == [0, 1, 2]  # submitted at the call, nothing read ahead
        for i in range(10):
            assert next(results) == i * i
            assert len(pulled) == 3 + i + 1  # one more call each time a result is asked for
        results.close()
        pairs = pool.map(helpers.add, itertools.count(), itertools.count(), buffersize=2)
        assert [next(pairs) for _ in range(3)] == [0, 2, 4]
        pairs.close()


def test_map_buffersize_counts_batches_of_chunksize():
    pulled = []
    with subiso.Pool(2) as pool:
        results = pool.map(helpers.square, _counting(pulled), chunksize=5, buffersize=2)
        assert len(pulled) == 10
        assert [next(results) for _ in range(5)] == [i * i for i in range(5)]
        assert len(pulled) == 15
        assert next(results) == 25  # the next batch's results: one more batch is read
        assert len(pulled) == 20
        results.close()


def test_map_buffersize_on_finite_and_empty_input():
    with subiso.Pool(2) as pool:
        for buffersize in (1, 2, 4, 8):
            squares = pool.map(helpers.square, range(4), buffersize=buffersize)
            sums = pool.map(helpers.add, range(4), range(4), buffersize=buffersize)
            assert list(squares) == [0, 1, 4, 9] and list(sums) == [0, 2, 4, 6]
        chunked = pool.map(helpers.square, range(7), chunksize=3, buffersize=1)
        assert list(chunked) == [i * i for i in range(7)]
        assert list(pool.map(helpers.square, [], buffersize=2)) == []
        assert list(pool.map(helpers.square, buffersize=2)) == []


def test_map_refuses_a_bad_buffersize_at_the_call():
    pulled = []
    with subiso.Pool(1) as pool:
        for buffersize in ("foo", 2.0):
            with pytest.raises(TypeError, match=r"^buffersize must be an integer or None$"):
                pool.map(helpers.square, _counting(pulled), buffersize=buffersize)
        for buffersize in (0, -1):
            with pytest.raises(ValueError, match=r"^buffersize must be None or > 0$"):
                pool.map(helpers.square, _counting(pulled), buffersize=buffersize)
        assert pulled == []
        stats = pool.stats()
        assert stats.queued == stats.busy == stats.completed == 0


@pytest.mark.parametrize("chunksize", [1, 2])
def test_map_buffersize_keeps_each_calls_exception_in_place(chunksize):
    with subiso.Pool(2) as pool:
        results = pool.map(
            helpers.boom_on_three, itertools.count(), chunksize=chunksize, buffersize=2
        )
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(helpers.Boom, match="3"):
            next(results)
        assert next(results, "ended") == "ended"
        assert pool.submit(helpers.square, 3).result(timeout=T) == 9


@pytest.mark.parametrize("how", ["close", "drop"])
def test_map_buffersize_cancels_what_it_did_not_yield(how):
    def first_then_spin(port):
        return "first" if port is None else helpers.spin_forever(port)

    with subiso.Pool(2) as pool, subiso.ReceivePort() as port:
        inputs = itertools.chain([None], itertools.repeat(port.send_port))
        results = pool.map(first_then_spin, inputs, buffersize=3)
        assert next(results) == "first"  # and a fourth call was submitted
        assert [port.receive(timeout=T) for _ in range(2)] == ["spinning", "spinning"]
        if how == "close":
            results.close()
        else:
            del results
        stats = pool.stats()  # two running calls (their isolates killed), one queued
        assert stats.cancelled == 3 and stats.busy == 0
        assert pool.submit(helpers.square, 6).result(timeout=T) == 36
        assert pool.stats().replaced >= 1


@pytest.mark.parametrize("buffersize", [None, 2])
@pytest.mark.parametrize("how", ["close", "drop"])
def test_map_cancels_its_calls_when_dropped_before_the_first_result(how, buffersize):
    # Also what a Ctrl-C does that lands between map() and the first next():
    # the iterator is dropped before it ever ran.
    with subiso.Pool(1) as pool, subiso.ReceivePort() as port:
        results = pool.map(helpers.announce_then_spin, [port.send_port] * 2, buffersize=buffersize)
        assert port.receive(timeout=T) == "started"
        if how == "close":
            results.close()
        else:
            del results
        stats = pool.stats()  # one running call (its isolate killed), one queued
        assert stats.cancelled == 2 and stats.busy == 0
        assert pool.submit(helpers.square, 6).result(timeout=T) == 36


def test_a_ctrl_c_that_lands_after_a_worker_has_the_task_cancels_it(monkeypatch):
    # The worker may take the task before the submit returns: Ctrl-C lands
    # in the submit, and nobody has the task to wait on or cancel. Unless
    # the submit cancels it, it runs on, and shutdown waits for it forever.
    with subiso.Pool(1) as pool, subiso.ReceivePort() as port:
        assert pool.submit(helpers.square, 2).result(timeout=T) == 4  # the worker is ready
        helpers.interrupt_after_next_send(monkeypatch)
        with pytest.raises(KeyboardInterrupt):
            pool.submit(helpers.announce_then_spin, port.send_port)
        monkeypatch.undo()
        assert pool.stats().cancelled == 1
        assert pool.submit(helpers.square, 6).result(timeout=T) == 36


def test_map_buffersize_timeout_counts_from_the_call():
    with subiso.Pool(1) as pool, subiso.ReceivePort() as port:
        results = pool.map(
            helpers.spin_forever, itertools.repeat(port.send_port), timeout=0, buffersize=2
        )
        with pytest.raises(TimeoutError):
            next(results)
        assert pool.stats().cancelled == 3  # the late call and the two behind it
        assert pool.submit(helpers.square, 2).result(timeout=T) == 4


def test_transferable_buffers_travel_in_pool_tasks():
    # API.md: a TransferableBuffer may be sent anywhere, pool arguments included.
    import zlib

    data = bytes(range(256)) * 4096
    with subiso.Pool(1) as pool:
        assert pool.submit(helpers.stress_buffer_digest, subiso.TransferableBuffer(data)).result(
            T
        ) == (len(data), zlib.crc32(data))
        digests = pool.map(
            helpers.stress_buffer_digest, [subiso.TransferableBuffer(data[:n]) for n in (1, 10)]
        )
        assert list(digests) == [(1, zlib.crc32(data[:1])), (10, zlib.crc32(data[:10]))]
        buffer = subiso.TransferableBuffer(b"once")
        pool.submit(helpers.stress_buffer_digest, buffer).result(T)
        with pytest.raises(ValueError, match="already"):  # it moved: this handle is spent
            buffer.materialize()


def test_a_kill_between_taking_a_task_and_loading_its_buffer_leaks_no_fd():
    import service_helpers

    from subiso import _hub

    before = helpers.open_fds("memfd:subiso-transfer")
    with subiso.Pool(1, initializer=service_helpers.kill_while_a_buffer_arrives) as pool:
        buffer = subiso.TransferableBuffer(b"x" * (1 << 20))
        with pytest.raises(subiso.BrokenIsolateError):
            pool.submit(helpers.stress_buffer_digest, buffer).result(T)
    assert _hub.settle(T)
    assert helpers.open_fds("memfd:subiso-transfer") == before, "its memfd was left open"
