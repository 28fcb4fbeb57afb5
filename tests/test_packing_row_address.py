"""A bad document in packing is named by its source shard and row (not only by the packer's
input index after shuffle and host split): ``graph/row_address.py``."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from easydata_grain import (
    AsyncDataLoader,
    FilterFunction,
    Hosts,
    MalformedRowError,
    Pack,
    ParquetShardedSource,
)


def keep(row: dict) -> bool:
    """Every row (a filter keeps the positions: the address is still found)."""
    return True


@pytest.mark.parametrize("bad", [[900], []])
@pytest.mark.parametrize("filtered", [False, True])
def test_a_bad_document_names_its_shard_and_row(
    tmp_path: Path, bad: list[int], filtered: bool
) -> None:
    for shard in range(3):
        rows = [{"input_ids": [5 + i] * 3} for i in range(10)]
        if shard == 1:
            rows[7]["input_ids"] = bad
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / f"s{shard}.parquet", row_group_size=3)
    errors = []
    for h in range(2):
        source = ParquetShardedSource(str(tmp_path / "*.parquet"))
        loader = AsyncDataLoader(
            source.filter(FilterFunction(keep)) if filtered else source,
            global_batch_size=4,
            hosts=Hosts(h, 2),
            shuffle_buffer_size=8,
            seed=3,
            pack=Pack(8, vocab_size=100),
        )
        try:
            list(loader)
        except MalformedRowError as error:
            errors.append(error)
    assert len(errors) == 1  # the bad row is on one host only
    assert re.match(r"Input row \d+ \(shard '.*s1\.parquet', row 7\): ", str(errors[0]))
    assert errors[0].path == str(tmp_path / "s1.parquet") and errors[0].row == 7
