"""Measure, on the running Python, the CPython faults subiso works around.

    python perf/faults.py            # one line per fault, then a table row

Each probe runs in a child process, since some of them crash it. The
README's Compatibility table is this script's output on every Python that
``make matrix`` runs; ``subiso._backend`` gates each workaround on the
versions where the fault shows here.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent

# The "destroy" probe's child: subiso with the reaper switched off.
CLOSE_WHILE_SENDING = """
import sys, threading
sys.path.insert(0, sys.argv[1])
import subiso
from subiso import _hub


class NoReaper:
    queue, waker = -1, (-1, -1)

    def __init__(self, *args):
        pass

    def stop(self):
        pass


def stream(args):
    port, count = args
    for i in range(count):
        port.send(i)


_hub.Reaper = NoReaper
for _ in range(40):
    port = subiso.ReceivePort()
    stop = threading.Event()

    def send_loop():
        while not stop.is_set():
            port.send_port.send(1)

    threads = [threading.Thread(target=send_loop) for _ in range(2)]
    isolates = [subiso.Isolate.spawn(stream, (port.send_port, 20_000)) for _ in range(2)]
    for thread in threads:
        thread.start()
    port.receive(timeout=10)
    port.close()
    stop.set()
    for thread in threads:
        thread.join()
    for isolate in isolates:
        assert isolate.join(30)
"""

PROBES = {
    "fork": (
        "os.fork() with a subinterpreter alive: the child runs",
        """
        import os, _interpreters
        iid = _interpreters.create(_interpreters.new_config("isolated"))
        _interpreters.exec(iid, "x = 1")
        ok = 0
        for _ in range(3):
            pid = os.fork()
            if pid == 0:
                os._exit(7)
            ok += os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7
        _interpreters.destroy(iid)
        print("survives" if ok == 3 else f"child dies ({3 - ok}/3)")
        """,
    ),
    "frames": (
        "sys._current_frames() while two isolates compute",
        """
        import sys, threading, time, _interpreters
        ids = [_interpreters.create(_interpreters.new_config("isolated")) for _ in range(2)]
        code = "t = 0\\nfor i in range(20_000_000): t += i\\n"
        threads = [threading.Thread(target=_interpreters.exec, args=(i, code)) for i in ids]
        for t in threads:
            t.start()
        calls = 0
        while any(t.is_alive() for t in threads):
            for _ in range(1000):
                sys._current_frames()
            calls += 1000
        for t in threads:
            t.join()
        for i in ids:
            _interpreters.destroy(i)
        print(f"survives ({calls:,} calls)")
        """,
    ),
    "leak": (
        "RSS kept per destroyed isolated interpreter (MiB)",
        """
        import _interpreters
        def rss():
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
        def cycle(n):
            for _ in range(n):
                iid = _interpreters.create(_interpreters.new_config("isolated"))
                _interpreters.exec(iid, "import _pickle, _thread, select, marshal")
                _interpreters.destroy(iid)
        cycle(20)
        before = rss()
        cycle(200)
        print(f"{(rss() - before) / 200:.3f}")
        """,
    ),
    "destroy": (
        "a queue destroyed while other threads of its interpreter put to it",
        # Ports close while two threads of the main interpreter and two
        # isolates send to them, and the queue is destroyed in the main
        # interpreter (subiso with its reaper switched off). CPython's destroy
        # spins, GIL held, until no put is inside the queue; a put that waits
        # for the cross-interpreter registry's lock needs that GIL back: the
        # process froze. Five children of 40 rounds, 30 s each.
        """
        import subprocess, sys
        froze = 0
        for _ in range(5):
            try:
                subprocess.run(
                    [sys.executable, "-c", CLOSE_WHILE_SENDING, PROJECT],
                    timeout=30, check=True, capture_output=True,
                )
            except subprocess.TimeoutExpired:
                froze += 1
        print(f"freezes ({froze}/5 runs)" if froze else "never froze (5 runs)")
        """,
    ),
    "once": (
        "import curses in a legacy interpreter after the main one did",
        """
        import _interpreters
        import curses
        iid = _interpreters.create(_interpreters.new_config("legacy"))
        info = _interpreters.exec(iid, "import curses")
        _interpreters.destroy(iid)
        print("loads" if info is None else info.formatted.strip().splitlines()[-1])
        """,
    ),
}


def probe(code: str) -> str:
    setup = f"CLOSE_WHILE_SENDING = {CLOSE_WHILE_SENDING!r}\nPROJECT = {str(PROJECT)!r}\n"
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", setup + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["?"])[0]
        return f"crashes (exit {result.returncode}: {last})"
    return result.stdout.strip()


def main() -> None:
    version = platform.python_version()
    print(f"CPython {version}")
    row = []
    for what, code in PROBES.values():
        outcome = probe(code)
        print(f"  {what}: {outcome}")
        row.append(outcome)
    print("| " + " | ".join([version, *row]) + " |")


if __name__ == "__main__":
    main()
