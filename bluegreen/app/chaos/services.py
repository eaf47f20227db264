"""The bluegreen services of a chaos run, started as an operator starts them.

`bluegreen cdc`, two `bluegreen consume` and `bluegreen snapshot --workers 2` run as
child processes (``bluegreen.app.demo.services.ServiceProcess``), each logging to its own
file. A process this harness killed is restarted by the fault that killed it; a
process that exited by itself is an *unexpected exit*: recorded with the tail of its
log and restarted, no sooner than `restart_gap_s` after its previous start (an
operator, or systemd, does not restart in a tight loop either). The snapshot is the
one service that is meant to end: exit 0 once every task is COMPLETED.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bluegreen.app.demo.services import ServiceProcess
from bluegreen.core.config import Settings

COMMANDS: dict[str, list[str]] = {
    "cdc": ["cdc"],
    "consume-0": ["consume"],
    "consume-1": ["consume"],
    "snapshot": ["snapshot", "--workers", "2"],
}
_NO_METRICS = -1  # no /metrics port: nothing to clash with other stacks on this machine
_TAIL_LINES = 12


@dataclass(frozen=True)
class Exit:
    """A service that ended without being killed."""

    service: str
    at_s: float
    phase: str
    exit_code: int | None
    log_tail: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ServiceSet:
    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        *,
        clock: Callable[[], float],
        phase: Callable[[], str],
        snapshot_done: Callable[[], bool],
        notify: Callable[[str], None] = lambda _text: None,
        restart_gap_s: float = 2.0,
        max_restarts: int = 30,
    ) -> None:
        self._settings = settings
        self._log_dir = log_dir
        self._clock = clock
        self._phase = phase
        self._snapshot_done = snapshot_done
        self._notify = notify
        self._gap = restart_gap_s
        self._max_restarts = max_restarts
        self.running: dict[str, ServiceProcess] = {}
        self._every: list[tuple[str, ServiceProcess]] = []
        self._last_start: dict[str, float] = {}
        self._pending: dict[str, float] = {}  # service -> when to restart it
        self.unexpected: list[Exit] = []
        self.starts: Counter[str] = Counter()
        self.snapshot_exit: int | None = None

    def start(self, name: str) -> ServiceProcess:
        service = ServiceProcess(self._settings, name, COMMANDS[name], self._log_dir, _NO_METRICS)
        self.running[name] = service
        self._every.append((name, service))
        self._last_start[name] = time.monotonic()
        self._pending.pop(name, None)
        self.starts[name] += 1
        return service

    def pid(self, name: str) -> int | None:
        service = self.running.get(name)
        return service.proc.pid if service is not None and service.proc.poll() is None else None

    def kill(self, name: str) -> int | None:
        """SIGKILL one service (not its children); None when it was not running."""
        service = self.running.pop(name, None)
        if service is None or service.proc.poll() is not None:
            if service is not None:
                self._ended(name, service)
            return None
        pid = service.proc.pid
        service.proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.proc.wait(10)
        service.stop()  # closes its log file; the process is gone already
        return pid

    def watch(self) -> None:
        """Notice services that exited by themselves; restart what is due."""
        for name, service in list(self.running.items()):
            if service.proc.poll() is not None:
                del self.running[name]
                self._ended(name, service)
        now = time.monotonic()
        for name, due in list(self._pending.items()):
            if now >= due and name not in self.running:
                if name == "snapshot" and self._snapshot_done():
                    self._pending.pop(name)
                    continue
                self.start(name)

    def _ended(self, name: str, service: ServiceProcess) -> None:
        code = service.proc.returncode
        service.stop()
        if name == "snapshot":
            self.snapshot_exit = code
            if code == 0 and self._snapshot_done():
                return  # the one service meant to end, and it ended well
        tail = service.log_path.read_text(errors="replace").splitlines()[-_TAIL_LINES:]
        event = Exit(name, round(self._clock(), 1), self._phase(), code, tail)
        self.unexpected.append(event)
        self._notify(
            f"  unexpected exit: {name} (exit {code}) at t={event.at_s}s in {event.phase}: "
            f"{last_words(tail)[:200]}"
        )
        if self.starts[name] > self._max_restarts:
            return  # a crash loop: stop feeding it, the run has failed anyway
        if name == "snapshot" and self._snapshot_done():
            return  # nothing left for it to do
        self._pending[name] = self._last_start.get(name, 0.0) + self._gap

    def schedule_restart(self, name: str) -> None:
        """Start `name` again at the next `watch` (after a fault's down time)."""
        self._pending[name] = time.monotonic()

    def restore(self, names: list[str]) -> None:
        """Make sure these are running (before the quiet phase); an exit not yet noticed
        is recorded first."""
        self.watch()
        for name in names:
            if name not in self.running:
                self.start(name)

    def stop_all(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every running service, then SIGKILL what is left of each process group
        (workers orphaned when their snapshot parent was killed)."""
        for name in list(self.running):
            self.running.pop(name).stop(timeout_s)
        for pid in self.snapshot_workers():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self._pending.clear()

    def snapshot_workers(self) -> list[int]:
        """Live snapshot workers: the current parent's, and those orphaned by a killed parent
        (still in the process group of the `bluegreen snapshot` that spawned them)."""
        found: set[int] = set()
        for name, service in self._every:
            if name == "snapshot":
                found.update(group_members(service.proc.pid))
        return sorted(found)


def last_words(lines: list[str]) -> str:
    """The line of a log tail that says why the process ended."""
    for line in reversed(lines):
        text = line.strip()
        if not text or text.startswith(("(Background on this error", "^", "%")):
            continue
        if text.startswith("{"):
            try:
                entry = json.loads(text)
            except ValueError:
                return text
            return " ".join(str(entry.get(k, "")) for k in ("level", "event", "error")).strip()
        return text
    return ""


def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return []


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def group_members(leader: int) -> list[int]:
    """Live snapshot workers left in the process group this harness started as `leader`."""
    found = []
    for pid in _pids():
        fields = _stat(pid)
        if len(fields) > 2 and fields[2] == str(leader) and fields[0] != "Z" and _is_worker(pid):
            found.append(pid)
    return found


def _is_worker(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"multiprocessing" in argv and b"spawn_main" in argv
