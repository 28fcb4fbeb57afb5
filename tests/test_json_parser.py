"""JsonShardedSource parses JSON Lines with orjson, and its rows are what ``json`` makes of them.

orjson refuses what ``json`` accepts beyond the standard (NaN, Infinity, 1e400, escaped lone
surrogates) and reads integers beyond 64 bits as floats; the source must give ``json``'s values
for those, and keep ``json``'s errors (with file and line) for what neither accepts. Numeric
lists become numpy arrays exactly as before: int64 for ints only, float64 for ints and floats,
lists for anything else (bools included).
"""

from __future__ import annotations

import gzip
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from easydata_grain import JsonShardedSource, MalformedRowError
from easydata_grain.sources.json import _numeric_array, _numeric_array_exact
from easydata_grain.sources.skipped import SkippedRow


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types (NaN equal to NaN, -0.0 not equal to 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def reference(line: bytes, numpy_lists: bool = True) -> Any:
    """The row the json-based reader gave: ``json.loads`` of the strictly decoded line, its
    numeric lists made arrays by the original conversion."""
    value = json.loads(line.decode().removeprefix("\ufeff"))
    if numpy_lists and type(value) is dict:
        for key, item in value.items():
            if type(item) is list and item:
                array = _numeric_array_exact(item)
                if array is not None:
                    value[key] = array
    return value


def read_all(path: Path, tmp_path: Path, **kwargs: Any) -> list[Any]:
    source = JsonShardedSource(str(path), index_cache_dir=tmp_path / "cache", **kwargs)
    return list(source.open_shard(str(path)))


EDGE_LINES = [
    b'{"a": 1, "b": 2, "a": 3}',  # duplicate keys: the last value, the first position
    b'{"x": NaN, "y": Infinity, "z": -Infinity, "l": [1, NaN, 2.5]}',
    b'{"x": 1e400, "y": -1e400, "l": [1e400, 1]}',
    b'{"big": 123456789012345678901234567890, "neg": -9223372036854775809}',
    b'{"u64": 18446744073709551615, "i64": -9223372036854775808, "max": 9223372036854775807}',
    b'{"ids": [1, 2, 123456789012345678901234567890]}',  # stays a list of Python ints
    b'{"ids": [1, 18446744073709551615]}',  # beyond int64: a list, as before
    b'{"ids": [1.5, 18446744073709551615]}',  # with a float: float64
    b'{"digits": "12345678901234567890123", "n": 1}',  # long digits in a string
    b'{"s": "\\ud800", "t": "\\udc00\\ud800", "pair": "\\ud83d\\ude00"}',  # lone surrogates
    b'{"bools": [true, false], "mixed": [true, 1], "mixed_f": [false, 1.5], "ones": [1, 0]}',
    b'{"floats": [0.1, -0.0, 5e-324, 1.7976931348623157e308], "ints_f": [1, 2.0]}',
    b'{"strs": ["a", "b"], "none": [1, null], "nested": [[1, 2], [3]], "empty": []}',
    b'{"deep": {"ids": [1, 2, 3]}, "list_of_dicts": [{"a": 1}]}',
    b'\xef\xbb\xbf{"bom": 1}',
    b'  {"padded": [1, 2]}  \r',
]


def test_edge_cases_parse_to_the_values_json_gives(tmp_path: Path) -> None:
    path = tmp_path / "edge.jsonl"
    path.write_bytes(b"\n".join(EDGE_LINES) + b"\n")
    for numpy_lists in (True, False):
        rows = read_all(path, tmp_path, numpy_lists=numpy_lists)
        expected = [reference(line, numpy_lists) for line in EDGE_LINES]
        for line, row, want in zip(EDGE_LINES, rows, expected, strict=True):
            assert same(row, want), (line, row, want)
    rows = read_all(path, tmp_path)
    assert rows[3]["big"] == 123456789012345678901234567890
    assert type(rows[3]["neg"]) is int
    assert rows[5]["ids"] == [1, 2, 123456789012345678901234567890]
    assert rows[9]["s"] == "\ud800"
    assert isinstance(rows[10]["bools"], list) and isinstance(rows[10]["mixed"], list)
    assert rows[10]["ones"].dtype == np.int64
    assert rows[11]["ints_f"].dtype == np.float64
    assert rows[0] == {"a": 3, "b": 2}


@pytest.mark.parametrize("padding", range(9))
def test_a_long_integer_is_exact_at_every_byte_alignment(tmp_path: Path, padding: int) -> None:
    lines = [
        b'{"p": "' + b"x" * padding + b'", "n": ' + str(number).encode() + b"}"
        for number in (
            10**18,
            2**63 - 1,
            2**63,
            2**64 - 1,
            2**64,
            -(2**63),
            -(2**63) - 1,
            10**30 + 7,
            -(10**25),
        )
    ]
    path = tmp_path / "long.jsonl"
    path.write_bytes(b"\n".join(lines))
    rows = read_all(path, tmp_path)
    assert [row["n"] for row in rows] == [json.loads(line)["n"] for line in lines]
    assert all(type(row["n"]) is int for row in rows)


BAD_LINES = [
    (b'{"s": "\xff"}', r"line 2 \(row 1\) is not valid UTF-8"),
    (b'{"s": "\xed\xa0\x80"}', r"line 2 \(row 1\) is not valid UTF-8"),
    (b"[1, 2]", r"line 2 \(row 1\) is not a JSON object but an array"),
    (b'"text"', r"line 2 \(row 1\) is not a JSON object but a string"),
    (b"12345678901234567890123", r"line 2 \(row 1\) is not a JSON object but a number"),
    (b"NaN", r"line 2 \(row 1\) is not a JSON object but a number"),
    (b"null", r"line 2 \(row 1\) is not a JSON object but null"),
    (b'{"a": 1,}', r"line 2 \(row 1\) is not valid JSON"),
    (b'{"a": nan}', r"line 2 \(row 1\) is not valid JSON"),
    (b'{"s": "\x01"}', r"line 2 \(row 1\) is not valid JSON \(Invalid control character"),
    (b'{"a": 1} {"b": 2}', r"line 2 \(row 1\) is not valid JSON \(Extra data"),
    (b'{"a": 01}', r"line 2 \(row 1\) is not valid JSON"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_LINES)
@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_bad_lines_are_errors_naming_file_and_line(
    tmp_path: Path, bad: bytes, message: str, suffix: str
) -> None:
    content = b'{"i": 0}\n' + bad + b'\n{"i": 2, "ids": [1, 2]}\n'
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(gzip.compress(content) if suffix.endswith(".gz") else content)
    source = JsonShardedSource(str(path), index_cache_dir=tmp_path / "cache")
    with pytest.raises(MalformedRowError, match=r"bad\.jsonl(\.gz)?'.* " + message) as info:
        list(source.open_shard(str(path)))
    assert info.value.row == 1
    skipping = JsonShardedSource(str(path), index_cache_dir=tmp_path / "cache", on_bad_row="skip")
    rows = list(skipping.open_shard(str(path)))
    assert [row["i"] for row in rows] == [0, 2]
    (placeholder,) = [r for r in skipping.rows_with_gaps(str(path), 0) if isinstance(r, SkippedRow)]
    assert (placeholder.row, placeholder.line) == (1, 2)
    assert next(iter(skipping.open_shard_at_row(str(path), 1)))["i"] == 2


def test_bad_rows_keep_their_addresses_across_pieces_and_blocks(tmp_path: Path) -> None:
    """Bad rows spread over many chunks and blocks (tiny blocks, odd batch sizes)."""

    class SmallBlocks(JsonShardedSource):
        block_size = 97

    rng = random.Random(5)
    lines, good = [], []
    for i in range(300):
        kind = rng.random()
        if kind < 0.1:
            lines.append(b"[1]")
        elif kind < 0.15:
            lines.append(b'{"s": "\xff"}')
        elif kind < 0.2:
            lines.append(b"")  # blank: not a row
            continue
        else:
            lines.append(json.dumps({"i": i, "n": 2**64 + i if i % 7 == 0 else i}).encode())
            good.append(len([x for x in lines if x.strip()]) - 1)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rows = [x for x in lines if x.strip()]
    expected = {row: reference(rows[row]) for row in good}
    for batch_size in (1, 7, 64, 1024):
        for cls in (JsonShardedSource, SmallBlocks):
            source = cls(
                str(path),
                index_cache_dir=tmp_path / "cache",
                on_bad_row="skip",
                batch_size=batch_size,
            )
            for start in (0, 1, 13, 150):
                items = list(source.rows_with_gaps(str(path), start))
                assert len(items) == source.num_rows(str(path)) - start
                for offset, item in enumerate(items):
                    row = start + offset
                    if row in good:
                        assert same(item, expected[row])
                    else:
                        assert isinstance(item, SkippedRow) and item.row == row


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["12345678901234567890", "\ud800", "\u00e9\u20ac\U0001f600"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)
numeric_lists = st.lists(
    st.one_of(
        st.integers(min_value=-(2**65), max_value=2**65),
        st.integers(min_value=-1000, max_value=1000),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.none(),
        st.just("1"),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(numeric_lists)
def test_numeric_array_matches_the_numpy_conversion(items: list[Any]) -> None:
    fast = _numeric_array(list(items))
    exact = _numeric_array_exact(list(items))
    assert (fast is None) == (exact is None)
    if fast is not None:
        assert same(fast, exact) and fast.flags.writeable


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.dictionaries(st.text(max_size=5), json_values, max_size=6), min_size=1))
def test_rows_equal_the_json_reader_on_random_objects(
    tmp_path: Path, objects: list[dict[str, Any]]
) -> None:
    lines = [json.dumps(o).encode() for o in objects]  # NaN and Infinity literals included
    path = tmp_path / "random.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    for numpy_lists in (True, False):
        rows = read_all(path, tmp_path, numpy_lists=numpy_lists)
        for row, line in zip(rows, lines, strict=True):
            assert same(row, reference(line, numpy_lists))


@pytest.mark.parametrize("odd", [None, "true", "2.5", "18446744073709551615", '"s"', "null"])
@pytest.mark.parametrize("lengths", ["same", "varied"])
def test_int_lists_of_many_rows_convert_like_one_row_at_a_time(
    tmp_path: Path, odd: str | None, lengths: str
) -> None:
    """Int lists of one key are packed for a whole piece at once; one odd row (a bool, a
    float, a big int, a string, null) sends that key back to the row-by-row conversion."""
    rng = random.Random(3)
    lines = []
    for i in range(40):
        size = 8 if lengths == "same" else rng.randint(1, 12)
        ids = [rng.randrange(-(2**40), 2**40) for _ in range(size)]
        items = ", ".join(map(str, ids)) + (f", {odd}" if odd and i == 17 else "")
        other = "[]" if i % 5 == 0 else "[1.5, 2]"
        lines.append(f'{{"i": {i}, "ids": [{items}], "f": {other}, "m": [0, 1]}}'.encode())
    path = tmp_path / "lists.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rows = read_all(path, tmp_path, batch_size=16)
    for row, line in zip(rows, lines, strict=True):
        assert same(row, reference(line))
    rows[0]["ids"][:] = -1  # rows own their arrays' contents: no other row changes
    assert same(rows[1], reference(lines[1]))


column_items = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-2, max_value=2),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)


