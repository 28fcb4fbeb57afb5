#!/usr/bin/env python
"""A complete JAX training loop over easydata-grain, for a TPU slice or a simulated one.

Every host runs this same program. It joins ``jax.distributed`` (explicit coordinator flags,
or auto-detection on TPU), builds a ``ParquetShardedSource`` (local, ``gs://``, ``s3://``,
``az://``) and an ``AsyncDataLoader`` that splits every global batch between the hosts, turns
each host's rows into global ``jax.Array``s on a 1-D ``Mesh`` (axis ``"data"``), trains a tiny
embedding-bag model, and saves the model and the loader state in the same Orbax
``CheckpointManager`` step. On start it restores the latest step (model and loader).

Each host appends JSON lines to ``LOG_DIR/host-<index>.jsonl``: a ``start`` record (host
count, restored step, the source's requests to list and read footers, seconds from process
start to joining the slice and to being ready, seconds to build the loader), a ``first_batch`` record
(seconds from process start to the first global batch), one ``step`` record per step (the
sample ids of this host's rows in order, which of them are padding, the loss and a digest of
the whole global batch's ids) and an ``end`` record with the loader's stats.

On a TPU slice (see ``launch.sh``)::

    python train_example.py --data 'gs://bucket/train/*.parquet' --global-batch 256 \\
        --checkpoint-dir gs://bucket/ckpt --log /tmp/train-log

Locally, N CPU processes as the hosts (see ``simulate_multihost.py``)::

    python tpu_scripts/simulate_multihost.py --hosts 4 -- --data 'data/*.parquet' \\
        --global-batch 16 --checkpoint-dir /tmp/ckpt --log /tmp/log
"""

from __future__ import annotations

import time

PROCESS_START = time.time()

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import grain  # noqa: E402
import numpy as np  # noqa: E402

VOCAB = 4096
DIM = 16
LEARNING_RATE = 0.1


