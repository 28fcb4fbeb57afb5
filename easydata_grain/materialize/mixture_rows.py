"""``MixtureRows``: the rows of a mixture (``MixedShardedSource``) in the loader's order, by
ranges of positions: the ``MaterializableRows`` of a mixed pipeline.

Position ``k`` is the row the loader gives at position ``k`` of its first pass (one host): the
compiler's own mixture dataset (each component in its own epoch order, mixed by the order of
the loader's global batch and seed), so a saved mixture equals what the loader reads.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from easydata_grain.distributed import Hosts
from easydata_grain.fingerprint import digest
from easydata_grain.graph import compiler
from easydata_grain.graph.mix import MixedMapDataset
from easydata_grain.graph.plan import Plan, Settings
from easydata_grain.materialize.arrow_table import positions_table
from easydata_grain.sources.mixed import MixedShardedSource


class MixtureRows:
    """One pass of ``source`` mixed as ``AsyncDataLoader(source, batch_size=global_batch_size,
    shuffle_buffer_size=shuffle_buffer_size, seed=seed)`` reads it on one host."""

    def __init__(
        self,
        source: MixedShardedSource,
        *,
        global_batch_size: int,
        seed: int = 0,
        shuffle_buffer_size: int = 0,
    ):
        if not isinstance(source, MixedShardedSource):
            raise TypeError(f"source must be a MixedShardedSource, got {type(source).__name__}")
        self.source = source
        """The mixture."""
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.shuffle_buffer_size = shuffle_buffer_size
        self._plan: Plan | None = None
        self._dataset: MixedMapDataset | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_plan": None, "_dataset": None}

    @property
    def plan(self) -> Plan:
        """The loader's plan of the mixture (made on first use in each process)."""
        if self._plan is None:
            self._plan = compiler.plan_pipeline(
                self.source,
                Settings(
                    batch_size=self.global_batch_size,
                    hosts=Hosts(index=0, count=1),
                    shuffle_buffer_size=self.shuffle_buffer_size,
                    seed=self.seed,
                    num_epochs=1,
                    drop_remainder=False,
                    transforms=(),
                    collate=None,
                    prefetch_enabled=False,
                    prefetch_workers=0,
                    prefetch_buffer_size=0,
                    worker_processes=0,
                ),
            )
        return self._plan

    @property
    def dataset(self) -> MixedMapDataset:
        """The first pass as the loader reads it."""
        if self._dataset is None:
            self._dataset = compiler._mixture(self.plan, 0)
        return self._dataset

    def num_positions(self) -> int:
        """Positions of one pass (its stop strategy's length)."""
        length = self.plan.rows_per_pass
        if length is None:
            raise ValueError("An endless mixture cannot be materialized: give it num_epochs.")
        return length

    def fingerprint(self) -> dict[str, Any]:
        """The components (shards, versions, transforms and tokenizers by content), the mixing
        settings and the order."""
        identities = self.source.identities()
        return {
            "rows": "mixture",
            "sources": digest(identities),
            "shards": len(identities) - 1,
            "positions": self.num_positions(),
            "order": {
                "seed": self.seed,
                "shuffle_buffer_size": self.shuffle_buffer_size,
                "global_batch_size": self.global_batch_size,
                "pass_end": "split",  # a restart pass ends exactly (older outputs: not)
            },
        }

    def table(self, start: int, stop: int) -> pa.Table:
        """The rows of positions ``[start, stop)`` in order (filtered rows left out)."""
        return positions_table(self.dataset, start, stop, self.num_positions(), "the mixed rows")

    def __repr__(self) -> str:
        return f"MixtureRows({self.source!r}, global_batch_size={self.global_batch_size})"
