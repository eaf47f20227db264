"""The legacy application at its most awkward: an adversarial but valid write load on blue.

Every row written is one the transform accepts (the channel's currency, the type's
channel suffix, the channel's own size key, a non-empty name, a price that fits
numeric(12,2), stock NULL or >= 0), so a dead letter always means a defect, never the
load. What it does, from a seeded RNG:

* a deck of scenario operations, every kind once per deck, shuffled (so each kind
  happens early and often): delete and re-insert of one (sku, channel) in one
  transaction and across two, rows moved to a new SKU, to an existing SKU that lacks
  the row's channel and to another channel, the US row deleted where GB exists, every
  channel of a SKU deleted at once and one by one, 7-12 KB descriptions followed by
  price-only updates (TOAST), unicode names, the largest price, NULL stock, primary key
  changes, new products, and plain price/stock updates and renames;
* hot-key bursts from a second connection: ~190 single-row updates per second on one
  SKU for a few seconds, every few seconds;
* one large transaction (20,000 rows by default) at a set moment.

Both connections ride through blue restarts (reconnect, go on); an operation counts
only once its last transaction committed. The `benign` profile keeps only the demo's
kind of traffic (price and stock updates, new products, deletes) for control runs.
"""

from __future__ import annotations

import threading
import time

from pydantic import SecretStr

from bluegreen.app.chaos.load_common import LoadOptions, LoadStats
from bluegreen.app.chaos.load_hot import HotKey
from bluegreen.app.chaos.load_scenario import Scenario

__all__ = [
    "ADVERSARIAL_DECK",
    "BENIGN_DECK",
    "REQUIRED_OPS",
    "BlueLoad",
    "LoadOptions",
    "LoadStats",
]

# The deck: how many of each operation one shuffled round holds.
ADVERSARIAL_DECK = {
    "price_stock_update": 6,
    "rename": 2,
    "insert_product": 3,
    "pk_change": 1,
    "delete_reinsert_same_tx": 2,
    "delete_reinsert_across_tx": 2,
    "move_to_new_sku": 2,
    "move_to_existing_sku": 2,
    "move_to_other_channel": 2,
    "delete_us_keep_gb": 1,
    "delete_sku_at_once": 1,
    "delete_sku_one_by_one": 1,
    "toast_description": 1,
    "unicode_name": 1,
    "max_price": 1,
    "null_stock": 1,
}
BENIGN_DECK = {"price_stock_update": 15, "insert_product": 3, "delete_row": 2}
# What a run's table must show happened (the adversarial profile).
REQUIRED_OPS = (
    *(op for op in ADVERSARIAL_DECK if op not in {"price_stock_update", "rename"}),
    "toast_price_only",
    "hot_key_update",
    "big_transaction",
)


class BlueLoad:
    """The scenario thread and the hot-key thread, sharing one stop flag and one tally."""

    def __init__(self, dsn: SecretStr, seed: int, options: LoadOptions) -> None:
        self.stop = threading.Event()
        self.stats = LoadStats()
        self.options = options
        deck = ADVERSARIAL_DECK if options.profile == "adversarial" else BENIGN_DECK
        self._scenario = Scenario(
            dsn, seed=seed, options=options, deck=deck, stop=self.stop, stats=self.stats
        )
        self._threads = [
            threading.Thread(target=self._scenario.run, name="chaos-load", daemon=True)
        ]
        if options.profile == "adversarial":
            hot = HotKey(dsn, seed, options.hot_rate, self.stop, self.stats)
            self._threads.append(threading.Thread(target=hot.run, name="chaos-hot", daemon=True))

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def finish(self, timeout_s: float = 60.0) -> None:
        """Stop writing; wait (bounded) for the transactions in flight."""
        self.stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))

    @property
    def alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def missing_ops(self) -> list[str]:
        if self.options.profile != "adversarial":
            return []
        required = [op for op in REQUIRED_OPS if op != "big_transaction" or self.options.big_rows]
        return [op for op in required if not self.stats.ops.get(op)]
