"""Did green converge? Judged without trusting the code under test.

* ``state_differences``: blue's final rows, through the pure transform
  (``schemas.catalog.transform``), against what applications read in green
  (``catalog.product`` and ``catalog.channel_listing``), product by product and
  listing by listing. It shares no SQL with the apply path and does not look at the
  sync tables or versions.
* ``verify_report``: the operator's `bluegreen verify` (``cutover.verify``), a second,
  independently written comparison.
* ``offsets``: once drained, per partition, the consumer group's committed offset,
  green's ``sync.apply_position.next_offset`` and the topic's high watermark must be
  one number (lag 0, and nothing committed that green does not hold).
* ``evidence``: for differing SKUs, blue's rows, green's product, listings and
  ``sync.listing_record`` rows, and the Kafka messages that carried the SKU.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition
from psycopg import sql
from psycopg.rows import dict_row

from bluegreen.core import db
from bluegreen.core.config import KafkaSettings, Settings
from bluegreen.core.errors import SerializationError, TransformError
from bluegreen.core.kafka import make_consumer
from cutover.verify import verify
from schemas.catalog import CATALOG
from schemas.catalog.blue import COLUMNS
from schemas.catalog.transform import GreenState, Listing, Product, green_state, listing_upsert
from schemas.codec import default_codec
from schemas.envelope import Version

_PRODUCT_FIELDS = tuple(f.name for f in fields(Product))
_LISTING_FIELDS = tuple(f.name for f in fields(Listing))
_EVIDENCE_SKUS = 50
_MESSAGES_PER_SKU = 200


@dataclass(frozen=True)
class Difference:
    sku: str
    table: str  # product | channel_listing | legacy_product
    channel: str | None
    kind: str  # missing | extra | different | unmappable
    fields: tuple[str, ...] = ()
    expected: str = ""
    actual: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- green == transform(blue) ----------------------------------------------------------------------


def blue_rows(dsn: Any) -> list[dict[str, Any]]:
    with db.connect(dsn) as conn:
        cur = conn.cursor(row_factory=dict_row)
        return list(cur.execute(_select(COLUMNS, "legacy_product")))


def _select(columns: Sequence[str], *table: str) -> sql.Composed:
    """SELECT columns FROM table, every name quoted (table: [schema,] name)."""
    return sql.SQL("SELECT {columns} FROM {table}").format(
        columns=sql.SQL(", ").join(map(sql.Identifier, columns)),
        table=sql.Identifier(*table),
    )


def expected_state(rows: list[dict[str, Any]]) -> tuple[GreenState, list[Difference]]:
    """transform(blue), and the rows the transform refuses (the load must write none)."""
    live = []
    refused = []
    for row in rows:
        try:
            live.append(listing_upsert(row, Version(0, 0)))
        except TransformError as exc:
            refused.append(
                Difference(row["sku"], "legacy_product", row["channel"], "unmappable", (), str(exc))
            )
    return green_state(live), refused


def green_rows(dsn: Any) -> GreenState:
    products: dict[str, Product] = {}
    listings: dict[tuple[str, str], Listing] = {}
    with db.connect(dsn, autocommit=True) as conn:
        try:
            for row in conn.execute(_select(_PRODUCT_FIELDS, "catalog", "product")):
                products[row[0]] = Product(*row)
            for row in conn.execute(_select(_LISTING_FIELDS, "catalog", "channel_listing")):
                listings[(row[0], row[1])] = Listing(*row)
        except psycopg.errors.UndefinedTable:
            pass  # no consumer created green's tables yet: green is empty
    return GreenState(products, listings)


def compare(expected: GreenState, actual: GreenState) -> list[Difference]:
    found: list[Difference] = []
    for sku in sorted(expected.products.keys() | actual.products.keys()):
        found += _differ(sku, "product", None, expected.products.get(sku), actual.products.get(sku))
    for key in sorted(expected.listings.keys() | actual.listings.keys()):
        found += _differ(
            key[0], "channel_listing", key[1], expected.listings.get(key), actual.listings.get(key)
        )
    return found


def _differ(
    sku: str, table: str, channel: str | None, expected: Any | None, actual: Any | None
) -> list[Difference]:
    if expected == actual:
        return []
    if actual is None:
        return [Difference(sku, table, channel, "missing", (), _brief(expected))]
    if expected is None:
        return [Difference(sku, table, channel, "extra", (), "", _brief(actual))]
    names = tuple(
        f.name for f in fields(expected) if getattr(expected, f.name) != getattr(actual, f.name)
    )
    return [
        Difference(
            sku,
            table,
            channel,
            "different",
            names,
            _brief({n: getattr(expected, n) for n in names}),
            _brief({n: getattr(actual, n) for n in names}),
        )
    ]


def _brief(value: Any, limit: int = 400) -> str:
    text = repr(asdict(value) if hasattr(value, "__dataclass_fields__") else value)
    return text if len(text) <= limit else text[:limit] + "…"


def state_differences(settings: Settings) -> list[Difference]:
    expected, refused = expected_state(blue_rows(settings.blue_dsn))
    return refused + compare(expected, green_rows(settings.green_dsn))


def verify_report(settings: Settings) -> tuple[int, list[dict[str, Any]]]:
    """`bluegreen verify`'s count of differences (unsettled SKUs included) and a sample."""
    report = verify(settings, CATALOG)
    sample = [asdict(d) for d in report.differences[:20]]
    sample += [{"sku": sku, "kind": "unsettled"} for sku in report.unsettled[:5]]
    return len(report.differences) + len(report.unsettled), sample


