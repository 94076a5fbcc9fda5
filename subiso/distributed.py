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

import concurrent.futures
import logging
import threading
import uuid
from concurrent.futures import Future

from distributed import WorkerPlugin, get_worker
from distributed.client import Client

from . import _backend
from ._exceptions import BrokenIsolateError
from ._pool import Pool, PoolStats, Priority, Task, _ExecutorFace
from ._pool_worker import run_batch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ("ClusterPool",)

_log = logging.getLogger("subiso")

#: This process's Dask event-loop samplers are parked (see _switch_off_sampler).
_watchers_parked = False
_watchers_lock = threading.Lock()

_SAMPLER_OFF = (
    "Dask's statistical profiler is switched off in %s: it calls "
    "sys._current_frames(), which crashes CPython %s while isolates run "
    "(fixed in 3.13.18)"
)


def _switch_off_sampler(worker: Any = None) -> None:
    """Where ``sys._current_frames()`` crashes CPython while isolates run
    (3.13 before 3.13.18), stop Dask's statistical profiler in this process
    for its life (and in ``worker``'s task threads), and say so once."""
    global _watchers_parked
    import platform

    import dask

    if not _backend.CURRENT_FRAMES_CRASHES:
        return
    if not dask.config.get("distributed.worker.profile.enabled"):
        return
    # Every Dask server (scheduler, nanny, worker) has a thread sample its
    # event loop (distributed.profile.watch), only ever under this lock:
    # holding it for good parks those threads, and nothing else takes it.
    from distributed import profile

    with _watchers_lock:
        parked_now = not _watchers_parked
        if parked_now:
            profile.lock.acquire()
            _watchers_parked = True
    stopped = False
    if worker is not None:
        # A worker also samples its task threads from two periodic callbacks.
        # They are removed, not only stopped: a worker that is still starting
        # starts its callbacks after its plugins.
        for name in ("profile", "profile-cycle"):
            callback = worker.periodic_callbacks.pop(name, None)
            if callback is not None:
                callback.stop()
                stopped = True
    if stopped:
        _log.warning(_SAMPLER_OFF, f"worker {worker.address}", platform.python_version())
    elif parked_now and worker is None:
        _log.warning(_SAMPLER_OFF, "this process", platform.python_version())


class _WorkerPools(WorkerPlugin):
    """Starts a subiso Pool in every Dask worker process and stops it with
    the worker, or when its ClusterPool shuts down. Each ClusterPool
    registers its own, under its own name."""

    def __init__(self, name: str, isolates_per_worker: int | None, isolation: str) -> None:
        self.name = name
        self.isolates_per_worker = isolates_per_worker
        self.isolation = isolation
        self.pool: Pool | None = None  # these three are made on the worker (setup)
        self.running: dict[str, Task[Any]] = {}
        self.lock: Any = None

    def setup(self, worker: Any) -> None:
        _switch_off_sampler(worker)
        self.pool = Pool(self.isolates_per_worker, isolation=self.isolation, debug_name="dask")
        self.running = {}
        self.lock = threading.Lock()

    def teardown(self, worker: Any) -> None:
        # Its ClusterPool has left, or the worker closes: what still runs
        # here has no one to report to, and teardown runs on the worker's
        # event loop, which must not wait for it. Killed, it ends now.
        with self.lock:
            pool, self.pool = self.pool, None
            orphans = list(self.running.values())
        if pool is None:
            return
        for task in orphans:
            task.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _plugin(name: str, worker: Any = None) -> _WorkerPools:
    plugin = (worker or get_worker()).plugins[name]
    assert isinstance(plugin, _WorkerPools)
    return plugin


