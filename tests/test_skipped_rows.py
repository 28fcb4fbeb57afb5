"""Rows skipped with ``on_bad_row="skip"`` never shift addresses: every good row exactly once.

Before the fix, blocks were read by counting the rows ``open_shard_at_row`` yields, whose
stream leaves bad rows out, so every row after a bad line moved by one address: the loader
delivered some rows twice (as many rows as lines) or raised ``IndexError`` on a short block.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import AsyncDataLoader, JsonShardedSource
from easydata_grain.distributed import Hosts
from easydata_grain.sources.skipped import SkippedRow

_settings = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def write_shard(path: Path, rows: int, bad: set[int], *, jsonl: bool, first_id: int) -> list[int]:
    """A JSONL (or JSON array) shard of ``rows`` rows whose rows in ``bad`` are malformed; the
    ids of the good rows."""
    good = [first_id + r for r in range(rows) if r not in bad]
    if jsonl:
        lines = ["{bad" if r in bad else json.dumps({"id": first_id + r}) for r in range(rows)]
        path.write_text("\n".join(lines) + "\n")
    else:
        items = ["7" if r in bad else json.dumps({"id": first_id + r}) for r in range(rows)]
        path.write_text("[" + ",\n".join(items) + "]")
    return good


def ids_of(loader: AsyncDataLoader) -> list[int]:
    return [i for batch in loader for i in batch["id"].tolist()]


def test_the_reported_case_3000_rows_2_bad_lines(tmp_path: Path) -> None:
    """3000 lines, 2 malformed: 2998 rows, each once, shuffled or not; the lines are reported."""
    path = tmp_path / "a.jsonl"
    good = write_shard(path, 3000, {700, 2047}, jsonl=True, first_id=0)
    for shuffle in (0, 256):
        source = JsonShardedSource(str(path), on_bad_row="skip", index_cache_dir=tmp_path)
        loader = AsyncDataLoader(source, batch_size=7, shuffle_buffer_size=shuffle, seed=3)
        assert sorted(ids_of(loader)) == good
        assert {(s.row, s.line) for s in source.skipped} == {(700, 701), (2047, 2048)}
        assert loader.stats()["skipped_rows"] >= 2


def test_short_last_block_of_a_shard(tmp_path: Path) -> None:
    """The bad line in the last block of a shard: the loader raised IndexError before."""
    path = tmp_path / "a.jsonl"
    good = write_shard(path, 1030, {1028}, jsonl=True, first_id=0)
    source = JsonShardedSource(str(path), on_bad_row="skip", index_cache_dir=tmp_path)
    assert sorted(ids_of(AsyncDataLoader(source, batch_size=16))) == good


def test_blocks_keep_a_placeholder_at_each_skipped_address(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    write_shard(path, 10, {3}, jsonl=True, first_id=0)
    source = JsonShardedSource(str(path), on_bad_row="skip", index_cache_dir=tmp_path)
    block = source.read_block(0, 0)
    assert len(block) == 10
    assert block[3] == SkippedRow(str(path), 3, 4)
    assert [r["id"] for r in block if isinstance(r, dict)] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert [r["id"] for r in source.open_shard_at_row(str(path), 3)] == [4, 5, 6, 7, 8, 9]


def test_skipped_rows_are_logged_with_file_and_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "a.jsonl"
    write_shard(path, 50, {10}, jsonl=True, first_id=0)
    source = JsonShardedSource(str(path), on_bad_row="skip", index_cache_dir=tmp_path)
    with caplog.at_level(logging.WARNING):
        list(AsyncDataLoader(source, batch_size=8))
    assert any(str(path) in r.message and "line 11" in r.message for r in caplog.records)


@st.composite
def layouts(draw: st.DrawFn) -> dict[str, Any]:
    jsonl = draw(st.booleans())
    shards = []
    for _ in range(draw(st.integers(1, 3))):
        rows = draw(st.integers(1, 2600))
        bad = draw(st.sets(st.integers(0, rows - 1), max_size=min(6, rows - 1)))
        shards.append((rows, bad))
    hosts = draw(st.sampled_from([1, 2]))
    return {
        "jsonl": jsonl,
        "shards": shards,
        "hosts": hosts,
        "batch_size": draw(st.integers(1, 40)),
        "shuffle": draw(st.sampled_from([0, 1, 100, 5000])),
        "seed": draw(st.integers(0, 3)),
        "stop": draw(st.floats(0, 1)),
    }


@_settings
@given(layout=layouts())
def test_every_good_row_exactly_once_and_resume_is_exact(
    tmp_path_factory: pytest.TempPathFactory, layout: dict[str, Any]
) -> None:
    """Random bad rows, shards, batch sizes, shuffles and host counts: each host's rows put
    together are the good rows, each once; a host stopped anywhere and resumed from its state
    continues with exactly the batches it would have served."""
    root = tmp_path_factory.mktemp("skip")
    paths, good = [], []
    for i, (rows, bad) in enumerate(layout["shards"]):
        path = root / (f"s{i}.jsonl" if layout["jsonl"] else f"s{i}.json")
        good += write_shard(path, rows, bad, jsonl=layout["jsonl"], first_id=i * 10_000)
        paths.append(str(path))

    def loader(host: int) -> AsyncDataLoader:
        source = JsonShardedSource(
            paths, jsonl=layout["jsonl"], on_bad_row="skip", index_cache_dir=root
        )
        return AsyncDataLoader(
            source,
            global_batch_size=layout["batch_size"] * layout["hosts"],
            shuffle_buffer_size=layout["shuffle"],
            seed=layout["seed"],
            drop_remainder=False,
            hosts=Hosts(host, layout["hosts"]),
        )

    delivered = []
    for host in range(layout["hosts"]):
        batches = list(loader(host))
        for batch in batches:
            mask = batch.get("sample_mask")
            ids = batch["id"].tolist()
            delivered += [i for k, i in enumerate(ids) if mask is None or mask[k]]
        stop = int(layout["stop"] * len(batches))
        first = loader(host)
        for _ in range(stop):
            next(first)
        resumed = loader(host)
        resumed.set_state(json.loads(json.dumps(first.get_state())))
        rest = list(resumed)
        assert [b["id"].tolist() for b in rest] == [b["id"].tolist() for b in batches[stop:]]
    assert sorted(delivered) == sorted(good)
    assert len(delivered) == len(set(delivered))
