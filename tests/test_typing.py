"""Types flow: mypy (strict) over code a user would write sees the
callable's return type in results, and rejects wrong arguments."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import textwrap

import pytest

# Looked for, not imported: mypy runs in a process of its own.
if importlib.util.find_spec("mypy") is None:
    pytest.skip("the typing test needs mypy (the test extra)", allow_module_level=True)

USER_CODE = """
import subiso
from subiso import Agent, Isolate, Pool


def describe(x: int) -> str:
    return str(x)


def make(start: int, step: int) -> list[int]:
    return [start, start + step]


def appended(state: list[int]) -> list[int]:
    return [*state, 0]


def blocking(pool: Pool) -> None:
    reveal_type(subiso.run(len, "ab"))  # R1
    reveal_type(subiso.compute(describe, 1))  # R2
    reveal_type(Isolate.run(lambda: b"x"))  # R3
    reveal_type(pool.submit(describe, 1))  # R4
    reveal_type(pool.submit(describe, 1).result())  # R5
    reveal_type(pool.execute(describe, (1,)))  # R6
    reveal_type(list(pool.map(describe, [1, 2])))  # R7
    agent = Agent.create(make, 1, 2)
    reveal_type(agent)  # R8
    reveal_type(agent.read())  # R9
    reveal_type(agent.read(len))  # R10
    agent.update(appended)
    reveal_type(agent.exit())  # R11


async def awaiting(pool: Pool) -> None:
    reveal_type(await pool.run_async(describe, 1))  # R12
    reveal_type(await pool.submit(describe, 1))  # R13
    reveal_type(await subiso.run_async(len, "ab"))  # R14
    reveal_type(await subiso.compute_async(describe, 1))  # R15
    reveal_type(await Isolate.run_async(lambda: 1.5))  # R16
    agent = await Agent.create_async(make, 1, 2)
    reveal_type(await agent.read_async(len))  # R17
    reveal_type(await agent.read_async())  # R18


def mistakes(pool: Pool) -> None:
    pool.submit(describe, "one")  # E1
    pool.submit(describe)  # E2
    subiso.run(describe, 1, 2)  # E3
    subiso.compute(describe, "one")  # E4
    Agent.create(make, 1, "two")  # E5
    Agent.create(make, 1, 2).update(len)  # E6
"""

REVEALED = {
    "R1": "int",
    "R2": "str",
    "R3": "bytes",
    "R4": "subiso._pool.Task[str]",
    "R5": "str",
    "R6": "subiso._pool.Task[str]",
    "R7": "list[str]",
    "R8": "subiso._agent.Agent[list[int]]",
    "R9": "list[int]",
    "R10": "int",
    "R11": "list[int]",
    "R12": "str",
    "R13": "str",
    "R14": "int",
    "R15": "str",
    "R16": "float",
    "R17": "int",
    "R18": "list[int]",
}
MISTAKES = {"E1", "E2", "E3", "E4", "E5", "E6"}


@pytest.fixture(scope="module")
def mypy_says(tmp_path_factory):
    """{marker: [what mypy said on that line]} for USER_CODE."""
    where = tmp_path_factory.mktemp("typing")
    user = where / "user.py"
    user.write_text(textwrap.dedent(USER_CODE))
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(where / "cache"),
            "--config-file",
            "",  # this file alone, as a user would check it
            "--hide-error-context",
            "--no-pretty",
            str(user),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=where,
    )
    assert "Traceback" not in checked.stderr, checked.stderr
    lines = user.read_text().splitlines()
    said: dict[str, list[str]] = {}
    for message in checked.stdout.splitlines():
        found = re.match(r".*user\.py:(\d+): (\w+): (.*)", message)
        if found is None:
            continue
        marker = re.search(r"# (\w+)$", lines[int(found[1]) - 1])
        assert marker is not None, f"mypy spoke of an unmarked line: {message}"
        # Older mypy names builtins in full ("builtins.int").
        text = found[3].replace("builtins.", "")
        said.setdefault(marker[1], []).append(f"{found[2]}: {text}")
    return said


@pytest.mark.parametrize("marker", sorted(REVEALED, key=lambda m: int(m[1:])))
def test_results_carry_the_callables_return_type(mypy_says, marker):
    assert mypy_says.get(marker) == [f'note: Revealed type is "{REVEALED[marker]}"']


@pytest.mark.parametrize("marker", sorted(MISTAKES))
def test_a_wrong_argument_is_a_type_error(mypy_says, marker):
    said = mypy_says.get(marker, [])
    assert said and all(line.startswith("error:") for line in said), said


def test_nothing_else_is_reported(mypy_says):
    assert set(mypy_says) == set(REVEALED) | MISTAKES
