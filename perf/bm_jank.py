"""Jank: decode the seed's ~20 MB JSON of 211,640 photos while a 60 Hz ticker
runs on the main asyncio loop.

For each way of doing the work -- inline on the loop, ThreadPoolExecutor,
ProcessPoolExecutor (forkserver, warm), ``subiso.run_async`` -- it records,
over the work and the second after it, the largest gap between ticks and the
frames dropped. CPython's own garbage collection pauses (gc.callbacks) are
recorded apart, and for subiso so is every delivery slice, with the
collector's time inside it taken out: a gen-2 collection over the objects
received is the collector's stall, not delivery's.

Writes a pyperf suite (values in seconds, frames as counts) with -o FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pyperf

sys.path.insert(0, str(Path(__file__).parent))
import photos

import subiso
from subiso import _run

FRAME = 1 / 60
AFTER = 1.0  # seconds watched after the work returns
REPEAT = 3


class GcWatch:
    def __init__(self) -> None:
        self.pauses: list[tuple[float, float]] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((self._start, time.perf_counter()))


async def _watch(work) -> dict[str, float]:
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(FRAME)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    watch = GcWatch()
    gc.callbacks.append(watch)
    _run.delivery_log = []
    try:
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.1)
        gaps.clear()
        result = await work()
        assert len(result) == photos.COUNT
        await asyncio.sleep(AFTER)
        stop.set()
        await tick
        del result  # freeing 211,640 objects is the caller's business, not watched
    finally:
        gc.callbacks.remove(watch)
        slices, _run.delivery_log = _run.delivery_log, None
    pure_slices = [
        (end - start) - sum(max(0.0, min(end, ge) - max(start, gs)) for gs, ge in watch.pauses)
        for start, end in slices
    ]
    return {
        "max tick gap": max(gaps),
        "frames dropped": float(sum(max(0, round(g / FRAME) - 1) for g in gaps)),
        "max GC pause": max((e - s for s, e in watch.pauses), default=0.0),
        "max delivery slice (GC excluded)": max(pure_slices, default=0.0),
        "max delivery slice (with GC)": max((e - s for s, e in slices), default=0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--repeat", type=int, default=REPEAT)
    args = parser.parse_args()

    text = photos.generate()
    threads = ThreadPoolExecutor(1)
    processes = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver"))
    processes.submit(len, "warm").result()
    subiso.run(len, "warm")

    async def inline():
        return photos.decode(text)

    async def in_thread():
        return await asyncio.get_running_loop().run_in_executor(threads, photos.decode, text)

    async def in_process():
        return await asyncio.get_running_loop().run_in_executor(processes, photos.decode, text)

    async def in_isolate():
        return await subiso.run_async(photos.decode, text)

    async def in_isolate_gc_deferred():
        # What a user can do about the collector (README): keep it from
        # running over the objects while they arrive, then freeze them so
        # later full collections skip them. The library never does this itself.
        gc.disable()
        try:
            return await subiso.run_async(photos.decode, text)
        finally:
            gc.freeze()
            gc.enable()

    ways = {
        "inline": inline,
        "ThreadPoolExecutor": in_thread,
        "ProcessPoolExecutor": in_process,
        "subiso.run_async": in_isolate,
        "subiso.run_async + gc.disable/freeze by the caller": in_isolate_gc_deferred,
    }
    results: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        for way, work in ways.items():
            gc.collect()
            print(f"  jank: {way}...", flush=True)
            for key, value in asyncio.run(_watch(work)).items():
                gc.unfreeze()
                if key.startswith("max delivery") and not way.startswith("subiso"):
                    continue
                results.setdefault(f"jank {way}: {key}", []).append(value)
    threads.shutdown()
    processes.shutdown()

    metadata = {
        "description": __doc__.splitlines()[0],
        "photos": photos.COUNT,
        "json_bytes": len(text),
        "frame_s": FRAME,
        "after_s": AFTER,
        "unit": "second",
    }
    benchmarks = []
    for name, values in results.items():
        meta = dict(metadata, name=name)
        if "frames" in name:
            meta["unit"] = "integer"
            values = [max(v, 1e-9) for v in values]
        else:
            values = [max(v, 1e-9) for v in values]
        run = pyperf.Run(values, metadata=meta, collect_metadata=False)
        benchmarks.append(pyperf.Benchmark([run]))
    pyperf.BenchmarkSuite(benchmarks).dump(args.output, replace=True)
    for name, values in results.items():
        print(f"{name}: {[round(v * 1000, 1) if 'frames' not in name else v for v in values]}")


if __name__ == "__main__":
    main()
