"""``Pool``: long-lived isolates behind a ``concurrent.futures.Executor``.

Each worker is an isolate running a small loop: receive a task on its inbox,
run it, send the outcome to the pool's results port. A collector thread in
the pool's own interpreter receives outcomes, completes the tasks' futures
and hands each free worker the most urgent queued task (``Priority`` order,
FIFO within a level). One task is in flight per worker, so a task that was
handed to a worker is running, and cancelling it means killing that worker;
the pool then starts a replacement, as it does when a worker dies.
"""

from __future__ import annotations

import collections
import enum
import heapq
import itertools
import os
import threading
import time
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from ._exceptions import BrokenIsolateError, NotSendableError
from ._isolate import Isolate, _check_isolation, spawn_isolate
from ._ports import ReceivePort, SendPort
from ._runtime import IMMEDIATE
from ._wire import PLAIN, decode, decode_exception, encode

_NO_KWARGS = (PLAIN, None)


def shareable_item(item: tuple[Any, ...]) -> tuple[Any, ...]:
    """An encoded part that can sit inside a plain tuple (no TransferableBuffers)."""
    if len(item) > 2 and item[2]:
        raise NotSendableError("a TransferableBuffer cannot be sent in a pool task")
    return item[:2]


TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
    from typing import Any

__all__ = ("Pool", "PoolStats", "Priority", "Task")


class Priority(enum.IntEnum):
    """The seven levels of worker_manager; queued tasks start most urgent first."""

    IMMEDIATELY = 0
    VERY_HIGH = 1
    HIGH = 2
    HIGH_REGULAR = 3
    REGULAR = 4
    ALMOST_LOW = 5
    LOW = 6


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of a pool: workers, queue, and what became of its tasks."""

    size: int
    idle: int
    busy: int
    queued: int
    completed: int
    failed: int
    cancelled: int
    replaced: int


class Task(Future):  # type: ignore[type-arg]
    """A ``concurrent.futures.Future`` for work on a pool; also awaitable.

    ``cancel()`` also cancels a task that is running: its isolate is killed
    and replaced.
    """

    def __init__(self, pool: Pool, priority: Priority) -> None:
        super().__init__()
        self._pool = pool
        self.priority = priority
        self._worker: _Worker | None = None

    def cancel(self) -> bool:
        if super().cancel():
            self._pool._forget_queued(self)
            return True
        return self._pool._cancel_running(self)

    def _force_cancel(self) -> bool:
        """Cancel a running task (its worker is being killed)."""
        with self._condition:
            if self._state != "RUNNING":
                return False
            self._state = "PENDING"
        return super().cancel()

    def __await__(self) -> Generator[Any, None, Any]:
        import asyncio

        return asyncio.wrap_future(self).__await__()


class _Worker:
    __slots__ = ("done", "inbox", "index", "isolate", "killed", "retiring", "task")

    def __init__(self, index: int, isolate: Isolate) -> None:
        self.index = index
        self.isolate = isolate
        self.inbox: SendPort | None = None  # known once the worker says it is ready
        self.task: Task | None = None
        self.done = 0
        self.retiring = False  # asked to stop: not replaced unless work remains
        self.killed = False  # killed to cancel its task: replaced


def _worker_main(config: tuple[Any, ...]) -> None:
    """The loop each pool isolate runs."""
    results, index, initializer, initargs = config
    from ._ports import ReceivePort
    from ._runtime import _is_awaitable
    from ._wire import PICKLED, PLAIN, decode, encode, encode_exception

    if initializer is not None:
        try:
            initializer(*initargs)
        except BaseException as error:
            results.send(("initfail", index, encode_exception(error)))
            return
    inbox = ReceivePort("pool worker")
    results.send(("ready", index, inbox.send_port))
    functions: dict[bytes, Any] = {}  # pickled function -> function: tasks repeat them
    while True:
        item = inbox._receive_item(None)
        if item[0] == PLAIN and item[1] is None:
            break
        fn_bytes, args_item, kwargs_item = item[1]
        try:
            fn = functions.get(fn_bytes)
            if fn is None:
                fn = functions[fn_bytes] = decode((PICKLED, fn_bytes))
                if len(functions) > 256:
                    functions.pop(next(iter(functions)))
            args = decode(args_item)
            result = fn(*args, **decode(kwargs_item)) if kwargs_item[1] else fn(*args)
            if _is_awaitable(result):
                import asyncio

                result = asyncio.run(result)
            item = encode(("ok", index, result), "result")
        except Exception as error:
            item = encode(("err", index, encode_exception(error)))
        results._send_item(item)
    inbox.close()


def _run_batch(fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Run several map calls in one task; each call's outcome is its own."""
    from ._wire import encode_exception

    outcomes: list[tuple[Any, ...]] = []
    for args in calls:
        try:
            outcomes.append(("ok", fn(*args)))
        except Exception as error:
            outcomes.append(("err", encode_exception(error)))
    return outcomes


