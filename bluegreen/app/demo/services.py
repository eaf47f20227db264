"""Long-lived bluegreen services as child processes, the way an operator runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bluegreen.app.stack import processes
from bluegreen.core.config import Settings, as_environment
from bluegreen.core.errors import BluegreenError
from bluegreen.core.metrics import histogram_quantile, scrape_histogram


class ServiceProcess:
    """`bluegreen <command>` in its own process, logging to a file, /metrics on a port."""

    def __init__(
        self, settings: Settings, name: str, args: list[str], log_dir: Path, metrics_port: int
    ) -> None:
        self.name = name
        self.metrics_port = metrics_port
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEGREEN_")}
        env.update(as_environment(settings))
        env["BLUEGREEN_LOG__FORMAT"] = "json"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bluegreen", *args, "--metrics-port", str(metrics_port)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.peak_rss_mb = 0.0

    def check(self) -> None:
        code = self.proc.poll()
        if code is not None:
            tail = self.log_path.read_text(errors="replace").splitlines()[-15:]
            raise BluegreenError(f"{self.name} exited with {code}:\n" + "\n".join(tail))

    def metrics(self, timeout_s: float = 5.0) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return str(response.read().decode())

    def wait_metrics(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self.check()
            try:
                self.metrics(1.0)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _read_peak(self) -> None:
        peak = processes.peak_rss_mb(self.proc.pid)
        if peak is not None:
            self.peak_rss_mb = peak

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, wait, SIGKILL after the timeout; remember the peak RSS first."""
        self._read_peak()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return int(self.proc.returncode or 0)


def latency_ms(
    services: list[ServiceProcess],
    baselines: dict[str, str],
    name: str,
    *,
    skip_gone: bool = False,
) -> tuple[float | None, float | None]:
    """p50/p99 in ms of a latency histogram over these services, since each one's
    baseline scrape (none: since it started). With `skip_gone`, a service that no longer
    answers is left out instead of failing the report."""
    merged: dict[float, float] = {}
    for service in services:
        try:
            now = scrape_histogram(service.metrics(), name)
        except OSError:
            if not skip_gone:
                raise
            continue
        before = dict(scrape_histogram(baselines.get(service.name, ""), name))
        for bound, count in now:
            merged[bound] = merged.get(bound, 0.0) + count - before.get(bound, 0.0)
    buckets = sorted(merged.items())
    p50, p99 = histogram_quantile(buckets, 0.5), histogram_quantile(buckets, 0.99)
    return (
        None if p50 is None else round(p50 * 1000, 1),
        None if p99 is None else round(p99 * 1000, 1),
    )
