"""The read router client: what an application uses to get its read connection.

It knows which color serves reads from the control database's router record and
learns of a switch at once through LISTEN/NOTIFY, with polling as a fallback (a
lost notification, a reconnect). Reads in flight on the old color finish there;
the next read goes to the new one. Writes always go to blue.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg_pool import ConnectionPool
from pydantic import SecretStr

from bluegreen import control
from bluegreen.core.logs import get_logger


@dataclass(frozen=True)
class Switch:
    color: str
    epoch: int
    seen_at: float  # time.time() when this client learned of it
    via: str  # notify | poll | start


class ReadRouter:
    def __init__(
        self,
        control_dsn: SecretStr,
        dsns: dict[str, SecretStr],
        *,
        poll_interval_s: float = 1.0,
        pool_size: int = 4,
        on_switch: Callable[[Switch], None] | None = None,
    ) -> None:
        self._control_dsn = control_dsn
        self._poll_interval_s = poll_interval_s
        self._on_switch = on_switch
        self._log = get_logger(component="read-router")
        self._pools = {
            color: ConnectionPool(
                dsn.get_secret_value(),
                min_size=1,
                max_size=pool_size,
                kwargs={"autocommit": True},
                name=f"reads-{color}",
                open=True,
            )
            for color, dsn in dsns.items()
        }
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.color, self.epoch = self._read_router()
        self.switches: list[Switch] = [Switch(self.color, self.epoch, time.time(), "start")]
        self._thread = threading.Thread(target=self._listen, name="read-router", daemon=True)
        self._thread.start()

    def _read_router(self) -> tuple[str, int]:
        with psycopg.connect(self._control_dsn.get_secret_value(), autocommit=True) as conn:
            position = control.router_position(conn)
        if position is None:
            raise RuntimeError("the read router record is missing in the control database")
        return position

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

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._control_dsn.get_secret_value(), autocommit=True) as conn:
                    control.listen_router(conn)
                    color, epoch = self._read_router()  # anything missed while not listening
                    self._learn(color, epoch, "poll")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=self._poll_interval_s, stop_after=1):
                            self._learn(*control.parse_router_notice(note.payload), "notify")
                        position = control.router_position(conn)
                        if position is not None:
                            self._learn(*position, "poll")
            except psycopg.Error as exc:
                self._log.warning("router listener reconnecting", error=str(exc).strip()[:200])
                self._stop.wait(self._poll_interval_s)

    @contextmanager
    def connection(self) -> Iterator[tuple[str, psycopg.Connection]]:
        """(color, connection) for one read; the color is fixed for the read's duration."""
        color = self.color
        with self._pools[color].connection() as conn:
            yield color, conn

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self._poll_interval_s + 2)
        for pool in self._pools.values():
            pool.close()
