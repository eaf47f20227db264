"""CDC capture: sustained throughput and commit-to-ack latency under write load.

The capture service runs in a process of its own (as in production) and reports,
every second, how many events the broker acknowledged and the commit-to-ack
latency of each transaction (blue's commit timestamp to the delivery report).
This process writes to blue: first a steady load for the latency figures, then as
fast as it can for the throughput figure.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from bluegreen.app.stack.processes import peak_rss_mb
from bluegreen.core import db, logs
from bluegreen.core.config import Settings
from bluegreen.core.metrics import Metrics
from producers.cdc.service import CdcService
from schemas.catalog import SOURCE
from schemas.catalog.seed_load import load_seed

_REPORT_EVERY_S = 0.5


@dataclass(frozen=True)
class CdcFigures:
    steady_rate_target: int
    steady_changes_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    burst_write_changes_per_s: float
    capture_changes_per_s: float
    catch_up_seconds: float
    peak_rss_mb: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _capture_child(settings: Settings, pipe: multiprocessing.connection.Connection) -> None:
    """Run the capture service; stream (acked events, latencies) to the parent."""
    logs.configure(settings.log.model_copy(update={"level": "WARNING"}))
    service = CdcService(settings, SOURCE, Metrics())
    stop = threading.Event()

    def report() -> None:
        while not stop.wait(_REPORT_EVERY_S):
            latencies = []
            while service.latencies_ms:
                latencies.append(service.latencies_ms.popleft())
            pipe.send((time.monotonic(), service.events_acked, latencies))
            if pipe.poll():
                pipe.recv()
                service.request_stop()

    reporter = threading.Thread(target=report, daemon=True)
    reporter.start()
    service.run()
    stop.set()
    reporter.join()
    pipe.send(("done", peak_rss_mb("self") or 0.0))


class _Load(threading.Thread):
    """Small update transactions on blue, at a target rate or as fast as possible."""

    def __init__(self, settings: Settings, rows: int, per_txn: int, rate: float | None):
        super().__init__(daemon=True)
        self._settings, self._rows, self._per_txn, self._rate = settings, rows, per_txn, rate
        self.stop = threading.Event()
        self.changes = 0

    def run(self) -> None:
        with db.connect(self._settings.blue_dsn) as conn:
            start = time.monotonic()
            txn = 0
            while not self.stop.is_set():
                first = (txn * self._per_txn) % (self._rows - self._per_txn) + 1
                conn.execute(
                    "UPDATE legacy_product SET stock = coalesce(stock, 0) + 1 "
                    "WHERE id >= %s AND id < %s",
                    (first, first + self._per_txn),
                )
                conn.commit()
                txn += 1
                self.changes += self._per_txn
                if self._rate:
                    ahead = self.changes / self._rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)


def _percentile(samples: list[float], fraction: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class _Capture:
    """The capture service in its own process, and its reports in this one."""

    def __init__(self, settings: Settings) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(
            target=_capture_child, args=(settings, child), name="bench-cdc"
        )
        self._process.start()
        self.reports: list[tuple[float, int, list[float]]] = []

    def drain(self, until: float) -> None:
        while time.monotonic() < until:
            if self._pipe.poll(0.1):
                self.reports.append(self._pipe.recv())

    @property
    def acked(self) -> int:
        return self.reports[-1][1] if self.reports else 0

    def stop(self) -> float:
        """Stop the service; return its peak RSS in MB."""
        self._pipe.send("stop")
        deadline = time.monotonic() + 60
        peak_mb = 0.0
        while time.monotonic() < deadline:
            if self._pipe.poll(0.5):
                message = self._pipe.recv()
                if message[0] == "done":
                    peak_mb = message[1]
                    break
        self._process.join(30)
        return peak_mb


def _steady(capture: _Capture, load: _Load, seconds: float) -> tuple[float, list[float]]:
    capture.reports.clear()
    load.start()
    capture.drain(time.monotonic() + seconds)
    load.stop.set()
    load.join()
    capture.drain(time.monotonic() + 1)
    reports = capture.reports
    latencies = [value for _, _, batch in reports for value in batch]
    if len(reports) < 2:
        return 0.0, latencies
    rate = (reports[-1][1] - reports[0][1]) / (reports[-1][0] - reports[0][0])
    return rate, latencies


def _burst(capture: _Capture, load: _Load, seconds: float) -> tuple[float, float, float]:
    """Writes as fast as possible; returns (write rate, capture rate, catch-up seconds)."""
    before = capture.acked
    capture.reports.clear()
    load.start()
    begin = time.monotonic()
    capture.drain(begin + seconds)
    load.stop.set()
    load.join()
    written_seconds = time.monotonic() - begin
    reports = capture.reports
    window = reports[-1][0] - reports[0][0] if len(reports) > 1 else 1.0
    captured = (reports[-1][1] - reports[0][1]) if reports else 0
    target = before + load.changes
    catch_start = time.monotonic()
    while capture.acked < target and time.monotonic() - catch_start < 300:
        capture.drain(time.monotonic() + 0.5)
    return load.changes / written_seconds, captured / window, time.monotonic() - catch_start


def run(settings: Settings, *, rows: int, rate: int, seconds: float) -> CdcFigures:
    load_seed(settings.blue_dsn, rows, 42, replace=True)
    capture = _Capture(settings)
    capture.drain(time.monotonic() + 3)  # the service starts streaming
    steady_rate, latencies = _steady(capture, _Load(settings, rows, 10, rate), seconds)
    write_rate, capture_rate, catch_up = _burst(capture, _Load(settings, rows, 100, None), seconds)
    peak_mb = capture.stop()
    return CdcFigures(
        steady_rate_target=rate,
        steady_changes_per_s=steady_rate,
        latency_p50_ms=statistics.median(latencies) if latencies else float("nan"),
        latency_p99_ms=_percentile(latencies, 0.99),
        latency_max_ms=max(latencies) if latencies else float("nan"),
        burst_write_changes_per_s=write_rate,
        capture_changes_per_s=capture_rate,
        catch_up_seconds=catch_up,
        peak_rss_mb=peak_mb,
    )
