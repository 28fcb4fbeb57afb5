"""Pipelines from a JSON spec, for the resume tests; run as a script, one side of a checkpoint.

The module is shared by ``tests/test_loader_resume.py`` (which builds the same pipelines in
process) and by the fresh processes it starts::

    python -m tests.resume_worker save SPEC.json CKPT_DIR STEPS OUT.pkl
    python -m tests.resume_worker restore SPEC.json CKPT_DIR OUT.pkl

``save`` runs ``STEPS`` batches, saves a toy model state and the loader's state with a real
Orbax ``CheckpointManager`` at step ``STEPS``, and writes the batches it saw to ``OUT.pkl``.
``restore`` restores the latest step into a new loader and a model template, continues to the
end, and writes the restored model and the remaining batches to ``OUT.pkl``. Run as one host
of a slice (``tpu_scripts/simulate_multihost.py`` appends ``--coordinator ADDR --num-processes
N --process-id I``), it joins ``jax.distributed`` first, the loader takes its host from JAX,
and each host writes ``OUT.pkl.host{I}``.

A spec is ``{"sources": [[path, ...], ...], "loader": {kwargs}, "transforms": [name, ...]}``;
transform names index ``TRANSFORMS`` (module-level, so picklable and fingerprinted by name).
``"chained": true`` passes the transforms as one chain (``a >> b``) when none is a RandomMap;
``"tokenizer_vocab": n`` sizes the tiny tokenizer the ``tokenize`` transform uses (512).
``{"hub": {kwargs}, ...}`` in place of ``"sources"`` reads ``HuggingFaceShardedSource(**kwargs)``
(the processes inherit ``HF_ENDPOINT`` and ``HF_HOME`` from the test run). ``{"mix": {kwargs}}``
mixes the sources with ``MixedShardedSource(sources, **kwargs)``; ``{"pack": {kwargs}}`` packs
with ``Pack(**kwargs)``.
"""

from __future__ import annotations

import functools
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import grain
import numpy as np

from easydata_grain import (
    AsyncDataLoader,
    ConcatSource,
    DropFields,
    FilterByField,
    Hosts,
    HuggingFaceShardedSource,
    MapField,
    MixedShardedSource,
    Pack,
    ParquetShardedSource,
    RenameFields,
    SelectFields,
    TokenizeTransform,
    chain,
)


class KeepNotDivisible(grain.transforms.Filter):
    """Keep rows whose ``id`` is not divisible by ``divisor``."""

    def __init__(self, divisor: int = 3):
        self.divisor = divisor

    def filter(self, element: dict[str, Any]) -> bool:
        return element["id"] % self.divisor != 0


class AddLength(grain.transforms.Map):
    """Add ``length`` (the number of tokens) and ``id2`` (twice the id)."""

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        return {**element, "length": len(element["input_ids"]), "id2": element["id"] * 2}


