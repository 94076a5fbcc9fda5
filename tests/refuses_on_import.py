"""A module that isolated isolates refuse: it imports, at its top, an
extension module that refuses them (``_curses``) on every version, as a
module that imports ``dask.distributed`` (and so psutil) does. Most of what
it defines never uses that module."""

from __future__ import annotations

import _curses


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def norm2(self) -> int:
        return self.x * self.x + self.y * self.y


class Counter:
    def __init__(self, start: int) -> None:
        self.count = start


def square(x: int) -> int:
    return x * x


def make_point(x: int, y: int) -> Point:
    return Point(x, y)


def norm2(point: Point) -> int:
    return point.norm2()


def increment(counter: Counter) -> Counter:
    counter.count += 1
    return counter


def count(counter: Counter) -> int:
    return counter.count


def send_square(message: tuple[object, int]) -> None:
    port, x = message
    port.send(square(x))  # type: ignore[attr-defined]


def uses_curses() -> bool:
    return hasattr(_curses, "initscr")
