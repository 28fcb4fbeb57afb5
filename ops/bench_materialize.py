"""Benchmark materialization: rows/s tokenized, packed and written as Parquet, engine against
engine and against tokenizing one example at a time (EasyData's way), and the cache's time to
first batch cold against warm, in one run, on the same rows.

    .venv/bin/python -m ops.bench_materialize                       # 1M short rows
    .venv/bin/python -m ops.bench_materialize --rows 200000 --rounds 1

The rows are generated short texts (``synthetic_table``: 1..``--max-words`` words) in
``--shards`` Parquet files; the pipeline is ``PackedRows(EpochRows(ParquetShardedSource(...),
TokenizeTransform(tiny_tokenizer())), Pack(seq_length))`` (unshuffled; ``--seq-length 0``: no
packing), written in ``--units`` units, each packed from an empty packer. Cases:

1. one example at a time: every row read, ``tokenizer(text)`` called on it alone, the token
   lists packed by the same ``Pack`` in one stream, the rows collected and written as one
   Parquet file at the end (no shards, no atomicity, no resume);
2. ``materialize(engine="local", workers=1)`` (in this process) and ``workers=2`` (two spawned
   processes: their start-up is part of the time);
3. ``materialize(engine="ray", workers=2)`` on a local Ray of 2 CPUs, cold (the run starts
   Ray and stops it: all of it is timed) and warm (Ray already running).

Each case runs ``--rounds`` times round-robin, the best round counts (other work on a shared
machine only slows a run down). Rows/s counts input rows (documents). The shards of every
engine are checked to be the same bytes (their sha256 in the manifests): the benchmark exits
1 otherwise.

Then the cache: a ``Pipeline`` of the same rows (``cache_path`` set, tokenize and pack stages,
batches of 64) built and its first batch taken, three times: without the cache (tokenized as
it is read), cold (a miss: the whole dataset tokenized and materialized first) and warm (a
hit: the entry's manifest and shards checked by sha256, then read).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grain
import pyarrow as pa
import pyarrow.parquet as pq

from easydata_grain import Pack, PackIterDataset, ParquetShardedSource, Pipeline, TokenizeTransform
from easydata_grain.materialize import EpochRows, RayOptions, materialize, start_local_ray
from easydata_grain.materialize.packed_rows import PackedRows
from easydata_grain.synthetic import synthetic_table, tiny_tokenizer

BASELINE = "one example at a time (EasyData's way)"


def write_rows(directory: Path, rows: int, shards: int, max_words: int) -> list[str]:
    """``rows`` generated rows (``id``, ``text``) in ``shards`` Parquet files."""
    per_shard = math.ceil(rows / shards)
    paths = []
    for shard in range(shards):
        count = min(per_shard, rows - shard * per_shard)
        table = synthetic_table(count, first_id=shard * per_shard, max_tokens=max_words)
        path = directory / f"shard-{shard:03d}.parquet"
        pq.write_table(table.select(["id", "text"]), path, row_group_size=8192)
        paths.append(str(path))
    return paths


def one_at_a_time(
    paths: list[str], tokenizer: object, pack: Pack | None, out: Path, limit: int | None
) -> int:
    """EasyData's way: one tokenizer call per example, packed in one stream, one file written
    at the end; the first ``limit`` rows only when given."""
    source = ParquetShardedSource(paths, columns=["id", "text"])
    ids, texts, tokens = [], [], []
    for shard in source.shard_names:
        for row in source.open_shard(shard):
            if limit is not None and len(ids) == limit:
                break
            ids.append(row["id"])
            texts.append(row["text"])
            tokens.append(tokenizer(row["text"])["input_ids"])  # type: ignore[operator]
    if pack is None:
        table = pa.table({"id": ids, "text": texts, "input_ids": tokens})
    else:
        documents = grain.MapDataset.source([{"input_ids": t} for t in tokens])
        packed = list(PackIterDataset(documents.to_iter_dataset(), pack))
        table = pa.table({name: [row[name] for row in packed] for name in packed[0]})
    pq.write_table(table, out / "rows.parquet", compression="zstd")
    return len(ids)


def first_batch_seconds(config: dict[str, Any]) -> float:
    """Seconds to build the config's pipeline and take its first batch."""
    start = time.perf_counter()
    next(iter(Pipeline.from_config(config).configured().build()))
    return time.perf_counter() - start


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--max-words", type=int, default=12, help="texts of 1..N words")
    parser.add_argument("--shards", type=int, default=8, help="input Parquet files")
    parser.add_argument("--units", type=int, default=16, help="output shards (work units)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seq-length", type=int, default=512, help="0: no packing")
    parser.add_argument(
        "--baseline-rows",
        type=int,
        default=None,
        help="time the one-at-a-time baseline on the first N rows only (its rows/s is per "
        "row: about 1 ms a row here, so 1M rows take 15-20 minutes); default: all rows",
    )
    args = parser.parse_args()

    tokenizer = tiny_tokenizer()
    pack = (
        Pack(seq_length=args.seq_length, eos_token_id=tokenizer.eos_token_id)
        if args.seq_length
        else None
    )
    unit_rows = math.ceil(args.rows / args.units)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "source").mkdir()
        paths = write_rows(root / "source", args.rows, args.shards, args.max_words)

        def pipeline() -> EpochRows | PackedRows:  # new for every run: no block cached before
            rows = EpochRows(
                ParquetShardedSource(paths, columns=["id", "text"]),
                TokenizeTransform(tokenizer, text_field="text"),
            )
            return rows if pack is None else PackedRows(rows, pack)

        packing = f", packed into rows of {args.seq_length}" if pack else ""
        print(
            f"{args.rows:,} rows of 1..{args.max_words} words in {args.shards} files, "
            f"tokenized by synthetic.tiny_tokenizer(){packing}; {args.units} units of "
            f"{unit_rows:,} rows"
        )
        checksums: dict[str, list[str]] = {}

        def engine(name: str, **options: Any) -> Callable[[Path], tuple[int, float]]:
            def run(out: Path) -> tuple[int, float]:
                start = time.perf_counter()
                done = materialize(pipeline(), str(out), unit_rows=unit_rows, **options)
                seconds = time.perf_counter() - start
                checksums[name] = [shard.sha256 for shard in done.manifest.shards]
                return done.manifest.positions, seconds  # input rows, as the baseline's

            return run

        def baseline(out: Path) -> tuple[int, float]:
            start = time.perf_counter()
            count = one_at_a_time(paths, tokenizer, pack, out, args.baseline_rows)
            return count, time.perf_counter() - start

        def warm_ray(out: Path) -> tuple[int, float]:
            import ray

            start_local_ray(num_cpus=2)  # not timed: the cluster is up before the job
            try:
                return engine("ray, 2 workers, warm", engine="ray", workers=2)(out)
            finally:
                ray.shutdown()

        cases: dict[str, Callable[[Path], tuple[int, float]]] = {
            BASELINE: baseline,
            "local, 1 process": engine("local, 1 process", workers=1),
            "local, 2 processes": engine("local, 2 processes", workers=2),
            "ray, 2 workers, cold": engine(
                "ray, 2 workers, cold", engine="ray", workers=2, ray=RayOptions(num_cpus=2)
            ),
            "ray, 2 workers, warm": warm_ray,
        }
        best: dict[str, float] = dict.fromkeys(cases, 0.0)
        for round_number in range(args.rounds):
            for index, (name, case) in enumerate(cases.items()):
                out = root / f"out-{round_number}-{index}"
                out.mkdir()
                count, seconds = case(out)
                best[name] = max(best[name], count / seconds)
                shutil.rmtree(out)
                print(f"  round {round_number + 1}: {name}: {seconds:.1f} s", flush=True)

        tokenizer.save_pretrained(root / "tokenizer")
        config: dict[str, Any] = {
            "datasets": [{"data_files": paths, "columns": ["id", "text"]}],
            "default_tokenizer": str(root / "tokenizer"),
            "tokenize": {"remove_columns": ["text", "id"]},
            "load": {"batch_size": 64},
        }
        if pack is not None:
            config["pack"] = {"enabled": True, "seq_length": args.seq_length}
        uncached = min(first_batch_seconds(config) for _ in range(2))  # the first imports
        config["datasets"][0]["cache_path"] = str(root / "cache")
        cold = first_batch_seconds(config)
        warm = first_batch_seconds(config)
    print(f"\n{'case':<42} {'rows/s':>12} {'vs one at a time':>17}")
    for name, rate in best.items():
        print(f"{name:<42} {rate:>12,.0f} {rate / best[BASELINE]:>16.2f}x")
    if len({tuple(sums) for sums in checksums.values()}) != 1:
        print("\nFAIL: the engines wrote different bytes", file=sys.stderr)
        sys.exit(1)
    print(f"\nevery engine wrote the same {args.units} shards, byte for byte (sha256)")
    print("\ntime to first batch (build + first batch of 64), the Pipeline's cache:")
    print(f"  no cache (tokenized as read)       {uncached:8.2f} s")
    print(f"  cold (a miss: tokenize everything) {cold:8.2f} s")
    print(f"  warm (a hit: checked, then read)   {warm:8.2f} s  ({cold / warm:.0f}x faster)")


if __name__ == "__main__":
    main()
