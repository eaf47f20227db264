"""Process plumbing for the local stack: pids, signals, ports, log tails."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from bluegreen.core.errors import StackError

POSTGRES_USER = "postgres"


def is_root() -> bool:
    return os.geteuid() == 0


def as_service_user(argv: Sequence[str]) -> list[str]:
    """PostgreSQL refuses to run as root: when we are root, run it as `postgres`."""
    if not is_root():
        return list(argv)
    try:
        pwd.getpwnam(POSTGRES_USER)
    except KeyError as exc:
        raise StackError(
            "running as root, and PostgreSQL refuses root: create the system user with "
            "`useradd --system --home /var/lib/postgresql postgres` or run as a normal user"
        ) from exc
    runuser = shutil.which("runuser")
    if runuser is None:
        raise StackError("running as root but `runuser` (util-linux) is missing")
    return [runuser, "-u", POSTGRES_USER, "--", *argv]


def give_to_service_user(path: Path) -> None:
    """Make a folder the PostgreSQL server may own (only needed when we are root)."""
    path.mkdir(parents=True, exist_ok=True)
    if is_root():
        entry = pwd.getpwnam(POSTGRES_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        path.chmod(0o700)


def check_service_user_can_write(path: Path) -> None:
    """Fail early, and clearly, when `postgres` cannot reach a folder we gave it."""
    if not is_root():
        return
    done = subprocess.run(
        as_service_user(["test", "-w", str(path)]), capture_output=True, check=False
    )
    if done.returncode != 0:
        raise StackError(
            f"the {POSTGRES_USER} user cannot write {path}: every parent folder must be "
            "searchable by it (chmod o+x), or set BLUEGREEN_STACK__STATE_DIR to another folder"
        )


def run(argv: Sequence[str], *, what: str, timeout: float = 300.0, log: Path | None = None) -> str:
    """Run a command to completion; on failure raise StackError with its output."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{what} did not finish within {timeout:.0f}s") from exc
    except FileNotFoundError as exc:
        raise StackError(f"{what}: command not found: {argv[0]}") from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()[-4000:]
        tail = f"\n--- {log} (last lines) ---\n{tail_lines(log)}" if log else ""
        raise StackError(f"{what} failed (exit {done.returncode}):\n{detail}{tail}")
    return done.stdout


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours is dead for every purpose here.
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def stop_pid(pid: int, sig: signal.Signals, timeout_s: float) -> bool:
    """Signal one pid and wait for it to exit; escalate to SIGKILL after the timeout.

    Returns True when the process had to be killed.
    """
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            _reap(pid)
            return False
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    while pid_alive(pid):
        time.sleep(0.05)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def tail_lines(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return "(no log file)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def _status_mb(pid: int | str, field: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def rss_mb(pid: int | str) -> float | None:
    """Resident memory now, in MiB (None when the process is gone)."""
    return _status_mb(pid, "VmRSS:")


def peak_rss_mb(pid: int | str) -> float | None:
    """Peak resident memory (VmHWM), in MiB; pid "self" is this process."""
    return _status_mb(pid, "VmHWM:")
