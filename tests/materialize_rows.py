"""Rows for the materialization tests, importable by spawned processes and Ray workers: a
tokenize pipeline over generated Parquet shards, and rows whose units fail on purpose."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from easydata_grain import ParquetShardedSource, TokenizeTransform
from easydata_grain.materialize import EpochRows
from easydata_grain.synthetic import tiny_tokenizer, write_parquet_dataset
from easydata_grain.transforms.functions import MapFunction


def write_source(directory: Path, shards: int = 3, rows: int = 700) -> list[str]:
    """Parquet shards of generated text (ids 0..shards*rows-1), row groups of 100."""
    return write_parquet_dataset(
        directory, num_shards=shards, rows_per_shard=rows, row_group_size=100, max_tokens=12
    )


def tokenized(paths: list[str], tokenizer: Any = None, **order: Any) -> EpochRows:
    """The tokenize pipeline: ``text`` -> ``input_ids`` with a real (tiny) tokenizer."""
    source = ParquetShardedSource(paths, columns=["id", "text"])
    transform = TokenizeTransform(tokenizer or tiny_tokenizer(), text_field="text")
    return EpochRows(source, transform, **order)


def drop_multiples_of_three(row: dict[str, Any]) -> bool:
    """A filter: keeps rows whose id is not a multiple of 3."""
    return row["id"] % 3 != 0


def keep_from_thousand(row: dict[str, Any]) -> bool:
    """A filter: drops the rows with ids below 1000."""
    return row["id"] >= 1000


def null_label_first(row: dict[str, Any]) -> dict[str, Any]:
    """A map whose ``label`` is None for ids below 1500 and text after: the first rows alone
    do not show the column's type."""
    return {**row, "label": None if row["id"] < 1500 else f"l{row['id']}"}


NULL_LABEL_FIRST = MapFunction(null_label_first)


def numbers_from_1500(row: dict[str, Any]) -> dict[str, Any]:
    """A map that puts a number where the text should be from id 1500 on (past the first
    rows, which a run reads in the driver)."""
    return {**row, "text": row["id"]} if row["id"] >= 1500 else row


NUMBERS_FROM_1500 = MapFunction(numbers_from_1500)


class FaultyRows:
    """``inner``'s rows, except that units starting at ``from_position`` or later fail:
    ``"raise"`` an error, ``"exit"`` the process the first time (``marker`` records it), or
    ``"hang"`` until killed."""

    def __init__(self, inner: Any, from_position: int, mode: str, marker: str | None = None):
        self.inner = inner
        self.from_position = from_position
        self.mode = mode
        self.marker = marker

    def fingerprint(self) -> dict[str, Any]:
        return self.inner.fingerprint()

    def num_positions(self) -> int:
        return self.inner.num_positions()

    def table(self, start: int, stop: int) -> pa.Table:
        if start >= self.from_position:
            if self.mode == "raise":
                raise RuntimeError(f"injected failure at positions {start}..{stop - 1}")
            if self.mode == "hang":
                time.sleep(3600)
            if self.mode == "exit" and self.marker and not os.path.exists(self.marker):
                Path(self.marker).write_text(str(os.getpid()))
                os._exit(1)
        return self.inner.table(start, stop)
