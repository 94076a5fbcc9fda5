"""``python -m subiso check``: will a module load in an isolate, and whole?

Each module is tried in a process of its own: a module that loaded in one
interpreter may refuse the next ("can only be loaded once per process"), and
an import that hangs or crashes must not take the other answers with it. In
that process the module is imported in a fresh isolated isolate and, if
CPython refuses it there, in a legacy one. The main interpreter of that
process never imports it (numpy would then refuse every isolate): its
version comes from the installed distribution's metadata, and the extension
modules it loads in a main interpreter come from one more process. Those the
isolate did not load are lost accelerators (msgpack without
``msgpack._cmsgpack`` runs ``msgpack.fallback``): each is named with why the
isolate refuses it.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field

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
    # The extension modules it loads in a main interpreter but not in the
    # isolate, each {"module": name, "error": why the isolate refuses it}.
    lost: list[dict[str, str]] = field(default_factory=list)


def _extensions() -> set[str]:
    """The extension modules (shared libraries) this interpreter has loaded."""
    from importlib.machinery import ExtensionFileLoader

    return {
        name
        for name, module in list(sys.modules.items())
        if isinstance(
            getattr(getattr(module, "__spec__", None), "loader", None), ExtensionFileLoader
        )
    }


def _import(name: str, expected: tuple[str, ...] = ()) -> tuple[str | None, list[dict[str, str]]]:
    """Import ``name`` (in an isolate); its ``__version__`` if it has one,
    and those of the ``expected`` extension modules that it did not load
    here, with why they do not load."""
    import importlib

    version = getattr(importlib.import_module(name), "__version__", None)
    loaded = _extensions()
    lost = []
    for extension in expected:
        if extension in loaded:
            continue
        try:
            importlib.import_module(extension)
        except Exception as error:
            why = _describe(error).splitlines()[0]
        else:
            why = "it loads here, but the package did not load it"
        lost.append({"module": extension, "error": why})
    return (version if isinstance(version, str) else None), lost


def main_extensions(name: str) -> list[str]:
    """The extension modules that importing ``name`` loads in this (main)
    interpreter, besides those loaded already."""
    import importlib

    before = _extensions()
    importlib.import_module(name)
    return sorted(_extensions() - before)


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


def check_here(name: str, expected: tuple[str, ...] = ()) -> Finding:
    """Try ``name`` in a fresh isolated isolate and, if it fails there, in a
    legacy one, in this process. A module that loads in neither fails with
    the isolated isolate's error. ``expected``: the extension modules it
    loads in a main interpreter (see ``main_extensions``)."""
    probe = functools.partial(_import, name, expected)
    try:
        found, lost = Isolate.run(probe, debug_name=f"check {name}")
    except Exception as error:
        # Not only CPython's refusal: a package may word its own failure
        # (pandas: "Unable to import required dependency numpy").
        refusal = _describe(error)
    else:
        return Finding(name, ISOLATED, _version(name) or found, None, lost)
    try:
        found, lost = Isolate.run(probe, debug_name=f"check {name}", isolation="legacy")
    except Exception:
        return Finding(name, FAILS, _version(name), refusal)
    return Finding(name, LEGACY, _version(name) or found, refusal, lost)


def check(name: str, timeout: float) -> Finding:
    """:func:`check_here` in a new process, after :func:`main_extensions`
    in another; both together may take ``timeout`` seconds."""
    from time import monotonic

    deadline = monotonic() + timeout
    expected: list[str] = []
    command = [sys.executable, "-m", "subiso", "check", "--main-extensions", name]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        expected = json.loads(done.stdout) if done.returncode == 0 else []
    except subprocess.TimeoutExpired:
        return Finding(name, FAILS, None, f"the import did not end within {timeout:g} s")
    except ValueError:
        pass  # it does not load in a main interpreter either: the isolate says why
    command = [sys.executable, "-m", "subiso", "check", "--here", "--json", name]
    command += [f"--expect={extension}" for extension in expected]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=max(1.0, deadline - monotonic())
        )
    except subprocess.TimeoutExpired:
        return Finding(name, FAILS, None, f"the import did not end within {timeout:g} s")
    try:
        (finding,) = json.loads(done.stdout)
        return Finding(**finding)
    except (ValueError, TypeError):
        said = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        return Finding(name, FAILS, None, f"the checking process failed: {said[0]}")


def _says(finding: Finding) -> str:
    """What the finding says, in words."""
    said = SAYS[finding.status]
    if finding.status == FAILS:
        return f"{said}: {finding.error}"
    for lost in finding.lost:
        said += f", without its C extension {lost['module']} (refused: {lost['error']})"
    return said


def _lost(finding: Finding) -> str:
    return ", ".join(lost["module"] for lost in finding.lost)


def table(findings: list[Finding]) -> str:
    """The findings as a Markdown table."""
    lines = [
        "| module | version | in an isolate | C extensions lost in an isolate |",
        "|---|---|---|---|",
    ]
    for f in findings:
        said = SAYS[f.status] if f.status != FAILS else f"does not load: {f.error}"
        lines.append(f"| {f.module} | {f.version or ''} | {said.replace('|', '/')} | {_lost(f)} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m subiso check",
        description="Import each module in a fresh isolated isolate and say whether it "
        "loads there, only with isolation='legacy', or not at all, and which of the "
        "C extensions it loads in a main interpreter it loads without there. "
        "Exit status 0 only if all load isolated, with all their C extensions.",
    )
    parser.add_argument("modules", nargs="+", metavar="MODULE")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds each module may take (120)"
    )
    parser.add_argument("--here", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--expect", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--main-extensions", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.main_extensions:
        (name,) = args.modules
        print(json.dumps(main_extensions(name)))
        return 0
    findings = []
    for name in args.modules:
        if args.here:
            finding = check_here(name, tuple(args.expect))
        else:
            finding = check(name, args.timeout)
        findings.append(finding)
        if not (args.json or args.markdown):
            version = f" {finding.version}" if finding.version else ""
            print(f"{finding.module}{version}: {_says(finding)}", flush=True)
    if args.json:
        print(json.dumps([asdict(f) for f in findings], indent=None if args.here else 2))
    elif args.markdown:
        print(table(findings))
    return 0 if all(f.status == ISOLATED and not f.lost for f in findings) else 1
