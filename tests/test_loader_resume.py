"""The core guarantee: a loader restored from a saved state continues exactly where it stopped.

Property tests over random pipelines (several Parquet sources with odd row groups and empty
shards, shuffle, filters, maps, our field transforms and the batched tokenizer, chained or
listed, prefetch, epochs, remainders) stopped at a random batch: in process (through JSON),
several times in a row, with worker processes, across fresh processes through a real Orbax
``CheckpointManager``, and on two real ``jax.distributed`` hosts. Plus indexed mode's epoch
contract: every sample exactly once per epoch, each epoch in its own order.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from easydata_grain import AsyncDataLoader, InMemorySource, LoaderStateError, Pack
from easydata_grain.synthetic import synthetic_table
from tests.resume_worker import build_loader, model_state

REPO = Path(__file__).resolve().parents[1]
# Each example of the fresh-process test runs two processes: report a failure unshrunk.
FAST_FAILURE = (Phase.explicit, Phase.reuse, Phase.generate)
_settings = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

# -- data ---------------------------------------------------------------------------------------

SCHEMA = synthetic_table(1).schema


@st.composite
def source_layouts(draw: st.DrawFn) -> list[dict[str, Any]]:
    """1 to 3 sources, each 1 to 3 shards (some possibly empty) with its own row-group size."""
    layouts = []
    for _ in range(draw(st.integers(1, 3))):
        shards = draw(st.lists(st.integers(0, 40), min_size=1, max_size=3))
        layouts.append(
            {"shards": shards, "row_group_size": draw(st.integers(1, 16)), "max_tokens": 6}
        )
    total = sum(sum(layout["shards"]) for layout in layouts)
    if total == 0:
        layouts[0]["shards"][0] = 1
    return layouts


class Datasets:
    """Writes each layout once (ids unique across all sources) and returns its shard paths."""

    def __init__(self, root: Path):
        self.root = root
        self.written: dict[str, list[list[str]]] = {}

    def paths(self, layouts: list[dict[str, Any]]) -> list[list[str]]:
        key = json.dumps(layouts, sort_keys=True)
        if key not in self.written:
            directory = self.root / hashlib.sha256(key.encode()).hexdigest()[:16]
            first_id, sources = 0, []
            for s, layout in enumerate(layouts):
                (directory / f"src{s}").mkdir(parents=True)
                paths = []
                for shard, rows in enumerate(layout["shards"]):
                    table = synthetic_table(
                        rows, first_id=first_id, seed=s, max_tokens=layout["max_tokens"]
                    ).cast(SCHEMA)  # An empty table's text column would be typed null.
                    path = directory / f"src{s}" / f"part-{shard}.parquet"
                    pq.write_table(table, path, row_group_size=layout["row_group_size"])
                    paths.append(str(path))
                    first_id += rows
                sources.append(paths)
            self.written[key] = sources
        return self.written[key]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> Datasets:
    return Datasets(tmp_path_factory.mktemp("resume"))


def total_rows(layouts: list[dict[str, Any]]) -> int:
    return sum(sum(layout["shards"]) for layout in layouts)


ROW_OPS = [
    "map",
    "random_map",
    "function",
    "tokenize",
    "few_words",
    "upper_field",
    "round_trip",
    "select",
    "drop_tokens",
]
"""Transform names of ``resume_worker.TRANSFORMS`` a pipeline draws from (besides ``filter``)."""

prefetch_settings = st.fixed_dictionaries(
    {
        "prefetch_enabled": st.booleans(),
        "prefetch_workers": st.integers(0, 2),
        "prefetch_buffer_size": st.integers(0, 4),
    }
)


@st.composite
def pipelines(
    draw: st.DrawFn,
    host_choices: tuple[tuple[int, int], ...] = ((0, 1), (0, 1), (0, 2), (1, 2), (2, 3)),
) -> dict[str, Any]:
    """A random pipeline spec (see ``tests/resume_worker.py``), minus the source paths: indexed
    or streaming sources, one host of 1 to 3, filters and maps, prefetch settings."""
    layouts = draw(source_layouts())
    rows = total_rows(layouts)
    stream = draw(st.booleans())
    num_epochs = 1 if stream else draw(st.integers(1, 3))  # a stream is read once per pass
    hosts = draw(st.sampled_from(host_choices))
    drop_remainder = draw(st.booleans())
    batch_size = draw(st.integers(1, 17))
    if drop_remainder and batch_size * hosts[1] > rows * num_epochs:
        # A larger global batch is refused (tested in test_loader.py).
        batch_size = rows * num_epochs // hosts[1]
        drop_remainder = batch_size > 0
        batch_size = max(1, batch_size)
    transforms = []
    if draw(st.booleans()):
        transforms.append("filter")
    transforms += draw(st.lists(st.sampled_from(ROW_OPS), max_size=3, unique=True))
    return {
        "layouts": layouts,
        "transforms": draw(st.permutations(transforms)),
        "chained": draw(st.booleans()),
        "hosts": hosts,
        "stream": stream,
        "loader": {
            "batch_size": batch_size,
            "shuffle_buffer_size": draw(st.one_of(st.none(), st.integers(1, 500))),
            "seed": draw(st.integers(0, 2**16)),
            "num_epochs": num_epochs,
            "drop_remainder": drop_remainder,
            "pad": True,
            **draw(prefetch_settings),
        },
    }


def with_paths(pipeline: dict[str, Any], datasets: Datasets) -> dict[str, Any]:
    """The spec ``build_loader`` takes: the pipeline with its sources written to disk."""
    return {**pipeline, "sources": datasets.paths(pipeline["layouts"])}


# -- comparison ---------------------------------------------------------------------------------


def assert_batches_equal(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Same number of batches, same fields, each field equal (numpy values, dtypes, shapes)."""
    assert len(got) == len(expected), f"{len(got)} batches, expected {len(expected)}"
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a.keys() == b.keys(), f"batch {i}: fields {sorted(a)} != {sorted(b)}"
        for key in b:
            if isinstance(b[key], np.ndarray):
                assert isinstance(a[key], np.ndarray), f"batch {i}, {key}: not an array"
                assert a[key].dtype == b[key].dtype, f"batch {i}, {key}: dtype"
                np.testing.assert_array_equal(a[key], b[key], err_msg=f"batch {i}, field {key}")
            else:
                assert a[key] == b[key], f"batch {i}, field {key}"


