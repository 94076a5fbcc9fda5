"""Cold start: a fresh process, from before its first import to the first result.

Each run is a new ``python -c`` process whose first statement reads
``time.perf_counter()``; it then imports what the way needs, makes it, hands
it one tiny task (``tasks.tiny``) and reads the clock again at the result:
that span is "to first result". Then it shuts the way down and exits; the
parent's clock around the whole process (start, imports, work, shutdown,
exit) is "process wall time".

Ways: ``subiso.Pool(WORKERS)`` and one ``subiso.run``; peers, same run,
``ProcessPoolExecutor(WORKERS)`` (forkserver) and, on 3.14+, the stdlib's
``InterpreterPoolExecutor(WORKERS)``; as the floor of the wall time, a
process that does nothing. ``RUNS`` fresh processes per way, the ways
alternating (each run starts one way later), after one unmeasured run of
each. The report gives p50 / p90 / min. Writes a pyperf suite (seconds, one
value per run) with -o FILE.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import peers
import procs

WORKERS = 2
RUNS = 15
RUN_TIMEOUT = 120  # seconds one process may take

# The first statement of every child, before any import but the clock's.
CLOCK = "import time as _time\n_T0 = _time.perf_counter()\n"
REPORT = "print(_T1 - _T0)\n"

POOL = f"subiso.Pool({WORKERS})"
RUN = "subiso.run"
PROCESS_POOL = f"ProcessPoolExecutor({WORKERS}) (forkserver)"
INTERPRETER_POOL = f"InterpreterPoolExecutor({WORKERS}) (stdlib)"
NOTHING = "a process that does nothing"

CODE = {
    POOL: f"""
import subiso
import tasks
pool = subiso.Pool({WORKERS})
assert pool.submit(tasks.tiny, 1).result(timeout=60) == 2
_T1 = _time.perf_counter()
pool.shutdown()
""",
    RUN: """
import subiso
import tasks
assert subiso.run(tasks.tiny, 1) == 2
_T1 = _time.perf_counter()
""",
    PROCESS_POOL: f"""
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
import tasks
pool = ProcessPoolExecutor({WORKERS}, mp_context=multiprocessing.get_context("forkserver"))
assert pool.submit(tasks.tiny, 1).result(timeout=60) == 2
_T1 = _time.perf_counter()
pool.shutdown()
""",
    INTERPRETER_POOL: f"""
from concurrent.futures import InterpreterPoolExecutor
import tasks
pool = InterpreterPoolExecutor({WORKERS})
assert pool.submit(tasks.tiny, 1).result(timeout=60) == 2
_T1 = _time.perf_counter()
pool.shutdown()
""",
    NOTHING: "_T1 = _time.perf_counter()\n",
}


def run_once(way: str) -> tuple[float, float]:
    """(to first result, process wall time) of one fresh process."""
    command = [sys.executable, "-c", CLOCK + CODE[way] + REPORT]
    began = time.perf_counter()
    done = subprocess.run(
        command,
        env=procs.child_env(),
        cwd=procs.HERE,  # not the project's root, whose subiso/ would come first on sys.path
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    wall = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"bm_coldstart: {way} exited with status {done.returncode}:\n{done.stderr}")
    if done.stderr.strip():
        print(f"  {way} said:\n{done.stderr.rstrip()}", file=sys.stderr)
    return float(done.stdout.split()[-1]), wall


def _subiso_path() -> str:
    done = subprocess.run(
        [sys.executable, "-c", "import subiso; print(subiso.__file__)"],
        env=procs.child_env(),
        cwd=procs.HERE,
        capture_output=True,
        text=True,
        check=True,
    )
    return str(Path(done.stdout.strip()).parent)


def _spread(values: list[float]) -> str:
    """p50 / p90 / min, in ms."""
    shown = (statistics.median(values), procs.percentile(values, 0.9), min(values))
    return " / ".join(f"{v * 1e3:,.1f}" for v in shown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="write a pyperf suite here")
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()

    ways = [POOL, INTERPRETER_POOL, PROCESS_POOL, RUN, NOTHING]
    if not peers.STDLIB:
        ways.remove(INTERPRETER_POOL)
        print(f"  cold start: skipping {INTERPRETER_POOL}: 3.14+ only", file=sys.stderr)
    path = _subiso_path()
    print(f"  cold start: subiso from {path}", flush=True)
    for way in ways:  # unmeasured: the files each way reads are cached from now on
        run_once(way)
    first: dict[str, list[float]] = {way: [] for way in ways}
    wall: dict[str, list[float]] = {way: [] for way in ways}
    began = time.monotonic()
    for i in range(args.runs):
        if i % 5 == 0:
            print(f"  cold start: run {i + 1}/{args.runs} of each way", flush=True)
        for way in procs.rotated(ways, i):
            to_first, whole = run_once(way)
            first[way].append(to_first)
            wall[way].append(whole)
    print(f"  cold start: {time.monotonic() - began:.0f} s", flush=True)

    metadata = {
        "description": __doc__.splitlines()[0],
        "workers": WORKERS,
        "runs": args.runs,
        "python_version": platform.python_version(),
        "subiso_path": path,
        "ways": ", ".join(ways),
    }
    if args.output:
        suite = {}
        for way in ways:
            if way != NOTHING:
                suite[f"cold start {way}: to first result"] = (first[way], "second")
            suite[f"cold start {way}: process wall time"] = (wall[way], "second")
        procs.dump_suite(suite, args.output, metadata)

    print(
        f"\ncold start, Python {platform.python_version()}: {args.runs} fresh processes per way, "
        "ms, p50 / p90 / min"
    )
    header = ("way", "to first result (inside)", "process wall time (parent)")
    rows = [header]
    for way in ways:
        rows.append((way, "-" if way == NOTHING else _spread(first[way]), _spread(wall[way])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
