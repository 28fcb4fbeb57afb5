"""The compiler: a source and the loader's settings -> a ``Plan`` -> a Grain dataset per host.

Every decision is taken once, in ``plan_pipeline``: the columns the source reads (the row ops'
declared fields, walked back from the batch), the mode (indexed when the source declares
``IndexedSource``), where hosts split, how batched maps (a tokenizer) run, whether batches are
random-access elements gathered column by column, and the resume rule. ``build_dataset`` only
follows the plan.
"""

from __future__ import annotations

import functools
from typing import Any

import grain
import pyarrow as pa

from easydata_grain.batch_format import ColumnarBatchFn
from easydata_grain.graph.batch_dataset import BatchedMapDataset, BatchIterDataset
from easydata_grain.graph.chunked_map import ChunkedMapDataset, ChunkedMapIterDataset
from easydata_grain.graph.drop_skipped import DropSkippedRows
from easydata_grain.graph.host_split import (
    MASK,
    HostSliceDataset,
    HostSliceIterDataset,
    PaddingMask,
)
from easydata_grain.graph.indexed_dataset import IndexedSourceDataset
from easydata_grain.graph.mix import MixedMapDataset, mixture_length, pass_order
from easydata_grain.graph.pack import PACKED_FIELDS, FillBatch, PackIterDataset
from easydata_grain.graph.plan import Batching, Mode, Plan, Resume, Settings, Split, op_name
from easydata_grain.graph.row_address import last_read_address, row_address
from easydata_grain.graph.row_errors import NamedRowErrorsDataset
from easydata_grain.graph.shuffle_buffer import ShuffleBufferIterDataset
from easydata_grain.graph.stream_source import SourceIterDataset, not_resumable_reason
from easydata_grain.graph.thread_prefetch import PrefetchThreadIterDataset
from easydata_grain.graph.window_shuffle import WindowShuffleIterDataset
from easydata_grain.graph.worker_processes import prefetch_in_processes
from easydata_grain.op_protocols import BatchMap, FieldTransform
from easydata_grain.sources.mixed import MixedShardedSource
from easydata_grain.sources.protocol import (
    ColumnarSource,
    IndexedSource,
    ProjectableSource,
    SkippingSource,
    WrappingSource,
    missing_members,
)
from easydata_grain.types import map_row

ROWS_PER_CALL = 1024
"""Rows a batched map (a tokenizer) is given per call, where the batches leave the choice."""


def _mode(source: Any) -> tuple[Mode, str]:
    if isinstance(source, MixedShardedSource):
        return Mode.INDEXED, (
            f"a mixture of {len(source.sources)} indexed sources: each position maps to a "
            "source and its row by a pure function (mix_order.py)"
        )
    if isinstance(source, IndexedSource):
        return Mode.INDEXED, "row counts are known from metadata, so rows are read by address"
    missing = missing_members(source, IndexedSource)
    if "row_counts" not in missing:
        raise TypeError(
            f"{type(source).__name__} has row_counts() but lacks {missing} of the IndexedSource "
            "protocol (sources/protocol.py): implement them for indexed mode (O(1) resume), or "
            "drop row_counts to be read as a stream."
        )
    return Mode.STREAMING, "the source can only be iterated (no row counts)"


def _columnar(
    source: Any, settings: Settings, row_ops: tuple[Any, ...], random_access: bool, pad: bool
) -> tuple[bool, str]:
    """Whether batches are gathered column by column from Arrow blocks, and why (not)."""
    if settings.pack is not None:
        return False, "batches are collated from packed rows"
    if not random_access:
        return False, "batches are collated from rows (a filter, skipped rows or a stream)"
    if row_ops:
        return False, "per-row transforms need dict rows"
    columnar = isinstance(source, ColumnarSource | MixedShardedSource)
    schema = source.block_schema if columnar else None
    if schema is None:
        return False, "the source reads rows, not Arrow blocks"
    if pad:
        schema = schema.append(pa.field(MASK, pa.bool_()))
    if not isinstance(settings.collate, ColumnarBatchFn) or not settings.collate.supports(schema):
        return False, f"a column the gather does not handle (schema: {schema})"
    return True, "numpy gathers from cached Arrow blocks, no dict rows (blocks with nulls use rows)"


