"""Property: on every store and format, open_shard_at_row(s, r) is open_shard(s) from row r on.

Random files (row counts, row-group sizes, compression) are written to each emulator, and
random start rows are compared with a full read of the same shard.
"""

from __future__ import annotations

import gzip
import io
import json
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import JsonShardedSource, ParquetShardedSource
from ops.emulators import StoreEndpoint
from tests.helpers import plain


def _rows(count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "id": i,
            "text": "ü" * int(rng.integers(0, 5)) + str(i),
            "ids": rng.integers(0, 9, rng.integers(0, 4)).tolist(),
        }
        for i in range(count)
    ]


def _encode(fmt: str, rows: list[dict], group: int) -> bytes:
    if fmt == "parquet":
        buffer = io.BytesIO()
        table = pa.Table.from_pylist(
            rows,
            schema=pa.schema(
                [("id", pa.int64()), ("text", pa.string()), ("ids", pa.list_(pa.int64()))]
            ),
        )
        pq.write_table(table, buffer, row_group_size=group)
        return buffer.getvalue()
    lines = "".join(json.dumps(r) + "\n" for r in rows).encode()
    if fmt == "json":
        return json.dumps(rows).encode()
    return gzip.compress(lines) if fmt == "jsonl.gz" else lines


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    fmt=st.sampled_from(["parquet", "jsonl", "jsonl.gz", "json"]),
    count=st.integers(1, 400),
    group=st.integers(1, 128),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_seek_equals_suffix(
    store: StoreEndpoint,
    tmp_path_factory,
    fmt: str,
    count: int,
    group: int,
    seed: int,
    data: st.DataObject,
) -> None:
    rows = _rows(count, seed)
    bucket = store.new_bucket("seek")
    url = f"{bucket}/f-{uuid.uuid4().hex[:6]}.{fmt}"
    store.upload(_encode(fmt, rows, group), url)
    options = store.storage_options()
    if fmt == "parquet":
        source = ParquetShardedSource(
            url, storage_options=options, batch_size=data.draw(st.integers(1, 64))
        )
    else:
        source = JsonShardedSource(
            url,
            jsonl=fmt != "json",
            storage_options=options,
            index_cache_dir=str(tmp_path_factory.mktemp("idx")),
        )
    shard = source.shard_names[0]
    full = [plain(r) for r in source.open_shard(shard)]
    assert full == rows
    for row in data.draw(st.lists(st.integers(0, count), min_size=1, max_size=3)):
        assert [plain(r) for r in source.open_shard_at_row(shard, row)] == full[row:]
