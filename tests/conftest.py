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

import pytest

from bluegreen.app.scratch import isolated
from bluegreen.app.stack.local import LocalStack
from bluegreen.core.config import Settings, StackSettings, load_settings

ROOT = Path(__file__).resolve().parent.parent
# BLUEGREEN_TEST_PORT_OFFSET=N moves the test stack N ports up (and into its own state
# folder), so two checkouts can run their suites side by side.
# Under pytest-xdist (`make test` runs two workers) each worker has its own stack,
# 200 ports further up per worker (clear of test_stack_lifecycle.py's private stack).
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_OFFSET = int(os.environ.get("BLUEGREEN_TEST_PORT_OFFSET", "0")) + 200 * _WORKER
TEST_STACK = StackSettings(
    state_dir=ROOT / (".bluegreen-test" + (f"-{_OFFSET}" if _OFFSET else "")),
    blue_port=16432 + _OFFSET,
    green_port=16433 + _OFFSET,
    control_port=16434 + _OFFSET,
    kafka_port=19192 + _OFFSET,
    kafka_controller_port=19193 + _OFFSET,
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


@pytest.fixture
def test_id(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:30].strip("_")
    return f"{name}_{uuid.uuid4().hex[:6]}"


@pytest.fixture
def settings(base_settings: Settings, test_id: str) -> Iterator[Settings]:
    """Settings whose databases and topics belong to this test alone."""
    with isolated(base_settings, test_id, prefix="t") as own:
        yield own
