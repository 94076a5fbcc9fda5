"""``Pool``: long-lived isolates behind a ``concurrent.futures.Executor``.

Threads and state. User threads (``execute``/``submit``/``map``,
``Task.cancel``, ``stats``, ``shutdown``, waiting for a task) and the pool's
collector thread share one ``_Core``, the pool's state: the queue, the
workers and the task each runs, the idle list, the counts, the shutdown and
broken marks, the unfinished tasks. The rule:

- Any thread may read or change the core's state, only while it holds
  ``_Core.lock``. Sending on a port never blocks and may happen under it.
- Taking from the results port is a role (``_Core.role``): one thread at a
  time takes what waits there and acts on it in order (outcomes end their
  workers' tasks and hand out the next; a ready worker gets work). The
  thread that waits for a task takes the role itself (one such thread at a
  time: the leader), so a result crosses one hop, not two; the collector
  takes it whenever it wakes. What blocks (joining an isolate that ended,
  starting its replacement) or ends the collector goes to the collector's
  mail: only the collector handles that, without the lock.
- No user code and no blocking call runs under the lock or the role. A
  Future's ``set_result``, ``set_exception`` and ``cancel`` run its
  done-callbacks, and unpickling a result may run anything: a thread decides
  under the lock which tasks end how, lets go, then decodes and ends them.
  In the main thread a Ctrl-C is held back while it holds what it took, so
  that no result is lost (it is raised right after).
- Nothing of the pool's holds the ``Pool``: a ``Task`` holds the core, not
  the pool. A pool nobody references is collected, and its finalizer asks
  the collector to shut the pool down (tasks already taken still run).
- One safety net for whoever holds the role: an exception there breaks the
  pool. Every unfinished task fails with ``BrokenServiceError``, chained to
  the cause, the isolates are killed, the collector ends, later ``submit``
  raises that error, and ``shutdown()`` returns.

Each worker is an isolate running a small loop (_pool_worker.py): receive a
task on its inbox, run it, send the outcome to the pool's results port.
Whoever holds the role completes the tasks' futures and hands each free
worker the most urgent queued task (``Priority`` order, FIFO within a
level). One task is in flight per worker, so a task that was handed to a
worker is running, and cancelling it means killing that worker; the pool
then starts a replacement, as it does when a worker dies.
"""

from __future__ import annotations

import collections
import enum
import heapq
import itertools
import logging
import os
import threading
import time
from concurrent.futures import Executor, Future, InvalidStateError
from dataclasses import dataclass
from typing import NamedTuple, cast

from . import _backend, _finalize, _hub
from ._backend import EMPTY
from ._exceptions import BrokenIsolateError, BrokenServiceError, NotSendableError, PortClosedError
from ._hub import check_isolation
from ._isolate import IMMEDIATE, Isolate, spawn_isolate
from ._pickling import by_value_modules
from ._pool_worker import (
    _ERROR,
    _EXIT,
    _INIT_FAILED,
    _PICKLED,
    _READY,
    _VALUE,
    run_batch,
    worker_main,
)
from ._ports import ReceivePort, SendPort, hold_interrupts
from ._wire import (
    PLAIN,
    by_reference,
    decode,
    decode_exception,
    encode,
    release_item,
)

_NO_KWARGS = (PLAIN, None)


TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator
    from typing import Any

__all__ = ("Pool", "PoolStats", "Priority", "Task")

_log = logging.getLogger("subiso")

# The pools whose collector still runs. At interpreter exit each is shut down
# and waited for, as concurrent.futures does with its executors: queued and
# running tasks complete; submitting after that raises RuntimeError.
_running: set[_Core] = set()
_exiting = False


def _at_exit() -> None:
    global _exiting
    _exiting = True
    interrupted = _backend.main_ended_in_interrupt()
    for core in list(_running):
        if interrupted:  # a Ctrl-C ended the program: it ends the work too
            core.stop_and_wait()
        else:
            core.shutdown(wait=True, cancel_futures=False)


_hub.before_exit.append(_at_exit)

# Seconds to wait for an isolate that was told to end (it has, or was killed).
_JOIN_SECONDS = 60.0
# While shutdown waits: how often it posts again the kills of workers that
# were killed but have not exited.
_REKILL_SECONDS = 1.0
# After a Ctrl-C, how long the exit waits for the collector once the
# isolates are gone (it only has its books to close).
_BOOKS_SECONDS = 5.0


def _give_back(lock: Any) -> None:
    """Release an RLock this thread holds, as often as it holds it; only
    where this thread holds none by design: what it holds, a Ctrl-C left."""
    if lock._is_owned():
        lock._release_save()


_REPLACED = "the pool isolate %s %s; a new one replaces it"  # logged

# Names pools without a debug name: Pool-1, Pool-2, ... (their isolates: Pool-1-0, ...)
_POOL_NUMBERS = itertools.count(1)


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


