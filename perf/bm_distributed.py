"""Scale-out: subiso isolates inside Dask workers against plain Dask workers.

On this 2-core machine, two clusters on loopback, Dask's profiler off in both
(it cannot run beside isolates, see README): one worker process with two
threads whose tasks run on a ClusterPool of 2 isolates, against two
single-threaded worker processes running plain Dask tasks. Workloads:
``CPU_TASKS`` CPU-bound pure-Python tasks, and ``TINY_TASKS`` tiny tasks.
Reports tasks per second and the workers' RSS per core.

Writes a pyperf suite with -o FILE.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import dask
import distributed
import pyperf

sys.path.insert(0, str(Path(__file__).parent))
import tasks

from subiso.distributed import ClusterPool

CPU_TASKS = 16
TINY_TASKS = 2_000
REPEAT = 3
CORES = 2


def _rss(dask_worker=None) -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _timed(run) -> float:
    run()  # warm
    values = []
    for _ in range(REPEAT):
        began = time.perf_counter()
        run()
        values.append(time.perf_counter() - began)
    return statistics.median(values)


def measure(cluster_kwargs: dict, use_isolates: bool) -> dict[str, float]:
    with (
        distributed.LocalCluster(
            processes=True, host="127.0.0.1", dashboard_address=None, **cluster_kwargs
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        if use_isolates:
            with ClusterPool(client, isolates_per_worker=CORES) as pool:
                cpu = _timed(lambda: list(pool.map(tasks.cpu, [tasks.CPU_N] * CPU_TASKS)))
                tiny = _timed(lambda: list(pool.map(tasks.tiny, range(TINY_TASKS))))
                rss = sum(client.run(_rss).values())
        else:
            cpu = _timed(
                lambda: client.gather(client.map(tasks.cpu, [tasks.CPU_N] * CPU_TASKS, pure=False))
            )
            tiny = _timed(
                lambda: client.gather(client.map(tasks.tiny, range(TINY_TASKS), pure=False))
            )
            rss = sum(client.run(_rss).values())
    return {
        "cpu tasks/s": CPU_TASKS / cpu,
        "tiny tasks/s": TINY_TASKS / tiny,
        "RSS per core": rss / CORES,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    results = {}
    with dask.config.set({"distributed.worker.profile.enabled": False}):
        print("  distributed: 1 worker process, isolates...", flush=True)
        ours = measure({"n_workers": 1, "threads_per_worker": CORES}, use_isolates=True)
        print("  distributed: 2 worker processes, plain Dask...", flush=True)
        theirs = measure({"n_workers": CORES, "threads_per_worker": 1}, use_isolates=False)
    for name, value in ours.items():
        results[f"dask: {name}, 1 process + isolates"] = value
    for name, value in theirs.items():
        results[f"dask: {name}, 2 plain worker processes"] = value
    benchmarks = []
    for name, value in results.items():
        unit = "byte" if "RSS" in name else "integer"
        metadata = {"name": name, "unit": unit, "description": __doc__.splitlines()[0]}
        run = pyperf.Run([value], metadata=metadata, collect_metadata=False)
        benchmarks.append(pyperf.Benchmark([run]))
    pyperf.BenchmarkSuite(benchmarks).dump(args.output, replace=True)
    for name, value in results.items():
        shown = f"{value / (1 << 20):,.0f} MiB" if "RSS" in name else f"{value:,.1f}"
        print(f"{name}: {shown}")


if __name__ == "__main__":
    main()
