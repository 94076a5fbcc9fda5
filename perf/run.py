"""Run the comparison: every benchmark in perf/, one table, one chart.

    python perf/run.py            # default preset, a few minutes on 2 cores
    python perf/run.py --full     # pyperf's rigorous mode, more jank repeats

Each ``bm_*.py`` measures subiso and its peers in the same run and writes a
pyperf JSON file under ``perf/results/``. This script shows progress, then
prints one comparison table (subiso against each peer, as ratios), writes it
to ``perf/results/report.md`` and draws ``perf/results/summary.png``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pyperf

HERE = Path(__file__).parent
RESULTS = HERE / "results"

PRESETS = {
    "default": {
        "bm_pingpong": ["--processes", "3", "--values", "5", "--warmups", "1"],
        "bm_spawn": ["--loops", "1", "--processes", "3", "--values", "20", "--warmups", "2"],
        "bm_payload": ["--processes", "2", "--values", "3", "--warmups", "1"],
        "bm_control": ["--processes", "2", "--values", "4", "--warmups", "1"],
        "bm_pool": ["--processes", "2", "--values", "3", "--warmups", "1"],
        "bm_shared": ["--processes", "1", "--values", "3", "--warmups", "1"],
        "bm_shared_memory": [],
        "bm_memory": [],
        "bm_distributed": [],
        "bm_jank": ["--repeat", "3"],
        "bm_service": ["--rounds", "3"],
        "bm_stream": ["--processes", "2", "--values", "2", "--warmups", "1"],
        "bm_batch": ["--rounds", "3"],
        "bm_coldstart": ["--runs", "10"],
        "bm_wire_memory": ["--quick"],
    },
    "full": {
        "bm_pingpong": ["--rigorous"],
        "bm_spawn": ["--loops", "1", "--processes", "10", "--values", "30", "--warmups", "3"],
        "bm_payload": ["--rigorous"],
        "bm_control": ["--rigorous"],
        "bm_pool": ["--rigorous"],
        "bm_shared": ["--processes", "3", "--values", "5", "--warmups", "1"],
        "bm_shared_memory": [],
        "bm_memory": [],
        "bm_distributed": [],
        "bm_jank": ["--repeat", "10"],
        "bm_service": ["--rounds", "7"],
        "bm_stream": ["--rigorous"],
        "bm_batch": ["--rounds", "7"],
        "bm_coldstart": ["--runs", "30"],
        "bm_wire_memory": [],
    },
}


def run_all(preset: str) -> dict[str, pyperf.BenchmarkSuite]:
    RESULTS.mkdir(exist_ok=True)
    suites = {}
    scripts = PRESETS[preset]
    began = time.monotonic()
    took: dict[str, float] = {}
    for i, (name, args) in enumerate(scripts.items(), 1):
        output = RESULTS / f"{name}.json"
        output.unlink(missing_ok=True)
        print(f"[{i}/{len(scripts)}] {name} ({time.monotonic() - began:.0f} s so far)", flush=True)
        command = [sys.executable, str(HERE / f"{name}.py"), "-o", str(output), *args]
        if name not in (
            "bm_jank",
            "bm_memory",
            "bm_shared_memory",
            "bm_distributed",
            "bm_service",
            "bm_batch",
            "bm_coldstart",
            "bm_wire_memory",
        ):
            # Peers' worker interpreters and processes import the task module from here.
            command += ["--quiet", "--inherit-environ", "PYTHONPATH"]
        # The task modules are imported from here; a subiso given on PYTHONPATH comes first.
        path = [os.environ.get("PYTHONPATH", ""), str(HERE)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)))
        started = time.monotonic()
        subprocess.run(command, check=True, cwd=HERE, env=env)
        took[name] = time.monotonic() - started
        suites[name] = pyperf.BenchmarkSuite.load(str(output))
    slowest = sorted(took.items(), key=lambda pair: -pair[1])
    print(f"done in {time.monotonic() - began:.0f} s:", flush=True)
    print("  " + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in slowest), flush=True)
    return suites


def _values(suites: dict[str, pyperf.BenchmarkSuite], suite: str, name: str) -> list[float]:
    return list(suites[suite].get_benchmark(name).get_values())


def _median(suites, suite, name) -> float:
    return statistics.median(_values(suites, suite, name))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _peers(suites, suite: str, prefix: str, *ours: str) -> list[str]:
    """The peers measured as ``prefix + peer`` in a suite, in the order they ran.

    Which peers a run has depends on its Python (peers.py): the table shows
    whichever are there.
    """
    return [
        name.removeprefix(prefix)
        for name in suites[suite].get_benchmark_names()
        if name.startswith(prefix) and name.removeprefix(prefix) not in ours
    ]


# Peers that are subinterpreters too, charted apart from processes and threads.
INTERPRETER_PEERS = ("InterpreterPoolExecutor", "interpreters.Queue", "anyio.to_interpreter")


def _rows(question: str, ours: str, cells: list[tuple[str, str]]) -> list[tuple[str, ...]]:
    """Rows of one question: a (peer, ratio) cell each, the question and our figure on the first."""
    return [
        (question, ours, *cell) if i == 0 else ("", "", *cell)
        for i, cell in enumerate(cells or [("", "")])
    ]


def _map_items(suites, name: str) -> int:
    return int(suites["bm_pool"].get_benchmark(name).get_metadata().get("map_items", 20_000))


def _python_version(suites) -> str:
    """The Python the benchmarks ran on (not necessarily this one, with --report-only)."""
    for suite in suites.values():
        version = suite.get_metadata().get("python_version")
        if version:
            return str(version).split()[0]
    return platform.python_version()


def _ratio(x: float) -> str:
    return f"{x:,.1f}x" if x < 100 else f"{x:,.0f}x"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} µs" if seconds < 1e-3 else f"{seconds * 1e3:,.2f} ms"


def build_table(suites) -> tuple[list[tuple[str, str, str, str]], dict]:
    """Rows of (question, subiso, peer, ratio), and figures for the chart."""
    rows = []
    chart: dict[str, dict] = {
        "speedups": {},
        "interpreters": {},
        "payload": {},
        "jank": {},
        "share": {},
        "share memory": {},
        "applications": {},
        "wire memory": {},
    }

    pp = _median(suites, "bm_pingpong", "pingpong subiso port")
    cells = []
    for peer in _peers(suites, "bm_pingpong", "pingpong ", "subiso port"):
        theirs = _median(suites, "bm_pingpong", f"pingpong {peer}")
        cells.append((f"{peer} {_us(theirs)}", f"{_ratio(theirs / pp)} faster"))
        if peer.startswith("mp Pipe"):
            chart["speedups"]["ping-pong vs Pipe"] = theirs / pp
        elif peer.startswith(INTERPRETER_PEERS):
            chart["interpreters"][f"ping-pong vs {peer}"] = theirs / pp
    rows += _rows("port ping-pong round trip", _us(pp), cells)

    spaced = _values(suites, "bm_spawn", "run, calls 20 ms apart")
    fork_start = _median(suites, "bm_spawn", "Process start+join (forkserver)")
    spawn_start = _median(suites, "bm_spawn", "Process start+join (spawn)")
    p50, p90 = _percentile(spaced, 0.5), _percentile(spaced, 0.9)
    rows.append(
        (
            "run latency p50 / p90 (20 ms apart)",
            f"{_us(p50)} / {_us(p90)}",
            f"Process forkserver {_us(fork_start)}",
            f"{fork_start / p50:.0f}x faster",
        )
    )
    chart["speedups"]["run p50 vs Process"] = fork_start / p50
    b2b = _median(suites, "bm_spawn", "run, back to back")
    rows.append(
        (
            "fresh runs back to back",
            f"{1 / b2b:,.0f}/s",
            f"forkserver {1 / fork_start:,.0f}/s",
            f"{fork_start / b2b:.1f}x the rate",
        )
    )
    rows.append(("", "", f"spawn {1 / spawn_start:,.0f}/s", f"{spawn_start / b2b:.1f}x the rate"))
    measured = suites["bm_spawn"].get_benchmark_names()
    for threads in ("1 thread", "a thread per core"):
        name = f"bare interpreter create+close, {threads}"
        if name not in measured:
            continue  # results from before this peer was measured
        bare = _median(suites, "bm_spawn", name)
        rows.append(
            (
                "",
                "",
                f"CPython bare create+close, {threads} {1 / bare:,.0f}/s",
                f"{bare / b2b:.2f}x the rate",
            )
        )
    yardstick = "interpreter create+runtime import+close, a thread per core"
    if yardstick in measured:  # what the runtime's import alone leaves of that rate
        imported = _median(suites, "bm_spawn", yardstick)
        bare = _median(suites, "bm_spawn", "bare interpreter create+close, a thread per core")
        rows.append(
            (
                "",
                "",
                f"create+close with the runtime imported {1 / imported:,.0f}/s",
                f"{imported / b2b:.2f}x (it: {bare / imported:.2f}x bare)",
            )
        )
    chart["speedups"]["back-to-back runs vs Process"] = fork_start / b2b
    first = _median(suites, "bm_spawn", "Isolate.spawn to first message")
    cells = []
    for peer in _peers(suites, "bm_spawn", "first task: "):
        cold = _median(suites, "bm_spawn", f"first task: {peer}")
        cells.append((f"{peer} cold {_us(cold)}", f"{_ratio(cold / first)} faster"))
        if peer.startswith(INTERPRETER_PEERS):
            chart["interpreters"][f"spawn vs {peer} cold"] = cold / first
    rows += _rows("spawn to first message", _us(first), cells)

    sizes = {
        "1 KiB": 1 << 10,
        "64 KiB": 64 << 10,
        "1 MiB": 1 << 20,
        "8 MiB": 8 << 20,
        "64 MiB": 64 << 20,
    }
    methods = {
        "subiso bytes": "bytes, subiso port",
        "subiso object graph": "object graph, subiso port",
        "TransferableBuffer": "TransferableBuffer",
        "Pipe bytes": "bytes, mp Pipe",
        "ProcessPool bytes": "bytes, ProcessPool",
    }
    for label, size in sizes.items():
        moved = 2 * size / (1 << 20)  # there and back
        speeds = {
            m: moved / _median(suites, "bm_payload", f"echo {label} {key}")
            for m, key in methods.items()
        }
        chart["payload"][label] = speeds
        ours, pipe, pool = speeds["subiso bytes"], speeds["Pipe bytes"], speeds["ProcessPool bytes"]
        rows.append(
            (
                f"{label} echo, bytes",
                f"{ours:,.0f} MiB/s",
                f"Pipe {pipe:,.0f} / ProcessPool {pool:,.0f} MiB/s",
                f"{ours / pipe:.1f}x / {ours / pool:.1f}x",
            )
        )
        rows.append(
            (
                "",
                f"graph {speeds['subiso object graph']:,.0f}, "
                f"Transferable {speeds['TransferableBuffer']:,.0f} MiB/s",
                "",
                "",
            )
        )
        if label in ("1 MiB", "64 MiB"):
            chart["speedups"][f"{label} echo vs Pipe"] = ours / pipe

    serial = _median(suites, "bm_pool", "cpu: serial")
    for label, key, unit in (
        ("pool task round trip", "round trip", "time"),
        ("pool map, 20,000 tiny tasks, chunksize 1", "map chunksize 1", "rate"),
        ("pool map, 20,000 tiny tasks, chunksize 64", "map chunksize 64", "rate"),
        ("pool, 8 CPU-bound tasks", "cpu", "time"),
        ("pool, 8 MiB echo", "echo 8 MiB", "time"),
    ):
        ours = _median(suites, "bm_pool", f"{key}: subiso.Pool")
        mine = f"{20_000 / ours:,.0f}/s" if unit == "rate" else _us(ours)
        cells = []
        for peer in _peers(suites, "bm_pool", f"{key}: ", "subiso.Pool", "serial"):
            theirs = _median(suites, "bm_pool", f"{key}: {peer}")
            if unit == "rate":
                # A slow peer may map fewer items (its benchmark says how many).
                items = _map_items(suites, f"{key}: {peer}")
                theirs *= 20_000 / items
                other = f"{20_000 / theirs:,.0f}/s"
                if items != 20_000:
                    other += f" ({items:,} tasks)"
            else:
                other = _us(theirs)
            cells.append((f"{peer} {other}", f"{theirs / ours:.1f}x"))
            if peer == "ProcessPool (forkserver)":
                chart["speedups"][f"{label.replace('pool', 'Pool')} vs ProcessPool"] = theirs / ours
            elif peer.startswith(INTERPRETER_PEERS) and key in ("round trip", "map chunksize 1"):
                short = "Pool task round trip" if key == "round trip" else "Pool map, tiny tasks"
                chart["interpreters"][f"{short} vs {peer}"] = theirs / ours
        if key == "cpu":
            cells.append((f"serial {_us(serial)}", f"{serial / ours:.2f}x speedup"))
        rows += _rows(label, mine, cells)

    rows += _share_rows(suites, chart)

    mem = {b.get_name(): b.get_values()[0] for b in suites["bm_memory"].get_benchmarks()}
    idle = mem["memory: RSS per idle isolate"]
    fork_pss = mem["memory: PSS per idle process (forkserver)"]
    spawn_pss = mem["memory: PSS per idle process (spawn)"]
    many = next(n for n in mem if n.startswith("memory: process RSS growth"))
    count = many.split(",")[1].split()[0]
    mib = 1 << 20
    rows.append(
        (
            "memory per idle worker",
            f"{idle / mib:.2f} MiB RSS",
            f"process PSS {fork_pss / mib:.1f} (forkserver) / {spawn_pss / mib:.1f} MiB (spawn)",
            f"{fork_pss / idle:.1f}x smaller",
        )
    )
    start_many = mem[f"memory: start one of {count} isolates"]
    rows.append(
        (
            f"{count} live isolates in one process",
            f"{mem[many] / mib:,.0f} MiB",
            f"{int(count)} processes ~{int(count) * fork_pss / mib:,.0f} MiB",
            "",
        )
    )
    rows.append(("", f"start {_us(start_many)} each", "", ""))
    grown = next((n for n in mem if n.startswith("memory: RSS growth over")), None)
    if grown is not None:
        count_runs = grown.rsplit(" ", 2)[1]
        rows.append((f"RSS growth over {count_runs} runs", f"{mem[grown] / mib:,.1f} MiB", "", ""))
    chart["speedups"]["memory per idle worker vs process"] = fork_pss / idle

    dask = {b.get_name(): b.get_values()[0] for b in suites["bm_distributed"].get_benchmarks()}
    for label, key, unit in (
        ("Dask, CPU-bound tasks", "cpu tasks/s", "rate"),
        ("Dask, tiny tasks", "tiny tasks/s", "rate"),
        ("Dask, worker RSS per core", "RSS per core", "bytes"),
    ):
        ours = dask[f"dask: {key}, 1 process + isolates"]
        theirs = dask[f"dask: {key}, 2 plain worker processes"]
        if unit == "rate":
            rows.append(
                (
                    f"{label} (1 process + isolates)",
                    f"{ours:,.0f}/s",
                    f"2 plain workers {theirs:,.0f}/s",
                    f"{ours / theirs:.2f}x",
                )
            )
        else:
            rows.append(
                (
                    f"{label} (1 process + isolates)",
                    f"{ours / mib:,.0f} MiB",
                    f"2 plain workers {theirs / mib:,.0f} MiB",
                    f"{theirs / ours:.2f}x smaller",
                )
            )

    kill = _median(suites, "bm_control", "kill(IMMEDIATE) of a busy loop until joined")
    ping = _median(suites, "bm_control", "ping round trip")
    host = _median(suites, "bm_control", "host.call round trip, from an isolate")
    lookup_main = _median(suites, "bm_control", "name lookup, main isolate")
    lookup_iso = _median(suites, "bm_control", "name lookup, from an isolate")
    rows.append(("kill(IMMEDIATE) of a busy loop, until joined", _us(kill), "", ""))
    rows.append(("ping round trip (control thread)", _us(ping), f"port ping-pong {_us(pp)}", ""))
    rows.append(
        ("host.call round trip from an isolate", _us(host), f"port ping-pong {_us(pp)}", "")
    )
    rows.append(
        ("name lookup: main / from an isolate", f"{_us(lookup_main)} / {_us(lookup_iso)}", "", "")
    )

    ways = [
        "inline",
        "ThreadPoolExecutor",
        "ProcessPoolExecutor",
        "subiso.run_async",
        "subiso.run_async + gc.disable/freeze by the caller",
    ]
    jank = {}
    for way in ways:
        gap = max(_values(suites, "bm_jank", f"jank {way}: max tick gap"))
        gcp = max(_values(suites, "bm_jank", f"jank {way}: max GC pause"))
        frames = statistics.median(_values(suites, "bm_jank", f"jank {way}: frames dropped"))
        jank[way] = (gap, gcp, frames)
        chart["jank"][way] = {"gap": gap, "gc": gcp}
    slice_ = max(
        _values(suites, "bm_jank", "jank subiso.run_async: max delivery slice (GC excluded)")
    )
    ours = jank["subiso.run_async"]
    for way in ways[:3]:
        gap, gcp, frames = jank[way]
        rows.append(
            (
                f"jank: largest 60 Hz gap vs {way}",
                _us(ours[0]),
                _us(gap),
                f"{gap / ours[0]:.1f}x smaller",
            )
        )
    rows.append(("jank: delivery slice / GC pause", f"{_us(slice_)} / {_us(ours[1])}", "", ""))
    deferred = jank[ways[4]]
    rows.append(("jank: caller defers GC (README)", _us(deferred[0]), "", ""))
    rows += _service_rows(suites)
    # Application benchmarks (results from before they existed lack them).
    for suite, rows_of in (
        ("bm_stream", _stream_rows),
        ("bm_batch", _batch_rows),
        ("bm_coldstart", _coldstart_rows),
        ("bm_wire_memory", _wire_memory_rows),
    ):
        if suite in suites:
            rows += rows_of(suites, chart)
    return rows, chart


def _service_rows(suites) -> list[tuple[str, ...]]:
    """The asyncio service: run_async's rate, latency and loop gap against
    each peer's, and against blocking runs from threads (the yardstick)."""
    suite = suites["bm_service"]
    meta = suite.get_benchmarks()[0].get_metadata()
    ours, pool, threads = (
        "subiso.run_async",
        f"subiso.Pool({meta['workers']}).run_async",
        f"subiso.run from {meta['concurrency']} threads",
    )
    ways = [
        name.removeprefix("service ").removesuffix(": requests/s")
        for name in suite.get_benchmark_names()
        if name.endswith(": requests/s")
    ]

    def figure(way: str, name: str) -> float:
        return _median(suites, "bm_service", f"service {way}: {name}")

    rate, gap = figure(ours, "requests/s"), figure(ours, "largest loop gap")
    mine = [
        f"run_async {rate:,.0f}/s",
        f"p50 {_us(figure(ours, 'latency p50'))} / p99 {_us(figure(ours, 'latency p99'))}",
        f"largest loop gap {_us(gap)}",
    ]
    if pool in ways:
        mine.append(
            f"Pool({meta['workers']}).run_async {figure(pool, 'requests/s'):,.0f}/s, "
            f"gap {_us(figure(pool, 'largest loop gap'))}"
        )
    cells = []
    if threads in ways:
        theirs = figure(threads, "requests/s")
        cells.append((f"{threads} {theirs:,.0f}/s (yardstick)", f"{rate / theirs:.2f}x the rate"))
    for way in ways:
        if way in (ours, pool, threads):
            continue
        theirs, their_gap = figure(way, "requests/s"), figure(way, "largest loop gap")
        cells.append(
            (
                f"{way} {theirs:,.0f}/s, p50 {_us(figure(way, 'latency p50'))} / "
                f"p99 {_us(figure(way, 'latency p99'))}, gap {_us(their_gap)}",
                f"{rate / theirs:.2f}x the rate, {gap / their_gap:,.1f}x the gap",
            )
        )
    # The document is sized for ~5 ms (tasks.DOCUMENT_ITEMS); render_cpu_s says what it took.
    question = (
        f"asyncio service: {meta['requests']} requests of ~5 ms JSON, "
        f"{meta['concurrency']} at a time"
    )
    rows: list[tuple[str, ...]] = []
    for i in range(max(len(mine), len(cells))):
        peer, ratio = cells[i] if i < len(cells) else ("", "")
        rows.append((question if i == 0 else "", mine[i] if i < len(mine) else "", peer, ratio))
    return rows


