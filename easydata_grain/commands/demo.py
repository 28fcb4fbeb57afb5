"""``easydata-grain demo``: the library end to end on generated data.

The demo writes a Parquet dataset, streams it through a shuffled, batched, prefetched
``AsyncDataLoader`` (with a progress bar), saves an Orbax checkpoint with a toy model state
halfway, restores it in a new process, and checks that the continuation is exactly the rest of
an uninterrupted run. The new process runs this module (``python -m
easydata_grain.commands.demo DATA CHECKPOINTS``), an internal step rather than a command.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from easydata_grain.loader import AsyncDataLoader
from easydata_grain.sources.parquet import ParquetShardedSource
from easydata_grain.synthetic import write_parquet_dataset

BATCH_SIZE = 64
WINDOW = 4096
SEED = 42


def _loader(data: str) -> AsyncDataLoader:
    """The demo pipeline: token ids padded with a mask, shuffled in windows, prefetched."""
    source = ParquetShardedSource(f"{data}/*.parquet", columns=["id", "input_ids"])
    return AsyncDataLoader(
        source,
        batch_size=BATCH_SIZE,
        prefetch_enabled=True,
        prefetch_workers=2,
        prefetch_buffer_size=4,
        shuffle_buffer_size=WINDOW,
        seed=SEED,
        pad=True,
    )


def _batch_digest(batch: dict[str, Any]) -> str:
    """A short fingerprint of a batch's sample ids."""
    return hashlib.sha256(np.ascontiguousarray(batch["id"]).tobytes()).hexdigest()[:12]


def _checkpoint_manager(directory: Path) -> Any:
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=2))


@contextlib.contextmanager
def _work_directory(keep: str | None) -> Iterator[Path]:
    """``keep`` (created), or a temporary directory removed at the end."""
    if keep is not None:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="easydata-grain-demo-") as work:
        yield Path(work)


def _say(text: str, indent: str = "") -> None:
    """Print a paragraph wrapped at 100 columns (continuation lines under the first's text)."""
    lines = textwrap.wrap(
        text,
        100,
        initial_indent=indent,
        subsequent_indent=indent + "  ",
        break_long_words=False,
        break_on_hyphens=False,  # paths stay whole
    )
    print("\n".join(lines))


def run_demo(shards: int, rows: int, keep: str | None = None) -> int:
    """Run the demo on ``shards`` x ``rows`` generated rows and print what it set up, measured
    and proved; 0 when every check held. Files go to ``keep`` when given (and stay there),
    else to a temporary directory removed at the end."""
    from tqdm import tqdm

    total = shards * rows
    with _work_directory(keep) as work:
        data, checkpoints = work / "data", work / "checkpoints"
        start = time.perf_counter()
        write_parquet_dataset(data, num_shards=shards, rows_per_shard=rows, row_group_size=1_000)
        where = f"in {work}" if keep else "in a temporary directory, deleted when the demo ends"
        _say(
            f"Set up: {shards} Parquet shard(s) x {rows:,} rows (sample ids 0..{total - 1:,}, "
            f"token lists of 1-256 ids), written in {time.perf_counter() - start:.1f}s {where}. "
            f"A loader over them: rows shuffled in windows of {WINDOW:,} (seed {SEED}), batches "
            f"of {BATCH_SIZE} padded with masks, 2 reading threads and 4 batches prefetched."
        )

        loader = _loader(str(data))
        reference, seen = [], []
        with tqdm(total=total, unit="rows", desc="run 1, uninterrupted") as bar:
            for batch in loader:
                reference.append(_batch_digest(batch))
                seen.extend(batch["id"].tolist())
                bar.update(len(batch["id"]))
        stats = loader.stats()
        loader.close()
        _say(
            f"Run 1 read {stats['rows']:,.0f} rows in {stats['batches']:,.0f} batches: "
            f"{stats['rows_per_s']:,.0f} rows/s. It waited for data "
            f"{100 * stats['wait_fraction']:.0f}% of the time: the demo does no training work "
            "between batches, so its loop is all waiting for the loader. In training this "
            "fraction is the share of each step spent without data (near 0: the loader keeps up)."
        )
        every_row_once = sorted(seen) == list(range(total))
        if not every_row_once:
            print("ERROR: the epoch did not see every sample exactly once", file=sys.stderr)
            return 1

        half = len(reference) // 2
        loader = _loader(str(data))
        first_half = [_batch_digest(next(loader)) for _ in range(half)]
        _save(checkpoints, half, loader)
        loader.close()
        _say(
            f"Run 2 stopped after {half:,} batches and saved an Orbax checkpoint: a toy model "
            "state and the loader's state, in one step."
        )

        start = time.perf_counter()
        resumed = subprocess.run(
            [sys.executable, "-m", __name__, str(data), str(checkpoints)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if resumed.returncode:
            print(f"ERROR: the resumed process failed:\n{resumed.stderr[-3000:]}", file=sys.stderr)
            return 1
        report = json.loads(resumed.stdout.strip().splitlines()[-1])
        _say(
            f"Run 3, a new process, restored that checkpoint: its first batch came "
            f"{report['first_batch_s'] * 1000:.0f} ms after the restore started (the process "
            f"took {time.perf_counter() - start:.1f}s in all, Python and JAX start-up included)."
        )
    identical = first_half + report["digests"] == reference
    step_back = report["model_step"] == half
    print("Proved:" if identical and step_back else "NOT proved:")
    _say(f"- the epoch read each of the {total:,} rows exactly once;", indent="  ")
    _say(
        f"- {'yes' if identical else 'NO'}: run 2's {half:,} batches and run 3's "
        f"{len(report['digests']):,} are run 1's {len(reference):,} batches, the same rows in the "
        "same order (exact resume in a new process);",
        indent="  ",
    )
    _say(f"- {'yes' if step_back else 'NO'}: the model state came back at step {half:,}.", "  ")
    return 0 if identical and step_back else 1


def _save(checkpoints: Path, step: int, loader: AsyncDataLoader) -> None:
    """Save a toy model state and the loader's state in one Orbax step."""
    import orbax.checkpoint as ocp

    from easydata_grain.checkpoint import LoaderSave

    manager = _checkpoint_manager(checkpoints)
    model = {"weights": np.arange(8, dtype=np.float32), "step": np.array(step, dtype=np.int64)}
    manager.save(
        step,
        args=ocp.args.Composite(model=ocp.args.StandardSave(model), loader=LoaderSave(loader)),
    )
    manager.wait_until_finished()


def _resume(data: str, checkpoints: str) -> None:
    """Restore the demo's latest checkpoint; print the digests of the remaining batches."""
    import orbax.checkpoint as ocp

    from easydata_grain.checkpoint import LoaderRestore

    loader = _loader(data)
    manager = _checkpoint_manager(Path(checkpoints))
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


if __name__ == "__main__":
    _resume(*sys.argv[1:3])
