"""Mixture weights as a function of the training step (the global batch index): fixed, or a
schedule of points held (``step``) or interpolated (``linear``, ``cosine``) between."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

ScheduleType = Literal["step", "linear", "cosine"]
SCHEDULE_TYPES = ("step", "linear", "cosine")


@dataclasses.dataclass(frozen=True)
class WeightSchedule:
    """Weights per component as a function of the training step.

    ``points`` are ``(step, weights)`` in increasing step order, the first at step 0. ``step``
    keeps each point's weights until the next point; ``linear`` and ``cosine`` interpolate
    between points; after the last point its weights hold. Weights are normalised to sum to 1.
    """

    points: tuple[tuple[int, tuple[float, ...]], ...]
    kind: ScheduleType = "step"

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_TYPES:
            raise ValueError(f"kind must be one of {SCHEDULE_TYPES}, got {self.kind!r}")
        if not self.points or self.points[0][0] != 0:
            raise ValueError("a weight schedule needs a first point at step 0")
        width = len(self.points[0][1])
        for i, (step, weights) in enumerate(self.points):
            if isinstance(step, bool) or not isinstance(step, int | np.integer):
                raise TypeError(f"schedule point {i}: the step must be an int, got {step!r}")
            if i and step <= self.points[i - 1][0]:
                raise ValueError(
                    f"schedule steps must increase: {step} after {self.points[i - 1][0]}"
                )
            if len(weights) != width:
                raise ValueError(f"schedule point {i} has {len(weights)} weights, point 0 {width}")
            if any(not math.isfinite(w) or w < 0 for w in weights) or not any(weights):
                raise ValueError(
                    f"schedule point {i}: weights must be finite, >= 0 and not all 0, "
                    f"got {list(weights)}"
                )

    @classmethod
    def fixed(cls, weights: Sequence[float]) -> WeightSchedule:
        """One set of weights for every step."""
        return cls(((0, tuple(float(w) for w in weights)),))

    @property
    def steps(self) -> list[int]:
        """The steps of the points."""
        return [int(step) for step, _ in self.points]

    @property
    def num_components(self) -> int:
        """How many components the weights are for."""
        return len(self.points[0][1])

    @property
    def last_change(self) -> int:
        """The step from which the weights no longer change (the last point's)."""
        return self.steps[-1]

    def at(self, step: int) -> np.ndarray:
        """The normalised weights at ``step``."""
        return self.at_steps(np.asarray([step]))[0]

    def at_steps(self, steps: np.ndarray) -> np.ndarray:
        """The normalised weights at each of ``steps`` (one row per step)."""
        steps = np.asarray(steps, dtype=np.float64)
        starts = np.asarray(self.steps, dtype=np.float64)
        table = np.asarray([w for _, w in self.points], dtype=np.float64)
        i = np.searchsorted(starts, steps, side="right") - 1
        weights = table[i]
        if self.kind != "step" and len(starts) > 1:
            after = np.minimum(i + 1, len(starts) - 1)
            span = np.maximum(starts[after] - starts[i], 1.0)
            t = np.where(after > i, (steps - starts[i]) / span, 0.0)
            if self.kind == "cosine":
                t = (1.0 - np.cos(np.pi * t)) / 2.0
            weights = (1.0 - t)[:, None] * weights + t[:, None] * table[after]
        return weights / weights.sum(axis=1, keepdims=True)


def schedule_from(
    names: Sequence[str],
    weights: Mapping[str, float] | Sequence[float] | None,
    points: Sequence[tuple[int, Mapping[str, float]]] | None = None,
    kind: ScheduleType = "step",
) -> WeightSchedule:
    """A ``WeightSchedule`` over ``names`` from weights by name (or in order), or from
    ``(step, weights by name)`` points; None and no points: equal weights."""

    def vector(given: Mapping[str, float] | Sequence[float], where: str) -> tuple[float, ...]:
        if isinstance(given, Mapping):
            unknown = sorted(set(given) - set(names))
            if unknown:
                raise ValueError(
                    f"{where}: no component is named {unknown[0]!r} (names: {list(names)})"
                )
            missing = [n for n in names if n not in given]
            if missing:
                raise ValueError(
                    f"{where}: no weight for {missing}; give each a weight (0 leaves one out)"
                )
            return tuple(float(given[n]) for n in names)
        if len(given) != len(names):
            raise ValueError(f"{where}: {len(given)} weights for {len(names)} components")
        return tuple(float(w) for w in given)

    if points:
        if weights is not None:
            raise ValueError("give weights or a weight schedule, not both")
        return WeightSchedule(
            tuple((s, vector(w, f"weight_schedule[{i}]")) for i, (s, w) in enumerate(points)),
            kind,
        )
    if weights is None:
        return WeightSchedule.fixed([1.0] * len(names))
    return WeightSchedule.fixed(vector(weights, "weights"))
