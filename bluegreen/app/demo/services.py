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