def _faster(theirs: float, ours: float) -> str:
    """How our time compares with theirs, in words."""
    if theirs >= ours:
        return f"{theirs / ours:,.2f}x faster"
    return f"{ours / theirs:,.2f}x slower"


def _smaller(theirs: float, ours: float) -> str:
    """How our size compares with theirs, in words."""
    if theirs >= ours:
        return f"{theirs / ours:,.2f}x less"
    return f"{ours / theirs:,.2f}x more"


def _stream_rows(suites, chart) -> list[tuple[str, ...]]:
    """The stream, isolate to main: seconds per stream against each peer's."""
    suite = suites["bm_stream"]
    messages = int(suite.get_metadata().get("messages", 100_000))
    prefix = f"stream {messages:,}: "
    ours = _median(suites, "bm_stream", f"{prefix}subiso port")
    cells = []
    for peer in _peers(suites, "bm_stream", prefix, "subiso port"):
        theirs = _median(suites, "bm_stream", f"{prefix}{peer}")
        cells.append((f"{peer} {_us(theirs)}", _faster(theirs, ours)))
        if peer.startswith("mp Pipe"):
            chart["applications"]["stream vs Pipe"] = theirs / ours
        elif peer.startswith(INTERPRETER_PEERS):
            chart["applications"][f"stream vs {peer.split(' (')[0]}"] = theirs / ours
    question = f"stream: {messages:,} messages, isolate to main"
    return _rows(question, f"{_us(ours)} ({messages / ours:,.0f}/s)", cells)


