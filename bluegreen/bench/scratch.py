"""Scratch databases and topics for a benchmark run, on the configured clusters.

A benchmark never touches the migration's own databases or topic: it creates
`bench_<color>_<id>` databases next to them and a topic of its own, and drops
them afterwards.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from pydantic import SecretStr

from bluegreen.config import KafkaSettings, Settings
from bluegreen.kafka import delete_topics

_DB_IN_URL = re.compile(r"/[^/?]*(\?|$)")


def _with_database(dsn: SecretStr, database: str) -> SecretStr:
    return SecretStr(_DB_IN_URL.sub(rf"/{database}\1", dsn.get_secret_value(), count=1))


def drop_database(dsn: SecretStr, database: str) -> None:
    with psycopg.connect(
        _with_database(dsn, "postgres").get_secret_value(), autocommit=True
    ) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
            "WHERE database = %s AND active_pid IS NOT NULL",
            (database,),
        )
        for (slot,) in conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (database,)
        ).fetchall():
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )


@contextmanager
def scratch(settings: Settings, label: str) -> Iterator[Settings]:
    """Settings pointing at fresh databases and a fresh topic; all dropped on exit."""
    run = f"{label}_{uuid.uuid4().hex[:6]}"
    created: list[tuple[SecretStr, str]] = []
    update: dict[str, object] = {}
    kafka: KafkaSettings | None = None
    try:
        for color in ("blue", "green", "control"):
            dsn: SecretStr = getattr(settings, f"{color}_dsn")
            database = f"bench_{color}_{run}"
            admin = _with_database(dsn, "postgres").get_secret_value()
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            created.append((dsn, database))
            update[f"{color}_dsn"] = _with_database(dsn, database)
        kafka = settings.kafka.model_copy(
            update={"topic": f"bench.{run}", "dlq_topic": f"bench.{run}.dlq"}
        )
        update["kafka"] = kafka
        update["cdc"] = settings.cdc.model_copy(update={"slot": f"bench_{run}"[:63]})
        yield settings.model_copy(update=update)
    finally:
        if kafka is not None:
            delete_topics(kafka, [kafka.topic, kafka.dlq_topic])
        for dsn, database in created:
            drop_database(dsn, database)
