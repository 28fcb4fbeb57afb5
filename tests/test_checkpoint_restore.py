"""``LoaderRestore`` on a step whose loader states are per host (packing): a state saved on
another host count, or missing for this host, is refused with what the step holds and what to
do (it said the step held no loader state at all)."""

from __future__ import annotations

from pathlib import Path

import pytest
from etils import epath

from easydata_grain import AsyncDataLoader, Hosts, InMemorySource, LoaderStateError, Pack
from easydata_grain.checkpoint import LoaderCheckpointHandler, LoaderRestore, LoaderSave

# Hosts simulated in one process (each ends with its own rows, and the loader warns).
pytestmark = pytest.mark.filterwarnings("ignore:pack= on host:UserWarning")
ROWS = [{"input_ids": [2 + i] * (1 + i % 4)} for i in range(40)]


def packed(index: int, count: int) -> AsyncDataLoader:
    """A packing loader on host ``index`` of ``count`` (hosts simulated in one process)."""
    return AsyncDataLoader(
        InMemorySource.from_rows(ROWS), global_batch_size=6, pack=Pack(8), hosts=Hosts(index, count)
    )


def save_hosts(directory: Path, hosts: list[int], count: int) -> None:
    """Save the state of each of ``hosts`` (of ``count``) after one batch into ``directory``."""
    for index in hosts:
        loader = packed(index, count)
        next(loader)
        LoaderCheckpointHandler().save(epath.Path(directory), LoaderSave(loader))


@pytest.mark.parametrize("count", [1, 3])
def test_states_of_another_host_count_are_named(tmp_path: Path, count: int) -> None:
    save_hosts(tmp_path, [0, 1], 2)
    with pytest.raises(LoaderStateError, match="saved on 2 hosts") as error:
        LoaderCheckpointHandler().restore(epath.Path(tmp_path), LoaderRestore(packed(0, count)))
    assert f"cannot be restored on {count}" in str(error.value)
    assert "loader_state.process_1-of-2.json" in str(error.value)
    assert "Restart with 2 hosts" in str(error.value)


def test_a_missing_host_state_is_named(tmp_path: Path) -> None:
    save_hosts(tmp_path, [0], 2)
    with pytest.raises(LoaderStateError, match="not of host 1") as error:
        LoaderCheckpointHandler().restore(epath.Path(tmp_path), LoaderRestore(packed(1, 2)))
    assert "LoaderSave on every process" in str(error.value)


def test_each_host_restores_its_own_state(tmp_path: Path) -> None:
    save_hosts(tmp_path, [0, 1], 2)
    for index in range(2):
        expected = packed(index, 2)
        next(expected)
        restored = LoaderCheckpointHandler().restore(
            epath.Path(tmp_path), LoaderRestore(packed(index, 2))
        )
        assert next(restored)["input_ids"].tolist() == next(expected)["input_ids"].tolist()


def test_a_step_without_loader_state(tmp_path: Path) -> None:
    with pytest.raises(LoaderStateError, match="holds no loader state"):
        LoaderCheckpointHandler().restore(epath.Path(tmp_path), LoaderRestore(packed(0, 1)))
