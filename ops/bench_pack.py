"""Benchmark our packing against Grain's own packing ops, in one run, on the same documents.

    .venv/bin/python -m ops.bench_pack                          # 200k documents, seq_length 2048
    .venv/bin/python -m ops.bench_pack --docs 20000 --rounds 2  # quicker

The documents are token-id arrays with lognormal lengths (``--mu``, ``--sigma``: by default a
median of ~400 tokens, a mean of ~660, ~5% of them longer than 2048), views into one random pool
(so 200k documents cost no memory), read by ``MapDataset.source(...).to_iter_dataset()``
without read threads (with Grain's default 16 threads the read-ahead itself, at ~3k documents/s
on a loaded 2-core machine, would hide every packer's cost; the parent's own rate is printed as
the first line). Every case packs all of them into rows of
``--seq-length`` tokens, with no EOS added (so every case sees exactly the same tokens):

- ours: ``PackIterDataset`` with ``strategy="greedy"`` and ``"first_fit"``
  (``num_packers=--bins``);
- Grain's: ``grain.experimental.FirstFitPackIterDataset`` and ``BestFitPackIterDataset``
  (``num_packing_bins=--bins``, bins not shuffled) and ``ConcatThenSplitIterDataset``.
  Grain's fit packers refuse a document longer than the row ("Inputs to PackedBatch must be
  truncated to max length"), so their input is cut to ``--seq-length`` first, as a Grain user
  must: those cut tokens are what they drop (the cut is part of their time).

For each: input tokens/s (the best of ``--rounds`` round-robin runs: other work on a shared
machine only slows a run down), rows emitted, fill rate (the non-pad fraction of the rows) and
the number of input tokens missing from the output (dropped). Ours must drop 0: the benchmark
exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import grain
import numpy as np

from easydata_grain import Pack, PackIterDataset


def documents(count: int, mu: float, sigma: float, seed: int) -> list[dict[str, np.ndarray]]:
    """``count`` documents of lognormal lengths (at least 1 token), views into one pool."""
    rng = np.random.default_rng(seed)
    lengths = np.maximum(1, rng.lognormal(mu, sigma, count).astype(np.int64))
    pool = rng.integers(1, 32_000, int(lengths.max()) + 1_000_000, dtype=np.int32)
    starts = rng.integers(0, len(pool) - lengths)
    return [{"input_ids": pool[s : s + n]} for s, n in zip(starts, lengths, strict=True)]


def count_real(rows: Iterable[dict[str, np.ndarray]], segment_field: str) -> tuple[int, int]:
    """The rows' count and their real (non-pad) tokens, from their segment ids."""
    count = real = 0
    for row in rows:
        count += 1
        real += int(np.count_nonzero(row[segment_field]))
    return count, real


def cases(
    source: grain.IterDataset, seq_length: int, bins: int
) -> dict[str, Callable[[], tuple[int, int]]]:
    """Each packer, as a run returning (rows, real tokens)."""
    lengths = {"input_ids": seq_length}
    ours = {
        "ours greedy": Pack(seq_length, strategy="greedy"),
        f"ours first_fit ({bins} rows)": Pack(seq_length, strategy="first_fit", num_packers=bins),
    }
    runs: dict[str, Callable[[], tuple[int, int]]] = {
        name: (lambda p=pack: count_real(PackIterDataset(source, p), "segment_ids"))
        for name, pack in ours.items()
    }
    cut = source.map(lambda row: {"input_ids": row["input_ids"][:seq_length]})
    grain_ops: dict[str, Callable[[], Any]] = {
        f"grain FirstFit ({bins} bins)": lambda: grain.experimental.FirstFitPackIterDataset(
            cut, length_struct=lengths, num_packing_bins=bins, shuffle_bins=False
        ),
        f"grain BestFit ({bins} bins)": lambda: grain.experimental.BestFitPackIterDataset(
            cut, length_struct=lengths, num_packing_bins=bins, shuffle_bins=False
        ),
        "grain ConcatThenSplit": lambda: grain.experimental.ConcatThenSplitIterDataset(
            source, length_struct=lengths
        ),
    }
    for name, make in grain_ops.items():
        runs[name] = lambda m=make: count_real(m(), "input_ids_segment_ids")
    return runs


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; 1 if our packing dropped a token."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--seq-length", type=int, default=2048)
    parser.add_argument("--bins", type=int, default=8, help="open rows / packing bins")
    parser.add_argument("--mu", type=float, default=6.0, help="lognormal mean of log(length)")
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    docs = documents(args.docs, args.mu, args.sigma, args.seed)
    lengths = np.array([len(d["input_ids"]) for d in docs])
    tokens = int(lengths.sum())
    print(
        f"{args.docs:,} documents, {tokens:,} tokens: length median {int(np.median(lengths))}, "
        f"mean {lengths.mean():.0f}, max {lengths.max():,}; "
        f"{np.mean(lengths > args.seq_length):.1%} longer than seq_length {args.seq_length}; "
        f"best of {args.rounds} rounds"
    )
    source = grain.MapDataset.source(docs).to_iter_dataset(
        grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    )
    runs = {
        "(the parent alone)": lambda: (0, sum(len(row["input_ids"]) for row in source)),
        **cases(source, args.seq_length, args.bins),
    }
    best: dict[str, float] = dict.fromkeys(runs, float("inf"))
    result: dict[str, tuple[int, int]] = {}
    for _ in range(args.rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            result[name] = run()
            best[name] = min(best[name], time.perf_counter() - start)
    print(f"{'packer':<28}{'tokens/s':>14}{'rows':>10}{'fill rate':>11}{'dropped':>14}")
    failed = False
    for name, (rows, real) in result.items():
        if not rows:
            print(f"{name:<28}{tokens / best[name]:>14,.0f}")
            continue
        dropped = tokens - real
        failed |= name.startswith("ours") and dropped != 0
        print(
            f"{name:<28}{tokens / best[name]:>14,.0f}{rows:>10,}"
            f"{real / (rows * args.seq_length):>11.2%}{dropped:>14,}"
        )
    if failed:
        print("FAILED: our packing dropped tokens", file=sys.stderr)
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
