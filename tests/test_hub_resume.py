"""Hub datasets resume exactly: seeks are suffixes of full reads (property) and a loader over a
Hub source restores from a real Orbax checkpoint in a fresh process (property over random
pipelines and stop points), on the Hub emulator (the ``hub`` fixture)."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easydata_grain import HuggingFaceShardedSource
from ops.hub_emulator import HubEmulator
from ops.hub_repos import c4_like, fineweb_like
from tests.resume_worker import build_loader
from tests.test_loader_resume import FAST_FAILURE, _settings, assert_batches_equal, save_and_restore

# (repo, subset, split, the column every row has): Parquet shards with row groups of 16, and
# gzipped JSON Lines.
CASES = [
    ("resume/fineweb", None, "train", "text"),
    ("resume/fineweb", "CC-MAIN-2024-10", "train", "text"),
    ("resume/c4", "en", "train", "text"),
    ("resume/c4", "en", "validation", "text"),
]


@pytest.fixture(scope="module")
def repos(hub: HubEmulator) -> None:
    fineweb_like(hub.root, "resume/fineweb", rows_per_shard=45)
    c4_like(hub.root, "resume/c4", rows_per_file=70)


@cache
def _source(case: int, streaming: bool) -> HuggingFaceShardedSource:
    repo_id, subset, split, _ = CASES[case]
    return HuggingFaceShardedSource(repo_id, split, subset, streaming=streaming)


@cache
def _full(case: int, streaming: bool, shard: int) -> list[dict[str, Any]]:
    return list(_source(case, streaming).open_shard(shard))


@settings(_settings, max_examples=40)
@given(data=st.data())
def test_a_seek_is_the_suffix_of_a_full_read(repos: None, data: st.DataObject) -> None:
    case = data.draw(st.integers(0, len(CASES) - 1), label="case")
    streaming = data.draw(st.booleans(), label="streaming")
    source = _source(case, streaming)
    shard = data.draw(st.integers(0, len(source.shard_names) - 1), label="shard")
    full = _full(case, streaming, shard)
    assert source.row_counts()[shard] == len(full)
    row = data.draw(st.integers(0, len(full)), label="row")
    assert list(source.open_shard_at_row(shard, row)) == full[row:]
    assert list(source.open_shard_at_row(source.shard_names[shard], row)) == full[row:]


@st.composite
def hub_pipelines(draw: st.DrawFn) -> dict[str, Any]:
    """A loader over one of the Hub CASES, with random batching, shuffling and prefetch."""
    repo_id, subset, split, column = draw(st.sampled_from(CASES), label="case")
    hub = {"dataset_name": repo_id, "split": split, "subset": subset}
    if draw(st.booleans(), label="project"):
        hub["columns"] = [column]
    hub["streaming"] = draw(st.booleans(), label="streaming")
    loader = {
        "batch_size": draw(st.integers(1, 24), label="batch_size"),
        "shuffle_buffer_size": draw(st.sampled_from([0, 7, 32, 1000]), label="shuffle"),
        "seed": draw(st.integers(0, 2**16), label="seed"),
        "drop_remainder": draw(st.booleans(), label="drop_remainder"),
        "prefetch_workers": draw(st.integers(0, 2), label="prefetch_workers"),
    }
    return {"hub": hub, "loader": loader}


@pytest.mark.slow
@settings(_settings, max_examples=4, phases=FAST_FAILURE)
@given(spec=hub_pipelines(), data=st.data())
def test_resume_in_a_fresh_process_from_an_orbax_checkpoint(
    repos: None,
    tmp_path_factory: pytest.TempPathFactory,
    spec: dict[str, Any],
    data: st.DataObject,
) -> None:
    expected = list(build_loader(spec))
    k = data.draw(st.integers(0, len(expected)), label="stop after k batches")
    head, tail = save_and_restore(spec, k, tmp_path_factory.mktemp("hub-orbax"))
    assert tail["step"] == k
    assert_batches_equal(head["batches"] + tail["batches"], expected)
