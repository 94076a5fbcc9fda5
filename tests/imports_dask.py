"""A user's module that imports ``dask.distributed`` (and with it psutil,
whose C extension refuses isolated isolates) and defines a plain task."""

from __future__ import annotations

import dask.distributed  # noqa: F401


def square(x: int) -> int:
    return x * x
