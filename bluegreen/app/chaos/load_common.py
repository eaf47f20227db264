"""What every writer of the chaos load shares: a blue connection that comes back after
blue restarts, the tally, and the load's options."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pydantic import SecretStr

from bluegreen.core import db


class Skip(Exception):  # noqa: N818 - control flow, not an error
    """No candidate row for this operation right now; try another."""


class Session:
    """One blue connection that comes back after blue restarts."""

    def __init__(
        self, dsn: SecretStr, stop: threading.Event, stats: LoadStats, *, autocommit: bool = False
    ) -> None:
        self._dsn = dsn
        self._autocommit = autocommit
        self._stop = stop
        self._stats = stats
        self._conn: psycopg.Connection | None = None

    def _connect(self) -> psycopg.Connection | None:
        while self._conn is None and not self._stop.is_set():
            try:
                self._conn = db.connect(self._dsn, autocommit=self._autocommit, connect_timeout=3)
            except psycopg.OperationalError:
                self._stop.wait(0.3)
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._stats.reconnects += 1

    def transaction(self, work: Callable[[psycopg.Connection], None]) -> bool:
        """Run `work` in one transaction; True once it committed."""
        conn = self._connect()
        if conn is None:
            return False
        try:
            work(conn)
        except Skip:
            conn.rollback()
            return False
        except psycopg.Error as exc:
            if conn.broken or isinstance(exc, psycopg.OperationalError):
                self._drop()
            else:
                conn.rollback()
                self._stats.note_error(exc)
            return False
        try:
            conn.commit()
        except psycopg.Error:
            self._stats.commit_unknown += 1  # it may or may not have committed: blue decides
            self._drop()
            return False
        return True

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class LoadStats:
    ops: Counter[str] = field(default_factory=Counter)
    rows_changed: int = 0
    failed: int = 0
    commit_unknown: int = 0
    reconnects: int = 0
    hot_bursts: int = 0
    hot_rates: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, op: str, rows: int = 1) -> None:
        with self._lock:
            self.ops[op] += 1
            self.rows_changed += rows

    def note_error(self, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            if len(self.errors) < 20:
                self.errors.append(f"{type(exc).__name__}: {str(exc).strip()[:200]}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "ops": dict(sorted(self.ops.items())),
            "rows_changed": self.rows_changed,
            "failed_transactions": self.failed,
            "commit_unknown": self.commit_unknown,
            "reconnects": self.reconnects,
            "hot_key_bursts": self.hot_bursts,
            "hot_key_rate_per_s": round(sum(self.hot_rates) / len(self.hot_rates), 1)
            if self.hot_rates
            else 0.0,
            "errors": list(self.errors),
        }


@dataclass(frozen=True)
class LoadOptions:
    profile: str = "adversarial"  # or "benign"
    ops_per_s: float = 40.0  # scenario operations per second (each 1-4 transactions)
    hot_rate: float = 190.0  # updates per second on the hot SKU during a burst
    big_rows: int = 20_000  # rows of the one large transaction (0: none)
    big_at_s: float = 10.0  # when it runs, seconds after the start
