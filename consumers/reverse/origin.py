"""The replication origin that marks the reverse applier's blue transactions.

Blue's forward capture skips every transaction whose origin name starts with
``schemas.control.REVERSE_ORIGIN``, so what the reverse applier writes never flows back
to green. PostgreSQL 15 lets an origin be active in one session at a time: a process
takes the first free of ``bluegreen_reverse_1..N``, creating it if missing.
"""

from __future__ import annotations

import contextlib

import psycopg

from bluegreen.core.errors import ConfigError
from schemas.control import REVERSE_ORIGIN


def origin_names(count: int) -> list[str]:
    return [f"{REVERSE_ORIGIN}_{number}" for number in range(1, count + 1)]


def take_origin(conn: psycopg.Connection, count: int) -> str:
    """Set up the session's origin on an autocommit connection; return its name."""
    for name in origin_names(count):
        if conn.execute("SELECT pg_replication_origin_oid(%s)", (name,)).fetchone() == (None,):
            with contextlib.suppress(psycopg.errors.UniqueViolation):  # another just did
                conn.execute("SELECT pg_replication_origin_create(%s)", (name,))
        try:
            conn.execute("SELECT pg_replication_origin_session_setup(%s)", (name,))
        except psycopg.errors.ObjectInUse:
            continue  # active in another applier's session
        return name
    raise ConfigError(
        f"all {count} replication origins {REVERSE_ORIGIN}_1..{count} are in use: "
        "raise reverse_apply.origins or stop an applier"
    )
