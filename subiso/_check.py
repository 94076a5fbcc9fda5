"""``python -m subiso check``: will a module load in an isolate?

Each module is tried in a process of its own: a module that loaded in one
interpreter may refuse the next ("can only be loaded once per process"), and
an import that hangs or crashes must not take the other answers with it. In
that process the module is imported in a fresh isolated isolate and, if
CPython refuses it there, in a legacy one. The main interpreter never imports
it: its version comes from the installed distribution's metadata.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from dataclasses import asdict, dataclass

from ._isolate import Isolate

ISOLATED = "isolated"  # loads in an isolated isolate
LEGACY = "legacy"  # loads only with isolation="legacy"
FAILS = "fails"  # does not load in an isolate

SAYS = {
    ISOLATED: "loads isolated",
    LEGACY: 'loads only with isolation="legacy"',
    FAILS: "does not load",
}


@dataclass(frozen=True)
class Finding:
    module: str
    status: str  # ISOLATED, LEGACY or FAILS
    version: str | None  # the distribution's, "stdlib", or None if unknown
    error: str | None  # why it does not load isolated, if it does not


def _import(name: str) -> str | None:
    """Import ``name`` (in an isolate); its ``__version__`` if it has one."""
    import importlib

    version = getattr(importlib.import_module(name), "__version__", None)
    return version if isinstance(version, str) else None


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _version(name: str) -> str | None:
    """The version of the distribution that provides ``name``, read from
    its metadata (``"stdlib"`` for the standard library), without importing it."""
    top = name.partition(".")[0]
    if top in sys.stdlib_module_names:
        return "stdlib"
    from importlib import metadata

    for distribution in metadata.packages_distributions().get(top, ()):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def check_here(name: str) -> Finding:
    """Try ``name`` in a fresh isolated isolate and, if it fails there, in a
    legacy one, in this process. A module that loads in neither fails with
    the isolated isolate's error."""
    probe = functools.partial(_import, name)
    try:
        found = Isolate.run(probe, debug_name=f"check {name}")
    except Exception as error:
        # Not only CPython's refusal: a package may word its own failure
        # (pandas: "Unable to import required dependency numpy").
        refusal = _describe(error)
    else:
        return Finding(name, ISOLATED, _version(name) or found, None)
    try:
        found = Isolate.run(probe, debug_name=f"check {name}", isolation="legacy")
    except Exception:
        return Finding(name, FAILS, _version(name), refusal)
    return Finding(name, LEGACY, _version(name) or found, refusal)


def check(name: str, timeout: float) -> Finding:
    """:func:`check_here` in a new process, which may take ``timeout`` seconds."""
    command = [sys.executable, "-m", "subiso", "check", "--here", "--json", name]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Finding(name, FAILS, None, f"the import did not end within {timeout:g} s")
    try:
        (finding,) = json.loads(done.stdout)
        return Finding(**finding)
    except (ValueError, TypeError):
        said = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        return Finding(name, FAILS, None, f"the checking process failed: {said[0]}")


def table(findings: list[Finding]) -> str:
    """The findings as a Markdown table."""
    lines = ["| module | version | in an isolate |", "|---|---|---|"]
    for f in findings:
        said = SAYS[f.status] if f.status != FAILS else f"does not load: {f.error}"
        lines.append(f"| {f.module} | {f.version or ''} | {said.replace('|', '/')} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m subiso check",
        description="Import each module in a fresh isolated isolate and say whether it "
        "loads there, only with isolation='legacy', or not at all. "
        "Exit status 0 only if all load isolated.",
    )
    parser.add_argument("modules", nargs="+", metavar="MODULE")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds each module may take (120)"
    )
    parser.add_argument("--here", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    findings = []
    for name in args.modules:
        finding = check_here(name) if args.here else check(name, args.timeout)
        findings.append(finding)
        if not (args.json or args.markdown):
            version = f" {finding.version}" if finding.version else ""
            error = f": {finding.error}" if finding.status == FAILS else ""
            print(f"{finding.module}{version}: {SAYS[finding.status]}{error}", flush=True)
    if args.json:
        print(json.dumps([asdict(f) for f in findings], indent=None if args.here else 2))
    elif args.markdown:
        print(table(findings))
    return 0 if all(f.status == ISOLATED for f in findings) else 1
