"""The entry point of a snapshot worker process, spawned by `bluegreen snapshot`."""

from __future__ import annotations

import os
import signal
import sys
from multiprocessing.connection import Connection

from bluegreen.core import logs
from bluegreen.core.config import Settings
from bluegreen.core.errors import BluegreenError
from bluegreen.core.retry import one_line
from producers.snapshot.channel import ParentChannel
from producers.snapshot.worker import SnapshotWorker, worker_id_for
from schemas.source import SourceSpec

# The worker could not go on (a dependency stayed away past the reconnect timeout, the
# CDC slot is missing): restarting it would not help, and the parent says why.
EXIT_GAVE_UP = 3


def worker_main(
    settings: Settings,
    source: SourceSpec,
    conn: Connection,
    *,
    prefix: str,
    index: int,
    parent_pid: int,
) -> None:
    logs.configure(settings.log)
    channel = ParentChannel(conn)
    worker = SnapshotWorker(
        settings,
        source,
        worker_id=worker_id_for(prefix, os.getpid()),
        name=f"snapshot worker {index}",
        gauge=channel,
        parent_pid=parent_pid,
    )
    signal.signal(signal.SIGTERM, lambda _s, _f: worker.request_stop())
    signal.signal(signal.SIGINT, lambda _s, _f: worker.request_stop())
    try:
        worker.run()
    except BluegreenError as exc:
        worker.log.error("worker stopped", error=one_line(exc))
        channel.gave_up(one_line(exc))
        sys.exit(EXIT_GAVE_UP)
