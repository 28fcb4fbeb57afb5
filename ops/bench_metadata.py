"""Time to first batch against the number of shards, cold and warm, on the S3 emulator (moto).

    .venv/bin/python -m ops.bench_metadata                        # 100, 1,000 and 10,000 shards
    .venv/bin/python -m ops.bench_metadata --shards 100,1000      # quicker
    .venv/bin/python -m ops.bench_metadata --json-shards 0        # no JSON Lines case

An indexed loader needs every shard's row count before its first batch: one footer read per
Parquet shard (one line-index scan per JSON Lines shard) unless the metadata cache holds it.
For each number of shards N, N small Parquet shards (``--rows`` rows each) are written to a
bucket with a pool of requests, then ``AsyncDataLoader(ParquetShardedSource("s3://.../*.parquet",
metadata_cache_dir=...))`` is built and asked for its first batch:

- **cold**: an empty cache directory: every footer is read (``metadata_threads`` at a time);
- **warm**: the cache filled by the cold run: no footer is read.

Each is timed twice: straight against moto, and through a counting proxy (``ops/fault_proxy.py``,
no faults) that tells the requests by method and by phase, and the bytes of their bodies. Timings are split
into the listing (the source's construction), the metadata (``row_counts()``) and the rest of the
first batch; per shard is the total divided by N. The straight run's times are the ones to quote:
the proxy opens a new upstream connection per request and adds its own time. With
``--json-shards`` the same is done for JSON Lines shards (``JsonShardedSource``, its line indexes
cached under ``index_cache_dir``).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from easydata_grain import AsyncDataLoader, JsonShardedSource, ParquetShardedSource
from easydata_grain.sources.file_source import FileShardedSource
from easydata_grain.synthetic import synthetic_table
from ops.emulators import StoreEndpoint, start_emulator
from ops.fault_proxy import FaultProxy

UPLOAD_BATCH = 64
"""Objects written to the emulator at once."""


@dataclasses.dataclass
class Run:
    """One time to first batch and what it sent to the store."""

    listing_s: float
    metadata_s: float
    first_batch_s: float
    requests: dict[str, int]
    """Requests by method (through the proxy)."""
    phase_requests: tuple[int, int, int]
    """Requests of the listing, of the metadata and of the rest of the first batch."""
    body_bytes: int
    counted_requests: int
    """The source's own count (``stats.requests``)."""

    @property
    def total_s(self) -> float:
        """From the source's construction to the first batch."""
        return self.listing_s + self.metadata_s + self.first_batch_s


def parquet_shard(index: int, rows: int) -> bytes:
    """A small Parquet shard: ``rows`` synthetic rows (ids, text, token ids), one row group."""
    sink = pa.BufferOutputStream()
    pq.write_table(synthetic_table(rows, first_id=index * rows, seed=index, max_tokens=16), sink)
    return sink.getvalue().to_pybytes()


def jsonl_shard(index: int, rows: int) -> bytes:
    """A small JSON Lines shard of ``rows`` rows."""
    first = index * rows
    return "".join(
        json.dumps({"id": i, "text": f"row {i}", "input_ids": [i % 97, i % 89, 7]}) + "\n"
        for i in range(first, first + rows)
    ).encode()


def write_shards(
    store: StoreEndpoint, count: int, rows: int, suffix: str, make: Callable[[int, int], bytes]
) -> str:
    """``count`` shards in a new bucket, ``UPLOAD_BATCH`` requests at a time: their glob."""
    bucket = store.new_bucket(f"meta{count}")
    fs = store.filesystem()
    start = time.perf_counter()
    for first in range(0, count, 1024):
        objects = {
            f"{bucket}/data/shard-{i:05d}{suffix}": make(i, rows)
            for i in range(first, min(first + 1024, count))
        }
        fs.pipe(objects, batch_size=UPLOAD_BATCH)
    print(f"  wrote {count:,} {suffix} shards in {time.perf_counter() - start:.1f} s", flush=True)
    return f"{bucket}/data/*{suffix}"


def settle(proxy: FaultProxy | None, quiet_s: float = 0.5) -> None:
    """Wait until the closed loader's reads ahead have ended (no request for ``quiet_s``), so
    that they are neither counted in nor compete with the next run."""
    count = -1
    while proxy is not None and proxy.request_count != count:
        count = proxy.request_count
        time.sleep(quiet_s)
    if proxy is None:
        time.sleep(quiet_s)


