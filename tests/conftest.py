"""Session fixtures against the real services.

The stack is started once per session: the native stack (Kafka from Maven jars,
PostgreSQL clusters from initdb) in `.bluegreen-test/` on test ports, unless
BLUEGREEN_TEST_STACK=external says to use the services the BLUEGREEN_* settings
point at (for example a docker-compose stack). Each test gets its own databases,
topics and consumer group, so tests never see each other's data.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from bluegreen.config import KafkaSettings, Settings, StackSettings, load_settings
from bluegreen.kafka import delete_topics
from bluegreen.stack.local import LocalStack

ROOT = Path(__file__).resolve().parent.parent
TEST_STACK = StackSettings(
    state_dir=ROOT / ".bluegreen-test",
    blue_port=16432,
    green_port=16433,
    control_port=16434,
    kafka_port=19192,
    kafka_controller_port=19193,
)


@pytest.fixture(scope="session")
def base_settings() -> Iterator[Settings]:
    if os.environ.get("BLUEGREEN_TEST_STACK") == "external":
        yield load_settings()
        return
    stack = LocalStack(TEST_STACK)
    was_running = all(s.healthy for s in stack.status())
    stack.up()
    yield Settings(stack=TEST_STACK)
    if not was_running and os.environ.get("BLUEGREEN_TEST_KEEP_STACK") != "1":
        stack.down()


def _admin_dsn(dsn: SecretStr) -> str:
    return re.sub(r"/[^/?]*(\?|$)", r"/postgres\1", dsn.get_secret_value(), count=1)


def _with_database(dsn: SecretStr, database: str) -> SecretStr:
    return SecretStr(re.sub(r"/[^/?]*(\?|$)", rf"/{database}\1", dsn.get_secret_value(), count=1))


def _drop_database(admin_dsn: str, database: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        # Logical slots pin their database: end their walsenders, then drop them.
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


@pytest.fixture
def test_id(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:30].strip("_")
    return f"{name}_{uuid.uuid4().hex[:6]}"


@pytest.fixture
def settings(base_settings: Settings, test_id: str) -> Iterator[Settings]:
    """Settings whose databases and topics belong to this test alone."""
    created: list[tuple[str, str]] = []
    dsns: dict[str, SecretStr] = {}
    for color in ("blue", "green", "control"):
        dsn: SecretStr = getattr(base_settings, f"{color}_dsn")
        database = f"t_{color}_{test_id}"
        admin = _admin_dsn(dsn)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        created.append((admin, database))
        dsns[f"{color}_dsn"] = _with_database(dsn, database)
    topic = f"t.{test_id}"
    kafka = KafkaSettings(
        **{
            **base_settings.kafka.model_dump(exclude={"topic", "dlq_topic"}),
            "topic": topic,
        }
    )
    cdc = base_settings.cdc.model_copy(update={"slot": f"s_{test_id}"[:63]})
    yield base_settings.model_copy(update={**dsns, "kafka": kafka, "cdc": cdc})
    delete_topics(kafka, [kafka.topic, kafka.dlq_topic])
    for admin, database in created:
        _drop_database(admin, database)
