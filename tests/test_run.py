"""One-shot work: run, run_async, compute, Isolate.run."""

from __future__ import annotations

import asyncio
import sys
import threading

import helpers
import pytest

import subiso
from subiso._exceptions import SubinterpreterImportError, explain_import_refusal


def test_run_returns_the_value():
    assert subiso.run(helpers.square, 7) == 49
    assert subiso.run(helpers.add, 1, 2, c=3) == 6


def test_compute_and_isolate_run():
    assert subiso.compute(helpers.square, 9) == 81
    assert subiso.Isolate.run(lambda: "done", debug_name="lam") == "done"


def test_lambdas_and_closures_go_by_value():
    base = 10
    offsets = {"a": 1}
    assert subiso.run(lambda x: x + base + offsets["a"], 5) == 16


def test_no_state_leaks_between_calls():
    assert subiso.run(helpers.bump) == 1
    assert subiso.run(helpers.bump) == 1


def test_exception_comes_back_as_itself_with_remote_traceback():
    with pytest.raises(helpers.Boom, match="kaboom") as info:
        subiso.run(helpers.boom, "kaboom")
    cause = info.value.__cause__
    assert isinstance(cause, subiso.RemoteError)
    assert "helpers.py" in cause.stack_description
    assert "boom" in cause.stack_description


def test_unsendable_exception_becomes_remote_error():
    with pytest.raises(subiso.RemoteError, match="ValueError"):
        subiso.run(helpers.unpicklable_error)


def test_unsendable_argument_names_the_object():
    lock = threading.Lock()
    with pytest.raises(subiso.NotSendableError, match=r"lock.*\[1\]\['key'\]"):
        subiso.run(helpers.square, [1, {"key": lock}])
    assert subiso.run(helpers.square, 3) == 9  # still usable


def test_unsendable_result():
    with pytest.raises(subiso.NotSendableError, match="lock"):
        subiso.run(lambda: __import__("threading").Lock())


def test_run_async_does_not_block_the_loop():
    async def main():
        ticks = 0
        stop = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        result = await subiso.run_async(helpers.square, 12)
        other = await subiso.compute_async(helpers.square, 3)
        named = await subiso.Isolate.run_async(lambda: 5, debug_name="x")
        stop.set()
        await task
        return result, other, named, ticks

    result, other, named, ticks = asyncio.run(main())
    assert (result, other, named) == (144, 9, 5)
    assert ticks > 0


def test_large_result_is_streamed_and_keeps_shared_references():
    result = subiso.run(helpers.photos, 20_000)
    assert len(result) == 20_000
    assert result[123]["title"] == "photo 123"
    assert result[0]["album"] is result[-1]["album"]


def test_large_result_async():
    result = asyncio.run(subiso.run_async(helpers.photos, 10_000))
    assert [p["id"] for p in result] == list(range(10_000))
    assert result[0]["album"] is result[-1]["album"]


def test_debug_name_is_visible_inside():
    assert subiso.Isolate.run(lambda: helpers.current_name(None), debug_name="worker") == "worker"


def test_legacy_isolation():
    assert subiso.Isolate.run(lambda: 2 + 2, isolation="legacy") == 4


def test_bad_isolation():
    with pytest.raises(ValueError, match="isolation"):
        subiso.Isolate.run(lambda: 1, isolation="shared")


def test_not_callable():
    with pytest.raises(TypeError):
        subiso.run(42)


def test_isolate_exit_inside_run_is_a_broken_isolate():
    with pytest.raises(subiso.BrokenIsolateError):
        subiso.run(lambda: subiso.Isolate.exit())


def test_many_runs_leave_nothing_behind():
    assert [subiso.run(helpers.square, i) for i in range(20)] == [i * i for i in range(20)]


def test_module_that_refuses_isolated_interpreters():
    with pytest.raises(ImportError, match="legacy") as info:
        subiso.run(lambda: __import__("_testsinglephase"))
    assert "_testsinglephase" in str(info.value)
    assert isinstance(info.value, subiso.IsolateError)
    assert subiso.Isolate.run(lambda: bool(__import__("_testsinglephase")), isolation="legacy")


@pytest.mark.parametrize(
    ("message", "module", "advice"),
    [
        ("module _curses does not support loading in subinterpreters", "_curses", "legacy"),
        ("module 'curses' can only be loaded once per process", "curses", "subiso.host"),
    ],
)
def test_every_wording_of_a_refusal_is_explained(message, module, advice):
    explained = explain_import_refusal(ImportError(message))
    assert isinstance(explained, SubinterpreterImportError)
    assert explained.name == module
    assert advice in str(explained)
    plain = ImportError("No module named 'nothing_here'")
    assert explain_import_refusal(plain) is plain


