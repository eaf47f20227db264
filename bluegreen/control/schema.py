"""The control database's tables, created in one place.

Every ``bluegreen.*`` table any command reads or writes is declared here, so a
command that only reads (``status``, the cutover gates) can ask whether a table is
there yet instead of creating it.
"""

from __future__ import annotations

import psycopg

# One transaction, serialised by an advisory lock: two commands starting at once must
# not race each other's CREATE ... IF NOT EXISTS.
SCHEMA_SQL = """
SELECT pg_advisory_xact_lock(hashtext('bluegreen-ddl'));
CREATE SCHEMA IF NOT EXISTS bluegreen;
CREATE TABLE IF NOT EXISTS bluegreen.migration (
    id integer PRIMARY KEY CHECK (id = 1),
    phase text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO bluegreen.migration (id, phase) VALUES (1, 'planned') ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS bluegreen.read_router (
    id integer PRIMARY KEY CHECK (id = 1),
    color text NOT NULL CHECK (color IN ('blue', 'green')),
    epoch bigint NOT NULL,
    switched_at timestamptz NOT NULL DEFAULT now(),
    switched_by text NOT NULL
);
INSERT INTO bluegreen.read_router (id, color, epoch, switched_by)
VALUES (1, 'blue', 0, 'initial') ON CONFLICT DO NOTHING;
-- Write ownership (issue 14) on the same record: which color takes writes, its own
-- epoch (bumped on every pause, flip and resume), whether routers hold new writes and
-- for how long at most, and whether keys written on green still await their refresh.
-- Added in one ALTER, only when missing: ALTER TABLE takes an ACCESS EXCLUSIVE lock,
-- which routers polling the record should not meet on every command's start.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM information_schema.columns WHERE table_schema = 'bluegreen'
        AND table_name = 'read_router' AND column_name = 'write_color'
    ) THEN
        ALTER TABLE bluegreen.read_router
            ADD COLUMN write_color text NOT NULL DEFAULT 'blue'
                CHECK (write_color IN ('blue', 'green')),
            ADD COLUMN write_epoch bigint NOT NULL DEFAULT 0,
            ADD COLUMN writes_paused boolean NOT NULL DEFAULT false,
            ADD COLUMN pause_budget_ms integer NOT NULL DEFAULT 1000,
            ADD COLUMN paused_at timestamptz,
            ADD COLUMN refresh_pending boolean NOT NULL DEFAULT false;
    END IF;
END
$$;
-- Write clients (routers with write connections): which write epoch each has seen
-- and whether its writes on the paused owner have drained; a write switch waits for
-- every live one before it locks the old owner's tables.
CREATE TABLE IF NOT EXISTS bluegreen.write_client (
    client_id text PRIMARY KEY,
    seen_epoch bigint NOT NULL,
    drained boolean NOT NULL,
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS bluegreen.audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    action text NOT NULL,
    from_phase text,
    to_phase text,
    reason text,
    details jsonb NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS bluegreen.verification (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    snapshot_lsn bigint NOT NULL,
    clean boolean NOT NULL,
    differences integer NOT NULL,
    report jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS bluegreen.snapshot_plan (
    source_table text PRIMARY KEY,
    chunk_size integer NOT NULL,
    tasks integer NOT NULL,
    planned_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS bluegreen.snapshot_task (
    id bigserial PRIMARY KEY,
    source_table text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('range', 'keys')),
    lo bigint,
    hi bigint,
    keys jsonb,
    state text NOT NULL DEFAULT 'READY'
        CHECK (state IN ('READY', 'IN_PROGRESS', 'COMPLETED', 'ERROR', 'DEAD')),
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    worker_id text,
    heartbeat_at timestamptz,
    not_before timestamptz NOT NULL DEFAULT now(),
    rows bigint NOT NULL DEFAULT 0,
    produce_errors bigint NOT NULL DEFAULT 0,
    snapshot_lsn bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    CHECK ((kind = 'range' AND lo IS NOT NULL) OR (kind = 'keys' AND keys IS NOT NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS snapshot_task_range_key
    ON bluegreen.snapshot_task (source_table, lo) WHERE kind = 'range';
CREATE INDEX IF NOT EXISTS snapshot_task_claim_idx
    ON bluegreen.snapshot_task (state, not_before);
CREATE TABLE IF NOT EXISTS bluegreen.snapshot_task_attempt (
    id bigserial PRIMARY KEY,
    task_id bigint NOT NULL REFERENCES bluegreen.snapshot_task (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    worker_id text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    outcome text CHECK (outcome IN ('completed', 'failed', 'released', 'interrupted',
                                    'worker_exited', 'heartbeat_expired')),
    detail text
);
CREATE INDEX IF NOT EXISTS snapshot_task_attempt_task_idx
    ON bluegreen.snapshot_task_attempt (task_id);
-- Shadowed reads (issue 15): each read router's counts per minute (shadow_reads.py).
CREATE TABLE IF NOT EXISTS bluegreen.shadow_reads (
    client_id text NOT NULL,
    minute timestamptz NOT NULL,
    compared bigint NOT NULL DEFAULT 0,
    mismatched bigint NOT NULL DEFAULT 0,
    dropped bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (client_id, minute)
);
CREATE INDEX IF NOT EXISTS shadow_reads_minute_idx ON bluegreen.shadow_reads (minute);
"""


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create whatever control table is missing (idempotent), and commit."""
    conn.execute(SCHEMA_SQL)
    conn.commit()


def drop_schema(conn: psycopg.Connection) -> None:
    """Forget the whole migration state (the demo starts from nothing)."""
    conn.execute("DROP SCHEMA IF EXISTS bluegreen CASCADE")


def migration_exists(conn: psycopg.Connection) -> bool:
    """Whether phase, router, audit and verification tables were created yet."""
    return _exists(conn, "bluegreen.migration")


def task_queue_exists(conn: psycopg.Connection) -> bool:
    """Whether a snapshot was ever planned against this control database."""
    return _exists(conn, "bluegreen.snapshot_task")


def _exists(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    return row is not None and row[0] is not None