def ids(batches: list[dict[str, Any]]) -> list[int]:
    return [int(i) for batch in batches for i in batch["id"]]


def take(loader: AsyncDataLoader, n: int) -> list[dict[str, Any]]:
    return [next(loader) for _ in range(n)]


def saved(loader: AsyncDataLoader) -> dict[str, Any]:
    """The loader's state as it would come back from a checkpoint: through JSON text."""
    text = json.dumps(loader.get_state())
    # Indexed mode saves a position; a stream's shuffle buffer is saved as row addresses.
    limit = 4096 + (64 * loader.shuffle_buffer_size if loader.mode == "streaming" else 0)
    assert len(text) < limit, f"the state should be small, got {len(text)} bytes"
    return json.loads(text)


# -- in process ---------------------------------------------------------------------------------


@settings(_settings, max_examples=250)
@given(pipeline=pipelines(), data=st.data())
def test_resume_in_process_equals_uninterrupted_run(
    datasets: Datasets, pipeline: dict[str, Any], data: st.DataObject
) -> None:
    spec = with_paths(pipeline, datasets)
    expected = list(build_loader(spec))
    k = data.draw(st.integers(0, len(expected)), label="stop after k batches")
    first = build_loader(spec)
    head = take(first, k)
    state = saved(first)
    first.close()
    assert state["batches"] == k

    second = build_loader(spec)
    second.set_state(state)
    tail = list(second)
    assert_batches_equal(head + tail, expected)
    with pytest.raises(StopIteration):
        next(second)
    second.close()


