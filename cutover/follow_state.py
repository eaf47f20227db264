"""The continuous verifier's durable state, kept in green beside the data it vouches for.

One row in ``sync.verify_state``: the watermark (the blue snapshot LSN up to which
every aggregate was verified, and when that snapshot was taken), the aggregates that
were still moving at it (``pending``: green already held a newer version), the ones
found different (``differing``, with a sample of the differences), the last full
pass, and a heartbeat. It lives in green so that a green rebuilt from scratch cannot
keep an old watermark: the state goes with the data. The verifier writes it in the
same transaction that deletes the queue rows it consumed (``consumers.touched``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from pydantic import SecretStr

from bluegreen.core import db

STATE = sql.Identifier("sync", "verify_state")
_DDL = sql.SQL("""
CREATE SCHEMA IF NOT EXISTS sync;
CREATE TABLE IF NOT EXISTS {state} (
    id                 int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    watermark_lsn      bigint NOT NULL,
    watermark_at       timestamptz NOT NULL,
    pending            text[] NOT NULL DEFAULT '{{}}',
    differing          text[] NOT NULL DEFAULT '{{}}',
    differences        jsonb NOT NULL DEFAULT '[]',
    keys_verified      bigint NOT NULL DEFAULT 0,
    full_pass_lsn      bigint NOT NULL,
    full_pass_at       timestamptz NOT NULL,
    full_pass_skus     bigint NOT NULL,
    full_pass_seconds  double precision NOT NULL,
    follower           text NOT NULL,
    heartbeat_at       timestamptz NOT NULL DEFAULT now()
);
""").format(state=STATE)


@dataclass(frozen=True)
class FollowState:
    watermark_lsn: int
    watermark_at: datetime
    pending: list[str]
    differing: list[str]
    differences: list[dict[str, Any]]  # a sample, as VerifyReport's differences
    keys_verified: int
    full_pass_lsn: int
    full_pass_at: datetime
    full_pass_skus: int
    full_pass_seconds: float
    follower: str
    heartbeat_at: datetime
    now: datetime  # green's clock when read

    @property
    def watermark_age_s(self) -> float:
        return (self.now - self.watermark_at).total_seconds()

    @property
    def heartbeat_age_s(self) -> float:
        return (self.now - self.heartbeat_at).total_seconds()


def create_table(dsn: SecretStr) -> None:
    with db.connect(dsn) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('bluegreen-ddl'))")
        conn.execute(_DDL.as_string(conn).encode())
        conn.commit()


def read(conn: psycopg.Connection[Any]) -> FollowState | None:
    """The state, or None when no verifier ever finished a full pass on this green."""
    exists = conn.execute("SELECT to_regclass('sync.verify_state')").fetchone()
    if exists is None or exists[0] is None:
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT watermark_lsn, watermark_at, pending, differing, differences, keys_verified, "
            "full_pass_lsn, full_pass_at, full_pass_skus, full_pass_seconds, follower, "
            "heartbeat_at, now() FROM {} WHERE id = 1"
        ).format(STATE)
    ).fetchone()
    return None if row is None else FollowState(*row)


def write(
    conn: psycopg.Connection[Any],
    *,
    watermark_lsn: int,
    watermark_at: datetime,
    pending: list[str],
    differing: list[str],
    differences: list[dict[str, Any]],
    verified: int,
    follower: str,
    full_pass: tuple[int, float, int] | None = None,  # (skus, seconds, rows) of a new pass
) -> None:
    """Record a new watermark (in the caller's transaction). `verified` adds to the count."""
    params = {
        "lsn": watermark_lsn,
        "at": watermark_at,
        "pending": pending,
        "differing": differing,
        "differences": json.dumps(differences, default=str),
        "verified": verified,
        "follower": follower,
        "skus": full_pass[0] if full_pass else 0,
        "seconds": full_pass[1] if full_pass else 0.0,
    }
    if full_pass is not None:
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (id, watermark_lsn, watermark_at, pending, differing, "
                "differences, keys_verified, full_pass_lsn, full_pass_at, full_pass_skus, "
                "full_pass_seconds, follower) VALUES (1, %(lsn)s, %(at)s, %(pending)s, "
                "%(differing)s, %(differences)s, %(verified)s, %(lsn)s, %(at)s, %(skus)s, "
                "%(seconds)s, %(follower)s) ON CONFLICT (id) DO UPDATE SET "
                "watermark_lsn = EXCLUDED.watermark_lsn, watermark_at = EXCLUDED.watermark_at, "
                "pending = EXCLUDED.pending, differing = EXCLUDED.differing, "
                "differences = EXCLUDED.differences, "
                "keys_verified = {}.keys_verified + EXCLUDED.keys_verified, "
                "full_pass_lsn = EXCLUDED.full_pass_lsn, full_pass_at = EXCLUDED.full_pass_at, "
                "full_pass_skus = EXCLUDED.full_pass_skus, "
                "full_pass_seconds = EXCLUDED.full_pass_seconds, "
                "follower = EXCLUDED.follower, heartbeat_at = now()"
            ).format(STATE, sql.Identifier("verify_state")),
            params,
        )
        return
    conn.execute(
        sql.SQL(
            "UPDATE {} SET watermark_lsn = %(lsn)s, watermark_at = %(at)s, pending = %(pending)s, "
            "differing = %(differing)s, differences = %(differences)s, "
            "keys_verified = keys_verified + %(verified)s, follower = %(follower)s, "
            "heartbeat_at = now() WHERE id = 1"
        ).format(STATE),
        params,
    )
