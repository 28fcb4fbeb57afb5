"""One host of a multi-host run, for ``tests/test_packing.py`` and ``tests/test_mixing.py``
(run by SimulatedSlice).

``python tests/multihost_worker.py {pack,mix} DATA OUT [--save-at K] [--restore] --coordinator ...``
builds the loader (``pack``: packing the Parquet files in DATA; ``mix``: mixing DATA's
subdirectories ``a`` and ``b``), joins the slice, and writes ``OUT/host-{i}.json``: every
step's batch. ``--save-at K`` also saves the loader with Orbax after K steps; ``--restore``
restores the latest checkpoint first and records only the steps after it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def build(mode: str, data: Path) -> Any:
    """The loader every host builds (``global_batch_size`` 4 on any host count; ``pack`` with
    ``drop_remainder``, which packing fills with padding rows instead of dropping)."""
    from easydata_grain import AsyncDataLoader, MixedShardedSource, Pack, ParquetShardedSource

    if mode == "pack":
        return AsyncDataLoader(
            ParquetShardedSource(str(data / "*.parquet"), columns=["input_ids"]),
            global_batch_size=4,
            shuffle_buffer_size=32,
            seed=4,
            pack=Pack(24, eos_token_id=0, strategy="first_fit"),
            drop_remainder=True,
        )
    mixture = MixedShardedSource(
        {
            name: ParquetShardedSource(str(data / name / "*.parquet"), columns=["id"])
            for name in "ab"
        },
        {"a": 0.7, "b": 0.3},
        block_size=50,
        stop_strategy="all_exhausted",
        source_field="source",
    )
    return AsyncDataLoader(mixture, global_batch_size=4, shuffle_buffer_size=40, seed=6)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["pack", "mix"])
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--save-at", type=int, default=None)
    parser.add_argument("--restore", action="store_true")
    parser.add_argument("--coordinator")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    args = parser.parse_args()

    import jax

    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
        heartbeat_timeout_seconds=10,
        shutdown_timeout_seconds=10,
    )
    import orbax.checkpoint as ocp

    from easydata_grain import LoaderRestore, LoaderSave

    loader = build(args.mode, Path(args.data))
    manager = ocp.CheckpointManager(Path(args.out).absolute() / "checkpoints")
    if args.restore:
        manager.restore(
            manager.latest_step(), args=ocp.args.Composite(loader=LoaderRestore(loader))
        )
    steps = []
    for step, batch in enumerate(loader):
        steps.append({k: np.asarray(v).tolist() for k, v in batch.items()})
        if args.save_at is not None and step + 1 == args.save_at:
            manager.save(step + 1, args=ocp.args.Composite(loader=LoaderSave(loader)))
            manager.wait_until_finished()
            break
    manager.close()
    out = Path(args.out) / f"host-{jax.process_index()}{'-restored' if args.restore else ''}.json"
    out.write_text(json.dumps(steps))


if __name__ == "__main__":
    main()
