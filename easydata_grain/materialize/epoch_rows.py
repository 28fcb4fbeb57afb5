"""``EpochRows``: one epoch of an indexed source, in the loader's epoch order, through per-row
transforms: the ``MaterializableRows`` of a source-and-transforms pipeline.

Position ``k`` is the row the loader would give at position ``k`` of that epoch (the same
``EpochOrder`` and ``IndexedSourceDataset``, with the same seed, shuffle and window), transformed
block by block (a tokenizer gets a whole block per call). A filtered row takes its position
and leaves no row.
"""

from __future__ import annotations

import operator
from typing import Any

import pyarrow as pa

from easydata_grain.fingerprint import describe, digest
from easydata_grain.graph.indexed_dataset import IndexedSourceDataset
from easydata_grain.materialize.arrow_table import positions_table
from easydata_grain.op_protocols import Fingerprinted
from easydata_grain.sources.mixed import MixedShardedSource
from easydata_grain.sources.protocol import IndexedSource, missing_members
from easydata_grain.sources.transformed import TransformedShardedSource, mixture_and_steps
from easydata_grain.transforms.chat import ChatTemplateTransform
from easydata_grain.transforms.tokenize import TokenizeTransform


def _step_identity(step: Any) -> str:
    """A transform step's name and, for ours, its configuration's fingerprint."""
    if isinstance(step, Fingerprinted):
        kind = type(step)
        return f"{kind.__module__}.{kind.__qualname__}:{step.fingerprint()}"
    return describe(step)


def _count(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int ``>= minimum`` (TypeError for bools and non-integers)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {number}")
    return number


class EpochRows:
    """Epoch ``epoch`` of ``source``'s rows in the loader's order, through ``transforms``.

    ``source`` is an ``IndexedSource`` (row counts known: Parquet, JSON Lines, in memory, or a
    ``TransformedShardedSource`` over one); ``transforms`` (a Grain ``Map``/``Filter``, a chain
    or a list) wraps it in a ``TransformedShardedSource``. ``seed``, ``shuffle`` and
    ``window_size`` are the loader's: with ``shuffle=True`` the rows come in the order the
    loader's epoch ``epoch`` visits them.
    """

    def __init__(
        self,
        source: Any,
        transforms: Any = None,
        *,
        seed: int = 0,
        shuffle: bool = False,
        window_size: int = 4096,
        epoch: int = 0,
    ):
        if transforms is not None:
            source = TransformedShardedSource(source, transforms)
        if isinstance(mixture_and_steps(source)[0], MixedShardedSource):
            raise TypeError(
                "EpochRows takes one indexed source; a mixture's rows are MixtureRows "
                "(easydata_grain.materialize.MixtureRows, or Pipeline.rows())."
            )
        if not isinstance(source, IndexedSource):
            raise TypeError(
                f"EpochRows needs an indexed source (row counts known, so that ranges of "
                f"positions can be written in parallel); {type(source).__name__} lacks "
                f"{missing_members(source, IndexedSource)}. A stream cannot be cut into ranges: "
                "materialize its files instead (ParquetShardedSource, JsonShardedSource), or "
                "in a pipeline turn the dataset's cache off (cache_enabled: false)."
            )
        if not isinstance(shuffle, bool):
            raise TypeError(f"shuffle must be a bool, got {shuffle!r}")
        self.source = source
        """The rows' source, transforms included."""
        self.seed = _count(seed, "seed", 0)
        self.shuffle = shuffle
        self.window_size = _count(window_size, "window_size", 1)
        self.epoch = _count(epoch, "epoch", 0)
        self._dataset: IndexedSourceDataset | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dataset": None}

    @property
    def dataset(self) -> IndexedSourceDataset:
        """The epoch as the loader reads it (made on first use in each process)."""
        if self._dataset is None:
            self._dataset = IndexedSourceDataset(
                self.source,
                seed=self.seed,
                shuffle=self.shuffle,
                window_size=self.window_size,
                num_epochs=1,
                first_epoch=self.epoch,
            )
        return self._dataset

    def num_positions(self) -> int:
        """Rows of the source (a filtered row keeps its position)."""
        return sum(self.source.row_counts())

    def fingerprint(self) -> dict[str, Any]:
        """The data (each shard's name, rows and version), the transforms (tokenizers by their
        content, chat templates included), and the order."""
        inner, steps = self.source, []
        if isinstance(inner, TransformedShardedSource):
            inner, steps = inner.source, list(inner.transform.steps)
        identities = inner.identities()
        return {
            "rows": "epoch",
            "sources": digest(identities),
            "shards": len(identities),
            "positions": self.num_positions(),
            "transforms": [_step_identity(step) for step in steps],
            "tokenizers": sorted(
                {
                    step.tokenizer_id
                    for step in steps
                    if isinstance(step, TokenizeTransform | ChatTemplateTransform)
                }
            ),
            "order": {
                "seed": self.seed,
                "shuffle": self.shuffle,
                "window_size": self.window_size,
                "epoch": self.epoch,
            },
        }

    def table(self, start: int, stop: int) -> pa.Table:
        """The rows of positions ``[start, stop)`` in order (filtered rows left out)."""
        return positions_table(self.dataset, start, stop, self.num_positions(), "the rows")

    def __repr__(self) -> str:
        order = f"seed={self.seed}, shuffle={self.shuffle}, window_size={self.window_size}"
        return f"EpochRows({self.source!r}, epoch={self.epoch}, {order})"
