"""``easydata-grain validate URL``: one pass over every shard of a Parquet or JSON dataset,
listing every problem (corrupt or truncated files, schema drift between shards, rows that are
not JSON objects, damaged pages) instead of stopping at the first."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from easydata_grain.commands.url_source import file_sources
from easydata_grain.io.errors import SourceError
from easydata_grain.sources.file_source import (
    FileShardedSource,
    describe_schema_difference,
    reading_schema,
)
from easydata_grain.sources.json import JsonShardedSource
from easydata_grain.sources.parquet import ParquetShardedSource
from easydata_grain.sources.skipped import is_skipped

_JSON_LOGGER = logging.getLogger(JsonShardedSource.__module__)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with one shard."""

    shard: str
    kind: str
    """``file`` (unreadable, corrupt or truncated), ``schema`` (drift from the first shard),
    ``row`` (a bad JSON row) or ``data`` (a block that does not decode)."""
    message: str

    def __str__(self) -> str:
        return f"{self.kind:6}  {self.message}"


@dataclasses.dataclass
class Report:
    """What ``validate_url`` found: the shards and rows read, and every problem."""

    url: str
    shards: int = 0
    rows: int = 0
    problems: list[Problem] = dataclasses.field(default_factory=list)

    def text(self) -> str:
        """The report in words: a summary line, then one line per problem."""
        found = f"{len(self.problems)} problem(s)" if self.problems else "no problems"
        lines = [f"{self.url}: {self.shards} shard(s), {self.rows:,} rows read, {found}"]
        lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


def _kind(value: Any) -> str | None:
    """A JSON value's kind for drift checks; None where any kind fits (null, [])."""
    if value is None or (isinstance(value, list) and not value):
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, np.ndarray):
        return "list of numbers"
    return type(value).__name__


def _single(
    source: FileShardedSource, path: str, *, on_bad_row: str, batch_size: int = 64
) -> FileShardedSource:
    """A source of one shard of ``source`` (read and checked on its own); ``on_bad_row`` and
    ``batch_size`` (rows parsed at once) apply to JSON."""
    common: dict[str, Any] = {
        "storage_options": source.storage_options,
        "retry": source.retry,
        "share_listing": False,
    }
    if isinstance(source, JsonShardedSource):
        return JsonShardedSource(
            [path],
            jsonl=source.jsonl,
            on_bad_row=on_bad_row,  # type: ignore[arg-type]
            index_cache_dir=source.index_cache_dir,
            batch_size=batch_size,
            **common,
        )
    if isinstance(source, ParquetShardedSource):
        return ParquetShardedSource([path], **common)
    raise TypeError(f"validate reads Parquet and JSON files, not {type(source).__name__}")


class _Fields:
    """The fields and kinds of one shard's JSON rows against the first row of the first shard
    (``reference``, shared by the shards): what drifts, counted per field."""

    def __init__(self, reference: dict[str, tuple[str, str]], names: list[str] | None):
        self.reference = reference
        """Each field's kind and where it was first seen."""
        self.names = names
        """The first row's fields."""
        self.missing: dict[str, list[int]] = {}
        self.extra: dict[str, list[int]] = {}
        self.kinds: dict[tuple[str, str], list[int]] = {}

    def add(self, shard: str, row: int, values: dict[str, Any]) -> None:
        """Compare one row with the reference."""
        if self.names is None:
            self.names = list(values)
        for name in self.names:
            if name not in values:
                self.missing.setdefault(name, []).append(row)
        for name, value in values.items():
            if name not in self.names:
                self.extra.setdefault(name, []).append(row)
            kind = _kind(value)
            if kind is not None:
                first = self.reference.setdefault(name, (kind, f"{shard} row {row}"))
                if first[0] != kind:
                    self.kinds.setdefault((name, kind), []).append(row)

    def problems(self, shard: str) -> list[Problem]:
        """One problem per drifting field of the shard."""
        texts = [
            f"{len(r)} row(s) lack field {n!r} (first: row {r[0]})" for n, r in self.missing.items()
        ]
        texts += [
            f"{len(r)} row(s) have field {n!r} that the first row lacks (first: row {r[0]})"
            for n, r in self.extra.items()
        ]
        texts += [
            f"field {n!r} holds a {k} in {len(r)} row(s) (first: row {r[0]}), a "
            f"{self.reference[n][0]} at {self.reference[n][1]}"
            for (n, k), r in self.kinds.items()
        ]
        return [Problem(shard, "schema", f"{shard}: {text}") for text in texts]


