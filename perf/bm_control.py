"""The control plane and services: kill, ping, name lookups, host calls.

subiso only (these have no direct peer): ``kill(IMMEDIATE)`` of an isolate
spinning in a pure-Python loop until ``join`` returns; ``ping`` round trip;
``IsolateNameServer.lookup_port_by_name`` from the main isolate and from an
isolate (a hub round trip); ``host.call`` of a trivial handler from an
isolate, to compare with the port ping-pong of ``bm_pingpong``.
"""

from __future__ import annotations

import time

import inner
import pyperf

import subiso


def _busy(port):
    port.send("busy")
    while True:
        pass


def _idle(port):
    import subiso

    inbox = subiso.ReceivePort()
    inbox.listen(lambda message: inbox.close())
    port.send(inbox.send_port)


def bench_kill(loops: int) -> float:
    total = 0.0
    for _ in range(loops):
        with subiso.ReceivePort() as port:
            iso = subiso.Isolate.spawn(_busy, port.send_port)
            port.receive(timeout=60)
            start = time.perf_counter()
            iso.kill(subiso.IMMEDIATE)
            iso.join(60)
            total += time.perf_counter() - start
    return total


def bench_ping(loops: int) -> float:
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(_idle, port.send_port)
        inbox = port.receive(timeout=60)
        start = time.perf_counter()
        for _ in range(loops):
            iso.ping(port.send_port, None)
            port.receive()
        elapsed = time.perf_counter() - start
        inbox.send("stop")
        iso.join(60)
    return elapsed


def bench_lookup_main(loops: int) -> float:
    with subiso.ReceivePort() as port:
        subiso.IsolateNameServer.register_port_with_name(port.send_port, "bench")
        start = time.perf_counter()
        for _ in range(loops):
            subiso.IsolateNameServer.lookup_port_by_name("bench")
        elapsed = time.perf_counter() - start
        subiso.IsolateNameServer.remove_port_name_mapping("bench")
    return elapsed


def _lookups(loops: int) -> float:
    import time

    import subiso

    lookup = subiso.IsolateNameServer.lookup_port_by_name
    lookup("bench")
    start = time.perf_counter()
    for _ in range(loops):
        lookup("bench")
    return time.perf_counter() - start


def bench_lookup_isolate(loops: int) -> float:
    with subiso.ReceivePort() as port:
        subiso.IsolateNameServer.register_port_with_name(port.send_port, "bench")
        elapsed = subiso.run(_lookups, loops)
        subiso.IsolateNameServer.remove_port_name_mapping("bench")
    return elapsed


def _host_calls(loops: int) -> float:
    import time

    import subiso

    subiso.host.call("nothing")
    start = time.perf_counter()
    for _ in range(loops):
        subiso.host.call("nothing")
    return time.perf_counter() - start


def bench_host_call(loops: int) -> float:
    return subiso.run(_host_calls, loops)


if __name__ == "__main__":
    runner = pyperf.Runner()
    runner.metadata["description"] = __doc__.splitlines()[0]
    subiso.host.register("nothing", lambda: None)
    inner.add(runner, "kill(IMMEDIATE) of a busy loop until joined", bench_kill, 4)
    inner.add(runner, "ping round trip", bench_ping, 1024)
    inner.add(runner, "name lookup, main isolate", bench_lookup_main, 65536)
    inner.add(runner, "name lookup, from an isolate", bench_lookup_isolate, 256)
    inner.add(runner, "host.call round trip, from an isolate", bench_host_call, 256)
