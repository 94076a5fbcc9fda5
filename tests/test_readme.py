"""README.md is code: every Python block runs as written, as a script of
its own (a block after ``<!-- skip: next -->`` lists signatures instead)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sybil = pytest.importorskip("sybil", reason="the README test needs sybil (the test extra)")
from sybil.parsers.markdown import CodeBlockParser, SkipParser  # noqa: E402

README = Path(__file__).parent.parent / "README.md"


def test_every_python_block_of_the_readme_runs(tmp_path, subtests):
    def run_as_a_script(example):
        script = tmp_path / f"readme_line_{example.line}.py"
        script.write_text(str(example.parsed))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as a user runs it
        ran = subprocess.run(
            [sys.executable, script.name],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=tmp_path,
            env=env,
        )
        assert ran.returncode == 0, f"README.md line {example.line}:\n{ran.stderr[-3000:]}"

    parsers = [CodeBlockParser(language="python", evaluator=run_as_a_script), SkipParser()]
    document = sybil.Sybil(parsers=parsers).parse(README)
    ran = 0
    for example in document:
        with subtests.test(line=example.line):
            example.evaluate()
            ran += isinstance(example.region.parsed, str)
    assert ran >= 10  # the blocks were found
