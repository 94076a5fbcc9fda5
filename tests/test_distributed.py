"""ClusterPool on a real LocalCluster: worker processes on loopback, not mocks."""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import logging
import os
import subprocess
import sys
import threading

import helpers
import pytest

distributed = pytest.importorskip("distributed")

import subiso  # noqa: E402
from subiso.distributed import ClusterPool  # noqa: E402

T = 60


@pytest.fixture(autouse=True)
def no_leaks():  # Dask keeps its own threads in this process; the cluster is module-wide
    yield


@contextlib.contextmanager
def _local_client(settings):
    """A client of a one-worker LocalCluster on loopback, with these Dask settings."""
    import dask

    with (
        dask.config.set(settings),
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=2,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",  # any free port: 8787 may be taken
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def client():
    # Dask's defaults, its statistical profiler included; a task whose
    # worker dies is not retried (test_a_dead_worker_fails_the_task_clearly).
    with _local_client({"distributed.scheduler.allowed-failures": 0}) as client:
        yield client


@pytest.fixture(scope="module")
def pool(client):
    with ClusterPool(client, isolates_per_worker=2) as pool:
        yield pool


def test_results_and_where_tasks_ran(pool):
    assert pool.submit(helpers.square, 7).result(timeout=T) == 49
    assert list(pool.map(helpers.square, range(20), chunksize=4)) == [i * i for i in range(20)]
    assert pool.submit(lambda x: x + 1, 1).result(timeout=T) == 2  # closures travel
    pid, interpreter = pool.submit(helpers.where).result(timeout=T)
    assert pid != os.getpid(), "ran in this process, not a Dask worker"
    assert interpreter != 0, "ran in the main interpreter, not an isolate"


def test_a_task_whose_module_imports_dask_distributed(pool):
    # dask.distributed imports psutil, whose C extension isolates refuse:
    # the task travels by value, and only what it uses must load.
    import imports_dask

    assert pool.submit(imports_dask.square, 7).result(timeout=T) == 49
    assert list(pool.map(imports_dask.square, range(4))) == [0, 1, 4, 9]


def test_map_buffersize_reads_an_endless_input_lazily(pool):
    pulled = []

    def counting():
        for i in itertools.count():
            pulled.append(i)
            yield i

    results = pool.map(helpers.square, counting(), buffersize=2)
    assert pulled == [0, 1]
    assert [next(results) for _ in range(5)] == [0, 1, 4, 9, 16]
    assert len(pulled) == 7
    results.close()
    chunked = pool.map(helpers.square, range(10), chunksize=3, buffersize=2)
    assert list(chunked) == [i * i for i in range(10)]
    with pytest.raises(ValueError, match=r"^buffersize must be None or > 0$"):
        pool.map(helpers.square, range(3), buffersize=0)


def test_errors_come_back_as_themselves(pool):
    with pytest.raises(helpers.Boom):
        pool.submit(helpers.boom, "cluster").result(timeout=T)


def test_stats_sum_the_workers(pool):
    pool.submit(helpers.square, 1).result(timeout=T)
    stats = pool.stats()
    assert isinstance(stats, subiso.PoolStats)
    assert stats.size == 2 and stats.completed >= 1


def test_async(pool):
    import asyncio

    async def main():
        return await pool.run_async(helpers.square, 5)

    assert asyncio.run(main()) == 25


def test_priority_maps_onto_dask(pool):
    task = pool.execute(helpers.square, (3,), priority=subiso.Priority.IMMEDIATELY)
    assert task.result(timeout=T) == 9
    assert task._dask is not None


def _register_event_setter(dask_worker=None):
    # in the worker process: lets its isolates set a Dask event through subiso.host
    client = dask_worker.client

    def set_event(name):
        distributed.Event(name, client=client).set()

    try:
        subiso.host.register("dask_event_set", set_event)
    except ValueError:
        pass


def test_cancel_a_running_task_kills_its_isolate(pool, client):
    client.run(_register_event_setter)
    event = distributed.Event("subiso-test-spinning", client=client)
    task = pool.submit(helpers.spin_after_event, "subiso-test-spinning")
    assert event.wait(T), "the task never started"
    assert task.cancel() and task.cancelled()
    assert pool.submit(helpers.square, 4).result(timeout=T) == 16  # the worker's pool goes on
    assert pool.stats().replaced >= 1


class _Said(logging.Handler):
    def __init__(self):
        super().__init__()
        self.said = []

    def emit(self, record):
        self.said.append(record.getMessage())


def _listen_to_subiso(dask_worker=None):
    logging.getLogger("subiso").addHandler(_Said())


def _what_subiso_said(dask_worker=None):
    return [
        line
        for h in logging.getLogger("subiso").handlers
        if isinstance(h, _Said)
        for line in h.said
    ]


def _sampling(dask_worker=None):
    return {name in dask_worker.periodic_callbacks for name in ("profile", "profile-cycle")}


def test_dask_profiler_is_switched_off_only_where_it_crashes():
    from subiso import _backend

    settings = {
        "distributed.worker.profile.enabled": True,  # Dask's default
        "distributed.worker.profile.interval": "1ms",  # sample often
        "distributed.scheduler.allowed-failures": 0,
    }
    with _local_client(settings) as client:
        client.run(_listen_to_subiso)
        for _ in range(2):  # a second pool on the worker says nothing more
            with ClusterPool(client, isolates_per_worker=2) as pool:
                # Isolates compute while the sampler (if on) walks every thread's frames.
                n = 300_000
                assert list(pool.map(helpers.busy_sum, [n] * 16)) == [n * (n - 1) // 2] * 16
        (said,) = client.run(_what_subiso_said).values()
        (sampling,) = client.run(_sampling).values()
    if _backend.CURRENT_FRAMES_CRASHES:  # the workers run this same Python
        assert sampling == {False}
        assert len(said) == 1
        assert said[0].startswith("Dask's statistical profiler is switched off in worker")
    else:
        assert sampling == {True}
        assert said == []


_ISOLATES_BESIDE_A_LOCAL_CLUSTER = """
import logging, sys
import dask, distributed, subiso
from subiso.distributed import ClusterPool
sys.path.insert(0, sys.argv[1])
import helpers

logging.basicConfig(format="%(name)s: %(message)s")
dask.config.set({"distributed.worker.profile.interval": "1ms"})
if __name__ == "__main__":
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, host="127.0.0.1",
            dashboard_address=":0", worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
        ClusterPool(client, isolates_per_worker=1) as pool,
    ):
        assert pool.submit(helpers.square, 3).result(timeout=60) == 9
        # The scheduler and the nanny sample this process, where isolates compute.
        with subiso.Pool(2) as local:
            n = 200_000
            assert list(local.map(helpers.busy_sum, [n] * 64)) == [n * (n - 1) // 2] * 64
    print("done")
"""


def test_isolates_beside_a_local_cluster_survive_its_sampler(tmp_path):
    from subiso import _backend

    script = tmp_path / "beside.py"
    script.write_text(_ISOLATES_BESIDE_A_LOCAL_CLUSTER)
    ran = subprocess.run(
        [sys.executable, str(script), os.path.dirname(helpers.__file__)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout == "done\n"
    said_here = "switched off in this process" in ran.stderr
    assert said_here == _backend.CURRENT_FRAMES_CRASHES, ran.stderr[-3000:]


def _subiso_plugins(dask_worker=None):
    return sorted(name for name in dask_worker.plugins if name.startswith("subiso"))


def test_two_pools_on_one_client_each_get_their_own_settings(client, pool):
    before = client.run(_subiso_plugins)
    with (
        ClusterPool(client, isolates_per_worker=1) as one,
        ClusterPool(client, isolates_per_worker=3) as three,
    ):
        assert one.submit(helpers.square, 2).result(timeout=T) == 4
        assert three.submit(helpers.square, 3).result(timeout=T) == 9
        assert (one.stats().size, three.stats().size, pool.stats().size) == (1, 3, 2)
    assert client.run(_subiso_plugins) == before  # their plugins left with them
    assert pool.submit(helpers.square, 5).result(timeout=T) == 25


def test_stats_count_each_call_of_a_map(client):
    with ClusterPool(client, isolates_per_worker=1) as pool:
        assert list(pool.map(helpers.square, range(100), chunksize=8)) == [
            i * i for i in range(100)
        ]
        assert pool.submit(helpers.square, 2).result(timeout=T) == 4
        assert pool.stats().completed == 101


def test_shutdown_without_waiting_leaves_once_the_last_task_is_done(client):
    before = client.run(_subiso_plugins)
    pool = ClusterPool(client, isolates_per_worker=1)
    tasks = [pool.submit(helpers.busy_sum, 200_000) for _ in range(3)]
    pool.shutdown(wait=False)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(helpers.square, 1)
    assert [t.result(timeout=T) for t in tasks] == [200_000 * 199_999 // 2] * 3
    assert pool._left.wait(T)  # Dask's callback thread took the plugin away
    assert client.run(_subiso_plugins) == before


def _start_spinning(client, pool, name):
    client.run(_register_event_setter)
    event = distributed.Event(name, client=client)
    task = pool.submit(helpers.spin_after_event, name)
    assert event.wait(T), "the task never started"
    return task


def test_ctrl_c_during_shutdown_is_not_swallowed(client, monkeypatch):
    before = client.run(_subiso_plugins)
    pool = ClusterPool(client, isolates_per_worker=1)
    task = _start_spinning(client, pool, "subiso-test-spinning-at-ctrl-c")

    def interrupted(tasks, *args, **kwargs):  # Ctrl-C lands while shutdown waits
        assert tasks == [task]
        raise KeyboardInterrupt

    monkeypatch.setattr(subiso.distributed.concurrent.futures, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pool.shutdown(wait=True)  # the task spins for ever
    monkeypatch.undo()
    assert client.run(_subiso_plugins) != before  # its task still runs
    assert task.cancel()
    assert pool._left.wait(T)  # the plugin left with the last task
    assert client.run(_subiso_plugins) == before


def test_a_ctrl_c_in_a_cluster_pool_block_stops_its_work(client):
    """As in a Pool block: the work stops instead of being waited for."""
    before = client.run(_subiso_plugins)
    with pytest.raises(KeyboardInterrupt):
        with ClusterPool(client, isolates_per_worker=1) as pool:
            task = _start_spinning(client, pool, "subiso-test-spinning-in-block")
            raise KeyboardInterrupt  # as a Ctrl-C while the block waits
    assert task.cancelled()
    assert pool._left.wait(T)
    assert client.run(_subiso_plugins) == before


def test_a_pool_that_leaves_kills_what_still_runs_for_it(client):
    before = client.run(_subiso_plugins)
    pool = ClusterPool(client, isolates_per_worker=1)
    task = _start_spinning(client, pool, "subiso-test-spinning-at-leave")
    # The Dask task alone is cancelled: the isolate would spin for ever,
    # and the plugin's teardown must not wait for it.
    client.cancel(task._dask)
    pool.shutdown(wait=True)
    assert task.cancelled()
    assert client.run(_subiso_plugins) == before
    assert client.submit(helpers.square, 4).result(timeout=T) == 16  # the worker still serves


@pytest.mark.parametrize("by", ["the caller", "dask"])
def test_a_cancelled_task_wakes_those_who_wait_for_it(client, pool, by):
    task = _start_spinning(client, pool, f"subiso-test-spinning-cancelled-by-{by}")
    cancel = task.cancel if by == "the caller" else lambda: client.cancel(task._dask)
    cancelling = threading.Thread(target=cancel)

    class CancelOnceWaitedFor(list):
        def append(self, waiter):
            super().append(waiter)
            cancelling.start()  # cancelled while wait() below waits

    task._waiters = CancelOnceWaitedFor(task._waiters)
    try:
        done, _ = concurrent.futures.wait([task], timeout=T)
    finally:
        cancelling.join(T)
    assert done == {task}
    assert task.cancelled()
    if by == "dask":  # the isolate still spins: take it down
        client.run(subiso.distributed._cancel_on_worker, pool._plugin.name, task.key)


def test_a_dead_worker_fails_the_task_clearly(pool):
    with pytest.raises(subiso.BrokenIsolateError, match="died"):
        pool.submit(helpers.exit_process).result(timeout=T)
    assert pool.submit(helpers.square, 5).result(timeout=T) == 25  # the nanny restarted it
