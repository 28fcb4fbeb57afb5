"""``MixedShardedSource``: several indexed sources mixed by weight, as one source.

Give it to ``AsyncDataLoader`` (or use the pipeline's mix stage): the compiler reads each
component in its own epoch order (shuffled by the loader's ``shuffle_buffer_size``) and mixes
them by the ``MixtureOrder`` (``mix_order.py``), a pure function of the global position: the
loader's state stays a position, so resume is O(1), exact and elastic. Weights are by name,
fixed or scheduled by training step (the global batch index); ``stop_strategy`` says when a
pass ends (see ``graph/mix.py``). Iterating it directly (``open_shard("mixture")``) gives the
mixture of the components in file order, one training step per row.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pyarrow as pa

from easydata_grain.fingerprint import digest
from easydata_grain.graph.mix import STOP_STRATEGIES, StopStrategy
from easydata_grain.io.stats import IOStats
from easydata_grain.mix_order import MixtureOrder
from easydata_grain.mix_schedule import ScheduleType, WeightSchedule, schedule_from
from easydata_grain.sources.protocol import ColumnarSource, IndexedSource
from easydata_grain.sources.resolve import resolve_source
from easydata_grain.transforms.fluent import TransformableSource
from easydata_grain.types import Row, row_number

if TYPE_CHECKING:
    from easydata_grain.config import MixStageConfig

SHARD = "mixture"


@runtime_checkable
class MixtureSource(Protocol):
    """What the compiler needs of a mixture to build it in indexed mode: one
    ``IndexedSourceDataset`` per component (``sources``, endless, each its own epoch order),
    mixed by ``order(global batch size, seed)`` through ``graph.mix.MixedMapDataset``, with
    ``graph.mix.mixture_length`` giving a pass's positions from ``stop_strategy``."""

    names: list[str]
    """The components' names, in order."""
    sources: list[Any]
    """The components (each an ``IndexedSource``), in order."""
    stop_strategy: StopStrategy
    """When a pass ends (``graph/mix.py``)."""
    source_field: str | None
    """The field that names each row's component (None: rows unchanged)."""

    def order(self, global_batch_size: int, seed: int) -> MixtureOrder:
        """The mixture order for a loader's global batch and seed."""
        ...

    @property
    def block_schema(self) -> pa.Schema | None:
        """The components' common Arrow schema (with the source field) when batches can be
        gathered column by column; None otherwise."""
        ...

    def targets(self, step: int = 0) -> dict[str, float]:
        """Each component's normalised weight at a training step."""
        ...


