"""ClusterPool on a real LocalCluster: worker processes on loopback, not mocks."""

from __future__ import annotations

import contextlib
import itertools
import os

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
    # Dask's profiler samples sys._current_frames(), which crashes CPython
    # 3.13.0 while isolates run (README); a task whose worker dies is not retried.
    settings = {
        "distributed.worker.profile.enabled": False,
        "distributed.scheduler.allowed-failures": 0,
    }
    with _local_client(settings) as client:
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


def test_dask_profiler_is_refused_only_where_it_crashes():
    from subiso import _backend

    settings = {
        "distributed.worker.profile.enabled": True,  # Dask's default
        "distributed.worker.profile.interval": "1ms",  # sample often
        "distributed.scheduler.allowed-failures": 0,
    }
    with _local_client(settings) as client:
        if _backend.CURRENT_FRAMES_CRASHES:  # the workers run this same Python
            with pytest.raises(RuntimeError, match="profiler"):
                ClusterPool(client)
            return
        with ClusterPool(client, isolates_per_worker=2) as pool:
            # Isolates compute while the sampler walks every thread's frames.
            n = 300_000
            assert list(pool.map(helpers.busy_sum, [n] * 16)) == [n * (n - 1) // 2] * 16


def test_a_dead_worker_fails_the_task_clearly(pool):
    with pytest.raises(subiso.BrokenIsolateError, match="died"):
        pool.submit(helpers.exit_process).result(timeout=T)
    assert pool.submit(helpers.square, 5).result(timeout=T) == 25  # the nanny restarted it
