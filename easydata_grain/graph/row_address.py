"""Where a host's row came from: its source shard and row, found by walking the dataset graph
back from the row's index (used to name a bad row in the packer's errors).

``row_address(dataset, index)`` maps ``index`` through the host split (``HostSliceDataset``)
and the ops that keep positions (a single parent of the same length: Grain's map, filter and
seed, ``ChunkedMapDataset``) down to an ``IndexedSourceDataset``, whose epoch order gives the
``(shard, row)``. Anything else (a mixture, a stream) has no address here: None.
"""

from __future__ import annotations

from typing import Any

import grain

from easydata_grain.graph.host_split import HostSliceDataset
from easydata_grain.graph.indexed_dataset import IndexedSourceDataset

NEXT_INDEX = "next_index"
"""The key of a Grain ``MapDataset`` iterator's state: the next element's index."""


def row_address(dataset: grain.MapDataset, index: int) -> tuple[str, int] | None:
    """The ``(shard name, row)`` of element ``index`` of ``dataset``, or None when unknown."""
    while True:
        if isinstance(dataset, IndexedSourceDataset):
            shard, row = dataset.address(index)
            return str(dataset.source.shard_names[shard]), row
        if isinstance(dataset, HostSliceDataset):
            index = dataset.row_position(index)
        parents = dataset.parents
        if len(parents) != 1 or not isinstance(parents[0], grain.MapDataset):
            return None
        if not isinstance(dataset, HostSliceDataset) and len(parents[0]) != len(dataset):
            return None
        dataset = parents[0]


def last_read_address(dataset: grain.MapDataset, state: Any) -> tuple[str, int] | None:
    """The address of the row a Grain iterator over ``dataset`` returned last, from the
    iterator's ``state`` after it (its next index); None when the state is not such."""
    if not isinstance(state, dict) or not isinstance(state.get(NEXT_INDEX), int):
        return None
    return row_address(dataset, state[NEXT_INDEX] - 1)