def _spread(values: list[float], show) -> str:
    """min / median / max."""
    return " / ".join(show(v) for v in (min(values), statistics.median(values), max(values)))


def _batch_rows(suites, chart) -> list[tuple[str, ...]]:
    """The batch: map time and peak PSS of the process tree, against each peer's."""
    suite = suites["bm_batch"]
    meta = suite.get_benchmarks()[0].get_metadata()
    ways = [
        name.removeprefix("batch ").removesuffix(": map seconds")
        for name in suite.get_benchmark_names()
        if name.endswith(": map seconds")
    ]
    ours = next(way for way in ways if way.startswith("subiso"))
    rows: list[tuple[str, ...]] = []
    for key, question, show, compare in (
        ("map seconds", "map time", lambda v: f"{v:.2f}", _faster),
        ("peak PSS", "peak PSS, process tree", lambda v: f"{v / 1e6:,.0f}", _smaller),
    ):
        unit = " s" if key == "map seconds" else " MB"
        mine = _values(suites, "bm_batch", f"batch {ours}: {key}")
        cells = []
        for way in ways:
            if way == ours:
                continue
            theirs = _values(suites, "bm_batch", f"batch {way}: {key}")
            median, our_median = statistics.median(theirs), statistics.median(mine)
            cells.append((f"{way} {_spread(theirs, show)}{unit}", compare(median, our_median)))
            what = "time" if key == "map seconds" else "PSS"
            chart["applications"][f"batch {what} vs {way.split(' (')[0]}"] = median / our_median
        title = f"batch, {meta['chunks']:,} log chunks: {question}"
        if key == "map seconds":
            title += " (min / median / max)"
        rows += _rows(title, f"{ours} {_spread(mine, show)}{unit}", cells)
    return rows


