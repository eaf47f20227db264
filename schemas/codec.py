"""Avro single-object encoding of change events, with every released schema kept.

A message is ``C3 01`` + the 8-byte little-endian CRC-64-AVRO fingerprint of the
writer schema's Parsing Canonical Form + the Avro binary body (Avro spec,
"Single object encoding"). The reader finds the writer schema by fingerprint
among the kept versions (``schemas/avro/v<N>/``) and resolves it into the
current reader schema, so old messages stay readable after an evolution and no
registry server is needed. Schemas are parsed once, at import.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

from bluegreen.core.errors import SerializationError
from schemas.decoder import compile_reader

MARKER = b"\xc3\x01"
HEADER_SIZE = 10
# Inside a version folder, files that define named types come first; the root
# schema (the change envelope) last.
ROW_FILE = "legacy_product.avsc"
ENVELOPE_FILE = "change_event.avsc"


@dataclass(frozen=True)
class SchemaVersion:
    version: int
    source: dict[str, Any]  # self-contained JSON form (named types inlined)
    row_source: dict[str, Any]  # the row record's definition
    parsed: Any  # fastavro's parsed schema
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO

    @property
    def header(self) -> bytes:
        return MARKER + self.fingerprint


def _inline(node: Any, definitions: dict[str, dict[str, Any]], done: set[str]) -> Any:
    """Replace the first reference to each named type by its definition."""
    if isinstance(node, str):
        if node in definitions and node not in done:
            done.add(node)
            return _inline(definitions[node], definitions, done)
        return node
    if isinstance(node, list):
        return [_inline(item, definitions, done) for item in node]
    if isinstance(node, dict):
        if node.get("type") in ("record", "enum", "fixed") and "name" in node:
            done.add(fullname(node))
        return {key: _inline(value, definitions, done) for key, value in node.items()}
    return node


def fullname(schema: Mapping[str, Any]) -> str:
    name = str(schema["name"])
    namespace = schema.get("namespace")
    return name if "." in name or not namespace else f"{namespace}.{name}"


def build_version(version: int, row: dict[str, Any], envelope: dict[str, Any]) -> SchemaVersion:
    source = _inline(envelope, {fullname(row): row}, set())
    try:
        parsed = parse_schema(source)
    except Exception as exc:  # fastavro raises several unrelated types
        raise SerializationError(f"schema version {version} does not parse: {exc}") from exc
    canonical = to_parsing_canonical_form(parsed)
    return SchemaVersion(
        version=version,
        source=source,
        row_source=row,
        parsed=parsed,
        fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
    )


def _row_file(path: Path) -> Path:
    """The row's schema in a version folder: legacy_product.avsc (the catalog's), or
    another domain's one .avsc beside the envelope."""
    if (path / ROW_FILE).exists():
        return path / ROW_FILE
    others = sorted(p for p in path.glob("*.avsc") if p.name != ENVELOPE_FILE)
    if len(others) != 1:
        raise OSError(f"expected one row schema beside {ENVELOPE_FILE}, found {len(others)}")
    return others[0]


