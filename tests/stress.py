"""A randomized stress harness for subiso, reproducible from its seed.

    python tests/stress.py --seed 1 --seconds 30

The parent process prints the seed, runs the workload in a child process
(so that a crash is reported as a crash, with the seed) and prints the
command that reproduces a failure. The child drives, at once, many user
threads that open ports, send to them, receive from several threads at once
and close them from others; spawn isolates and kill them at random points,
mid-send included; submit to pools whose done-callbacks submit to another
pool; and send ``TransferableBuffer``s filled with a pattern derived from the
seed. It checks:

- no hang: every wait is bounded; a worker still busy after the budget, or a
  child still running after budget + margin, is a hang (stacks dumped with
  faulthandler);
- no crash (the child's exit status);
- no message lost, duplicated or reordered for a receiver that stays open
  until the sender's end marker;
- no buffer that holds bytes it was never given;
- only documented exceptions (``PortClosedError``, ``BrokenIsolateError``,
  ``NotSendableError``, ...) where an operation may fail;
- at the end, after ``settle()``: interpreters, threads, ports and fds back
  to where they were before the run.

On CPython 3.13, which keeps the memory of every interpreter it destroys,
operations that start isolates are paced to fit half the memory available
(``MemoryPace``); the child prints how long they waited and how much RSS
grew, on every version.

The schedule (which operation, with which sizes and delays) comes from
``random.Random(seed)``: each worker thread draws from its own generator,
seeded from the run's. Thread interleavings are not reproducible.

Operations, or the parts of them (features) that a known library bug breaks,
can be switched off with ``--skip``; ``KNOWN_BUGS`` lists those skipped by
default (``--all`` runs them too, ``--skip ''`` with ``--all`` runs everything).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

TESTS = Path(__file__).resolve().parent

# Operations or features skipped by default because a known library bug breaks
# them; each entry says which. Remove an entry (or pass --all) once it is fixed.
KNOWN_BUGS: dict[str, str] = {}

# Features (parts of operations) that --skip accepts besides operation names.
FEATURES = {
    "pool_cycle": "pool done-callbacks submit both ways between the shared pools",
    "kill_async_entry": "spawn_kill kills an isolate whose async entry awaits a port",
    "close_wakes_receivers": "close_race receivers block without a timeout until the close",
    "concurrent_join": "spawn_kill joins one isolate from two threads",
    "loops_share_port": "multi_port lets several asyncio receivers share a port",
    "pool_buffer": "pool tasks take a TransferableBuffer argument",
    "close_while_sending": "close_race closes a port while threads and an isolate send to it",
    "wait_cancelled": "concurrent.futures.wait() on pool tasks (some cancelled while running)",
    "eventfds": "the end check counts eventfds (wakers) besides other fds",
}

RESULT_TAG = "STRESS-RESULT "
FAILURE_TAG = "STRESS-FAILURE "
HANG_EXIT = 3  # the child's status when a worker outlived the budget
WATCHDOG_EXIT = 1  # faulthandler.dump_traceback_later(exit=True)
WAIT = 30.0  # the longest any single wait may take before it counts as a hang
SETTLE = 20.0  # how long the end may take to get back to the baseline


def margin(wait: float) -> float:
    """How long after its budget a child may run before it counts as hung:
    in-flight operations (2 x wait), pool shutdown (wait), settling, exit."""
    return 4 * wait + SETTLE + 30


# -- the parent: run the child, judge its outcome --------------------------------------


class Outcome:
    """What one child run ended with."""

    def __init__(self, seed: int, command: list[str], returncode: int | None, output: str):
        self.seed = seed
        self.command = command
        self.returncode = returncode
        self.output = output
        self.result: dict[str, object] | None = None
        self.failures: list[dict[str, object]] = []
        for line in output.splitlines():
            if line.startswith(RESULT_TAG):
                self.result = json.loads(line[len(RESULT_TAG) :])
            elif line.startswith(FAILURE_TAG):
                self.failures.append(json.loads(line[len(FAILURE_TAG) :]))

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.result is not None and bool(self.result.get("ok"))

    def verdict(self) -> str:
        code = self.returncode
        if code is None:
            return "HANG: the child did not finish within budget + margin (killed)"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals else str(-code)
            return f"CRASH: the child died of signal {name}"
        if code == HANG_EXIT:
            return "HANG: a worker thread was still busy after the budget (stacks above)"
        if self.result is None:
            if "Timeout (" in self.output:
                return "HANG: the watchdog fired (stacks above)"
            return f"CRASH: the child exited with status {code} without a result"
        if "Timeout (" in self.output:
            return "HANG at interpreter exit: the watchdog fired after the result (stacks above)"
        if not self.result.get("ok"):
            kinds = collections.Counter(str(f["kind"]) for f in self.failures)
            return "FAILED: " + ", ".join(f"{n} x {k}" for k, n in kinds.most_common())
        if code != 0:
            return f"FAILED: the child exited with status {code} after its result"
        return "OK"

    def reproduce(self) -> str:
        shown = [arg for arg in self.command if arg != "--child"]
        shown[0:2] = ["python", "tests/stress.py"]
        return " ".join(shown)

    def report(self) -> str:
        lines = [f"stress seed {self.seed}: {self.verdict()}"]
        if self.result is not None:
            lines.append(f"operations: {self.result.get('ops')}")
        if not self.ok:
            lines.append(f"reproduce with: {self.reproduce()}")
        return "\n".join(lines)


def child_command(
    seed: int,
    seconds: float,
    threads: int,
    wait: float,
    skip: set[str],
    only: set[str] | None,
) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child"]
    command += ["--seed", str(seed), "--seconds", f"{seconds:g}", "--threads", str(threads)]
    command += ["--wait", f"{wait:g}"]
    if skip:
        command += ["--skip", ",".join(sorted(skip))]
    else:
        command += ["--skip", ""]
    if only:
        command += ["--only", ",".join(sorted(only))]
    return command


def run_child(
    seed: int,
    seconds: float,
    *,
    threads: int = 8,
    skip: set[str] | None = None,
    only: set[str] | None = None,
    wait: float = WAIT,
    echo: bool = False,
) -> Outcome:
    """Run the workload in a child process; wait at most ``seconds + margin(wait)``."""
    skip = set(KNOWN_BUGS) if skip is None else skip
    command = child_command(seed, seconds, threads, wait, skip, only)
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        cwd=str(TESTS.parent),
    )
    lines: list[str] = []

    def relay() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if echo:
                sys.stdout.write(line)
                sys.stdout.flush()

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    returncode: int | None
    try:
        returncode = proc.wait(seconds + margin(wait) + 30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)  # faulthandler in the child dumps every stack
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        returncode = None
    reader.join(15)
    if proc.stdout is not None:
        proc.stdout.close()
    return Outcome(seed, command, returncode, "".join(lines))


def main_parent(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"stress seed {seed}", flush=True)
    skip = set() if args.all else set(KNOWN_BUGS)
    if args.skip is not None:
        skip |= {name for name in args.skip.split(",") if name}
    only = {name for name in args.only.split(",") if name} if args.only else None
    outcome = run_child(
        seed,
        args.seconds,
        threads=args.threads,
        skip=skip,
        only=only,
        wait=args.wait,
        echo=True,
    )
    print(outcome.report(), flush=True)
    return 0 if outcome.ok else 1


# -- the child: the workload -----------------------------------------------------------


class Failure(Exception):
    """An invariant the run found broken (raised inside an operation)."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def _pattern(seed: int, key: object, nbytes: int) -> bytes:
    return random.Random(f"{seed}/{key}").randbytes(nbytes)