def _lifted(source: Any, settings: Settings) -> tuple[Any, tuple[Any, ...], str]:
    """With worker processes, an indexed ``WrappingSource`` of maps (``TransformedShardedSource``)
    as its inner source and its steps, run as the first row ops; else ``source``, no steps.

    Its blocks are transformed whole where they are read, but each worker process makes its
    own batches and uses only their rows of a block: every worker would transform every row
    it touches. As row ops (one call per batch) each row is transformed once, by the worker
    whose batch holds it, and an error names the row as the source's would. Only where the
    batches stay random-access (no filter, skipped rows or packing), which that needs."""
    lift = (
        settings.worker_processes
        and settings.pack is None
        and isinstance(source, WrappingSource)
        and isinstance(source, IndexedSource)
        and isinstance(source.inner_source, IndexedSource)
        and not (isinstance(source.inner_source, SkippingSource) and source.inner_source.skips_rows)
        and not any(
            isinstance(op, grain.transforms.Filter)
            for op in (*source.row_steps, *settings.transforms)
        )
    )
    if not lift:
        return source, (), ""
    return (
        source.inner_source,
        tuple(source.row_steps),
        (
            f"{type(source).__name__}'s maps run as the first row ops, each row transformed once "
            "in the worker process whose batch holds it (its blocks transformed where they are "
            "read would be transformed in every worker that reads them)"
        ),
    )


def plan_pipeline(source: Any, settings: Settings) -> Plan:
    """Decide the pipeline for this host; raise early for a pipeline that cannot run."""
    source, steps, lifted_reason = _lifted(source, settings)
    mode, mode_reason = _mode(source)
    parts = source.sources if isinstance(source, MixedShardedSource) else [source]
    skips = any(isinstance(p, SkippingSource) and p.skips_rows for p in parts)
    transforms = steps + tuple(settings.transforms)
    row_ops = (DropSkippedRows(),) * (skips and mode is Mode.INDEXED) + transforms
    source, columns, columns_reason = _projection(source, settings, row_ops)
    counts_change = skips or any(isinstance(t, grain.transforms.Filter) for t in transforms)
    hosts = settings.hosts
    rows_per_epoch = None
    rows_per_pass = None
    if isinstance(source, MixedShardedSource):
        rows_per_pass = mixture_length(
            source.order(settings.global_batch_size, settings.seed),
            [sum(p.row_counts()) for p in parts],
            source.stop_strategy,
            settings.num_epochs,
            source.names,
        )
    if mode is Mode.INDEXED:
        if isinstance(source, MixedShardedSource):
            rows_per_epoch = None
        else:
            rows_per_epoch = sum(source.row_counts())
            rows_per_pass = (
                None if settings.num_epochs is None else rows_per_epoch * settings.num_epochs
            )
            _check_rows(source, settings, rows_per_epoch)
        random_access = not counts_change and settings.pack is None
        split = (
            Split.AFTER_ROW_OPS
            if counts_change and settings.pack is None
            else (Split.BEFORE_ROW_OPS if hosts.count > 1 else None)
        )
    else:
        if settings.num_epochs != 1:
            raise ValueError(
                "Streaming sources (without row counts) are read once per pass: use "
                "num_epochs=1 (a second loop reads the stream again), or use a Parquet/JSON source."
            )
        random_access = False
        split = Split.AFTER_ROW_OPS if hosts.count > 1 else None
    # With packing, the host split shares a last partial global batch instead (build_dataset).
    pad_last = hosts.count > 1 and not settings.drop_remainder and settings.pack is None
    columnar, columnar_reason = _columnar(
        source, settings, row_ops, random_access, pad_last and split is Split.BEFORE_ROW_OPS
    )
    resume, resume_reason = _resume(source, mode, settings)
    return Plan(
        settings=settings,
        source=source,
        mode=mode,
        mode_reason=mode_reason,
        rows_per_epoch=rows_per_epoch,
        rows_per_pass=rows_per_pass,
        row_ops=row_ops,
        row_ops_reason=lifted_reason,
        batching=_batching(mode, settings, row_ops, random_access),
        columns=columns,
        columns_reason=columns_reason,
        counts_change=counts_change,
        split=split,
        pad_last=pad_last,
        batches_random_access=random_access,
        columnar=columnar,
        columnar_reason=columnar_reason,
        resume=resume,
        resume_reason=resume_reason,
    )


