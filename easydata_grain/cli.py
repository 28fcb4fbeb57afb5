"""The ``easydata-grain`` command: ``demo`` runs the library end to end on generated data."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

from easydata_grain.sources.parquet import ParquetShardedSource
from easydata_grain.synthetic import write_parquet_dataset


def demo(args: argparse.Namespace) -> int:
    """Generate a dataset, stream it through a source, seek, and report throughput."""
    with tempfile.TemporaryDirectory(prefix="easydata-grain-demo-") as directory:
        print(f"generating {args.shards} shards x {args.rows} rows in {directory}")
        write_parquet_dataset(directory, num_shards=args.shards, rows_per_shard=args.rows)
        source = ParquetShardedSource(f"{directory}/*.parquet", columns=["id", "input_ids"])
        print(
            f"{len(source.shard_names)} shards, {sum(source.row_counts())} rows, schema: "
            f"{', '.join(f'{f.name}: {f.type}' for f in source.schema)}"
        )
        start, seen, tokens = time.perf_counter(), set(), 0
        for shard in source.shard_names:
            for row in source.open_shard(shard):
                seen.add(row["id"])
                tokens += len(row["input_ids"])
        elapsed = time.perf_counter() - start
        total = sum(source.row_counts())
        print(
            f"streamed {len(seen)} rows ({tokens} tokens) in {elapsed:.2f}s: "
            f"{len(seen) / elapsed:,.0f} rows/s"
        )
        if len(seen) != total:
            print(f"ERROR: expected {total} distinct rows, saw {len(seen)}", file=sys.stderr)
            return 1
        shard, row = source.shard_names[-1], args.rows // 2
        start = time.perf_counter()
        first = next(source.open_shard_at_row(shard, row))
        print(
            f"seek to row {row} of the last shard: {1000 * (time.perf_counter() - start):.1f} ms "
            f"(id {first['id']})"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``easydata-grain`` command."""
    parser = argparse.ArgumentParser(prog="easydata-grain", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run the library end to end on generated data")
    demo_parser.add_argument("--shards", type=int, default=8)
    demo_parser.add_argument("--rows", type=int, default=25_000, help="rows per shard")
    demo_parser.set_defaults(run=demo)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
