"""The snapshot's dependencies (blue, control, Kafka): which failures mean "it went away,
wait for it" and which mean "this will not get better", and a gate that probes a lost
dependency with backoff without blocking the caller's loop.

A worker's loop keeps serving delivery reports and settling tasks while one dependency is
down, so it does not block in ``Reconnector.call``: it asks ``Dependency.ready()`` before
each use, and ``ready()`` probes only when the backoff says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from bluegreen.core import retry
from bluegreen.core.config import KafkaSettings
from bluegreen.core.errors import DependencyError
from bluegreen.core.retry import Reconnector, one_line

T = TypeVar("T")

# Delivery errors that say the broker was unavailable, not that the message was refused.
UNAVAILABLE_KAFKA = frozenset(
    {
        "_MSG_TIMED_OUT",
        "_TIMED_OUT",
        "_TRANSPORT",
        "_ALL_BROKERS_DOWN",
        "REQUEST_TIMED_OUT",
        "NOT_ENOUGH_REPLICAS",
        "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        "LEADER_NOT_AVAILABLE",
        "NOT_LEADER_FOR_PARTITION",
        "NOT_LEADER_OR_FOLLOWER",
    }
)
PROBE_TIMEOUT_S = 3.0


class UnreachableError(Exception):
    """A probe found the dependency not (yet) serving."""


# What talking to a dependency may raise; anything else is a bug and propagates as is.
_CLIENT_ERRORS = (psycopg.Error, KafkaException, TimeoutError, UnreachableError)


def pg_transient(exc: BaseException) -> bool:
    """A PostgreSQL error that a reconnect may cure (server gone, restarting, refusing)."""
    return isinstance(exc, psycopg.OperationalError) and not retry.permanent(exc)


def kafka_transient(exc: BaseException) -> bool:
    """A Kafka client error that a broker coming back may cure (not a fatal producer error)."""
    if isinstance(exc, TimeoutError | UnreachableError):
        return True
    if isinstance(exc, KafkaException):
        error = exc.args[0] if exc.args else None
        return not (error is not None and hasattr(error, "fatal") and error.fatal())
    return False


def probe_kafka(settings: KafkaSettings, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """One metadata request; raises KafkaException or UnreachableError when no broker answers."""
    # log_level 0: the probe's own connection failures are the Reconnector's one line.
    admin = AdminClient({**settings.client_config(), "log_level": 0})
    if not admin.list_topics(timeout=timeout_s).brokers:
        raise UnreachableError(f"no broker in the metadata of {settings.bootstrap_servers}")


def permanent(reconnector: Reconnector, exc: BaseException) -> DependencyError:
    """The one-line error for a failure retrying cannot cure."""
    return DependencyError(
        f"{reconnector.service}: {reconnector.dependency} at {reconnector.target}: {one_line(exc)}"
    )


def call(
    reconnector: Reconnector,
    fn: Callable[[], T],
    transient: Callable[[BaseException], bool],
) -> T:
    """Call fn until it succeeds, backing off on transient errors; one line on the others."""
    while True:
        try:
            result = fn()
        except _CLIENT_ERRORS as exc:
            if not transient(exc):
                raise permanent(reconnector, exc) from exc
            time.sleep(reconnector.failed(exc))
            continue
        reconnector.succeeded()
        return result


class Dependency:
    """A dependency a loop uses: up, or down with the next probe due at some moment."""

    def __init__(
        self,
        reconnector: Reconnector,
        probe: Callable[[], None],
        transient: Callable[[BaseException], bool],
    ) -> None:
        self.reconnector = reconnector
        self._probe = probe
        self._transient = transient
        self._up = False  # probed before first use
        self._retry_at = 0.0

    @property
    def up(self) -> bool:
        return self._up

    def transient(self, exc: BaseException) -> bool:
        return self._transient(exc)

    def lost(self, exc: BaseException) -> None:
        """An operation failed because the dependency went away: back off, then probe.

        Raises DependencyError once it has been unreachable for the reconnect timeout.
        """
        self._up = False
        self._retry_at = time.monotonic() + self.reconnector.failed(exc)

    def ready(self) -> bool:
        """True when up; when down and the backoff has passed, probe it once."""
        if self._up:
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            self._probe()
        except _CLIENT_ERRORS as exc:
            if not self._transient(exc):
                raise permanent(self.reconnector, exc) from exc
            self.lost(exc)
            return False
        self._up = True
        self.reconnector.succeeded()
        return True

    def suspect(self) -> None:
        """Something hinted at trouble: probe now, and count it lost only if the probe fails."""
        if self._up:
            self._up = False
            self._retry_at = 0.0
            self.ready()

    def seconds_to_retry(self) -> float:
        return 0.0 if self._up else max(0.0, self._retry_at - time.monotonic())