int_lists = st.lists(st.integers(-2, 9), min_size=1, max_size=6) | st.just([])


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        st.lists(int_lists, min_size=2, max_size=40),
        st.lists(
            st.one_of(int_lists, st.lists(column_items, max_size=6), st.none(), st.just("x")),
            min_size=1,
            max_size=40,
        ),
    ),
    st.integers(1, 16),
    st.booleans(),
)
@example(values=[[1, 2, 3], [4], [5, 6, 7, 8, 9]], batch_size=3, same_keys=True)
def test_a_shared_key_converts_like_one_row_at_a_time(
    tmp_path: Path, values: list[Any], batch_size: int, same_keys: bool
) -> None:
    """One key's lists in many rows (ints, 0/1 next to bools, floats, empty lists, lengths
    that add up like equal ones, other kinds of value), packed a piece at a time, give each
    row what the row-by-row conversion gives; rows with other keys take the row-by-row way."""
    lines = [
        json.dumps(
            {"ids": value, "i": i} if same_keys or i % 3 else {"j": i, "ids": value}
        ).encode()
        for i, value in enumerate(values)
    ]
    path = tmp_path / "column.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rows = read_all(path, tmp_path, batch_size=batch_size)
    for row, line in zip(rows, lines, strict=True):
        assert same(row, reference(line)), (line, row)
