"""The manifest of a materialized output: what was written, for which pipeline, and how.

``manifest.json`` is written last, as the commit marker: an output without one is incomplete.
It is plain JSON (nothing is ever unpickled) and holds no time or host, so every engine and
worker count writes the same bytes. Its header (the manifest without ``shards``) is also the
record of a run in progress, so that an interrupted run resumes only with the same layout.

Unit ``u`` covers the positions ``[u * unit_rows, min(positions, (u + 1) * unit_rows))`` of
the rows and is written to ``part-{u:05d}.parquet`` (more digits when there are more than
100,000 units: all names of an output have one width, so they sort in unit order).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pyarrow as pa

from easydata_grain.fingerprint import digest
from easydata_grain.io.errors import CorruptShardError, UnsupportedFormatError

FORMAT = "easydata-grain/materialized"
"""The manifest's ``format`` field: what kind of file it is."""
WRITER_VERSION = 1
"""The layout version this code writes (and the newest it reads)."""
MANIFEST_NAME = "manifest.json"
"""The manifest's name in the output directory."""


def json_value(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples become lists, unknown objects their ``str``), so
    that a fingerprint compares equal to the one read from a manifest."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def encode_schema(schema: pa.Schema) -> str:
    """An Arrow schema as text: its IPC serialization (flatbuffers, not pickle) in base64."""
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def decode_schema(text: str) -> pa.Schema:
    """The schema ``encode_schema`` wrote."""
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