def _coldstart_rows(suites, chart) -> list[tuple[str, ...]]:
    """Cold start to the first result: p50 / p90 of subiso's ways and the peers'."""
    suite = suites["bm_coldstart"]
    names = suite.get_benchmark_names()
    ways = [
        name.removeprefix("cold start ").removesuffix(": to first result")
        for name in names
        if name.endswith(": to first result")
    ]
    floor = next((n for n in names if "does nothing" in n), None)

    def values(way: str, what: str = "to first result") -> list[float]:
        return _values(suites, "bm_coldstart", f"cold start {way}: {what}")

    def p50_p90(values: list[float]) -> str:
        return f"{_us(_percentile(values, 0.5))} / {_us(_percentile(values, 0.9))}"

    rows: list[tuple[str, ...]] = []
    for ours in (way for way in ways if way.startswith("subiso")):
        mine = _percentile(values(ours), 0.5)
        cells = []
        for way in ways:
            if way.startswith("subiso"):
                continue
            theirs = _percentile(values(way), 0.5)
            cells.append((f"{way} {p50_p90(values(way))}", _faster(theirs, mine)))
            if ours.startswith("subiso.Pool"):
                chart["applications"][f"cold start vs {way.split('(')[0]}"] = theirs / mine
        rows += _rows(f"cold start to 1st result p50/p90: {ours}", p50_p90(values(ours)), cells)
        rows.append(("", f"process wall {p50_p90(values(ours, 'process wall time'))}", "", ""))
    if floor is not None:
        nothing = _percentile(_values(suites, "bm_coldstart", floor), 0.5)
        rows.append(("", "", f"a process that does nothing {_us(nothing)}", ""))
    return rows