@settings(_settings, max_examples=150)
@given(pipeline=pipelines(), data=st.data())
def test_two_and_three_successive_resumes(
    datasets: Datasets, pipeline: dict[str, Any], data: st.DataObject
) -> None:
    """Each segment runs in a new loader from the previous state, with its own prefetch settings
    (they are not part of the fingerprint, so a state must be valid under any of them)."""
    spec = with_paths(pipeline, datasets)
    expected = list(build_loader(spec))
    resumes = data.draw(st.integers(2, 3), label="resumes")
    stops = sorted(
        data.draw(st.lists(st.integers(0, len(expected)), min_size=resumes, max_size=resumes))
    )
    got: list[dict[str, Any]] = []
    state = None
    for stop in [*stops, None]:
        loader = build_loader(spec, **data.draw(prefetch_settings, label="prefetch"))
        if state is not None:
            loader.set_state(state)
        got += list(loader) if stop is None else take(loader, stop - len(got))
        state = saved(loader)
        loader.close()
    assert_batches_equal(got, expected)


@pytest.mark.parametrize("pack", [None, Pack(8)], ids=["rows", "packed"])
def test_a_restored_loader_counts_batches_on_from_the_state(pack: Pack | None) -> None:
    """get_state() right after set_state(s) is s, and the states saved next count on from it
    (a restored loader said 0, so every state saved after a resume under-counted); stats()
    describes this process's run."""
    rows = [{"id": i, "input_ids": [i + 1] * (1 + i % 5)} for i in range(40)]

    def build() -> AsyncDataLoader:
        return AsyncDataLoader(
            InMemorySource.from_rows(rows), batch_size=2, pad=pack is None, pack=pack
        )

    first = build()
    take(first, 3)
    state = json.loads(json.dumps(first.get_state()))
    second = build()
    second.set_state(state)
    assert second.get_state() == state
    assert second.stats()["batches"] == 0
    next(second)
    assert second.get_state()["batches"] == 4 and second.stats()["batches"] == 1
    second.set_state(state)  # again, after a batch of its own
    assert second.get_state()["batches"] == 3


@settings(_settings, max_examples=60)
@given(pipeline=pipelines(), data=st.data())
def test_resume_of_an_endless_stream(
    datasets: Datasets, pipeline: dict[str, Any], data: st.DataObject
) -> None:
    """``num_epochs=None`` repeats forever, each epoch in its own order: resume is as exact."""
    spec = with_paths(pipeline, datasets)
    spec["loader"] = {**spec["loader"], "num_epochs": None, "drop_remainder": False}
    spec["stream"] = False  # a stream is read once per pass: endless needs indexed mode
    if total_rows(pipeline["layouts"]) < 2:
        # The only id is 0: an endless stream that the filter empties never yields a batch.
        spec["transforms"] = [t for t in spec["transforms"] if t != "filter"]
    horizon = total_rows(pipeline["layouts"]) * 3 // spec["loader"]["batch_size"] + 2
    expected = take(build_loader(spec), horizon)
    k = data.draw(st.integers(0, horizon), label="stop after k batches")
    first = build_loader(spec)
    head = take(first, k)
    state = saved(first)
    first.close()
    second = build_loader(spec)
    second.set_state(state)
    assert_batches_equal(head + take(second, horizon - k), expected)
    second.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    "transforms",
    [["filter", "random_map", "map"], ["random_map"]],
    ids=["filtered", "batched-in-map"],
)
def test_resume_with_worker_processes(datasets: Datasets, transforms: list[str]) -> None:
    """``worker_processes=2`` (spawned): resume mid-epoch-2 equals the uninterrupted run; a
    state saved with 2 workers is refused by a loader with 3 (it would change the stream)."""
    layouts = [
        {"shards": [23, 0, 17], "row_group_size": 5, "max_tokens": 6},
        {"shards": [11], "row_group_size": 3, "max_tokens": 6},
    ]
    spec = {
        "sources": datasets.paths(layouts),
        "transforms": transforms,
        "loader": {
            "batch_size": 4,
            "shuffle_buffer_size": 7,
            "seed": 5,
            "num_epochs": 2,
            "pad": True,
            "worker_processes": 2,
        },
    }
    reference = build_loader(spec)
    expected = list(reference)
    reference.close()
    keep = (lambda i: i % 3 != 0) if "filter" in transforms else (lambda i: True)
    wanted = [i for i in range(total_rows(layouts)) if keep(i)] * 2
    assert sorted(ids(expected)) == sorted(wanted)

    k = len(expected) * 2 // 3
    first = build_loader(spec)
    head = take(first, k)
    state = saved(first)
    first.close()
    second = build_loader(spec)
    second.set_state(state)
    tail = list(second)
    second.close()
    assert_batches_equal(head + tail, expected)

    with pytest.raises(LoaderStateError, match="worker_processes: saved 2, now 3"):
        build_loader(spec, worker_processes=3).set_state(state)