class Truncate(grain.transforms.Map):
    """Keep the first ``length`` token ids of ``input_ids`` (so a fixed pad length always fits)."""

    def __init__(self, length: int):
        self.length = length

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        return {**element, "input_ids": element["input_ids"][: self.length]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="Parquet path, glob or URL (s3://, gs://)")
    parser.add_argument(
        "--storage-options", default="{}", help="fsspec storage options as a JSON object"
    )
    parser.add_argument("--no-share-listing", action="store_true", help="list on every host")
    parser.add_argument("--global-batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=32, help="token ids kept per row")
    parser.add_argument("--shuffle-buffer", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=1, help="0: repeat forever")
    parser.add_argument("--drop-remainder", action="store_true", help="else pad the last batch")
    parser.add_argument("--prefetch-workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    parser.add_argument("--save-every", type=int, default=0, help="0: never save")
    parser.add_argument("--keep", type=int, default=3, help="checkpoints kept; 0 keeps all")
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument(
        "--restore-step",
        type=int,
        default=None,
        help="restore this step, not the latest (then with --save-every, no later step may exist)",
    )
    parser.add_argument("--log", required=True, help="directory for host-<i>.jsonl")
    parser.add_argument("--step-delay", type=float, default=0.0, help="seconds slept per step")
    parser.add_argument("--coordinator", default=None, help="host:port of process 0")
    parser.add_argument("--num-processes", type=int, default=None)
    parser.add_argument("--process-id", type=int, default=None)
    parser.add_argument(
        "--no-distributed", action="store_true", help="one process without jax.distributed"
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=int(env("EASYDATA_HEARTBEAT_TIMEOUT", "0")) or None,
        help="jax.distributed heartbeat timeout in seconds (JAX's default if unset)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=int,
        default=int(env("EASYDATA_SHUTDOWN_TIMEOUT", "0")) or None,
        help="jax.distributed shutdown timeout in seconds (JAX's default if unset)",
    )
    return parser.parse_args(argv)


def init_distributed(args: argparse.Namespace) -> None:
    """Join the slice: explicit coordinator flags, else JAX's auto-detection (TPU)."""
    import jax

    if args.no_distributed:
        return
    kwargs: dict[str, Any] = {}
    if args.heartbeat_timeout:
        kwargs["heartbeat_timeout_seconds"] = args.heartbeat_timeout
    if args.shutdown_timeout:
        kwargs["shutdown_timeout_seconds"] = args.shutdown_timeout
    if args.coordinator:
        kwargs.update(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    jax.distributed.initialize(**kwargs)


def make_loader(args: argparse.Namespace) -> Any:
    """The source and the loader: every host builds the same pipeline."""
    from easydata_grain import AsyncDataLoader, ParquetShardedSource

    source = ParquetShardedSource(
        args.data,
        storage_options=json.loads(args.storage_options),
        columns=["id", "input_ids"],
        share_listing=not args.no_share_listing,
    )
    return AsyncDataLoader(
        source,
        global_batch_size=args.global_batch,
        shuffle_buffer_size=args.shuffle_buffer,
        seed=args.seed,
        num_epochs=args.epochs or None,
        drop_remainder=args.drop_remainder,
        prefetch_workers=args.prefetch_workers,
        transforms=[Truncate(args.seq_len)],
        pad={"input_ids": args.seq_len},
    )


def init_state(seed: int) -> dict[str, np.ndarray]:
    """The model and step counter as numpy arrays (what Orbax saves)."""
    rng = np.random.default_rng(seed)
    return {
        "embedding": (0.02 * rng.standard_normal((VOCAB, DIM))).astype(np.float32),
        "head": np.zeros(DIM, np.float32),
        "bias": np.zeros((), np.float32),
        "step": np.zeros((), np.int64),
    }


def replicate(state: dict[str, np.ndarray], mesh: Any) -> dict[str, Any]:
    """Numpy arrays -> ``jax.Array``s replicated on every device of ``mesh``."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    sharding = NamedSharding(mesh, PartitionSpec())
    return {
        k: jax.make_array_from_callback(v.shape, sharding, lambda index, v=v: v[index])
        for k, v in state.items()
    }


def to_numpy(state: dict[str, Any]) -> dict[str, np.ndarray]:
    """Replicated ``jax.Array``s -> numpy (this process's replica), for Orbax."""
    return {k: np.asarray(v.addressable_data(0)) for k, v in state.items()}


def make_train_step() -> Any:
    """A jitted SGD step of a logistic embedding-bag model predicting ``id % 2``."""
    import jax
    import jax.numpy as jnp

    def loss_fn(params: dict[str, Any], batch: dict[str, Any]) -> Any:
        tokens = batch["input_ids"] % VOCAB
        mask = batch["input_ids_mask"][..., None].astype(jnp.float32)
        pooled = (params["embedding"][tokens] * mask).sum(1) / jnp.maximum(mask.sum(1), 1.0)
        logits = pooled @ params["head"] + params["bias"]
        target = (batch["id"] % 2).astype(jnp.float32)
        losses = jnp.logaddexp(0.0, logits) - target * logits
        weight = batch["sample_mask"].astype(jnp.float32)
        return (losses * weight).sum() / jnp.maximum(weight.sum(), 1.0)

    @jax.jit
    def train_step(state: dict[str, Any], batch: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        params = {k: state[k] for k in ("embedding", "head", "bias")}
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        new = {k: params[k] - LEARNING_RATE * grads[k] for k in params}
        return {**new, "step": state["step"] + 1}, loss

    return train_step


def ids_digest(ids: np.ndarray) -> str:
    """A short digest of a sequence of sample ids."""
    return hashlib.sha256(np.asarray(ids, np.int64).tobytes()).hexdigest()[:16]


class Log:
    """This host's JSON-lines log, flushed after every record."""

    def __init__(self, directory: str, host: int):
        Path(directory).mkdir(parents=True, exist_ok=True)
        self._file = open(Path(directory) / f"host-{host}.jsonl", "a", buffering=1)  # noqa: SIM115

    def write(self, event: str, **fields: Any) -> None:
        """Append one record."""
        self._file.write(json.dumps({"event": event, **fields}) + "\n")

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def checkpoint_manager(args: argparse.Namespace) -> Any:
    """An Orbax ``CheckpointManager`` (creating one is a barrier across hosts), or None."""
    if not args.checkpoint_dir:
        return None
    import orbax.checkpoint as ocp
    from etils import epath

    directory = args.checkpoint_dir
    if "://" not in directory:
        directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=args.keep or None, create=True)
    return ocp.CheckpointManager(epath.Path(directory), options=options)


def train(args: argparse.Namespace) -> int:
    """Join the slice, restore, train, save; return the exit status."""
    init_distributed(args)
    import jax
    import orbax.checkpoint as ocp
    from jax.experimental import multihost_utils
    from jax.sharding import Mesh

    from easydata_grain import LoaderRestore, LoaderSave
    from easydata_grain.distributed import make_global_batch

    joined_s = time.time() - PROCESS_START
    host, hosts = jax.process_index(), jax.process_count()
    log = Log(args.log, host)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    loader_start = time.perf_counter()
    loader = make_loader(args)
    loader_s = time.perf_counter() - loader_start
    source_requests = loader.source.stats.snapshot()["requests"]
    manager = checkpoint_manager(args)
    state_np = init_state(args.seed)
    restored_step = None
    if manager is not None:
        latest = manager.latest_step()
        restored_step = args.restore_step if args.restore_step is not None else latest
        # Orbax would silently skip every save up to the latest step already there.
        if args.save_every and restored_step is not None and latest > restored_step:
            raise SystemExit(
                f"--restore-step {restored_step}: {args.checkpoint_dir} already holds step "
                f"{latest}, so new checkpoints up to it would not be saved; use --save-every "
                "0 or copy the checkpoints to a fresh --checkpoint-dir without the later steps."
            )
    if restored_step is not None:
        restored = manager.restore(
            restored_step,
            args=ocp.args.Composite(
                model=ocp.args.StandardRestore(state_np), loader=LoaderRestore(loader)
            ),
        )
        state_np = {k: np.asarray(v) for k, v in restored["model"].items()}
        if int(state_np["step"]) != restored_step:
            raise RuntimeError(f"model step {int(state_np['step'])} != checkpoint {restored_step}")
    log.write(
        "start",
        host=host,
        hosts=hosts,
        devices=jax.device_count(),
        pid=os.getpid(),
        restored_step=restored_step,
        source_requests=source_requests,
        joined_s=joined_s,
        loader_s=loader_s,
        ready_s=time.time() - PROCESS_START,
    )
    state = replicate(state_np, mesh)
    train_step = make_train_step()
    step = restored_step or 0
    while args.steps is None or step < args.steps:
        try:
            local = next(loader)
        except StopIteration:
            break
        if "sample_mask" not in local:
            local["sample_mask"] = np.ones(len(local["id"]), bool)
        batch = make_global_batch(
            {k: local[k] for k in ("id", "input_ids", "input_ids_mask", "sample_mask")}, mesh
        )
        state, loss = train_step(state, batch)
        global_ids = np.asarray(multihost_utils.process_allgather(batch["id"], tiled=True))
        if step == (restored_step or 0):
            launched = float(os.environ.get("EASYDATA_LAUNCH_TIME", PROCESS_START))
            log.write(
                "first_batch",
                host=host,
                since_process_start_s=time.time() - PROCESS_START,
                since_launch_s=time.time() - launched,
            )
        log.write(
            "step",
            step=step,
            host=host,
            hosts=hosts,
            ids=local["id"].tolist(),
            mask=local["sample_mask"].tolist(),
            global_digest=ids_digest(global_ids),
            loss=float(np.asarray(loss.addressable_data(0))),
        )
        step += 1
        if manager is not None and args.save_every and step % args.save_every == 0:
            manager.save(
                step,
                args=ocp.args.Composite(
                    model=ocp.args.StandardSave(to_numpy(state)), loader=LoaderSave(loader)
                ),
            )
        if args.step_delay:
            time.sleep(args.step_delay)
    if manager is not None:
        manager.wait_until_finished()
        manager.close()
    log.write(
        "end",
        host=host,
        steps=step,
        source=loader.source.stats.snapshot(),
        loader={k: v for k, v in loader.stats().items()},
    )
    loader.close()
    log.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    status = train(args)
    if not args.no_distributed:
        import jax

        jax.distributed.shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
