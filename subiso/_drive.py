"""One code path for the sync and the async API.

A conversation with another isolate (run a job, spawn, ask the hub) is
written once, as a generator that yields each *step* it waits for: an object
with ``wait()`` and ``wait_async()``, e.g. "the next item on this port". The
sync API drives it with :func:`drive`, the async API with :func:`drive_async`;
neither adds a thread hop. An exception raised while waiting (Ctrl-C, a
cancelled task) is thrown into the conversation at the step, so that its
clean-up (kill the isolate, close the port) is written once too.

Threads: a conversation belongs to the thread (or task) that drives it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Generator
    from typing import Any

__all__ = ("Pause", "drive", "drive_async", "driven")


class Pause:
    """Let the event loop run (async); nothing to do when sync."""

    def wait(self) -> None:
        return None

    async def wait_async(self) -> None:
        import asyncio

        await asyncio.sleep(0)


PAUSE = Pause()


def drive(conversation: Generator[Any, Any, Any]) -> Any:
    """Run ``conversation``, blocking on each step; return what it returns."""
    value: Any = None
    failed = False
    while True:
        try:
            step = conversation.throw(value) if failed else conversation.send(value)
        except StopIteration as done:
            return done.value
        try:
            value, failed = step.wait(), False
        except BaseException as error:  # thrown into the conversation, which decides
            value, failed = error, True


async def drive_async(conversation: Generator[Any, Any, Any]) -> Any:
    """Run ``conversation``, awaiting each step; return what it returns."""
    value: Any = None
    failed = False
    while True:
        try:
            step = conversation.throw(value) if failed else conversation.send(value)
        except StopIteration as done:
            return done.value
        try:
            value, failed = await step.wait_async(), False
        except BaseException as error:  # thrown into the conversation, which decides
            value, failed = error, True


def driven[**P, T](conversation: Callable[P, Generator[Any, Any, T]]) -> Callable[P, T]:
    """The blocking function that drives ``conversation`` to its end."""

    def blocking(*args: P.args, **kwargs: P.kwargs) -> T:
        result: T = drive(conversation(*args, **kwargs))
        return result

    blocking.__name__ = conversation.__name__
    blocking.__qualname__ = conversation.__qualname__
    blocking.__doc__ = conversation.__doc__
    return blocking
