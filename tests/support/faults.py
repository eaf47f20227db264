"""Faults the tests inject into the real stack: kill -9 a PostgreSQL cluster, start it again."""

from __future__ import annotations

import os
import signal
import time

from bluegreen.errors import StackError
from bluegreen.stack.local import LocalStack
from bluegreen.stack.processes import pid_alive


def kill_cluster(stack: LocalStack, name: str) -> None:
    """SIGKILL the cluster's postmaster and wait until it is gone (its backends follow)."""
    cluster = stack.clusters[name]
    pid = cluster.pid()
    assert pid is not None, f"{name} is not running"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"{name}'s postmaster {pid} survived SIGKILL"
        time.sleep(0.02)


def start_cluster(stack: LocalStack, name: str, timeout_s: float = 60) -> None:
    """Start the cluster again (crash recovery), retrying while its orphaned backends exit."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            stack.up_cluster(name)
            return
        except StackError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
