"""Wait for a condition instead of sleeping a guessed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    check: Callable[[], T], what: str, timeout_s: float = 30.0, interval_s: float = 0.05
) -> T:
    """The first truthy result of `check()`; TimeoutError naming `what` (and the last
    result) if none came within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:.0f}s (last: {result!r})")
        time.sleep(interval_s)
