"""Wire memory: what streams of messages leave in the process once they are read.

CPython releases a queue item's cross-interpreter data by posting a call to
the sending interpreter, on a queue of 300 calls that drops what does not
fit; a sender that waits or has exited runs none. Whatever a dropped
release holds stays for good. Patterns, each in a fresh process; RSS is read
after ``gc.collect()`` and the hub's ``settle()``:

- backlog: an isolate sends ``BACKLOG`` tuples ``(i, "x")`` to a port of the
  main interpreter, then waits on another port; main reads them all, tells
  it to go, joins it and closes the port. RSS kept per round (after - before).
- stream to an exiting sender: an isolate sends ``MESSAGES`` tuples and
  exits; main reads them as they come and joins it. Repeated ``ROUNDS``
  times after two rounds that are not measured (a short one that warms up,
  then a full one); the figure is the least-squares slope of RSS over the
  rounds, per ``MESSAGES`` messages.
- stream from a waiting sender: the same, the sender waiting (not exiting)
  while main reads, then let go.
- main streams to an isolate: main sends ``MESSAGES`` tuples to a fresh
  isolate, which counts them and exits; repeated, slope as above.
- Agent under many updates: a fresh Agent gets ``MESSAGES`` ``update``s,
  then a ``read``, and exits; repeated, slope as above.
- an isolate alone: spawn, one message, exit; repeated, slope as above: what
  the interpreter itself keeps (CPython 3.13 keeps ~1.7 MiB of each it
  destroys, 3.14+ nothing measurable), to set the stream patterns against.
- sensors: ``SENSOR_MESSAGES`` readings ``(i, f"sensor-{i % 100}", float(i))``
  from an isolate, read as they come: peak RSS (``VmHWM``) and RSS kept after
  the join, the close and a collection.

Every round starts and ends its isolates (the hub settles only once none is
left but its spares), so on CPython 3.13 each round also keeps what the
interpreter it destroyed kept: the "isolate alone" pattern shows how much.

The targets (printed with each figure): on 3.14+, under ``TARGET_PER_10K``
kept per 10,000 messages in each repeated pattern; a backlog of 300,000 read
after the sender waits keeps under ``TARGET_BACKLOG`` once the port is
closed. On 3.13 only the backlog's target applies (each destroyed
interpreter keeps its own memory there regardless).

``--stress SECONDS`` also runs the project's stress harness (``python
tests/stress.py --seed 1 --seconds SECONDS``, a parent that runs the
workload in a child process), samples the RSS of its process tree every
``STRESS_INTERVAL`` seconds and reports how far it grew from the first
sample taken ``STRESS_BASELINE_AFTER`` seconds in (at its peak and at the
end), against ``TARGET_STRESS`` for 100 s.

subiso only: no peer shares this wire. Writes a pyperf suite (bytes; one
value per round where there are rounds) with -o FILE. ``--quick`` is the
preset ``make bench`` uses.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import procs

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent

BACKLOG = 300_000  # messages of the backlog pattern
BACKLOG_ROUNDS = 3
MESSAGES = 10_000  # messages (or updates) per round of the repeated patterns
# Measured rounds of each repeated pattern, after two that are not: RSS moves
# by about 1 MiB a round either way, and 12 rounds cannot tell 100 KiB from 250.
ROUNDS = 40
SENSOR_MESSAGES = 1_000_000
WARM_MESSAGES = 1_000  # a round that warms a pattern up before it is measured
QUICK = {"rounds": 40, "backlog_rounds": 1, "sensor_messages": 300_000}
SETTLE_TIMEOUT = 30.0  # seconds the hub may take to settle before a reading
WAIT = 120.0  # seconds any single wait may take
PATTERN_TIMEOUT = 900.0  # seconds a pattern's process may take

STRESS_SEED = 1
STRESS_INTERVAL = 1.0  # seconds between RSS samples of the stress harness
STRESS_BASELINE_AFTER = 2.0  # seconds after the start of the sample growth is measured from
STRESS_MARGIN = 300.0  # seconds the harness may run past its budget

KIB, MIB = 1 << 10, 1 << 20
TARGET_PER_10K = 100 * KIB
TARGET_BACKLOG = 20 * MIB
TARGET_STRESS = 200 * MIB

BACKLOG_PATTERN = "backlog"
EXITING = "stream to an exiting sender"
WAITING = "stream from a waiting sender"
MAIN_STREAMS = "main streams to an isolate"
AGENT = "Agent under many updates"
ALONE = "an isolate alone"
SENSORS = "sensors"
PATTERNS = (BACKLOG_PATTERN, EXITING, WAITING, MAIN_STREAMS, AGENT, ALONE, SENSORS)
REPEATED = (EXITING, WAITING, MAIN_STREAMS, AGENT, ALONE)

LEAKS_PER_INTERPRETER = sys.version_info < (3, 14)


# -- in the pattern's own process ---------------------------------------------------


def settled_rss() -> int:
    """RSS once collected garbage is gone and the hub has nothing left to do."""
    from subiso import _hub

    gc.collect()
    if not _hub.settle(SETTLE_TIMEOUT):
        raise RuntimeError(f"the hub did not settle within {SETTLE_TIMEOUT} s")
    return procs.rss()


def backlog_round(count: int) -> None:
    import streams

    import subiso

    with subiso.ReceivePort() as data, subiso.ReceivePort() as control:
        iso = subiso.Isolate.spawn(streams.send_small, (data.send_port, count, control.send_port))
        hold = control.receive(timeout=WAIT)  # all sent: the sender waits
        for _ in range(count):
            data.receive(timeout=WAIT)
        hold.send(None)
        iso.join(WAIT)


def stream_round(count: int, *, wait: bool) -> None:
    import streams

    import subiso

    with subiso.ReceivePort() as data, subiso.ReceivePort() as control:
        hold_to = control.send_port if wait else None
        iso = subiso.Isolate.spawn(streams.send_small, (data.send_port, count, hold_to))
        for _ in range(count):
            data.receive(timeout=WAIT)
        if wait:
            control.receive(timeout=WAIT).send(None)
        iso.join(WAIT)


def main_streams_round(count: int) -> None:
    """Main sends ``count`` tuples to an isolate that counts them, then stops it."""
    import streams

    import subiso

    with subiso.ReceivePort() as reply:
        iso = subiso.Isolate.spawn(streams.drain, reply.send_port)
        inbox = reply.receive(timeout=WAIT)
        for i in range(count):
            inbox.send((i, "x"))
        inbox.send(None)
        got = reply.receive(timeout=WAIT)
        inbox.send("stop")
        iso.join(WAIT)
    if got != count:
        raise RuntimeError(f"the isolate read {got} messages of {count}")


def agent_round(count: int) -> None:
    """An Agent gets ``count`` updates, then a read; then it exits."""
    import streams

    import subiso

    agent = subiso.Agent.create(int)
    for _ in range(count):
        agent.update(streams.increment)
    got = agent.read(timeout=WAIT)
    agent.exit(timeout=WAIT)
    if got != count:
        raise RuntimeError(f"the agent's state is {got}, not {count}")


def sensors_round(count: int) -> float:
    """Read ``count`` sensor readings as they come; seconds it took."""
    import streams

    import subiso

    began = time.perf_counter()
    with subiso.ReceivePort() as data:
        iso = subiso.Isolate.spawn(streams.send_sensors, (data.send_port, count))
        got = 0
        while data.receive(timeout=WAIT) is not None:
            got += 1
        iso.join(WAIT)
    if got != count:
        raise RuntimeError(f"read {got} readings of {count}")
    return time.perf_counter() - began


def repeated(round_, rounds: int, messages: int) -> list[int]:
    """RSS after a warm-up round, then after each of ``rounds`` rounds."""
    round_(WARM_MESSAGES)
    round_(messages)  # the first full round is not measured either
    readings = [settled_rss()]
    for _ in range(rounds):
        round_(messages)
        readings.append(settled_rss())
    return readings


def measure(pattern: str, args: argparse.Namespace) -> dict:
    began = time.perf_counter()
    outcome: dict = {"pattern": pattern}
    if pattern == BACKLOG_PATTERN:
        backlog_round(WARM_MESSAGES)
        readings = [settled_rss()]
        for _ in range(args.backlog_rounds):
            backlog_round(args.backlog)
            readings.append(settled_rss())
        outcome["rss"] = readings
    elif pattern in (EXITING, WAITING, ALONE):
        wait = pattern == WAITING
        messages = 1 if pattern == ALONE else args.messages
        outcome["rss"] = repeated(
            lambda count: stream_round(min(count, messages), wait=wait), args.rounds, messages
        )
    elif pattern == MAIN_STREAMS:
        outcome["rss"] = repeated(main_streams_round, args.rounds, args.messages)
    elif pattern == AGENT:
        outcome["rss"] = repeated(agent_round, args.rounds, args.messages)
    elif pattern == SENSORS:
        sensors_round(WARM_MESSAGES)
        before = settled_rss()
        elapsed = sensors_round(args.sensor_messages)
        peak = procs.peak_rss()
        outcome |= {"before": before, "peak": peak, "after": settled_rss(), "elapsed": elapsed}
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    outcome["seconds"] = time.perf_counter() - began
    outcome["subiso_path"] = procs.subiso_path()
    return outcome


# -- the parent: a fresh process per pattern, the figures ---------------------------


def slope(values: list[int]) -> float:
    """Least-squares growth per step of a series."""
    n = len(values)
    mean_x, mean_y = (n - 1) / 2, statistics.fmean(values)
    num = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
    return num / sum((x - mean_x) ** 2 for x in range(n))


def _kib(value: float) -> str:
    return f"{value / KIB:,.0f} KiB"


def _mib(value: float) -> str:
    return f"{value / MIB:,.1f} MiB"


def _verdict(value: float, target: float, unless: str | None = None) -> str:
    """Whether a figure meets its target, or why the target does not apply."""
    if unless:
        return f"({unless})"
    return "meets" if value < target else "MISSES"


def stress(seconds: float, script: Path) -> dict:
    """Run the stress harness, sampling its process tree's RSS; its figures."""
    command = [sys.executable, str(script), "--seed", str(STRESS_SEED), "--seconds", f"{seconds:g}"]
    print(f"  wire memory: {' '.join(command[1:])}...", flush=True)
    process = subprocess.Popen(
        command,
        cwd=script.parent.parent,
        env=procs.child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    began = time.monotonic()
    samples: list[tuple[float, int, int]] = []  # (seconds, tree RSS, the workload's RSS)
    deadline = began + seconds + STRESS_MARGIN
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(STRESS_INTERVAL)
        children = procs.descendants(process.pid)
        total = procs.rss(process.pid) + sum(procs.rss(child) for child in children)
        workload = max((procs.rss(child) for child in children), default=0)
        if process.poll() is None:
            samples.append((time.monotonic() - began, total, workload))
    if process.poll() is None:
        process.kill()
    process.wait()
    reader.join(10)
    if not samples:
        raise RuntimeError(f"the stress harness ended at once:\n{''.join(lines)}")
    base = next((s for s in samples if s[0] >= STRESS_BASELINE_AFTER), samples[0])
    peak = max(samples, key=lambda s: s[1])
    said = [line.strip() for line in lines if "RSS grew" in line or line.startswith("stress seed")]
    return {
        "seconds": seconds,
        "returncode": process.returncode,
        "said": said,
        "base": base,
        "peak": peak,
        "last": samples[-1],
        "workload_peak": max(s[2] for s in samples),
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="write a pyperf suite here")
    parser.add_argument("--quick", action="store_true", help=f"fewer rounds: {QUICK}")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--messages", type=int, default=MESSAGES)
    parser.add_argument("--backlog", type=int, default=BACKLOG)
    parser.add_argument("--backlog-rounds", type=int, default=BACKLOG_ROUNDS)
    parser.add_argument("--sensor-messages", type=int, default=SENSOR_MESSAGES)
    parser.add_argument(
        "--patterns",
        default=",".join(PATTERNS),
        help="comma-separated, of: " + ", ".join(PATTERNS) + " ('' for none)",
    )
    parser.add_argument("--stress", type=float, metavar="SECONDS", help="run the stress harness")
    parser.add_argument("--stress-script", default=str(PROJECT / "tests" / "stress.py"))
    parser.add_argument("--worker", metavar="PATTERN", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            if getattr(args, name) == globals()[name.upper()]:
                setattr(args, name, value)
    if args.worker:
        Path(args.result).write_text(json.dumps(measure(args.worker, args)))
        return

    chosen = [name for name in args.patterns.split(",") if name]
    unknown = set(chosen) - set(PATTERNS)
    if unknown:
        parser.error(f"unknown patterns: {', '.join(sorted(unknown))}")
    passed = [
        "--rounds", str(args.rounds), "--messages", str(args.messages),
        "--backlog", str(args.backlog), "--backlog-rounds", str(args.backlog_rounds),
        "--sensor-messages", str(args.sensor_messages),
    ]  # fmt: skip
    outcomes: dict[str, dict] = {}
    for pattern in chosen:
        print(f"  wire memory: {pattern}...", flush=True)
        outcome = procs.run_fresh(__file__, pattern, passed, PATTERN_TIMEOUT)
        if outcome is None:
            sys.exit(f"bm_wire_memory: {pattern} failed")
        outcomes[pattern] = outcome
        print(f"    {outcome['seconds']:.1f} s", flush=True)

    results: dict[str, tuple[list[float], str]] = {}
    table: list[tuple[str, str, str, str]] = []
    late = not LEAKS_PER_INTERPRETER
    if BACKLOG_PATTERN in outcomes:
        rss = outcomes[BACKLOG_PATTERN]["rss"]
        kept = [after - before for before, after in itertools.pairwise(rss)]
        name = f"wire memory: backlog of {args.backlog:,} read after the sender waits, RSS kept"
        results[name] = (kept, "byte")
        shown = statistics.median(kept)
        table.append(
            (
                f"backlog of {args.backlog:,}, read after the sender waits, port closed",
                f"{_mib(shown)} kept [{', '.join(_mib(k) for k in kept)}]",
                f"< {_mib(TARGET_BACKLOG)}",
                _verdict(
                    shown,
                    TARGET_BACKLOG,
                    None if args.backlog >= BACKLOG else f"the target is for {BACKLOG:,}",
                ),
            )
        )
    for pattern in REPEATED:
        if pattern not in outcomes:
            continue
        rss = outcomes[pattern]["rss"]
        per_round = slope(rss)
        unit = "update" if pattern == AGENT else "message"
        count = 1 if pattern == ALONE else args.messages
        what = "per round" if pattern == ALONE else f"per {count:,} {unit}s"
        name = f"wire memory: {pattern}, RSS kept {what}"
        results[name] = ([per_round], "byte")
        results[f"wire memory: {pattern}, RSS kept over {args.rounds} rounds"] = (
            [rss[-1] - rss[0]],
            "byte",
        )
        per_10k = per_round * 10_000 / count
        table.append(
            (
                f"{pattern} ({args.rounds} rounds)",
                f"{_kib(per_round)} {what}",
                "" if pattern == ALONE else f"< {_kib(TARGET_PER_10K)} per 10,000",
                ""
                if pattern == ALONE
                else _verdict(per_10k, TARGET_PER_10K, None if late else "a 3.14+ target"),
            )
        )
    if SENSORS in outcomes:
        got = outcomes[SENSORS]
        prefix = f"wire memory: {args.sensor_messages:,} sensor readings"
        results[f"{prefix}, RSS peak"] = ([got["peak"]], "byte")
        results[f"{prefix}, RSS kept after join, close and collect"] = (
            [got["after"] - got["before"]],
            "byte",
        )
        results[f"{prefix}, seconds"] = ([got["elapsed"]], "second")
        table.append(
            (
                f"{args.sensor_messages:,} sensor readings read as they come",
                f"peak {_mib(got['peak'])} RSS (+{_mib(got['peak'] - got['before'])}), "
                f"{_mib(got['after'] - got['before'])} kept after join+close+collect",
                f"{args.sensor_messages / got['elapsed']:,.0f} messages/s",
                "",
            )
        )
    if args.stress:
        got = stress(args.stress, Path(args.stress_script))
        base, peak, last = got["base"], got["peak"], got["last"]
        prefix = f"wire memory: stress harness, {args.stress:g} s"
        results[f"{prefix}, RSS growth at its peak"] = ([peak[1] - base[1]], "byte")
        results[f"{prefix}, RSS growth at the end"] = ([last[1] - base[1]], "byte")
        table.append(
            (
                f"stress harness, seed {STRESS_SEED}, {args.stress:g} s (process tree)",
                f"grew {_mib(peak[1] - base[1])} at its peak ({peak[0]:.0f} s), "
                f"{_mib(last[1] - base[1])} at the end ({last[0]:.0f} s)",
                f"< {_mib(TARGET_STRESS)} in 100 s",
                _verdict(
                    peak[1] - base[1],
                    TARGET_STRESS,
                    None if args.stress <= 100 else "the target is for 100 s",
                ),
            )
        )
        print(f"  stress: status {got['returncode']}; it said: {' | '.join(got['said'])}")
        print(
            f"  stress: tree RSS {_mib(base[1])} at {base[0]:.0f} s, peak {_mib(peak[1])}, "
            f"end {_mib(last[1])}; the workload process's peak {_mib(got['workload_peak'])}"
        )

    metadata = {
        "description": __doc__.splitlines()[0],
        "python_version": platform.python_version(),
        "backlog": args.backlog,
        "backlog_rounds": args.backlog_rounds,
        "messages": args.messages,
        "rounds": args.rounds,
        "sensor_messages": args.sensor_messages,
        "warm_messages": WARM_MESSAGES,
        "target_per_10k_bytes": TARGET_PER_10K,
        "target_backlog_bytes": TARGET_BACKLOG,
        "target_stress_bytes": TARGET_STRESS,
    }
    path = next((o["subiso_path"] for o in outcomes.values() if o.get("subiso_path")), None)
    if path:
        metadata["subiso_path"] = path
    if args.stress:
        metadata["stress_seconds"] = args.stress
    if args.output:
        procs.dump_suite(results, args.output, metadata)

    print(
        f"\nwire memory, CPython {platform.python_version()}: RSS kept once read, "
        f"after gc.collect() and the hub's settle()" + (f"; subiso from {path}" if path else "")
    )
    header = ("pattern", "figure", "target", "")
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(4)]
    for row in (header, *table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for pattern in REPEATED:
        if pattern in outcomes:
            rss = outcomes[pattern]["rss"]
            steps = ", ".join(f"{(b - a) / KIB:+,.0f}" for a, b in itertools.pairwise(rss))
            print(f"{pattern}: RSS per round, KiB [{steps}]")
    if LEAKS_PER_INTERPRETER:
        print(
            "(CPython 3.13 keeps ~1.7 MiB of each interpreter it destroys: "
            "only the backlog's target applies here)"
        )


if __name__ == "__main__":
    main()
