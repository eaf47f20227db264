"""Record real pgoutput messages from a PostgreSQL server as test vectors.

    python -m tests.support.capture_pgoutput postgresql://postgres@127.0.0.1:16432/postgres \
        tests/unit/data/pgoutput_v1.json

Creates a scratch database, runs a scripted sequence of changes (with a TOASTed
column, a primary-key change, NULLs, a truncate, logical messages and a table
outside the publication) and saves every XLogData payload, in order, as hex.
"""

from __future__ import annotations

import json
import os
import sys
import time

import psycopg
from pydantic import SecretStr

from producers.cdc.stream import ReplicationStream, XLogData

SCRIPT = [
    "INSERT INTO t VALUES (1, 'first', %(big)s, 12.50, '2024-05-01 12:00:00.123456+00', true, "
    "'{\"size_us\": 9.5}')",
    "UPDATE t SET name = 'renamed' WHERE id = 1",  # big is TOASTed and unchanged
    "UPDATE t SET id = 2 WHERE id = 1",  # primary-key change
    "INSERT INTO t VALUES (3, 'nulls', NULL, 0, '2024-05-01 00:00:00+00', false, '{}')",
    "INSERT INTO other VALUES (1)",  # not in the publication
    "DELETE FROM t WHERE id = 3",
    "SELECT pg_logical_emit_message(true, 'bluegreen.fence', 'fence-1')",
    "SELECT pg_logical_emit_message(false, 'bluegreen.heartbeat', '1714564800000')",
    "TRUNCATE t",
]


def capture(admin_dsn: str) -> list[str]:
    database = f"capture_{os.getpid()}"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    dsn = admin_dsn.rsplit("/", 1)[0] + f"/{database}"
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE t (id int PRIMARY KEY, name text, big text, n numeric(12,2), "
                "ts timestamptz, flag boolean, j jsonb)"
            )
            conn.execute("ALTER TABLE t REPLICA IDENTITY FULL")
            conn.execute("CREATE TABLE other (id int PRIMARY KEY)")
            conn.execute("CREATE PUBLICATION p FOR TABLE t")
            conn.execute("SELECT pg_create_logical_replication_slot('capture', 'pgoutput')")
            big = os.urandom(4000).hex()  # 8 kB that do not compress: stored out of line
            for statement in SCRIPT:
                conn.execute(statement, {"big": big} if "%(big)s" in statement else None)
        stream = ReplicationStream(SecretStr(dsn), "capture", "p")
        payloads: list[str] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = stream.read(0.5)
            if isinstance(message, XLogData):
                payloads.append(message.payload.hex())
                deadline = time.monotonic() + 1.5
        stream.close()
        return payloads
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_drop_replication_slot('capture')")
            admin.execute(f"DROP DATABASE {database} WITH (FORCE)")


if __name__ == "__main__":
    vectors = capture(sys.argv[1])
    with open(sys.argv[2], "w") as out:
        json.dump({"statements": SCRIPT, "payloads": vectors}, out, indent=1)
    print(f"{len(vectors)} messages")
