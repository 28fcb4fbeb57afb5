"""Mixing benchmark: a mixture of three sources against one source, the mixture's error against
``datasets.interleave_datasets``, and resume time at 50% of a mixed run, all in one run.

    .venv/bin/python -m ops.bench_mix                       # 1M rows
    .venv/bin/python -m ops.bench_mix --rows 200000 --rounds 2

1. Rows/s: ``AsyncDataLoader`` over ``MixedShardedSource`` of three Parquet sources (weights
   0.5/0.3/0.2) against ``AsyncDataLoader`` over one Parquet source of the same total rows,
   light rows (``id``), shuffle on; best of ``--rounds``, alternated (target: at most 10% fewer).
2. Realized-against-target error (max over sources of |share - weight|) after 10k, 100k and
   1M rows, ours against ``datasets.interleave_datasets`` with the same probabilities.
3. Resume at 50% of a mixed run: ``set_state`` plus the first batch, for runs of growing length
   (target: under 1 s, flat).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from easydata_grain import AsyncDataLoader, MixedShardedSource, ParquetShardedSource
from easydata_grain.synthetic import write_parquet_dataset

WEIGHTS = {"web": 0.5, "code": 0.3, "math": 0.2}


def rows_per_second(make: Callable[[], AsyncDataLoader], rounds: int) -> float:
    """The best rows/s over ``rounds`` full passes of a fresh loader."""
    best = 0.0
    for _ in range(rounds):
        loader = make()
        start = time.perf_counter()
        rows = sum(len(batch["id"]) for batch in loader)
        best = max(best, rows / (time.perf_counter() - start))
    return best


def our_error(mixture: MixedShardedSource, checkpoints: list[int]) -> list[float]:
    order = mixture.order(global_batch_size=256, seed=0)
    target = np.asarray(list(WEIGHTS.values()))
    return [float(np.abs(order.counts_before(n) / n - target).max()) for n in checkpoints]


def interleave_error(checkpoints: list[int]) -> list[float]:
    import datasets

    streams = [
        datasets.Dataset.from_dict({"source": [i] * checkpoints[-1]}).to_iterable_dataset()
        for i in range(len(WEIGHTS))
    ]
    mixed = datasets.interleave_datasets(
        streams, probabilities=list(WEIGHTS.values()), seed=0, stopping_strategy="all_exhausted"
    )
    counts = np.zeros(len(WEIGHTS))
    errors, target = [], np.asarray(list(WEIGHTS.values()))
    want = iter(checkpoints)
    next_at = next(want)
    for n, row in enumerate(mixed, start=1):
        counts[row["source"]] += 1
        if n == next_at:
            errors.append(float(np.abs(counts / n - target).max()))
            next_at = next(want, None)
            if next_at is None:
                break
    return errors


def resume_seconds(mixture: MixedShardedSource, batches: int) -> float:
    """Seconds to restore a state at ``batches`` and produce the next batch."""
    loader = AsyncDataLoader(mixture, batch_size=256, shuffle_buffer_size=10_000, num_epochs=None)
    state = loader.get_state()
    state["iterator"] = {"next_index": batches}
    text = json.dumps(state)
    start = time.perf_counter()
    fresh = AsyncDataLoader(mixture, batch_size=256, shuffle_buffer_size=10_000, num_epochs=None)
    fresh.set_state(text)
    next(fresh)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-mix-"))
    parts = {}
    for i, (name, weight) in enumerate(WEIGHTS.items()):
        rows = int(args.rows * weight)
        write_parquet_dataset(
            root / name, num_shards=2, rows_per_shard=rows // 2, max_tokens=4, seed=i
        )
        parts[name] = ParquetShardedSource(str(root / name / "*.parquet"), columns=["id"])
    write_parquet_dataset(root / "one", num_shards=6, rows_per_shard=args.rows // 6, max_tokens=4)
    one = ParquetShardedSource(str(root / "one" / "*.parquet"), columns=["id"])
    mixture = MixedShardedSource(parts, WEIGHTS, stop_strategy="first_exhausted")

    print(
        f"# 1. rows/s, {args.rows:,} rows, batch 256, shuffle windows of 10,000 (best of {args.rounds})"
    )
    single = mixed = 0.0
    for _ in range(args.rounds):  # alternated, so load changes hit both
        single = max(
            single,
            rows_per_second(
                lambda: AsyncDataLoader(one, batch_size=256, shuffle_buffer_size=10_000), 1
            ),
        )
        mixed = max(
            mixed,
            rows_per_second(
                lambda: AsyncDataLoader(mixture, batch_size=256, shuffle_buffer_size=10_000), 1
            ),
        )
    print(f"one source          {single:>12,.0f} rows/s")
    print(f"mixture of three    {mixed:>12,.0f} rows/s   ({mixed / single:.2f}x; target >= 0.90x)")

    checkpoints = [n for n in (10_000, 100_000, 1_000_000) if n <= args.rows]
    print("\n# 2. max |realized share - weight| after n rows")
    ours = our_error(mixture, checkpoints)
    theirs = interleave_error(checkpoints)
    print(f"{'rows':>10} {'ours':>12} {'interleave_datasets':>20}")
    for n, a, b in zip(checkpoints, ours, theirs, strict=True):
        print(f"{n:>10,} {a:>12.6f} {b:>20.6f}")

    print("\n# 3. resume at 50% of an endless mixed run (set_state + first batch)")
    for rows in (args.rows, 10 * args.rows, 100 * args.rows):
        seconds = resume_seconds(MixedShardedSource(parts, WEIGHTS), rows // 2 // 256)
        print(f"run of {rows:>13,} rows: {seconds:.3f} s")


if __name__ == "__main__":
    main()