# -- fresh processes, real Orbax checkpoint -----------------------------------------------------


def worker(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m tests.resume_worker ARGS`` in a fresh process (CPU JAX), finished."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-m", "tests.resume_worker", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_worker(*args: str) -> None:
    result = worker(*args)
    assert result.returncode == 0, f"worker {args[0]} failed:\n{result.stderr[-4000:]}"


def run_slice_of(hosts: int, work: Path) -> Callable[..., None]:
    """A runner of ``resume_worker`` commands on ``hosts`` real ``jax.distributed`` hosts."""
    from tpu_scripts.simulate_multihost import run_slice

    def run(*args: str) -> None:
        result = run_slice(
            hosts,
            list(args),
            script=REPO / "tests" / "resume_worker.py",
            timeout=240,
            work_dir=work / f"slice-{args[0]}",
        )
        assert result.ok, result.describe()

    return run


def _save_then_restore(
    spec: dict[str, Any], k: int, work: Path, run: Callable[..., None]
) -> tuple[Path, Path]:
    """``run`` the save of ``k`` batches, then the restore; the head and tail pickle paths."""
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec))
    checkpoints = work / "checkpoints"
    head, tail = work / "head.pkl", work / "tail.pkl"
    run("save", str(spec_path), str(checkpoints), str(k), str(head))
    run("restore", str(spec_path), str(checkpoints), str(tail))
    return head, tail


def save_and_restore(spec: dict[str, Any], k: int, work: Path) -> tuple[Any, Any]:
    """Run ``spec`` for ``k`` batches and save an Orbax checkpoint in one fresh process, restore
    it and run to the end in another; what each wrote (``resume_worker``'s pickles)."""
    head, tail = _save_then_restore(spec, k, work, run_worker)
    return pickle.loads(head.read_bytes()), pickle.loads(tail.read_bytes())


def save_and_restore_on_hosts(
    spec: dict[str, Any], k: int, work: Path, hosts: int
) -> list[tuple[Any, Any]]:
    """``save_and_restore`` with each side a slice of ``hosts`` real ``jax.distributed``
    processes: every host's (head, tail)."""
    head, tail = _save_then_restore(spec, k, work, run_slice_of(hosts, work))
    return [
        (
            pickle.loads(Path(f"{head}.host{h}").read_bytes()),
            pickle.loads(Path(f"{tail}.host{h}").read_bytes()),
        )
        for h in range(hosts)
    ]


@pytest.mark.slow
@settings(_settings, max_examples=8, phases=FAST_FAILURE)
@given(pipeline=pipelines(), data=st.data())
def test_resume_in_a_fresh_process_from_an_orbax_checkpoint(
    datasets: Datasets,
    tmp_path_factory: pytest.TempPathFactory,
    pipeline: dict[str, Any],
    data: st.DataObject,
) -> None:
    spec = with_paths(pipeline, datasets)
    expected = list(build_loader(spec))
    k = data.draw(st.integers(0, len(expected)), label="stop after k batches")
    head, tail = save_and_restore(spec, k, tmp_path_factory.mktemp("orbax"))
    assert tail["step"] == k
    assert tail["model"].keys() == model_state(k).keys()
    for key, value in model_state(k).items():
        np.testing.assert_array_equal(tail["model"][key], value)
        assert tail["model"][key].dtype == value.dtype
    assert len(head["batches"]) == k
    assert_batches_equal(head["batches"] + tail["batches"], expected)


