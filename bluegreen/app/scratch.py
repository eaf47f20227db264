"""Scratch databases and topics on the configured clusters, for benchmarks and tests.

A benchmark or a test never touches the migration's own databases or topic: it
creates `<prefix>_<color>_<name>` databases next to them, a topic and a CDC slot
of its own, and drops them all afterwards.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from pydantic import SecretStr

from bluegreen.core.config import KafkaSettings, Settings
from bluegreen.core.kafka import delete_topics

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
def isolated(settings: Settings, name: str, *, prefix: str) -> Iterator[Settings]:
    """Settings pointing at fresh databases, topics and slot named for `name`; dropped on exit."""
    created: list[tuple[SecretStr, str]] = []
    update: dict[str, object] = {}
    kafka: KafkaSettings | None = None
    try:
        for color in ("blue", "green", "control"):
            dsn: SecretStr = getattr(settings, f"{color}_dsn")
            database = f"{prefix}_{color}_{name}"
            admin = _with_database(dsn, "postgres").get_secret_value()
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            created.append((dsn, database))
            update[f"{color}_dsn"] = _with_database(dsn, database)
        topic = f"{prefix}.{name}"
        kafka = settings.kafka.model_copy(
            update={
                "topic": topic,
                "dlq_topic": f"{topic}.dlq",
                "reverse_topic": f"{topic}.reverse",
            }
        )
        update["kafka"] = kafka
        update["cdc"] = settings.cdc.model_copy(update={"slot": f"{prefix}_{name}"[:63]})
        yield settings.model_copy(update=update)
    finally:
        if kafka is not None:
            delete_topics(kafka, [kafka.topic, kafka.dlq_topic, kafka.reverse_topic])
        for dsn, database in created:
            drop_database(dsn, database)


@contextmanager
def scratch(settings: Settings, label: str) -> Iterator[Settings]:
    """A benchmark run's own databases and topic (`bench_<color>_<label>_<id>`)."""
    with isolated(settings, f"{label}_{uuid.uuid4().hex[:6]}", prefix="bench") as run:
        yield run
