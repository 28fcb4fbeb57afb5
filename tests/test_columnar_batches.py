"""Batches gathered column by column equal the batches collated from dict rows, always."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import (
    AsyncDataLoader,
    Collate,
    CollateError,
    ParquetShardedSource,
    batch_format,
)
from easydata_grain.batch_format import Ragged
from easydata_grain.distributed import Hosts
from easydata_grain.graph.batch_dataset import BatchedMapDataset
from easydata_grain.graph.columns import block_columns, gather
from easydata_grain.sources.arrow_rows import batch_to_rows

NUMBER_TYPES = [
    pa.int8(),
    pa.int16(),
    pa.int32(),
    pa.int64(),
    pa.uint8(),
    pa.uint32(),
    pa.float16(),
    pa.float32(),
    pa.float64(),
    pa.bool_(),
]
LIST_TYPES = [
    pa.list_(pa.int32()),
    pa.large_list(pa.int64()),
    pa.list_(pa.float32()),
    pa.list_(pa.uint16()),
]


def _number_column(rng: np.random.Generator, column_type: pa.DataType, rows: int) -> pa.Array:
    if pa.types.is_boolean(column_type):
        return pa.array(rng.random(rows) < 0.5)
    if pa.types.is_float16(column_type):
        return pa.array(rng.normal(size=rows).astype(np.float16))
    if pa.types.is_floating(column_type):
        return pa.array(rng.normal(size=rows), type=column_type)
    info = np.iinfo(column_type.to_pandas_dtype())
    return pa.array(rng.integers(info.min, info.max, rows, endpoint=True), type=column_type)


def _list_column(
    rng: np.random.Generator, column_type: pa.DataType, rows: int, lengths: list[int]
) -> pa.Array:
    value_type = column_type.value_type
    lists = []
    for row in range(rows):
        n = lengths[row % len(lengths)]
        if pa.types.is_floating(value_type):
            lists.append(rng.normal(size=n).tolist())
        else:
            lists.append(rng.integers(0, 1000, n).tolist())
    return pa.array(lists, type=column_type)


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[pa.Table], Collate]:
    """1-3 blocks of one random schema, and a random Collate."""
    seed = draw(st.integers(0, 2**32 - 1))
    kinds = draw(
        st.lists(st.sampled_from(["number", "text", "list", "fixed"]), min_size=1, max_size=4)
    )
    blocks = draw(st.integers(1, 3))
    lengths = draw(st.lists(st.integers(0, 6), min_size=1, max_size=4))
    rng = np.random.default_rng(seed)
    fields: list[tuple[str, pa.DataType]] = []
    for i, kind in enumerate(kinds):
        if kind == "number":
            fields.append((f"n{i}", draw(st.sampled_from(NUMBER_TYPES))))
        elif kind == "text":
            fields.append((f"t{i}", draw(st.sampled_from([pa.string(), pa.large_string()]))))
        elif kind == "list":
            fields.append((f"l{i}", draw(st.sampled_from(LIST_TYPES))))
        else:
            fields.append((f"f{i}", pa.list_(pa.int16(), 3)))
    out = []
    for _ in range(blocks):
        rows = draw(st.integers(1, 12))
        columns = {}
        for name, column_type in fields:
            if name[0] == "n":
                columns[name] = _number_column(rng, column_type, rows)
            elif name[0] == "t":
                words = [f"w{int(x)}" * int(x % 3) for x in rng.integers(0, 100, rows)]
                columns[name] = pa.array(words, type=column_type)
            elif name[0] == "l":
                columns[name] = _list_column(rng, column_type, rows, lengths)
            else:
                columns[name] = _list_column(rng, column_type, rows, [3])
        out.append(pa.table(columns))
    list_names = [name for name, _ in fields if name[0] in "lf"]
    pad = draw(
        st.one_of(
            st.booleans(),
            st.dictionaries(st.sampled_from(list_names or ["x"]), st.integers(1, 8), max_size=2),
        )
    )
    return out, Collate(pad=pad, pad_value=draw(st.sampled_from([0, -1, 7])))


def _same(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def _random_batch(blocks: list[pa.Table], picks: st.DataObject) -> tuple[list[Any], dict[str, Any]]:
    """Random rows of random blocks, in a random order, repeats allowed: as dict rows, and as
    the columns ``gather`` makes of them."""
    size = picks.draw(st.integers(1, 20))
    chosen = [
        (b, picks.draw(st.integers(0, blocks[b].num_rows - 1)))
        for b in picks.draw(st.lists(st.integers(0, len(blocks) - 1), min_size=size, max_size=size))
    ]
    rows_of = [[row for batch in t.to_batches() for row in batch_to_rows(batch)] for t in blocks]
    columns = [block_columns(t) for t in blocks]
    pieces = []
    for b in sorted({b for b, _ in chosen}):
        slots = np.array([i for i, (cb, _) in enumerate(chosen) if cb == b], dtype=np.int64)
        offsets = np.array([r for cb, r in chosen if cb == b], dtype=np.int64)
        pieces.append((columns[b], slots, offsets))
    return [rows_of[b][r] for b, r in chosen], gather(pieces, size)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=tables(), picks=st.data())
def test_gathered_columns_collate_to_the_row_batch(
    data: tuple[list[pa.Table], Collate], picks: st.DataObject
) -> None:
    blocks, collate = data
    _assert_columns_collate_like_rows(collate, *_random_batch(blocks, picks))


def _assert_columns_collate_like_rows(collate: Collate, rows: Any, columns: Any) -> None:
    """``collate.columns(columns)`` gives ``collate(rows)``, or raises the same CollateError."""
    try:
        expected = collate(rows)
    except CollateError as error:
        with pytest.raises(CollateError) as raised:
            collate.columns(columns)
        assert str(raised.value) == str(error)
        return
    _same(collate.columns(columns), expected)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=tables(), picks=st.data())
def test_without_block_matrices_the_same_batches(
    data: tuple[list[pa.Table], Collate], picks: st.DataObject
) -> None:
    """Blocks too ragged for a padded matrix (here: all of them) gather list by list, into the
    same batches."""
    blocks, collate = data
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batch_format, "_MATRIX_GROWTH", -1)  # only equal-length blocks get one
        rows, columns = _random_batch(blocks, picks)
    _assert_columns_collate_like_rows(collate, rows, columns)


def test_block_matrix_only_when_it_is_small() -> None:
    equal = Ragged(np.arange(6, dtype=np.int32), np.array([0, 3, 6]))
    assert equal.row_matrix().tolist() == [[0, 1, 2], [3, 4, 5]]
    assert np.shares_memory(equal.row_matrix(), equal.values)  # a view, no copy
    ragged = Ragged(np.arange(10, 14), np.array([0, 1, 4]))
    assert ragged.row_matrix().tolist() == [[10, 0, 0], [11, 12, 13]]
    assert ragged.row_matrix() is ragged.row_matrix()  # made once
    long_tail = Ragged(np.arange(100), np.array([0, *range(1, 10), 100]))  # 10 rows, one of 91
    assert long_tail.row_matrix() is None


def test_gathered_matrix_has_values_and_offsets_too() -> None:
    table = pa.table({"t": pa.array([[1], [2, 3], [], [4, 5, 6]], type=pa.list_(pa.int64()))})
    columns = block_columns(table)
    batch = gather([(columns, np.arange(3), np.array([3, 0, 2]))], 3)["t"]
    assert batch.matrix.tolist() == [[4, 5, 6], [1, 0, 0], [0, 0, 0]]
    assert batch.values.tolist() == [4, 5, 6, 1] and batch.offsets.tolist() == [0, 3, 4, 4]
    assert batch.lengths.tolist() == [3, 1, 0]


@pytest.mark.parametrize("pad_value", [-0.0, float("nan"), 2.5])
def test_float_pad_values_are_exact(pad_value: float) -> None:
    table = pa.table({"f": pa.array([[1.0], [2.0, 3.0]], type=pa.list_(pa.float32()))})
    rows = [row for batch in table.to_batches() for row in batch_to_rows(batch)]
    columns = gather([(block_columns(table), np.arange(2), np.array([1, 0]))], 2)
    for pad in (True, {"f": 4}):
        collate = Collate(pad=pad, pad_value=pad_value)
        got, expected = collate.columns(columns)["f"], collate([rows[1], rows[0]])["f"]
        assert got.tobytes() == expected.tobytes()  # -0.0 and NaN bit for bit


def _structure(batch: dict[str, Any], collate: Collate) -> dict[str, Any]:
    """What ``jax.jit`` sees of a batch: its keys, dtypes and, where pad fixes a length, the
    padded shape past the batch dimension."""
    fixed = collate.pad if isinstance(collate.pad, dict) else {}
    return {
        key: (value.dtype, value.shape[1:] if key.removesuffix("_mask") in fixed else None)
        if isinstance(value, np.ndarray)
        else type(value)
        for key, value in batch.items()
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=tables(), picks=st.data())
def test_padded_batches_of_one_schema_have_one_structure(
    data: tuple[list[pa.Table], Collate], picks: st.DataObject
) -> None:
    """Any two batches of the same blocks that collate have the same keys and dtypes (and
    shapes, for fixed pad lengths); with ``pad=True`` every list field has its mask."""
    blocks, collate = data
    try:
        first, second = (collate.columns(_random_batch(blocks, picks)[1]) for _ in range(2))
    except CollateError:
        return  # Ragged and not padded, a row longer than its pad length, or an unknown name.
    assert _structure(first, collate) == _structure(second, collate)
    if collate.pad is True:
        lists = [name for name in blocks[0].column_names if name[0] in "lf"]
        assert all(f"{name}_mask" in first for name in lists)


def test_columns_with_nulls_are_left_to_the_row_path() -> None:
    assert block_columns(pa.table({"a": [1, None]})) is None
    assert block_columns(pa.table({"a": [[1], None]})) is None
    assert block_columns(pa.table({"a": [[1, None]]})) is None
    assert block_columns(pa.table({"a": ["x", None]})) is None
    assert block_columns(pa.table({"a": [[1], [2, 3]], "s": ["x", "y"]})) is not None


def test_unsupported_types_are_left_to_the_row_path() -> None:
    for schema in (
        pa.schema([("s", pa.struct([("x", pa.int32())]))]),
        pa.schema([("b", pa.binary())]),
        pa.schema([("u", pa.uint64())]),
        pa.schema([("n", pa.list_(pa.list_(pa.int32())))]),
        pa.schema([("d", pa.date32())]),
    ):
        assert not Collate.supports(schema)
    assert Collate.supports(pa.schema([("a", pa.int32()), ("b", pa.list_(pa.float32()))]))


def _write(path: Path, seed: int, rows: int, with_nulls: bool) -> str:
    rng = np.random.default_rng(seed)
    ids = np.arange(seed * 1000, seed * 1000 + rows)
    tokens = [rng.integers(0, 100, rng.integers(1, 9)).tolist() for _ in range(rows)]
    if with_nulls:
        tokens[rows // 2] = None
    table = pa.table(
        {
            "id": pa.array(ids, type=pa.int32()),
            "input_ids": pa.array(tokens, type=pa.list_(pa.int32())),
            "text": [f"row {i}" for i in ids],
            "score": pa.array(rng.random(rows), type=pa.float32()),
        }
    )
    pq.write_table(table, path, row_group_size=int(rng.integers(3, 40)))
    return str(path)


def _batching(loader: AsyncDataLoader) -> BatchedMapDataset:
    """The loader's BatchedMapDataset."""
    todo = [loader.dataset]
    while todo:
        dataset = todo.pop()
        if isinstance(dataset, BatchedMapDataset):
            return dataset
        todo.extend(dataset.parents)
    raise AssertionError("no BatchedMapDataset in the graph")


