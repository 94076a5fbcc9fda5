"""Memory: what an idle isolate costs, and a thousand of them in one process.

subiso: RSS growth of this process over ``RUNS`` one-shot runs (CPython 3.13
keeps about 2 MiB of every destroyed interpreter, 3.14 nothing measurable);
per idle isolate (spawned, listening on a port), measured over
``IDLE_COUNT`` isolates; ``MANY`` live isolates at once
(RSS and the time to start and to stop them all).
Peer, same run: idle multiprocessing processes (forkserver and spawn), each
costing its own proportional set size (PSS, shared pages split fairly).

Writes a pyperf suite (values in bytes or seconds) with -o FILE.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time

import pyperf

import subiso
from subiso import _hub

IDLE_COUNT = 50
RUNS = 400
PROCESS_COUNT = 10
MANY = 1000


def _rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def _pss(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Pss")


def _idle(port):
    import subiso

    inbox = subiso.ReceivePort()
    inbox.listen(lambda message: inbox.close())
    port.send(inbox.send_port)


def isolates(count: int) -> tuple[float, float, float]:
    """(RSS bytes per isolate, seconds to start each, seconds to stop each)."""
    subiso.run(len, "warm")
    time.sleep(0.5)
    before = _rss()
    port = subiso.ReceivePort()
    began = time.perf_counter()
    handles, inboxes = [], []
    for _ in range(count):
        handles.append(subiso.Isolate.spawn(_idle, port.send_port))
        inboxes.append(port.receive(timeout=120))
    started = time.perf_counter() - began
    time.sleep(0.5)
    per_isolate = (_rss() - before) / count
    began = time.perf_counter()
    for inbox in inboxes:
        inbox.send("stop")
    for handle in handles:
        handle.join(120)
    stopped = time.perf_counter() - began
    port.close()
    return per_isolate, started / count, stopped / count


def runs(count: int) -> float:
    """RSS bytes this process grows by over ``count`` one-shot runs (each a
    fresh isolate): what CPython keeps of every destroyed interpreter, plus
    anything subiso would leak."""
    for _ in range(20):
        subiso.run(abs, -1)
    _hub.settle(60)
    before = _rss()
    for i in range(count):
        subiso.run(abs, -i)
    _hub.settle(60)
    return _rss() - before


def _sleeper(conn) -> None:
    conn.recv()


def processes(method: str, count: int) -> float:
    """PSS bytes per idle process."""
    ctx = multiprocessing.get_context(method)
    pipes, children = [], []
    for _ in range(count):
        here, there = ctx.Pipe()
        child = ctx.Process(target=_sleeper, args=(there,))
        child.start()
        pipes.append(here)
        children.append(child)
    time.sleep(1.0)
    total = sum(_pss(child.pid) for child in children)
    for here in pipes:
        here.send(None)
    for child in children:
        child.join()
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--many", type=int, default=MANY)
    args = parser.parse_args()

    results: dict[str, tuple[float, str]] = {}
    print(f"  memory: {RUNS} runs...", flush=True)  # first, before the heap holds more
    results[f"memory: RSS growth over {RUNS} runs"] = (runs(RUNS), "byte")
    print(f"  memory: {IDLE_COUNT} idle isolates...", flush=True)
    per, _, _ = isolates(IDLE_COUNT)
    results["memory: RSS per idle isolate"] = (per, "byte")
    print(f"  memory: {args.many} live isolates...", flush=True)
    per_many, start_many, stop_many = isolates(args.many)
    results[f"memory: RSS per isolate, {args.many} live"] = (per_many, "byte")
    results[f"memory: process RSS growth, {args.many} live isolates"] = (
        per_many * args.many,
        "byte",
    )
    results[f"memory: start one of {args.many} isolates"] = (start_many, "second")
    results[f"memory: stop one of {args.many} isolates"] = (stop_many, "second")
    for method in ("forkserver", "spawn"):
        print(f"  memory: {PROCESS_COUNT} idle processes ({method})...", flush=True)
        results[f"memory: PSS per idle process ({method})"] = (
            processes(method, PROCESS_COUNT),
            "byte",
        )

    dump_suite(results, args.output, __doc__.splitlines()[0])
    for name, (value, unit) in results.items():
        shown = f"{value / (1 << 20):.2f} MiB" if unit == "byte" else f"{value * 1e3:.2f} ms"
        print(f"{name}: {shown}")


def dump_suite(results: dict[str, tuple[float, str]], output: str, description: str) -> None:
    """Write measurements taken once each (name: (value, unit)) as a pyperf suite."""
    benchmarks = []
    for name, (value, unit) in results.items():
        metadata = {"name": name, "unit": unit, "description": description}
        run = pyperf.Run([max(value, 1e-9)], metadata=metadata, collect_metadata=False)
        benchmarks.append(pyperf.Benchmark([run]))
    pyperf.BenchmarkSuite(benchmarks).dump(output, replace=True)


if __name__ == "__main__":
    main()
