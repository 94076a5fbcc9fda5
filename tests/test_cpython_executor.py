"""CPython's own ``concurrent.futures`` tests, run against ``subiso.Pool``.

The mixins come from the ``test.test_concurrent_futures`` package of the
running Python (Debian ships it in ``libpython3.X-testsuite``): nobody here
wrote them, so they find what our own tests miss. A test that cannot apply to
isolates is skipped with its reason, as CPython's own InterpreterPoolMixin
does for its event-based tests.
"""

from __future__ import annotations

import importlib
import unittest

import pytest

import subiso

try:
    from test.support.script_helper import assert_python_ok
    from test.test_concurrent_futures import util
except ImportError:  # pragma: no cover - depends on how Python was packaged
    pytest.skip(
        "this Python has no test.test_concurrent_futures (install libpython3.X-testsuite)",
        allow_module_level=True,
    )


def _mixin(module: str, name: str) -> type:
    return getattr(importlib.import_module(f"test.test_concurrent_futures.{module}"), name)


class Base(unittest.TestCase):
    """Instead of ``util.BaseTestCase``, whose thread count takes the
    library's service threads (hub, reaper, warm spares) for leaks and waits
    a second after each test: the suite's own fixture checks every test for
    threads, isolates and ports left behind, knowing which threads live on."""


class PoolMixin(util.ExecutorMixin):
    """``ExecutorMixin`` for ``subiso.Pool``: ``max_workers`` is the pool's size."""

    @staticmethod
    def executor_type(max_workers: int | None = None, **kwargs: object) -> subiso.Pool:
        return subiso.Pool(max_workers, **kwargs)  # type: ignore[arg-type]

    def create_event(self) -> object:
        self.skipTest("a threading.Event cannot cross to an isolate (as InterpreterPoolMixin)")


class PoolExecutorTest(PoolMixin, _mixin("executor", "ExecutorTest"), Base):
    def test_max_workers_negative(self) -> None:
        # The pool's argument is ``size``, and its message names it.
        for number in (0, -1):
            with self.assertRaisesRegex(ValueError, "at least one isolate"):
                subiso.Pool(number)


class PoolWaitTest(PoolMixin, _mixin("test_wait", "WaitTests"), Base):
    pass


class PoolAsCompletedTest(PoolMixin, _mixin("test_as_completed", "AsCompletedTests"), Base):
    pass


class PoolShutdownTest(PoolMixin, _mixin("test_shutdown", "ExecutorShutdownTest"), Base):
    # CPython's versions of these three run a script that imports the
    # executor class from concurrent.futures by name; here is each script,
    # as it is there, with subiso's Pool.

    def test_interpreter_shutdown(self) -> None:
        _, out, err = assert_python_ok(
            "-c",
            """if 1:
            from subiso import Pool
            from test.test_concurrent_futures.test_shutdown import sleep_and_print
            if __name__ == "__main__":
                t = Pool(5)
                t.submit(sleep_and_print, 1.0, "apple")
            """,
        )
        self.assertFalse(err)
        self.assertEqual(out.strip(), b"apple")

    def test_submit_after_interpreter_shutdown(self) -> None:
        _, out, err = assert_python_ok(
            "-c",
            """if 1:
            import atexit
            @atexit.register
            def run_last():
                try:
                    t.submit(id, None)
                except RuntimeError:
                    print("runtime-error")
                    raise
            from subiso import Pool
            if __name__ == "__main__":
                t = Pool(5)
            """,
        )
        self.assertIn("RuntimeError: cannot schedule new futures", err.decode())
        self.assertEqual(out.strip(), b"runtime-error")

    def test_hang_gh83386(self) -> None:
        _, out, err = assert_python_ok(
            "-c",
            """if True:
            from subiso import Pool
            from test.test_concurrent_futures.test_shutdown import sleep_and_print
            if __name__ == "__main__":
                t = Pool(3)
                t.submit(sleep_and_print, 1.0, "apple")
                t.shutdown(wait=False)
            """,
        )
        self.assertFalse(err)
        self.assertEqual(out.strip(), b"apple")


def setUpModule() -> None:
    util.setup_module()
