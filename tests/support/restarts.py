"""Restart, crash and stop the test stack's clusters and broker under a running test.

Only the native test stack can be restarted from here; against an external stack
(BLUEGREEN_TEST_STACK=external) the tests that need it are skipped.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from bluegreen.app.stack import processes
from bluegreen.app.stack.local import LocalStack
from bluegreen.core.errors import StackError
from tests.conftest import TEST_STACK
from tests.support.waiting import wait_until


def local_stack() -> LocalStack:
    if os.environ.get("BLUEGREEN_TEST_STACK") == "external":
        pytest.skip("restarts need the native test stack")
    return LocalStack(TEST_STACK)


def restart_blue(stack: LocalStack) -> None:
    restart_cluster(stack, "blue")


def restart_cluster(stack: LocalStack, name: str) -> None:
    """`pg_ctl restart -m fast` of a cluster; the stack then records the new postmaster."""
    cluster = stack.clusters[name]
    old = cluster.pid()
    processes.run(
        processes.as_service_user(
            [
                str(cluster.bin_dir / "pg_ctl"),
                "restart",
                "-D",
                str(cluster.data_dir),
                "-m",
                "fast",
                "-l",
                str(cluster.log_file),
                "-w",
                "-t",
                "120",
            ]
        ),
        what=f"restarting {name}",
        log=cluster.log_file,
        timeout=180,
    )
    assert cluster.pid() not in (None, old)
    stack.up()  # records the new pid, checks health


def kill_blue(stack: LocalStack) -> None:
    kill_cluster(stack, "blue")


def kill_cluster(stack: LocalStack, name: str) -> None:
    """kill -9 of a cluster's postmaster, then a start (crash recovery) through the stack."""
    cluster = stack.clusters[name]
    pid = cluster.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not processes.pid_alive(pid), f"{name}'s postmaster to die", 30)
    deadline = time.monotonic() + 90
    while True:
        # Orphaned backends notice the postmaster's death and exit; until the last one
        # has, the new postmaster refuses the still-attached shared memory.
        try:
            stack.up()
            return
        except StackError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def stop_broker(stack: LocalStack) -> None:
    """Stop the broker with the stack's own helper (SIGTERM, wait for exit)."""
    kafka = next(s for s in stack.status() if s.name == "kafka")
    assert kafka.pid is not None, "the broker is not running"
    stack.kafka.stop(kafka.pid)


def start_broker(stack: LocalStack) -> None:
    """Start what is down (the broker) and wait until it answers."""
    stack.up()
