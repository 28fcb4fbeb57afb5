"""With padding on, every batch has the same structure; a pad length for no list field is an error.

Both ways batches are made are checked: gathered column by column (no transforms) and
collated from dict rows (a per-row transform).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from easydata_grain import AsyncDataLoader, Collate, CollateError, ParquetShardedSource

# Batches of 2: lengths [2, 2] and [4, 4] are equal, [3, 1] and [2, 5] are not.
LENGTHS = [2, 2, 3, 1, 4, 4, 2, 5]
PATHS = pytest.mark.parametrize("transforms", [[], [lambda row: row]], ids=["columns", "rows"])


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``id``, ``input_ids`` (lengths ``LENGTHS``), ``text`` and ``pair`` (always 2 long)."""
    path = tmp_path_factory.mktemp("padding") / "data.parquet"
    table = pa.table(
        {
            "id": range(len(LENGTHS)),
            "input_ids": pa.array([[i] * n for i, n in enumerate(LENGTHS)], pa.list_(pa.int32())),
            "text": [f"row {i}" for i in range(len(LENGTHS))],
            "pair": [[i, -i] for i in range(len(LENGTHS))],
        }
    )
    pq.write_table(table, path, row_group_size=3)
    return str(path)


def batches(path: str, transforms: list[Any], **kwargs: Any) -> list[dict[str, Any]]:
    columns = kwargs.pop("columns", None)
    source = ParquetShardedSource(path, columns=columns)
    return list(AsyncDataLoader(source, batch_size=2, transforms=transforms, **kwargs))


@PATHS
def test_pad_true_gives_every_list_field_a_mask_in_every_batch(
    path: str, transforms: list[Any]
) -> None:
    got = batches(path, transforms, pad=True)
    assert len(got) == 4
    for batch in got:
        assert list(batch) == ["id", "input_ids", "input_ids_mask", "text", "pair", "pair_mask"]
        dtypes = {key: value.dtype for key, value in batch.items() if key != "text"}
        assert dtypes == {
            "id": np.int64,
            "input_ids": np.int32,
            "input_ids_mask": np.bool_,
            "pair": np.int64,
            "pair_mask": np.bool_,
        }
        assert batch["pair_mask"].all()  # Equal lengths: all True.
    equal, ragged = got[0], got[1]
    assert equal["input_ids"].tolist() == [[0, 0], [1, 1]] and equal["input_ids_mask"].all()
    assert ragged["input_ids_mask"].tolist() == [[True] * 3, [True, False, False]]


def test_fixed_pad_lengths_compile_once_under_jit(path: str) -> None:
    """The same keys, shapes and dtypes in every batch, from either path: one compilation."""
    import jax

    traces = []

    @jax.jit
    def step(batch: dict[str, Any]) -> Any:
        traces.append(sorted(batch))
        return (batch["input_ids"] * batch["input_ids_mask"]).sum() + batch["pair_mask"].sum()

    for transforms in ([], [lambda row: row]):
        for batch in batches(
            path, transforms, columns=["id", "input_ids", "pair"], pad={"input_ids": 8, "pair": 2}
        ):
            assert batch["input_ids"].shape == batch["input_ids_mask"].shape == (2, 8)
            step(batch)
    assert len(traces) == 1


@PATHS
def test_a_pad_length_for_a_field_the_batch_lacks_is_an_error(
    path: str, transforms: list[Any]
) -> None:
    with pytest.raises(
        CollateError,
        match=r"pad names \['input_idz'\], not fields of this batch: its fields are "
        r"\['id', 'input_ids', 'pair', 'text'\]",
    ):
        batches(path, transforms, pad={"input_ids": 8, "input_idz": 32})


@PATHS
@pytest.mark.parametrize(("field", "holds"), [("text", "text"), ("id", "numbers")])
def test_a_pad_length_for_text_or_numbers_is_an_error(
    path: str, transforms: list[Any], field: str, holds: str
) -> None:
    with pytest.raises(CollateError, match=rf"pad names field '{field}', which holds {holds}"):
        batches(path, transforms, pad={field: 8})


def test_nested_fields_are_padded_by_their_dotted_name() -> None:
    rows = [{"meta": {"ids": [1, 2, 3]}}, {"meta": {"ids": [4]}}]
    batch = Collate(pad={"meta.ids": 4})(rows)
    assert batch["meta"]["ids"].tolist() == [[1, 2, 3, 0], [4, 0, 0, 0]]
    assert batch["meta"]["ids_mask"].sum(axis=1).tolist() == [3, 1]
    with pytest.raises(CollateError, match=r"pad names \['meta'\].*fields are \['meta.ids'\]"):
        Collate(pad={"meta": 4})(rows)


def test_arrays_of_other_shapes_are_never_padded() -> None:
    rows = [{"image": np.zeros((2, 2), np.uint8)}, {"image": np.ones((2, 2), np.uint8)}]
    assert list(Collate(pad=True)(rows)) == ["image"]
    with pytest.raises(CollateError, match=r"pad names field 'image', which holds 2-d arrays"):
        Collate(pad={"image": 4})(rows)


def test_an_empty_python_list_keeps_the_dtype_of_the_others() -> None:
    """``np.asarray([])`` is float64: it must not turn a batch of int lists into floats."""
    batch = Collate(pad=True)([{"ids": [1, 2]}, {"ids": []}])
    assert batch["ids"].dtype == np.int64 and batch["ids"].tolist() == [[1, 2], [0, 0]]


def test_pad_value_per_field() -> None:
    rows = [
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1]},
        {"input_ids": [5], "attention_mask": [1]},
    ]
    batch = Collate(pad=True, pad_value={"input_ids": 2})(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 2, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]  # fields not named: 0
    with pytest.raises(TypeError, match="pad_value"):
        Collate(pad=True, pad_value={"input_ids": "x"})
