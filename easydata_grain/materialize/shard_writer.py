"""One unit of work: make sure unit ``u``'s shard is in the output, verified.

A shard already finished by an earlier run (its progress record names its size and sha256,
and the file's bytes still hash to them) is kept; otherwise the unit's rows are computed,
written with fixed Parquet settings (so the bytes depend on the rows alone, not on the engine,
the worker or the time) under a temporary name, moved into place, and its progress record
written after it. This is what every engine runs, in any process.
"""

from __future__ import annotations

import dataclasses
import json
from typing import IO, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from easydata_grain.io.errors import CorruptShardError
from easydata_grain.materialize.arrow_table import conform
from easydata_grain.materialize.manifest import Manifest, ShardRecord
from easydata_grain.materialize.protocol import MaterializableRows
from easydata_grain.materialize.store import OutputStore

PROGRESS_DIR = "_materializing"
"""The folder of a run in progress: its header (``job.json``) and one record per shard."""
JOB_NAME = f"{PROGRESS_DIR}/job.json"
"""The header of the run in progress (the manifest without shards)."""


def write_parquet(table: pa.Table, handle: IO[bytes], header: Manifest) -> None:
    """``table`` as Parquet with the output's fixed settings (page checksums on, so that a
    reader detects a damaged page)."""
    pq.write_table(
        table,
        handle,
        row_group_size=header.row_group_rows,
        compression=header.compression,
        version="2.6",
        data_page_version="1.0",
        use_dictionary=True,
        write_statistics=True,
        write_page_checksum=True,
        store_schema=True,
    )


class UnitResult(NamedTuple):
    """A unit's shard, and whether this run wrote it (False: kept from an earlier run)."""

    record: ShardRecord
    written: bool


@dataclasses.dataclass(frozen=True)
class ShardJob:
    """What a unit needs besides the rows: where the output is and its header (picklable)."""

    store: OutputStore
    header: Manifest

    def where(self, unit: int) -> str:
        """Unit ``unit`` in words, for errors."""
        start, stop = self.header.unit_range(unit)
        return f"unit {unit} (positions {start}..{stop - 1}) of {self.store.url}"

    def progress_name(self, unit: int) -> str:
        """The progress record of unit ``unit``'s finished shard."""
        return f"{PROGRESS_DIR}/{self.header.shard_name(unit)}.json"

    def finished(self, unit: int) -> ShardRecord | None:
        """The shard of ``unit`` as an earlier run finished it, if its bytes still match its
        progress record; None when it has to be written (again)."""
        data = self.store.read(self.progress_name(unit))
        if data is None:
            return None
        start, stop = self.header.unit_range(unit)
        try:
            document = json.loads(data)
            if not isinstance(document, dict):
                return None
            digest = document.pop("fingerprint_digest", None)
            record = ShardRecord.from_dict(document, self.store.path(self.progress_name(unit)))
        except (ValueError, CorruptShardError):
            return None  # a damaged record: the shard is written again
        expected = (digest, record.name, record.first_position, record.positions)
        if expected != (self.header.digest, self.header.shard_name(unit), start, stop - start):
            return None
        if self.store.checksum(record.name) != (record.bytes, record.sha256):
            return None
        return record

    def run(self, rows: MaterializableRows, unit: int) -> UnitResult:
        """Keep unit ``unit``'s verified shard, or compute and write it."""
        kept = self.finished(unit)
        if kept is not None:
            return UnitResult(kept, False)
        start, stop = self.header.unit_range(unit)
        table = conform(rows.table(start, stop), self.header.schema, self.where(unit))
        name = self.header.shard_name(unit)
        size, sha256 = self.store.write(
            name, lambda handle: write_parquet(table, handle, self.header)
        )
        record = ShardRecord(name, start, stop - start, table.num_rows, size, sha256)
        progress = {"fingerprint_digest": self.header.digest, **record.to_dict()}
        self.store.write_bytes(
            self.progress_name(unit), json.dumps(progress, sort_keys=True).encode()
        )
        return UnitResult(record, True)