def _fields_needed(
    row_ops: tuple[Any, ...], settings: Settings
) -> tuple[frozenset[str] | None, str]:
    """The fields the row ops need from the source so that what the batch (or the packer)
    takes exists after them, walking the ops backwards with ``fields_needed``; None: every
    field. Also what decided it, in words."""
    pack = settings.pack
    needed: frozenset[str] | None = None
    why = "the batch takes every field the transforms leave"
    if pack is not None:
        needed = frozenset({pack.field} | ({pack.mask_field} if pack.mask_field else set()))
        why = f"packing reads {sorted(needed)}"
        # and checks the fields it writes, which a row must not carry (never replaced silently)
        needed |= frozenset(PACKED_FIELDS)
    for op in reversed(row_ops):
        before = needed
        needed = op.fields_needed(needed) if isinstance(op, FieldTransform) else None
        if needed is None and before is not None:
            why = f"{op_name(op)} may read any field"
        elif needed is not None and before is None:
            why = f"{op_name(op)} keeps only the fields it names"
    return needed, why


def _projection(
    source: Any, settings: Settings, row_ops: tuple[Any, ...]
) -> tuple[Any, tuple[str, ...] | None, str]:
    """The source reading only the columns the pipeline needs (``ProjectableSource``), the
    columns kept (None: all) and why, in words (empty when the source cannot project). A
    ``WrappingSource`` (transforms over a source) projects its inner source through its steps
    and then ``row_ops``."""
    if isinstance(source, WrappingSource):
        steps = tuple(source.row_steps)
        inner, columns, reason = _projection(source.inner_source, settings, steps + row_ops)
        if columns is None:
            return source, None, reason
        return source.with_inner_source(inner), columns, reason
    if not isinstance(source, ProjectableSource):
        return source, None, ""
    names = source.column_names
    if names is None:
        return source, None, ""
    needed, why = _fields_needed(row_ops, settings)
    if needed is None:
        return source, None, f"all {len(names)} of the source's: {why}"
    kept = tuple(name for name in names if name in needed)
    if not kept or len(kept) == len(names):
        what = "all" if kept else "all (none is needed, but a row needs a column)"
        return source, None, f"{what} {len(names)} of the source's: {why}"
    left_out = [name for name in names if name not in needed]
    return (
        source.with_columns(kept),
        kept,
        f"{list(kept)}, not {left_out} (projected into the reads: {why})",
    )