class Task[T](Future[T]):
    """A ``concurrent.futures.Future`` for work on a pool; also awaitable
    (``await task`` gives its result, typed as the callable's return).

    ``cancel()`` also cancels a task that is running: its isolate is killed
    and replaced.
    """

    def __init__(self, pool: _Core, priority: Priority) -> None:
        super().__init__()
        self._pool = pool  # the pool's core: a task does not keep its Pool alive
        self.priority = priority
        self._worker: _Worker | None = None
        self._calls = 1  # the calls it stands for in stats(): a map batch's size
        self._batch = False  # a map batch: its result holds each call's outcome

    def result(self, timeout: float | None = None) -> T:
        if not self.done():
            timeout = self._pool.wait_for(self, timeout)
        try:
            value: Any = super().result(timeout)
        except _EncodedError as encoded:
            error = encoded.load()
        else:
            if type(value) is _Encoded:
                return cast("T", value.load())
            return cast("T", value)
        raise error  # (outside the handler: no "during handling" context)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self.done():
            timeout = self._pool.wait_for(self, timeout)
        error = super().exception(timeout)
        if type(error) is _EncodedError:
            return error.load()
        if error is None:
            value: Any = super().result(0)
            if type(value) is _Encoded:
                try:
                    value.load()
                except BaseException as failure:  # a result that cannot load here
                    return failure
        return error

    def add_done_callback(self, fn: Callable[[Future[T]], object]) -> None:
        """As ``Future.add_done_callback``; but a callback never runs on the
        pool's collector thread, a service: when the collector ends the
        task, callbacks run on ``subiso-task-callbacks`` (asyncio's own
        hand-over to an event loop excepted, which only posts)."""
        if getattr(fn, "__module__", None) == "asyncio.futures":  # wrap_future's
            super().add_done_callback(fn)
        else:
            super().add_done_callback(_OffServiceThreads(fn))

    def cancel(self) -> bool:
        if super().cancel():
            self._pool._forget_queued(self)
        elif not self._pool._cancel_running(self):
            return False
        self._pool.settled(self)
        return True

    def _cancel_from(self, state: str) -> bool:
        """``state`` -> cancelled, as an executor does a cancelled task it
        dequeues: ``result()`` raises CancelledError, and ``wait()`` and
        ``as_completed()`` wake too (they hear only of a notified
        cancellation). False if the task has left ``state``."""
        with self._condition:
            if self._state != state:
                return False
            self._state = "CANCELLED_AND_NOTIFIED"
            for waiter in self._waiters:
                waiter.add_cancelled(self)
            self._condition.notify_all()
        self._invoke_callbacks()  # type: ignore[attr-defined]
        return True

    def __await__(self) -> Generator[Any, None, T]:
        import asyncio

        return asyncio.wrap_future(self).__await__()


# -- what travels on a pool's results port ---------------------------------------------
#
# What workers send is _pool_worker's (kind, worker index, payload); whoever
# holds the role reads each tuple into one of the records below before it
# acts. Two kinds are the pool's own:
_WAKE = "wake"  # (kind, -1): shutdown() wants the collector to look at the state
_GONE = "gone"  # (kind, -1): the Pool was collected


class _Ready(NamedTuple):
    """A worker started and listens on ``inbox``."""

    worker: int
    inbox: SendPort


class _InitFailed(NamedTuple):
    """A worker's initializer raised; the worker ends."""

    worker: int
    error: str  # "TypeName: message"


class _Exited(NamedTuple):
    """A worker's isolate ended."""

    worker: int


class _Wake(NamedTuple):
    """Look at the state again: shut down, or the Pool is gone."""

    pool_gone: bool


_WAKE_ITEM = (PLAIN, (_WAKE, -1))
_GONE_ITEM = (PLAIN, (_GONE, -1))
_WAKE_UP = _Wake(False)
_POOL_GONE = _Wake(True)


# Tasks whose workers ended them, each with its result's kind and payload
# (decoded once no lock is held).
_Outcomes = collections.deque[tuple["Task[Any]", str, "Any"]]


class _Queued(NamedTuple):
    """A queue entry; entries order by priority, then by submission."""

    priority: int
    order: int
    task: Task[Any]
    item: tuple[Any, ...]


class _Ending(NamedTuple):
    """How a task ends, decided under the lock and applied after it."""

    task: Task[Any]
    error: BaseException | None
    value: Any = None


class _Worker:
    __slots__ = ("cancelled", "done", "inbox", "index", "isolate", "killed", "retiring", "task")

    def __init__(self, index: int, isolate: Isolate) -> None:
        self.index = index
        self.isolate = isolate
        self.inbox: SendPort | None = None  # known once the worker says it is ready
        self.task: Task[Any] | None = None
        self.done = 0
        self.retiring = False  # asked to stop: not replaced unless work remains
        self.killed = False  # killed to cancel its task: replaced
        self.cancelled: Task[Any] | None = None  # that task, settled by its exit at the latest


# Calls per task when map() batches on its own (chunksize=1): enough to make
# dispatch cheap, few enough that both isolates stay busy to the end.
MAP_BATCH = 32