def test_a_wrapped_refusal_says_what_to_do_first_and_keeps_the_original_as_cause():
    with pytest.raises(SubinterpreterImportError) as info:
        subiso.run(lambda: __import__("wraps_a_refusal"))
    error = info.value
    assert error.name == "_testsinglephase"
    assert str(error).startswith(
        "module _testsinglephase does not support loading in subinterpreters: "
        "isolated interpreters refuse it"
    )
    assert "IMPORTANT" not in str(error)  # the package's own text is the cause's
    assert "IMPORTANT: PLEASE READ THIS" in error.__cause__.stack_description
    assert "Original error was" in error.__cause__.stack_description


@pytest.mark.skipif(
    sys.version_info < (3, 14), reason="3.13's _curses loads in any number of legacy interpreters"
)
def test_module_loaded_once_per_process():
    pytest.importorskip("curses")  # loaded here first, in the main interpreter
    with pytest.raises(SubinterpreterImportError, match=r"subiso\.host") as info:
        subiso.Isolate.run(lambda: bool(__import__("curses")), isolation="legacy")
    assert info.value.name == "curses"


def test_a_call_whose_module_does_not_load_in_the_isolate_fails_with_its_error():
    # The callable is sent by name; the isolate imports its module, which
    # refuses. That error is the caller's, as if the call had raised it (it
    # once left the caller waiting for good).
    import main_only

    with pytest.raises(ImportError, match="only in the main interpreter"):
        subiso.run(main_only.answer)
    with pytest.raises(ImportError, match="only in the main interpreter"):
        subiso.run(helpers.call, main_only.answer)  # inside the arguments: pickled
    with pytest.raises(subiso.IsolateSpawnError, match="only in the main interpreter"):
        subiso.Isolate.spawn(main_only.answer, None)
    with subiso.Pool(1) as pool:
        with pytest.raises(ImportError, match="only in the main interpreter"):
            pool.submit(main_only.answer).result(timeout=60)
        assert pool.submit(helpers.square, 3).result(timeout=60) == 9


def test_cancelling_a_run_whose_module_is_still_importing_ends_the_isolate():
    # The import is the isolate's work, done where a kill reaches it (it
    # once ran on the thread that takes kills, which then never came).
    import spins_on_import

    async def main():
        with subiso.ReceivePort() as port:
            subiso.IsolateNameServer.register_port_with_name(port.send_port, "spins_on_import")
            try:
                task = asyncio.ensure_future(subiso.run_async(spins_on_import.answer))
                assert await port.receive_async(timeout=60) == "importing"
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            finally:
                subiso.IsolateNameServer.remove_port_name_mapping("spins_on_import")

    asyncio.run(main())
    # The isolate is gone: the suite's check after each test finds none left.


def test_a_plain_call_starts_the_isolate_without_pickle():
    # Pickle costs a fresh isolate milliseconds. A call of a function found
    # by name, or sent by value with plain defaults and module-level
    # globals, with plain arguments, needs none of it.
    def loaded(names=("_pickle", "subiso._pickling")):
        return [name for name in names if name in sys.modules]

    assert subiso.run(loaded) == []
    assert subiso.run(eval, "'_pickle' in __import__('sys').modules") is False
    assert subiso.run(helpers.add, 1, 2, c=3) == 6

    def report(port, names=("_pickle", "subiso._pickling")):
        port.send([name for name in names if name in sys.modules])

    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(report, port.send_port)
        assert port.receive(timeout=60) == []
        assert iso.join(60)
        # Keyword arguments and ports among the arguments are plain too.
        assert subiso.run(report, port=port.send_port) is None
        assert port.receive(timeout=60) == []

    def serve(port, names=("_pickle", "subiso._pickling")):
        inbox = subiso.ReceivePort()  # the usual first message: a worker's own send port

        def answer(reply):
            reply.send([name for name in names if name in sys.modules])
            inbox.close()

        inbox.listen(answer)
        port.send(inbox.send_port)

    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(serve, port.send_port)
        inbox = port.receive(timeout=60)
        assert type(inbox) is subiso.SendPort
        inbox.send(port.send_port)
        assert port.receive(timeout=60) == []
        assert iso.join(60)


def test_a_fresh_isolate_starts_without_the_heavy_modules():
    # Every isolate pays for what its start-up imports: typing and logging
    # (with re and traceback) cost milliseconds. They load only when code in
    # the isolate asks for them.
    loaded = set(subiso.run(eval, "list(__import__('sys').modules)"))
    assert "subiso._runtime" in loaded
    assert not loaded & {"typing", "logging", "traceback", "re", "subiso._hub"}
