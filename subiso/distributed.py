"""``ClusterPool``: the ``Pool`` surface on a Dask cluster.

subiso does not invent a cluster: it rides Dask distributed. Every Dask worker
process runs its tasks on a local :class:`subiso.Pool` (a worker plugin
starts one sized to the worker's cores), so one process per node uses every
core through subinterpreters. Tasks and results travel through Dask;
priorities map onto Dask's; a lost worker is Dask's to reschedule.

    from dask.distributed import Client
    from subiso.distributed import ClusterPool

    with Client("tcp://scheduler:8786") as client, ClusterPool(client) as pool:
        results = list(pool.map(work, items, chunksize=16))

Install with ``pip install "subiso[distributed]"``; ``import subiso`` never
imports Dask.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import Future

from distributed import WorkerPlugin, get_worker
from distributed.client import Client

from ._exceptions import BrokenIsolateError
from ._pool import Pool, PoolStats, Priority, Task, _ExecutorFace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ("ClusterPool",)

PLUGIN = "subiso"


class _WorkerPools(WorkerPlugin):
    """Starts a subiso Pool in every Dask worker process and stops it with the worker."""

    idempotent = True

    def __init__(self, isolates_per_worker: int | None, isolation: str) -> None:
        self.isolates_per_worker = isolates_per_worker
        self.isolation = isolation
        self.pool: Pool | None = None  # these three are made on the worker (setup)
        self.running: dict[str, Task] = {}
        self.lock: Any = None

    def setup(self, worker: Any) -> None:
        self.pool = Pool(self.isolates_per_worker, isolation=self.isolation, debug_name="dask")
        self.running = {}
        self.lock = threading.Lock()

    def teardown(self, worker: Any) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _plugin() -> _WorkerPools:
    plugin = get_worker().plugins[PLUGIN]
    assert isinstance(plugin, _WorkerPools)
    return plugin


def _run_on_worker(
    key: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The Dask task: hand the call to this worker's isolates and wait."""
    plugin = _plugin()
    assert plugin.pool is not None, "the subiso worker plugin is not set up"
    task = plugin.pool.submit(fn, *args, **kwargs)
    with plugin.lock:
        plugin.running[key] = task
    try:
        return task.result()
    finally:
        with plugin.lock:
            plugin.running.pop(key, None)


def _cancel_on_worker(key: str, dask_worker: Any = None) -> bool:
    """Cancel the subiso task behind a Dask key, if it runs here (kills its isolate)."""
    plugin: _WorkerPools = dask_worker.plugins[PLUGIN]
    with plugin.lock:
        task = plugin.running.get(key)
    if task is None or not task.cancel():
        return False
    if task._worker is not None:  # back only once the isolate is gone (and being replaced)
        task._worker.isolate.join(30)
    return True


def _sampler_would_crash() -> bool:
    """On a worker: Dask's profiler is on, and its sys._current_frames()
    crashes this CPython while isolates run."""
    import dask

    from . import _backend

    enabled = dask.config.get("distributed.worker.profile.enabled")
    return bool(enabled) and _backend.CURRENT_FRAMES_CRASHES


def _stats_on_worker(dask_worker: Any = None) -> dict[str, int]:
    plugin: _WorkerPools = dask_worker.plugins[PLUGIN]
    if plugin.pool is None:
        return {}
    return dict(vars(plugin.pool.stats()))


class ClusterTask(Task):
    """A ``concurrent.futures.Future`` for work on a ClusterPool; also awaitable."""

    def __init__(self, pool: ClusterPool, priority: Priority, key: str) -> None:
        super().__init__(pool, priority)  # type: ignore[arg-type]
        self.key = key
        self._dask: Any = None

    # Dask completes the task: a thread that waits takes nothing itself.
    result = Future.result
    exception = Future.exception

    def cancel(self) -> bool:
        if self.done():
            return False
        self._pool._cancel(self)  # type: ignore[attr-defined]
        with self._condition:
            if self._state == "FINISHED":
                return False
            self._state = "PENDING"
        return super(Task, self).cancel()


