"""Run the real `bluegreen` CLI in a subprocess with a test's settings."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bluegreen.core.config import Settings, as_environment


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes the CLI build exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEGREEN_")}
    env.update(as_environment(settings))
    return env


def bluegreen(
    settings: Settings, *args: str, timeout: float = 300, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bluegreen", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )


class Spawned:
    """A CLI process in its own session, its output in a file (a pipe could fill and block it)."""

    def __init__(self, settings: Settings, *args: str) -> None:
        self._log = tempfile.NamedTemporaryFile(prefix="bluegreen-", suffix=".log")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bluegreen", *args],
            env=settings_env(settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def signal(self, sig: int) -> None:
        """Signal the whole process group (the CLI and the workers it spawned)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()


def spawn(settings: Settings, *args: str) -> Spawned:
    return Spawned(settings, *args)
