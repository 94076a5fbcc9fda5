"""Packages users bring: numpy, once the main interpreter imported it,
refuses every other interpreter, legacy too; the error says so and names
the ways out. (numpy is imported in a subprocess: importing it in this one
would change what the other tests see.)"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
T = 120

needs_numpy = pytest.mark.skipif(
    importlib.util.find_spec("numpy") is None, reason="numpy is not installed"
)


def run_script(script: str) -> list[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]))
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=T,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


NUMPY_IN_MAIN = """
    import numpy
    import subiso

    def use_numpy():
        import numpy
        return int(numpy.arange(4).sum())

    def say(error):
        print(type(error).__name__, isinstance(error, ImportError), error.name)
        print(error)
"""


@needs_numpy
def test_numpy_in_main_refuses_a_legacy_isolate_and_says_what_to_do():
    said = run_script(
        NUMPY_IN_MAIN
        + """
    try:
        subiso.Isolate.run(use_numpy, isolation="legacy")
    except subiso.SubinterpreterImportError as error:
        say(error)
    """
    )
    assert said[0] == "SubinterpreterImportError True numpy"
    assert "numpy" in said[1] and "once per process" in said[1]
    assert "subiso.host" in said[1] and "process pool" in said[1]


@needs_numpy
def test_numpy_in_main_refuses_a_legacy_pool_and_says_what_to_do():
    said = run_script(
        NUMPY_IN_MAIN
        + """
    with subiso.Pool(1, isolation="legacy") as pool:
        try:
            pool.submit(use_numpy).result(timeout=60)
        except subiso.SubinterpreterImportError as error:
            say(error)
    """
    )
    assert said[0] == "SubinterpreterImportError True numpy"
    assert "subiso.host" in said[1] and "process pool" in said[1]
