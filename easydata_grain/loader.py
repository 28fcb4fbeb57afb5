"""AsyncDataLoader: a source through transforms, shuffle, batching and prefetch, with exact state."""

from __future__ import annotations

import collections
import time
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain

from easydata_grain import loader_state
from easydata_grain.distributed import Hosts, jax_multihost
from easydata_grain.graph.compiler import build_dataset, plan_pipeline
from easydata_grain.graph.mix import pass_order
from easydata_grain.graph.pack import Pack, padding_batch
from easydata_grain.graph.plan import Mode, Plan, Resume, Settings
from easydata_grain.io.errors import LoaderStateError, NotResumableError
from easydata_grain.loader_state import STATE_VERSION
from easydata_grain.sources.concat import ConcatSource
from easydata_grain.sources.mixed import MixedShardedSource
from easydata_grain.sources.protocol import IndexedSource, ShardedSource
from easydata_grain.sources.resolve import resolve_sources
from easydata_grain.sources.transformed import mixture_and_steps
from easydata_grain.transforms.chain import Chain, flatten_transforms
from easydata_grain.transforms.collate import Collate
from easydata_grain.types import Transform

__all__ = ["STATE_VERSION", "AsyncDataLoader", "LoaderStateError"]

DEFAULT_BATCH_SIZE = 8


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


