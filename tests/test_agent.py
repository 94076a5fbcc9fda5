"""Agent: state kept in its own isolate."""

from __future__ import annotations

import asyncio
import threading

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


# A bound on every wait below: far longer than any of them takes, short of
# the per-test timeout (whose stack dump crashes CPython 3.13.0).
WAIT = 30


def _breaks_on_arrival():
    """A value that pickles, and whose unpickling raises: sent to the agent,
    it breaks the agent's own loop (its receive), not a user function."""

    def arrive():
        raise RuntimeError("fault injected")

    class BreaksOnArrival:
        def __reduce__(self):
            return (arrive, ())

    return BreaksOnArrival()


def test_read_waiting_while_the_isolate_is_killed_raises():
    agent = subiso.Agent.create(helpers.counter_factory)
    started = subiso.ReceivePort()
    started_port = started.send_port

    def kill_once_the_read_runs():
        try:
            started.receive(timeout=WAIT)
        except subiso.PortClosedError:
            return  # the test failed before the read began
        agent._isolate.kill(subiso.IMMEDIATE)

    killer = threading.Thread(target=kill_once_the_read_runs)
    killer.start()
    try:
        with pytest.raises(subiso.BrokenIsolateError):
            agent.read(lambda state: helpers.receive_forever(started_port), timeout=WAIT)
        killer.join(WAIT)
        assert not killer.is_alive()
        with pytest.raises(subiso.BrokenIsolateError):
            agent.read(timeout=WAIT)
        with pytest.raises(subiso.BrokenIsolateError):
            agent.update(helpers.increment)
    finally:
        started.close()
        killer.join(WAIT)
        agent.kill()


def test_read_async_waiting_while_the_isolate_is_killed_raises():
    async def main():
        agent = await subiso.Agent.create_async(helpers.counter_factory)
        with subiso.ReceivePort() as started:
            started_port = started.send_port
            read = asyncio.ensure_future(
                agent.read_async(lambda state: helpers.receive_forever(started_port), timeout=WAIT)
            )
            try:
                await started.receive_async(timeout=WAIT)
                agent._isolate.kill(subiso.IMMEDIATE)
                with pytest.raises(subiso.BrokenIsolateError):
                    await asyncio.wait_for(read, WAIT)
            finally:
                read.cancel()
                agent.kill()

    asyncio.run(main())


def test_a_broken_loop_fails_its_waiters_and_later_calls():
    agent = subiso.Agent.create(helpers.counter_factory)
    try:
        agent.update(_breaks_on_arrival())
        with pytest.raises(subiso.BrokenServiceError) as broken:
            agent.read(timeout=WAIT)  # queued behind the message that breaks the loop
        assert broken.value.service == "agent"
        assert "fault injected" in str(broken.value)
        with pytest.raises(subiso.BrokenServiceError):
            agent.read(timeout=WAIT)
        with pytest.raises(subiso.BrokenServiceError):
            agent.update(helpers.increment)
        with pytest.raises(subiso.BrokenServiceError):
            agent.exit(timeout=WAIT)
    finally:
        agent.kill()


def test_a_read_that_breaks_the_loop_fails():
    agent = subiso.Agent.create(helpers.counter_factory)
    try:
        with pytest.raises(subiso.BrokenServiceError, match="fault injected"):
            agent.read(_breaks_on_arrival(), timeout=WAIT)
    finally:
        agent.kill()


def test_exit_on_a_dead_agent_raises_at_once():
    agent = subiso.Agent.create(helpers.counter_factory)
    agent._isolate.kill(subiso.IMMEDIATE)
    assert agent._isolate.join(WAIT)
    with pytest.raises(subiso.BrokenIsolateError):
        agent.exit(timeout=WAIT)
    with pytest.raises(subiso.BrokenIsolateError):
        agent.read(timeout=WAIT)
    agent.kill()  # still allowed


def test_read_on_an_agent_that_ended_itself_raises():
    agent = subiso.Agent.create(helpers.counter_factory)
    try:
        agent.update(lambda state: helpers.die())
        with pytest.raises(subiso.BrokenIsolateError):
            agent.read(timeout=WAIT)
    finally:
        agent.kill()


def test_create_when_the_isolate_ends_while_building():
    with pytest.raises(subiso.BrokenIsolateError):
        subiso.Agent.create(helpers.die)


def test_read_and_exit_time_out_and_the_agent_lives_on():
    agent = subiso.Agent.create(helpers.counter_factory)
    try:
        with subiso.ReceivePort() as started:
            started_port = started.send_port
            agent.update(lambda state: helpers.receive_forever(started_port))
            started.receive(timeout=WAIT)  # the agent is busy from now on
            with pytest.raises(TimeoutError):
                agent.read(timeout=0.01)
            with pytest.raises(TimeoutError):
                asyncio.run(agent.read_async(timeout=0.01))
            with pytest.raises(TimeoutError):
                agent.exit(timeout=0.01)
    finally:
        agent.kill()
    with pytest.raises(subiso.BrokenIsolateError):
        agent.exit(timeout=WAIT)


def test_exit_waits_again_after_a_timeout():
    def wait_for_the_gate(state, started_port):
        with subiso.ReceivePort() as gate:
            started_port.send(gate.send_port)
            gate.receive(timeout=WAIT)
        return state

    agent = subiso.Agent.create(helpers.counter_factory)
    try:
        with subiso.ReceivePort() as started:
            started_port = started.send_port
            agent.update(lambda state: wait_for_the_gate(state, started_port))
            gate = started.receive(timeout=WAIT)
            with pytest.raises(TimeoutError):
                agent.exit(timeout=0.01)
            with pytest.raises(subiso.BrokenIsolateError, match="exiting"):
                agent.update(helpers.increment)
            gate.send("open")
            assert agent.exit(timeout=WAIT) == {"count": 0}
    finally:
        agent.kill()


def test_exit_with_a_final_state_that_cannot_cross():
    agent = subiso.Agent.create(helpers.counter_factory)
    try:
        agent.update(lambda state: helpers.Unpicklable())
        with pytest.raises(subiso.NotSendableError):
            agent.exit(timeout=WAIT)
        with pytest.raises(subiso.BrokenIsolateError):
            agent.read(timeout=WAIT)
    finally:
        agent.kill()
