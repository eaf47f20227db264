"""How the catalog's listing operations are applied to green, in SQL.

The consumer stages a batch's operations with one binary COPY, then:

1. upserts ``sync.listing_record`` with the version guard: per key only the
   newest operation of the batch, and only if it is newer than what green holds;
   a delete writes a versioned tombstone; the records that changed go on, in the
   same statement, into ``catalog.channel_listing`` (upserted, or deleted for a
   tombstone);
2. derives ``catalog.product`` for the SKUs whose records changed from their live
   records (primary channel first, as ``derive_product`` does in Python), and
   deletes a product with no live record left.

A replayed or older batch changes no record, so it derives nothing.

All statements run in the batch's one transaction.
"""

from __future__ import annotations

import json
from typing import Any

from schemas.catalog.transform import CHANNEL_RANK, ListingOp, ListingUpsert

STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS stage_listing (
    sku varchar(32) NOT NULL,
    channel varchar(2) NOT NULL,
    deleted boolean NOT NULL,
    blue_id bigint,
    product_type varchar(80),
    name varchar(255),
    description text,
    attributes jsonb,
    price numeric(12, 2),
    currency varchar(3),
    stock integer,
    published boolean,
    created_at timestamptz,
    updated_at timestamptz,
    src_lsn bigint NOT NULL,
    src_seq integer NOT NULL,
    kafka_partition integer NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS touched_sku (sku varchar(32) PRIMARY KEY) ON COMMIT DELETE ROWS;
"""

STAGE_COLUMNS = (
    "sku",
    "channel",
    "deleted",
    "blue_id",
    "product_type",
    "name",
    "description",
    "attributes",
    "price",
    "currency",
    "stock",
    "published",
    "created_at",
    "updated_at",
    "src_lsn",
    "src_seq",
    "kafka_partition",
)
STAGE_TYPES = [
    "varchar",
    "varchar",
    "bool",
    "int8",
    "varchar",
    "varchar",
    "text",
    "jsonb",
    "numeric",
    "varchar",
    "int4",
    "bool",
    "timestamptz",
    "timestamptz",
    "int8",
    "int4",
    "int4",
]
COPY_STAGE = f"COPY stage_listing ({', '.join(STAGE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

_PAYLOAD = (
    "blue_id",
    "product_type",
    "name",
    "description",
    "attributes",
    "price",
    "currency",
    "stock",
    "published",
    "created_at",
    "updated_at",
)


# Built once: json.dumps with options makes a new encoder on every call.
_to_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def stage_row(op: ListingOp, partition: int) -> tuple[Any, ...]:
    """One staged row; the attributes travel as JSON text (jsonb)."""
    if isinstance(op, ListingUpsert):
        return (
            op.sku,
            op.channel,
            False,
            op.blue_id,
            op.product_type,
            op.name,
            op.description,
            _to_json(op.attributes),
            op.price,
            op.currency,
            op.stock,
            op.published,
            op.created_at,
            op.updated_at,
            op.version.lsn,
            op.version.seq,
            partition,
        )
    tombstone = [None] * len(_PAYLOAD)
    return (op.sku, op.channel, True, *tombstone, op.version.lsn, op.version.seq, partition)


_PRODUCT = (
    "product_type",
    "name",
    "description",
    "attributes",
    "primary_channel",
    "created_at",
    "updated_at",
    "src_lsn",
    "src_seq",
)


def _product_columns(alias: str) -> str:
    return ", ".join(f"{alias}.{column}" for column in _PRODUCT)


_RANK_SQL = (
    "CASE r.channel "
    + " ".join(f"WHEN '{channel}' THEN {rank}" for channel, rank in CHANNEL_RANK.items())
    + " END"
)

# One statement: the newest operation per key wins the version guard into
# sync.listing_record; the records that changed flow on (RETURNING) into
# catalog.channel_listing, and their SKUs into touched_sku for the product derivation.
APPLY_RECORDS = f"""
WITH winners AS (
    SELECT DISTINCT ON (sku, channel) *
    FROM stage_listing
    ORDER BY sku, channel, src_lsn DESC, src_seq DESC
), changed AS (
    INSERT INTO sync.listing_record AS r (sku, channel, deleted, {", ".join(_PAYLOAD)},
                                          src_lsn, src_seq, kafka_partition)
    SELECT sku, channel, deleted, {", ".join(_PAYLOAD)}, src_lsn, src_seq, kafka_partition
    FROM winners
    ON CONFLICT (sku, channel) DO UPDATE SET
        deleted = EXCLUDED.deleted,
        {", ".join(f"{c} = EXCLUDED.{c}" for c in _PAYLOAD)},
        src_lsn = EXCLUDED.src_lsn,
        src_seq = EXCLUDED.src_seq,
        kafka_partition = EXCLUDED.kafka_partition
    WHERE (r.src_lsn, r.src_seq) < (EXCLUDED.src_lsn, EXCLUDED.src_seq)
    RETURNING r.sku, r.channel, r.deleted, r.price, r.currency, r.stock, r.published,
              r.created_at, r.updated_at, r.src_lsn, r.src_seq
), unlisted AS (
    DELETE FROM catalog.channel_listing l
    WHERE (l.sku, l.channel) IN (SELECT sku, channel FROM changed WHERE deleted)
), listed AS (
    INSERT INTO catalog.channel_listing AS l (sku, channel, price, currency, stock, published,
                                              created_at, updated_at, src_lsn, src_seq)
    SELECT sku, channel, price, currency, stock, published, created_at, updated_at,
           src_lsn, src_seq
    FROM changed WHERE NOT deleted
    ON CONFLICT (sku, channel) DO UPDATE SET
        price = EXCLUDED.price, currency = EXCLUDED.currency, stock = EXCLUDED.stock,
        published = EXCLUDED.published, created_at = EXCLUDED.created_at,
        updated_at = EXCLUDED.updated_at, src_lsn = EXCLUDED.src_lsn, src_seq = EXCLUDED.src_seq
)
INSERT INTO touched_sku SELECT DISTINCT sku FROM changed ON CONFLICT DO NOTHING
"""

# The listings of the touched SKUs again, from their records (after a TRUNCATE).
RELIST = (
    """
    DELETE FROM catalog.channel_listing l
    WHERE (l.sku, l.channel) IN (
        SELECT r.sku, r.channel FROM touched_sku t
        CROSS JOIN LATERAL (
            SELECT sku, channel FROM sync.listing_record r WHERE r.sku = t.sku AND r.deleted
        ) r)
    """,
)

# Statements deriving catalog.product for the SKUs in touched_sku, in order.
DERIVE_PRODUCTS = (
    f"""
    INSERT INTO catalog.product AS p (sku, product_type, name, description, attributes,
                                      primary_channel, created_at, updated_at, src_lsn, src_seq)
    SELECT DISTINCT ON (r.sku) r.sku, r.product_type, r.name, r.description, r.attributes,
           r.channel, min(r.created_at) OVER w, max(r.updated_at) OVER w,
           first_value(r.src_lsn) OVER newest, first_value(r.src_seq) OVER newest
    FROM touched_sku t
    -- An index lookup per touched SKU (OFFSET 0 keeps the planner from flattening the
    -- LATERAL into a hash join over the whole of listing_record, whose cost grows with it)
    CROSS JOIN LATERAL (
        SELECT * FROM sync.listing_record r WHERE r.sku = t.sku AND NOT r.deleted OFFSET 0
    ) r
    WINDOW w AS (PARTITION BY r.sku),
           newest AS (PARTITION BY r.sku ORDER BY r.src_lsn DESC, r.src_seq DESC)
    ORDER BY r.sku, {_RANK_SQL}
    ON CONFLICT (sku) DO UPDATE SET
        product_type = EXCLUDED.product_type, name = EXCLUDED.name,
        description = EXCLUDED.description, attributes = EXCLUDED.attributes,
        primary_channel = EXCLUDED.primary_channel, created_at = EXCLUDED.created_at,
        updated_at = EXCLUDED.updated_at, src_lsn = EXCLUDED.src_lsn, src_seq = EXCLUDED.src_seq
    WHERE ({_product_columns("p")}) IS DISTINCT FROM ({_product_columns("EXCLUDED")})
    """,
    # A product whose last live listing went goes too.
    """
    DELETE FROM catalog.product p
    WHERE p.sku IN (
        SELECT t.sku FROM touched_sku t
        WHERE NOT EXISTS (
            SELECT 1 FROM sync.listing_record r WHERE r.sku = t.sku AND NOT r.deleted))
    """,
)

# A TRUNCATE of blue seen on one partition at version (%(lsn)s, %(seq)s): every record of
# that partition older than it becomes a tombstone at that version.
TRUNCATE_PARTITION = f"""
WITH gone AS (
    UPDATE sync.listing_record SET deleted = true,
        {", ".join(f"{c} = NULL" for c in _PAYLOAD)},
        src_lsn = %(lsn)s, src_seq = %(seq)s
    WHERE kafka_partition = %(partition)s AND (src_lsn, src_seq) < (%(lsn)s, %(seq)s)
    RETURNING sku
)
INSERT INTO touched_sku SELECT DISTINCT sku FROM gone ON CONFLICT DO NOTHING
"""
