"""A transform that refuses to overwrite a field reads it: through ``AsyncDataLoader(transforms=)``
over Parquet the column projection keeps the target column, so the loader refuses the row as
``TransformedShardedSource`` does (it used to read without the column and overwrite silently);
with ``overwrite=True`` both give the same rows. Also: ``InMemorySource`` rows given as numpy
integers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from easydata_grain import (
    AddField,
    AsyncDataLoader,
    CombineFields,
    ConvertInputOutputToChatML,
    ConvertToChatML,
    ExtractField,
    InMemorySource,
    MalformedRowError,
    MapField,
    ParquetShardedSource,
    RenameFields,
    SelectFields,
    TransformedShardedSource,
)
from easydata_grain.io.errors import RowOutOfRangeError

ROWS = [
    {
        "id": i,
        "body": f"new {i}",
        "text": f"old {i}",
        "meta": {"lang": "fr"},
        "conversations": [{"from": "human", "value": f"hi {i}"}],
        "instruction": f"do {i}",
        "output": "done",
        "messages": "old",
    }
    for i in range(12)
]

CASES: list[tuple[Any, tuple[Any, ...], str]] = [
    (RenameFields, ({"body": "text"},), "text"),
    (AddField, ("text", "added"), "text"),
    (ExtractField, ("meta.lang", "text"), "text"),
    (CombineFields, (["id", "body"], "text"), "text"),
    (MapField, ("body", str.upper, "text"), "text"),
    (ConvertToChatML, (), "messages"),
    (ConvertInputOutputToChatML, (), "messages"),
]


def _rows(source: Any) -> list[dict[str, Any]]:
    return [dict(row) for shard in source.shard_names for row in source.open_shard(shard)]


def _loader_rows(source: Any, ops: list[Any]) -> list[dict[str, Any]]:
    loader = AsyncDataLoader(source, batch_size=4, transforms=ops)
    rows = []
    for batch in loader:
        rows += [{k: np.asarray(v)[i].tolist() for k, v in batch.items()} for i in range(4)]
    loader.close()
    return rows


@pytest.fixture(scope="module")
def parquet(tmp_path_factory: pytest.TempPathFactory) -> ParquetShardedSource:
    path = Path(tmp_path_factory.mktemp("targets")) / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    return ParquetShardedSource(str(path))


@pytest.mark.parametrize(("kind", "args", "target"), CASES, ids=[c[0].__name__ for c in CASES])
def test_both_forms_refuse_to_overwrite_a_projected_target(
    parquet: ParquetShardedSource, kind: Any, args: tuple[Any, ...], target: str
) -> None:
    # downstream keeps only id and the target: without the guard the target was projected away
    ops = [kind(*args), SelectFields(["id", target])]
    if target == "messages":
        ops.append(MapField("messages", len))
    with pytest.raises(MalformedRowError, match=f"'{target}'"):
        _rows(TransformedShardedSource(parquet, ops))
    with pytest.raises(MalformedRowError, match=rf"rows\.parquet, row \d+: .*'{target}'"):
        _loader_rows(parquet, ops)
    if kind is RenameFields:
        return  # a rename onto an existing field has no overwrite flag
    ops[0] = kind(*args, overwrite=True)
    expected = [
        {k: np.asarray(v).tolist() for k, v in row.items()}
        for row in _rows(TransformedShardedSource(parquet, ops))
    ]
    assert _loader_rows(parquet, ops) == expected


def test_an_absent_target_costs_no_column(parquet: ParquetShardedSource) -> None:
    ops = [AddField("lang", "en"), SelectFields(["id", "lang"])]
    loader = AsyncDataLoader(parquet, batch_size=4, transforms=ops)
    assert "['id'], not" in loader.describe()  # 'lang' is not a column: nothing more is read
    assert list(next(iter(loader))["lang"]) == ["en"] * 4
    loader.close()


def test_in_memory_rows_may_be_numpy_integers() -> None:
    source = InMemorySource.from_rows([{"id": i} for i in range(50)])
    for row in (np.int64(48), np.int32(48), np.uint8(48)):
        assert [r["id"] for r in source.open_shard_at_row(np.int64(0), row)] == [48, 49]
    assert [r["id"] for r in source.filter(lambda r: True).open_shard_at_row(0, np.int64(49))] == [
        49
    ]
    for bad in (np.float64(2.0), True, "2", np.int64(51)):
        with pytest.raises(RowOutOfRangeError, match="out of range"):
            list(source.open_shard_at_row(0, bad))