class _ExecutorFace(Executor):
    """What Pool and ClusterPool share: ``submit``, ``run_async`` and ``map``,
    all built on ``execute``; a block that Ctrl-C ends."""

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if isinstance(exc_value, KeyboardInterrupt):
            # Ctrl-C stops the work, as it stops a ProcessPoolExecutor's
            # workers (they get the signal too), instead of waiting for it.
            self._stop_all_and_wait()
        else:
            self.shutdown(wait=True)

    def _stop_all(self) -> None:
        """Cancel every task, queued or running, and take no more."""
        raise NotImplementedError

    def _stop_all_and_wait(self) -> None:
        """What Ctrl-C does: stop everything, and wait until the workers are gone."""
        self._stop_all()
        self.shutdown(wait=True)

    def execute[R](
        self,
        fn: Callable[..., R],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        priority: Priority = Priority.REGULAR,
    ) -> Task[R]:
        raise NotImplementedError

    def _batch_size(self, chunksize: int, calls: int) -> int:
        """Calls per task for ``map``."""
        return chunksize

    def submit[**P, R](self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Task[R]:
        """Queue ``fn(*args, **kwargs)`` at regular priority (the Executor API)."""
        return self.execute(fn, args, kwargs)

    def _submit_batch(
        self, fn: Callable[..., Any], calls: tuple[tuple[Any, ...], ...]
    ) -> Task[list[tuple[Any, ...]]]:
        """Queue one task for a batch of ``map``'s calls."""
        return self.submit(run_batch, fn, calls)

    async def run_async[**P, R](
        self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Run ``fn(*args, **kwargs)`` on the pool and await its result."""
        return await self.submit(fn, *args, **kwargs)

    def map[R](
        self,
        fn: Callable[..., R],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[R]:
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
        results = self._map_results(fn, batches, buffersize, deadline)
        next(results)  # submitted: from here on, dropping the iterator cancels
        return results

    def _map_results(
        self,
        fn: Callable[..., Any],
        batches: Iterator[tuple[tuple[Any, ...], ...]],
        buffersize: int | None,
        deadline: float | None,
    ) -> Generator[Any]:
        """Submit ``buffersize`` of ``batches`` (all if None) and pause; then
        yield their results in order, each call's exception at its place,
        submitting the next batch, if any, before waiting for a task.

        The tasks are submitted inside the ``try``: a Ctrl-C that lands while
        they are, or any time after, cancels them, as closing or dropping a
        paused generator runs its ``finally``. One that has not started yet
        would not run it."""
        tasks: collections.deque[Task[Any]] = collections.deque()
        try:
            for submitted in itertools.islice(batches, buffersize):
                tasks.append(self._submit_batch(fn, submitted))
            yield None
            while tasks:
                batch = next(batches, None)
                if batch is not None:
                    tasks.append(self._submit_batch(fn, batch))
                remaining = None if deadline is None else deadline - time.monotonic()
                # Popped, not iterated over: the iterator keeps no result it yielded.
                outcomes: list[tuple[Any, ...]] = _result_or_cancel(tasks.popleft(), remaining)
                outcomes.reverse()
                while outcomes:
                    if outcomes[-1][0] == "err":
                        raise decode_exception(outcomes.pop()[1])
                    yield outcomes.pop()[1]  # no name holds it while the caller has it
        finally:
            for task in tasks:
                task.cancel()


def _result_or_cancel(task: Task[Any], timeout: float | None) -> Any:
    """``task.result(timeout)``; a task that is not done by then is cancelled."""
    try:
        try:
            return task.result(timeout)
        finally:
            task.cancel()
    finally:
        del task  # else: task -> its exception -> traceback -> this frame -> task


def _result_error(error: BaseException) -> NotSendableError:
    """What a task whose result cannot be unpickled here fails with."""
    failure = NotSendableError(
        "the result of a pool task could not be unpickled in the interpreter that "
        f"submitted it: {type(error).__name__}: {error}"
    )
    failure.__cause__ = error
    return failure


def _again(error: BrokenIsolateError) -> BrokenIsolateError:
    """A fresh copy of the error that broke a pool, for each later ``submit``."""
    if isinstance(error, BrokenServiceError):
        again: BrokenIsolateError = BrokenServiceError(error.service, error.detail)
    else:
        again = BrokenIsolateError(*error.args)
    again.__cause__ = error.__cause__
    return again


class _Encoded:
    """A task's result as its worker sent it, decoded by the first thread
    that asks for it (never the collector: unpickling may run anything)."""

    __slots__ = ("_error", "_item", "_loaded", "_lock", "_value")

    def __init__(self, item: tuple[Any, ...]) -> None:
        self._item = item
        self._lock = threading.Lock()
        self._loaded = False
        self._value: Any = None
        self._error: BaseException | None = None

    def load(self) -> Any:
        """The result; or raise why it cannot load here (the same error each time)."""
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    try:
                        self._value = decode(self._item)
                    except BaseException as error:  # the task's own fault
                        self._error = _result_error(error)
                    self._item = None  # type: ignore[assignment]
                    self._loaded = True
        if self._error is not None:
            raise self._error
        return self._value


class _EncodedError(Exception):
    """A task's exception as its worker sent it (``encode_exception``),
    decoded by the first thread that asks for it."""

    def __init__(self, payload: tuple[Any, ...]) -> None:
        super().__init__(payload[0])
        self._payload: tuple[Any, ...] | None = payload
        self._lock = threading.Lock()
        self._error: BaseException | None = None

    def load(self) -> BaseException:
        """The remote exception, as itself when it loads here (the same object each time)."""
        if self._error is None:
            with self._lock:
                if self._error is None:
                    assert self._payload is not None
                    self._error = decode_exception(self._payload)
                    self._payload = None
        return self._error


class _OffServiceThreads:
    """A done-callback of a Task: run where the task ends, unless that is a
    service thread (the pool's collector), which hands it to the pool's
    callbacks thread instead."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[Any], object]) -> None:
        self.fn = fn

    def __call__(self, future: Any) -> None:
        if getattr(_on_service_thread, "active", False):
            future._pool.callbacks.post(self.fn, future)
        else:
            self.fn(future)


# Set on the threads that are services (the collectors): they run no user code.
_on_service_thread = threading.local()


class _TaskCallbacks:
    """``subiso-callbacks-<pool>``: the thread that runs the done-callbacks of
    the pool's tasks that its collector ended, in order, as a process pool's
    manager thread runs its executor's. It runs user code, so it is no
    service: nothing of the library waits on it (but ``shutdown(wait=True)``,
    which waits for the callbacks as a process pool does), and a callback
    that blocks holds up only the callbacks behind it. Its safety net is the
    Future's own: a callback's error is logged (to ``concurrent.futures``,
    as there) and the next runs. Started by the first callback posted, it
    ends once the collector has ended and what was posted has run."""

    _END: Any = object()

    def __init__(self, name: str) -> None:
        self.name = name
        self.jobs: collections.deque[tuple[Any, Any]] = collections.deque()
        self.ready = threading.Condition(threading.Lock())
        self.thread: threading.Thread | None = None
        self.closed = False

    def post(self, fn: Callable[[Any], object], future: Any) -> None:
        with self.ready:
            self.jobs.append((fn, future))
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._serve, name=f"subiso-callbacks-{self.name}", daemon=True
                )
                _backend.start_thread(self.thread)
            self.ready.notify()

    def close(self) -> None:
        """No more callbacks come (the collector has ended)."""
        with self.ready:
            self.closed = True
            if self.thread is not None:
                self.jobs.append((self._END, None))
                self.ready.notify()

    def join(self, timeout: float | None) -> None:
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _serve(self) -> None:
        while True:
            with self.ready:
                while not self.jobs:
                    self.ready.wait()
                fn, future = self.jobs.popleft()
            if fn is self._END:
                return
            try:
                fn(future)
            except BaseException:  # logged, the next callback runs (as in the stdlib)
                logging.getLogger("concurrent.futures").exception(
                    "exception calling callback for %r", future
                )
            del fn, future


def _end(task: Task[Any], error: BaseException | None, value: Any = None) -> None:
    """Complete ``task``; its done-callbacks run here, so never under a lock."""
    try:
        if error is None:
            task.set_result(value)
        else:
            task.set_exception(error)
    except InvalidStateError:
        pass  # cancelled, or failed by a broken collector, meanwhile
    task._pool._unfinished.discard(task)
    task._pool.settled(task)


def _end_all(endings: list[_Ending]) -> None:
    for ending in endings:
        _end(*ending)


class _Core:
    """A pool's state and its collector; the module docstring has the thread rule."""

    def __init__(
        self,
        name: str,
        initializer: Callable[..., Any] | None,
        initargs: tuple[Any, ...],
        max_tasks: int | None,
        isolation: str,
    ) -> None:
        self.name = name
        self.initializer = initializer
        self.initargs = initargs
        self.max_tasks = max_tasks
        self.isolation = isolation
        # Reentrant: the garbage collector may close a forgotten map() iterator,
        # which cancels its tasks, on a thread that holds the lock.
        self.lock = threading.RLock()
        # -- under the lock:
        self.queue: list[_Queued] = []
        self.order = itertools.count()
        self.workers: dict[int, _Worker] = {}
        self.early: dict[int, SendPort] = {}  # inboxes of workers not added yet
        self.idle: list[_Worker] = []
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0, "replaced": 0}
        self.shutdown_requested = False
        self.broken: BrokenIsolateError | None = None
        # -- a set's own operations are atomic; tasks leave it once they are done:
        self._unfinished: set[Task[Any]] = set()
        # -- the collector's (and, before it starts, the constructor's):
        self.next_index = itertools.count()
        self.results = ReceivePort(f"pool {name}")
        # -- taking results (see take_all): one thread at a time holds the role;
        # what only the collector does waits in its mail.
        self.role = threading.Lock()
        self.mail: collections.deque[_InitFailed | _Exited | _Wake] = collections.deque()
        # The task whose waiting thread takes results (wait_for), under the lock.
        self.leader: Task[Any] | None = None
        self.leader_thread = 0
        self.followers: dict[Task[Any], int] = {}  # the tasks other threads wait for, and how many
        # What wakes the collector for its mail, and the leader for its task.
        # Rung under the lock; recycled once the collector has ended and no
        # leader waits on its bell (bells_open then turns False).
        self.collector_bell = _backend.waker_new()
        self.leader_bell = _backend.waker_new()
        self.bells_open = True
        # Who waits on the results port's waker, as tokens (see _ports._watched):
        # workers write it after a result only if one is there. The collector
        # has a token while no thread leads, so a leader that takes its
        # results itself does not wake the collector for each (its token
        # changes hands under the lock); a leader has one while it parks.
        self.watchers = _backend.queue_create()
        _backend.queue_put(self.watchers, None)  # the collector's
        self.collector_ended = False
        self.thread: threading.Thread | None = None
        self.callbacks = _TaskCallbacks(name)  # the done-callbacks the collector hands on

    def start(self, pool: Pool, size: int) -> None:
        """Start ``size`` isolates, then the collector (nothing holds ``pool``).

        The isolates start side by side: one on this thread, the others on
        threads of their own, joined before this returns (each one's start
        waits mostly for its isolate to boot, while the hub makes the
        next). Should any start fail, or this thread be interrupted, every
        one that started is killed and joined before the error goes on."""
        helpers: list[threading.Thread] = []
        started: list[_Worker] = []
        errors: list[BaseException] = []

        def spawn_one() -> None:
            try:
                started.append(self._spawn())  # (list.append: atomic)
            except BaseException as error:  # handed to the constructor's thread
                errors.append(error)

        try:
            for _ in range(size - 1):
                helper = threading.Thread(target=spawn_one, name=f"subiso-pool-{self.name}-start")
                helpers.append(helper)
                helper.start()
            if size:
                started.append(self._spawn())
            for helper in helpers:
                helper.join()
            if errors:
                raise errors[0]
        except BaseException:
            for helper in helpers:  # (their spawns are bounded: the isolates boot or fail)
                helper.join()
            for worker in started:
                self.workers[worker.index] = worker
            for worker in self.workers.values():
                worker.isolate.kill(IMMEDIATE)
            for worker in self.workers.values():
                worker.isolate.join(_JOIN_SECONDS)
            self.results.close()
            _backend.queue_destroy(self.watchers)
            with self.lock:
                self.collector_ended = True  # it never started
                self.free_bells()
            raise
        for worker in started:
            self.workers[worker.index] = worker
        # Once the pool is collected, the collector hears of it.
        _finalize.at_collect(pool, self.results.send_port._send_item, _GONE_ITEM)
        self.thread = threading.Thread(
            target=_collect, args=(self,), name=f"subiso-pool-{self.name}", daemon=True
        )
        _backend.start_thread(self.thread)
        _running.add(self)

    def _spawn(self) -> _Worker:
        """Start one worker isolate (blocks until it runs; never under the lock)."""
        index = next(self.next_index)
        config = (self.results.send_port, index, self.initializer, self.initargs, self.watchers)
        isolate = spawn_isolate(
            worker_main,
            config,
            on_exit=self.results.send_port,
            exit_response=(_EXIT, index),
            debug_name=f"{self.name}-{index}",
            isolation=self.isolation,
            warm_spares=False,  # its workers live on: spares would idle beside them
        )
        return _Worker(index, isolate)

    # -- user threads -------------------------------------------------------------------

    def execute(self, task: Task[Any], item: tuple[Any, ...]) -> None:
        with self.lock:
            if self.broken is not None:
                raise _again(self.broken)
            if self.shutdown_requested:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _exiting:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            heapq.heappush(self.queue, _Queued(task.priority, next(self.order), task, item))
            self._unfinished.add(task)
            while self.idle and self.queue:
                worker = self.idle[-1]
                self._dispatch(worker)  # it leaves the idle list once it has work
                if self.idle and self.idle[-1] is worker:
                    break  # it could take none

    def _forget_queued(self, task: Task[Any]) -> None:
        """A queued task was cancelled (it leaves the queue when its turn comes)."""
        with self.lock:
            self.counts["cancelled"] += task._calls
        self._unfinished.discard(task)

    def _cancel_running(self, task: Task[Any]) -> bool:
        with self.lock:
            worker = task._worker
            if worker is None or worker.task is not task:
                return False  # not running, or its end is already decided
            self.counts["cancelled"] += task._calls
            worker.task = None
            worker.killed = True
            worker.cancelled = task
        # A Ctrl-C can cut this short from here on: the worker's exit settles
        # the task, and a waiting shutdown posts the kill again (see there).
        worker.isolate.kill(IMMEDIATE)  # the collector replaces it when it has exited
        self._settle_cancelled(task)
        return True

    def _settle_cancelled(self, task: Task[Any]) -> None:
        """``task``, whose worker is being killed to cancel it, is cancelled."""
        task._cancel_from("RUNNING")  # (False if it is already)
        self._unfinished.discard(task)

    def stats(self, size: int) -> PoolStats:
        with self.lock:
            busy = sum(1 for w in self.workers.values() if w.task is not None)
            return PoolStats(
                size=size,
                idle=len(self.idle),
                busy=busy,
                queued=len(self.queue),
                **self.counts,
            )

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        cancelled: list[_Queued] = []
        with self.lock:
            self.shutdown_requested = True
            if cancel_futures:
                cancelled, self.queue = self.queue, []
            if not self.queue:
                for worker in self.workers.values():
                    if worker.task is None:
                        self._retire(worker)
            if not self.workers:
                self.results.send_port._send_item(_WAKE_ITEM)  # the collector may leave
        for entry in cancelled:
            task = entry.task
            if task.cancelled() or task.cancel():  # (counted once, by Task.cancel)
                task.set_running_or_notify_cancel()  # dequeued: wait() hears it now
        if wait and self.thread is not None and self.thread is not threading.current_thread():
            # A join is one call into C: a Ctrl-C cannot leave it half done,
            # as it can a Condition's wait.
            while not self._join(_REKILL_SECONDS):
                # A Ctrl-C can land between marking a worker killed and
                # posting its kill (Task.cancel): post it again, or this
                # join would wait for a worker that nobody told to end.
                with self.lock:
                    killed = [w for w in self.workers.values() if w.killed]
                for worker in killed:
                    worker.isolate.kill(IMMEDIATE)
            # And the done-callbacks of the tasks that ended, as a process
            # pool's shutdown waits for its manager thread (not from one of
            # them: it cannot wait for itself).
            self.callbacks.join(None)

    def stop_and_wait(self) -> None:
        """What a Ctrl-C does (leaving a Pool's block, or the program): stop
        everything, then wait until the pool's isolates are gone.

        Not until its collector is: a Ctrl-C can land between a ``with``
        statement's acquire and its block, and leave this thread holding a
        lock (the pool's, a task's) for good; the collector may wait for it.
        The pool's lock is given back here, where this thread holds it by no
        design. What the exit must wait for is the isolates' end; the
        collector, a daemon thread, gets a moment to finish its books."""
        self.stop_all()
        _give_back(self.lock)
        deadline = time.monotonic() + _JOIN_SECONDS
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            while not worker.isolate.join(
                max(0.0, min(_REKILL_SECONDS, deadline - time.monotonic()))
            ):
                if time.monotonic() >= deadline:
                    _log.error(
                        "pool isolate %s did not end after its kill", worker.isolate.debug_name
                    )
                    break
                worker.isolate.kill(IMMEDIATE)  # (a Ctrl-C may have cut the last one short)
        if self.thread is not None and self.thread is not threading.current_thread():
            if not self._join(_BOOKS_SECONDS):
                _log.warning(
                    "the collector of pool %s did not end after its isolates; left to the exit",
                    self.name,
                )

    def _join(self, timeout: float) -> bool:
        assert self.thread is not None
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def stop_all(self) -> None:
        """Cancel every task, queued or running, take no more, and kill every
        worker still alive.

        Ctrl-C calls this, and a second Ctrl-C can cut it (or an earlier
        cancel, kill or retire) short anywhere; the exit calls it again. So
        each call kills every worker that is left, also those it told to end
        already: a kill of a dying isolate costs nothing, and the join that
        follows never waits for a worker whose message was lost."""
        self.shutdown(wait=False, cancel_futures=True)
        with self.lock:
            running = [w.task for w in self.workers.values() if w.task is not None]
        for task in running:
            task.cancel()
        with self.lock:
            left = list(self.workers.values())
            for worker in left:
                if not worker.killed:
                    worker.retiring = True  # not replaced, nor counted as such
        for worker in left:
            worker.isolate.kill(IMMEDIATE)

    # -- under the lock -----------------------------------------------------------------

    def _dispatch(self, worker: _Worker) -> None:
        """Give ``worker`` the most urgent queued task, or mark it idle."""
        if worker.retiring or worker.killed or worker.inbox is None:
            return
        while self.queue:
            entry = heapq.heappop(self.queue)
            task = entry.task
            if not task.set_running_or_notify_cancel():
                continue
            worker.task = task
            task._worker = worker
            if self.idle and self.idle[-1] is worker:  # from execute
                self.idle.pop()
            # Last: a Ctrl-C that lands from here on finds the task running
            # on this worker, where the submit that raised cancels it.
            worker.inbox._send_item(entry.item)
            return
        if self.shutdown_requested:
            self._retire(worker)
        elif worker not in self.idle:
            self.idle.append(worker)

    def _retire(self, worker: _Worker) -> None:
        worker.retiring = True
        if worker.inbox is not None:
            worker.inbox.send(None)

    def _fail_queued(self, error: BaseException, endings: list[_Ending]) -> None:
        while self.queue:
            task = heapq.heappop(self.queue).task
            if task.set_running_or_notify_cancel():
                endings.append(_Ending(task, error))
                self.counts["failed"] += task._calls

    # -- taking results: the collector, and threads that wait ------------------------

    def take_all(self) -> None:
        """Take what waits on the results port, in order, and act on it.

        Under ``role``, so that one thread at a time takes and acts, in the
        order the port delivers: outcomes end their workers' tasks (and
        hand the workers their next), a worker that is ready gets work, and
        the rest (exits, initializer failures, wake-ups) goes to the
        collector's ``mail``. Results are decoded and tasks ended after the
        role is let go: both may run user code (unpickling, done-callbacks).

        In the main thread a Ctrl-C waits until what was taken is handed
        over: landing in between, it would lose a result for good.
        """
        held = hold_interrupts()
        try:
            self._take_all()
        finally:
            held.release()

    def _take_all(self) -> None:
        outcomes: _Outcomes = collections.deque()
        try:
            with self.role:
                poll = self.results._poll_item
                while True:
                    try:
                        item = poll()
                    except PortClosedError:  # the collector closed it: nothing is left
                        break
                    if item is EMPTY:
                        break
                    self._act(item, outcomes)  # type: ignore[arg-type]
        except BaseException as error:  # a fault of ours: nothing would end the tasks
            self.break_down(error)
            return
        self._end_outcomes(outcomes)
        if self.mail and threading.current_thread() is not self.thread:
            self.ring(self.collector_bell)

    def _end_outcomes(self, outcomes: _Outcomes) -> None:
        try:
            while outcomes:
                self._end_outcome(*outcomes.popleft())
        finally:
            if outcomes:  # a done-callback raised KeyboardInterrupt or SystemExit
                self._end_outcomes(outcomes)

    def _act(self, item: tuple[Any, ...], outcomes: _Outcomes) -> None:
        """Act on one item (under the role); no user code runs here. (Workers
        send plain tuples: nothing is unpickled.)"""
        message = item[1]
        kind = message[0]
        if kind == _VALUE or kind == _PICKLED or kind == _ERROR:
            task = self._finish(message[1], kind != _ERROR, message[3])
            if task is not None:
                outcomes.append((task, kind, message[2]))
            elif len(item) > 2:
                release_item(item)  # a late result of a killed worker: its buffers close
        elif kind == _READY:
            self._ready(_Ready(message[1], SendPort(*message[2])))
        else:
            self.mail.append(self.read(message))

    def _end_outcome(self, task: Task[Any], kind: str, payload: Any) -> None:
        """End ``task`` with what its worker sent. What is not plain stays
        encoded: unpickling may run anything, so the thread that asks for
        the result decodes it (``Task.result``), never the collector."""
        if kind == _VALUE:
            _end(task, None, payload)
        elif kind == _ERROR:
            _end(task, _EncodedError(payload))
        else:
            _end(task, None, _Encoded(payload))

    def collect(self) -> None:
        """The collector's loop: take and act while nobody else does, handle
        the mail, until the pool is shut down and its isolates are gone."""
        results = self.results
        mail = self.mail
        while True:
            self.take_all()
            self.read_mail()
            with self.lock:
                if self.shutdown_requested and not self.workers:
                    return
            results._wait(None, self.collector_bell[0], mail.__len__)  # type: ignore[arg-type]

    def wait_for(self, task: Task[Any], timeout: float | None) -> float | None:
        """Wait until ``task`` is done or ``timeout`` passes; the time left.

        One waiting thread at a time takes results itself, with no hop
        through the collector: the leader. Others (followers) wait on their
        task as on any Future; when the leader leaves, they are woken, and
        one of them leads.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not task.done():
            lead = False
            try:
                with self.lock:
                    if self.results.is_closed:
                        break  # the pool is gone: so is every unfinished task
                    lead = self.leader is None
                    if lead:
                        self.leader = task
                        self.leader_thread = threading.get_ident()
                        self._unwatch()  # the collector's token: this thread takes the results
                    else:
                        self.followers[task] = self.followers.get(task, 0) + 1
                if lead:
                    self._lead(task, deadline)
                    break
            finally:
                # Also when a Ctrl-C lands anywhere above: a leader that
                # stays would keep everyone else from taking results.
                if lead:
                    self._hand_over(task)
            try:
                with task._condition:
                    if not task.done() and self.leader is not None:
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            break
                        task._condition.wait(remaining)
            finally:
                with self.lock:
                    self.followers[task] -= 1
                    if not self.followers[task]:
                        del self.followers[task]
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def _hand_over(self, task: Task[Any]) -> None:
        """The leader (this thread, waiting for ``task``) leaves: its followers
        are woken, and one of them leads."""
        with self.lock:
            if self.leader is not task or self.leader_thread != threading.get_ident():
                return  # it never became the leader
            self.leader = None
            self._watch()  # the collector's token again, before the look below
            followers = list(self.followers)
            self.free_bells()
        if _backend.queue_count(self.results._qid):  # left behind: the collector takes it
            self.ring(self.collector_bell)
        for waiting in followers:
            with waiting._condition:
                waiting._condition.notify_all()

    def _lead(self, task: Task[Any], deadline: float | None) -> None:
        """Take results until ``task`` is done or ``deadline`` passes. Before
        parking it looks at the port for a while, as a receiver spins (a
        result that comes back within microseconds is taken without sleeping)."""
        results = self.results
        count = _backend.queue_count
        qid = results._qid

        def look() -> object:
            return True if count(qid) else EMPTY

        try:
            while not task.done():
                if self.mail and threading.current_thread() is self.thread:
                    # A done-callback on the collector waits: nobody else
                    # would read the mail (collect() sees what it changed).
                    self.read_mail()
                    continue
                if count(qid) or results._spin_get(look) is not EMPTY:
                    self.take_all()
                    continue
                remaining = None
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                parked = time.perf_counter()
                self._watch()  # this thread's token, before _wait looks a last time
                try:
                    results._wait(remaining, self.leader_bell[0], task.done)
                finally:
                    self._unwatch()
                results._adapt_spin(time.perf_counter() - parked)
        except PortClosedError:
            pass  # the pool's isolates are gone, and with them every unfinished task

    def _watch(self) -> None:
        """Put a token on ``watchers``: results wake its owner from now on."""
        try:
            _backend.queue_put(self.watchers, None)
        except _backend.QueueNotFoundError:
            pass  # the collector has ended: nothing comes any more

    def _unwatch(self) -> None:
        """Take a token back (the owner never waits on the waker without one)."""
        try:
            _backend.queue_get(self.watchers)
        except _backend.QueueNotFoundError:
            pass

    def settled(self, task: Task[Any]) -> None:
        """``task`` is done: if a thread that waits for it parks on the results
        port, wake it."""
        if self.leader is task and self.leader_thread != threading.get_ident():
            self.ring(self.leader_bell)

    def ring(self, bell: tuple[int, int]) -> None:
        with self.lock:
            if self.bells_open:
                _backend.wake(bell[1])

    def free_bells(self) -> None:
        """Recycle the bells once nobody can wait on them (under the lock)."""
        if self.collector_ended and self.leader is None and self.bells_open:
            self.bells_open = False
            _backend.waker_free(self.collector_bell)
            _backend.waker_free(self.leader_bell)

    def read(self, message: tuple[Any, ...]) -> _InitFailed | _Exited | _Wake:
        """The record of a message for the collector."""
        kind = message[0]
        if kind == _EXIT:
            return _Exited(message[1])
        if kind == _INIT_FAILED:
            return _InitFailed(message[1], message[2][0])  # (its description: nothing unpickled)
        if kind == _WAKE:
            return _WAKE_UP
        if kind == _GONE:
            return _POOL_GONE
        raise ValueError(f"a pool's results port got an unknown message {message!r}")

    def read_mail(self) -> None:
        """Handle the mail (the collector's)."""
        while self.mail:
            self.handle(self.mail.popleft())

    def handle(self, message: _InitFailed | _Exited | _Wake) -> None:
        """Act on one message of the mail (the collector's)."""
        if isinstance(message, _Exited):
            self._exited(message)
        elif isinstance(message, _InitFailed):
            with self.lock:  # the worker ends next; _exited fails the queue
                self.broken = BrokenIsolateError(f"a pool initializer raised: {message.error}")
        elif message.pool_gone:
            self.shutdown(wait=False, cancel_futures=False)

    def _finish(self, index: int, ok: bool, failed: int) -> Task[Any] | None:
        """A worker ended its task (of which ``failed`` calls raised, for a
        map batch): the task, to be ended; the worker's next."""
        with self.lock:
            worker = self.workers.get(index)
            if worker is None:
                return None  # a late word from a worker already gone
            task, worker.task = worker.task, None
            worker.done += 1
            if task is not None:
                if ok:
                    self.counts["completed"] += task._calls - failed
                    self.counts["failed"] += failed
                else:
                    self.counts["failed"] += task._calls
            if self.max_tasks is not None and worker.done >= self.max_tasks:
                self._retire(worker)
            else:
                self._dispatch(worker)
        return task

    def _ready(self, ready: _Ready) -> None:
        with self.lock:
            worker = self.workers.get(ready.worker)
            if worker is None:  # a replacement, ready before _replace has added it
                self.early[ready.worker] = ready.inbox
            else:
                self._listens(worker, ready.inbox)

    def _listens(self, worker: _Worker, inbox: SendPort) -> None:
        """``worker`` said it is ready (under the lock)."""
        worker.inbox = inbox
        if worker.retiring:  # retired (by a shutdown) before it could hear it
            self._retire(worker)
        else:
            self._dispatch(worker)

    def _exited(self, exited: _Exited) -> None:
        endings: list[_Ending] = []
        replace = False
        with self.lock:
            worker = self.workers.pop(exited.worker, None)
            if worker is None:
                return
            if worker.killed or not worker.retiring:
                self.counts["replaced"] += 1
            if worker in self.idle:
                self.idle.remove(worker)
            task, worker.task = worker.task, None
            cancelled, worker.cancelled = worker.cancelled, None
            task_lost = task is not None
            if task is not None:
                died = BrokenIsolateError(f"the pool isolate {worker.isolate.debug_name} died")
                endings.append(_Ending(task, died))
                self.counts["failed"] += task._calls
            if self.broken is not None:
                self._fail_queued(_again(self.broken), endings)
                if not self.workers:
                    self.shutdown_requested = True
            else:
                replace = not self.shutdown_requested or bool(self.queue)
        if replace and worker.killed:
            _log.info(_REPLACED, worker.isolate.debug_name, "was killed to cancel its task")
        elif replace and not worker.retiring:
            what = "died running a task" if task_lost else "died"
            _log.warning(_REPLACED, worker.isolate.debug_name, what)
        if cancelled is not None and not cancelled.done():  # its cancel was cut short
            self._settle_cancelled(cancelled)
            self.settled(cancelled)
        _end_all(endings)
        worker.isolate.join(_JOIN_SECONDS)
        if replace:
            self._replace()

    def _replace(self) -> None:
        """Start a worker in place of one that ended."""
        try:
            worker = self._spawn()
        except Exception as error:  # the process is exiting, or isolates cannot start
            endings: list[_Ending] = []
            with self.lock:
                self.broken = BrokenIsolateError(f"cannot replace a pool isolate: {error}")
                self._fail_queued(_again(self.broken), endings)
                if not self.workers:
                    self.shutdown_requested = True
            _end_all(endings)
            return
        with self.lock:
            self.workers[worker.index] = worker
            inbox = self.early.pop(worker.index, None)
            if inbox is not None:
                self._listens(worker, inbox)

    def break_down(self, cause: BaseException) -> None:
        """The safety net: the collector failed, so nothing would complete the
        pool's tasks. Fail them all, stop the isolates, refuse new work.

        Whichever thread met the fault calls it: the collector, or a thread
        that took results while it waited. Either way the collector ends.
        """
        error = BrokenServiceError("pool collector", f"{type(cause).__name__}: {cause}")
        error.__cause__ = cause
        with self.lock:
            if isinstance(self.broken, BrokenServiceError):
                return  # broken down already, by another thread
            self.broken = error
            self.shutdown_requested = True
            for entry in self.queue:
                try:
                    entry.task.set_running_or_notify_cancel()  # a cancelled one hears it now
                except RuntimeError:
                    pass  # not pending (the collector failed while it dispatched it)
            self.queue = []
            workers = list(self.workers.values())
            self.workers.clear()
            self.idle.clear()
            for worker in workers:
                worker.task = None
            failing = list(self._unfinished)
            self.counts["failed"] += sum(task._calls for task in failing)
        _log.error(
            "taking the results of pool %s failed; its tasks fail with BrokenServiceError",
            self.name,
            exc_info=cause,
        )
        for task in failing:
            _end(task, error)
        self.mail.append(_WAKE_UP)  # the collector ends (there are no workers)
        if threading.current_thread() is not self.thread:
            self.ring(self.collector_bell)
        deadline = time.monotonic() + _JOIN_SECONDS
        for worker in workers:
            worker.isolate.kill(IMMEDIATE)
        for worker in workers:
            worker.isolate.join(max(0.0, deadline - time.monotonic()))


def _collect(core: _Core) -> None:
    """The collector thread: the loop, and the one safety net around it."""
    _on_service_thread.active = True
    try:
        try:
            core.collect()
        except BaseException as error:  # the safety net: every unfinished task hears of it
            core.break_down(error)
    finally:
        core.callbacks.close()
        _running.discard(core)
        core.results.close()
        _backend.queue_destroy(core.watchers)  # (after the close: no result needs a wake)
        with core.lock:
            core.collector_ended = True
            core.free_bells()


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
        check_isolation(isolation)
        if size is None:
            size = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
            size = size or os.cpu_count() or 1
        if size < 1:
            raise ValueError("a pool needs at least one isolate")
        if max_tasks_per_isolate is not None and max_tasks_per_isolate < 1:
            raise ValueError("max_tasks_per_isolate must be at least 1")
        self.size = size
        self.debug_name = debug_name
        # Pickles of the functions pickled by reference, by module and name.
        self._functions: dict[tuple[str, str], bytes] = {}
        self._core = _Core(
            debug_name or f"Pool-{next(_POOL_NUMBERS)}",
            initializer,
            initargs,
            max_tasks_per_isolate,
            isolation,
        )
        self._core.start(self, size)

    # -- tasks ----------------------------------------------------------------------

    def execute[R](
        self,
        fn: Callable[..., R],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        priority: Priority = Priority.REGULAR,
    ) -> Task[R]:
        """Queue ``fn(*args, **kwargs)`` at ``priority``; return its Task.

        Raises:
            NotSendableError: ``fn`` or an argument cannot cross.
            RuntimeError: the pool is shut down.
            BrokenIsolateError: the pool's initializer failed.
            BrokenServiceError: the pool's collector failed (a BrokenIsolateError).
        """
        return self._execute(fn, tuple(args), kwargs, Priority(priority))

    def _submit_batch(
        self, fn: Callable[..., Any], calls: tuple[tuple[Any, ...], ...]
    ) -> Task[list[tuple[Any, ...]]]:
        # stats() counts each call of the batch.
        return self._execute(run_batch, (fn, calls), None, Priority.REGULAR, batch=len(calls))

    def _execute[R](
        self,
        fn: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any] | None,
        priority: Priority,
        batch: int | None = None,
    ) -> Task[R]:
        if not callable(fn):
            raise TypeError(f"{fn!r} is not callable")
        item = self._encode_task(fn, args, kwargs)
        task: Task[R] = Task(self._core, priority)
        if batch is not None:
            task._calls, task._batch = batch, True
        try:
            self._core.execute(task, item)
        except BaseException:
            # A Ctrl-C may land after a worker has the task: nobody would
            # have it to wait on or cancel, and shutdown would wait for it.
            task.cancel()
            raise
        return task

    def _encode_task(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any] | None
    ) -> tuple[Any, ...]:
        """``(PLAIN, (function pickle, args item, kwargs item, by reference))``,
        and after it the file descriptors and TransferableBuffers the
        arguments carry (as on every encoded item: they leave with the task).

        A task sees its callable as it is when submitted: a bound method, a
        partial or a closure is pickled with its state at every submit. Only
        a function pickled by reference (module and name) is pickled once
        per pool, keyed by name so that no object is kept alive, and loaded
        once per worker. Plain arguments are not pickled at all, so a tiny
        task of a module-level function costs no pickling on either side.
        """
        name = by_reference(fn)
        if name is not None and by_value_modules and name[0] in by_value_modules:
            name = None  # isolates refuse its module: by value (see _fallback.py)
        fn_bytes = None if name is None else self._functions.get(name)
        if fn_bytes is None:
            fn_bytes = encode(fn, "function")[1]
            if name is not None and len(self._functions) < 256:
                self._functions[name] = fn_bytes
        args_item = encode(args, "args")
        kwargs_item = encode(kwargs, "kwargs") if kwargs else _NO_KWARGS
        task = (PLAIN, (fn_bytes, args_item[:2], kwargs_item[:2], name is not None))
        parts = (args_item, kwargs_item)
        moved = tuple(t for part in parts if len(part) > 3 for t in part[3])
        if not moved:
            return task
        return (*task, tuple(fd for part in parts if len(part) > 2 for fd in part[2]), moved)

    def _batch_size(self, chunksize: int, calls: int) -> int:
        if chunksize > 1:
            return chunksize
        return max(1, min(MAP_BATCH, calls // (self.size * 4)))

    # -- state and shutdown -----------------------------------------------------------

    def stats(self) -> PoolStats:
        return self._core.stats(self.size)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking tasks; finish the queued ones (or cancel them), then stop
        the isolates. With ``wait``, return once they are gone (at once if the
        pool's collector failed, or when called from a task's done-callback)."""
        self._core.shutdown(wait, cancel_futures)

    def _stop_all(self) -> None:
        self._core.stop_all()

    def _stop_all_and_wait(self) -> None:
        self._core.stop_and_wait()

    def __repr__(self) -> str:
        name = f" {self.debug_name!r}" if self.debug_name else ""
        return f"<Pool{name} size={self.size}>"