class MixedShardedSource(TransformableSource):
    """``sources`` (a dict by name, or a list named ``dataset_{i}``) mixed by ``weights``: a
    ``MixtureSource``, and a ``ShardedSource`` of one shard when iterated directly.

    The fluent methods (``map``, ``filter``, ``select_fields``, ``tokenize``...) give a
    ``TransformedShardedSource`` over the mixture: the loader mixes the components and runs
    the steps after mixing, as ``AsyncDataLoader(mixed, transforms=[...])`` does (same rows,
    same exact resume); iterated directly, it is the mixture in file order, transformed.

    ``weights``: by name (or in order), normalised; None: equal. ``weight_schedule``:
    ``[(step, weights by name), ...]`` from step 0, interpolated per ``weight_schedule_type``
    (``step``, ``linear``, ``cosine``). ``block_size``: rows per mixing block (each block holds
    every component's share). ``seed``: the block order's seed (None: the loader's).
    ``source_field``: add each row's component name under this field.
    """

    def __init__(
        self,
        sources: Mapping[str, Any] | Sequence[Any],
        weights: Mapping[str, float] | Sequence[float] | None = None,
        *,
        block_size: int = 1000,
        seed: int | None = None,
        stop_strategy: StopStrategy = "restart",
        weight_schedule: Sequence[tuple[int, Mapping[str, float]]] | None = None,
        weight_schedule_type: ScheduleType = "step",
        source_field: str | None = None,
    ):
        if isinstance(sources, Mapping):
            named = dict(sources)
        else:
            named = {f"dataset_{i}": s for i, s in enumerate(sources)}
        if len(named) < 2:
            raise ValueError(f"MixedShardedSource mixes two or more sources, got {len(named)}")
        if stop_strategy not in STOP_STRATEGIES:
            raise ValueError(
                f"stop_strategy must be one of {STOP_STRATEGIES}, got {stop_strategy!r}"
            )
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be an int >= 1, got {block_size!r}")
        self.names = list(named)
        self.sources = [resolve_source(s) for s in named.values()]
        for name, source in zip(self.names, self.sources, strict=True):
            if not isinstance(source, IndexedSource):
                raise TypeError(
                    f"The source {name!r} ({type(source).__name__}) has no row counts: mixing "
                    "reads components by position (Parquet, JSON, Hub files, in-memory rows). "
                    "A stream cannot be mixed with an exact resume."
                )
        self.schedule: WeightSchedule = schedule_from(
            self.names, weights, weight_schedule, weight_schedule_type
        )
        self.block_size = block_size
        self.seed = seed
        self.stop_strategy = stop_strategy
        self.source_field = source_field
        self._orders: dict[tuple[int, int], MixtureOrder] = {}

    @classmethod
    def from_config(
        cls, sources: Mapping[str, Any], config: MixStageConfig, *, seed: int
    ) -> MixedShardedSource:
        """The mix stage of a pipeline: ``config``'s weights, schedule, block size, stop
        strategy and seed (the pipeline's ``seed`` when the stage has none)."""
        points = (
            [(p.step, p.weights) for p in config.weight_schedule]
            if config.weight_schedule
            else None
        )
        return cls(
            sources,
            config.weights,
            block_size=config.block_size,
            seed=seed if config.seed is None else config.seed,
            stop_strategy=config.stop_strategy,
            weight_schedule=points,
            weight_schedule_type=config.weight_schedule_type,
            source_field=config.add_source_field,
        )

    def __repr__(self) -> str:
        return f"MixedShardedSource({dict(zip(self.names, self.sources, strict=True))!r})"

    def order(self, global_batch_size: int, seed: int) -> MixtureOrder:
        """The mixture order for a loader's global batch and seed (``self.seed`` wins); one
        per pair, kept, so its cached prefix sums serve every later call (stats, passes)."""
        seed = seed if self.seed is None else self.seed
        order = self._orders.get((global_batch_size, seed))
        if order is None:
            order = MixtureOrder(
                self.schedule,
                block_size=self.block_size,
                global_batch_size=global_batch_size,
                seed=seed,
            )
            self._orders = {**self._orders, (global_batch_size, seed): order}
        return order

    def targets(self, step: int = 0) -> dict[str, float]:
        """The normalised weights at a training step."""
        return dict(zip(self.names, self.schedule.at(step).tolist(), strict=True))

    # -- ShardedSource: the mixture read in file order ----------------------------------------

    @property
    def shard_names(self) -> list[str]:
        """One shard: the mixture."""
        return [SHARD]

    def open_shard(self, shard: str) -> Iterator[Row]:
        """The mixture's rows (components in file order, one epoch per ``stop_strategy``)."""
        return self.open_shard_at_row(shard, 0)

    def open_shard_at_row(self, shard: str, row: int) -> Iterator[Row]:
        """The mixture's rows from position ``row`` on (a bad shard or row raises here)."""
        from easydata_grain.graph.indexed_dataset import IndexedSourceDataset
        from easydata_grain.graph.mix import MixedMapDataset

        if shard != SHARD:
            raise KeyError(f"A MixedShardedSource has one shard, {SHARD!r}; got {shard!r}")
        number = row_number(row)
        if number is None or number < 0:
            raise ValueError(f"row must be an int >= 0, got {row!r}")
        row = number
        dataset = MixedMapDataset.from_datasets(
            {
                name: IndexedSourceDataset(source, shuffle=False, num_epochs=None)
                for name, source in zip(self.names, self.sources, strict=True)
            },
            block_size=self.block_size,
            seed=0 if self.seed is None else self.seed,
            stop_strategy=self.stop_strategy,
            weight_schedule=[
                (step, dict(zip(self.names, weights, strict=True)))
                for step, weights in self.schedule.points
            ],
            weight_schedule_type=self.schedule.kind,
            source_field=self.source_field,
            rows_per_epoch=[sum(s.row_counts()) for s in self.sources],
        )
        return (dataset[position] for position in range(row, len(dataset)))

    # -- what the compiler and the fingerprint need --------------------------------------------

    def describe(self) -> str:
        """The components: name, class, shards and rows."""
        return "components: " + "; ".join(
            f"{name} ({type(source).__name__}, {len(source.shard_names)} shard(s), "
            f"{sum(source.row_counts()):,} rows)"
            for name, source in zip(self.names, self.sources, strict=True)
        )

    def identities(self) -> list[str]:
        """Each component's shards under its name, and the mixing settings."""
        settings = digest(
            {
                "schedule": [[p[0], *p[1]] for p in self.schedule.points],
                "kind": self.schedule.kind,
                "block_size": self.block_size,
                "seed": self.seed,
                "stop": self.stop_strategy,
                "field": self.source_field,
            }
        )
        return [
            f"mix[{settings}]",
            *(
                f"{name}:{identity}"
                for name, source in zip(self.names, self.sources, strict=True)
                for identity in source.identities()
            ),
        ]

    @property
    def block_schema(self) -> pa.Schema | None:
        """The components' common Arrow schema (with the source field), when every component
        reads Arrow blocks of one schema; None otherwise."""
        schemas = [s.block_schema if isinstance(s, ColumnarSource) else None for s in self.sources]
        if schemas[0] is None or not all(s is not None and s.equals(schemas[0]) for s in schemas):
            return None
        if self.source_field is not None:
            return schemas[0].append(pa.field(self.source_field, pa.string()))
        return schemas[0]

    @property
    def stats(self) -> IOStats:
        """The components' I/O counters, added up."""
        total = IOStats()
        for source in self.sources:
            total.add(**source.stats.snapshot())
        return total