class AddNoise(grain.transforms.RandomMap):
    """Add a random ``noise`` field: a resumed stream must draw the same numbers."""

    def random_map(self, element: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        return {**element, "noise": rng.integers(0, 2**31)}


def upper_text(element: dict[str, Any]) -> dict[str, Any]:
    """A plain-function map: upper-cases ``text``."""
    return {**element, "text": element["text"].upper()}


def keep_tokens(element: dict[str, Any]) -> dict[str, Any]:
    """Only the token ids (for packing)."""
    return {"input_ids": element["input_ids"]}


def few_words(text: str) -> bool:
    """Whether a text has at most four words (a predicate for ``FilterByField``)."""
    return len(text.split()) <= 4


@functools.lru_cache
def tokenizer(vocab_size: int = 512) -> Any:
    """The tiny tokenizer with ``vocab_size`` tokens (made once per process)."""
    from easydata_grain.synthetic import tiny_tokenizer

    return tiny_tokenizer(vocab_size=vocab_size)


TRANSFORMS = {
    "keep_tokens": lambda: keep_tokens,
    "filter": lambda: KeepNotDivisible(3),
    "map": AddLength,
    "random_map": AddNoise,
    "function": lambda: upper_text,
    # Our transforms (declared fields; ``tokenize``, batched, is made by ``make_transform``).
    "few_words": lambda: FilterByField("text", few_words),
    "upper_field": lambda: MapField("text", str.upper),
    "round_trip": lambda: RenameFields({"text": "body"}) >> RenameFields({"body": "text"}),
    "select": lambda: SelectFields(["id", "text", "input_ids"]),
    "drop_tokens": lambda: DropFields("tokens", strict=False),
}


class ShardsOnly:
    """A source seen only through the ShardedSource protocol (no row counts): streaming mode."""

    def __init__(self, source: Any):
        self._source = source
        self.shard_names = list(source.shard_names)

    def open_shard(self, shard: str) -> Any:
        return self._source.open_shard_at_row(shard, 0)

    def open_shard_at_row(self, shard: str, row: int) -> Any:
        return self._source.open_shard_at_row(shard, row)


def make_transform(name: str, spec: dict[str, Any]) -> Any:
    """The transform ``name`` (``tokenize``: ``text`` -> ``tokens`` with the spec's tokenizer)."""
    if name == "tokenize":
        vocab = spec.get("tokenizer_vocab", 512)
        return TokenizeTransform(tokenizer(vocab), output_field="tokens")
    return TRANSFORMS[name]()


def build_loader(spec: dict[str, Any], **overrides: Any) -> AsyncDataLoader:
    """The loader ``spec`` describes; ``overrides`` replace loader arguments (e.g. prefetch).

    ``spec["hosts"]`` (index, count) makes it one host of several; ``spec["stream"]`` reads the
    sources as a stream (only the ShardedSource protocol: streaming mode)."""
    sources: list[Any]
    if "hub" in spec:
        sources = [HuggingFaceShardedSource(**spec["hub"])]
    else:
        sources = [ParquetShardedSource(paths) for paths in spec["sources"]]
    source: Any = sources if len(sources) > 1 else sources[0]
    if "mix" in spec:
        source = MixedShardedSource(sources, **spec["mix"])
    if spec.get("stream"):
        source = ShardsOnly(ConcatSource(sources))
    kwargs = {**spec["loader"], **overrides}
    if "hosts" in spec:
        kwargs["hosts"] = Hosts(*spec["hosts"])
    transforms: Any = [make_transform(name, spec) for name in spec.get("transforms", [])]
    if spec.get("chained") and transforms and not any(isinstance(t, AddNoise) for t in transforms):
        transforms = chain(*transforms)
    if "pack" in spec:
        kwargs["pack"] = Pack(**spec["pack"])
    return AsyncDataLoader(source, transforms=transforms, **kwargs)


def model_state(step: int) -> dict[str, np.ndarray]:
    """The toy model state saved at ``step`` (distinct per step)."""
    return {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3) * (step + 1),
        "step": np.asarray(step, dtype=np.int64),
    }


def _manager(directory: str) -> Any:
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(
        Path(directory).absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=2)
    )


def save(spec_path: str, directory: str, steps: int, out: str) -> None:
    import orbax.checkpoint as ocp

    from easydata_grain import LoaderSave

    spec = json.loads(Path(spec_path).read_text())
    loader = build_loader(spec)
    batches = [next(loader) for _ in range(steps)]
    manager = _manager(directory)
    manager.save(
        steps,
        args=ocp.args.Composite(
            model=ocp.args.StandardSave(model_state(steps)), loader=LoaderSave(loader)
        ),
    )
    manager.wait_until_finished()
    manager.close()
    loader.close()
    Path(out).write_bytes(pickle.dumps({"batches": batches}))


def restore(spec_path: str, directory: str, out: str) -> None:
    import orbax.checkpoint as ocp

    from easydata_grain import LoaderRestore

    spec = json.loads(Path(spec_path).read_text())
    loader = build_loader(spec)
    manager = _manager(directory)
    step = manager.latest_step()
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            model=ocp.args.StandardRestore(model_state(0)), loader=LoaderRestore(loader)
        ),
    )
    manager.close()
    assert restored.loader is loader
    model = {key: np.asarray(value) for key, value in restored.model.items()}
    batches = list(loader)
    loader.close()
    Path(out).write_bytes(pickle.dumps({"step": step, "model": model, "batches": batches}))


def join_slice(argv: list[str]) -> list[str]:
    """``argv`` without the simulator's ``--coordinator/--num-processes/--process-id`` flags;
    with them, this process joins ``jax.distributed`` first (one host of a slice)."""
    if "--coordinator" not in argv:
        return argv
    at = argv.index("--coordinator")
    flags = dict(zip(argv[at::2], argv[at + 1 :: 2], strict=True))
    import jax

    jax.distributed.initialize(
        coordinator_address=flags["--coordinator"],
        num_processes=int(flags["--num-processes"]),
        process_id=int(flags["--process-id"]),
        heartbeat_timeout_seconds=10,
        shutdown_timeout_seconds=10,
    )
    argv = argv[:at]
    argv[-1] += f".host{jax.process_index()}"  # each host writes its own OUT.pkl
    return argv


def main(argv: list[str]) -> None:
    command, *args = join_slice(argv)
    if command == "save":
        save(args[0], args[1], int(args[2]), args[3])
    elif command == "restore":
        restore(*args)
    else:
        raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    # Use this module's canonical name, so transforms are fingerprinted as in the tests.
    from tests import resume_worker

    resume_worker.main(sys.argv[1:])
