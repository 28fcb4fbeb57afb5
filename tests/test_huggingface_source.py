"""HuggingFaceShardedSource against the Hub emulator (ops/hub_emulator.py, the ``hub`` fixture)
and repos shaped like FineWeb, The Stack, C4 and Alpaca (ops/hub_repos.py), named as on the Hub.

The reference for every row is ``datasets.load_dataset(..., streaming=True)`` on the same
emulator: same rows, same order, shard by shard.
"""

from __future__ import annotations

import itertools
from typing import Any

import datasets
import pytest

from easydata_grain import AsyncDataLoader, HuggingFaceShardedSource
from ops.hub_emulator import HubEmulator
from ops.hub_repos import ShapedRepo, alpaca_like, c4_like, fineweb_like, the_stack_like

SHAPES = {
    "HuggingFaceFW/fineweb": fineweb_like,
    "bigcode/the-stack": the_stack_like,
    "allenai/c4": c4_like,
    "tatsu-lab/alpaca": alpaca_like,
}
# (repo, subset, split): every subset the spec names, and a few more.
CASES = [
    ("HuggingFaceFW/fineweb", None, "train"),
    ("HuggingFaceFW/fineweb", "CC-MAIN-2024-10", "train"),
    ("tatsu-lab/alpaca", None, "train"),
]


@pytest.fixture(scope="module")
def shaped(hub: HubEmulator) -> dict[str, ShapedRepo]:
    """The four repos, under their Hub names."""
    return {repo_id: make(hub.root, repo_id) for repo_id, make in SHAPES.items()}


def reference(repo_id: str, subset: str | None, split: str) -> list[dict[str, Any]]:
    """What ``datasets`` streams."""
    return list(datasets.load_dataset(repo_id, subset, split=split, streaming=True))


def all_rows(source: HuggingFaceShardedSource) -> list[dict[str, Any]]:
    return [row for shard in source.shard_names for row in source.open_shard(shard)]


def test_the_spec_fineweb_example(shaped: dict[str, ShapedRepo], tmp_path: Any) -> None:
    source = HuggingFaceShardedSource(
        dataset_name="HuggingFaceFW/fineweb",
        split="train",
        streaming=True,
        cache_dir=str(tmp_path / "hf_cache"),
    )
    first = list(source.open_shard(source.shard_names[0]))
    assert first == shaped["HuggingFaceFW/fineweb"].rows[("CC-MAIN-2013-20", "train")][:40]
    assert source.shard_names[0].startswith("hf://datasets/HuggingFaceFW/fineweb@")


def test_the_spec_alpaca_example_takes_the_name_positionally(
    shaped: dict[str, ShapedRepo],
) -> None:
    source = HuggingFaceShardedSource("tatsu-lab/alpaca", streaming=True)
    assert all_rows(source) == shaped["tatsu-lab/alpaca"].rows[("default", "train")]


@pytest.mark.parametrize(("repo_id", "subset", "split"), CASES)
def test_rows_equal_datasets_streaming(
    shaped: dict[str, ShapedRepo], repo_id: str, subset: str | None, split: str
) -> None:
    source = HuggingFaceShardedSource(repo_id, split, subset)
    builder = datasets.load_dataset_builder(repo_id, subset)
    assert source.shard_names == list(builder.config.data_files[split])
    assert source.row_counts() == [
        sum(1 for _ in source.open_shard(shard)) for shard in source.shard_names
    ]
    assert all_rows(source) == reference(repo_id, subset, split)


@pytest.mark.parametrize(("repo_id", "subset", "split"), CASES)
def test_a_seek_is_the_suffix_of_a_full_read(
    shaped: dict[str, ShapedRepo], repo_id: str, subset: str | None, split: str
) -> None:
    source = HuggingFaceShardedSource(repo_id, split, subset)
    for shard, count in zip(source.shard_names, source.row_counts(), strict=True):
        full = list(source.open_shard(shard))
        for row in sorted({0, 1, 15, 16, 17, count // 2, count - 1, count}):
            assert list(source.open_shard_at_row(shard, row)) == full[row:], (shard, row)


def _ids(loader: AsyncDataLoader, batches: int) -> list[list[Any]]:
    return [list(batch["text"]) for batch in itertools.islice(loader, batches)]


@pytest.mark.parametrize(("repo_id", "subset", "split"), CASES)
def test_loader_resume_is_exact(
    shaped: dict[str, ShapedRepo], repo_id: str, subset: str | None, split: str
) -> None:
    def make() -> AsyncDataLoader:
        source = HuggingFaceShardedSource(repo_id, split, subset, columns=["text"])
        return AsyncDataLoader(source, batch_size=8, shuffle_buffer_size=32, seed=5)

    whole = _ids(make(), 10)
    interrupted = make()
    assert _ids(interrupted, 4) == whole[:4]
    state = interrupted.get_state()
    resumed = make()
    resumed.set_state(state)
    assert _ids(resumed, 6) == whole[4:]
