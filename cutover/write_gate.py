"""The router's hold logic for writes, pure: no database, no threads of its own.

A write enters the gate before it takes a connection and leaves after it committed
(or rolled back). While the write route is paused, a new write waits — it does not
fail — until the route resumes (on whichever color then owns writes) or its hold
reaches the pause budget plus a grace for the notification's travel; only then does
it fail, with `WritePauseTimeoutError` (the switch that paused promised to resume
within the budget, so this means the switch died or lost its database). A write
that entered before the pause finishes on its color; the switch waits for it on
the database side.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bluegreen.control import WriteRoute
from bluegreen.core.errors import BluegreenError


class WritePauseTimeoutError(BluegreenError):
    """Writes stayed paused past the budget: the write was not attempted."""


@dataclass
class HoldStats:
    """How many writes entered, the hold in seconds of each one that waited, timeouts."""

    writes: int = 0
    holds: list[float] = field(default_factory=list)
    timeouts: int = 0


class WriteGate:
    def __init__(
        self,
        route: WriteRoute,
        *,
        grace_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cond = threading.Condition()
        self._route = route
        self._grace_s = grace_s
        self._clock = clock
        self._inflight: dict[str, int] = {}
        self.stats = HoldStats()

    @property
    def route(self) -> WriteRoute:
        return self._route

    def inflight(self, color: str) -> int:
        with self._cond:
            return self._inflight.get(color, 0)

    def learn(self, route: WriteRoute) -> bool:
        """Take a newer route (by epoch); wake every held write. False if not newer."""
        with self._cond:
            if route.epoch <= self._route.epoch:
                return False
            self._route = route
            self._cond.notify_all()
            return True

    def enter(self) -> tuple[str, float]:
        """Wait while paused (bounded); return the color that owns writes and the hold."""
        start = self._clock()
        waited = False
        with self._cond:
            while self._route.paused:
                waited = True
                limit = self._route.budget_ms / 1000 + self._grace_s
                remaining = start + limit - self._clock()
                if remaining <= 0:
                    self.stats.timeouts += 1
                    raise WritePauseTimeoutError(
                        f"writes paused for more than {limit:.1f}s (route epoch "
                        f"{self._route.epoch}); is a write switch stuck?"
                    )
                self._cond.wait(remaining)
            color = self._route.color
            self._inflight[color] = self._inflight.get(color, 0) + 1
            held = self._clock() - start
            self.stats.writes += 1
            if waited:
                self.stats.holds.append(held)
        return color, held

    def leave(self, color: str) -> None:
        with self._cond:
            self._inflight[color] -= 1
            self._cond.notify_all()