class ClusterPool(_ExecutorFace):
    """The ``subiso.Pool`` surface over a ``dask.distributed.Client``.

    ``isolates_per_worker=None`` sizes each worker's pool to its usable cores.
    Give workers as many Dask threads as isolates (``threads_per_worker``):
    a Dask thread waits while an isolate works.
    """

    def __init__(
        self,
        client: Client,
        *,
        isolates_per_worker: int | None = None,
        isolation: str = "isolated",
    ) -> None:
        if not isinstance(client, Client):
            raise TypeError(f"expected a dask.distributed.Client, not {type(client).__name__}")
        unsafe = [address for address, bad in client.run(_sampler_would_crash).items() if bad]
        if unsafe:
            raise RuntimeError(
                "Dask's statistical profiler is on in workers "
                f"{', '.join(sorted(unsafe))}: it calls sys._current_frames(), which "
                "crashes their CPython (3.13 before 3.13.18) while isolates run. "
                "Start the cluster with "
                "dask.config.set({'distributed.worker.profile.enabled': False}) "
                "(or DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False)."
            )
        self._client = client
        self._plugin = _WorkerPools(isolates_per_worker, isolation)
        client.register_plugin(self._plugin, name=PLUGIN)
        self._lock = threading.Lock()
        self._tasks: set[ClusterTask] = set()
        self._shutdown = False
        self._counts = {"completed": 0, "failed": 0, "cancelled": 0}

    def execute(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        priority: Priority = Priority.REGULAR,
    ) -> ClusterTask:
        """Queue ``fn(*args, **kwargs)`` on the cluster at ``priority``.

        Raises:
            RuntimeError: the pool is shut down.
        """
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        priority = Priority(priority)
        key = f"subiso-{getattr(fn, '__name__', 'task')}-{uuid.uuid4().hex}"
        task = ClusterTask(self, priority, key)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._tasks.add(task)
        # Dask runs higher priorities first; subiso's IMMEDIATELY is 0.
        task._dask = self._client.submit(
            _run_on_worker,
            key,
            fn,
            tuple(args),
            dict(kwargs or {}),
            key=key,
            priority=int(Priority.LOW) - int(priority),
            pure=False,
        )
        task._dask.add_done_callback(lambda future: self._settle(task, future))
        return task

    def _settle(self, task: ClusterTask, future: Any) -> None:
        with self._lock:
            self._tasks.discard(task)
        if task.done():
            return
        if future.status == "cancelled":
            if task.set_running_or_notify_cancel():
                task._state = "PENDING"
                super(Task, task).cancel()
            return
        if not task.set_running_or_notify_cancel():
            return
        try:
            result = future.result()
        except BaseException as error:
            if type(error).__name__ == "KilledWorker":
                error = BrokenIsolateError(f"the Dask worker running this task died: {error}")
            task.set_exception(error)
            self._counts["failed"] += 1
        else:
            task.set_result(result)
            self._counts["completed"] += 1

    def _cancel(self, task: ClusterTask) -> None:
        self._counts["cancelled"] += 1
        if task._dask is not None:
            self._client.cancel(task._dask)  # type: ignore[no-untyped-call]
        self._client.run(_cancel_on_worker, task.key, on_error="ignore")

    def stats(self) -> PoolStats:
        """Summed over the workers' pools; queued counts tasks not yet finished."""
        per_worker = self._client.run(_stats_on_worker).values()
        total = {
            field: 0
            for field in ("size", "idle", "busy", "completed", "failed", "cancelled", "replaced")
        }
        for stats in per_worker:
            for field in total:
                total[field] += stats.get(field, 0)
        with self._lock:
            pending = len(self._tasks)
        total["queued"] = max(0, pending - total["busy"])
        return PoolStats(**total)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            tasks = list(self._tasks)
        if cancel_futures:
            for task in tasks:
                task.cancel()
        if wait:
            for task in tasks:
                try:
                    task.exception()
                except BaseException:
                    pass

    def __repr__(self) -> str:
        return f"<ClusterPool {self._client!r}>"