def first_batch(make_source: Callable[[], FileShardedSource], proxy: FaultProxy | None) -> Run:
    """Build a source and a loader over it, and take its first batch."""

    def sent() -> int:
        return 0 if proxy is None else proxy.request_count

    if proxy is not None:
        proxy.reset_counters()
    start = time.perf_counter()
    source = make_source()
    listed = time.perf_counter()
    listing_requests = sent()
    source.row_counts()
    counted = time.perf_counter()
    metadata_requests = sent() - listing_requests
    loader = AsyncDataLoader(source, batch_size=32, shuffle_buffer_size=1024, seed=0, pad=True)
    try:
        next(loader)
    finally:
        loader.close()
    done = time.perf_counter()
    phases = (listing_requests, metadata_requests, sent() - listing_requests - metadata_requests)
    by_method = proxy.requests if proxy is not None else {}
    body_bytes = proxy.body_bytes_sent if proxy is not None else 0
    settle(proxy)  # the reads ahead after the first batch are left out
    return Run(
        listing_s=listed - start,
        metadata_s=counted - listed,
        first_batch_s=done - counted,
        requests=by_method,
        phase_requests=phases,
        body_bytes=body_bytes,
        counted_requests=source.stats.requests,
    )


def report(fmt: str, count: int, state: str, direct: Run, counted: Run) -> None:
    """One line per run: times (straight), requests and bytes (through the proxy)."""
    methods = " ".join(f"{m} {counted.requests.get(m, 0):>6,}" for m in ("GET", "HEAD"))
    phases = "/".join(f"{n:,}" for n in counted.phase_requests)
    print(
        f"{fmt:<8} {count:>7,} {state:<5} {direct.total_s:8.2f} s  "
        f"(list {direct.listing_s:6.2f}, meta {direct.metadata_s:6.2f}, "
        f"batch {direct.first_batch_s:5.2f})  {1000 * direct.total_s / count:7.2f} ms/shard  "
        f"{methods} ({phases:>16})  {counted.body_bytes / 1e6:8.2f} MB  "
        f"{sum(counted.requests.values()) / count:5.2f} req/shard  "
        f"(proxied {counted.total_s:6.2f} s)",
        flush=True,
    )


def source_class(fmt: str, threads: int) -> type[FileShardedSource]:
    """The source of ``fmt`` with ``threads`` metadata reads in flight."""
    base = ParquetShardedSource if fmt == "parquet" else JsonShardedSource
    return type(f"Bench{base.__name__}", (base,), {"metadata_threads": threads})


def measure(
    fmt: str,
    count: int,
    glob: str,
    store: StoreEndpoint,
    proxy: FaultProxy,
    cache_root: Path,
    threads: int,
) -> None:
    """Cold then warm, straight and through the proxy, each pair with its own cache directory."""
    source_type = source_class(fmt, threads)
    cache_argument = "metadata_cache_dir" if fmt == "parquet" else "index_cache_dir"
    runs: dict[tuple[str, bool], Run] = {}
    for through_proxy in (False, True):
        make_source = functools.partial(
            source_type,
            glob,
            storage_options=store.storage_options(proxy.url if through_proxy else None),
            **{cache_argument: tempfile.mkdtemp(dir=cache_root)},
        )
        for state in ("cold", "warm"):
            runs[state, through_proxy] = first_batch(make_source, proxy if through_proxy else None)
    for state in ("cold", "warm"):
        report(fmt, count, state, runs[state, False], runs[state, True])


def main() -> None:
    """Write the shards and print one line per (format, shards, cold/warm)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shards", default="100,1000,10000", help="comma-separated counts")
    parser.add_argument("--rows", type=int, default=64, help="rows per shard")
    parser.add_argument(
        "--json-shards", type=int, default=1000, help="JSON Lines shards (0: no JSON case)"
    )
    parser.add_argument(
        "--metadata-threads",
        type=int,
        default=FileShardedSource.metadata_threads,
        help="metadata reads in flight on a cold start",
    )
    args = parser.parse_args()
    counts = [int(c) for c in args.shards.split(",") if c]
    print(
        f"load average {os.getloadavg()[0]:.2f}; {args.rows} rows per shard; "
        f"metadata_threads={args.metadata_threads}",
        flush=True,
    )
    with (
        start_emulator("s3") as emulator,
        FaultProxy(emulator.endpoint.url) as proxy,
        tempfile.TemporaryDirectory(prefix="bench-metadata-") as cache_root,
    ):
        store = emulator.endpoint
        cases = [("parquet", n, ".parquet", parquet_shard) for n in counts]
        if args.json_shards:
            cases.append(("jsonl", args.json_shards, ".jsonl", jsonl_shard))
        print(
            "format    shards state  to 1st batch  (listing, metadata, rest)  per shard  "
            "requests by method (listing/metadata/rest)  body bytes  requests/shard  "
            "(time through the proxy)",
            flush=True,
        )
        for fmt, count, suffix, make in cases:
            glob = write_shards(store, count, args.rows, suffix, make)
            measure(fmt, count, glob, store, proxy, Path(cache_root), args.metadata_threads)
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
