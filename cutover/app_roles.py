"""The application's role on blue and green, and what the write switch does to it.

Application instances connect as ``APP_ROLE`` (``bluegreen_app``). Its privileges are
the write switch's safety net: once writes are on green, blue REVOKEs INSERT, UPDATE
and DELETE on its table from it (privileges are checked per statement, so sessions
that are already open are refused too), and a write rollback GRANTs them back and
REVOKEs them on green. The switch also asks blue or green, from ``pg_stat_activity``,
which application transactions are still writing, and takes a SHARE lock on the
application's tables so that no application write can commit behind its fence.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import errors, sql
from pydantic import SecretStr

APP_ROLE = "bluegreen_app"
_USER_IN_URL = re.compile(r"^(postgres(?:ql)?://)(?:[^@/]*@)?")

Table = tuple[str, str]  # (schema, table)


def as_role(dsn: SecretStr, role: str = APP_ROLE) -> SecretStr:
    """The same database as another user (trust on loopback; issue 17 brings passwords)."""
    text = dsn.get_secret_value()
    if not _USER_IN_URL.match(text):
        raise ValueError("only postgresql:// URLs can be turned into the application's DSN")
    return SecretStr(_USER_IN_URL.sub(rf"\g<1>{role}@", text, count=1))


def ensure_role(conn: psycopg.Connection, role: str = APP_ROLE) -> None:
    """CREATE ROLE ... LOGIN unless it exists (a cluster-wide object; races are fine)."""
    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
        return
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    except (errors.DuplicateObject, errors.UniqueViolation):
        pass  # another session created it at the same moment


def _tables(tables: Sequence[Table]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(s, t) for s, t in tables)


def grant_app(
    conn: psycopg.Connection, tables: Sequence[Table], *, write: bool, role: str = APP_ROLE
) -> None:
    """The role, and its grants on these tables: SELECT, plus writes when `write`."""
    ensure_role(conn, role)
    who = sql.Identifier(role)
    with conn.transaction():
        database = conn.execute("SELECT current_database()").fetchone()
        assert database is not None
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database[0]), who)
        )
        for schema in sorted({s for s, _ in tables}):
            conn.execute(
                sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), who)
            )
            conn.execute(
                sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(
                    sql.Identifier(schema), who
                )
            )
        conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(_tables(tables), who))
        set_writes(conn, tables, allowed=write, role=role)


def set_writes(
    conn: psycopg.Connection, tables: Sequence[Table], *, allowed: bool, role: str = APP_ROLE
) -> None:
    """GRANT or REVOKE INSERT, UPDATE, DELETE on the tables (in the caller's transaction)."""
    verb = "GRANT INSERT, UPDATE, DELETE ON {} TO {}"
    if not allowed:
        verb = "REVOKE INSERT, UPDATE, DELETE ON {} FROM {}"
    conn.execute(sql.SQL(verb).format(_tables(tables), sql.Identifier(role)))


@dataclass(frozen=True)
class Writer:
    """An application transaction holding a transaction id: it has written."""

    pid: int
    xact_start: datetime
    state: str
    application_name: str
    query: str

    def describe(self) -> str:
        name = f" {self.application_name}" if self.application_name else ""
        return (
            f"pid {self.pid}{name}, transaction open since {self.xact_start:%H:%M:%S.%f} "
            f"({self.state}): {self.query[:120]}"
        )


def writers(conn: psycopg.Connection, role: str = APP_ROLE) -> list[Writer]:
    """The role's open transactions in this database that hold a transaction id."""
    rows = conn.execute(
        "SELECT pid, xact_start, coalesce(state, ''), coalesce(application_name, ''), "
        "coalesce(query, '') FROM pg_stat_activity WHERE usename = %s "
        "AND datname = current_database() AND backend_xid IS NOT NULL "
        "AND pid <> pg_backend_pid() ORDER BY xact_start",
        (role,),
    ).fetchall()
    return [Writer(*row) for row in rows]


def lock_writes(conn: psycopg.Connection, tables: Sequence[Table], timeout_s: float) -> None:
    """In the caller's open transaction: SHARE-lock the tables (reads go on, writes wait),
    waiting at most `timeout_s` for writers in flight (psycopg LockNotAvailable)."""
    conn.execute(
        sql.SQL("SET LOCAL lock_timeout = {}").format(
            sql.Literal(f"{max(1, int(timeout_s * 1000))}ms")
        )
    )
    conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(_tables(tables)))
