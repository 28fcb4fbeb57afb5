"""The compiled plan of a loader: its stages in order, what each does, and the resume rule.

The compiler (``graph.compiler``) decides everything here from the source and the settings;
the Grain dataset is built from the plan, and the state's resume rule comes from it, so that a
shape of pipeline has its rules in one place. ``Plan.describe()`` explains it in words.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from easydata_grain.distributed import Hosts
from easydata_grain.op_protocols import BatchMap, FieldTransform
from easydata_grain.sources.mixed import MixedShardedSource
from easydata_grain.sources.protocol import DescribedSource


class Mode(enum.Enum):
    """How a source is read."""

    INDEXED = "indexed"
    """Row counts known: random access in the epoch order; the state is a position."""
    STREAMING = "streaming"
    """Only an iterator: read in order, shuffled by a buffer saved with the state."""


class Split(enum.Enum):
    """Where hosts split the global order."""

    BEFORE_ROW_OPS = "before the row ops"
    """Each host takes its positions of every global batch, then transforms only its rows."""
    AFTER_ROW_OPS = "after the row ops"
    """Every host runs the row ops over the global order and keeps its part of each global
    batch (row counts change, or every host reads the same stream)."""


class Resume(enum.Enum):
    """What a saved state can be restored into."""

    ELASTIC = "exact, on any number of hosts"
    SAME_HOSTS = "exact, on the same number of hosts"
    NONE = "not resumable"


@dataclasses.dataclass(frozen=True)
class Batching:
    """How the batched maps (``BatchMap``: a tokenizer) among the row ops run."""

    rows_per_call: int
    """Consecutive rows given to one ``map_batch`` call; 0: one row at a time (``map``)."""
    in_workers: bool
    """The row ops from the first batched map on run in each worker process, over the rows
    that worker is given (Grain ``IterDataset`` ops); else where the other row ops run."""
    reason: str


@dataclasses.dataclass(frozen=True)
class Settings:
    """The loader's validated arguments that shape the pipeline."""

    batch_size: int
    hosts: Hosts
    shuffle_buffer_size: int
    seed: int
    num_epochs: int | None
    drop_remainder: bool
    transforms: tuple[Any, ...]
    collate: Any
    prefetch_enabled: bool
    prefetch_workers: int
    prefetch_buffer_size: int
    worker_processes: int
    pack: Any = None
    """A ``Pack`` (graph/pack.py): rows packed per host before batching; None: none."""

    @property
    def global_batch_size(self) -> int:
        """The batch of all hosts together."""
        return self.batch_size * self.hosts.count

    @property
    def read_threads(self) -> int:
        """Threads that read blocks ahead (indexed mode)."""
        return self.prefetch_workers if self.prefetch_enabled else 0