def load_version_dir(path: Path) -> SchemaVersion:
    try:
        version = int(path.name.removeprefix("v"))
        row = json.loads(_row_file(path).read_text())
        envelope = json.loads((path / ENVELOPE_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise SerializationError(f"cannot load the schema version in {path}: {exc}") from exc
    return build_version(version, row, envelope)


def load_versions(root: Path | None = None) -> list[SchemaVersion]:
    """Every kept version, oldest first."""
    base = root or Path(str(resources.files("schemas").joinpath("avro")))
    dirs = sorted(
        (p for p in base.iterdir() if p.is_dir() and p.name.startswith("v")),
        key=lambda p: int(p.name[1:]),
    )
    if not dirs:
        raise SerializationError(f"no schema versions (v1, v2, ...) under {base}")
    return [load_version_dir(d) for d in dirs]


class Codec:
    """Encodes with one kept version and decodes any kept version into one reader version.

    By default both are the newest. During a rollout, readers get the new version's
    files first (they can then read it) while writers keep `write_version` at the
    old one; writers switch once every reader is upgraded. Not thread-safe: one
    codec per thread.
    """

    def __init__(
        self,
        versions: list[SchemaVersion],
        *,
        write_version: int | None = None,
        read_version: int | None = None,
    ) -> None:
        if not versions:
            raise SerializationError("a codec needs at least one schema version")
        self.versions = versions
        by_number = {v.version: v for v in versions}
        try:
            self.writer = by_number[write_version] if write_version else versions[-1]
            self.reader = by_number[read_version] if read_version else versions[-1]
        except KeyError as exc:
            raise SerializationError(
                f"schema version v{exc.args[0]} is not kept (have "
                f"{', '.join(f'v{n}' for n in by_number)})"
            ) from exc
        self._by_fingerprint = {v.fingerprint: v for v in versions}
        if len(self._by_fingerprint) != len(versions):
            raise SerializationError("two kept schema versions have the same fingerprint")
        self._header = self.writer.header
        self._buffer = io.BytesIO()
        # Data written with the reader's own version (the usual case) takes the compiled
        # decoder; any other writer version is resolved into the reader's by fastavro.
        self._fast_read = compile_reader(self.reader.source)

    def encode(self, event: Mapping[str, Any]) -> bytes:
        buffer = self._buffer
        buffer.seek(0)
        buffer.truncate()
        buffer.write(self._header)
        try:
            schemaless_writer(buffer, self.writer.parsed, event)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SerializationError(f"cannot encode event: {exc}") from exc
        return buffer.getvalue()

    def writer_of(self, data: bytes) -> SchemaVersion:
        if len(data) < HEADER_SIZE or data[:2] != MARKER:
            raise SerializationError(
                f"not an Avro single-object message (starts with {data[:2].hex() or 'nothing'}, "
                f"expected {MARKER.hex()})"
            )
        writer = self._by_fingerprint.get(bytes(data[2:HEADER_SIZE]))
        if writer is None:
            raise SerializationError(
                f"unknown writer schema fingerprint {data[2:HEADER_SIZE].hex()}: the message was "
                "written with a schema version this reader does not keep; upgrade the reader"
            )
        return writer

    def decode(self, data: bytes) -> dict[str, Any]:
        writer = self.writer_of(data)
        if writer is self.reader:
            try:
                fast: dict[str, Any]
                fast, end = self._fast_read(data, HEADER_SIZE)
            except (IndexError, ValueError, UnicodeDecodeError, OverflowError) as exc:
                raise SerializationError(
                    f"corrupt message body for schema v{writer.version}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if end != len(data):
                raise SerializationError(
                    f"corrupt message: {len(data) - end} trailing bytes after the record"
                )
            return fast
        reader = self.reader.parsed
        stream = io.BytesIO(data)
        stream.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(stream, writer.parsed, reader)
        except Exception as exc:  # fastavro raises EOFError, ValueError, UnicodeDecodeError...
            raise SerializationError(
                f"corrupt message body for schema v{writer.version}: {type(exc).__name__}: {exc}"
            ) from exc
        if stream.tell() != len(data):
            raise SerializationError(
                f"corrupt message: {len(data) - stream.tell()} trailing bytes after the record"
            )
        if not isinstance(record, dict):
            raise SerializationError("decoded message is not a record")
        return record


_CODECS: dict[Path | None, Codec] = {}


def codec_for(root: Path | None) -> Codec:
    """The codec over the kept versions under `root` (None: those shipped with the
    package), parsed once per process."""
    codec = _CODECS.get(root)
    if codec is None:
        codec = _CODECS[root] = Codec(load_versions(root))
    return codec


def default_codec() -> Codec:
    """The codec over the kept versions shipped with the package (parsed once)."""
    return codec_for(None)
