"""The scenario writer: a shuffled deck of operations, every kind once per round, paced
at ``ops_per_s``, and the one large transaction at its set moment."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import psycopg
from pydantic import SecretStr

from bluegreen.app.chaos.load_common import LoadOptions, LoadStats, Session
from bluegreen.app.chaos.load_ops import OPS
from bluegreen.core.logs import get_logger


class Scenario:
    """The deck of scenario operations, paced at `ops_per_s`, and the large transaction."""

    def __init__(
        self,
        dsn: SecretStr,
        *,
        seed: int,
        options: LoadOptions,
        deck: dict[str, int],
        stop: threading.Event,
        stats: LoadStats,
    ) -> None:
        self.rng = random.Random(f"scenario-{seed}")  # noqa: S311 - load generation
        self._options = options
        self._deck = [op for op, copies in deck.items() for _ in range(copies)]
        self.stop = stop
        self.stats = stats
        self._session = Session(dsn, stop, stats)
        self._new = 0
        self._log = get_logger(component="chaos-load")

    def run(self) -> None:
        started = time.monotonic()
        big_pending = self._options.profile == "adversarial" and self._options.big_rows > 0
        done = 0
        try:
            while not self.stop.is_set():
                hand = list(self._deck)
                self.rng.shuffle(hand)
                for op in hand:
                    if self.stop.is_set():
                        break
                    if big_pending and time.monotonic() - started >= self._options.big_at_s:
                        big_pending = not self._big_transaction()
                    OPS[op](self)
                    done += 1
                    ahead = done / self._options.ops_per_s - (time.monotonic() - started)
                    if ahead > 0:
                        self.stop.wait(ahead)
        except Exception as exc:
            self._log.exception("the load stopped", error=str(exc))
            raise
        finally:
            self._session.close()

    # -- helpers --------------------------------------------------------------------------------

    def tx(self, op: str | None, work: Callable[[psycopg.Connection], int | None]) -> bool:
        """One transaction; counts `op` (with the rows `work` returns) once it committed."""
        rows: list[int] = []

        def wrapped(conn: psycopg.Connection) -> None:
            rows.append(work(conn) or 1)

        committed = self._session.transaction(wrapped)
        if committed and op is not None:
            self.stats.count(op, rows[0])
        return committed

    def new_sku(self, prefix: str) -> str:
        self._new += 1
        return f"{prefix}-{self._new:07d}"

    def _big_transaction(self) -> bool:
        rows = self._options.big_rows
        self._log.debug("large transaction", rows=rows)

        def work(conn: psycopg.Connection) -> int:
            top = conn.execute("SELECT count(*) FROM legacy_product").fetchone()
            offset = self.rng.randint(0, max(0, int(top[0] if top else 0) - rows))
            return conn.execute(
                "UPDATE legacy_product SET "
                "price = CASE WHEN price < 1000000 THEN price + 0.01 ELSE 0.99 END, "
                "stock = stock + 1, updated_at = now() "
                "WHERE id IN (SELECT id FROM legacy_product ORDER BY id LIMIT %s OFFSET %s)",
                (rows, offset),
            ).rowcount

        return self.tx("big_transaction", work)
