"""A service that cannot reach a dependency ends with one line, not a traceback.

The line names the service, the target without its password, and the cause; a
closed port is retried until the (here shortened) reconnect deadline, a refused
login is not retried at all. `--debug` shows the traceback.
"""

from __future__ import annotations

import socket
import time

import pytest
from pydantic import SecretStr

from bluegreen.core.config import ConsumerSettings, Settings
from tests.support.cli import bluegreen

pytestmark = pytest.mark.integration


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # free once the socket closes: nobody listens


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower()]


def test_consume_against_a_closed_green_port_ends_with_one_line(settings: Settings) -> None:
    port = closed_port()
    broken = settings.model_copy(
        update={
            "green_dsn": SecretStr(f"postgresql://app:s3cret-pw@127.0.0.1:{port}/green"),
            "consumer": ConsumerSettings(reconnect_timeout_s=2, retry_backoff_base_s=0.2),
        }
    )
    started = time.monotonic()
    result = bluegreen(broken, "consume", "--metrics-port", "-1", timeout=60)
    assert result.returncode == 1
    assert time.monotonic() - started >= 2  # retried until the deadline
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("bluegreen consume: error: consume: green at ")
    assert f"127.0.0.1:{port}/green unreachable" in last
    assert "s3cret-pw" not in result.stderr and "app:" not in last
    assert "Traceback" not in result.stderr
    assert "retrying" in result.stderr  # one line per attempt meanwhile


def test_a_refused_login_is_not_retried_and_debug_shows_the_traceback(
    settings: Settings,
) -> None:
    dsn = settings.green_dsn.get_secret_value()
    host_part = dsn.split("@", 1)[1]
    broken = settings.model_copy(
        update={"green_dsn": SecretStr(f"postgresql://nobody_here:pw@{host_part}")}
    )
    result = bluegreen(broken, "consume", "--metrics-port", "-1", timeout=60)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "consume: green at" in last and "refused us" in last
    assert 'role "nobody_here" does not exist' in last
    assert "Traceback" not in result.stderr
    debug = bluegreen(broken, "--debug", "consume", "--metrics-port", "-1", timeout=60)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr
