"""Agent: state kept in its own isolate."""

from __future__ import annotations

import asyncio

import helpers
import pytest

import subiso


def test_update_read_exit():
    agent = subiso.Agent.create(helpers.counter_factory, 10)
    for _ in range(5):
        agent.update(helpers.increment)
    assert agent.read(lambda state: state["count"]) == 15
    assert agent.read() == {"count": 15}
    assert agent.exit() == {"count": 15}
    with pytest.raises(subiso.BrokenIsolateError):
        agent.read()


def test_errors_skip_updates_until_reset_but_reads_work():
    agent = subiso.Agent.create(helpers.counter_factory)
    try:
        agent.update(helpers.increment)
        agent.update(helpers.bad_update)
        agent.update(helpers.increment)  # skipped
        assert agent.read(lambda s: s["count"]) == 1
        assert isinstance(agent.error, subiso.RemoteError)
        assert "bad update" in str(agent.error)
        agent.reset_error()
        assert agent.error is None
        agent.update(helpers.increment)
        assert agent.read(lambda s: s["count"]) == 2
        assert agent.error is None
    finally:
        agent.kill()


def test_factory_error_and_kill():
    with pytest.raises(TypeError):
        subiso.Agent.create(helpers.counter_factory, 1, 2, 3)
    agent = subiso.Agent.create(helpers.counter_factory)
    agent.kill()
    with pytest.raises(subiso.BrokenIsolateError):
        agent.update(helpers.increment)


def test_async_agent():
    async def main():
        agent = await subiso.Agent.create_async(helpers.counter_factory, 1)
        agent.update(helpers.increment)
        value = await agent.read_async(lambda s: s["count"])
        agent.exit()
        return value

    assert asyncio.run(main()) == 2


def test_legacy_agent():
    agent = subiso.Agent.create(helpers.counter_factory, isolation="legacy")
    agent.update(helpers.increment)
    assert agent.exit() == {"count": 1}
