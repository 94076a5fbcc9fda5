"""Headline figures of subiso alone, no peers: what perf/compare measures on two versions.

The workloads of the README table's first rows, run as bm_pool, bm_pingpong
and bm_spawn run them (bm_pool's and bm_pingpong's functions, reused): a
pool task round trip (``subiso.Pool(2)``, one ``submit().result()``);
``pool.map`` of 20,000 tiny tasks, chunksize 1; a port ping-pong round trip;
``subiso.run`` latency p50, calls 20 ms apart; fresh runs back to back; an
8 MiB bytes echo through a pool task. Pools and echoing isolates are made
and warmed outside the timed region. It measures whichever subiso ``import
subiso`` finds: perf/compare puts a revision's package first on PYTHONPATH
(recorded as ``subiso_path``).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import pyperf

sys.path.insert(0, str(Path(__file__).parent))
import bm_pingpong
import bm_pool
import bm_spawn

import subiso

WORKERS = bm_pool.WORKERS
MAP_ITEMS = bm_pool.MAP_ITEMS
ECHO_BYTES = bm_pool.ECHO_BYTES
SPACING = bm_spawn.SPACING
LATENCY_CALLS = 15  # spaced runs whose median makes one latency value


def make_pool() -> subiso.Pool:
    return subiso.Pool(WORKERS)


# Runs call a function of this script, as bm_spawn does of its own: a
# function of ``__main__`` crosses by value. (bm_spawn.noop would cross by
# reference, and every fresh isolate would import bm_spawn and pyperf.)
def noop(*_):
    return None


def bench_run_latency_p50(loops: int) -> float:
    """The median of ``LATENCY_CALLS`` runs, ``SPACING`` apart, as the time
    of each of ``loops`` calls: one value is one p50, whatever the loops
    pyperf calibrates (the calls it costs do not grow with them)."""
    times = []
    for _ in range(LATENCY_CALLS):
        time.sleep(SPACING)
        start = time.perf_counter()
        subiso.run(noop)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * loops


def bench_run_back_to_back(loops: int) -> float:
    start = time.perf_counter()
    for _ in range(loops):
        subiso.run(noop)
    return time.perf_counter() - start


if __name__ == "__main__":
    runner = pyperf.Runner()
    runner.metadata["description"] = __doc__.splitlines()[0]
    runner.metadata["subiso_path"] = str(Path(subiso.__file__).parent)
    runner.metadata["workers"] = str(WORKERS)
    runner.metadata["map_items"] = str(MAP_ITEMS)
    runner.metadata["echo_bytes"] = str(ECHO_BYTES)
    runner.metadata["spacing_s"] = str(SPACING)
    runner.metadata["latency_calls"] = str(LATENCY_CALLS)
    runner.bench_time_func("pool task round trip", bm_pool.round_trip(make_pool))
    runner.bench_time_func(
        f"pool map, {MAP_ITEMS:,} tiny tasks, chunksize 1", bm_pool.tiny_map(make_pool, 1)
    )
    runner.bench_time_func("port ping-pong round trip", bm_pingpong.bench_subiso)
    runner.bench_time_func(
        f"run latency p50, calls {SPACING * 1e3:.0f} ms apart", bench_run_latency_p50
    )
    runner.bench_time_func("fresh runs back to back", bench_run_back_to_back)
    runner.bench_time_func(f"pool {ECHO_BYTES >> 20} MiB bytes echo", bm_pool.echo(make_pool))
