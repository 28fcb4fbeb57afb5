"""Benchmark the sources against plain pyarrow, in one run, on a generated dataset.

    .venv/bin/python -m ops.bench_sources                # 1M rows (~1 GB uncompressed)
    .venv/bin/python -m ops.bench_sources --rows 200000  # quicker

Prints rows/s and MB/s of ``open_shard`` over all shards against pyarrow reading the same files
and columns into Python rows (``RecordBatch.to_pylist``), with and without projection; the time
of ``open_shard_at_row`` to the first, middle and last row group locally; and the same seek
against the S3 emulator (moto) with the bytes transferred.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pyarrow.parquet as pq

from easydata_grain import ParquetShardedSource
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


def _source_rows(source: ParquetShardedSource) -> Iterable[dict]:
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


def main() -> None:
    """Run every benchmark and print the comparison tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "easydata-bench")
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 emulator part")
    args = parser.parse_args()
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
