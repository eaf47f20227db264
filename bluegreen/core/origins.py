"""Replication origins that mark an applier's transactions, so the capture on the
database it writes can leave them out (pgoutput sends an Origin message after Begin).

PostgreSQL 15 lets an origin be active in one session at a time, so each applier
connection takes the first free name of ``<prefix>_1`` .. ``<prefix>_<limit>``,
creating it if missing: the origins are a small fixed set reused by whichever
process comes, never one per process (nothing leaks). A session's origin is released
when its connection ends, a killed process's included.
"""

from __future__ import annotations

import psycopg

from bluegreen.core.errors import BluegreenError

DEFAULT_LIMIT = 64

_CREATE = (
    "SELECT pg_replication_origin_create(%(name)s) "
    "WHERE pg_replication_origin_oid(%(name)s) IS NULL"
)


def take_origin(conn: psycopg.Connection, prefix: str, limit: int = DEFAULT_LIMIT) -> str:
    """Mark every later transaction of `conn` with the first free `<prefix>_<n>`; its name.

    Leaves `conn` outside a transaction. Raises psycopg's InsufficientPrivilege when the
    role may not use replication origins (superuser, or EXECUTE granted on
    pg_replication_origin_create and pg_replication_origin_session_setup).
    """
    for n in range(1, limit + 1):
        name = f"{prefix}_{n}"
        try:
            with conn.transaction():
                conn.execute(_CREATE, {"name": name})
        except psycopg.errors.UniqueViolation:
            pass  # created by a concurrent caller
        try:
            with conn.transaction():
                conn.execute("SELECT pg_replication_origin_session_setup(%s)", (name,))
        except psycopg.errors.ObjectInUse:
            continue  # active in another session
        _leave_transaction(conn)
        return name
    raise BluegreenError(
        f"every replication origin {prefix}_1..{prefix}_{limit} is active in another "
        "session: more appliers than origins?"
    )


def _leave_transaction(conn: psycopg.Connection) -> None:
    if not conn.autocommit and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.commit()
