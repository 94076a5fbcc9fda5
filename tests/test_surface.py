"""The public surface is what API.md promises, and each name is documented."""

from __future__ import annotations

import pickle
from pathlib import Path

import subiso

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_all_names_resolve_and_name_the_face():
    for name in subiso.__all__:
        value = getattr(subiso, name)
        if isinstance(value, type):
            assert value.__module__ == "subiso", name


def test_every_export_is_documented():
    missing = [name for name in subiso.__all__ if name not in README]
    assert not missing, f"not in README.md: {missing}"


def test_exceptions_pickle():
    errors = [
        subiso.RemoteError("ValueError: x", "Traceback ..."),
        subiso.IsolateSpawnError("nope"),
        subiso.NotSendableError("lock"),
        subiso.PortClosedError("closed"),
        subiso.BrokenIsolateError("died"),
        subiso.BrokenServiceError("hub", "it fell over"),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert isinstance(error, subiso.IsolateError)
    assert isinstance(subiso.NotSendableError("x"), TypeError)