def _batching(
    mode: Mode, settings: Settings, row_ops: tuple[Any, ...], random_access: bool
) -> Batching | None:
    """How the row ops' ``BatchMap``s run: on lists of consecutive rows, aligned with the
    batches where batches are random-access elements, and inside each worker process where
    worker processes are given every n-th row."""
    if not any(isinstance(op, BatchMap) for op in row_ops):
        return None
    s = settings
    if mode is Mode.STREAMING:
        return Batching(
            ROWS_PER_CALL,
            False,
            "ChunkedMapIterDataset over the stream (its state: the parent's state at the "
            "chunk's start and an offset)",
        )
    if random_access and s.worker_processes:
        return Batching(
            s.batch_size,
            False,
            "ChunkedMapDataset, one call per batch: each worker process makes whole batches, "
            "so it transforms only its own rows",
        )
    if random_access:
        rows = s.batch_size * max(1, ROWS_PER_CALL // s.batch_size)
        where = "this host's rows, after the host split" if s.hosts.count > 1 else "the rows"
        return Batching(
            rows,
            False,
            f"ChunkedMapDataset over {where}, whole batches per call; random access and the "
            "O(1) resume are kept (at most one call is made again)",
        )
    if not s.worker_processes:
        return Batching(
            ROWS_PER_CALL,
            False,
            "ChunkedMapDataset over the rows in the order, random access kept (a filter's "
            "dropped rows are left out of the calls)",
        )
    first = next(i for i, op in enumerate(row_ops) if isinstance(op, BatchMap))
    if any(isinstance(op, grain.transforms.RandomMap) for op in row_ops[first:]):
        return Batching(
            0,
            False,
            "worker processes are each given every n-th row, and a RandomMap after the "
            "batched map must stay on the rows' positions (put it before, to batch)",
        )
    return Batching(
        ROWS_PER_CALL,
        True,
        "in each worker process over the rows it is given (every n-th row): the row ops from "
        "there on run as ChunkedMapIterDataset and Grain IterDataset ops",
    )


def _check_rows(source: Any, settings: Settings, rows_per_epoch: int) -> None:
    if rows_per_epoch == 0:
        raise ValueError(f"The source has no rows ({source!r}): there is nothing to train on.")
    if settings.drop_remainder and settings.pack is None and settings.num_epochs is not None:
        rows = rows_per_epoch * settings.num_epochs
        if rows < settings.global_batch_size:
            raise ValueError(
                f"The global batch of {settings.global_batch_size} rows is larger than the data "
                f"({rows} rows over {settings.num_epochs} epoch(s)) and drop_remainder=True: no "
                "batch would be produced."
            )


def _resume(source: Any, mode: Mode, settings: Settings) -> tuple[Resume, str]:
    if mode is Mode.STREAMING:
        reason = not_resumable_reason(source)
        if reason:
            return Resume.NONE, reason
        return Resume.SAME_HOSTS, (
            "the stream's position and the shuffle buffer are saved as they are on each host"
        )
    if settings.pack is not None:
        return Resume.SAME_HOSTS, (
            "each host's packer state (its open rows) is saved; restore with the same hosts"
        )
    if settings.worker_processes:
        return Resume.SAME_HOSTS, (
            "each worker process's position is saved; restore with the same hosts and "
            "worker_processes"
        )
    return Resume.ELASTIC, "the state is a position in the global order, restored in O(1)"


def build_dataset(plan: Plan, pass_number: int) -> grain.IterDataset:
    """The Grain dataset of ``plan`` for pass ``pass_number`` (epochs ``pass * num_epochs`` on,
    or the stream read again with the shuffle seeded anew)."""
    s = plan.settings
    locate = None  # names a bad row's source shard and row in the packer's errors
    if isinstance(plan.source, MixedShardedSource):
        rows = _mixture(plan, pass_number)
    elif plan.mode is Mode.INDEXED:
        rows = IndexedSourceDataset(
            plan.source,
            seed=s.seed,
            shuffle=s.shuffle_buffer_size > 0,
            window_size=max(1, s.shuffle_buffer_size),
            num_epochs=s.num_epochs,
            first_epoch=pass_number * (s.num_epochs or 0),
            read_threads=s.read_threads,
        )
    if plan.mode is Mode.INDEXED:
        if plan.row_ops:
            rows = rows.seed(s.seed)  # for RandomMap; without row ops batches can be columnar
        in_workers = _first_in_workers(plan)
        if plan.split is Split.BEFORE_ROW_OPS:
            # With row ops, the padding mask is added after them (they may rebuild the rows).
            mask_after = plan.pad_last and bool(plan.row_ops)
            total = len(rows)
            rows = HostSliceDataset(
                rows,
                s.hosts,
                s.global_batch_size,
                pad_last=plan.pad_last,
                mask=not mask_after,
                share_last=s.pack is not None,
            )
            rows = _apply(rows, plan.row_ops[:in_workers], plan.batching)
            if mask_after:
                rows = rows.map_with_index(PaddingMask(s.hosts, s.global_batch_size, total))
        else:
            rows = _apply(rows, plan.row_ops[:in_workers], plan.batching)
        if in_workers:  # a row op's error names the row's source shard and row
            rows = NamedRowErrorsDataset(rows, functools.partial(row_address, rows))
        if plan.batches_random_access:
            # Batches as random-access elements: Grain's per-element iterator overhead is paid
            # once per batch, and the state counts batches.
            rows = BatchedMapDataset(
                rows, s.batch_size, drop_remainder=s.drop_remainder, batch_fn=s.collate
            )
            if rows.columnar != plan.columnar:  # describe() must say what the dataset does
                raise RuntimeError(
                    f"The plan says columnar={plan.columnar} ({plan.columnar_reason}) but the "
                    f"batches are built with columnar={rows.columnar}: a compiler bug."
                )
        if plan.batches_random_access and not s.worker_processes:
            dataset = BatchIterDataset(rows)  # Grain's iterator, without its per-batch cost
        else:  # Grain's own: it skips filtered-out rows, and worker processes slice it
            dataset = rows.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
            dataset = _apply(dataset, plan.row_ops[in_workers:], plan.batching)
            if in_workers == len(plan.row_ops) and not s.worker_processes:
                locate = functools.partial(last_read_address, rows)  # rows' own indices
    else:
        # An unresumable stream (say, a datasets shuffle) still iterates; get_state refuses.
        stream: grain.IterDataset = SourceIterDataset(plan.source, allow_unresumable=True)
        seed = s.seed + pass_number  # each pass over the stream shuffles anew
        if s.shuffle_buffer_size:
            stream = ShuffleBufferIterDataset(stream, s.shuffle_buffer_size, seed=seed)
        dataset = _apply(stream.seed(seed), plan.row_ops, plan.batching)
    if plan.split is Split.AFTER_ROW_OPS:
        dataset = HostSliceIterDataset(
            dataset,
            s.hosts,
            s.global_batch_size,
            pad_last=plan.pad_last,
            share_last=s.pack is not None,
        )
    if s.pack is not None:
        dataset = PackIterDataset(dataset, s.pack, locate)
        if s.pack.shuffle_rows:
            dataset = WindowShuffleIterDataset(
                dataset, s.pack.shuffle_rows, seed=s.seed + pass_number
            )
    if not plan.batches_random_access:
        # Packing drops no token: a short last batch of packed rows is filled, not dropped.
        drop = s.drop_remainder and s.pack is None
        dataset = dataset.batch(s.batch_size, drop_remainder=drop, batch_fn=s.collate)
        if s.pack is not None and s.drop_remainder:
            dataset = dataset.map(FillBatch(s.pack, s.batch_size))
    if s.worker_processes:
        return prefetch_in_processes(dataset, s.worker_processes, max(1, s.prefetch_buffer_size))
    if s.prefetch_enabled and s.prefetch_buffer_size:
        return PrefetchThreadIterDataset(dataset, prefetch_buffer_size=s.prefetch_buffer_size)
    return dataset


def _mixture(plan: Plan, pass_number: int) -> MixedMapDataset:
    """The mixture's components, each in its own epoch order, mixed by position; pass ``k``
    starts where pass ``k - 1`` ended. A component is as long as the epochs the pass reaches
    (endless for an endless mixture), so its blocks are not read ahead past them."""
    s = plan.settings
    source = plan.source
    order = pass_order(
        source.order(s.global_batch_size, s.seed), source.stop_strategy, plan.rows_per_pass
    )
    offset = pass_number * (plan.rows_per_pass or 0)
    # Each component's rows up to this pass's end (its indices run on across passes).
    ends = None if plan.rows_per_pass is None else order.counts_before(offset + plan.rows_per_pass)
    components = []
    for i, part in enumerate(source.sources):
        rows = sum(part.row_counts())
        components.append(
            IndexedSourceDataset(
                part,
                seed=(s.seed * 1_000_003 + i + 1) % (1 << 63),  # each component its own order
                shuffle=s.shuffle_buffer_size > 0,
                window_size=max(1, s.shuffle_buffer_size),
                num_epochs=None if ends is None or not rows else max(1, -(-int(ends[i]) // rows)),
                read_threads=s.read_threads,
            )
        )
    return MixedMapDataset(
        components,
        order,
        length=plan.rows_per_pass,
        names=source.names,
        offset=offset,
        source_field=source.source_field,
    )


def _first_in_workers(plan: Plan) -> int:
    """The index of the first row op that runs in each worker process over its own rows (the
    first batched map, when ``Batching.in_workers``); ``len(row_ops)`` when none does."""
    if plan.batching is None or not plan.batching.in_workers:
        return len(plan.row_ops)
    return next(i for i, op in enumerate(plan.row_ops) if isinstance(op, BatchMap))


def _apply(dataset: Any, row_ops: tuple[Any, ...], batching: Batching | None) -> Any:
    """``dataset`` through ``row_ops`` (a ``MapDataset`` or an ``IterDataset``); a
    ``BatchMap`` on lists of ``batching.rows_per_call`` consecutive rows."""
    for op in row_ops:
        if isinstance(op, grain.transforms.Filter):
            dataset = dataset.filter(op)
        elif isinstance(op, grain.transforms.RandomMap):
            dataset = dataset.random_map(op)
        elif isinstance(op, BatchMap) and batching is not None and batching.rows_per_call:
            if isinstance(dataset, grain.MapDataset):
                locate = functools.partial(row_address, dataset)
                dataset = ChunkedMapDataset(dataset, op, batching.rows_per_call, locate=locate)
            else:
                dataset = ChunkedMapIterDataset(dataset, op, batching.rows_per_call)
        else:
            dataset = dataset.map(functools.partial(map_row, op))
    return dataset