@pytest.mark.slow
def test_a_fresh_process_refuses_a_state_saved_with_another_tokenizer(
    datasets: Datasets, tmp_path: Path
) -> None:
    """The tokenizer is in the fingerprint by its content: a state saved with one vocabulary is
    refused, in a new process, by the same pipeline with another."""
    layouts = [{"shards": [30, 14], "row_group_size": 8, "max_tokens": 6}]
    spec = {
        "sources": datasets.paths(layouts),
        "transforms": ["tokenize", "few_words"],
        "loader": {"batch_size": 4, "shuffle_buffer_size": 16, "pad": True},
    }
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    run_worker("save", str(spec_path), str(tmp_path / "ckpt"), "3", str(tmp_path / "head.pkl"))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**spec, "tokenizer_vocab": 400}))
    result = worker("restore", str(other), str(tmp_path / "ckpt"), str(tmp_path / "tail.pkl"))
    assert result.returncode != 0
    assert "LoaderStateError" in result.stderr and "transforms: saved" in result.stderr


@pytest.mark.slow
@settings(_settings, max_examples=4, phases=FAST_FAILURE)
@given(pipeline=pipelines(host_choices=((0, 2),)), data=st.data())
def test_resume_on_two_real_hosts_from_an_orbax_checkpoint(
    datasets: Datasets,
    tmp_path_factory: pytest.TempPathFactory,
    pipeline: dict[str, Any],
    data: st.DataObject,
) -> None:
    """Two ``jax.distributed`` processes run to a random step and save; two new ones restore
    and run to the end: each host's batches are those of its uninterrupted part."""
    spec = {key: value for key, value in with_paths(pipeline, datasets).items() if key != "hosts"}
    expected = [list(build_loader({**spec, "hosts": [h, 2]})) for h in range(2)]
    assert len(expected[0]) == len(expected[1])  # equal steps on every host
    k = data.draw(st.integers(0, len(expected[0])), label="stop after k batches")
    work = tmp_path_factory.mktemp("two-hosts")
    for host, (head, tail) in enumerate(save_and_restore_on_hosts(spec, k, work, 2)):
        assert tail["step"] == k and len(head["batches"]) == k
        assert_batches_equal(head["batches"] + tail["batches"], expected[host])


# -- indexed mode: the epoch contract -----------------------------------------------------------


@settings(_settings, max_examples=100)
@given(
    layouts=source_layouts(),
    shuffle=st.one_of(st.none(), st.integers(1, 500)),
    num_epochs=st.integers(1, 2),
    batch_size=st.integers(1, 17),
    seed=st.integers(0, 2**16),
)
def test_every_sample_exactly_once_per_epoch(
    datasets: Datasets,
    layouts: list[dict[str, Any]],
    shuffle: int | None,
    num_epochs: int,
    batch_size: int,
    seed: int,
) -> None:
    spec = {
        "sources": datasets.paths(layouts),
        "loader": {
            "batch_size": batch_size,
            "shuffle_buffer_size": shuffle,
            "seed": seed,
            "num_epochs": num_epochs,
            "pad": True,
        },
    }
    loader = build_loader(spec)
    assert loader.mode == "indexed"
    seen = ids(list(loader))
    n = total_rows(layouts)
    assert len(seen) == n * num_epochs
    epochs = [seen[e * n : (e + 1) * n] for e in range(num_epochs)]
    for order in epochs:
        assert sorted(order) == list(range(n))
    assert collections.Counter(seen) == {i: num_epochs for i in range(n)}
    if shuffle is None:
        # Unshuffled: sources, shards and rows in their stored order, every epoch.
        assert all(order == list(range(n)) for order in epochs)


def test_shuffled_epochs_differ_from_each_other_and_by_seed(datasets: Datasets) -> None:
    layouts = [
        {"shards": [60, 0, 45], "row_group_size": 8, "max_tokens": 6},
        {"shards": [50], "row_group_size": 13, "max_tokens": 6},
    ]
    n = total_rows(layouts)

    def epochs(seed: int) -> list[list[int]]:
        spec = {
            "sources": datasets.paths(layouts),
            "loader": {"batch_size": 7, "shuffle_buffer_size": 16, "seed": seed, "num_epochs": 2},
        }
        seen = ids(list(build_loader(spec, pad=True)))
        return [seen[:n], seen[n:]]

    first, second = epochs(0)
    assert sorted(first) == sorted(second) == list(range(n))
    assert first != list(range(n))
    assert first != second
    assert epochs(0) == [first, second]  # Deterministic for a seed...
    assert epochs(1)[0] != first  # ...and another seed gives another order.
