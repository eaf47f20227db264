"""Consumer figures: apply throughput of snapshot events, and memory under a big backlog.

The consumer runs as `bluegreen consume` in a process of its own, exactly as an
operator runs it; this process fills the topic first (a real snapshot), then
watches green's apply positions until green holds everything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from confluent_kafka import TopicPartition

from bluegreen.app.stack.processes import peak_rss_mb
from bluegreen.core import db
from bluegreen.core.config import Settings, as_environment
from bluegreen.core.kafka import make_consumer, make_producer, topic_ends
from bluegreen.core.metrics import Metrics
from producers.snapshot import service as snapshot
from schemas.catalog import SOURCE
from schemas.catalog.seed_load import load_seed


@dataclass(frozen=True)
class ApplyFigures:
    events: int
    seconds: float  # first batch committed in green to the last
    events_per_second: float
    peak_rss_mb: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEGREEN_")}
    env.update(as_environment(settings))
    env["BLUEGREEN_LOG__LEVEL"] = "WARNING"
    return env


def _applied(settings: Settings) -> int:
    with db.connect(settings.green_dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('sync.apply_position')").fetchone()
        if exists is None or exists[0] is None:
            return 0
        row = conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM sync.apply_position WHERE topic = %s",
            (settings.kafka.topic,),
        ).fetchone()
    return int(row[0]) if row else 0


def consume_all(settings: Settings, timeout_s: float = 3600) -> ApplyFigures:
    """Run `bluegreen consume` until green applied the whole topic; time it, watch its memory."""
    total = sum(topic_ends(settings.kafka, "bench-watermarks").values())
    proc = subprocess.Popen(
        [sys.executable, "-m", "bluegreen", "consume", "--metrics-port", "-1"],
        env=_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        first: float | None = None
        deadline = time.monotonic() + timeout_s
        applied = 0
        while applied < total:
            if proc.poll() is not None:
                raise RuntimeError(f"bluegreen consume exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"green applied {applied} of {total} messages")
            time.sleep(0.1)
            applied = _applied(settings)
            if applied and first is None:
                first = time.monotonic()
        elapsed = time.monotonic() - (first or time.monotonic())
        peak = peak_rss_mb(proc.pid) or 0.0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return ApplyFigures(
        events=total,
        seconds=elapsed,
        events_per_second=total / elapsed if elapsed else 0.0,
        peak_rss_mb=peak,
    )


def fill_with_snapshot(settings: Settings, rows: int) -> None:
    load_seed(settings.blue_dsn, rows, 42, replace=True)
    report = snapshot.SnapshotService(settings, SOURCE, Metrics()).run(2)
    if not report.ok:
        raise RuntimeError(f"the benchmark snapshot did not complete: {report}")


def top_up(settings: Settings, messages: int) -> None:
    """Copy the topic's messages onto its end until it holds `messages` (redeliveries)."""
    ends = topic_ends(settings.kafka, "bench-watermarks")
    have = sum(ends.values())
    if have >= messages:
        return
    consumer = make_consumer(settings.kafka, "bench-top-up")
    producer = make_producer(settings.kafka)
    consumer.assign([TopicPartition(settings.kafka.topic, p, 0) for p in ends])
    try:
        while have < messages:
            batch = consumer.consume(num_messages=10_000, timeout=5.0)
            if not batch:
                consumer.assign([TopicPartition(settings.kafka.topic, p, 0) for p in ends])
                continue
            for message in batch:
                if have >= messages:
                    break
                while True:
                    try:
                        producer.produce(settings.kafka.topic, message.value(), message.key())
                        break
                    except BufferError:
                        producer.poll(0.1)
                have += 1
            producer.poll(0)
        if producer.flush(120):
            raise RuntimeError("top-up messages not acknowledged")
    finally:
        consumer.close()