def _fd_kinds() -> collections.Counter[str]:
    """Open fds of this process by kind (eventfd, memfd, pipe, socket, file)."""
    kinds: collections.Counter[str] = collections.Counter()
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the fd listdir itself used, or one closed meanwhile
        if "eventfd" in target:
            kinds["eventfd"] += 1
        elif target.startswith("/memfd:"):
            kinds[f"memfd {target}"] += 1
        elif target.startswith(("pipe:", "socket:")):
            kinds[target.split(":")[0]] += 1
        else:
            kinds["other"] += 1
    return kinds


def _workers(pool: Any) -> list[str]:
    """What a pool's workers are doing (for a hang report)."""
    from subiso import _backend

    found = []
    for worker in list(pool._core.workers.values()):
        iso = worker.isolate
        control = iso._control._qid if iso._control is not None else None
        found.append(
            f"#{worker.index} ready={worker.inbox is not None} task={worker.task is not None} "
            f"retiring={worker.retiring} killed={worker.killed} alive={iso.is_alive()} "
            f"control_queue={_backend.queue_count(control) if control is not None else None}"
        )
    return found


def _hub_module() -> tuple[Any, Callable[[], Any]]:
    """The module with ``settle`` and ``SPARES``, and how to get the hub."""
    from subiso import _hub

    return _hub, _hub.current_hub


def _proc_mib(path: str, field: str) -> float:
    """A field in kB of a /proc file (``VmRSS:`` of /proc/self/status), in MiB."""
    with open(path) as lines:
        for line in lines:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0


def _rss_mib() -> float:
    return _proc_mib("/proc/self/status", "VmRSS:")


class MemoryPace:
    """CPython 3.13 keeps ~2 MiB of every isolated interpreter it destroys
    (gh-110411, ``_backend.LEAKS_PER_INTERPRETER``), and this workload starts
    some 40 isolates a second: unpaced, a 10-minute run needs ~50 GiB. There
    the harness spreads a budget (half the memory available at the start)
    over the run: an operation that starts isolates waits while the process
    is over its share so far. Elsewhere it never waits."""

    FRACTION = 0.5
    STEP = 0.05

    def __init__(self, seconds: float, enabled: bool) -> None:
        self.enabled = enabled
        self.seconds = max(seconds, 1.0)
        self.budget = _proc_mib("/proc/meminfo", "MemAvailable:") * self.FRACTION
        self.start_rss = _rss_mib()
        self.start = time.monotonic()
        self.waited = 0.0  # seconds, summed over the workers
        self.lock = threading.Lock()

    def wait(self, deadline: float) -> None:
        if not self.enabled:
            return
        while time.monotonic() < deadline:
            share = min(1.0, (time.monotonic() - self.start + 1) / self.seconds)
            if _rss_mib() <= self.start_rss + self.budget * share:
                return
            time.sleep(self.STEP)
            with self.lock:
                self.waited += self.STEP

    def summary(self) -> str:
        grown = _rss_mib() - self.start_rss
        text = f"RSS grew {grown:,.0f} MiB"
        if self.enabled:
            text += (
                f"; paced for CPython 3.13's per-interpreter leak: budget "
                f"{self.budget:,.0f} MiB, workers waited {self.waited:,.0f} s in all"
            )
        return text