class AsyncDataLoader:
    """Batches from one or more sources, prepared in the background while the model trains.

    The pipeline is compiled into a Grain dataset. Sources that know their row counts (the
    Parquet and JSON sources) run in **indexed** mode: the epoch order shuffles shards and rows
    inside windows of ``shuffle_buffer_size`` consecutive rows, without a buffer, and the state
    is the position in that order, so resume is O(1). Other sources (a ``datasets`` streaming
    dataset, any iterable) run in **streaming** mode with a shuffle buffer whose contents are
    saved with the state.

    ``transforms`` are Grain ``Map``/``RandomMap``/``Filter`` operations, plain callables
    (maps) or chains of them (``a >> b``; a list may hold chains), applied to each row in order
    before batching. A batched map (``BatchMap``: ``TokenizeTransform``) is given lists of
    consecutive rows, one call each, and the source reads only the columns the transforms need
    (see ``describe()``). Batches are dicts of numpy arrays (text stays a list of ``str``);
    ragged numeric fields raise unless ``pad`` asks for padding (see ``Collate``). ``prefetch_workers`` threads read blocks ahead of the consumer and a
    background thread keeps ``prefetch_buffer_size`` batches ready; ``worker_processes > 0``
    runs the transforms in that many processes instead (for heavy Python transforms).

    ``pack`` (a ``Pack``) packs token rows into fixed-length rows on each host after the host
    split (see ``graph/pack.py``); its rows have a fixed length, so ``pad`` is refused with it.
    On several hosts under ``jax.distributed``, a host that runs out of rows first yields
    padding batches until all are done, so every host takes the same number of steps; without
    it (``Hosts(i, n)`` or ``EASYDATA_HOST_*`` alone) each host ends with its own rows, and
    construction warns.

    ``get_state()`` is small and JSON-serializable and carries a fingerprint of the pipeline;
    ``set_state()`` refuses a state from a different pipeline.
    """

    def __init__(
        self,
        source: Any,
        batch_size: int | None = None,
        prefetch_enabled: bool = True,
        prefetch_workers: int = 2,
        prefetch_buffer_size: int = 4,
        shuffle_buffer_size: int | None = None,
        seed: int = 0,
        *,
        num_epochs: int | None = 1,
        drop_remainder: bool = False,
        transforms: Sequence[Transform | Chain] | Chain = (),
        pad: bool | dict[str, int] = False,
        pad_value: int | float | Mapping[str, int | float] = 0,
        worker_processes: int = 0,
        global_batch_size: int | None = None,
        hosts: Hosts | None = None,
        pack: Pack | None = None,
    ):
        _check_int("batch_size", batch_size, 1, allow_none=True)
        _check_int("prefetch_workers", prefetch_workers, 0)
        _check_int("prefetch_buffer_size", prefetch_buffer_size, 0)
        _check_int("shuffle_buffer_size", shuffle_buffer_size, 0, allow_none=True)
        _check_int("seed", seed, 0)
        _check_int("num_epochs", num_epochs, 1, allow_none=True)
        _check_int("worker_processes", worker_processes, 0)
        _check_int("global_batch_size", global_batch_size, 1, allow_none=True)
        if hosts is not None and not isinstance(hosts, Hosts):
            raise TypeError(f"hosts must be a Hosts, got {hosts!r}")
        if pack is not None and not isinstance(pack, Pack):
            raise TypeError(f"pack must be a Pack (easydata_grain.Pack), got {pack!r}")
        self.pack = pack
        self.hosts = hosts or Hosts.detect()
        if pack is not None and self.hosts.count > 1 and not jax_multihost():
            warnings.warn(
                f"pack= on host {self.hosts.index} of {self.hosts.count} without "
                "jax.distributed: the hosts cannot tell each other when they run out of packed "
                "rows, so this loader ends when its own rows do and hosts may take different "
                "numbers of steps (a collective in the training step would then hang). Call "
                "jax.distributed.initialize() before building the loader for equal steps; "
                "hosts simulated in one process (Hosts(i, n)) each end with their own rows.",
                stacklevel=2,
            )
        if global_batch_size is not None:
            local = self.hosts.split(global_batch_size)
            if batch_size is not None and batch_size != local:
                raise ValueError(
                    f"batch_size={batch_size} (per host) and global_batch_size={global_batch_size} "
                    f"disagree on {self.hosts.count} host(s), whose share is {local} rows: pass "
                    "one of them."
                )
            batch_size = local
        elif batch_size is None:
            batch_size = DEFAULT_BATCH_SIZE
        for flag, value in (
            ("prefetch_enabled", prefetch_enabled),
            ("drop_remainder", drop_remainder),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be a bool, got {value!r}")
        transforms = flatten_transforms(transforms)
        for transform in transforms:
            if not callable(transform) and not isinstance(
                transform,
                grain.transforms.Map | grain.transforms.RandomMap | grain.transforms.Filter,
            ):
                raise TypeError(
                    "transforms must be Grain Map/RandomMap/Filter operations, callables or "
                    f"chains of them, got {transform!r}"
                )
        self.batch_size = batch_size
        self.global_batch_size = batch_size * self.hosts.count
        self.prefetch_enabled = prefetch_enabled
        self.prefetch_workers = prefetch_workers
        self.prefetch_buffer_size = prefetch_buffer_size
        self.shuffle_buffer_size = shuffle_buffer_size or 0
        self.seed = seed
        self.num_epochs = num_epochs
        self.drop_remainder = drop_remainder
        sources = resolve_sources(source)
        # a fluent mixture (mixed.map(f)) is the mixture with its steps as the first transforms
        self.source, steps = mixture_and_steps(
            sources[0] if len(sources) == 1 else ConcatSource(sources)
        )
        transforms = [*steps, *transforms]
        self.transforms = transforms
        self.collate = Collate(pad=pad, pad_value=pad_value)
        if pack is not None and pad:
            raise ValueError(
                f"pad={pad!r} with pack=: packed rows are already {pack.seq_length} tokens long "
                "(their attention_mask and loss_mask mark the padding), so there is nothing to "
                "pad and pad would only add all-ones *_mask fields. Drop pad (pad=False)."
            )
        self.worker_processes = worker_processes
        self.plan: Plan = plan_pipeline(
            self.source,
            Settings(
                batch_size=batch_size,
                hosts=self.hosts,
                shuffle_buffer_size=self.shuffle_buffer_size,
                seed=seed,
                num_epochs=num_epochs,
                drop_remainder=drop_remainder,
                transforms=tuple(transforms),
                collate=self.collate,
                prefetch_enabled=prefetch_enabled,
                prefetch_workers=prefetch_workers,
                prefetch_buffer_size=prefetch_buffer_size,
                worker_processes=worker_processes,
                pack=pack,
            ),
        )
        """The compiled plan: stages, decisions and the resume rule (see ``describe()``)."""
        self.mode = self.plan.mode.value
        self.not_resumable_reason: str | None = (
            self.plan.resume_reason if self.plan.resume is Resume.NONE else None
        )
        """Why ``get_state`` cannot save this pipeline's position; None when it can."""
        if self.not_resumable_reason:
            warnings.warn(
                f"This loader cannot be checkpointed: {self.not_resumable_reason}",
                stacklevel=2,
            )
        self._pass = 0
        self._pass_done = False
        self.dataset = build_dataset(self.plan, self._pass)
        # Computed once, here, on every host: it may read all shards' metadata, which is a
        # collective on several hosts and must not run on host 0 alone at save time.
        self._fingerprint = loader_state.fingerprint(self.plan)
        self._iterator: list[grain.DatasetIterator] = []
        self._state_at_close: Any = None
        self._batches = 0
        """Batches this process took (``stats``)."""
        self._batches_before = 0
        """Batches taken before the state this loader was restored from (``get_state``)."""
        self._rows = 0
        self._wait = 0.0
        self._started: float | None = None

    def describe(self) -> str:
        """The compiled plan in words: each source's mode, the order, where the host split
        sits, the row ops, whether batches are gathered column by column, what prefetches, and
        the resume rule, each with its reason."""
        return self.plan.describe()

    def __len__(self) -> int:
        """The batches one loop (a pass of ``num_epochs`` epochs) yields on this host.

        Known in indexed mode without filters; a ``TypeError`` otherwise (as ``len`` of an
        iterable of unknown length), with the reason."""
        steps = self.plan.steps_per_pass()
        if steps is None:
            reason = (
                "the loader is endless (num_epochs=None)"
                if self.num_epochs is None and self.plan.batches_random_access
                else "a filter, skipped rows or a stream make the row count unknown in advance"
            )
            raise TypeError(f"len(loader) is not known: {reason}.")
        return steps

    def __bool__(self) -> bool:
        """A loader is always truthy (``len`` may be unknown, or 0 after ``drop_remainder``)."""
        return True

    @property
    def resumable(self) -> bool:
        """Whether ``get_state`` can save the position exactly (else see ``not_resumable_reason``)."""
        return self.not_resumable_reason is None

    # -- iteration ----------------------------------------------------------------------------

    def _iter(self) -> grain.DatasetIterator:
        if not self._iterator:
            self._iterator.append(iter(self.dataset))
            if self._state_at_close is not None:
                self._iterator[0].set_state(self._state_at_close)
                self._state_at_close = None
            # Close (and drop) the iterator at exit while modules still exist: Grain's own
            # __del__ would run during interpreter teardown and fail noisily.
            weakref.finalize(self, _close, self._iterator)
        return self._iterator[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The loader itself: ``for batch in loader`` continues where the last loop stopped;
        once a pass (``num_epochs`` epochs) is over, the next loop runs the next pass."""
        if self._pass_done:
            if self._one_shot_stream():
                raise ValueError(
                    f"The source ({type(self.source).__name__}) is a one-shot iterator, read to "
                    "its end by the previous loop: it cannot be read again. Pass a re-iterable "
                    "source (a datasets IterableDataset, a file source) to loop over it again."
                )
            self._next_pass()
        return self

    def _one_shot_stream(self) -> bool:
        if self.plan.mode is not Mode.STREAMING or isinstance(self.source, ShardedSource):
            return False  # a sharded source re-opens its shards on every pass
        return iter(self.source) is self.source

    def __next__(self) -> dict[str, Any]:
        if self._pass_done:
            raise StopIteration
        iterator = self._iter()
        start = time.perf_counter()
        if self._started is None:
            self._started = start
        try:
            batch = next(iterator)
        except StopIteration:
            batch = None
        if self.pack is not None and self.hosts.count > 1:
            batch = self._agree_on_step(batch)
        if batch is None:
            self._pass_done = True
            raise StopIteration
        self._wait += time.perf_counter() - start
        self._batches += 1
        self._rows += _batch_rows(batch)
        return batch

    def _agree_on_step(self, batch: dict[str, Any] | None) -> dict[str, Any] | None:
        """With packing on several hosts, hosts pack different numbers of rows: every step,
        the hosts tell each other whether they still have a batch (one small all-gather). A
        host out of rows yields a padding batch (``loss_mask`` and ``attention_mask`` 0) while
        another still has one, and all stop together: equal step counts."""
        from easydata_grain.distributed import any_host

        if not any_host(batch is not None):
            return None
        if batch is None:
            assert self.pack is not None
            return padding_batch(self.pack, self.batch_size)
        return batch

    def _next_pass(self) -> None:
        """Start the next pass: the next ``num_epochs`` epochs of the order (a stream is read
        again)."""
        self._start_pass(self._pass + 1)

    def _start_pass(self, number: int) -> None:
        _close(self._iterator)
        self._state_at_close = None
        self._pass, self._pass_done = number, False
        self.dataset = build_dataset(self.plan, number)

    def start_prefetch(self) -> None:
        """Start preparing batches now (e.g. while a checkpoint is restored)."""
        iterator = self._iter()
        if hasattr(iterator, "start_prefetch"):
            iterator.start_prefetch()

    def close(self) -> None:
        """Stop background threads and processes; iterating again continues where it stopped."""
        if self._iterator:
            self._state_at_close = self._iterator[0].get_state()
        _close(self._iterator)

    # -- state --------------------------------------------------------------------------------

    def fingerprint(self) -> dict[str, Any]:
        """What the saved state is valid for: sources, transforms, order and batching."""
        return dict(self._fingerprint)

    def get_state(self) -> dict[str, Any]:
        """A small JSON-serializable state: the next batch is exactly the one after it.

        Raises ``NotResumableError`` for a stream whose position cannot be saved exactly.
        """
        if self.not_resumable_reason:
            raise NotResumableError(
                self.not_resumable_reason,
                hint="Iterate without checkpoints, or use a source that can resume.",
            )
        return loader_state.envelope(
            self.plan,
            self.fingerprint(),
            self._iter().get_state(),
            batches=self._batches_before + self._batches,
            pass_number=self._pass,
            pass_done=self._pass_done,
        )

    def set_state(self, state: dict[str, Any] | str | bytes) -> None:
        """Continue from ``state`` (a dict or its JSON text), its batch counter included (the
        next ``get_state()`` counts on from it; ``stats()`` describes this process's run); a
        state from another pipeline, or one whose fields do not hold what they should, raises
        ``LoaderStateError``."""
        state = loader_state.parse(state, self.fingerprint())
        iterator_state = loader_state.iterator_state_for(self.plan, state)
        if state.get("pass", 0) != self._pass:
            self._start_pass(state.get("pass", 0))
        self._pass_done = state.get("pass_done", False)
        self._batches_before = state.get("batches", 0) - self._batches
        self._state_at_close = None
        try:
            self._iter().set_state(iterator_state)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise LoaderStateError(
                f"The loader state is corrupted: {type(exc).__name__}: {exc}."
            ) from exc

    # -- stats --------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Throughput and input-boundness: rows/s, batches/s, bytes/s, retries, wait fraction.

        ``wait_fraction`` is the share of wall time since the first batch that the consumer
        spent waiting for data: near 0 means the model is the bottleneck, near 1 the input.
        A mixture adds ``mixture``: each source's rows, realized share and target weight.
        """
        elapsed = time.perf_counter() - self._started if self._started is not None else 0.0
        read = self.plan.source  # projected: reads only the columns the transforms need
        parts = read.sources if isinstance(read, MixedShardedSource) else [read]
        io: collections.Counter[str] = collections.Counter()
        for part in parts:  # a mixture's reads are its sources'
            if isinstance(part, IndexedSource):
                io.update(part.stats.snapshot())
        per_second = 1.0 / elapsed if elapsed > 0 else 0.0
        return {
            "batches": self._batches,
            "rows": self._rows,
            "elapsed_s": elapsed,
            "rows_per_s": self._rows * per_second,
            "batches_per_s": self._batches * per_second,
            "bytes_read": io.get("bytes_read", 0),
            "bytes_per_s": io.get("bytes_read", 0) * per_second,
            "retries": io.get("retries", 0),
            "skipped_rows": io.get("skipped_rows", 0),
            "wait_fraction": self._wait / elapsed if elapsed > 0 else 0.0,
            **self._mixture_stats(),
        }

    def _mixture_stats(self) -> dict[str, Any]:
        """For a mixture: each source's realized share of the rows read this pass, next to
        its target weight at the current step (``mixture``); nothing otherwise."""
        if not isinstance(self.source, MixedShardedSource) or not self._iterator:
            return {}
        position = loader_state.global_position(self.plan, self._iterator[0].get_state())
        if position is None:
            return {}
        if self.plan.rows_per_pass is not None:  # a short last batch counts as a whole one
            position = min(position, self.plan.rows_per_pass)
        order = pass_order(
            self.source.order(self.global_batch_size, self.seed),
            self.source.stop_strategy,
            self.plan.rows_per_pass,
        )
        offset = self._pass * (self.plan.rows_per_pass or 0)
        counts = order.counts_before(offset + position) - order.counts_before(offset)
        total = max(1, int(counts.sum()))
        targets = self.source.targets((offset + position) // self.global_batch_size)
        return {
            "mixture": {
                name: {"rows": int(n), "share": int(n) / total, "target": targets[name]}
                for name, n in zip(self.source.names, counts.tolist(), strict=True)
            }
        }


def _close(holder: list[Any]) -> None:
    """Close and drop the Grain iterator in ``holder``, if any."""
    while holder:
        iterator = holder.pop()
        if hasattr(iterator, "close"):
            iterator.close()


def _batch_rows(batch: Any) -> int:
    """The number of rows in a collated batch."""
    while isinstance(batch, dict) and batch:
        batch = next(iter(batch.values()))
    return len(batch)
