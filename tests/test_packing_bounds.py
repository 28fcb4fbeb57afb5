"""Packing against an independent oracle and its bounds: greedy packing is Grain's
concat-then-split (same tokens, same rows), first_fit's row count is bounded by twice the
optimum plus its open rows, the memory a first_fit row may hold, and the inputs the packer
must refuse rather than pass on."""

from __future__ import annotations

import math
from typing import Any

import grain
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easydata_grain import MalformedRowError, Pack, PackIterDataset

lengths = st.lists(st.integers(1, 90), min_size=1, max_size=80)


def rows_of(sizes: list[int]) -> list[dict[str, Any]]:
    """Documents of these lengths, with distinct token ids (1..)."""
    ends = np.cumsum(sizes)
    return [
        {"input_ids": np.arange(end - size + 1, end + 1, dtype=np.int32)}
        for size, end in zip(sizes, ends, strict=True)
    ]


def parent(rows: list[dict[str, Any]]) -> grain.IterDataset:
    return grain.MapDataset.source(rows).to_iter_dataset(
        grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    )


def packed(rows: list[dict[str, Any]], pack: Pack) -> list[dict[str, np.ndarray]]:
    return list(PackIterDataset(parent(rows), pack))


@settings(deadline=None, max_examples=60)
@given(sizes=lengths, seq_length=st.integers(1, 64))
def test_greedy_is_grains_concat_then_split(sizes: list[int], seq_length: int) -> None:
    rows = rows_of(sizes)
    ours = packed(rows, Pack(seq_length))
    theirs = list(
        grain.experimental.ConcatThenSplitIterDataset(
            parent(rows), length_struct={"input_ids": seq_length}
        )
    )
    assert len(ours) == len(theirs) == math.ceil(sum(sizes) / seq_length)
    for a, b in zip(ours, theirs, strict=True):
        assert np.array_equal(a["input_ids"], b["input_ids"])
        assert np.array_equal(a["segment_ids"], b["input_ids_segment_ids"])


@settings(deadline=None, max_examples=60)
@given(sizes=lengths, seq_length=st.integers(1, 64), num_packers=st.integers(1, 6))
def test_first_fit_fills_rows_sanely(sizes: list[int], seq_length: int, num_packers: int) -> None:
    """A row emitted early (no open row had room) and the row the next piece then opens hold
    more than ``seq_length`` tokens together, so fewer than ``2 * tokens / seq_length`` rows are
    emitted before the last ``num_packers``; and first_fit never needs more rows than that."""
    rows = packed(rows_of(sizes), Pack(seq_length, strategy="first_fit", num_packers=num_packers))
    tokens = sum(sizes)
    assert sum(int(r["attention_mask"].sum()) for r in rows) == tokens
    assert len(rows) <= math.ceil(2 * tokens / seq_length) + num_packers
    assert all(r["attention_mask"].any() for r in rows)  # no empty row


def test_a_pinned_first_fit_row_still_loses_no_token() -> None:
    """The stream that pins a first_fit row: a short document, then only documents too long to
    join it: every token still comes out."""
    sizes = [9] + [12 + i % 8 for i in range(300)]
    rows = packed(rows_of(sizes), Pack(20, strategy="first_fit", num_packers=3))
    assert sum(int(r["attention_mask"].sum()) for r in rows) == sum(sizes)


def test_first_fit_holds_a_bounded_number_of_documents() -> None:
    sizes = [9] + [12 + i % 8 for i in range(6_000)]
    iterator = iter(PackIterDataset(parent(rows_of(sizes)), Pack(20, strategy="first_fit")))
    held = []
    for _ in iterator:
        held.append(iterator.get_state()["docs_read"])
    assert max(held) <= 4096


@pytest.mark.parametrize(
    ("row", "pack", "message"),
    [
        ({"input_ids": [1, 2]}, Pack(8, mask_field="assistant_mask"), "'assistant_mask'"),
        ({"input_ids": [1, 2], "m": [5, 0]}, Pack(8, mask_field="m"), "0/1"),
        ({"input_ids": [1, 2], "m": [0.5, 1]}, Pack(8, mask_field="m"), "0/1"),
        ({"input_ids": [1, 2**32 + 5]}, Pack(8), "4294967301"),
    ],
)
def test_inputs_the_packer_must_refuse(row: dict[str, Any], pack: Pack, message: str) -> None:
    with pytest.raises(MalformedRowError, match=message) as caught:
        packed(
            [{"input_ids": [3], **({pack.mask_field: [1]} if pack.mask_field else {})}, row], pack
        )
    assert caught.value.row == 1


@pytest.mark.parametrize("kwargs", [{"mask_field": 3}, {"mask_field": ""}, {"pad_token_id": -1}])
def test_bad_settings_the_config_must_refuse(kwargs: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        Pack(8, **kwargs)
