"""``open_shard_at_row`` takes a numpy integer as a row (a position computed with numpy) and
refuses a bool or a float: ``types.row_number``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from easydata_grain import InMemorySource, JsonShardedSource, ParquetShardedSource


def _sources(tmp_path: Path) -> list:
    pq.write_table(pa.table({"a": list(range(10))}), tmp_path / "n.parquet")
    lines = "".join(json.dumps({"a": i}) + "\n" for i in range(10))
    (tmp_path / "n.jsonl").write_text(lines)
    return [
        ParquetShardedSource(str(tmp_path / "n.parquet")),
        JsonShardedSource(str(tmp_path / "n.jsonl")),
        InMemorySource.from_rows([{"a": i} for i in range(10)]),
    ]


@pytest.mark.parametrize("row", [np.int64(7), np.int32(7), 7])
def test_a_numpy_integer_row_seeks(tmp_path: Path, row: object) -> None:
    for source in _sources(tmp_path):
        rows = source.open_shard_at_row(source.shard_names[0], row)
        assert [r["a"] for r in rows] == [7, 8, 9], source


@pytest.mark.parametrize("row", [True, 7.0, "7"])
def test_a_bool_float_or_string_row_is_refused(tmp_path: Path, row: object) -> None:
    for source in _sources(tmp_path):
        with pytest.raises((TypeError, ValueError, LookupError)):
            list(source.open_shard_at_row(source.shard_names[0], row))
