"""How several datasets are mixed (``MixStageConfig``): weights by dataset name, fixed or
scheduled by training step, and what happens when a dataset runs out."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

from easydata_grain.config.validation import Config, bounded, join, require


def check_weights(weights: Mapping[str, float], path: str) -> None:
    """Weights are non-negative and not all zero (they need not sum to 1: the mix stage
    normalises them)."""
    require(bool(weights), f"{path}: no weights given")
    for name, weight in weights.items():
        require(weight >= 0, f"{path}[{name!r}]: a weight must be >= 0, got {weight!r}")
    require(any(w > 0 for w in weights.values()), f"{path}: all weights are 0; give one > 0")


@dataclasses.dataclass(frozen=True)
class WeightSchedulePoint(Config):
    """The weights from a training step on (``step`` schedules) or at it (interpolated)."""

    step: int = bounded(minimum=0)
    """The training step (global batch index) these weights apply at."""
    weights: dict[str, float]
    """Each dataset's weight, by name (normalised by the mix stage; EasyData requires a sum
    of 1, which is accepted too)."""

    def _check(self, path: str) -> None:
        check_weights(self.weights, join(path, "weights"))


@dataclasses.dataclass(frozen=True)
class MixStageConfig(Config):
    """How ``Pipeline.mix()`` interleaves the datasets: positions are cut into blocks of
    ``block_size`` rows, each block holds each dataset's share of the weights at that block's
    training step, in a shuffled order fixed by ``seed``."""

    weights: dict[str, float] | None = None
    """Fixed weights by dataset name; every dataset needs one (0 leaves it out). None with no
    ``weight_schedule``: equal weights."""
    weight_schedule: tuple[WeightSchedulePoint, ...] | None = None
    """Weights that change with the training step: points in increasing ``step`` order, the
    first at step 0, each naming the same datasets. Not together with ``weights``."""
    weight_schedule_type: Literal["step", "linear", "cosine"] = "step"
    """Between two points: ``step`` keeps the earlier point's weights, ``linear`` and
    ``cosine`` interpolate; after the last point its weights hold."""
    block_size: int = bounded(1000, minimum=1)
    """Rows per mixing block: the realized mixture matches the weights in every block, up to
    rounding (carried to the next block)."""
    stop_strategy: Literal["restart", "first_exhausted", "all_exhausted"] = "restart"
    """When a dataset runs out: ``restart`` starts its next epoch (the mix is endless unless
    the load stage's ``num_epochs`` bounds it); ``first_exhausted`` stops at the first
    dataset's end; ``all_exhausted`` stops once every dataset was read through (the others
    restarting meanwhile)."""
    seed: int | None = bounded(None, minimum=0)
    """The seed of the block order; None: the pipeline's ``seed``."""
    add_source_field: str | None = None
    """Add each row's dataset name under this field (with one dataset too); None: rows are not
    changed. (Not an EasyData field.)"""

    def _check(self, path: str) -> None:
        if self.weights is not None:
            check_weights(self.weights, join(path, "weights"))
            require(
                self.weight_schedule is None,
                f"{join(path, 'weight_schedule')}: give weights or a weight_schedule, not both",
            )
        schedule = self.weight_schedule
        if schedule is None:
            return
        where = join(path, "weight_schedule")
        require(bool(schedule), f"{where}: an empty schedule (None: fixed weights)")
        require(schedule[0].step == 0, f"{where}[0].step: the first point must be at step 0")
        first = set(schedule[0].weights)
        for i, point in enumerate(schedule[1:], start=1):
            require(
                point.step > schedule[i - 1].step,
                f"{where}[{i}].step: steps must increase, got {point.step} after "
                f"{schedule[i - 1].step}",
            )
            require(
                set(point.weights) == first,
                f"{where}[{i}].weights: names {sorted(point.weights)} differ from "
                f"{where}[0]'s {sorted(first)}; every point must weight the same datasets",
            )

    def weighted_names(self) -> set[str] | None:
        """The dataset names the weights (or the schedule) give; None for equal weights."""
        if self.weights is not None:
            return set(self.weights)
        if self.weight_schedule is not None:
            return set(self.weight_schedule[0].weights)
        return None
