"""An uncaught error nobody listens for goes to ``subiso.excepthook``, which
users may replace, as ``threading.excepthook`` for threads."""

from __future__ import annotations

import threading

import service_helpers

import subiso

T = 30


def test_an_isolate_reports_an_unheard_error_through_its_hook():
    with subiso.ReceivePort() as port:
        iso = subiso.Isolate.spawn(
            service_helpers.hooks_then_raises, port.send_port, debug_name="hooked"
        )
        assert port.receive(timeout=T) == ("ValueError", "unheard", "hooked", True)
        assert iso.join(T)


def test_the_default_hook_writes_the_error_to_stderr(capfd):
    with subiso.ReceivePort() as exits:
        subiso.Isolate.spawn(
            service_helpers.raising_entry, "boom", debug_name="loud", on_exit=exits.send_port
        )
        exits.receive(timeout=T)
    err = capfd.readouterr().err
    assert "Uncaught error in isolate loud, which exits:" in err
    assert "ValueError: entry raised on 'boom'" in err


def _raise_in_a_handler() -> None:
    """A port handler of the main interpreter fails with KeyError('x')."""
    port = subiso.ReceivePort()

    def handler(message):
        port.close()
        raise KeyError(message)

    port.listen(handler)
    port.send_port.send("x")


def test_an_error_in_a_port_handler_of_the_main_interpreter_goes_to_the_hook(monkeypatch):
    seen = []
    hooked = threading.Event()

    def hook(args):
        seen.append(args)
        hooked.set()

    monkeypatch.setattr(subiso, "excepthook", hook, raising=False)
    _raise_in_a_handler()
    assert hooked.wait(T)
    (args,) = seen
    assert (args.exc_type, args.exc_value.args, args.isolate, args.fatal) == (
        KeyError,
        ("x",),
        None,
        False,
    )
    assert args.exc_traceback is args.exc_value.__traceback__


def test_a_hook_that_raises_falls_back_to_sys_excepthook(monkeypatch):
    fallback = []
    reported = threading.Event()

    def broken(args):
        raise RuntimeError("the hook broke")

    def sys_hook(*exc):
        fallback.append(exc[1])
        reported.set()

    monkeypatch.setattr(subiso, "excepthook", broken, raising=False)
    monkeypatch.setattr("sys.excepthook", sys_hook)
    _raise_in_a_handler()
    assert reported.wait(T)
    assert [str(e) for e in fallback] == ["the hook broke"]


def test_a_handler_that_raises_system_exit_or_ctrl_c_leaves_the_dispatcher_serving(monkeypatch):
    """On the main interpreter's dispatcher thread, any error of a handler
    goes to the hook (the thread used to end, and every listened port with
    it, without a word)."""
    seen = []
    hook = lambda args: seen.append(args.exc_type)  # noqa: E731
    monkeypatch.setattr(subiso, "excepthook", hook, raising=False)
    handled = threading.Event()
    raised = iter([SystemExit(1), KeyboardInterrupt(), None])

    def handler(message):
        error = next(raised)
        if error is not None:
            raise error
        handled.set()

    with subiso.ReceivePort() as port, subiso.ReceivePort() as other:
        port.listen(handler)
        for i in range(3):
            port.send_port.send(i)
        assert handled.wait(T)
        later = threading.Event()
        other.listen(lambda message: later.set())  # and the other ports are served too
        other.send_port.send("x")
        assert later.wait(T)
    assert seen == [SystemExit, KeyboardInterrupt]


ONE_DISPATCHER_SCRIPT = """
import threading, subiso

ports = [subiso.ReceivePort() for _ in range(8)]
go = threading.Barrier(len(ports))

def listen(port):
    go.wait(30)
    port.listen(print)

threads = [threading.Thread(target=listen, args=(port,)) for port in ports]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(30)
print(sum(t.name == "subiso-port-dispatcher" for t in threading.enumerate()))
for port in ports:
    port.close()
"""


def test_concurrent_first_listens_make_one_dispatcher():
    import subprocess
    import sys

    for _ in range(3):
        command = [sys.executable, "-c", ONE_DISPATCHER_SCRIPT]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "1", result.stdout