# Calls per task when map() batches on its own (chunksize=1): enough to make
# dispatch cheap, few enough that both isolates stay busy to the end.
MAP_BATCH = 32


class _ExecutorFace(Executor):
    """What Pool and ClusterPool share: ``submit``, ``run_async`` and ``map``,
    all built on ``execute``."""

    def execute(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        priority: Priority = Priority.REGULAR,
    ) -> Task:
        raise NotImplementedError

    def _batch_size(self, chunksize: int, calls: int) -> int:
        """Calls per task for ``map``."""
        return chunksize

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Task:
        """Queue ``fn(*args, **kwargs)`` at regular priority (the Executor API)."""
        return self.execute(fn, args, kwargs)

    async def run_async(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` on the pool and await its result."""
        return await self.submit(fn, *args, **kwargs)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        """``Executor.map``: results in order, each call's exception at its place.

        Calls travel in batches of ``chunksize``; with ``chunksize=1`` and no
        ``buffersize`` a ``Pool`` picks a batch size itself (up to 32 calls,
        and at least four batches per isolate), because a task per call would
        be dominated by dispatch. Either way an exception belongs to its own
        call: the calls before it still yield their results.

        ``buffersize=None`` reads all of ``iterables`` and submits every batch
        at once. With ``buffersize=n`` (as in Python 3.14) the input is read
        lazily, so it may be endless: ``n`` batches are submitted at once, and
        one more each time the iterator moves on to the next batch's results.
        Closing the iterator, or dropping it, cancels the tasks whose results
        it has not yielded (running ones too, as ``Task.cancel`` does).

        Raises:
            TypeError: ``buffersize`` is not an integer or None.
            ValueError: ``chunksize`` or ``buffersize`` is less than 1.
            TimeoutError: a result was not ready ``timeout`` seconds after the call.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        if buffersize is not None and not isinstance(buffersize, int):
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
        deadline = None if timeout is None else time.monotonic() + timeout
        calls: Iterable[tuple[Any, ...]] = zip(*iterables, strict=False)
        if buffersize is None:
            calls = list(calls)
            chunksize = self._batch_size(chunksize, len(calls))
        batches = itertools.batched(calls, chunksize, strict=False)
        tasks = collections.deque(
            self.submit(_run_batch, fn, batch) for batch in itertools.islice(batches, buffersize)
        )
        return self._map_results(fn, batches, tasks, deadline)

    def _map_results(
        self,
        fn: Callable[..., Any],
        batches: Iterator[tuple[tuple[Any, ...], ...]],
        tasks: collections.deque[Task],
        deadline: float | None,
    ) -> Iterator[Any]:
        """Yield the results of ``tasks`` in order, each call's exception at its
        place; before waiting for a task, submit the next of ``batches``, if any."""
        try:
            while tasks:
                batch = next(batches, None)
                if batch is not None:
                    tasks.append(self.submit(_run_batch, fn, batch))
                remaining = None if deadline is None else deadline - time.monotonic()
                # Popped, not iterated over: the iterator keeps no result it yielded.
                outcomes: list[tuple[Any, ...]] = _result_or_cancel(tasks.popleft(), remaining)
                outcomes.reverse()
                while outcomes:
                    status, value = outcomes.pop()
                    if status == "err":
                        raise decode_exception(value)
                    yield value
        finally:
            for task in tasks:
                task.cancel()


def _result_or_cancel(task: Task, timeout: float | None) -> Any:
    """``task.result(timeout)``; a task that is not done by then is cancelled."""
    try:
        try:
            return task.result(timeout)
        finally:
            task.cancel()
    finally:
        del task  # else: task -> its exception -> traceback -> this frame -> task


class Pool(_ExecutorFace):
    """A pool of long-lived isolates; a ``concurrent.futures.Executor``.

    ``size=None`` means the number of usable cores. Isolates are reused, so
    module state persists between tasks on one isolate; ``initializer`` runs
    once in each, ``max_tasks_per_isolate`` recycles them.
    """

    def __init__(
        self,
        size: int | None = None,
        *,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_isolate: int | None = None,
        debug_name: str | None = None,
        isolation: str = "isolated",
    ) -> None:
        _check_isolation(isolation)
        if size is None:
            size = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
            size = size or os.cpu_count() or 1
        if size < 1:
            raise ValueError("a pool needs at least one isolate")
        if max_tasks_per_isolate is not None and max_tasks_per_isolate < 1:
            raise ValueError("max_tasks_per_isolate must be at least 1")
        self.size = size
        self.debug_name = debug_name
        self._initializer = initializer
        self._initargs = initargs
        self._max_tasks = max_tasks_per_isolate
        self._isolation = isolation
        self._lock = threading.RLock()  # future callbacks may call back into the pool
        self._queue: list[tuple[int, int, Task, tuple[Any, ...]]] = []
        self._order = itertools.count()
        self._workers: dict[int, _Worker] = {}
        self._idle: list[_Worker] = []
        self._next_index = itertools.count()
        self._counts = {"completed": 0, "failed": 0, "cancelled": 0, "replaced": 0}
        self._shutdown = False
        self._broken: str | None = None
        self._results = ReceivePort(f"pool {debug_name or ''}".strip())
        self._functions: dict[Any, bytes] = {}
        # The collector shares the GIL with the threads that submit and wait:
        # spinning there would keep them from running.
        self._results._spin_max = 0
        self._results._spin = 0
        self._collector = threading.Thread(
            target=self._collect, name=f"subiso-pool-{debug_name or id(self)}", daemon=True
        )
        self._all_gone = threading.Event()
        try:
            for _ in range(size):
                self._start_worker()
        except BaseException:
            self._results.close()
            raise
        self._collector.start()

    # -- workers ------------------------------------------------------------------

    def _start_worker(self) -> None:
        index = next(self._next_index)
        config = (self._results.send_port, index, self._initializer, self._initargs)
        name = f"{self.debug_name or 'pool'}-{index}"
        isolate = spawn_isolate(
            _worker_main,
            config,
            on_exit=self._results.send_port,
            exit_response=("exit", index),
            debug_name=name,
            isolation=self._isolation,
        )
        self._workers[index] = _Worker(index, isolate)

    def _collect(self) -> None:
        receive = self._results._receive_item
        while True:
            message = decode(receive(None))
            kind, index = message[0], message[1]
            with self._lock:
                worker = self._workers.get(index)
                if worker is None:
                    pass  # a late word from a worker already gone, or the shutdown wake-up
                elif kind == "ready":
                    worker.inbox = message[2]
                    if worker.retiring:  # retired (by a shutdown) before it could hear it
                        self._retire(worker)
                    else:
                        self._dispatch(worker)
                elif kind in ("ok", "err"):
                    self._finish(worker, kind, message[2])
                elif kind == "initfail":
                    self._broken = f"a pool initializer raised: {decode_exception(message[2])!r}"
                elif kind == "exit":
                    self._worker_exited(worker)
                if self._shutdown and not self._workers:
                    break
        self._results.close()
        self._all_gone.set()

    def _finish(self, worker: _Worker, kind: str, payload: Any) -> None:
        task, worker.task = worker.task, None
        worker.done += 1
        if task is not None and not task.done():
            if kind == "ok":
                task.set_result(payload)
                self._counts["completed"] += 1
            else:
                task.set_exception(decode_exception(payload))
                self._counts["failed"] += 1
        if self._max_tasks is not None and worker.done >= self._max_tasks:
            self._retire(worker)
            return
        self._dispatch(worker)

    def _retire(self, worker: _Worker) -> None:
        worker.retiring = True
        if worker.inbox is not None:
            worker.inbox.send(None)

    def _worker_exited(self, worker: _Worker) -> None:
        if worker.killed or not worker.retiring:
            self._counts["replaced"] += 1
        del self._workers[worker.index]
        if worker in self._idle:
            self._idle.remove(worker)
        task, worker.task = worker.task, None
        if task is not None and not task.done():
            task.set_exception(
                BrokenIsolateError(f"the pool isolate {worker.isolate.debug_name} died")
            )
            self._counts["failed"] += 1
        worker.isolate.join(60)
        if self._broken is not None:
            self._fail_queued(BrokenIsolateError(self._broken))
            if not self._workers:
                self._shutdown = True
            return
        if not self._shutdown or self._queue:
            try:
                self._start_worker()
            except Exception as error:  # the process is exiting, or isolates cannot start
                self._broken = f"cannot replace a pool isolate: {error}"
                self._fail_queued(BrokenIsolateError(self._broken))
                if not self._workers:
                    self._shutdown = True

    def _dispatch(self, worker: _Worker) -> None:
        """Give ``worker`` the most urgent queued task, or mark it idle."""
        if worker.retiring or worker.killed or worker.inbox is None:
            return
        while self._queue:
            _, _, task, item = heapq.heappop(self._queue)
            if not task.set_running_or_notify_cancel():
                continue
            worker.task = task
            task._worker = worker
            worker.inbox._send_item(item)
            return
        if self._shutdown:
            self._retire(worker)
        elif worker not in self._idle:
            self._idle.append(worker)

    def _fail_queued(self, error: BaseException) -> None:
        while self._queue:
            _, _, task, _ = heapq.heappop(self._queue)
            if task.set_running_or_notify_cancel():
                task.set_exception(error)
                self._counts["failed"] += 1

    # -- tasks ----------------------------------------------------------------------

    def execute(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        priority: Priority = Priority.REGULAR,
    ) -> Task:
        """Queue ``fn(*args, **kwargs)`` at ``priority``; return its Task.

        Raises:
            NotSendableError: ``fn`` or an argument cannot cross.
            RuntimeError: the pool is shut down.
            BrokenIsolateError: the pool's initializer failed.
        """
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        priority = Priority(priority)
        item = self._encode_task(fn, tuple(args), kwargs)
        task = Task(self, priority)
        with self._lock:
            if self._broken is not None:
                raise BrokenIsolateError(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new tasks after shutdown")
            heapq.heappush(self._queue, (priority, next(self._order), task, item))
            while self._idle and self._queue:
                self._dispatch(self._idle.pop())
        return task

    def _encode_task(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> tuple[Any, ...]:
        """``(PLAIN, (function pickle, args item, kwargs item))``.

        The function is pickled once per pool and function (workers keep a
        cache by those bytes) and plain arguments are not pickled at all, so
        a tiny task costs no pickling on either side.
        """
        fn_bytes = self._functions.get(fn)
        if fn_bytes is None:
            fn_bytes = encode(fn, "function")[1]
            if len(self._functions) < 256:
                self._functions[fn] = fn_bytes
        args_item = shareable_item(encode(args, "args"))
        kwargs_item = shareable_item(encode(kwargs, "kwargs")) if kwargs else _NO_KWARGS
        return (PLAIN, (fn_bytes, args_item, kwargs_item))

    def _batch_size(self, chunksize: int, calls: int) -> int:
        if chunksize > 1:
            return chunksize
        return max(1, min(MAP_BATCH, calls // (self.size * 4)))

    def _forget_queued(self, task: Task) -> None:
        with self._lock:
            self._counts["cancelled"] += 1

    def _cancel_running(self, task: Task) -> bool:
        with self._lock:
            worker = task._worker
            if worker is None or worker.task is not task or task.done():
                return False
            if not task._force_cancel():
                return False
            self._counts["cancelled"] += 1
            worker.task = None
            worker.killed = True
        worker.isolate.kill(IMMEDIATE)  # the collector replaces it when it has exited
        return True

    # -- state and shutdown -----------------------------------------------------------

    def stats(self) -> PoolStats:
        with self._lock:
            busy = sum(1 for w in self._workers.values() if w.task is not None)
            return PoolStats(
                size=self.size,
                idle=len(self._idle),
                busy=busy,
                queued=len(self._queue),
                **self._counts,
            )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking tasks; finish the queued ones (or cancel them), then stop
        the isolates. With ``wait``, return once they are gone."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._queue:
                    _, _, task, _ = heapq.heappop(self._queue)
                    task.cancel()
            if not self._queue:
                for worker in list(self._workers.values()):
                    if worker.task is None:
                        self._retire(worker)
            if not self._workers:
                self._results.send_port.send(("exit", -1))  # wake the collector to leave
        if wait:
            self._all_gone.wait()
            self._collector.join()

    def __repr__(self) -> str:
        name = f" {self.debug_name!r}" if self.debug_name else ""
        return f"<Pool{name} size={self.size}>"