@dataclasses.dataclass(frozen=True)
class Plan:
    """A compiled pipeline: source -> order -> [split] -> row ops -> [split] -> batch -> prefetch,
    with the decisions the compiler took and why."""

    settings: Settings
    source: Any
    mode: Mode
    mode_reason: str
    rows_per_epoch: int | None
    """Rows (addresses) per epoch of one indexed source; None for a stream or a mixture."""
    rows_per_pass: int | None
    """Positions one pass reads in indexed mode (``num_epochs`` epochs, or the mixture's
    length by its stop strategy); None when endless or a stream."""
    row_ops: tuple[Any, ...]
    """Per-row operations in order (the source's skipped-row filter first, if any)."""
    row_ops_reason: str
    """Why the row ops hold a source's own transforms (worker processes); empty when not."""
    batching: Batching | None
    """How the batched maps run; None when no row op is a ``BatchMap``."""
    columns: tuple[str, ...] | None
    """The columns the source was projected to (``ProjectableSource.with_columns``); None:
    all of them."""
    columns_reason: str
    """Why the source reads those columns (or all of them); empty when it cannot project."""
    counts_change: bool
    """Whether a row op (a filter, skipped rows) changes how many rows there are."""
    split: Split | None
    """Where hosts split the global order; None on one host when nothing needs a split."""
    pad_last: bool
    """A last partial global batch is padded on several hosts (rows carry ``sample_mask``)."""
    batches_random_access: bool
    """Batches are random-access Grain elements (the state counts batches)."""
    columnar: bool
    columnar_reason: str
    resume: Resume
    resume_reason: str

    @property
    def hosts(self) -> Hosts:
        """This host and the host count."""
        return self.settings.hosts

    def steps_per_pass(self) -> int | None:
        """Batches one pass (``num_epochs`` epochs) yields on this host, when known."""
        if not self.batches_random_access or self.rows_per_pass is None:
            return None
        rows = self.rows_per_pass
        full, rest = divmod(rows, self.settings.global_batch_size)
        partial = rest and not self.settings.drop_remainder
        return full + int(bool(partial))

    def describe(self) -> str:
        """The plan in words: one line per stage, with the reason for each decision."""
        s = self.settings
        lines = [f"AsyncDataLoader plan (host {self.hosts.index} of {self.hosts.count})"]
        lines.append(f"  source    {self._source_text()}")
        lines.append(f"  mode      {self.mode.value}: {self.mode_reason}")
        lines.append(f"  order     {self._order_text()}")
        if self.columns_reason:
            lines.append(f"  columns   {self.columns_reason}")
        if self.split is Split.BEFORE_ROW_OPS:
            lines.append(f"  split     {self._split_text()}")
        lines.append(f"  row ops   {self._row_ops_text()}")
        if self.batching is not None:
            lines.append(f"  batched   {self._batching_text()}")
        if self.split is Split.AFTER_ROW_OPS:
            lines.append(f"  split     {self._split_text()}")
        if s.pack is not None:
            lines.append(f"  pack      {self._pack_text()}")
        batch = f"{s.batch_size} rows per host (global {s.global_batch_size})"
        if s.drop_remainder:
            batch += (
                ", last partial batch filled with padding rows"
                if s.pack is not None
                else ", last partial batch dropped"
            )
        pad = getattr(s.collate, "pad", False)
        batch += f", padded ({pad}) with masks" if pad else ", not padded (ragged lists raise)"
        lines.append(f"  batch     {batch}")
        lines.append(f"  columnar  {'yes' if self.columnar else 'no'}: {self.columnar_reason}")
        lines.append(f"  prefetch  {self._prefetch_text()}")
        lines.append(f"  resume    {self.resume.value}: {self.resume_reason}")
        return "\n".join(lines)

    def _source_text(self) -> str:
        text = type(self.source).__name__
        names = getattr(self.source, "shard_names", None)
        if names is not None:
            text += f": {len(names)} shard(s)"
        if self.rows_per_epoch is not None:
            text += f", {self.rows_per_epoch:,} rows"
        if isinstance(self.source, DescribedSource):
            text += f"\n            {self.source.describe()}"
        return text

    def _order_text(self) -> str:
        s = self.settings
        epochs = "endless" if s.num_epochs is None else f"{s.num_epochs} epoch(s) per pass"
        if isinstance(self.source, MixedShardedSource):
            return self._mix_text()
        if self.mode is Mode.INDEXED:
            if s.shuffle_buffer_size:
                shuffle = (
                    f"shards permuted per epoch, rows shuffled in windows of "
                    f"{s.shuffle_buffer_size} consecutive rows (no buffer to save)"
                )
            else:
                shuffle = "shards and rows in order"
            return f"epoch order, seed {s.seed}: {shuffle}; {epochs}"
        if s.shuffle_buffer_size:
            return (
                f"the stream's order through a shuffle buffer of {s.shuffle_buffer_size} rows "
                f"(seed {s.seed}, saved with the state); {epochs}"
            )
        return f"the stream's order; {epochs}"

    def _mix_text(self) -> str:
        source = self.source
        s = self.settings
        weights = ", ".join(f"{n} {w:.3g}" for n, w in source.targets(0).items())
        schedule = (
            f"{source.schedule.kind} schedule over steps {source.schedule.steps}"
            if len(source.schedule.points) > 1
            else "fixed"
        )
        length = (
            "endless" if self.rows_per_pass is None else f"{self.rows_per_pass:,} rows per pass"
        )
        shuffle = (
            f"each source shuffled in windows of {s.shuffle_buffer_size} rows"
            if s.shuffle_buffer_size
            else "each source in file order"
        )
        return (
            f"mixture, seed {s.seed if source.seed is None else source.seed}: weights "
            f"{weights} ({schedule}, by global batch index), blocks of {source.block_size} "
            f"rows; stop {source.stop_strategy}: {length}; {shuffle}, a source that runs out "
            "continues with its next epoch"
        )

    def _pack_text(self) -> str:
        pack = self.settings.pack
        how = (
            "documents end to end, cut every row (a document continues in the next row)"
            if pack.strategy == "greedy"
            else f"first fit into {pack.num_packers} open rows (documents kept whole)"
        )
        eos = "" if pack.eos_token_id is None else f", EOS {pack.eos_token_id} appended"
        hosts = (
            "; each host packs its own rows (the documents of a last partial global batch are "
            "shared among the hosts), and at the end a host out of rows yields padding "
            "batches (loss_mask 0) until all are done, so steps stay equal"
            if self.hosts.count > 1
            else ""
        )
        shuffled = (
            f"; packed rows shuffled in windows of {pack.shuffle_rows} (a restore packs at most "
            "one window again)"
            if pack.shuffle_rows
            else ""
        )
        return (
            f"{pack.field} into rows of {pack.seq_length} tokens: {how}{eos}; no token dropped"
            f"{' (truncate=True cuts documents)' if pack.truncate else ''}{shuffled}{hosts}"
        )

    def _split_text(self) -> str:
        s = self.settings
        if self.split is Split.BEFORE_ROW_OPS:
            where = "positions of the global order, before the row ops (they keep every row)"
        elif self.hosts.count == 1:
            where = (
                "global batches after the row ops (one host; kept so that a state restores on "
                "any host count)"
            )
        else:
            reason = "a filter or skipped rows change the row count"
            if self.mode is Mode.STREAMING:
                reason = "every host reads the stream"
            where = f"global batches after the row ops ({reason})"
        padding = (
            ", a last partial global batch padded (rows carry sample_mask)" if self.pad_last else ""
        )
        return (
            f"host {self.hosts.index} takes rows [{self.hosts.index * s.batch_size}, "
            f"{(self.hosts.index + 1) * s.batch_size}) of every global batch of "
            f"{s.global_batch_size}: {where}{padding}"
        )

    def _row_ops_text(self) -> str:
        if not self.row_ops:
            return "none"
        names = " -> ".join(op_text(op) for op in self.row_ops)
        names += "; the row count changes" if self.counts_change else ""
        return names + (f" ({self.row_ops_reason})" if self.row_ops_reason else "")

    def _batching_text(self) -> str:
        batching = self.batching
        assert batching is not None
        names = ", ".join(op_name(op) for op in self.row_ops if isinstance(op, BatchMap))
        if not batching.rows_per_call:
            return f"{names} one row at a time: {batching.reason}"
        return f"{names} on {batching.rows_per_call} rows per call: {batching.reason}"

    def _prefetch_text(self) -> str:
        s = self.settings
        parts = []
        if self.mode is Mode.INDEXED and s.read_threads:
            parts.append(f"{s.read_threads} read thread(s) read blocks ahead of the order")
        if s.worker_processes:
            parts.append(
                f"{s.worker_processes} worker process(es) run the row ops and batching, "
                f"{max(1, s.prefetch_buffer_size)} batch(es) buffered per worker"
            )
        elif s.prefetch_enabled and s.prefetch_buffer_size:
            parts.append(f"a background thread keeps {s.prefetch_buffer_size} batch(es) ready")
        return "; ".join(parts) or "none: batches are made when asked for"


def op_name(op: Any) -> str:
    """A row op's name: a function's own name, else its class's."""
    if callable(op) and not isinstance(op, type) and hasattr(op, "__qualname__"):
        return str(op.__qualname__)
    return type(op).__name__


_SHORT = 60
"""A row op's ``repr`` up to this length is shown whole (its configuration)."""


def _fields(fields: frozenset[str] | None) -> str:
    return "any field" if fields is None else ", ".join(sorted(fields)) or "no field"


def op_text(op: Any) -> str:
    """A row op in a few words: its name (with its configuration when short, for our
    transforms) and the fields it declares it reads and writes."""
    if not isinstance(op, FieldTransform):
        return op_name(op)
    shown = repr(op)
    text = shown if len(shown) <= _SHORT else op_name(op)
    fields = [f"reads {_fields(op.reads)}"] if op.reads != frozenset() else []
    fields += [f"writes {_fields(op.writes)}"] if op.writes != frozenset() else []
    return f"{text} [{'; '.join(fields)}]" if fields else text
