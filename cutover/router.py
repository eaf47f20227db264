"""The traffic router client: what an application uses to get its read and write
connections.

It knows which color serves reads and which owns writes from the control database's
router record, and learns of a switch at once through LISTEN/NOTIFY (one channel for
reads, one for writes), with polling as a fallback (a lost notification, a
reconnect). Reads in flight on the old color finish there; the next read goes to
the new one. Writes go to the owner's pool; while a write switch pauses writes, new
write transactions are held (``cutover.write_gate``) and then go to whichever color
owns writes when the pause ends. Keyed reads may be shadowed: a sample is compared with
the other color in the background (``cutover.shadow``), never touching the caller's
answer or latency.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import psycopg
from psycopg_pool import ConnectionPool
from pydantic import SecretStr

from bluegreen import control
from bluegreen.control import WriteRoute
from bluegreen.core.config import ShadowSettings
from bluegreen.core.errors import BluegreenError
from bluegreen.core.logs import get_logger
from bluegreen.core.metrics import ShadowMetrics
from cutover.aggregate_read import Answer, read_aggregate
from cutover.shadow import ShadowReads
from cutover.write_gate import HoldStats, WriteGate
from schemas.domain import Domain

HEARTBEAT_S = 1.0


@dataclass(frozen=True)
class Switch:
    color: str
    epoch: int
    seen_at: float  # time.time() when this client learned of it
    via: str  # notify | poll | start


def _pool(dsn: SecretStr, name: str, size: int, *, autocommit: bool) -> ConnectionPool:
    return ConnectionPool(
        dsn.get_secret_value(),
        min_size=1,
        max_size=size,
        kwargs={"autocommit": autocommit},
        name=name,
        open=True,
    )


class TrafficRouter:
    """``dsns``: the read connection per color; ``write_dsns``: the write connection per
    color (the application's role), None for a read-only client. ``domain``: what
    ``read(key)`` reads (None: connections only); ``shadow``: the shadowed reads'
    settings, ``shadow_ratio`` overriding their ratio; ``metrics``: their counters."""

    def __init__(
        self,
        control_dsn: SecretStr,
        dsns: dict[str, SecretStr],
        *,
        write_dsns: dict[str, SecretStr] | None = None,
        poll_interval_s: float = 1.0,
        pool_size: int = 4,
        hold_grace_s: float = 0.5,
        on_switch: Callable[[Switch], None] | None = None,
        domain: Domain | None = None,
        shadow: ShadowSettings | None = None,
        shadow_ratio: float | None = None,
        metrics: ShadowMetrics | None = None,
    ) -> None:
        self._control_dsn = control_dsn
        self._poll_interval_s = poll_interval_s
        self._on_switch = on_switch
        self._log = get_logger(component="traffic-router")
        self._pools = {
            c: _pool(d, f"reads-{c}", pool_size, autocommit=True) for c, d in dsns.items()
        }
        self._write_pools = {
            c: _pool(d, f"writes-{c}", pool_size, autocommit=False)
            for c, d in (write_dsns or {}).items()
        }
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.client_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._reported: tuple[int, bool] | None = None
        # A write client heartbeats at least every HEARTBEAT_S: the switch counts one
        # silent for longer than write_switch.LIVE_WITHIN_S (3 s) as gone.
        self._idle_wait_s = min(poll_interval_s, HEARTBEAT_S) if write_dsns else poll_interval_s
        self._reported_at = 0.0
        (self.color, self.epoch), route = self._read_router()
        self.switches: list[Switch] = [Switch(self.color, self.epoch, time.time(), "start")]
        self.write_switches: list[Switch] = [Switch(route.color, route.epoch, time.time(), "start")]
        self.writes = WriteGate(route, grace_s=hold_grace_s)
        self._domain = domain
        self.shadow: ShadowReads | None = None
        if domain is not None:
            self.shadow = ShadowReads(
                domain,
                dsns,
                control_dsn,
                self.client_id,
                shadow or ShadowSettings(),
                ratio=shadow_ratio,
                metrics=metrics,
            )
        self._thread = threading.Thread(target=self._listen, name="traffic-router", daemon=True)
        self._thread.start()

    @property
    def write_color(self) -> str:
        return self.writes.route.color

    @property
    def hold_stats(self) -> HoldStats:
        return self.writes.stats

    def _read_router(self) -> tuple[tuple[str, int], WriteRoute]:
        with psycopg.connect(self._control_dsn.get_secret_value(), autocommit=True) as conn:
            position = control.router_position(conn)
            route = control.write_route(conn)
        if position is None or route is None:
            raise BluegreenError("the router record is missing in the control database")
        return position, route

    def _learn(self, color: str, epoch: int, via: str) -> None:
        with self._lock:
            if epoch <= self.epoch:
                return
            self.color, self.epoch = color, epoch
            switch = Switch(color, epoch, time.time(), via)
            self.switches.append(switch)
        self._log.info("reads switched", color=color, epoch=epoch, via=via)
        if self._on_switch is not None:
            self._on_switch(switch)

    def _learn_writes(self, route: WriteRoute, via: str) -> None:
        if self.writes.learn(route):
            with self._lock:
                self.write_switches.append(Switch(route.color, route.epoch, time.time(), via))
            self._log.info(
                "writes route", color=route.color, epoch=route.epoch, paused=route.paused, via=via
            )

    def _poll(self, conn: psycopg.Connection) -> None:
        position = control.router_position(conn)
        if position is not None:
            self._learn(*position, "poll")
        route = control.write_route(conn)
        if route is not None:
            self._learn_writes(route, "poll")

    def _notice(self, channel: str, payload: str) -> None:
        if channel == control.WRITES_CHANNEL:
            self._learn_writes(control.parse_write_notice(payload), "notify")
        else:
            self._learn(*control.parse_router_notice(payload), "notify")

    def _report(self, conn: psycopg.Connection) -> None:
        """Tell the switch which write epoch this client acts on and whether its writes
        on a paused owner have ended (on a change at once, else as a heartbeat)."""
        if not self._write_pools:
            return
        route = self.writes.route
        state = (route.epoch, not route.paused or self.writes.inflight(route.color) == 0)
        now = time.monotonic()
        if state == self._reported and now - self._reported_at < self._idle_wait_s / 2:
            return
        control.report_client(conn, self.client_id, *state)
        self._reported, self._reported_at = state, now

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._control_dsn.get_secret_value(), autocommit=True) as conn:
                    control.listen_router(conn)
                    control.listen_writes(conn)
                    self._poll(conn)  # anything missed while not listening
                    polled = time.monotonic()
                    while not self._stop.is_set():
                        # While writes are paused, report the moment this client's writes
                        # on the old owner have ended: the switch waits for it.
                        paused = self.writes.route.paused
                        timeout = 0.005 if paused else self._idle_wait_s
                        for note in conn.notifies(timeout=timeout, stop_after=1):
                            self._notice(note.channel, note.payload)
                        if time.monotonic() - polled >= (0.0 if not paused else 0.2):
                            self._poll(conn)
                            polled = time.monotonic()
                        self._report(conn)
            except psycopg.Error as exc:
                self._log.warning("router listener reconnecting", error=str(exc).strip()[:200])
                self._reported = None
                self._stop.wait(self._poll_interval_s)

    @contextmanager
    def connection(
        self, role: Literal["read", "write"] = "read"
    ) -> Iterator[tuple[str, psycopg.Connection]]:
        """(color, connection) for one read, or one write transaction (committed when the
        block ends, rolled back if it raises); the color is fixed for its duration."""
        if role == "read":
            color = self.color
            with self._pools[color].connection() as conn:
                yield color, conn
            return
        if not self._write_pools:
            raise BluegreenError("this router has no write connections (write_dsns)")
        color, _held = self.writes.enter()
        try:
            with self._write_pools[color].connection() as conn:
                yield color, conn
        finally:
            self.writes.leave(color)

    def read(self, key: str) -> tuple[str, Answer]:
        """(color, rows by table) of the aggregate `key` (the catalog's SKU) on the color
        serving reads. A sample of these reads is shadowed: offered to the comparer's
        bounded queue without waiting; the answer returned is always this color's own."""
        if self._domain is None:
            raise BluegreenError("read(key) needs a router built with a domain")
        with self.connection() as (color, conn):
            answer = read_aggregate(conn, self._domain, color, key)
        if self.shadow is not None:
            self.shadow.offer(key, color, answer)
        return color, answer

    def close(self) -> None:
        if self.shadow is not None:
            self.shadow.close()
        self._stop.set()
        self._thread.join(self._poll_interval_s + 2)
        if self._write_pools:
            try:
                with psycopg.connect(self._control_dsn.get_secret_value(), autocommit=True) as c:
                    control.forget_client(c, self.client_id)
            except psycopg.Error as exc:  # its heartbeat ages out anyway
                self._log.warning("router could not unregister", error=str(exc).strip()[:200])
        for pool in [*self._pools.values(), *self._write_pools.values()]:
            pool.close()


# What applications constructed before writes could move; reads work exactly as before.
ReadRouter = TrafficRouter
