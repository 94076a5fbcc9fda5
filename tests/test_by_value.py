"""A callable whose module refuses isolates travels by value (only what it
uses must load there), remembered per module; results come back as the
caller's own classes; a callable that uses the refused module still fails,
naming it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import refuses_on_import as refusing

import subiso

T = 60
TESTS = Path(__file__).parent


def test_run():
    assert subiso.run(refusing.square, 7) == 49
    assert subiso.compute(refusing.square, 8) == 64


def test_run_async():
    async def main():
        return await subiso.run_async(refusing.square, 6)

    assert asyncio.run(main()) == 36


def test_spawn():
    with subiso.ReceivePort() as port:
        isolate = subiso.Isolate.spawn(refusing.send_square, (port.send_port, 5))
        assert port.receive(timeout=T) == 25
        assert isolate.join(T)


def test_pool():
    with subiso.Pool(1) as pool:
        assert pool.submit(refusing.square, 7).result(timeout=T) == 49
        assert list(pool.map(refusing.square, range(5))) == [0, 1, 4, 9, 16]
        assert pool.submit(refusing.norm2, refusing.Point(3, 4)).result(timeout=T) == 25


def test_agent():
    agent = subiso.Agent.create(refusing.Counter, 1)
    try:
        agent.update(refusing.increment)
        assert agent.read(refusing.count, timeout=T) == 2
    finally:
        agent.kill()


def test_results_come_back_as_the_callers_classes():
    point = subiso.run(refusing.make_point, 3, 4)
    assert type(point) is refusing.Point
    assert point.norm2() == 25
    with subiso.Pool(1) as pool:
        point = pool.submit(refusing.make_point, 1, 2).result(timeout=T)
    assert type(point) is refusing.Point
    assert refusing.Point.norm2 is refusing.__dict__["Point"].__dict__["norm2"]


def test_a_callable_that_uses_the_refused_module_names_it():
    with pytest.raises(subiso.SubinterpreterImportError) as info:
        subiso.run(refusing.uses_curses)
    assert info.value.name == "_curses"
    with subiso.Pool(1) as pool, pytest.raises(subiso.SubinterpreterImportError) as info:
        pool.submit(refusing.uses_curses).result(timeout=T)
    assert info.value.name == "_curses"


def test_other_libraries_pickle_as_before():
    cloudpickle = pytest.importorskip("cloudpickle")
    subiso.run(refusing.square, 2)
    assert cloudpickle.list_registry_pickle_by_value() == set()
    assert len(cloudpickle.dumps(refusing.square)) < 100  # by reference, as always


def test_remembered_per_module_and_logged_once():
    script = textwrap.dedent(
        """
        import logging
        import refuses_on_import as refusing
        import subiso

        said = []
        handler = logging.Handler()
        handler.emit = lambda record: said.append(record.getMessage())
        logging.getLogger("subiso").addHandler(handler)
        logging.getLogger("subiso").setLevel(logging.INFO)
        assert subiso.run(refusing.square, 3) == 9
        assert subiso.run(refusing.square, 4) == 16
        with subiso.Pool(1) as pool:
            assert pool.submit(refusing.square, 5).result(timeout=60) == 25
        print(len([m for m in said if "refuses_on_import" in m]))
        print(said[0])
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=T, env=env
    )
    assert done.returncode == 0, done.stderr
    count, message = done.stdout.splitlines()
    assert count == "1"
    assert "by value" in message and "_curses" in message