# Short labels of bm_wire_memory's patterns.
WIRE_PATTERNS = {
    "stream to an exiting sender": "exiting sender",
    "stream from a waiting sender": "waiting sender",
    "main streams to an isolate": "main to an isolate",
    "Agent under many updates": "Agent updates",
}


def _wire_memory_rows(suites, chart) -> list[tuple[str, ...]]:
    """What streams leave in the process, against the targets."""
    suite = suites["bm_wire_memory"]
    meta = suite.get_benchmarks()[0].get_metadata()
    mib, kib = 1 << 20, 1 << 10

    def value(bench) -> float:
        raw = bench.get_metadata().get("raw_values")
        return statistics.median(
            [float(v) for v in raw.split(", ")] if raw else list(bench.get_values())
        )

    figures = {b.get_name().removeprefix("wire memory: "): value(b) for b in suite.get_benchmarks()}
    rows: list[tuple[str, ...]] = []
    backlog = next((n for n in figures if n.startswith("backlog")), None)
    if backlog is not None:
        size = backlog.split()[2]
        target = f"target < {meta['target_backlog_bytes'] / mib:.0f} MiB (300,000)"
        rows.append(
            (f"memory kept: {size} backlog, sender waits", _mib(figures[backlog]), target, "")
        )
        chart["wire memory"][f"backlog of {size}, MiB"] = figures[backlog] / mib
    target = f"target < {meta['target_per_10k_bytes'] / kib:.0f} KiB (3.14+)"
    for pattern, label in WIRE_PATTERNS.items():
        name = next((n for n in figures if n.startswith(f"{pattern}, RSS kept per ")), None)
        if name is None:
            continue
        count = int(name.rsplit(" per ", 1)[1].split()[0].replace(",", ""))
        per_10k = figures[name] * 10_000 / count
        question = f"memory kept per 10,000 messages: {label}"
        rows.append((question, f"{per_10k / kib:,.0f} KiB", target, ""))
        chart["wire memory"][label] = per_10k / kib
    alone = next((n for n in figures if n.startswith("an isolate alone, RSS kept per")), None)
    if alone is not None:
        question = "memory kept per isolate (spawn, 1 message, exit)"
        rows.append((question, f"{figures[alone] / kib:,.0f} KiB", "", ""))
    sensors = next((n for n in figures if n.endswith("sensor readings, RSS peak")), None)
    if sensors is not None:
        count = sensors.split()[0]
        kept = figures[sensors.replace("RSS peak", "RSS kept after join, close and collect")]
        rows.append(
            (
                f"memory: {count} readings read as they come",
                f"peak {_mib(figures[sensors])}",
                f"kept after join+close+collect {_mib(kept)}",
                "",
            )
        )
    stress = next((n for n in figures if n.startswith("stress harness")), None)
    if stress is not None:
        seconds = stress.split(", ")[1]
        peak = figures[f"stress harness, {seconds}, RSS growth at its peak"]
        rows.append((f"memory: stress harness {seconds}, RSS growth", _mib(peak), "", ""))
    return rows


