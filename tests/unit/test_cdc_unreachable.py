"""`bluegreen cdc` against a blue nobody listens on: retries, then one clear line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from pydantic import SecretStr

from bluegreen.core.config import CdcSettings, Settings, as_environment
from bluegreen.core.errors import DependencyError
from bluegreen.core.metrics import Metrics
from producers.cdc.service import CdcService
from schemas.catalog import SOURCE

PASSWORD = "s3cret-pw"
TIMEOUT_S = 1.5


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def unreachable(port: int) -> Settings:
    return Settings(
        blue_dsn=SecretStr(f"postgresql://migrator:{PASSWORD}@127.0.0.1:{port}/shop"),
        cdc=CdcSettings(reconnect_timeout_s=TIMEOUT_S),
    )


def test_service_gives_up_after_the_reconnect_timeout() -> None:
    port = closed_port()
    metrics = Metrics()
    service = CdcService(unreachable(port), SOURCE, metrics)
    started = time.monotonic()
    with pytest.raises(DependencyError) as caught:
        service.run()
    assert TIMEOUT_S <= time.monotonic() - started < TIMEOUT_S + 10
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cdc: blue at 127.0.0.1:{port}/shop unreachable for ")
    assert "Connection refused" in message  # the cause
    assert PASSWORD not in message and "migrator" not in message
    assert metrics.dependency_up.labels("blue")._value.get() == 0


def test_cli_prints_one_line_naming_service_target_and_cause() -> None:
    port = closed_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEGREEN_")}
    env.update(as_environment(unreachable(port)))
    done = subprocess.run(
        [sys.executable, "-m", "bluegreen", "cdc", "--metrics-port", "-1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "Traceback" not in output
    assert PASSWORD not in output
    errors = [line for line in output.splitlines() if "error:" in line]
    assert len(errors) == 1, output
    assert errors[0].startswith(
        f"bluegreen cdc: error: cdc: blue at 127.0.0.1:{port}/shop unreachable for "
    )
    assert "Connection refused" in errors[0]
    retries = [line for line in output.splitlines() if "blue unreachable; retrying" in line]
    assert len(retries) >= 2  # one line per attempt