class Stress:
    """One run of the workload in this process."""

    def __init__(
        self, seed: int, seconds: float, threads: int, ops: list[str], skip: set[str]
    ) -> None:
        import helpers

        import subiso
        from subiso import _backend

        self.subiso = subiso
        self.backend = _backend
        self.hub_module, self.current_hub = _hub_module()
        self.helpers = helpers
        self.seed = seed
        self.seconds = seconds
        self.threads = threads
        self.rng = random.Random(seed)
        self.ops = ops
        self.skip = skip
        self.weights = [OPERATIONS[name] for name in ops]
        self.lock = threading.Lock()
        self.failures: list[Failure] = []
        self.counts: collections.Counter[str] = collections.Counter()
        # Isolates the operations may have alive at once; an operation takes
        # all it needs in one go (taking them one by one could deadlock).
        self.isolate_slots = 6
        self.slots_changed = threading.Condition(self.lock)
        self.slot_queue: collections.deque[object] = collections.deque()
        self.next_id = iter(range(1, 1 << 62))
        self.deadline = 0.0
        self.pools: list[object] = []
        self.pace = MemoryPace(seconds, enabled=False)  # set for real in run()
        self.pool_futures: list[object] = []

    # -- bookkeeping --------------------------------------------------------------

    def fail(self, kind: str, op: str, detail: str) -> None:
        record = {"kind": kind, "op": op, "detail": detail, "seed": self.seed}
        with self.lock:  # one line per failure, whole (print() writes the newline apart)
            self.failures.append(Failure(kind, detail))
            sys.stdout.write(FAILURE_TAG + json.dumps(record) + "\n")
            sys.stdout.flush()

    def enabled(self, feature: str) -> bool:
        return feature not in self.skip

    def new_id(self) -> int:
        with self.lock:
            return next(self.next_id)

    def check(self, condition: bool, kind: str, detail: str) -> None:
        if not condition:
            raise Failure(kind, detail)

    def documented(self, error: BaseException, *allowed: type[BaseException]) -> None:
        """Re-raise ``error`` as a failure unless it is one of ``allowed``."""
        if not isinstance(error, allowed):
            text = "".join(traceback.format_exception(error))
            names = ", ".join(a.__name__ for a in allowed)
            raise Failure("undocumented-exception", f"expected one of {names}; got:\n{text}")

    def join_thread(self, thread: threading.Thread, what: str, timeout: float = 0) -> None:
        timeout = timeout or WAIT
        thread.join(timeout)
        self.check(not thread.is_alive(), "hang", f"{what} still running after {timeout} s")

    def join_isolate(self, iso: object, what: str, timeout: float = 0) -> None:
        timeout = timeout or WAIT
        try:
            joined = iso.join(timeout)  # type: ignore[attr-defined]
        except Exception as error:
            self.documented(error)  # join raises nothing documented
            raise
        self.check(joined, "hang", f"{what}: join({timeout}) returned False")

    @contextlib.contextmanager
    def reserve(self, count: int) -> Iterator[None]:
        """Hold ``count`` isolate slots (for the isolates an operation spawns),
        first come first served: a large reservation is not starved."""
        with self.slots_changed:
            ticket = object()
            self.slot_queue.append(ticket)
            try:
                if not self.slots_changed.wait_for(
                    lambda: self.slot_queue[0] is ticket and self.isolate_slots >= count, WAIT * 4
                ):
                    raise Failure("hang", f"no {count} isolate slots came free in {WAIT * 4} s")
            finally:
                self.slot_queue.remove(ticket)
                self.slots_changed.notify_all()
            self.isolate_slots -= count
        try:
            yield
        finally:
            with self.slots_changed:
                self.isolate_slots += count
                self.slots_changed.notify_all()

    def spawn(self, entry: object, message: object, **kwargs: object) -> object:
        return self.subiso.Isolate.spawn(entry, message, **kwargs)

    def wait_futures(self, futures: list[object], timeout: float) -> set[object]:
        """The futures still pending after ``timeout`` seconds."""
        if self.enabled("wait_cancelled"):
            return concurrent.futures.wait(futures, timeout=timeout)[1]  # type: ignore[arg-type]
        limit = time.monotonic() + timeout
        while True:
            pending = {f for f in futures if not f.done()}  # type: ignore[attr-defined]
            if not pending or time.monotonic() > limit:
                return pending
            time.sleep(0.005)

    def thread(self, target: object, *args: object, name: str = "stress") -> threading.Thread:
        def guarded() -> None:
            try:
                target(*args)  # type: ignore[operator]
            except Failure as failure:
                self.fail(failure.kind, name, failure.detail)
            except BaseException as error:
                text = "".join(traceback.format_exception(error))
                self.fail("undocumented-exception", name, text)

        thread = threading.Thread(target=guarded, name=f"stress-{name}", daemon=True)
        thread.start()
        return thread

    # -- checking what receivers saw ----------------------------------------------------

    def check_streams(
        self,
        op: str,
        seen: list[list[tuple[int, object]]],
        counts: dict[int, int | None],
        complete: bool,
    ) -> None:
        """``seen``: what each receiver got, in order; ``counts``: how many each
        sender sent (None: unknown, killed); ``complete``: every sender's end
        marker was received, so nothing may be missing."""
        union: dict[int, collections.Counter[object]] = {s: collections.Counter() for s in counts}
        for receiver, messages in enumerate(seen):
            last: dict[int, int] = {}
            for sender, i in messages:
                if sender not in union:
                    raise Failure("foreign-message", f"{op}: receiver got {(sender, i)!r}")
                union[sender][i] += 1
                if i == "end":
                    continue
                if not isinstance(i, int) or i <= last.get(sender, -1):
                    raise Failure(
                        "reordered",
                        f"{op}: receiver {receiver} got ({sender}, {i!r}) after "
                        f"({sender}, {last.get(sender)})",
                    )
                last[sender] = i
        for sender, got in union.items():
            dups = sorted((i for i, n in got.items() if n > 1), key=str)
            if dups:
                raise Failure("duplicated", f"{op}: sender {sender}: {dups[:10]} more than once")
            numbers = sorted(i for i in got if i != "end")
            count = counts[sender]
            if complete or "end" in got:
                expected = count if count is not None else len(numbers)
                if numbers != list(range(expected)) or "end" not in got:
                    missing = sorted(set(range(expected)) - set(numbers))
                    raise Failure(
                        "lost",
                        f"{op}: sender {sender} sent {count}, receivers saw {len(numbers)}; "
                        f"missing {missing[:10]} (of {len(missing)}), end={'end' in got}",
                    )

    # -- operations -----------------------------------------------------------------

    def op_stream_kill(self, rng: random.Random) -> None:
        """An isolate streams numbered messages; kill it at a random point
        (before it starts, mid-send, or never) and check what arrived is
        exactly a prefix, in order."""
        subiso = self.subiso
        n = rng.choice([10, 200, 2000, 20000])
        mode = rng.choice(["never", "at-once", "after-some", "after-some", "from-thread"])
        priority = rng.choice([subiso.IMMEDIATE, subiso.BEFORE_NEXT_EVENT])
        after = rng.randint(0, n)
        twice = rng.random() < 0.2
        sid = self.new_id()
        port = subiso.ReceivePort()
        try:
            iso = self.spawn(self.helpers.stress_stream, (port.send_port, sid, n))
            got: list[tuple[int, object]] = []
            killer = None
            if mode == "at-once":
                iso.kill(priority)
            elif mode == "from-thread":
                killer = self.thread(iso.kill, priority, name="stream_kill.killer")
            ended = False
            if mode in ("never", "after-some"):
                limit = n + 1 if mode == "never" else after
                while len(got) < limit and not ended:
                    try:
                        message = port.receive(timeout=WAIT)
                    except TimeoutError:
                        raise Failure(
                            "lost", f"stream_kill: nothing after {len(got)} of {n} in {WAIT} s"
                        ) from None
                    got.append(message)
                    ended = message[1] == "end"
                if mode == "after-some":
                    iso.kill(priority)
            if twice:
                iso.kill(subiso.IMMEDIATE)
            if killer is not None:
                self.join_thread(killer, "the killer thread")
            self.join_isolate(iso, f"stream_kill ({mode}, {n} messages)")
            if mode == "never":
                iso.kill(subiso.IMMEDIATE)  # killing an exited isolate is harmless
            while not ended:  # what it sent before it died is all there
                try:
                    message = port.receive(timeout=0.05)
                except TimeoutError:
                    break
                got.append(message)
                ended = message[1] == "end"
            self.check_streams("stream_kill", [got], {sid: n}, complete=mode == "never")
        finally:
            port.close()

    def op_multi_port(self, rng: random.Random) -> None:
        """Several senders (isolates and threads) and several receivers
        (blocking, iterating, asyncio) share one port; all stay open until
        every end marker: each number exactly once, in order per receiver."""
        subiso = self.subiso
        port = subiso.ReceivePort()
        senders: dict[int, int | None] = {}
        isolates = []
        threads = []
        lock = threading.Lock()
        ends = [0]
        total = rng.randint(1, 3) + rng.randint(0, 2)
        all_ended = threading.Event()
        seen: list[list[tuple[int, object]]] = []
        try:
            receivers = []
            loops = 0
            for _r in range(rng.randint(1, 4)):
                kind = rng.choice(["receive", "receive", "async"])
                if kind == "async":
                    loops += 1
                    if loops > 1 and not self.enabled("loops_share_port"):
                        kind = "receive"
                got: list[tuple[int, object]] = []
                seen.append(got)
                receivers.append((kind, got))

            def note(message: tuple[int, object], got: list[tuple[int, object]]) -> None:
                got.append(message)
                if message[1] == "end":
                    with lock:
                        ends[0] += 1
                        if ends[0] == total:
                            all_ended.set()

            def receive_loop(got: list[tuple[int, object]]) -> None:
                limit = time.monotonic() + WAIT * 2
                while not all_ended.is_set() and time.monotonic() < limit:
                    try:
                        note(port.receive(timeout=0.2), got)
                    except TimeoutError:
                        continue
                    except subiso.PortClosedError:
                        if all_ended.is_set():  # closed after a failure elsewhere
                            return
                        raise

            def async_loop(got: list[tuple[int, object]]) -> None:
                import asyncio

                async def loop() -> None:
                    limit = time.monotonic() + WAIT * 2
                    while not all_ended.is_set() and time.monotonic() < limit:
                        try:
                            note(await port.receive_async(timeout=0.2), got)
                        except TimeoutError:
                            continue
                        except subiso.PortClosedError:
                            if all_ended.is_set():  # closed after a failure elsewhere
                                return
                            raise

                asyncio.run(loop())

            for kind, got in receivers:
                target = async_loop if kind == "async" else receive_loop
                threads.append(self.thread(target, got, name=f"multi_port.{kind}"))

            def send_loop(sid: int, n: int, pace: int) -> None:
                for i in range(n):
                    port.send_port.send((sid, i))
                    if pace and i % pace == 0:
                        time.sleep(0)
                port.send_port.send((sid, "end"))

            for _s in range(total):
                sid = self.new_id()
                n = rng.choice([1, 50, 500, 3000])
                senders[sid] = n
                if rng.random() < 0.5:
                    isolates.append(
                        self.spawn(self.helpers.stress_stream, (port.send_port, sid, n))
                    )
                else:
                    pace = rng.choice([0, 7, 100])
                    threads.append(self.thread(send_loop, sid, n, pace, name="multi_port.sender"))
            if not all_ended.wait(WAIT * 2):
                raise Failure(
                    "lost",
                    f"multi_port: {ends[0]} of {total} end markers within {WAIT * 2} s; "
                    f"received {sum(map(len, seen))} messages",
                )
            for thread in threads:
                self.join_thread(thread, "a multi_port thread")
            for iso in isolates:
                self.join_isolate(iso, "a multi_port sender")
            self.check_streams("multi_port", seen, senders, complete=True)
        finally:
            all_ended.set()  # receivers stop looking (after a failure)
            closer = self.thread(port.close, name="multi_port.closer")
            self.join_thread(closer, "the closing thread")

    def op_close_race(self, rng: random.Random) -> None:
        """Receivers block on a port that another thread closes mid-stream:
        they all wake with PortClosedError; senders never notice; what was
        received is never duplicated or reordered."""
        subiso = self.subiso
        port = subiso.ReceivePort()
        send_port = port.send_port
        seen: list[list[tuple[int, object]]] = []
        woke: list[float] = []
        closed_at = [0.0]
        threads = []
        isolates = []
        senders: dict[int, int | None] = {}
        stop = threading.Event()
        PortClosedError = subiso.PortClosedError
        try:

            def receive_loop(got: list[tuple[int, object]], style: str) -> None:
                try:
                    if not self.enabled("close_wakes_receivers"):
                        while True:
                            try:
                                got.append(port.receive(timeout=0.5))
                            except TimeoutError:
                                if time.monotonic() - closed_at[0] > WAIT and closed_at[0]:
                                    raise
                    elif style == "iterate":
                        for message in port:
                            got.append(message)
                    else:
                        while True:
                            got.append(port.receive(timeout=WAIT))
                except PortClosedError:
                    pass
                except TimeoutError:
                    raise Failure("hang", "close_race: a receiver never saw the close") from None
                woke.append(time.monotonic())

            for _ in range(rng.randint(1, 4)):
                got: list[tuple[int, object]] = []
                seen.append(got)
                style = rng.choice(["receive", "iterate"])
                threads.append(self.thread(receive_loop, got, style, name="close_race.receiver"))

            def send_loop(sid: int) -> None:
                i = 0
                while not stop.is_set() and i < 100_000:
                    send_port.send((sid, i))  # never raises, closed or not
                    i += 1
                    if i % 64 == 0:
                        time.sleep(0)

            senders_threads = []
            for _ in range(rng.randint(0, 2)):
                sid = self.new_id()
                senders[sid] = None
                senders_threads.append(self.thread(send_loop, sid, name="close_race.sender"))
            if rng.random() < 0.5 and self.enabled("close_while_sending"):
                sid = self.new_id()
                senders[sid] = 50_000
                isolates.append(self.spawn(self.helpers.stress_stream, (send_port, sid, 50_000)))
            time.sleep(rng.choice([0, 0.001, 0.01, 0.05]))

            def close() -> None:
                closed_at[0] = time.monotonic()
                port.close()

            if not self.enabled("close_while_sending"):
                stop.set()
                for thread in senders_threads:
                    self.join_thread(thread, "a sender")
            closer = self.thread(close, name="close_race.closer")
            self.join_thread(closer, "the closing thread")
            for thread in threads:
                self.join_thread(thread, "a receiver after close", timeout=10)
            stop.set()
            for thread in senders_threads:
                self.join_thread(thread, "a sender to a closed port")
            for iso in isolates:
                self.join_isolate(iso, "an isolate sending to a closed port")
            late = [t - closed_at[0] for t in woke if t - closed_at[0] > 5]
            self.check(not late, "hang", f"close_race: receivers woke {late} s after close")
            self.check_streams("close_race", seen, senders, complete=False)
            self.check(port.is_closed, "state", "close_race: the port is not closed")
            try:
                port.receive(timeout=0.01)
                raise Failure("state", "close_race: receive on a closed port returned")
            except PortClosedError:
                pass
        finally:
            stop.set()
            port.close()

    def op_port_churn(self, rng: random.Random) -> None:
        """Many ports opened, sent to from threads, received from, closed by
        other threads in random order; RawReceivePorts with late handlers."""
        subiso = self.subiso
        ports = [subiso.ReceivePort() for _ in range(rng.randint(1, 8))]
        raws = []
        try:
            for port in ports:
                n = rng.randint(0, 20)
                for i in range(n):
                    port.send_port.send((0, i))
                take = rng.randint(0, n)
                got = [port.receive(timeout=WAIT) for _ in range(take)]
                self.check(
                    got == [(0, i) for i in range(take)],
                    "lost",
                    f"port_churn: {got[:5]}... for {take}",
                )
            for _ in range(rng.randint(0, 3)):
                got: list[object] = []
                raw = subiso.RawReceivePort(debug_name="churn")
                raws.append((raw, got))
                n = rng.randint(0, 30)
                for i in range(n):
                    raw.send_port.send(i)
                done = threading.Event()

                def handle(message: object, got: list[object] = got, n: int = n, done=done) -> None:
                    got.append(message)
                    if len(got) == n:
                        done.set()

                raw.handler = handle
                if n:
                    self.check(done.wait(WAIT), "lost", f"port_churn: raw port got {len(got)}/{n}")
                self.check(got == list(range(n)), "lost", f"port_churn raw: {got[:10]}")
            order = ports + [raw for raw, _ in raws]
            rng.shuffle(order)
            closers = [
                self.thread(p.close, name="port_churn.closer") for p in order if rng.random() < 0.7
            ]
            for thread in closers:
                self.join_thread(thread, "a closing thread")
        finally:
            for port in ports:
                port.close()
            for raw, _ in raws:
                raw.close()

    def op_listen(self, rng: random.Random) -> None:
        """A listened port in the main interpreter (its dispatcher) gets
        numbered streams from isolates and threads; exact order per sender."""
        subiso = self.subiso
        port = subiso.ReceivePort()
        got: list[tuple[int, object]] = []
        total = rng.randint(1, 3)
        ends = [0]
        done = threading.Event()
        isolates = []

        def handle(message: tuple[int, object]) -> None:
            got.append(message)
            if message[1] == "end":
                ends[0] += 1
                if ends[0] == total:
                    done.set()

        try:
            senders: dict[int, int | None] = {}
            early = rng.random() < 0.5
            if early:
                port.listen(handle)
            threads = []
            for _ in range(total):
                sid = self.new_id()
                n = rng.choice([1, 100, 1000])
                senders[sid] = n
                if rng.random() < 0.5:
                    isolates.append(
                        self.spawn(self.helpers.stress_stream, (port.send_port, sid, n))
                    )
                else:
                    threads.append(
                        self.thread(
                            self.helpers.stress_stream,
                            (port.send_port, sid, n),
                            name="listen.sender",
                        )
                    )
            if not early:  # messages wait for a late handler
                port.listen(handle)
            if not done.wait(WAIT * 2):
                per_sender = collections.Counter(sender for sender, _ in got)
                raise Failure(
                    "lost",
                    f"listen ({'early' if early else 'late'} handler): {ends[0]}/{total} end "
                    f"markers in {WAIT * 2} s; sent {senders}, received {dict(per_sender)}; "
                    f"sender isolates alive: {[iso.is_alive() for iso in isolates]}",
                )
            for thread in threads:
                self.join_thread(thread, "a listen sender")
            for iso in isolates:
                self.join_isolate(iso, "a listen sender isolate")
            self.check_streams("listen", [got], senders, complete=True)
        finally:
            closer = self.thread(port.close, name="listen.closer")
            self.join_thread(closer, "the closing thread")

    def op_relay(self, rng: random.Random) -> None:
        """Numbered messages through a relay isolate (blocking or listening),
        killed at a random point: what comes back is a prefix, in order."""
        subiso = self.subiso
        entry = rng.choice([self.helpers.stress_relay, self.helpers.stress_listen_relay])
        n = rng.choice([5, 100, 1000])
        kill_at = rng.choice([None, rng.randint(0, n)])
        priority = rng.choice([subiso.IMMEDIATE, subiso.BEFORE_NEXT_EVENT])
        sid = self.new_id()
        port = subiso.ReceivePort()
        try:
            iso = self.spawn(entry, port.send_port)
            _tag, inbox = port.receive(timeout=WAIT)
            for i in range(n):
                if i == kill_at:
                    iso.kill(priority)
                inbox.send((sid, i))
            inbox.send((sid, "end"))
            got: list[tuple[int, object]] = []
            complete = kill_at is None
            while True:
                try:
                    message = port.receive(timeout=WAIT if complete else 0.2)
                except TimeoutError:
                    if complete:
                        raise Failure(
                            "lost", f"relay: {len(got)}/{n} came back in {WAIT} s"
                        ) from None
                    break
                got.append(message)
                if message[1] == "end":
                    break
            # Also after a kill: a blocking entry lets a BEFORE_NEXT_EVENT kill land.
            inbox.send(("stop",))
            self.join_isolate(iso, f"relay ({entry.__name__}, kill at {kill_at})")
            self.check_streams("relay", [got], {sid: n}, complete=complete)
        finally:
            port.close()

    def op_spawn_kill(self, rng: random.Random) -> None:
        """Spawn an isolate of some kind, kill it after a random delay from
        this thread or another, join it from one or two threads."""
        subiso = self.subiso
        h = self.helpers
        kind = rng.choice(["busy", "receive_forever", "listen", "async", "failing", "exit"])
        if kind == "async" and not self.enabled("kill_async_entry"):
            kind = "listen"
        entry = {
            "busy": h.busy_entry,
            "receive_forever": h.receive_forever,
            "listen": h.pausable_entry,
            "async": h.async_entry,
            "failing": h.failing_entry,
            "exit": h.exit_entry,
        }[kind]
        delay = rng.choice([0, 0, 0.001, 0.01])
        priority = subiso.BEFORE_NEXT_EVENT if kind == "listen" and rng.random() < 0.5 else None
        joiners = rng.randint(1, 2) if self.enabled("concurrent_join") else 1
        port = subiso.ReceivePort()
        try:
            message = port.send_port if kind != "failing" else "on purpose"
            iso = self.spawn(entry, message, on_error=port.send_port, debug_name=f"stress-{kind}")
            resume = iso.pause() if rng.random() < 0.3 else None
            time.sleep(delay)
            if kind in ("failing", "exit") and rng.random() < 0.5:
                # It ends by itself, once resumed: a pause that lands before
                # its entry runs holds the entry back, as in Dart.
                if resume is not None:
                    iso.resume(resume)
            elif rng.random() < 0.5:
                iso.kill(priority if priority is not None else subiso.IMMEDIATE)
            else:
                killer = self.thread(
                    iso.kill,
                    priority if priority is not None else subiso.IMMEDIATE,
                    name="spawn_kill.killer",
                )
                self.join_thread(killer, "the killer thread")
            extra = [
                self.thread(self.join_isolate, iso, f"spawn_kill {kind}", name="spawn_kill.joiner")
                for _ in range(joiners - 1)
            ]
            self.join_isolate(iso, f"spawn_kill {kind}")
            for thread in extra:
                self.join_thread(thread, "a second joiner")
            self.check(not iso.is_alive(), "state", f"spawn_kill {kind}: alive after join")
        finally:
            port.close()

    def _pool_job(self, rng: random.Random, key: int) -> tuple[str, tuple[object, ...], object]:
        """A pool task: (kind, (fn, *args), what its outcome must be)."""
        h = self.helpers
        kind = rng.choices(["value", "raise", "die", "cancel", "buffer"], [8, 1, 1, 1, 2])[0]
        if kind == "buffer" and not self.enabled("pool_buffer"):
            kind = "value"
        if kind == "value":
            return kind, (h.stress_value, key), h.stress_value(key)
        if kind == "raise":
            return kind, (h.boom, f"task {key}"), h.Boom
        if kind == "die":
            return kind, (h.die,), self.subiso.BrokenIsolateError
        if kind == "cancel":  # cancelled at once or while it runs; else it ends soon
            return kind, (h.busy_sum, 10**6), sum(range(10**6))
        data = _pattern(self.seed, f"pool-{key}", rng.choice([0, 1, 4096, 100_000]))
        import zlib

        buffer = self.subiso.TransferableBuffer(data)
        return kind, (h.stress_buffer_digest, buffer), (len(data), zlib.crc32(data))

    def _check_task(self, op: str, kind: str, future: object, expected: object) -> None:
        import concurrent.futures

        if future.cancelled():  # type: ignore[attr-defined]
            return
        error = future.exception(0)  # type: ignore[attr-defined]
        if kind in ("value", "buffer") or (kind == "cancel" and error is None):
            # Other tasks' isolates dying (cancel, Isolate.exit) leaves this one alone.
            if error is not None:
                self.documented(error)
            result = future.result(0)  # type: ignore[attr-defined]
            self.check(
                result == expected,
                "wrong-result",
                f"{op}: {kind} gave {result!r}, not {expected!r}",
            )
        elif kind == "raise":
            self.check(error is not None, "wrong-result", f"{op}: a raising task returned")
            self.documented(error, expected, self.subiso.BrokenIsolateError)
        elif kind == "die":
            self.check(
                error is not None, "wrong-result", f"{op}: Isolate.exit() in a task returned"
            )
            self.documented(error, self.subiso.BrokenIsolateError)
        elif kind == "cancel":
            self.documented(error, concurrent.futures.CancelledError)

    def op_pool_cross(self, rng: random.Random) -> None:
        """Tasks on the shared pools whose done-callbacks submit follow-ups to
        the other pool (both ways at once across threads)."""

        subiso = self.subiso
        pools = self.pools
        lock = threading.Lock()
        tracked: list[tuple[str, object, object]] = []
        depth = rng.randint(0, 4)
        seeds = [rng.getrandbits(32) for _ in range(rng.randint(1, 6))]

        def submit(pool_index: int, key: int, level: int, task_rng: random.Random) -> None:
            pool = pools[pool_index]
            kind, call, expected = self._pool_job(task_rng, key)
            if level > 0 and kind == "cancel":
                kind, call, expected = "value", (self.helpers.stress_value, key), None
                expected = self.helpers.stress_value(key)
            try:
                future = pool.submit(*call)  # type: ignore[attr-defined]
            except Exception as error:
                # RuntimeError: shut down (only at the end of the run).
                self.documented(error, RuntimeError, subiso.BrokenIsolateError)
                return
            with lock:
                tracked.append((kind, future, expected))
            if kind == "cancel":
                time.sleep(task_rng.choice([0, 0.001, 0.02]))
                future.cancel()
            if level < depth and (pool_index == 0 or self.enabled("pool_cycle")):
                next_seed = task_rng.getrandbits(32)

                def follow_up(_: object) -> None:
                    try:
                        submit(1 - pool_index, key + 1, level + 1, random.Random(next_seed))
                    except Failure as failure:
                        self.fail(failure.kind, "pool_cross.callback", failure.detail)

                future.add_done_callback(follow_up)

        for s in seeds:
            submit(rng.randint(0, 1), s, 0, random.Random(s))
        limit = time.monotonic() + WAIT * 2
        checked = 0
        while True:
            with lock:
                batch = tracked[checked:]
            if not batch:
                # Callbacks may still be about to submit: wait until the
                # futures we have are done, then look once more.
                time.sleep(0.01)
                with lock:
                    batch = tracked[checked:]
                if not batch:
                    break
            futures = [f for _, f, _ in batch]
            left = limit - time.monotonic()
            pending = self.wait_futures(futures, max(0, left))
            if pending:
                kinds = [(k, repr(f)) for k, f, _ in batch if f in pending]
                raise Failure(
                    "hang",
                    f"pool_cross: {len(pending)} tasks unfinished after {WAIT * 2} s: {kinds}; "
                    f"stats {[p.stats() for p in pools]}; "  # type: ignore[attr-defined]
                    f"workers {[_workers(p) for p in pools]}",
                )
            for kind, future, expected in batch:
                self._check_task("pool_cross", kind, future, expected)
            checked += len(batch)
            # A done-callback runs after the future is done: let it submit.
            time.sleep(0.005)
            with lock:
                if len(tracked) == checked:
                    break

    def op_pool_churn(self, rng: random.Random) -> None:
        """A short-lived pool: a few tasks (some submitting to the shared
        pools from their callbacks), then shutdown in one of its forms."""

        subiso = self.subiso
        size = rng.randint(1, 2)
        max_tasks = rng.choice([None, None, 1, 3])
        pool = subiso.Pool(size, max_tasks_per_isolate=max_tasks, debug_name="churn")
        jobs = []
        for _ in range(rng.randint(0, 6)):
            key = rng.getrandbits(32)
            kind, call, expected = self._pool_job(rng, key)
            future = pool.submit(*call)
            jobs.append((kind, future, expected))
            if kind == "cancel":
                future.cancel()
            if rng.random() < 0.3:
                shared = self.pools[rng.randint(0, 1)]

                def forward(_: object, shared=shared, key=key) -> None:
                    try:
                        shared.submit(self.helpers.stress_value, key)
                    except RuntimeError:
                        pass  # the shared pools are shut down at the end

                future.add_done_callback(forward)
        how = rng.choice(["wait", "nowait", "cancel", "with"])
        if how == "cancel":
            pool.shutdown(wait=True, cancel_futures=True)
        elif how == "nowait":
            pool.shutdown(wait=False)
        else:
            pool.shutdown(wait=True)
        futures = [f for _, f, _ in jobs]
        pending = self.wait_futures(futures, WAIT)
        self.check(not pending, "hang", f"pool_churn: {len(pending)} tasks never finished")
        for kind, future, expected in jobs:
            if how == "cancel" and future.cancelled():
                continue
            self._check_task("pool_churn", kind, future, expected)
        try:
            pool.submit(self.helpers.square, 2)
            raise Failure("state", "pool_churn: submit after shutdown was accepted")
        except RuntimeError:
            pass

    def op_transfer(self, rng: random.Random) -> None:
        """A TransferableBuffer filled from the seed goes somewhere and comes
        back (or is materialized there): its bytes must be exactly those."""
        import zlib

        subiso = self.subiso
        nbytes = rng.choice([0, 1, 4095, 65536, 1 << 20])
        key = self.new_id()
        data = _pattern(self.seed, key, nbytes)
        crc = zlib.crc32(data)
        route = rng.choice(
            ["local", "port", "relay", "check", "pool", "run", "dropped", "killed", "unsendable"]
        )
        buffer = subiso.TransferableBuffer(data)

        def verify(where: str, view: memoryview) -> None:
            self.check(
                len(view) == nbytes and bytes(view) == data,
                "wrong-bytes",
                f"transfer via {where}: {len(view)} bytes, not the {nbytes} given",
            )

        def sent_away(where: str) -> None:
            try:
                buffer.materialize()
                raise Failure("state", f"transfer via {where}: materialize after sending worked")
            except ValueError:
                pass

        if route == "local":
            verify("local", buffer.materialize())
            try:
                buffer.materialize()
                raise Failure("state", "transfer: a second materialize worked")
            except ValueError:
                pass
        elif route in ("port", "dropped"):
            port = subiso.ReceivePort()
            try:
                port.send_port.send(("buffer", buffer))
                sent_away(route)
                if route == "port":
                    box: list[object] = []
                    receiver = self.thread(
                        lambda: box.append(port.receive(timeout=WAIT)), name="transfer.receiver"
                    )
                    self.join_thread(receiver, "transfer receiver")
                    self.check(bool(box), "lost", "transfer via port: nothing arrived")
                    verify("port", box[0][1].materialize())  # type: ignore[index]
            finally:
                port.close()  # a buffer still queued is dropped: its fd must close
        elif route in ("relay", "killed"):
            port = subiso.ReceivePort()
            try:
                iso = self.spawn(self.helpers.stress_relay, port.send_port)
                _, inbox = port.receive(timeout=WAIT)
                inbox.send(("buffer", buffer))
                sent_away(route)
                if route == "killed":
                    iso.kill(subiso.IMMEDIATE)
                else:
                    _, back = port.receive(timeout=WAIT)
                    verify("relay", back.materialize())
                    inbox.send(("stop",))
                self.join_isolate(iso, f"transfer {route}")
            finally:
                port.close()
        elif route == "check":
            port = subiso.ReceivePort()
            try:
                iso = self.spawn(
                    self.helpers.stress_buffer_check, (port.send_port, buffer, nbytes, crc)
                )
                sent_away(route)
                _, ok, copy = port.receive(timeout=WAIT)
                self.check(ok, "wrong-bytes", f"transfer: an isolate saw other bytes ({nbytes})")
                verify("check", copy.materialize())
                self.join_isolate(iso, "transfer check")
            finally:
                port.close()
        elif route == "pool" and self.enabled("pool_buffer"):
            future = self.pools[rng.randint(0, 1)].submit(self.helpers.stress_buffer_digest, buffer)
            try:
                result = future.result(WAIT)
            except TimeoutError:
                raise Failure("hang", "transfer via pool: no result") from None
            self.check(result == (nbytes, crc), "wrong-bytes", f"transfer via pool: {result}")
        elif route == "run":
            result = subiso.run(self.helpers.stress_buffer_digest, buffer)
            self.check(result == (nbytes, crc), "wrong-bytes", f"transfer via run: {result}")
        elif route == "unsendable":
            port = subiso.ReceivePort()
            try:
                port.send_port.send(0)
                try:
                    port.send_port.send((buffer, threading.Lock()))
                    raise Failure("state", "a lock was sent")
                except subiso.NotSendableError:
                    pass
                port.send_port.send(1)
                got = [port.receive(timeout=WAIT), port.receive(timeout=WAIT)]
                self.check(got == [0, 1], "lost", f"NotSendableError lost messages: {got}")
                # Nothing was sent: the buffer is still ours.
                verify("an unsendable message", buffer.materialize())
            finally:
                port.close()

    def op_run(self, rng: random.Random) -> None:
        """One-shot run(): value, remote exception, by-value function."""
        h = self.helpers
        x = rng.randint(-1000, 1000)
        kind = rng.choice(["value", "raise", "lambda"])
        if kind == "value":
            self.check(self.subiso.run(h.square, x) == x * x, "wrong-result", "run(square)")
        elif kind == "raise":
            try:
                self.subiso.run(h.boom, str(x))
                raise Failure("wrong-result", "run(boom) returned")
            except h.Boom as error:
                self.check(str(error) == str(x), "wrong-result", f"run(boom): {error!r}")
        else:
            self.check(self.subiso.run(lambda: x + 1) == x + 1, "wrong-result", "run(lambda)")

    # -- the run ------------------------------------------------------------------------

    def worker(self, index: int, rng: random.Random) -> None:
        while time.monotonic() < self.deadline:
            name = rng.choices(self.ops, self.weights)[0]
            op = getattr(self, f"op_{name}")
            if ISOLATES[name] or name.startswith("pool"):  # pools replace workers
                self.pace.wait(self.deadline)
            try:
                with self.reserve(ISOLATES[name]):
                    op(rng)
            except Failure as failure:
                self.fail(failure.kind, name, failure.detail)
            except BaseException as error:
                text = "".join(traceback.format_exception(error))
                self.fail("undocumented-exception", name, text)
            with self.lock:
                self.counts[name] += 1

    def snapshot(self) -> dict[str, object]:
        from subiso import _mailbag
        from subiso._ports import _Local

        return {
            "threads": set(threading.enumerate()),
            "fds": _fd_kinds(),
            "ports": set(_Local.ports),
            "free_wakers": self.backend.free_waker_count(),
            "mailbag": _mailbag.segment_count(),
        }

    def wait_spares(self, timeout: float) -> None:
        hub = self.current_hub()
        if hub is not None:
            hub.replenish()
            self.hub_module.settle(timeout)  # (until the spares asked for are warm)

    def describe_handed(self, hub: Any) -> list[str]:
        """The exited isolates' mailbag segments the hub still waits for:
        where each stops, and the queue of the record it waits on."""
        import struct

        described = []
        for each in list(hub.handed):
            for fd, head, offset in list(each.segments):
                try:
                    header = os.pread(fd, 24, offset)
                    size, _stamp, state, _, qid = struct.unpack("<IIIIQ", header)
                    exists = self.backend.queue_exists(qid)
                    count = self.backend.queue_count(qid) if exists else 0
                    described.append(
                        f"fd {fd} at {offset}/{head}: state {state}, size {size}, "
                        f"queue {qid} exists={exists} count={count}"
                    )
                except OSError as error:
                    described.append(f"fd {fd} at {offset}/{head}: {error}")
        return described

    def leaks(self, base: dict[str, object]) -> list[str]:
        """What is not back to ``base`` (empty when all is)."""
        from subiso._ports import _Process

        problems = []
        if not self.hub_module.settle(1):
            hub = self.current_hub()
            problems.append(
                f"isolates left: live={len(hub.live)} spares={len(hub.spares)} "
                f"warming={len(hub.warming)} zombies={len(hub.zombies)} "
                f"ending={len(hub.ending)} reaping={len(_Process.reaping)} "
                f"handed={self.describe_handed(hub)} "
                f"hub alive={hub.thread.is_alive()} broken={hub.broken!r}"
            )
        hub = self.current_hub()
        ready = len(hub.spares) if hub else 0
        warming = len(hub.warming) if hub else 0
        reaper = 1 if hub else 0  # the reaper's interpreter lives with the hub
        interpreters = len(self.backend.interpreter_ids()) - reaper
        if not 1 + ready <= interpreters <= 1 + ready + warming:
            problems.append(f"interpreters: {interpreters} for {ready} spares, {warming} warming")
        now = self.snapshot()
        allowed = (
            "subiso-spare",
            "subiso-hub",
            "subiso-port-dispatcher",
            "subiso-isolate",
            "subiso-finalizer",
            "subiso-callbacks-",  # (a pool's, which ends just after its collector)
        )
        threads = [
            t
            for t in now["threads"] - base["threads"]  # type: ignore[operator]
            if not t.name.startswith(allowed) and not t.name.startswith("subiso-host")
        ]
        if threads:
            problems.append(f"threads left: {sorted(t.name for t in threads)}")
        ports = now["ports"] - base["ports"]  # type: ignore[operator]
        if ports:
            from subiso._ports import _Local

            problems.append(f"ports left open: {[_Local.ports.get(q) for q in ports]}")
        fds, base_fds = now["fds"], base["fds"]
        for kind in set(fds) | set(base_fds):  # type: ignore[arg-type]
            grown = fds[kind] - base_fds[kind]  # type: ignore[index]
            if kind == "eventfd":
                # Wakers are never closed, only recycled: the free lists
                # may have grown; spares hold theirs.
                grown -= now["free_wakers"] - base["free_wakers"]  # type: ignore[operator]
                grown -= 4 * max(0, ready - self.base_spares)
            if kind.startswith("memfd /memfd:subiso-mailbag"):
                # The main interpreter's own segments live on, for reuse.
                grown -= now["mailbag"] - base["mailbag"]  # type: ignore[operator]
            if grown > 0 and kind == "eventfd" and not self.enabled("eventfds"):
                print(f"note: {grown} more eventfds than before (check switched off)")
            elif grown > 0 and kind == "other":
                # subiso opens eventfds, memfds, pipes and sockets only; CPython
                # 3.14 keeps one more fd of its own open after the first run.
                print(f"note: {grown} more fds of other kinds than before")
            elif grown > 0:
                problems.append(f"fds: {grown} more {kind} than before")
        return problems

    def watch_hooks(self) -> None:
        """An exception nobody could catch (in ``__del__``, in a thread of the
        library or of the harness) is a failure too."""
        seen: set[str] = set()

        def unraisable(info: Any) -> None:
            text = "".join(
                traceback.format_exception(info.exc_type, info.exc_value, info.exc_traceback)
            )
            key = f"{info.exc_type.__name__}: {info.exc_value}"
            if key not in seen:  # once per kind: a broken __del__ fires every time
                seen.add(key)
                self.fail("unraisable", str(info.object), f"{info.err_msg or ''}\n{text}")

        def thread_died(args: Any) -> None:
            if args.exc_type is SystemExit:
                return
            text = "".join(
                traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
            )
            name = args.thread.name if args.thread is not None else "?"
            self.fail("thread-died", name, text)

        sys.unraisablehook = unraisable
        threading.excepthook = thread_died

    def run(self) -> bool:
        subiso = self.subiso
        self.watch_hooks()
        # Warm up what lives for the whole process (hub, spares, dispatcher).
        subiso.run(self.helpers.square, 2)
        warm = subiso.RawReceivePort(lambda _: None)
        warm.close()
        self.hub_module.settle(SETTLE)
        self.wait_spares(SETTLE)
        hub = self.current_hub()
        self.base_spares = len(hub.spares) if hub else 0
        base = self.snapshot()

        self.pools = [
            subiso.Pool(self.rng.randint(1, 2), debug_name=f"shared-{name}") for name in "AB"
        ]
        rngs = [random.Random(self.rng.getrandbits(64)) for _ in range(self.threads)]
        self.pace = MemoryPace(self.seconds, self.backend.LEAKS_PER_INTERPRETER)
        self.deadline = time.monotonic() + self.seconds
        workers = [
            threading.Thread(target=self.worker, args=(i, r), name=f"stress-worker-{i}")
            for i, r in enumerate(rngs)
        ]
        for thread in workers:
            thread.start()
        # Every operation bounds its own waits; a worker still busy well after
        # the deadline is a hang.
        grace = self.deadline + WAIT * 2
        for thread in workers:
            thread.join(max(0.0, grace - time.monotonic()))
        busy = [t.name for t in workers if t.is_alive()]
        if busy:
            self.fail("hang", "run", f"workers still busy {WAIT * 2} s after the deadline: {busy}")
            import faulthandler

            faulthandler.dump_traceback(all_threads=True)
            sys.stdout.flush()
            os._exit(HANG_EXIT)

        def shutdown_pools() -> None:
            for pool in self.pools:
                pool.shutdown(wait=True)  # type: ignore[attr-defined]

        closer = threading.Thread(target=shutdown_pools, name="stress-shutdown", daemon=True)
        closer.start()
        closer.join(WAIT)
        if closer.is_alive():
            self.fail("hang", "shutdown", f"Pool.shutdown(wait=True) took over {WAIT} s")
            import faulthandler

            faulthandler.dump_traceback(all_threads=True)
            sys.stdout.flush()
            os._exit(HANG_EXIT)
        self.pools = []

        limit = time.monotonic() + SETTLE
        while True:
            self.wait_spares(1)
            problems = self.leaks(base)
            if not problems or time.monotonic() > limit:
                break
            time.sleep(0.2)
        for problem in problems:
            self.fail("leak", "end", problem)
        return not self.failures


