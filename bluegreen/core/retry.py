"""Riding through a dependency's restart: capped exponential backoff with a deadline.

A long-lived service that loses blue, green, control or Kafka does not exit: it
retries, one log line per attempt, with ``bluegreen_dependency_up{dependency}`` at 0,
for ``reconnect_timeout_s``; only then does it stop with a ``DependencyError`` whose
message is one line naming the service, the target (never its credentials) and the
cause.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from bluegreen.core.errors import DependencyError
from bluegreen.core.logs import get_logger, redact

T = TypeVar("T")


# Causes no retry can cure: a wrong password or user, a missing database or table, a
# missing grant (libpq gives no SQLSTATE at connect time: its English text). The service
# stops at once with one line, instead of retrying for reconnect_timeout_s.
_PERMANENT = re.compile(
    r"authentication failed|does not exist|no pg_hba\.conf entry|SSL is not enabled|"
    r"permission denied",
    re.IGNORECASE,
)


def permanent(exc: BaseException) -> bool:
    """The error says the configuration is wrong, not that the dependency is away."""
    return bool(_PERMANENT.search(str(exc)))


def one_line(exc: BaseException) -> str:
    """The cause of an error as one line, secrets masked."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact(text)[:300]


class Reconnector:
    """The state of one dependency as a service sees it: up, or down since when."""

    def __init__(
        self,
        service: str,
        dependency: str,
        target: str,
        timeout_s: float,
        *,
        gauge: Any = None,
        base_s: float = 0.2,
        max_s: float = 10.0,
    ) -> None:
        self.service = service
        self.dependency = dependency
        self.target = target
        self.timeout_s = timeout_s
        self._gauge = gauge.labels(dependency) if gauge is not None else None
        self._base_s = base_s
        self._max_s = max_s
        self._delay = base_s
        self._down_since: float | None = None
        self._attempts = 0
        self._log = get_logger(service=service, dependency=dependency, target=target)
        if self._gauge is not None:
            self._gauge.set(1)

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, exc: BaseException) -> float:
        """Record a failed attempt; return how long to wait before the next one.

        Raises DependencyError once the dependency has been down for timeout_s.
        """
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            self._delay = self._base_s
            self._attempts = 0
            if self._gauge is not None:
                self._gauge.set(0)
        self._attempts += 1
        down_for = now - self._down_since
        if permanent(exc):
            raise DependencyError(
                f"{self.service}: {self.dependency} at {self.target} refused us: {one_line(exc)}"
            ) from exc
        if down_for >= self.timeout_s:
            raise DependencyError(
                f"{self.service}: {self.dependency} at {self.target} unreachable for "
                f"{down_for:.0f}s ({self._attempts} attempts): {one_line(exc)}"
            ) from exc
        delay = min(self._delay, self.timeout_s - down_for)
        self._log.warning(
            f"{self.dependency} unreachable; retrying",
            attempt=self._attempts,
            retry_in_s=round(delay, 2),
            down_for_s=round(down_for, 1),
            error=one_line(exc),
        )
        self._delay = min(self._delay * 2, self._max_s)
        return delay

    def succeeded(self) -> None:
        if self._down_since is not None:
            self._log.info(
                f"{self.dependency} reachable again",
                down_for_s=round(time.monotonic() - self._down_since, 1),
            )
            self._down_since = None
            self._delay = self._base_s
        if self._gauge is not None:
            self._gauge.set(1)

    def call(
        self,
        fn: Callable[[], T],
        transient: tuple[type[BaseException], ...],
        stop: threading.Event | None = None,
    ) -> T:
        """Call fn until it succeeds, backing off on `transient` errors (others propagate)."""
        while True:
            try:
                result = fn()
            except transient as exc:
                delay = self.failed(exc)
                if stop is not None:
                    if stop.wait(delay):
                        raise
                else:
                    time.sleep(delay)
                continue
            self.succeeded()
            return result
