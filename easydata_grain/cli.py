"""The ``easydata-grain`` command. ``demo`` runs the library end to end on generated data.

The demo writes a Parquet dataset, streams it through a shuffled, batched, prefetched
``AsyncDataLoader`` (with a progress bar), saves an Orbax checkpoint with a toy model state
halfway, restores it in a new process, and checks that the continuation is exactly the rest of
an uninterrupted run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from easydata_grain.loader import AsyncDataLoader
from easydata_grain.sources.parquet import ParquetShardedSource
from easydata_grain.synthetic import write_parquet_dataset


def _loader(data: str) -> AsyncDataLoader:
    """The demo pipeline: token ids padded with a mask, shuffled in windows, prefetched."""
    source = ParquetShardedSource(f"{data}/*.parquet", columns=["id", "input_ids"])
    return AsyncDataLoader(
        source,
        batch_size=64,
        prefetch_enabled=True,
        prefetch_workers=2,
        prefetch_buffer_size=4,
        shuffle_buffer_size=4096,
        seed=42,
        pad=True,
    )


def _batch_digest(batch: dict) -> str:
    """A short fingerprint of a batch's sample ids."""
    return hashlib.sha256(np.ascontiguousarray(batch["id"]).tobytes()).hexdigest()[:12]


def _checkpoint_manager(directory: Path):
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=2))


def demo(args: argparse.Namespace) -> int:
    """Run the end-to-end demo and print a short report."""
    import orbax.checkpoint as ocp

    from easydata_grain.checkpoint import LoaderSave

    with tempfile.TemporaryDirectory(prefix="easydata-grain-demo-") as work:
        data, checkpoints = Path(work) / "data", Path(work) / "checkpoints"
        start = time.perf_counter()
        write_parquet_dataset(
            data, num_shards=args.shards, rows_per_shard=args.rows, row_group_size=1_000
        )
        print(
            f"generated {args.shards} shards x {args.rows:,} rows in {time.perf_counter() - start:.1f}s"
        )

        loader = _loader(str(data))
        reference, seen = [], []
        with tqdm(total=args.shards * args.rows, unit="rows", desc="uninterrupted run") as bar:
            for batch in loader:
                reference.append(_batch_digest(batch))
                seen.extend(batch["id"].tolist())
                bar.update(len(batch["id"]))
        stats = loader.stats()
        loader.close()
        print(
            f"{stats['rows']:,} rows in {stats['batches']} batches: {stats['rows_per_s']:,.0f} rows/s, "
            f"{stats['batches_per_s']:,.0f} batches/s, waited for data {100 * stats['wait_fraction']:.0f}% of the time"
        )
        if sorted(seen) != list(range(args.shards * args.rows)):
            print("ERROR: the epoch did not see every sample exactly once", file=sys.stderr)
            return 1

        half = len(reference) // 2
        loader = _loader(str(data))
        first_half = [_batch_digest(next(loader)) for _ in range(half)]
        manager = _checkpoint_manager(checkpoints)
        model = {"weights": np.arange(8, dtype=np.float32), "step": np.array(half, dtype=np.int64)}
        manager.save(
            half,
            args=ocp.args.Composite(model=ocp.args.StandardSave(model), loader=LoaderSave(loader)),
        )
        manager.wait_until_finished()
        loader.close()
        print(f"saved an Orbax checkpoint at step {half} (model + loader state) in {checkpoints}")

        start = time.perf_counter()
        resumed = subprocess.run(
            [sys.executable, "-m", "easydata_grain.cli", "resume", str(data), str(checkpoints)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if resumed.returncode:
            print(f"ERROR: the resumed process failed:\n{resumed.stderr[-3000:]}", file=sys.stderr)
            return 1
        report = json.loads(resumed.stdout.strip().splitlines()[-1])
        print(
            f"restored in a new process: first batch {report['first_batch_s'] * 1000:.0f} ms after "
            f"restore started; process round trip {time.perf_counter() - start:.1f}s"
        )
        identical = first_half + report["digests"] == reference
        print(
            f"continuation identical to the uninterrupted run: {'yes' if identical else 'NO'} "
            f"({half} + {len(report['digests'])} batches, model step {report['model_step']})"
        )
        return 0 if identical and report["model_step"] == half else 1


def resume(args: argparse.Namespace) -> int:
    """Restore the demo's latest checkpoint and print the digests of the remaining batches."""
    import orbax.checkpoint as ocp

    from easydata_grain.checkpoint import LoaderRestore

    loader = _loader(args.data)
    manager = _checkpoint_manager(Path(args.checkpoints))
    start = time.perf_counter()
    template = {"weights": np.zeros(8, dtype=np.float32), "step": np.array(0, dtype=np.int64)}
    restored = manager.restore(
        manager.latest_step(),
        args=ocp.args.Composite(
            model=ocp.args.StandardRestore(template), loader=LoaderRestore(loader)
        ),
    )
    digests = [_batch_digest(next(loader))]
    first_batch = time.perf_counter() - start
    digests += [_batch_digest(batch) for batch in loader]
    loader.close()
    print(
        json.dumps(
            {
                "digests": digests,
                "first_batch_s": first_batch,
                "model_step": int(restored["model"]["step"]),
            }
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``easydata-grain`` command."""
    parser = argparse.ArgumentParser(prog="easydata-grain", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run the library end to end on generated data")
    demo_parser.add_argument("--shards", type=int, default=8)
    demo_parser.add_argument("--rows", type=int, default=25_000, help="rows per shard")
    demo_parser.set_defaults(run=demo)
    resume_parser = commands.add_parser("resume", help="(used by demo) continue from a checkpoint")
    resume_parser.add_argument("data")
    resume_parser.add_argument("checkpoints")
    resume_parser.set_defaults(run=resume)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
