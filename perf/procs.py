"""What the application benchmarks share: a way run in a fresh process, and
the memory of a process and of the processes it started.

Memory comes from /proc: RSS (``VmRSS`` of ``/proc/PID/status``, what a
process has resident), PSS (``Pss`` of ``/proc/PID/smaps_rollup``, pages
shared between processes split between them, so that a tree's PSS adds up
to what it really holds) and the tree itself (``/proc/PID/task/*/children``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pyperf

HERE = Path(__file__).resolve().parent


def _field(path: str, name: str) -> int:
    """A ``name: N kB`` field of a /proc file, in bytes; 0 if the process is gone."""
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(name):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0
    return 0


def rss(pid: int | str = "self") -> int:
    return _field(f"/proc/{pid}/status", "VmRSS:")


def peak_rss(pid: int | str = "self") -> int:
    """The largest RSS the process has had (``VmHWM``)."""
    return _field(f"/proc/{pid}/status", "VmHWM:")


def pss(pid: int | str = "self") -> int:
    return _field(f"/proc/{pid}/smaps_rollup", "Pss:")


def descendants(pid: int) -> list[int]:
    """Every live process started by ``pid``, by its children and so on."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except FileNotFoundError:
            continue
        for tid in threads:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as children:
                    kids = [int(kid) for kid in children.read().split()]
            except FileNotFoundError:
                continue
            found += kids
            todo += kids
    return found


def tree(measure, pid: int | None = None) -> int:
    """``measure`` (``rss`` or ``pss``) summed over a process and its descendants."""
    pid = os.getpid() if pid is None else pid
    return sum(measure(each) for each in [pid, *descendants(pid)])


class PeakSampler:
    """Samples ``sample()`` every ``interval`` seconds on a thread, keeping the largest."""

    def __init__(self, sample, interval: float) -> None:
        self.sample = sample
        self.interval = interval
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak sampler")

    def _run(self) -> None:
        start = time.monotonic()
        while True:
            value = self.sample()
            self.samples.append((time.monotonic() - start, value))
            self.peak = max(self.peak, value)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.sample())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def subiso_path() -> str | None:
    """Where this process imported subiso from, if it did."""
    module = sys.modules.get("subiso")
    return None if module is None else str(Path(module.__file__).parent)


def child_env() -> dict[str, str]:
    """This environment with perf/ on PYTHONPATH after what is there: peers'
    workers import the task modules from here; a subiso given first stays first."""
    path = [os.environ.get("PYTHONPATH", ""), str(HERE)]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)))


def run_fresh(script: str, way: str, args: list[str], timeout: float) -> dict | None:
    """``script --worker WAY --result FILE ARGS`` in a fresh process: the JSON
    it wrote, or None if it failed (its standard error shown)."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "result.json"
        command = [sys.executable, script, "--worker", way, "--result", str(out), *args]
        try:
            done = subprocess.run(
                command, env=child_env(), capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as expired:
            stderr = expired.stderr or ""
            stderr = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
            print(f"  {way}: no answer within {timeout:.0f} s\n{stderr}", file=sys.stderr)
            return None
        if done.returncode != 0 or not out.exists():
            print(f"  {way}: exited with status {done.returncode}\n{done.stderr}", file=sys.stderr)
            return None
        if done.stderr.strip():
            print(f"  {way} said:\n{done.stderr.rstrip()}", file=sys.stderr)
        return json.loads(out.read_text())


def rotated(ways: list[str], round_: int) -> list[str]:
    """The ways in the order of round ``round_``: each round starts one way
    later, so that no way always follows the same one."""
    shift = round_ % len(ways)
    return ways[shift:] + ways[:shift]


def dump_suite(
    results: dict[str, tuple[list[float], str]], output: str, metadata: dict[str, object]
) -> None:
    """Write figures (name: (values, unit)) as a pyperf suite, one value per round.

    pyperf takes only positive values: a figure at or below zero (memory
    that shrank) is written as 1 and its true values go in the metadata
    (``raw_values``).
    """
    benchmarks = []
    for name, (values, unit) in results.items():
        meta = dict(metadata, name=name, unit=unit)
        if any(value <= 0 for value in values):
            meta["raw_values"] = ", ".join(f"{value:.6g}" for value in values)
        run = pyperf.Run(
            [value if value > 0 else 1 for value in values],
            metadata=meta,
            collect_metadata=False,
        )
        benchmarks.append(pyperf.Benchmark([run]))
    pyperf.BenchmarkSuite(benchmarks).dump(output, replace=True)