# The most isolates (besides the shared pools) each operation has alive at once.
ISOLATES: dict[str, int] = {
    "stream_kill": 1,
    "multi_port": 5,
    "close_race": 1,
    "port_churn": 0,
    "listen": 3,
    "relay": 1,
    "spawn_kill": 1,
    "pool_cross": 0,
    "pool_churn": 2,
    "transfer": 1,
    "run": 1,
}

# Operation (method ``op_<name>``) and its weight in the random schedule.
OPERATIONS: dict[str, int] = {
    "stream_kill": 4,
    "multi_port": 3,
    "close_race": 3,
    "port_churn": 3,
    "listen": 2,
    "relay": 2,
    "spawn_kill": 3,
    "pool_cross": 4,
    "pool_churn": 1,
    "transfer": 4,
    "run": 1,
}


def main_child(args: argparse.Namespace) -> int:
    import faulthandler

    faulthandler.enable(all_threads=True)
    # The last resort: dump every stack and exit if the child outlives its budget.
    faulthandler.dump_traceback_later(args.seconds + margin(args.wait), exit=True)
    global WAIT
    WAIT = args.wait
    sys.path.insert(0, str(TESTS))
    skip = {name for name in (args.skip or "").split(",") if name}
    only = {name for name in args.only.split(",") if name} if args.only else set(OPERATIONS)
    unknown = (skip - set(FEATURES) | only) - set(OPERATIONS)
    if unknown:
        print(f"unknown: {sorted(unknown)}; operations: {sorted(OPERATIONS)}; ")
        print(f"features: {sorted(FEATURES)}")
        return 2
    ops = [name for name in OPERATIONS if name in only and name not in skip]
    print(f"operations: {ops}" + (f"; skipped: {sorted(skip)}" if skip else ""), flush=True)
    stress = Stress(args.seed, args.seconds, args.threads, ops, skip)
    ok = stress.run()
    print(stress.pace.summary(), flush=True)
    result = {
        "ok": ok,
        "failures": len(stress.failures),
        "ops": dict(sorted(stress.counts.items())),
    }
    print(RESULT_TAG + json.dumps(result), flush=True)
    # Leaving runs the library's own shutdown: bound it too.
    faulthandler.dump_traceback_later(60, exit=True)
    return 0 if ok else 1


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to start operations")
    parser.add_argument("--threads", type=int, default=8, help="user threads driving operations")
    parser.add_argument(
        "--wait", type=float, default=30.0, help="longest single wait before it counts as a hang"
    )
    parser.add_argument(
        "--skip",
        default=None,
        help="comma-separated operations or features to leave out (adds to KNOWN_BUGS)",
    )
    parser.add_argument("--only", default=None, help="comma-separated operations to run alone")
    parser.add_argument("--all", action="store_true", help="run KNOWN_BUGS operations too")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    sys.exit(main_child(arguments) if arguments.child else main_parent(arguments))