@dataclasses.dataclass(frozen=True)
class ShardRecord:
    """One written shard: its unit's positions, its rows, and its bytes' size and sha256."""

    name: str
    first_position: int
    positions: int
    rows: int
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON object."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ShardRecord:
        """A record read from JSON; ``CorruptShardError`` naming ``where`` when malformed."""
        names = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(data, dict) or sorted(data) != sorted(names):
            raise _damaged(where, f"a shard record must have the fields {names}, got {data!r}")
        for name in names:
            expected = str if name in ("name", "sha256") else int
            if not isinstance(data[name], expected) or isinstance(data[name], bool):
                raise _damaged(where, f"the shard record's {name} is {data[name]!r}")
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What a materialized output holds (see the module's docstring)."""

    fingerprint: dict[str, Any]
    """The pipeline's fingerprint (sources, transforms, tokenizer content, template, order)."""
    positions: int
    """Positions of the rows materialized (rows before any filter)."""
    unit_rows: int
    """Positions per unit (per shard)."""
    compression: str
    """The Parquet codec of every shard."""
    row_group_rows: int
    """Rows per row group (the unit of a seek)."""
    max_shard_size: int | None
    """The size ``unit_rows`` was estimated for (None: ``unit_rows`` was given)."""
    schema: pa.Schema
    """Every shard's Arrow schema."""
    created_with: dict[str, str]
    """The version of the Parquet writer (pyarrow), which the bytes depend on."""
    shards: tuple[ShardRecord, ...] = ()
    """The shards, unit by unit (empty in the header of a run in progress)."""
    writer_version: int = WRITER_VERSION

    @property
    def digest(self) -> str:
        """The fingerprint's digest: the name of a cache entry."""
        return digest(self.fingerprint)

    @property
    def num_units(self) -> int:
        """Units (shards) of the output."""
        return -(-self.positions // self.unit_rows)

    def shard_name(self, unit: int) -> str:
        """The file name of unit ``unit``'s shard."""
        width = max(5, len(str(self.num_units - 1)))
        return f"part-{unit:0{width}d}.parquet"

    def unit_range(self, unit: int) -> tuple[int, int]:
        """The positions ``[start, stop)`` of unit ``unit``."""
        if not 0 <= unit < self.num_units:
            raise IndexError(f"unit {unit} is out of range for {self.num_units} units")
        start = unit * self.unit_rows
        return start, min(self.positions, start + self.unit_rows)

    @property
    def rows(self) -> int:
        """Rows in all shards."""
        return sum(shard.rows for shard in self.shards)

    def header(self) -> Manifest:
        """The manifest without its shards: the record of a run in progress."""
        return dataclasses.replace(self, shards=())

    def differences(self, other: Manifest) -> list[str]:
        """The header fields that differ from ``other``'s, in words."""
        out = []
        for field in dataclasses.fields(self):
            if field.name == "shards":
                continue
            mine, theirs = getattr(self, field.name), getattr(other, field.name)
            if field.name == "schema":
                if mine.equals(theirs):
                    continue
                mine, theirs = _schema_text(mine), _schema_text(theirs)
            if mine != theirs:
                out.append(f"{field.name}: {theirs} there, {mine} here")
        return out

    def to_json(self) -> bytes:
        """The manifest as JSON bytes (the same bytes for the same manifest)."""
        document = {
            "format": FORMAT,
            "writer_version": self.writer_version,
            "created_with": self.created_with,
            "fingerprint": self.fingerprint,
            "fingerprint_digest": self.digest,
            "positions": self.positions,
            "rows": self.rows,
            "unit_rows": self.unit_rows,
            "compression": self.compression,
            "row_group_rows": self.row_group_rows,
            "max_shard_size": self.max_shard_size,
            "schema": [
                {"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in self.schema
            ],
            "arrow_schema": encode_schema(self.schema),
            "shards": [shard.to_dict() for shard in self.shards],
        }
        return (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        """A manifest read from ``where``: ``CorruptShardError`` when it is not one of ours or is
        damaged, ``UnsupportedFormatError`` when a newer layout version wrote it."""
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise _damaged(where, f"it is not JSON ({exc})") from exc
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise CorruptShardError(
                f"{where} is not an easydata-grain manifest (no format {FORMAT!r}).",
                path=where,
                hint="Point at the directory that materialize() wrote, or choose another output.",
            )
        version = document.get("writer_version")
        if not isinstance(version, int) or version > WRITER_VERSION:
            raise UnsupportedFormatError(
                f"{where} was written by layout version {version!r}; this easydata-grain reads "
                f"up to version {WRITER_VERSION}.",
                path=where,
                hint="Upgrade easydata-grain, or materialize again with overwrite=True.",
            )
        try:
            manifest = cls(
                fingerprint=_typed(document, "fingerprint", dict, where),
                positions=_typed(document, "positions", int, where),
                unit_rows=_typed(document, "unit_rows", int, where),
                compression=_typed(document, "compression", str, where),
                row_group_rows=_typed(document, "row_group_rows", int, where),
                max_shard_size=_typed(document, "max_shard_size", int | None, where),
                schema=decode_schema(_typed(document, "arrow_schema", str, where)),
                created_with=_typed(document, "created_with", dict, where),
                shards=tuple(
                    ShardRecord.from_dict(s, where) for s in _typed(document, "shards", list, where)
                ),
                writer_version=version,
            )
        except (ValueError, pa.ArrowInvalid) as exc:
            raise _damaged(where, str(exc)) from exc
        if manifest.positions < 1 or manifest.unit_rows < 1:
            raise _damaged(where, "positions and unit_rows must be >= 1")
        return manifest


def _schema_text(schema: pa.Schema) -> str:
    """A schema on one line: ``{id: int64, label: string}``."""
    return "{" + ", ".join(f"{f.name}: {f.type}" for f in schema) + "}"


def _typed(document: dict[str, Any], name: str, kind: Any, where: str) -> Any:
    value = document.get(name)
    if name not in document or not isinstance(value, kind) or isinstance(value, bool):
        raise _damaged(where, f"its field {name!r} is {value!r}")
    return value


def _damaged(where: str, detail: str) -> CorruptShardError:
    return CorruptShardError(
        f"{where} is damaged: {detail}.",
        path=where,
        hint="Materialize again with overwrite=True.",
    )
