"""Green: the new catalog, one product per SKU and one listing per channel.

``catalog`` holds what applications read: ``product`` (one unified product type,
unified attributes, the shared name and description) and ``channel_listing``
(price, currency, stock, published per channel). Both carry the source version
they reflect (``src_lsn``, ``src_seq``).

``sync`` holds what the migration needs to apply changes exactly:
``listing_record`` keeps, per (SKU, channel), the newest transformed blue row or
a versioned tombstone, so an older snapshot row or a replayed event can never
win over a newer change or bring a deleted row back. (``sync.apply_position``,
the consumer's positions, is the engine's own table: ``consumers/positions.py``.)
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

CATALOG = "catalog"
SYNC = "sync"
_CHANNEL_CHECK = "channel IN ('US', 'GB', 'EU')"


class GreenBase(DeclarativeBase):
    metadata = MetaData()


class _Versioned:
    src_lsn: Mapped[int] = mapped_column(BigInteger)
    src_seq: Mapped[int] = mapped_column(Integer)


class Product(_Versioned, GreenBase):
    __tablename__ = "product"
    __table_args__ = (
        CheckConstraint("primary_channel IN ('US', 'GB', 'EU')", name="product_channel_check"),
        CheckConstraint("jsonb_typeof(attributes) = 'object'", name="product_attrs_check"),
        Index("product_type_idx", "product_type"),
        {"schema": CATALOG},
    )

    sku: Mapped[str] = mapped_column(String(32), primary_key=True)
    product_type: Mapped[str] = mapped_column(String(80))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB)
    primary_channel: Mapped[str] = mapped_column(String(2))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ChannelListing(_Versioned, GreenBase):
    __tablename__ = "channel_listing"
    __table_args__ = (
        ForeignKeyConstraint(
            ["sku"],
            [f"{CATALOG}.product.sku"],
            name="channel_listing_product_fkey",
            ondelete="CASCADE",
            deferrable=True,
            initially="DEFERRED",
        ),
        CheckConstraint(_CHANNEL_CHECK, name="channel_listing_channel_check"),
        CheckConstraint("price >= 0", name="channel_listing_price_check"),
        CheckConstraint("stock >= 0", name="channel_listing_stock_check"),
        Index("channel_listing_channel_published_idx", "channel", "published"),
        {"schema": CATALOG},
    )

    sku: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(String(2), primary_key=True)
    price: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3))
    stock: Mapped[int] = mapped_column(Integer)
    published: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ListingRecord(_Versioned, GreenBase):
    """The newest transformed blue row per (SKU, channel), or its tombstone."""

    __tablename__ = "listing_record"
    __table_args__ = (
        CheckConstraint(
            "deleted OR (product_type IS NOT NULL AND name IS NOT NULL AND attributes IS NOT NULL"
            " AND price IS NOT NULL AND currency IS NOT NULL AND stock IS NOT NULL"
            " AND published IS NOT NULL AND created_at IS NOT NULL AND updated_at IS NOT NULL)",
            name="listing_record_live_check",
        ),
        {"schema": SYNC},
    )

    sku: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(String(2), primary_key=True)
    deleted: Mapped[bool] = mapped_column(Boolean)
    blue_id: Mapped[int | None] = mapped_column(BigInteger)
    product_type: Mapped[str | None] = mapped_column(String(80))
    name: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    price: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    currency: Mapped[str | None] = mapped_column(String(3))
    stock: Mapped[int | None] = mapped_column(Integer)
    published: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The partition the record's key maps to: a TRUNCATE is applied per partition (by a
    # scan: a truncate is rare, an index here would cost every insert).
    kafka_partition: Mapped[int] = mapped_column(Integer)


SCHEMAS = (CATALOG, SYNC)
