"""Avro schema compatibility, by the resolution rules of the Avro specification.

``resolve(writer, reader)`` lists every place where data written with `writer`
cannot be read with `reader`. A new version must be both backward compatible
(the new reader reads every older version's data) and forward compatible (an
older reader reads the new version's data), so producers and consumers can be
upgraded in any order during a release window.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bluegreen.core.errors import SchemaCompatibilityError
from schemas.codec import SchemaVersion

Schema = Any  # the self-contained JSON form: str | list | dict

_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "double": {"double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_COMPLEX = {"record", "error", "enum", "fixed", "array", "map"}


class _Names:
    """Named types seen so far, so references resolve to their definitions."""

    def __init__(self) -> None:
        self.defs: dict[str, dict[str, Any]] = {}

    def register(self, schema: Schema, namespace: str | None = None) -> None:
        if isinstance(schema, list):
            for branch in schema:
                self.register(branch, namespace)
            return
        if not isinstance(schema, dict):
            return
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            full = _fullname(schema, namespace)
            self.defs[full] = schema
            namespace = full.rpartition(".")[0] or None
            for field in schema.get("fields", []):
                self.register(field["type"], namespace)
        elif kind == "array":
            self.register(schema["items"], namespace)
        elif kind == "map":
            self.register(schema["values"], namespace)
        elif isinstance(kind, (dict, list)):
            self.register(kind, namespace)

    def deref(self, schema: Schema) -> Schema:
        """The definition behind a name or a {"type": ...} wrapper."""
        while True:
            if isinstance(schema, str):
                if schema in _PRIMITIVES:
                    return schema
                return self._lookup(schema)
            if isinstance(schema, list):
                return schema
            inner = schema["type"]
            if inner in _COMPLEX:
                return schema
            if isinstance(inner, str) and inner in _PRIMITIVES:
                return schema if "logicalType" in schema else inner
            schema = inner

    def _lookup(self, name: str) -> dict[str, Any]:
        if name in self.defs:
            return self.defs[name]
        for full, definition in self.defs.items():
            if full.rpartition(".")[2] == name:
                return definition
        raise SchemaCompatibilityError(f"unknown named type {name!r}")


def _fullname(schema: Mapping[str, Any], namespace: str | None) -> str:
    name = str(schema["name"])
    ns = schema.get("namespace", namespace)
    return name if "." in name or not ns else f"{ns}.{name}"


def _kind(schema: Schema) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, str):
        return schema
    kind = schema["type"]
    return "record" if kind == "error" else str(kind)


def _describe(schema: Schema) -> str:
    kind = _kind(schema)
    if isinstance(schema, dict) and "name" in schema:
        return f"{kind} {schema['name']}"
    if isinstance(schema, dict) and "logicalType" in schema:
        return f"{kind} ({schema['logicalType']})"
    return kind


def resolve(writer: Schema, reader: Schema) -> list[str]:
    """Every incompatibility of reading `writer` data with `reader`, as 'path: reason'."""
    resolver = _Resolver(writer, reader)
    resolver.resolve(writer, reader, "")
    return resolver.problems


class _Resolver:
    def __init__(self, writer: Schema, reader: Schema) -> None:
        self.wn, self.rn = _Names(), _Names()
        self.wn.register(writer)
        self.rn.register(reader)
        self.problems: list[str] = []
        self.seen: set[tuple[str, str]] = set()

    def resolve(self, writer: Schema, reader: Schema, path: str) -> None:
        writer, reader = self.wn.deref(writer), self.rn.deref(reader)
        wk, rk = _kind(writer), _kind(reader)
        where = path or "(root)"
        if wk == "union":
            for branch in writer:  # every branch the writer may choose must be readable
                self.resolve(branch, reader, path)
        elif rk == "union":
            self._into_union(writer, reader, path)
        elif wk in _PRIMITIVES or rk in _PRIMITIVES:
            if rk not in _PROMOTIONS.get(wk, {wk}):
                self.problems.append(f"{where}: writer type {wk} cannot be read as {rk}")
            else:
                _check_logical(writer, reader, where, self.problems)
        elif wk != rk:
            self.problems.append(f"{where}: writer type {wk} cannot be read as {rk}")
        elif wk in ("record", "enum", "fixed") and not _same_name(writer, reader):
            self.problems.append(
                f"{where}: named type {writer['name']} is read as {reader['name']} (names differ)"
            )
        else:
            self._same_kind(wk, writer, reader, path)

    def _into_union(self, writer: Schema, reader: list[Schema], path: str) -> None:
        for branch in reader:
            if _matches(writer, self.rn.deref(branch)):
                self.resolve(writer, branch, path)
                return
        self.problems.append(
            f"{path or '(root)'}: writer type {_describe(writer)} matches no branch of the union"
        )

    def _same_kind(self, kind: str, writer: Any, reader: Any, path: str) -> None:
        where = path or "(root)"
        if kind == "record":
            key = (str(writer["name"]), path)
            if key not in self.seen:
                self.seen.add(key)
                self._record(writer, reader, path)
        elif kind == "enum":
            missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if missing and "default" not in reader:
                self.problems.append(
                    f"{where}: enum {reader['name']} lacks symbols {missing} and has no default"
                )
        elif kind == "fixed" and writer["size"] != reader["size"]:
            self.problems.append(f"{where}: fixed size {writer['size']} read as {reader['size']}")
        elif kind == "array":
            self.resolve(writer["items"], reader["items"], f"{path}[]")
        elif kind == "map":
            self.resolve(writer["values"], reader["values"], f"{path}{{}}")

    def _record(self, writer: Mapping[str, Any], reader: Mapping[str, Any], path: str) -> None:
        written = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            name = field["name"]
            field_path = f"{path}.{name}" if path else name
            source = written.get(name) or next(
                (written[a] for a in field.get("aliases", []) if a in written), None
            )
            if source is not None:
                self.resolve(source["type"], field["type"], field_path)
            elif "default" not in field:
                self.problems.append(
                    f"{field_path}: the reader's field is missing from the writer and has no "
                    "default"
                )


def _same_name(writer: Mapping[str, Any], reader: Mapping[str, Any]) -> bool:
    wname = str(writer["name"]).rpartition(".")[2]
    rname = str(reader["name"]).rpartition(".")[2]
    aliases = {str(a).rpartition(".")[2] for a in reader.get("aliases", [])}
    return wname == rname or wname in aliases


def _matches(writer: Schema, reader: Schema) -> bool:
    """Whether a reader union branch is the one the Avro rules pick for writer."""
    wk, rk = _kind(writer), _kind(reader)
    if wk in ("record", "enum", "fixed"):
        return wk == rk and _same_name(writer, reader)
    if wk in _PRIMITIVES:
        return rk in _PROMOTIONS.get(wk, {wk})
    return wk == rk


def _check_logical(writer: Schema, reader: Schema, where: str, problems: list[str]) -> None:
    wl = writer.get("logicalType") if isinstance(writer, dict) else None
    rl = reader.get("logicalType") if isinstance(reader, dict) else None
    if wl != rl:
        problems.append(f"{where}: logical type {wl or 'none'} cannot be read as {rl or 'none'}")
    elif wl == "decimal" and (
        writer.get("precision") != reader.get("precision")
        or writer.get("scale", 0) != reader.get("scale", 0)
    ):
        problems.append(
            f"{where}: decimal({writer.get('precision')},{writer.get('scale', 0)}) cannot be "
            f"read as decimal({reader.get('precision')},{reader.get('scale', 0)})"
        )


def check_evolution(versions: Sequence[SchemaVersion]) -> list[str]:
    """Check the newest version against every older one, both directions."""
    *older, newest = versions
    problems = []
    for old in older:
        for problem in resolve(old.source, newest.source):
            problems.append(
                f"v{newest.version} cannot read v{old.version} data (backward): {problem}"
            )
        for problem in resolve(newest.source, old.source):
            problems.append(
                f"v{old.version} readers cannot read v{newest.version} data (forward): {problem}"
            )
    return problems


def require_compatible(versions: Sequence[SchemaVersion]) -> None:
    problems = check_evolution(versions)
    if problems:
        raise SchemaCompatibilityError("incompatible schema change:\n  " + "\n  ".join(problems))