def _mib(value: float) -> str:
    return f"{value / (1 << 20):,.1f} MiB"


def _share_rows(suites, chart) -> list[tuple[str, ...]]:
    """SharedBuffer: the send sweep against the other ways, memory, throughput."""
    rows: list[tuple[str, ...]] = []
    names = suites["bm_shared"].get_benchmark_names()
    tiny = _median(suites, "bm_shared", "share: tiny message (None), subiso.Pool")
    chart["share tiny"] = tiny
    for label in ("1 KiB", "1 MiB", "64 MiB", "1 GiB"):
        prefix = f"share {label}: "
        ours = _median(suites, "bm_shared", f"{prefix}SharedBuffer, subiso.Pool")
        times = {
            name.removeprefix(prefix): _median(suites, "bm_shared", name)
            for name in names
            if name.startswith(prefix)
        }
        chart["share"][label] = times
        cells = [
            (f"{way} {_us(theirs)}", _ratio(theirs / ours))
            for way, theirs in times.items()
            if way != "SharedBuffer, subiso.Pool"
        ]
        question = f"{label} SharedBuffer to a pool task and back"
        rows += _rows(question, f"{_us(ours)} ({ours / tiny:.1f}x a tiny one)", cells)

    share = {b.get_name(): b.get_values()[0] for b in suites["bm_shared_memory"].get_benchmarks()}
    gib = 1 << 30
    growth = {
        name.removeprefix("share: PSS growth, "): value
        for name, value in share.items()
        if name.startswith("share: PSS growth, ")
    }
    chart["share memory"] = growth
    shared = next(v for n, v in growth.items() if n.endswith("SharedBuffer"))
    cells = [
        (f"{way} {theirs / gib:,.2f} GiB", f"{theirs / shared:.1f}x less")
        for way, theirs in growth.items()
        if not way.endswith("SharedBuffer")
    ]
    rows += _rows("PSS growth, 8 readers of one table", f"{shared / gib:,.2f} GiB", cells)
    one = next(v for n, v in share.items() if n.endswith("1 isolate"))
    two = next(v for n, v in share.items() if n.endswith("2 isolates"))
    rows.append(
        (
            "sum 256 MiB int64 SharedBuffer, 2 isolates",
            _us(two),
            f"1 isolate {_us(one)}",
            f"{one / two:.2f}x speedup",
        )
    )
    return rows


