"""An event loop's thread only posts: it starts no thread, creates no
interpreter and joins no thread, also on the process's first call. And a
spawn that is cancelled or interrupted at any step ends the isolate it
started before the cancellation goes on."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import helpers
import pytest

import subiso
from subiso import _backend, _hub
from subiso._drive import drive
from subiso._isolate import spawning

T = 30

LOOP_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, threading
    sys.path.insert(0, {tests!r})
    import helpers, subiso
    from subiso import _backend

    loop_threads = set()
    seen = []
    start, join, create = threading.Thread.start, threading.Thread.join, _backend.interpreter_create

    def on_loop(what):
        if threading.get_ident() in loop_threads:
            seen.append(what)

    def recording_start(self):
        on_loop(f"started thread {{self.name}}")
        return start(self)

    def recording_join(self, timeout=None):
        on_loop(f"joined thread {{self.name}}")
        return join(self, timeout)

    def recording_create(isolation):
        on_loop(f"created an interpreter ({{isolation}})")
        return create(isolation)

    threading.Thread.start = recording_start
    threading.Thread.join = recording_join
    _backend.interpreter_create = recording_create

    async def main():
        loop_threads.add(threading.get_ident())
        # The first call of the process: no hub, no reaper, no spare existed.
        assert await subiso.run_async(helpers.square, 3) == 9
        squares = await asyncio.gather(*(subiso.run_async(helpers.square, i) for i in range(32)))
        assert squares == [i * i for i in range(32)]
        assert await subiso.compute_async(helpers.square, 4) == 16
        assert await subiso.Isolate.run_async(lambda: 5, isolation="legacy") == 5
        port = subiso.ReceivePort()
        iso = await subiso.Isolate.spawn_async(helpers.echo_entry, port.send_port)
        inbox = await port.receive_async(timeout=30)
        inbox.send("hi")
        assert await port.receive_async(timeout=30) == ("echo", "hi")
        inbox.send(None)
        port.close()
        agent = await subiso.Agent.create_async(helpers.square, 6)
        assert await agent.read_async() == 36
        return iso, agent

    iso, agent = asyncio.run(main())
    agent.kill()
    assert iso.join(30)
    print("seen on the loop's thread:", seen, flush=True)
    """
)


def test_an_event_loop_only_posts_from_the_first_call_on():
    result = subprocess.run(
        [sys.executable, "-c", LOOP_SCRIPT.format(tests=str(Path(__file__).parent))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "seen on the loop's thread: []" in result.stdout, result.stdout + result.stderr


def _spawn_steps():
    """A spawn whose entry says it runs and then spins: its conversation,
    and the port the entry speaks on."""
    port = subiso.ReceivePort()
    conversation = spawning(helpers.announce_then_spin, port.send_port, debug_name="cancelled")
    return conversation, port


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, asyncio.CancelledError])
@pytest.mark.parametrize("at_step", [0, 1])
def test_a_spawn_interrupted_at_any_step_ends_its_isolate(at_step, interruption):
    """Step 0: waiting for an isolate (Acquire); step 1: waiting for it to
    say it started. Thrown in at either, the interruption comes out of the
    conversation only once the isolate it started (if any) has exited."""
    conversation, port = _spawn_steps()
    try:
        step = next(conversation)
        for _ in range(at_step):
            step = conversation.send(step.wait())
        with pytest.raises(interruption):
            step = conversation.throw(interruption())
            while True:  # the steps of its clean-up (a kill, then the wait for the exit)
                step = conversation.send(step.wait())
    finally:
        port.close()
    assert _hub.settle(T), "the isolate of the interrupted spawn was left running"


def test_spawns_cancelled_after_any_number_of_loop_turns_leave_no_isolate():
    """As the event loop turns: every cancelled spawn_async either returns
    an isolate (done before the cancel) or ends the one it started."""

    async def main():
        spawned = []
        for turns in range(12):
            port = subiso.ReceivePort()
            task = asyncio.ensure_future(
                subiso.Isolate.spawn_async(helpers.announce_then_spin, port.send_port)
            )
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            try:
                spawned.append(await task)
            except asyncio.CancelledError:
                pass
            port.close()
        for iso in spawned:  # these completed: they are the caller's to end
            iso.kill(subiso.IMMEDIATE)
            assert iso.join(T)

    asyncio.run(main())
    assert _hub.settle(T), "a cancelled spawn left its isolate running"


def test_a_run_interrupted_while_it_waits_ends_its_isolate_before_it_returns():
    """The interruption comes out of run only once its isolate has exited."""
    from subiso._run import running

    with subiso.ReceivePort() as port:
        conversation = running(helpers.announce_then_spin, (port.send_port,), {}, None, "isolated")
        step = next(conversation)
        control = step.wait()
        step = conversation.send(control)  # the call is on its way
        assert port.receive(timeout=T) == "started"
        with pytest.raises(KeyboardInterrupt):
            step = conversation.throw(KeyboardInterrupt())
            while True:
                step = conversation.send(step.wait())
        # By then the isolate has exited (its teardown destroys its control queue).
        assert not _backend.queue_exists(control._qid)
    assert _hub.settle(T)


def test_an_acquired_isolate_whose_asker_gave_up_is_not_orphaned():
    """The hub answers an acquire its asker gave up meanwhile: the isolate
    goes back to the spares (or is ended), never left waiting for work."""
    hub = _hub.the_hub()
    for _ in range(10):
        reply = hub.ask(_hub.AcquireRequest("isolated", None, _hub.Reply()))
        hub._abandon(reply)  # Ctrl-C, or a cancelled task, as it waited
    for _ in range(3):
        reply = hub.ask(_hub.AcquireRequest("legacy", None, _hub.Reply()))
        reply.wait(T)
        hub._abandon(reply)
    assert _hub.settle(T)
    assert drive(spawning(helpers.square, 2)).join(T)  # and spawning works on


def test_many_run_async_calls_log_no_empty_list_of_ports(caplog):
    """Exited isolates wait, briefly, for their answers to be taken: the hub
    counted them as kept alive by unread ports and logged a warning that
    named no port ("... not yet received (): ...")."""

    async def main():
        calls = [subiso.run_async(helpers.square, i % 7) for i in range(96)]
        return await asyncio.gather(*calls)

    with caplog.at_level("WARNING", logger="subiso"):
        assert asyncio.run(main()) == [(i % 7) ** 2 for i in range(96)]
        assert _hub.settle(T)
    assert "received ()" not in caplog.text
