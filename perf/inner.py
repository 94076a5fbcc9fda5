"""Inner loops: pyperf benchmarks that do several operations per loop.

pyperf finds how many loops a value needs in a worker process of its own,
calling the benchmark with 1, 2, 4, ... loops; a benchmark that makes a pool
or starts a process for each call pays that set-up at every step, often more
than its values cost. A benchmark added here does ``per_loop`` operations
per loop (pyperf divides by them, so values stay per operation), sized so
that one loop takes some tens of milliseconds on a 2-core machine: the
default preset of ``perf/run.py`` then passes ``--loops 1`` and skips the
calibration, while ``--full`` still calibrates (starting from a loop that
is already long enough).
"""

from __future__ import annotations


def add(runner, name: str, time_func, per_loop: int, **kwargs):
    """``runner.bench_time_func(name, ...)``, ``per_loop`` operations a loop."""

    def timed(loops: int) -> float:
        return time_func(loops * per_loop)

    return runner.bench_time_func(name, timed, inner_loops=per_loop, **kwargs)
