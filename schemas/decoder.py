"""A compiled Avro decoder: the consumer's hot path, one generated function per record.

Generated once from a schema (as ``rowencoder`` does for writing), it reads the
binary encoding with inline varint and string reads and no per-field calls, and
returns what fastavro returns: dicts, ``Decimal`` for decimals, aware ``datetime``
for timestamp-micros, enum symbols as strings. It reads data written with the
same schema only; resolving another writer's schema into the reader's is left to
fastavro (``Codec.decode`` picks). Tests hold it equal to fastavro.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bluegreen.core.errors import SerializationError

Reader = Callable[[bytes, int], tuple[Any, int]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PRIMITIVE_NAMES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _varint(target: str) -> str:
    """Code reading a zig-zag varint at b[p] into `target`."""
    return (
        "x = b[p]; p += 1\n"
        "n = x & 0x7F\n"
        "if x & 0x80:\n"
        "    s = 7\n"
        "    while True:\n"
        "        x = b[p]; p += 1\n"
        "        n |= (x & 0x7F) << s\n"
        "        if not x & 0x80: break\n"
        "        s += 7\n"
        f"{target} = (n >> 1) ^ -(n & 1)\n"
    )


# Code per primitive type; {t} is the target variable.
_PRIMITIVE_CODE = {
    "int": _varint("{t}"),
    "long": _varint("{t}"),
    "string": _varint("n") + "{t} = b[p:p + n].decode(); p += n\n",
    "bytes": _varint("n") + "{t} = b[p:p + n]; p += n\n",
    "boolean": "{t} = b[p] == 1; p += 1\n",
    "null": "{t} = None\n",
    "double": "({t},) = DOUBLE(b, p); p += 8\n",
    "float": "({t},) = FLOAT(b, p); p += 4\n",
}


def _indent(code: str, spaces: int) -> str:
    return "".join(" " * spaces + line + "\n" for line in code.splitlines())


class _Compiler:
    def __init__(self) -> None:
        self.functions: dict[str, str] = {}  # fullname -> generated source
        self.constants: dict[str, Any] = {}
        self.named: dict[str, Any] = {}

    def constant(self, value: Any) -> str:
        name = f"C{len(self.constants)}"
        self.constants[name] = value
        return name

    def value(self, schema: Any, target: str, namespace: str | None) -> str:
        """Code decoding one value of `schema` into `target`."""
        if isinstance(schema, list):
            return self._union(schema, target, namespace)
        if isinstance(schema, str):
            if schema in _PRIMITIVE_NAMES:
                return _PRIMITIVE_CODE[schema].format(t=target)
            full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
            definition = self.named.get(full) or self.named.get(schema)
            if definition is None:
                raise SerializationError(f"unknown named type {schema!r}")
            return self.value(definition, target, namespace)
        return self._complex(schema, target, namespace)

    def _complex(self, schema: dict[str, Any], target: str, namespace: str | None) -> str:
        kind = schema["type"]
        logical = schema.get("logicalType")
        if logical == "decimal" and kind == "bytes":
            scale = int(schema.get("scale", 0))
            return (
                _varint("n") + "raw = b[p:p + n]; p += n\n"
                f"{target} = Decimal(int.from_bytes(raw, 'big', signed=True)).scaleb(-{scale})\n"
            )
        if logical == "timestamp-micros" and kind == "long":
            return _varint("v") + f"{target} = EPOCH + timedelta(microseconds=v)\n"
        if kind in ("record", "error"):
            return f"{target}, p = {self._record(schema, namespace)}(b, p)\n"
        if kind == "enum":
            symbols = self.constant(tuple(schema["symbols"]))
            return _varint("i") + f"{target} = {symbols}[i]\n"
        if kind == "array":
            return self._array(schema, target, namespace)
        if isinstance(kind, str) and kind in _PRIMITIVE_NAMES:
            return _PRIMITIVE_CODE[kind].format(t=target)
        raise SerializationError(f"Avro type {kind!r} is not compiled")

    def _array(self, schema: dict[str, Any], target: str, namespace: str | None) -> str:
        item = self.value(schema["items"], "item", namespace)
        return (
            f"{target} = []\n"
            "while True:\n" + _indent(_varint("count"), 4) + "    if count == 0: break\n"
            "    if count < 0:\n"
            "        count = -count\n"
            + _indent(_varint("_size"), 8)
            + "    for _ in range(count):\n"
            + _indent(item, 8)
            + f"        {target}.append(item)\n"
        )

    def _union(self, branches: list[Any], target: str, namespace: str | None) -> str:
        code = _varint("u")
        for index, branch in enumerate(branches):
            keyword = "if" if index == 0 else "elif"
            code += f"{keyword} u == {index}:\n" + _indent(self.value(branch, target, namespace), 4)
        code += "else:\n    raise ValueError(f'union branch {u} out of range')\n"
        return code

    def register(self, schema: Any, namespace: str | None = None) -> None:
        """Record every named type's definition, so references resolve."""
        if isinstance(schema, list):
            for branch in schema:
                self.register(branch, namespace)
        elif isinstance(schema, dict):
            kind = schema.get("type")
            if kind in ("record", "error", "enum", "fixed"):
                name = schema["name"]
                ns = schema.get("namespace", namespace)
                full = name if "." in name or not ns else f"{ns}.{name}"
                self.named[full] = schema
                self.named.setdefault(name, schema)
                for field in schema.get("fields", []):
                    self.register(field["type"], full.rpartition(".")[0] or None)
            elif kind == "array":
                self.register(schema["items"], namespace)
            elif isinstance(kind, (dict, list)):
                self.register(kind, namespace)

    def _record(self, schema: dict[str, Any], namespace: str | None) -> str:
        name = schema["name"]
        ns = schema.get("namespace", namespace)
        full = name if "." in name or not ns else f"{ns}.{name}"
        function = "read_" + full.replace(".", "_")
        if full in self.functions:
            return function
        self.functions[full] = ""  # reserve: a record may refer to itself
        inner_ns = full.rpartition(".")[0] or None
        body = ""
        names = []
        for position, field in enumerate(schema["fields"]):
            local = f"f{position}"
            names.append(f"{field['name']!r}: {local}")
            body += self.value(field["type"], local, inner_ns)
        body += "return {" + ", ".join(names) + "}, p\n"
        self.functions[full] = f"def {function}(b, p):\n" + _indent(body, 4)
        return function


def compile_reader(schema: dict[str, Any]) -> Reader:
    """A function (data, position) -> (record, position after it)."""
    compiler = _Compiler()
    compiler.register(schema)
    entry = compiler._record(schema, None)
    source = "\n\n".join(compiler.functions.values())
    namespace: dict[str, Any] = {
        "Decimal": Decimal,
        "EPOCH": _EPOCH,
        "timedelta": timedelta,
        "DOUBLE": struct.Struct("<d").unpack_from,
        "FLOAT": struct.Struct("<f").unpack_from,
        **compiler.constants,
    }
    exec(compile(source, f"<avro reader for {schema.get('name')}>", "exec"), namespace)  # noqa: S102 - generated from the schema, no outside input
    reader: Reader = namespace[entry]
    return reader
