"""Mixing benchmark: a mixture of three sources against one source, the mixture's error against
``datasets.interleave_datasets``, and the time to seek into a mixed run, all in one run.

    .venv/bin/python -m ops.bench_mix                       # 1M rows
    .venv/bin/python -m ops.bench_mix --rows 200000 --rounds 2

1. Rows/s: ``AsyncDataLoader`` over ``MixedShardedSource`` of three Parquet sources (weights
   0.5/0.3/0.2; the compiler builds ``MixedMapDataset`` over one ``IndexedSourceDataset`` per
   source) against ``AsyncDataLoader`` over one Parquet source of the same rows (one
   ``IndexedSourceDataset``): batches of 256, shuffle windows of 10,000, no prefetch thread
   (the cost of the data path itself); light rows (``id``) and token rows (``id`` and
   ``input_ids``, up to 256 tokens, a tenth of the rows; batches padded). Rows per wall second
   and per CPU second of this process (less sensitive to other processes' load), best of
   ``--rounds``, the two alternated so load changes hit both (target: at most 10% fewer).
2. Realized-against-target error (max over sources of |share - weight|) after 10k, 100k and
   1M rows: ours at that row and at worst over the block before it, against
   ``datasets.interleave_datasets`` with the same probabilities (seed 0).
3. Seek to 50% of a mixed run: ``set_state`` plus the first batch, for runs of 1M to 1B rows,
   with fixed weights and with a cosine schedule over the whole run (target: under 1 s,
   flat); the batch's sources are checked against the mixture order.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from easydata_grain import AsyncDataLoader, MixedShardedSource, ParquetShardedSource
from easydata_grain.synthetic import write_parquet_dataset

WEIGHTS = {"web": 0.5, "code": 0.3, "math": 0.2}
BATCH = 256
SHUFFLE = 10_000


def write_sources(
    root: Path, rows: int, max_tokens: int, columns: list[str]
) -> tuple[dict[str, ParquetShardedSource], ParquetShardedSource]:
    """Three sources of ``rows * weight`` rows each, and one source of ``rows`` rows."""
    parts = {}
    for i, (name, weight) in enumerate(WEIGHTS.items()):
        write_parquet_dataset(
            root / name,
            num_shards=2,
            rows_per_shard=int(rows * weight) // 2,
            max_tokens=max_tokens,
            seed=i,
        )
        parts[name] = ParquetShardedSource(str(root / name / "*.parquet"), columns=columns)
    write_parquet_dataset(
        root / "one", num_shards=6, rows_per_shard=rows // 6, max_tokens=max_tokens
    )
    return parts, ParquetShardedSource(str(root / "one" / "*.parquet"), columns=columns)


def one_pass(make: Callable[[], AsyncDataLoader]) -> tuple[float, float]:
    """Rows per wall second and per CPU second (this process) of one pass of a fresh loader."""
    loader = make()
    wall, cpu = time.perf_counter(), time.process_time()
    rows = sum(len(batch["id"]) for batch in loader)
    return rows / (time.perf_counter() - wall), rows / (time.process_time() - cpu)


def throughput(
    one: ParquetShardedSource, mixture: MixedShardedSource, rounds: int
) -> tuple[np.ndarray, np.ndarray]:
    """Best rows/s (wall, CPU) of one source and of the mixture, passes alternated."""

    def loader(source: object) -> Callable[[], AsyncDataLoader]:
        return lambda: AsyncDataLoader(
            source, batch_size=BATCH, shuffle_buffer_size=SHUFFLE, prefetch_buffer_size=0, pad=True
        )

    single = mixed = np.zeros(2)
    for _ in range(rounds):
        single = np.maximum(single, one_pass(loader(one)))
        mixed = np.maximum(mixed, one_pass(loader(mixture)))
    return single, mixed


def our_errors(mixture: MixedShardedSource, checkpoints: list[int]) -> list[tuple[float, float]]:
    """|share - weight| at each checkpoint, and its worst over the block before it."""
    order = mixture.order(global_batch_size=BATCH, seed=0)
    target = np.asarray(list(WEIGHTS.values()))

    def error(n: int) -> float:
        return float(np.abs(order.counts_before(n) / n - target).max())

    block = mixture.block_size
    return [(error(n), max(error(m) for m in range(n - block + 1, n + 1))) for n in checkpoints]


def interleave_errors(checkpoints: list[int]) -> list[float]:
    """|share - weight| of ``datasets.interleave_datasets`` at each checkpoint."""
    import datasets

    streams = [
        datasets.Dataset.from_dict({"source": [i] * checkpoints[-1]}).to_iterable_dataset()
        for i in range(len(WEIGHTS))
    ]
    mixed = datasets.interleave_datasets(
        streams, probabilities=list(WEIGHTS.values()), seed=0, stopping_strategy="all_exhausted"
    )
    counts = np.zeros(len(WEIGHTS))
    target = np.asarray(list(WEIGHTS.values()))
    errors = []
    for n, row in enumerate(mixed, start=1):
        counts[row["source"]] += 1
        if n in checkpoints:
            errors.append(float(np.abs(counts / n - target).max()))
            if len(errors) == len(checkpoints):
                break
    return errors


def seek_seconds(parts: dict[str, ParquetShardedSource], rows: int, schedule: bool) -> float:
    """Seconds of ``set_state`` at 50% of a run of ``rows`` rows plus its first batch; raises
    unless the batch's sources are the mixture order's at that position."""
    steps = rows // BATCH
    kwargs = (
        {
            "weight_schedule": [(0, {"web": 0.8, "code": 0.1, "math": 0.1}), (steps, WEIGHTS)],
            "weight_schedule_type": "cosine",
        }
        if schedule
        else {"weights": WEIGHTS}
    )
    mixture = MixedShardedSource(parts, source_field="source", **kwargs)  # type: ignore[arg-type]
    fresh = AsyncDataLoader(mixture, batch_size=BATCH, shuffle_buffer_size=SHUFFLE, num_epochs=None)
    state = fresh.get_state()
    batches = steps // 2
    state.update(global_position=batches * BATCH, batches=batches)
    state["iterator"] = {"next_index": batches}
    start = time.perf_counter()
    fresh.set_state(state)
    batch = next(fresh)
    seconds = time.perf_counter() - start
    order = mixture.order(BATCH, 0)
    components, _ = order.locate_many(np.arange(batches * BATCH, (batches + 1) * BATCH))
    if list(batch["source"]) != [mixture.names[c] for c in components.tolist()]:
        raise AssertionError(f"the batch after a seek to {batches * BATCH:,} is not the order's")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-mix-"))

    print(
        f"# 1. rows/s, batch {BATCH}, shuffle windows of {SHUFFLE:,}, no prefetch thread "
        f"(best of {args.rounds}, alternated)"
    )
    print(f"{'rows':<34}{'':>5}{'one source':>14}{'mixture of 3':>14}{'ratio':>8}")
    light_parts = None
    for label, rows, tokens, columns in (
        (f"{args.rows:,} light rows (id)", args.rows, 4, ["id"]),
        (f"{args.rows // 10:,} token rows (id, input_ids)", args.rows // 10, 256, None),
    ):
        parts, one = write_sources(
            root / label.split()[1], rows, tokens, columns or ["id", "input_ids"]
        )
        light_parts = light_parts or parts
        mixture = MixedShardedSource(parts, WEIGHTS, stop_strategy="first_exhausted")
        single, mixed = throughput(one, mixture, args.rounds)
        for i, clock in enumerate(("wall", "CPU")):
            print(
                f"{label if i == 0 else '':<34}{clock:>5}{single[i]:>14,.0f}{mixed[i]:>14,.0f}"
                f"{mixed[i] / single[i]:>8.2f}"
            )
    print("(target: ratio >= 0.90)")

    checkpoints = [n for n in (10_000, 100_000, 1_000_000) if n <= max(args.rows, 10_000)]
    print("\n# 2. max |realized share - weight| after n rows (blocks of 1,000 rows)")
    ours = our_errors(MixedShardedSource(light_parts, WEIGHTS), checkpoints)
    theirs = interleave_errors(checkpoints)
    print(
        f"{'rows':>10}{'ours at n':>14}{'ours, worst of last block':>28}{'interleave_datasets':>22}"
    )
    for n, (at, worst), other in zip(checkpoints, ours, theirs, strict=True):
        print(f"{n:>10,}{at:>14.6f}{worst:>28.6f}{other:>22.6f}")

    print("\n# 3. seek to 50% of a mixed run: set_state + first batch (target < 1 s, flat)")
    print(f"{'run':>16}{'fixed weights':>16}{'cosine schedule':>18}")
    for rows in (10**6, 10**7, 10**8, 10**9):
        fixed = seek_seconds(light_parts, rows, schedule=False)
        cosine = seek_seconds(light_parts, rows, schedule=True)
        print(f"{rows:>16,}{fixed:>14.3f} s{cosine:>16.3f} s")


if __name__ == "__main__":
    main()
