"""Kill -9 one component, keep it down for a moment, restart it as an operator would.

* bluegreen services (cdc, a consumer, the snapshot parent): SIGKILL the process, then
  run the same command again. A snapshot worker cannot be restarted on its own: its
  parent, or the next `bluegreen snapshot`, carries its task on.
* stack services (the broker, green's or blue's postmaster): SIGKILL the pid the stack
  knows (`bluegreen stack status`), then `LocalStack.up()` — what `bluegreen stack up`
  does: start whatever is down (`pg_ctl start` for a cluster), wait until healthy. A
  postmaster killed with -9 leaves backends behind for a moment that hold its shared
  memory, so the start is retried until it succeeds or a deadline passes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bluegreen.app.chaos.schedule import Fault, Kind
from bluegreen.app.chaos.services import ServiceSet
from bluegreen.app.stack import processes
from bluegreen.app.stack.local import LocalStack
from bluegreen.core.errors import BluegreenError, StackError

_WORKER_WAIT_S = 20.0  # a snapshot worker appears within this after its parent started
_STACK_RESTART_S = 120.0


@dataclass
class Injected:
    kind: str
    phase: str
    planned_at: float
    fired_at_s: float  # seconds since the writes started
    target: str = ""
    pid: int | None = None
    down_s: float = 0.0
    restarted_at_s: float | None = None
    restart_seconds: float | None = None  # from the restart command to healthy
    observed: str = ""  # the state when it fired (snapshot: tasks completed)
    skipped: str = ""  # why it could not be injected (the target had already ended)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.skipped:
            return f"{self.kind}@{self.phase} t={self.fired_at_s:.1f}s skipped: {self.skipped}"
        restart = (
            f"restarted at {self.restarted_at_s:.1f}s"
            if self.restarted_at_s is not None
            else self.note or "not restarted"
        )
        seen = f", {self.observed}" if self.observed else ""
        return (
            f"{self.kind}@{self.phase} t={self.fired_at_s:.1f}s{seen}: kill -9 {self.target} "
            f"({restart})"
        )


class Injector:
    """Carries out one fault at a time; `tick` keeps the run's watch going while it waits."""

    def __init__(
        self,
        stack: LocalStack,
        services: ServiceSet,
        *,
        clock: Callable[[], float],
        tick: Callable[[float], None],
        snapshot_done: Callable[[], bool],
        notify: Callable[[str], None] = lambda _text: None,
    ) -> None:
        self._notify = notify
        self._stack = stack
        self._services = services
        self._clock = clock
        self._tick = tick
        self._snapshot_done = snapshot_done

    def inject(self, fault: Fault, observed: str = "") -> Injected:
        record = Injected(
            kind=fault.kind.value,
            phase=fault.phase.value,
            planned_at=fault.at,
            fired_at_s=round(self._clock(), 2),
            down_s=fault.down_s,
            observed=observed,
        )
        if fault.kind == Kind.SNAPSHOT_WORKER:
            self._kill_worker(fault, record)
        elif fault.kind in (Kind.KAFKA, Kind.GREEN, Kind.BLUE):
            self._kill_stack(fault, record)
        else:
            self._kill_service(fault, record)
        self._notify(f"  fault: {record.describe()}")
        return record

    def _killed(self, record: Injected) -> None:
        record.fired_at_s = round(self._clock(), 2)  # the kill itself (a worker is awaited)
        seen = f" ({record.observed})" if record.observed else ""
        self._notify(f"  kill -9 {record.target} at t={self._clock():.1f}s{seen}")

    # -- bluegreen services -----------------------------------------------------------------------

    def _kill_service(self, fault: Fault, record: Injected) -> None:
        name = {
            Kind.CDC: "cdc",
            Kind.CONSUMER: f"consume-{fault.target}",
            Kind.SNAPSHOT: "snapshot",
        }[fault.kind]
        record.target = name
        record.pid = self._services.kill(name)
        if record.pid is None:
            record.skipped = f"{name} was not running"
            return
        self._killed(record)
        self._tick(fault.down_s)
        if name == "snapshot" and self._snapshot_done():
            record.note = "not restarted: every task COMPLETED meanwhile (its workers finished)"
            return
        self._services.start(name)
        record.restarted_at_s = round(self._clock(), 2)

    def _kill_worker(self, fault: Fault, record: Injected) -> None:
        deadline = time.monotonic() + _WORKER_WAIT_S
        workers: list[int] = []
        while time.monotonic() < deadline and not self._snapshot_done():
            workers = self._services.snapshot_workers()
            if workers:
                break
            self._tick(0.05)
        if not workers:
            record.skipped = "no snapshot worker was running"
            return
        pid = workers[fault.target % len(workers)]
        record.target, record.pid = f"snapshot worker {pid}", pid
        os.kill(pid, signal.SIGKILL)
        self._killed(record)
        record.note = "a worker is not restarted alone: its parent or the next snapshot goes on"

    # -- stack services ---------------------------------------------------------------------------

    def _kill_stack(self, fault: Fault, record: Injected) -> None:
        name = fault.kind.value
        status = {s.name: s for s in self._stack.status()}[name]
        record.target = f"{name} (pid {status.pid})"
        if status.pid is None:
            record.skipped = f"{name} was not running"
            return
        record.pid = status.pid
        os.kill(status.pid, signal.SIGKILL)
        self._killed(record)
        deadline = time.monotonic() + 30
        while processes.pid_alive(status.pid) and time.monotonic() < deadline:
            self._tick(0.05)
        self._tick(fault.down_s)
        record.restarted_at_s = round(self._clock(), 2)
        started = time.monotonic()
        self._in_background(self.restart_stack)
        record.restart_seconds = round(time.monotonic() - started, 2)

    def restart_stack(self) -> None:
        """`bluegreen stack up`, retried while a killed postmaster's backends linger."""
        deadline = time.monotonic() + _STACK_RESTART_S
        while True:
            try:
                self._stack.up()
                return
            except StackError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _in_background(self, work: Callable[[], None]) -> None:
        failure: list[BaseException] = []

        def run() -> None:
            try:
                work()
            except Exception as exc:  # noqa: BLE001 - handed to the caller's thread, re-raised
                failure.append(exc)

        thread = threading.Thread(target=run, name="chaos-restart", daemon=True)
        thread.start()
        while thread.is_alive():
            self._tick(0.2)
        if failure:
            raise BluegreenError(f"could not restart the stack: {failure[0]}") from failure[0]