def _run_on_worker(
    plugin_name: str,
    key: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """The Dask task: hand the call to this worker's isolates and wait."""
    plugin = _plugin(plugin_name)
    pool = plugin.pool
    if pool is None:
        raise RuntimeError("the subiso pool on this Dask worker has shut down")
    if fn is run_batch:  # a batch of map's calls: stats() counts each
        task: Task[Any] = pool._submit_batch(*args)
    else:
        task = pool.submit(fn, *args, **kwargs)
    with plugin.lock:
        torn_down = plugin.pool is None  # teardown did not see this task
        if not torn_down:
            plugin.running[key] = task
    if torn_down:
        task.cancel()
    try:
        return task.result()
    finally:
        with plugin.lock:
            plugin.running.pop(key, None)


def _cancel_on_worker(plugin_name: str, key: str, dask_worker: Any = None) -> bool:
    """Cancel the subiso task behind a Dask key, if it runs here (kills its isolate)."""
    plugin = _plugin(plugin_name, dask_worker)
    with plugin.lock:
        task = plugin.running.get(key)
    if task is None or not task.cancel():
        return False
    if task._worker is not None:  # back only once the isolate is gone (and being replaced)
        task._worker.isolate.join(30)
    return True


def _stats_on_worker(plugin_name: str, dask_worker: Any = None) -> dict[str, int]:
    plugin = _plugin(plugin_name, dask_worker)
    if plugin.pool is None:
        return {}
    return dict(vars(plugin.pool.stats()))


class ClusterTask[T](Task[T]):
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
        # Dask may have settled it meanwhile, cancelled or with a result
        # (see _claim): then it is not PENDING.
        return self._cancel_from("PENDING") or self.cancelled()

    def _claim(self) -> bool:
        """PENDING -> RUNNING, so that only Dask's outcome may follow."""
        with self._condition:
            if self._state != "PENDING":
                return False
            self._state = "RUNNING"
            return True


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
        # A LocalCluster's scheduler and nannies sample in this process, where
        # isolates may run too.
        _switch_off_sampler()
        self._client = client
        self._plugin = _WorkerPools(f"subiso-{uuid.uuid4().hex}", isolates_per_worker, isolation)
        client.register_plugin(self._plugin, name=self._plugin.name)
        self._lock = threading.Lock()
        self._tasks: set[ClusterTask[Any]] = set()
        self._shutdown = False
        self._leave_with_last = False  # the last task to settle unregisters the plugin
        self._unregistered = False
        self._left = threading.Event()  # set once the plugin was taken away
        self._counts = {"completed": 0, "failed": 0, "cancelled": 0}

    def execute[R](
        self,
        fn: Callable[..., R],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        priority: Priority = Priority.REGULAR,
    ) -> ClusterTask[R]:
        """Queue ``fn(*args, **kwargs)`` on the cluster at ``priority``.

        Raises:
            RuntimeError: the pool is shut down.
        """
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        priority = Priority(priority)
        key = f"subiso-{getattr(fn, '__name__', 'task')}-{uuid.uuid4().hex}"
        task: ClusterTask[R] = ClusterTask(self, priority, key)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._tasks.add(task)
        # Dask runs higher priorities first; subiso's IMMEDIATELY is 0.
        task._dask = self._client.submit(
            _run_on_worker,
            self._plugin.name,
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

    def _settle(self, task: ClusterTask[Any], future: Any) -> None:
        try:
            self._complete(task, future)
        finally:
            with self._lock:
                self._tasks.discard(task)
                last = self._leave_with_last and not self._tasks
            if last:
                self._unregister()

    def _complete(self, task: ClusterTask[Any], future: Any) -> None:
        if future.status == "cancelled":
            task._cancel_from("PENDING")
            return
        if not task._claim():
            return
        try:
            result = future.result()
        except BaseException as error:  # the task's outcome, whatever it is
            if type(error).__name__ == "KilledWorker":
                error = BrokenIsolateError(f"the Dask worker running this task died: {error}")
            task.set_exception(error)
            self._counts["failed"] += 1
        else:
            task.set_result(result)
            self._counts["completed"] += 1

    def _cancel(self, task: ClusterTask[Any]) -> None:
        self._counts["cancelled"] += 1
        if task._dask is not None:
            self._client.cancel(task._dask)  # type: ignore[no-untyped-call]
        self._client.run(_cancel_on_worker, self._plugin.name, task.key, on_error="ignore")

    def stats(self) -> PoolStats:
        """Summed over the workers' pools; queued counts tasks not yet finished."""
        per_worker = self._client.run(_stats_on_worker, self._plugin.name).values()
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
        """As ``Executor.shutdown``. Once no task is left, the workers' pools
        shut down and their plugin leaves the cluster."""
        with self._lock:
            self._shutdown = True
            tasks = list(self._tasks)
            self._leave_with_last = not wait and bool(tasks)
        if cancel_futures:
            for task in tasks:
                task.cancel()
        if wait:
            try:
                concurrent.futures.wait(tasks)
            except BaseException:  # Ctrl-C: the caller goes, the plugin with the last task
                with self._lock:
                    self._leave_with_last = True
                    last = not self._tasks  # it may have settled already
                if last:
                    self._unregister()
                raise
        if not self._leave_with_last:
            self._unregister()

    def _stop_all(self) -> None:
        self.shutdown(wait=False, cancel_futures=True)  # (a task cancels where it runs)

    def _unregister(self) -> None:
        with self._lock:
            if self._unregistered:
                return
            self._unregistered = True
        try:
            if self._client.status in ("running", "connecting"):  # else not ours to change
                self._client.unregister_worker_plugin(self._plugin.name)  # type: ignore[no-untyped-call]
        except Exception:
            _log.warning("could not remove the subiso plugin from the Dask workers", exc_info=True)
        finally:
            self._left.set()

    def __repr__(self) -> str:
        return f"<ClusterPool {self._client!r}>"
