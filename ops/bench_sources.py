"""Benchmark the sources against plain pyarrow, in one run, on a generated dataset.

    .venv/bin/python -m ops.bench_sources                # 1M rows (~1 GB uncompressed)
    .venv/bin/python -m ops.bench_sources --rows 200000  # quicker
    .venv/bin/python -m ops.bench_sources --only json    # the JSON Lines part alone

Prints rows/s and MB/s of ``open_shard`` over all shards against pyarrow reading the same files
and columns into Python rows (``RecordBatch.to_pylist``), with and without projection; the time
of ``open_shard_at_row`` to the first, middle and last row group locally; and the same seek
against the S3 emulator (moto) with the bytes transferred.

The JSON Lines part writes ``--json-rows`` rows (an id, a short text, 64 token ids) as plain
``.jsonl`` and as ``.jsonl.gz`` shards and times, in the same run and over the same lines
(decompressed the same way for ``.gz``), ``JsonShardedSource.open_shard`` over all shards (its
line index built beforehand; that time is printed apart) against plain loops of
``json.loads``, ``orjson.loads`` (also with its list values made numpy arrays, as the
source's default rows are) and ``msgspec`` (when installed) and against
``pyarrow.json.read_json`` (an Arrow table, not Python rows), best of ``--repeat`` rounds, with
each reader's ratio to the ``orjson.loads`` loop.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow.json as pj
import pyarrow.parquet as pq

from easydata_grain import JsonShardedSource, ParquetShardedSource
from easydata_grain.sources.parquet import selected_column_chunks
from easydata_grain.synthetic import write_parquet_dataset


def _dataset(directory: Path, rows: int, shards: int) -> list[str]:
    marker = directory / f".complete-{rows}-{shards}"
    if not marker.exists():
        print(f"generating {rows:,} rows in {shards} shards under {directory} ...", flush=True)
        write_parquet_dataset(
            directory, num_shards=shards, rows_per_shard=rows // shards, row_group_size=2_000
        )
        marker.touch()
    return sorted(str(p) for p in directory.glob("shard-*.parquet"))


def uncompressed_mb(paths: list[str], columns: list[str] | None) -> float:
    """The Parquet-uncompressed size of ``columns`` (all for None) of the files, in MB."""
    total = 0
    for path in paths:
        metadata = pq.read_metadata(path)
        for group in range(metadata.num_row_groups):
            chunks = selected_column_chunks(metadata, group, columns)
            total += sum(chunk.total_uncompressed_size for chunk in chunks)
    return total / 1e6


def _time_rows(rows: Iterable[object]) -> tuple[int, float]:
    start = time.perf_counter()
    count = sum(1 for _ in rows)
    return count, time.perf_counter() - start


def _pyarrow_rows(paths: list[str], columns: list[str] | None) -> Iterable[dict]:
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096, columns=columns):
            yield from batch.to_pylist()


def _source_rows(source: ParquetShardedSource | JsonShardedSource) -> Iterable[dict]:
    for shard in source.shard_names:
        yield from source.open_shard(shard)


def throughput(paths: list[str]) -> None:
    """Rows/s and MB/s of the source against pyarrow, per projection."""
    print("\n## open_shard over all shards against pyarrow -> Python rows (same run)")
    print(f"{'columns':<22} {'reader':<34} {'rows/s':>12} {'MB/s':>8} {'vs pyarrow':>10}")
    for columns in (None, ["id", "input_ids"]):
        label = "all" if columns is None else ",".join(columns)
        megabytes = uncompressed_mb(paths, columns)
        readers: list[tuple[str, Callable[[], Iterable[object]]]] = [
            ("pyarrow to_pylist", lambda c=columns: _pyarrow_rows(paths, c)),
            (
                "easydata (python lists)",
                lambda c=columns: _source_rows(
                    ParquetShardedSource(paths, columns=c, numpy_lists=False)
                ),
            ),
            (
                "easydata (numpy lists, default)",
                lambda c=columns: _source_rows(ParquetShardedSource(paths, columns=c)),
            ),
        ]
        baseline = None
        for name, make in readers:
            count, seconds = _time_rows(make())
            rate = count / seconds
            baseline = baseline or rate
            print(
                f"{label:<22} {name:<34} {rate:>12,.0f} {megabytes / seconds:>8.1f} {rate / baseline:>9.2f}x",
                flush=True,
            )


def _seek_ms(source: ParquetShardedSource, shard: str, row: int, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        next(source.open_shard_at_row(shard, row))
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def seeks(source: ParquetShardedSource, shard: str, label: str) -> None:
    """Time of a seek to the first, middle and last row group of one shard."""
    rows = source.num_rows(shard)
    groups = source.shard_meta(source.shard_index(shard)).index.group_starts
    for where, row in (
        ("first", groups[0]),
        ("middle", groups[len(groups) // 2]),
        ("last", groups[-1] + 1),
    ):
        before = source.stats.snapshot()
        ms = _seek_ms(source, shard, row, repeats=1 if label == "cold" else 5)
        after = source.stats.snapshot()
        transferred = (after["bytes_read"] - before["bytes_read"]) / 1e6
        requests = after["requests"] - before["requests"]
        print(
            f"{label:<28} {where:<7} row {row:>7,}/{rows:,}  {ms:8.1f} ms  "
            f"{transferred:7.2f} MB  {requests:3d} requests",
            flush=True,
        )


def s3_seeks(path: str) -> None:
    """The same seeks against the S3 emulator, with the bytes each one transferred."""
    from ops.emulators import start_emulator

    with start_emulator("s3") as emulator:
        store = emulator.endpoint
        bucket = store.new_bucket("bench")
        url = f"{bucket}/{Path(path).name}"
        store.upload(path, url)
        for columns in (None, ["id"]):
            source = ParquetShardedSource(
                url, storage_options=store.storage_options(), columns=columns
            )
            label = "s3 " + ("all columns" if columns is None else "columns=[id]")
            seeks(source, url, label + " (footer read)")
            seeks(source, url, label)


# -- JSON Lines ----------------------------------------------------------------------------------

_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
]


def _json_dataset(directory: Path, rows: int, shards: int) -> dict[str, list[str]]:
    """``rows`` JSON Lines rows in ``shards`` files, plain and gzipped: {suffix: paths}."""
    directory = directory / f"jsonl-{rows}-{shards}"
    marker = directory / ".complete"
    if not marker.exists():
        print(f"generating {rows:,} JSON Lines rows in {shards} shards under {directory} ...")
        directory.mkdir(parents=True, exist_ok=True)
        rng = random.Random(0)
        per_shard = -(-rows // shards)
        for shard in range(shards):
            lines = []
            for i in range(shard * per_shard, min(rows, (shard + 1) * per_shard)):
                row = {
                    "id": i,
                    "text": " ".join(rng.choices(_WORDS, k=rng.randint(8, 24))),
                    "input_ids": [rng.randrange(50_000) for _ in range(64)],
                }
                lines.append(json.dumps(row) + "\n")
            data = "".join(lines).encode()
            (directory / f"shard-{shard:03d}.jsonl").write_bytes(data)
            (directory / f"shard-{shard:03d}.jsonl.gz").write_bytes(gzip.compress(data, 6))
        marker.touch()
    return {
        suffix: sorted(str(p) for p in directory.glob(f"shard-*{suffix}"))
        for suffix in (".jsonl", ".jsonl.gz")
    }


def _open_lines(path: str) -> IO[bytes]:
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _loop_rows(paths: list[str], loads: Callable[[bytes], object]) -> Iterable[object]:
    for path in paths:
        with _open_lines(path) as lines:
            for line in lines:
                if line.strip():
                    yield loads(line)


def _numpy_row(row: dict) -> dict:
    """A row with each list value made a numpy array: what a loop adds to give numpy rows."""
    for key, value in row.items():
        if type(value) is list:
            row[key] = np.asarray(value)
    return row


def _pyarrow_json_rows(paths: list[str]) -> Iterable[object]:
    """One item per row of the Arrow tables (the rows are not made Python objects)."""
    for path in paths:
        with _open_lines(path) as stream:
            yield from range(pj.read_json(stream).num_rows)


def _json_readers(paths: list[str], cache: str) -> list[tuple[str, Callable[[], Iterable]]]:
    readers: list[tuple[str, Callable[[], Iterable]]] = []
    try:
        import orjson

        readers.append(("orjson.loads loop", lambda: _loop_rows(paths, orjson.loads)))
        readers.append(
            (
                "orjson.loads loop + np.asarray lists",
                lambda: _loop_rows(paths, lambda line: _numpy_row(orjson.loads(line))),
            )
        )
    except ImportError:
        print("orjson is not installed: no orjson loop (ratios are to the json loop)")
    readers.append(("json.loads loop", lambda: _loop_rows(paths, json.loads)))
    try:
        import msgspec

        decode = msgspec.json.Decoder().decode
        readers.append(("msgspec decode loop", lambda: _loop_rows(paths, decode)))
    except ImportError:
        pass
    readers.append(("pyarrow.json.read_json (table)", lambda: _pyarrow_json_rows(paths)))
    for name, numpy_lists in (("(numpy lists, default)", True), ("(python lists)", False)):
        source = JsonShardedSource(paths, index_cache_dir=cache, numpy_lists=numpy_lists)
        readers.append((f"easydata open_shard {name}", lambda s=source: _source_rows(s)))
    return readers


def json_throughput(directory: Path, rows: int, shards: int, repeat: int) -> None:
    """Rows/s of the JSON source against plain parser loops, plain and gzipped, in one run."""
    datasets = _json_dataset(directory, rows, shards)
    print("\n## JSON Lines: open_shard over all shards against parser loops (same run)")
    print(f"best of {repeat} rounds; {rows:,} rows in {shards} shards (id, text, 64 token ids)")
    for suffix, paths in datasets.items():
        megabytes = 0.0
        for path in paths:
            with _open_lines(path) as stream:
                megabytes += len(stream.read()) / 1e6
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            JsonShardedSource(paths, index_cache_dir=cache).row_counts()
            print(
                f"{suffix}: {megabytes:,.0f} MB of JSON; line index of all shards built in "
                f"{time.perf_counter() - start:.2f} s (once per file version, then cached)"
            )
            readers = _json_readers(paths, cache)
            best: dict[str, float] = {}
            for _ in range(repeat):
                for name, make in readers:
                    count, seconds = _time_rows(make())
                    assert count == rows, (name, count)
                    best[name] = max(best.get(name, 0.0), count / seconds)
        baseline = best[readers[0][0]]
        print(f"{'file':<10} {'reader':<44} {'rows/s':>10} {'MB/s':>7} {'vs ' + readers[0][0]:>20}")
        for name, _ in readers:
            rate = best[name]
            print(
                f"{suffix:<10} {name:<44} {rate:>10,.0f} {megabytes * rate / rows:>7.1f} "
                f"{rate / baseline:>19.2f}x",
                flush=True,
            )


def main() -> None:
    """Run every benchmark and print the comparison tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "easydata-bench")
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 emulator part")
    parser.add_argument("--only", choices=["parquet", "json"], help="run one part only")
    parser.add_argument("--json-rows", type=int, default=200_000)
    parser.add_argument("--json-shards", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="JSON rounds (the best counts)")
    args = parser.parse_args()
    if args.only != "parquet":
        json_throughput(args.data, args.json_rows, args.json_shards, args.repeat)
    if args.only == "json":
        return
    paths = _dataset(args.data, args.rows, args.shards)
    print(
        f"dataset: {len(paths)} shards, {sum(pq.read_metadata(p).num_rows for p in paths):,} rows, "
        f"{uncompressed_mb(paths, None):,.0f} MB uncompressed"
    )
    throughput(paths)
    print("\n## open_shard_at_row: time to the first row (median of 5; cold = fresh source)")
    seeks(ParquetShardedSource(paths[-1]), paths[-1], "local cold (footer read)")
    warm = ParquetShardedSource(paths[-1])
    warm.row_counts()
    seeks(warm, paths[-1], "local warm (footer cached)")
    if not args.no_s3:
        s3_seeks(paths[-1])


if __name__ == "__main__":
    main()