def _batches(loader: AsyncDataLoader) -> list[dict[str, Any]]:
    try:
        return list(loader)
    finally:
        loader.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 1000),
    shards=st.integers(1, 3),
    batch_size=st.integers(1, 9),
    shuffle=st.sampled_from([None, 1, 16, 64]),
    hosts=st.sampled_from([(0, 1), (0, 2), (1, 2), (2, 3)]),
    drop_remainder=st.booleans(),
    pad=st.sampled_from([True, {"input_ids": 8}]),
    epochs=st.integers(1, 2),
)
def test_loader_batches_equal_the_row_path(
    tmp_path_factory: pytest.TempPathFactory,
    seed: int,
    shards: int,
    batch_size: int,
    shuffle: int | None,
    hosts: tuple[int, int],
    drop_remainder: bool,
    pad: Any,
    epochs: int,
) -> None:
    """The loader without transforms (columnar) gives the batches a pass-through map (rows) gives."""
    directory = tmp_path_factory.mktemp("columnar")
    paths = [_write(directory / f"{s}.parquet", seed + s, 30 + 7 * s, False) for s in range(shards)]
    host = Hosts(*hosts)

    def loader(transforms: list[Any]) -> AsyncDataLoader:
        return AsyncDataLoader(
            ParquetShardedSource(paths, share_listing=False),
            global_batch_size=batch_size * host.count,
            hosts=host,
            shuffle_buffer_size=shuffle,
            seed=seed,
            pad=pad,
            drop_remainder=drop_remainder,
            num_epochs=epochs,
            transforms=transforms,
        )

    columnar, rows = loader([]), loader([lambda row: row])
    assert _batching(columnar).columnar and not _batching(rows).columnar
    expected = _batches(rows)
    got = _batches(columnar)
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected, strict=True):
        _same(a, b)
    # Padded, every batch has the structure of the first: the mask even when rows are equal.
    for batch in got:
        assert {k: getattr(v, "dtype", None) for k, v in batch.items()} == {
            k: getattr(v, "dtype", None) for k, v in got[0].items()
        }
        assert "input_ids_mask" in batch
        if isinstance(pad, dict):
            assert batch["input_ids"].shape[1:] == (8,)


def test_a_block_with_nulls_takes_the_row_path_and_its_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "nulls.parquet", 0, 40, True)
    loader = AsyncDataLoader(ParquetShardedSource(path), batch_size=40, pad=True)
    with pytest.raises(CollateError, match=r"input_ids.*None in row"):
        next(iter(loader))
    loader.close()