# -- offsets ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionOffsets:
    partition: int
    high_watermark: int
    committed: int  # the group's committed offset (0 when none)
    green_next_offset: int  # sync.apply_position.next_offset (0 when none)

    @property
    def drained(self) -> bool:
        return self.high_watermark == self.committed == self.green_next_offset


def offsets(
    settings: Settings, *, attempts: int = 10, pause_s: float = 0.3
) -> list[PartitionOffsets]:
    """Per partition: high watermark, the group's committed offset, green's next offset.

    `bluegreen cdc` broadcasts a heartbeat to every partition every few seconds, so one
    reading can catch the consumer between green's commit and Kafka's. Read until one
    observation is drained (at most `attempts`); a partition reported behind was behind
    in every one of them.
    """
    found: list[PartitionOffsets] = []
    consumer = make_consumer(settings.kafka, settings.consumer.group_id)
    try:
        for attempt in range(attempts):
            if attempt:
                time.sleep(pause_s)
            found = _observe_offsets(settings, consumer)
            if all(p.drained for p in found):
                break
    finally:
        consumer.close()
    return found


def _observe_offsets(settings: Settings, consumer: Any) -> list[PartitionOffsets]:
    kafka = settings.kafka
    partitions = [TopicPartition(kafka.topic, p) for p in range(kafka.partitions)]
    # In the order the pipeline moves them: the topic's end, then green, then Kafka's
    # commit (made after green's), so a reading never shows green ahead of a commit.
    ends = {
        p: consumer.get_watermark_offsets(TopicPartition(kafka.topic, p), timeout=10)[1]
        for p in range(kafka.partitions)
    }
    stored: dict[int, int] = {}
    with (
        db.connect(settings.green_dsn, autocommit=True) as conn,
        contextlib.suppress(psycopg.errors.UndefinedTable),  # no consumer created them yet
    ):
        stored = dict(
            conn.execute(
                "SELECT partition, next_offset FROM sync.apply_position WHERE topic = %s",
                (kafka.topic,),
            ).fetchall()
        )
    committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
    return [
        PartitionOffsets(p, ends[p], max(0, committed.get(p, 0)), int(stored.get(p, 0)))
        for p in range(kafka.partitions)
    ]


