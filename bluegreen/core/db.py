"""PostgreSQL connections from the secret DSNs, and DSN descriptions safe for logs."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import psycopg
from pydantic import SecretStr


def connect(dsn: SecretStr, *, autocommit: bool = False, **kwargs: Any) -> psycopg.Connection:
    """Open a psycopg connection; the DSN is revealed only to libpq."""
    return psycopg.connect(dsn.get_secret_value(), autocommit=autocommit, **kwargs)


def describe(dsn: SecretStr) -> str:
    """host:port/database of a DSN, without user or password: safe to log and print."""
    parts = urlsplit(dsn.get_secret_value())
    host = parts.hostname or "localhost"
    port = parts.port or 5432
    return f"{host}:{port}{parts.path or '/'}"


def sqlalchemy_url(dsn: SecretStr) -> str:
    """The same DSN in SQLAlchemy's form, bound to the psycopg 3 driver."""
    raw = dsn.get_secret_value()
    for prefix in ("postgresql://", "postgres://"):
        if raw.startswith(prefix):
            return "postgresql+psycopg://" + raw[len(prefix) :]
    return raw


def send_str_as_jsonb_text(conn: psycopg.Connection) -> None:
    """In binary COPY, send Python str values of jsonb columns as JSON text, unparsed.

    psycopg would otherwise dump a str as a JSON *string*. Registered by oid, so it
    applies where COPY's set_types says jsonb.
    """
    info = conn.adapters.types["jsonb"]

    class JsonbTextDumper(psycopg.adapt.Dumper):
        format = psycopg.pq.Format.BINARY
        oid = info.oid

        def dump(self, obj: str) -> bytes:
            return b"\x01" + obj.encode()  # jsonb binary format: version 1, then the text

    conn.adapters.register_dumper(_JsonbText, JsonbTextDumper)


class _JsonbText(str):
    """Marker type: registering a dumper for it also registers it for the jsonb oid."""