class _QuietSkips(logging.Filter):
    """Keeps a skip-mode source's "Skipped N malformed row(s)" warnings out of the output
    (the report lists those rows)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Skipped ")


class _Validator:
    """The state of one validation pass over the shards of one source."""

    def __init__(self, source: FileShardedSource, report: Report):
        self.source = source
        self.report = report
        self.schema: tuple[Any, str] | None = None
        """The first readable shard's Parquet schema and its name."""
        self.reference: dict[str, tuple[str, str]] = {}
        """Each JSON field's kind and where it was first seen."""
        self.names: list[str] | None = None

    def shard(self, path: str) -> None:
        """Check one shard: its metadata, then every block or row."""
        self.report.shards += 1
        single = _single(self.source, path, on_bad_row="skip")
        try:
            meta = single.shard_meta(0)
        except SourceError as exc:
            self.report.problems.append(Problem(path, "file", str(exc)))
            return
        if isinstance(single, ParquetShardedSource):
            self._check_schema(path, meta.schema)
            self._read_tables(single, path)
        else:
            self._read_rows(single, path)

    def _check_schema(self, path: str, schema: Any) -> None:
        if self.schema is None:
            self.schema = (schema, path)
            return
        reference, first = self.schema
        if not reading_schema(schema).equals(reading_schema(reference)):
            self.report.problems.append(
                Problem(
                    path,
                    "schema",
                    f"{path} differs from {first}: {describe_schema_difference(reference, schema)}",
                )
            )

    def _read_tables(self, single: ParquetShardedSource, path: str) -> None:
        """Decode every row group (a damaged one is a problem; the next is read)."""
        for block in range(len(single.block_starts(0))):
            try:
                self.report.rows += single.read_block_table(0, block).num_rows
            except SourceError as exc:
                self.report.problems.append(Problem(path, "data", str(exc)))

    def _read_rows(self, single: FileShardedSource, path: str) -> None:
        """Parse every row: bad rows (left out in place) and drifting fields are problems."""
        fields = _Fields(self.reference, self.names)
        quiet = _QuietSkips()
        _JSON_LOGGER.addFilter(quiet)
        try:
            for row, values in enumerate(single.rows_with_gaps(0, 0)):
                self.report.rows += 1
                if is_skipped(values):
                    self.report.problems.append(Problem(path, "row", self._row_error(path, row)))
                else:
                    fields.add(path, row, values)
        except SourceError as exc:
            self.report.problems.append(Problem(path, "data", str(exc)))
        finally:
            _JSON_LOGGER.removeFilter(quiet)
        self.names = fields.names
        self.report.problems += fields.problems(path)

    def _row_error(self, path: str, row: int) -> str:
        """The error a strict read gives for a row that ``on_bad_row="skip"`` left out."""
        strict = _single(self.source, path, on_bad_row="raise", batch_size=1)
        try:
            next(iter(strict.open_shard_at_row(path, row)))
        except SourceError as exc:
            text, hint = str(exc), (exc.hint or "").strip()
            return text.removesuffix(hint).rstrip() if hint else text
        return f"{path} row {row} was left out"


def validate_url(url: str) -> Report:
    """Read every shard of the Parquet or JSON files at ``url`` (a path, glob, directory or
    store URL) once, and list every problem found; nothing stops at the first."""
    report = Report(url)
    for source in file_sources(url):
        validator = _Validator(source, report)
        for path in source.shard_names:
            validator.shard(path)
    return report