def render(rows) -> str:
    header = ("question", "subiso", "peer (same run)", "subiso vs peer")
    widths = [max(len(row[i]) for row in [*rows, header]) for i in range(4)]
    lines = []
    for row in (header, None, *rows):
        if row is None:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        else:
            cells = (c.ljust(w) for c, w in zip(row, widths, strict=True))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def draw(chart, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows = 4 if chart.get("applications") or chart.get("wire memory") else 3
    fig, axes = plt.subplots(rows, 2, figsize=(17, 5.4 * rows))
    panels = [
        (axes[0][0], "speedups", "the process peer", "Speed against processes"),
        (axes[0][1], "interpreters", "the peer", "Speed against other subinterpreter peers"),
    ]
    if rows == 4:
        panels.append(
            (
                axes[3][0],
                "applications",
                "the peer (time; PSS: theirs / ours)",
                "Programs: stream, batch, cold start",
            )
        )
    for ax, key, against, heading in panels:
        names = list(chart.get(key, {}))
        values = [chart[key][n] for n in names]
        bars = ax.barh(names, values, color=["#2a9d8f" if v >= 1 else "#e76f51" for v in values])
        ax.axvline(1, color="black", linewidth=0.8)
        ax.set_xscale("log")
        if values:
            ax.set_xlim(right=max(*values, 1) * 4)  # room for the labels
        ax.set_xlabel(f"subiso speedup over {against} (log; >1 is better)")
        digits = 2 if key == "applications" else 1  # applications: ratios near 1
        ax.bar_label(
            bars, labels=[f"{v:,.{digits if v >= 0.1 else 2}f}x" for v in values], padding=3
        )
        ax.invert_yaxis()
        ax.set_title(heading)
        if key == "applications":  # ratios near 1: label the ticks plainly
            ax.xaxis.set_major_locator(ticker.LogLocator(base=2))
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())

    ax = axes[1][0]
    sizes = list(chart["payload"])
    methods = list(next(iter(chart["payload"].values())))
    for method in methods:
        ax.plot(sizes, [chart["payload"][s][method] for s in sizes], marker="o", label=method)
    ax.set_yscale("log")
    ax.set_xlabel("payload (echoed there and back)")
    ax.set_ylabel("throughput, MiB/s (log)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Payload sweep")

    ax = axes[1][1]
    ways = list(chart["jank"])
    short = [
        w.replace(
            "subiso.run_async + gc.disable/freeze by the caller", "run_async, caller defers GC"
        ).replace("Executor", "")
        for w in ways
    ]
    gaps = [chart["jank"][w]["gap"] * 1e3 for w in ways]
    gcs = [min(chart["jank"][w]["gc"], chart["jank"][w]["gap"]) * 1e3 for w in ways]
    ax.barh(short, gaps, color="#264653", label="largest tick gap")
    ax.barh(short, gcs, color="#f4a261", label="of which GC pause (at most)")
    ax.axvline(1000 / 60, color="red", linestyle="--", linewidth=0.8, label="one 60 Hz frame")
    ax.set_xlabel("ms (smaller is better)")
    ax.invert_yaxis()
    ax.legend(fontsize=8)
    ax.set_title("Jank: decoding 211,640 photos")

    ax = axes[2][0]
    sizes = list(chart["share"])
    ways = list(dict.fromkeys(way for size in sizes for way in chart["share"][size]))
    for way in ways:
        shown = [s for s in sizes if way in chart["share"][s]]
        ax.plot(shown, [chart["share"][s][way] * 1e3 for s in shown], marker="o", label=way)
    ax.axhline(
        chart["share tiny"] * 1e3, color="grey", linestyle="--", linewidth=0.8, label="tiny message"
    )
    ax.set_yscale("log")
    ax.set_xlabel("buffer (sent to a task and back)")
    ax.set_ylabel("ms per round trip (log; smaller is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Sharing sweep: what a send costs as the buffer grows")

    ax = axes[2][1]
    ways = list(chart["share memory"])
    gib = [chart["share memory"][w] / (1 << 30) for w in ways]
    bars = ax.barh(ways, gib, color=["#2a9d8f" if "SharedBuffer" in w else "#8d99ae" for w in ways])
    ax.bar_label(bars, labels=[f"{g:,.2f} GiB" for g in gib], padding=3)
    ax.set_xlim(right=max(gib, default=1) * 1.3)
    ax.set_xlabel("PSS growth, GiB (smaller is better)")
    ax.invert_yaxis()
    ax.set_title("Memory: 8 workers each reading one table")

    if rows == 4:
        ax = axes[3][1]
        kept = chart.get("wire memory", {})
        patterns = [p for p in kept if not p.startswith("backlog")]
        backlog = next((p for p in kept if p.startswith("backlog")), None)
        values = [kept[p] for p in patterns]
        bars = ax.barh(
            patterns, values, color=["#2a9d8f" if v < 100 else "#e76f51" for v in values]
        )
        ax.bar_label(bars, labels=[f"{v:,.0f} KiB" for v in values], padding=3)
        ax.axvline(100, color="red", linestyle="--", linewidth=0.8, label="target (3.14+)")
        ax.set_xlim(right=max([*values, 100]) * 1.3)
        ax.set_xlabel("RSS kept per 10,000 messages, KiB (smaller is better)")
        ax.invert_yaxis()
        ax.legend(fontsize=8)
        heading = "Memory a stream leaves behind"
        if backlog is not None:
            size = backlog.split()[2].rstrip(",")
            heading += f"\n(a {size} backlog keeps {kept[backlog]:,.0f} MiB; target < 20)"
        ax.set_title(heading)

    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.985))  # below the title
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="pyperf's rigorous mode")
    parser.add_argument("--report-only", action="store_true", help="redraw from perf/results/")
    args = parser.parse_args()
    if args.report_only:
        suites = {
            n: pyperf.BenchmarkSuite.load(str(RESULTS / f"{n}.json"))
            for n in PRESETS["default"]
            if (RESULTS / f"{n}.json").exists()
        }
    else:
        suites = run_all("full" if args.full else "default")
    rows, chart = build_table(suites)
    title = (
        f"subiso vs processes, threads and interpreter peers — {date.today()}, "
        f"{os.cpu_count()} cores, CPython {_python_version(suites)}, {platform.machine()}"
    )
    table = render(rows)
    print()
    print(title)
    print(table)
    (RESULTS / "report.md").write_text(f"{title}\n\n{table}\n")
    draw(chart, RESULTS / "summary.png", title)
    print(f"\nwrote {RESULTS / 'report.md'} and {RESULTS / 'summary.png'}")


if __name__ == "__main__":
    main()
