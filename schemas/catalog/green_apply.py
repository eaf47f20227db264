"""How the catalog's listing operations are applied to green, in SQL.

The consumer stages a batch's operations with one binary COPY (the staged row is
declared in ``staged.py``), then:

1. upserts ``sync.listing_record`` with the version guard: per key only the
   newest operation of the batch, and only if it is newer than what green holds;
   a delete writes a versioned tombstone; the records that changed go on, in the
   same statement, into ``catalog.channel_listing`` (upserted, or deleted for a
   tombstone);
2. derives ``catalog.product`` for the SKUs whose records changed from their live
   records (primary channel first, as ``derive_product`` does in Python), and
   deletes a product with no live record left.

A replayed or older batch changes no record, so it derives nothing.

All statements run in the batch's one transaction. Column lists come from their one
declaration: the staged row's payload from ``STAGE``, green's listing and product
columns from the transform's ``Listing`` and ``Product``; statements are composed
with ``psycopg.sql`` (identifiers quoted, the channel ranks as literals).
"""

from __future__ import annotations

from dataclasses import fields

from psycopg import sql

from schemas.catalog.staged import STAGE
from schemas.catalog.transform import CHANNEL_RANK, Listing, Product
from schemas.domain import ApplySql

_VERSION = ("src_lsn", "src_seq")
_KEY = STAGE.key  # (sku, channel)
_PAYLOAD = STAGE.payload
_LISTING = tuple(f.name for f in fields(Listing))
_PRODUCT = tuple(f.name for f in fields(Product))


def _names(names: tuple[str, ...], alias: str | None = None) -> sql.Composed:
    """`a, b, c`, or `x.a, x.b, x.c` with an alias."""
    prefix = (alias,) if alias else ()
    return sql.SQL(", ").join(sql.Identifier(*prefix, n) for n in names)


def _set_excluded(names: tuple[str, ...]) -> sql.Composed:
    """`a = EXCLUDED.a, ...`: the update of an upsert."""
    return sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(n), sql.Identifier("excluded", n)) for n in names
    )


def _not_key(names: tuple[str, ...], key: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n for n in names if n not in key)


TOUCHED_DDL = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS touched_sku (sku varchar(32) PRIMARY KEY) "
    "ON COMMIT DELETE ROWS"
)
CLEAR = sql.SQL("TRUNCATE {}, touched_sku").format(sql.Identifier(STAGE.name))

# One statement: the newest operation per key wins the version guard into
# sync.listing_record; the records that changed flow on (RETURNING) into
# catalog.channel_listing, and their SKUs into touched_sku for the product derivation.
APPLY_RECORDS = sql.SQL("""
WITH winners AS (
    SELECT DISTINCT ON (sku, channel) *
    FROM {stage}
    ORDER BY sku, channel, src_lsn DESC, src_seq DESC
), changed AS (
    INSERT INTO sync.listing_record AS r (sku, channel, deleted, {payload},
                                          src_lsn, src_seq, kafka_partition)
    SELECT sku, channel, deleted, {payload}, src_lsn, src_seq, kafka_partition
    FROM winners
    ON CONFLICT (sku, channel) DO UPDATE SET
        deleted = EXCLUDED.deleted,
        {set_payload},
        src_lsn = EXCLUDED.src_lsn,
        src_seq = EXCLUDED.src_seq,
        kafka_partition = EXCLUDED.kafka_partition
    WHERE (r.src_lsn, r.src_seq) < (EXCLUDED.src_lsn, EXCLUDED.src_seq)
    RETURNING r.deleted, {returning}
), unlisted AS (
    DELETE FROM catalog.channel_listing l
    WHERE (l.sku, l.channel) IN (SELECT sku, channel FROM changed WHERE deleted)
), listed AS (
    INSERT INTO catalog.channel_listing AS l ({listing})
    SELECT {listing} FROM changed WHERE NOT deleted
    ON CONFLICT (sku, channel) DO UPDATE SET {set_listing}
)
INSERT INTO touched_sku SELECT DISTINCT sku FROM changed ON CONFLICT DO NOTHING
""").format(
    stage=sql.Identifier(STAGE.name),
    payload=_names(_PAYLOAD),
    set_payload=_set_excluded(_PAYLOAD),
    returning=_names((*_LISTING, *_VERSION), "r"),
    listing=_names((*_LISTING, *_VERSION)),
    set_listing=_set_excluded(_not_key((*_LISTING, *_VERSION), _KEY)),
)

# The listings of the touched SKUs again, from their records (after a TRUNCATE).
RELIST = sql.SQL("""
DELETE FROM catalog.channel_listing l
WHERE (l.sku, l.channel) IN (
    SELECT r.sku, r.channel FROM touched_sku t
    CROSS JOIN LATERAL (
        SELECT sku, channel FROM sync.listing_record r WHERE r.sku = t.sku AND r.deleted
    ) r)
""")

_RANK = sql.SQL("CASE r.channel {} END").format(
    sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(sql.Literal(channel), sql.Literal(rank))
        for channel, rank in CHANNEL_RANK.items()
    )
)
_PRODUCT_VERSIONED = (*_not_key(_PRODUCT, ("sku",)), *_VERSION)

# Statements deriving catalog.product for the SKUs in touched_sku, in order.
DERIVE_PRODUCTS = (
    sql.SQL("""
    INSERT INTO catalog.product AS p ({columns})
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
    ORDER BY r.sku, {rank}
    ON CONFLICT (sku) DO UPDATE SET {set_product}
    WHERE ({current}) IS DISTINCT FROM ({incoming})
    """).format(
        columns=_names((*_PRODUCT, *_VERSION)),
        rank=_RANK,
        set_product=_set_excluded(_PRODUCT_VERSIONED),
        current=_names(_PRODUCT_VERSIONED, "p"),
        incoming=_names(_PRODUCT_VERSIONED, "excluded"),
    ),
    # A product whose last live listing went goes too.
    sql.SQL("""
    DELETE FROM catalog.product p
    WHERE p.sku IN (
        SELECT t.sku FROM touched_sku t
        WHERE NOT EXISTS (
            SELECT 1 FROM sync.listing_record r WHERE r.sku = t.sku AND NOT r.deleted))
    """),
)

# A TRUNCATE of blue seen on one partition at version (%(lsn)s, %(seq)s): every record of
# that partition older than it becomes a tombstone at that version.
TRUNCATE_PARTITION = sql.SQL("""
WITH gone AS (
    UPDATE sync.listing_record SET deleted = true, {nulls},
        src_lsn = %(lsn)s, src_seq = %(seq)s
    WHERE kafka_partition = %(partition)s AND (src_lsn, src_seq) < (%(lsn)s, %(seq)s)
    RETURNING sku
)
INSERT INTO touched_sku SELECT DISTINCT sku FROM gone ON CONFLICT DO NOTHING
""").format(
    nulls=sql.SQL(", ").join(sql.SQL("{} = NULL").format(sql.Identifier(c)) for c in _PAYLOAD)
)

APPLY = ApplySql(
    setup=(TOUCHED_DDL,),
    apply=(APPLY_RECORDS, *DERIVE_PRODUCTS),
    clear=CLEAR,
    truncate=TRUNCATE_PARTITION,
    after_truncate=(RELIST, *DERIVE_PRODUCTS),
)
