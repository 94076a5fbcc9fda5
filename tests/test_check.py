"""``python -m subiso check``: each module in a process of its own, tried
isolated, then legacy; the exit status says whether all load isolated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
T = 120


def check(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]))
    return subprocess.run(
        [sys.executable, "-m", "subiso", "check", *args],
        capture_output=True,
        text=True,
        timeout=T,
        env=env,
        check=False,
    )


def findings(*args: str) -> tuple[int, dict[str, dict[str, str | None]]]:
    done = check("--json", *args)
    return done.returncode, {f["module"]: f for f in json.loads(done.stdout)}


def test_a_module_that_loads_isolated():
    status, found = findings("json")
    assert status == 0
    assert found["json"] == {
        "module": "json",
        "status": "isolated",
        "version": "stdlib",
        "error": None,
        "lost": [],
    }


def test_a_single_phase_extension_loads_only_in_a_legacy_isolate():
    pytest.importorskip("_testsinglephase")  # CPython's own test module; not imported here
    status, found = findings("json", "_testsinglephase")
    assert status == 1  # not all load isolated
    assert found["json"]["status"] == "isolated"
    assert found["_testsinglephase"]["status"] == "legacy"
    assert "does not support loading in subinterpreters" in found["_testsinglephase"]["error"]


def test_modules_that_do_not_load_say_why():
    status, found = findings("no_such_module_here", "main_only")
    assert status == 1
    assert found["no_such_module_here"]["status"] == "fails"
    assert found["no_such_module_here"]["error"].startswith("ModuleNotFoundError")
    assert found["main_only"] == {
        "module": "main_only",
        "status": "fails",
        "version": None,
        "error": "ImportError: main_only loads only in the main interpreter",
        "lost": [],
    }


def test_an_import_that_never_ends_is_given_up_on():
    status, found = findings("--timeout", "3", "sleeps_on_import", "json")
    assert status == 1
    assert found["sleeps_on_import"]["error"] == "the import did not end within 3 s"
    assert found["json"]["status"] == "isolated"  # the next module is still checked


def test_the_words_and_the_table():
    done = check("json", "no_such_module_here")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "json stdlib: loads isolated",
        "no_such_module_here: does not load: "
        "ModuleNotFoundError: No module named 'no_such_module_here'",
    ]
    table = check("--markdown", "json").stdout.splitlines()
    assert table == [
        "| module | version | in an isolate | C extensions lost in an isolate |",
        "|---|---|---|---|",
        "| json | stdlib | loads isolated |  |",
    ]


def test_usage():
    done = subprocess.run(
        [sys.executable, "-m", "subiso"], capture_output=True, text=True, timeout=T, check=False
    )
    assert done.returncode == 2 and "usage: python -m subiso check" in done.stderr


def test_lost_accelerators_are_named():
    # msgpack and PyYAML load in an isolate without their C extensions
    # (msgpack.fallback, pure-Python YAML): a decode many times slower.
    pytest.importorskip("msgpack")
    pytest.importorskip("yaml")
    status, found = findings("msgpack", "yaml")
    assert status == 1  # not all load isolated with what they load in main
    assert found["msgpack"]["status"] == "isolated"
    (lost,) = found["msgpack"]["lost"]
    assert lost["module"] == "msgpack._cmsgpack"
    assert "does not support loading in subinterpreters" in lost["error"]
    assert "yaml._yaml" in [one["module"] for one in found["yaml"]["lost"]]
    said = check("msgpack").stdout
    assert said.startswith("msgpack ")
    assert ": loads isolated, without its C extension msgpack._cmsgpack (refused: " in said
