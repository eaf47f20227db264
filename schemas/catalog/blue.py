"""Blue: the legacy catalog, one row per product (SKU) per sales channel.

The same shoe exists once for US, once for GB, once for EU, each row with its
channel's product type ("Sneaker US"), channel-specific attribute names
("size_us", "size_uk", "size_eu"; "weight_lb" vs "weight_g"), its own name and
description copy, price, currency, stock and published flag.
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
    Identity,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

CHANNELS = ("US", "GB", "EU")
SCHEMA = "public"
TABLE = "legacy_product"


class BlueBase(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA)


class LegacyProduct(BlueBase):
    __tablename__ = TABLE
    __table_args__ = (
        UniqueConstraint("sku", "channel", name="legacy_product_sku_channel_key"),
        CheckConstraint("channel IN ('US', 'GB', 'EU')", name="legacy_product_channel_check"),
        CheckConstraint("price >= 0", name="legacy_product_price_check"),
        CheckConstraint("jsonb_typeof(attributes) = 'object'", name="legacy_product_attrs_check"),
        Index("legacy_product_updated_at_idx", "updated_at"),
        Index("legacy_product_product_type_idx", "product_type"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    sku: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(2))
    product_type: Mapped[str] = mapped_column(String(80))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    price: Mapped[Decimal] = mapped_column(Numeric(12, 2))
    currency: Mapped[str] = mapped_column(String(3))
    stock: Mapped[int | None] = mapped_column(Integer)  # NULL: the legacy shop did not track it
    published: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# Column order of a blue row everywhere it is copied (snapshot COPY, Avro record).
COLUMNS: tuple[str, ...] = tuple(c.name for c in LegacyProduct.__table__.columns)
