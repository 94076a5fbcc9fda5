"""The public surface is what API.md promises, and each name is documented."""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import re
from pathlib import Path

import pytest

import subiso

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
# The contract the surface answers to, beside the project (absent from an
# installed copy of the tests).
API = ROOT.parent / "shared" / "API.md"


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_all_names_resolve_and_name_the_face():
    for name in subiso.__all__:
        value = getattr(subiso, name)
        if isinstance(value, type):
            assert value.__module__ == "subiso", name


def test_every_export_is_documented():
    """Each exported name is written about in the README or a guide page
    (a word of its own, not part of a longer one), and has an entry in the
    API reference, whose text comes from its docstring."""
    prose = "\n".join(
        _text(page)
        for page in [ROOT / "README.md", *DOCS.glob("**/*.md")]
        if page.name != "reference.md"
    )
    reference = _text(DOCS / "reference.md")
    unwritten = [
        name
        for name in subiso.__all__
        if not re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", prose)
        and not re.search(rf"\bsubiso\.{re.escape(name)}(?!\w)", prose)
    ]
    assert not unwritten, f"not in README.md or docs/: {unwritten}"
    unreferenced = [
        name
        for name in subiso.__all__
        if not re.search(rf"^::: subiso\.{re.escape(name)}\s*$", reference, re.MULTILINE)
    ]
    assert not unreferenced, f"no '::: subiso.NAME' entry in docs/reference.md: {unreferenced}"


# A line that promises something not built yet: "*(planned, #16)*",
# "(planned, #16; today IMMEDIATE)", "(exported from `subiso`: planned, #19)".
_PLANNED = re.compile(r"\([^()]*\bplanned, #\d+")
# A dotted name under the package: subiso.run, subiso.Isolate.spawn,
# subiso.host.call, subiso.Priority.REGULAR.
_NAME = re.compile(r"(?<![\w.])subiso((?:\.[A-Za-z_]\w*)+)")


def promised_names(text: str) -> set[str]:
    """Every ``subiso.X.Y`` that API.md shows on a line not marked planned."""
    names = set()
    for line in text.splitlines():
        if _PLANNED.search(line):
            continue
        names.update(match.group(1)[1:] for match in _NAME.finditer(line))
    return names


def _resolve(dotted: str) -> object:
    """``subiso.<dotted>`` by attributes, or as a submodule (imported only
    when a name inside it is asked for: ``subiso.distributed`` needs Dask)."""
    first, *rest = dotted.split(".")
    if hasattr(subiso, first):
        value = getattr(subiso, first)
    elif importlib.util.find_spec(f"subiso.{first}") is not None:
        if not rest:
            return f"subiso.{first}"
        value = importlib.import_module(f"subiso.{first}")
    else:
        raise AttributeError(f"module 'subiso' has no attribute {first!r}")
    for part in rest:
        value = getattr(value, part)
    return value


def test_the_extractor_reads_the_notation():
    text = (
        "subiso.run(fn, /, *args) -> R            # blocking\n"
        "iso.kill(priority=subiso.BEFORE_NEXT_EVENT)  # or subiso.IMMEDIATE\n"
        "pool.execute(fn, *, priority=subiso.Priority.REGULAR) -> Task\n"
        "  and `Isolate.IMMEDIATE` *(planned, #16)*: `subiso.Planned`\n"
        "  defaults, as in Dart *(planned, #16; today\n"
        "- `subiso.excepthook` (any `BaseException`: planned, #16).\n"
        "rp = subiso.ReceivePort(debug_name=None)   # maxsize planned, #17\n"
        'logging.getLogger("subiso"); `python -m subiso check`; mysubiso.x\n'
    )
    assert promised_names(text) == {
        "run",
        "BEFORE_NEXT_EVENT",
        "IMMEDIATE",
        "Priority.REGULAR",
        "ReceivePort",
    }


@pytest.mark.skipif(not API.exists(), reason=f"{API} is not here (an installed copy of the tests)")
def test_every_name_api_md_promises_resolves():
    names = promised_names(_text(API))
    assert len(names) >= 20, sorted(names)  # the notation was understood
    missing = []
    for name in sorted(names):
        try:
            _resolve(name)
        except (AttributeError, ImportError) as error:
            missing.append(f"subiso.{name} ({error})")
    assert not missing, f"API.md promises what subiso does not have: {missing}"


def test_exceptions_pickle():
    errors = [
        subiso.RemoteError("ValueError: x", "Traceback ..."),
        subiso.IsolateSpawnError("nope"),
        subiso.NotSendableError("lock"),
        subiso.PortClosedError("closed"),
        subiso.BrokenIsolateError("died"),
        subiso.BrokenServiceError("hub", "it fell over"),
        subiso.SubinterpreterImportError("module m refused", name="m"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert isinstance(error, subiso.IsolateError)
    assert isinstance(subiso.NotSendableError("x"), TypeError)
    assert isinstance(subiso.SubinterpreterImportError("x"), ImportError)
    copy = pickle.loads(pickle.dumps(subiso.SubinterpreterImportError("x", name="m")))
    assert copy.name == "m"
