"""The README and the documentation are code: every Python block of
README.md and of docs/**/*.md runs as written, as a script of its own in a
fresh process (a block after ``<!-- skip: next -->`` lists signatures
instead, and is not run)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sybil = pytest.importorskip("sybil", reason="the README test needs sybil (the test extra)")
from sybil.parsers.markdown import CodeBlockParser, SkipParser  # noqa: E402

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]


def _blocks() -> list[tuple[Path, int, str]]:
    """Each Python block that runs: its page, its line, its code."""
    found: list[tuple[Path, int, str]] = []

    def keep(example):  # collecting, not running: SkipParser decides what is kept
        found.append((example.path, example.line, str(example.parsed)))

    parsers = [CodeBlockParser(language="python", evaluator=keep), SkipParser()]
    for page in PAGES:
        for example in sybil.Sybil(parsers=parsers).parse(page):
            example.evaluate()
    return [(Path(path), line, code) for path, line, code in found]


BLOCKS = _blocks()


def test_the_blocks_were_found():
    pages = {path.relative_to(ROOT).as_posix() for path, _, _ in BLOCKS}
    assert "README.md" in pages
    assert len(BLOCKS) >= 15, [f"{page}" for page in sorted(pages)]


def test_the_readme_links_resolve():
    """The README is not part of the site (whose build checks its own
    links): each of its relative links names a file of the project."""
    targets = re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text())
    local = [t.partition("#")[0] for t in targets if "://" not in t and not t.startswith("#")]
    assert local, "the README links to the docs"
    assert not [t for t in local if not (ROOT / t).exists()]


@pytest.mark.parametrize(
    ("path", "line", "code"),
    BLOCKS,
    ids=[f"{path.relative_to(ROOT).as_posix()}:{line}" for path, line, _ in BLOCKS],
)
def test_the_block_runs(path, line, code, tmp_path):
    where = f"{path.relative_to(ROOT).as_posix()} line {line}"
    script = tmp_path / f"{path.stem}_line_{line}.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as a user runs it
    ran = subprocess.run(
        [sys.executable, script.name],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=tmp_path,
        env=env,
    )
    assert ran.returncode == 0, f"{where}:\n{ran.stderr[-3000:]}"
