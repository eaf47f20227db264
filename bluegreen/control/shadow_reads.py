"""Shadowed reads' counts: what each read router compared, found different and dropped,
per minute, so the cutover (another process) can judge them.

A router adds what it counted since its last flush to its row of the current minute
(the control database's clock), about once a second; the gate sums the rows of the
last minutes over every client.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class ShadowCounts:
    """Shadowed reads compared (through the transform), found different (after the
    rechecks), dropped (the comparer's queue was full) and failed (a read raised)."""

    compared: int = 0
    mismatched: int = 0
    dropped: int = 0
    failed: int = 0

    def minus(self, other: ShadowCounts) -> ShadowCounts:
        return ShadowCounts(
            self.compared - other.compared,
            self.mismatched - other.mismatched,
            self.dropped - other.dropped,
            self.failed - other.failed,
        )

    def plus(self, other: ShadowCounts) -> ShadowCounts:
        return ShadowCounts(
            self.compared + other.compared,
            self.mismatched + other.mismatched,
            self.dropped + other.dropped,
            self.failed + other.failed,
        )

    @property
    def empty(self) -> bool:
        return not (self.compared or self.mismatched or self.dropped or self.failed)


@dataclass(frozen=True)
class ShadowWindow:
    """Every client's counts over the last `minutes` minute buckets."""

    minutes: int
    counts: ShadowCounts
    clients: int


def record_shadow_counts(conn: psycopg.Connection, client_id: str, delta: ShadowCounts) -> None:
    """Add `delta` to this client's row of the current minute (autocommit connection)."""
    conn.execute(
        "INSERT INTO bluegreen.shadow_reads AS s "
        "(client_id, minute, compared, mismatched, dropped, failed) "
        "VALUES (%s, date_trunc('minute', now()), %s, %s, %s, %s) "
        "ON CONFLICT (client_id, minute) DO UPDATE SET "
        "compared = s.compared + EXCLUDED.compared, "
        "mismatched = s.mismatched + EXCLUDED.mismatched, "
        "dropped = s.dropped + EXCLUDED.dropped, failed = s.failed + EXCLUDED.failed",
        (client_id, delta.compared, delta.mismatched, delta.dropped, delta.failed),
    )


def shadow_window(conn: psycopg.Connection, minutes: int) -> ShadowWindow | None:
    """Counts of the buckets that start in the last `minutes` minutes (so up to one more
    minute, the current one, partly); None when no router ever recorded any (no table)."""
    found = conn.execute("SELECT to_regclass('bluegreen.shadow_reads')").fetchone()
    if found is None or found[0] is None:
        return None
    row = conn.execute(
        "SELECT coalesce(sum(compared), 0), coalesce(sum(mismatched), 0), "
        "coalesce(sum(dropped), 0), coalesce(sum(failed), 0), count(DISTINCT client_id) "
        "FROM bluegreen.shadow_reads "
        "WHERE minute >= date_trunc('minute', now() - make_interval(mins => %s))",
        (minutes,),
    ).fetchone()
    assert row is not None  # an aggregate always returns a row
    counts = ShadowCounts(int(row[0]), int(row[1]), int(row[2]), int(row[3]))
    return ShadowWindow(minutes, counts, int(row[4]))