def dead_letters(settings: Settings) -> int:
    """Messages ever sent to the dead-letter topic (0 when it does not exist)."""
    kafka = settings.kafka
    consumer = make_consumer(kafka, settings.consumer.group_id)
    try:
        if kafka.dlq_topic not in consumer.list_topics(timeout=10).topics:
            return 0
        total = 0
        for p in range(kafka.partitions):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(kafka.dlq_topic, p), timeout=10
            )
            total += max(0, high - low)
        return total
    except KafkaException:
        return -1
    finally:
        consumer.close()


# -- evidence --------------------------------------------------------------------------------------


def evidence(settings: Settings, skus: list[str]) -> dict[str, Any]:
    """Everything about these SKUs on both sides and in the topic (the first 50 SKUs)."""
    chosen = sorted(set(skus))[:_EVIDENCE_SKUS]
    found: dict[str, Any] = {sku: {} for sku in chosen}
    queries = {
        "blue_rows": (settings.blue_dsn, "SELECT * FROM legacy_product WHERE sku = ANY(%s)"),
        "green_product": (settings.green_dsn, "SELECT * FROM catalog.product WHERE sku = ANY(%s)"),
        "green_listings": (
            settings.green_dsn,
            "SELECT * FROM catalog.channel_listing WHERE sku = ANY(%s)",
        ),
        "sync_listing_record": (
            settings.green_dsn,
            "SELECT * FROM sync.listing_record WHERE sku = ANY(%s)",
        ),
    }
    for part, (dsn, query) in queries.items():
        with db.connect(dsn, autocommit=True) as conn:
            cur = conn.cursor(row_factory=dict_row)
            for row in cur.execute(query, (chosen,)):
                if len(str(row.get("description") or "")) > 80:
                    row["description"] = _brief(row["description"], 80)  # a TOASTed sheet
                found[row["sku"]].setdefault(part, []).append(row)
    try:
        messages = kafka_messages(settings.kafka, settings.consumer.group_id, set(chosen))
    except (KafkaException, SerializationError) as exc:
        messages = {sku: [{"error": str(exc)}] for sku in chosen}
    for sku in chosen:
        found[sku]["kafka_messages"] = messages.get(sku, [])
    return found


def kafka_messages(
    kafka: KafkaSettings, group: str, skus: set[str], timeout_s: float = 60.0
) -> dict[str, list[dict[str, Any]]]:
    """Change messages whose key, before or after image names one of `skus`, in offset order."""
    codec = default_codec()
    consumer = make_consumer(kafka, f"{group}.evidence")
    found: dict[str, list[dict[str, Any]]] = {}
    try:
        ends = {}
        for p in range(kafka.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(kafka.topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(kafka.topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=1.0):
                partition, offset, value = message.partition(), message.offset(), message.value()
                if message.error() is not None or partition is None or offset is None:
                    continue
                if offset + 1 >= ends.get(partition, 0):
                    ends.pop(partition, None)
                if value:
                    _keep(codec.decode(value), message, skus, found)
    finally:
        consumer.close()
    return found


def _keep(event: dict[str, Any], message: Any, skus: set[str], found: dict[str, Any]) -> None:
    key = (message.key() or b"").decode(errors="replace")
    images = [event.get("before"), event.get("after"), event.get("key")]
    named = {key} | {image["sku"] for image in images if image}
    for sku in named & skus:
        kept = found.setdefault(sku, [])
        if len(kept) >= _MESSAGES_PER_SKU:
            continue
        source = event["source"]
        kept.append(
            {
                "partition": message.partition(),
                "offset": message.offset(),
                "key": key,
                "op": event["op"],
                "lsn": source["lsn"],
                "seq": source["seq"],
                "snapshot": source.get("snapshot"),
                "before": _image(event.get("before") or event.get("key")),
                "after": _image(event.get("after")),
            }
        )


def _image(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    keep = ("id", "sku", "channel", "price", "stock", "name", "updated_at")
    return {k: row[k] for k in keep if k in row}
