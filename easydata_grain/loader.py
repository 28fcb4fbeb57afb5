"""AsyncDataLoader: a source through transforms, shuffle, batching and prefetch, with exact state."""

from __future__ import annotations

import json
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grain
from grain.experimental import ThreadPrefetchIterDataset

from easydata_grain.distributed import Hosts
from easydata_grain.fingerprint import describe, differences, digest
from easydata_grain.graph.batch_dataset import BatchedMapDataset
from easydata_grain.graph.drop_skipped import DropSkippedRows
from easydata_grain.graph.host_split import HostSliceDataset, HostSliceIterDataset
from easydata_grain.graph.indexed_dataset import IndexedSourceDataset
from easydata_grain.graph.worker_processes import prefetch_in_processes
from easydata_grain.io.errors import NotResumableError
from easydata_grain.sources.concat import ConcatSource
from easydata_grain.sources.protocol import SkippingSource
from easydata_grain.sources.resolve import resolve_sources
from easydata_grain.transforms.collate import Collate

STATE_VERSION = 2
DEFAULT_BATCH_SIZE = 8
Transform = (
    grain.transforms.Map
    | grain.transforms.RandomMap
    | grain.transforms.Filter
    | Callable[[Any], Any]
)


class LoaderStateError(ValueError):
    """A saved state that does not belong to this pipeline, or is not a loader state at all."""


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _is_indexed(source: Any) -> bool:
    return all(
        hasattr(s, attr) for s in source for attr in ("row_counts", "read_block", "block_starts")
    )


class AsyncDataLoader:
    """Batches from one or more sources, prepared in the background while the model trains.

    The pipeline is compiled into a Grain dataset. Sources that know their row counts (the
    Parquet and JSON sources) run in **indexed** mode: the epoch order shuffles shards and rows
    inside windows of ``shuffle_buffer_size`` consecutive rows, without a buffer, and the state
    is the position in that order, so resume is O(1). Other sources (a ``datasets`` streaming
    dataset, any iterable) run in **streaming** mode with a shuffle buffer whose contents are
    saved with the state.

    ``transforms`` are Grain ``Map``/``RandomMap``/``Filter`` operations or plain callables
    (maps), applied per row in order before batching. Batches are dicts of numpy arrays (text
    stays a list of ``str``); ragged numeric fields raise unless ``pad`` asks for padding (see
    ``Collate``). ``prefetch_workers`` threads read blocks ahead of the consumer and a
    background thread keeps ``prefetch_buffer_size`` batches ready; ``worker_processes > 0``
    runs the transforms in that many processes instead (for heavy Python transforms).

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
        transforms: Sequence[Transform] = (),
        pad: bool | dict[str, int] = False,
        pad_value: int | float = 0,
        worker_processes: int = 0,
        global_batch_size: int | None = None,
        hosts: Hosts | None = None,
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
        self.hosts = hosts or Hosts.detect()
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
        transforms = list(transforms)
        for transform in transforms:
            if not callable(transform) and not isinstance(
                transform,
                grain.transforms.Map | grain.transforms.RandomMap | grain.transforms.Filter,
            ):
                raise TypeError(
                    f"transforms must be Grain Map/RandomMap/Filter or callables, got {transform!r}"
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
        self.transforms = transforms
        self.collate = Collate(pad=pad, pad_value=pad_value)
        self.worker_processes = worker_processes
        sources = resolve_sources(source)
        self.mode = "indexed" if _is_indexed(sources) else "streaming"
        self.source = sources[0] if len(sources) == 1 else ConcatSource(sources)
        # Placeholders of rows the source left out are dropped first, like a filter's rows.
        self._skips_rows = isinstance(self.source, SkippingSource) and self.source.skips_rows
        # Several hosts split the global order. Before the transforms when they keep every row
        # (each host transforms only its own rows); after them when a filter changes the count,
        # so that all hosts still serve equal numbers of rows.
        filtering = self._skips_rows or any(
            isinstance(t, grain.transforms.Filter) for t in transforms
        )
        self._batch_in_map = self.mode == "indexed" and not filtering
        self._split_rows_first = self.hosts.count > 1 and self._batch_in_map
        self._pad_last = self.hosts.count > 1 and not drop_remainder
        self._rows_per_epoch: int | None = None
        self._stream: Any = None
        self._pass = 0
        self._pass_done = False
        self.dataset = self._compile()
        self.not_resumable_reason: str | None = (
            self._stream.not_resumable_reason if self._stream is not None else None
        )
        """Why ``get_state`` cannot save this pipeline's position; None when it can."""
        if self.not_resumable_reason:
            warnings.warn(
                f"This loader cannot be checkpointed: {self.not_resumable_reason}",
                stacklevel=2,
            )
        # Computed once, here, on every host: it may read all shards' metadata, which is a
        # collective on several hosts and must not run on host 0 alone at save time.
        self._fingerprint = self._compute_fingerprint()
        self._iterator: list[grain.DatasetIterator] = []
        self._state_at_close: Any = None
        self._batches = 0
        self._rows = 0
        self._wait = 0.0
        self._started: float | None = None

    @property
    def resumable(self) -> bool:
        """Whether ``get_state`` can save the position exactly (else see ``not_resumable_reason``)."""
        return self.not_resumable_reason is None

    # -- compilation --------------------------------------------------------------------------

    def _compile(self) -> grain.IterDataset:
        if self.mode == "indexed":
            rows = IndexedSourceDataset(
                self.source,
                seed=self.seed,
                shuffle=self.shuffle_buffer_size > 0,
                window_size=max(1, self.shuffle_buffer_size),
                num_epochs=self.num_epochs,
                first_epoch=self._pass * (self.num_epochs or 0),
                read_threads=self.prefetch_workers if self.prefetch_enabled else 0,
            )
            self._rows_per_epoch = rows.rows_per_epoch
            if rows.rows_per_epoch == 0:
                raise ValueError(
                    f"The source has no rows ({self.source!r}): there is nothing to train on."
                )
            if (
                self.drop_remainder
                and self.num_epochs is not None
                and len(rows) < self.global_batch_size
            ):
                raise ValueError(
                    f"The global batch of {self.global_batch_size} rows is larger than the data "
                    f"({len(rows)} rows over "
                    f"{self.num_epochs} epoch(s)) and drop_remainder=True: no batch would be produced."
                )
            if self.transforms:
                rows = rows.seed(self.seed)  # for RandomMap; without it batches can be columnar
            if self._split_rows_first:
                rows = HostSliceDataset(
                    rows, self.hosts, self.global_batch_size, pad_last=self._pad_last
                )
            rows = self._apply_transforms(rows)
            if self._batch_in_map:
                # Batches as random-access elements: Grain's per-element iterator overhead
                # is paid once per batch, and the state counts batches.
                rows = BatchedMapDataset(
                    rows, self.batch_size, drop_remainder=self.drop_remainder, batch_fn=self.collate
                )
            dataset = rows.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
        else:
            dataset = self._apply_transforms(self._streaming_rows())
        if self.hosts.count > 1 and not self._split_rows_first:
            dataset = HostSliceIterDataset(
                dataset, self.hosts, self.global_batch_size, pad_last=self._pad_last
            )
        if not self._batch_in_map:
            dataset = dataset.batch(
                self.batch_size, drop_remainder=self.drop_remainder, batch_fn=self.collate
            )
        if self.worker_processes:
            return prefetch_in_processes(
                dataset, self.worker_processes, max(1, self.prefetch_buffer_size)
            )
        if self.prefetch_enabled and self.prefetch_buffer_size:
            return ThreadPrefetchIterDataset(
                dataset, prefetch_buffer_size=self.prefetch_buffer_size
            )
        return dataset

    def _streaming_rows(self) -> grain.IterDataset:
        from easydata_grain.graph.shuffle_buffer import ShuffleBufferIterDataset
        from easydata_grain.graph.stream_source import SourceIterDataset

        if self.num_epochs != 1:
            raise ValueError(
                "Streaming sources (without row counts) are read once: use num_epochs=1 and "
                "restart the loader for another pass, or use a Parquet/JSON source."
            )
        # An unresumable stream (say, a datasets shuffle) still iterates; get_state refuses.
        self._stream = SourceIterDataset(self.source, allow_unresumable=True)
        rows: grain.IterDataset = self._stream
        if self.shuffle_buffer_size:
            seed = self.seed + self._pass  # each pass over the stream shuffles anew
            rows = ShuffleBufferIterDataset(rows, self.shuffle_buffer_size, seed=seed)
        return rows.seed(self.seed + self._pass)

    def _row_ops(self) -> list[Transform]:
        """The per-row operations in order: in indexed mode, dropping the placeholders of rows
        the source skipped (a stream drops them itself), then the user's transforms."""
        drop = self._skips_rows and self.mode == "indexed"
        return [*([DropSkippedRows()] if drop else []), *self.transforms]

    def _apply_transforms(self, dataset: Any) -> Any:
        for transform in self._row_ops():
            if isinstance(transform, grain.transforms.Filter):
                dataset = dataset.filter(transform)
            elif isinstance(transform, grain.transforms.RandomMap):
                dataset = dataset.random_map(transform)
            else:
                dataset = dataset.map(transform)
        return dataset

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
        return self.mode == "streaming" and iter(self.source) is self.source

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
            self._pass_done = True
            raise
        self._wait += time.perf_counter() - start
        self._batches += 1
        self._rows += _batch_rows(batch)
        return batch

    def _next_pass(self) -> None:
        """Start the next pass: the next ``num_epochs`` epochs of the order (a stream is read
        again)."""
        self._start_pass(self._pass + 1)

    def _start_pass(self, number: int) -> None:
        _close(self._iterator)
        self._state_at_close = None
        self._pass, self._pass_done = number, False
        self.dataset = self._compile()

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

    def _compute_fingerprint(self) -> dict[str, Any]:
        identities = (
            self.source.identities() if hasattr(self.source, "identities") else [repr(self.source)]
        )
        return {
            "mode": self.mode,
            "sources": digest(identities),
            "shards": len(identities),
            "rows_per_epoch": self._rows_per_epoch,
            "transforms": [describe(t) for t in self._row_ops()],
            "seed": self.seed,
            "shuffle_buffer_size": self.shuffle_buffer_size,
            "global_batch_size": self.global_batch_size,
            "drop_remainder": self.drop_remainder,
            "num_epochs": self.num_epochs,
            "pad": describe(self.collate),
            "worker_processes": self.worker_processes,
        }

    def get_state(self) -> dict[str, Any]:
        """A small JSON-serializable state: the next batch is exactly the one after it.

        Raises ``NotResumableError`` for a stream whose position cannot be saved exactly.
        """
        if self.not_resumable_reason:
            raise NotResumableError(
                self.not_resumable_reason,
                hint="Iterate without checkpoints, or use a source that can resume.",
            )
        iterator = self._iter().get_state()
        return {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint(),
            "iterator": iterator,
            "hosts": self.hosts.count,
            "global_position": self._global_position(iterator),
            "batches": self._batches,
            "pass": self._pass,
            "pass_done": self._pass_done,
        }

    def _global_position(self, iterator_state: Any) -> int | None:
        """The number of global-order positions consumed, when the state allows elastic restore."""
        if self.mode != "indexed" or self.worker_processes or not isinstance(iterator_state, dict):
            return None
        if self._batch_in_map and set(iterator_state) == {"next_index"}:
            return iterator_state["next_index"] * self.global_batch_size
        if not self._batch_in_map and self.hosts.count > 1 and iterator_state.get("served") == 0:
            return -1  # the state is the global order's own position: valid on any host count
        return None

    def _elastic(self, state: dict[str, Any]) -> Any:
        """The saved iterator state, converted to this host count if it was saved on another."""
        saved_hosts = state.get("hosts", self.hosts.count)
        if saved_hosts == self.hosts.count:
            return state["iterator"]
        position = state.get("global_position")
        if position is None or (position == -1 and self.hosts.count == 1):
            raise LoaderStateError(
                f"This state was saved on {saved_hosts} hosts and cannot be restored on "
                f"{self.hosts.count}: {self.mode} mode"
                f"{' with worker processes' if self.worker_processes else ''} resumes exactly only "
                "on the same number of hosts. Restart with the original host count, or use an "
                "indexed source (Parquet/JSON) without worker_processes for elastic restore."
            )
        if position == -1:
            return state["iterator"]
        return {"next_index": position // self.global_batch_size}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; a state from another pipeline, or one whose fields do not
        hold what they should, raises ``LoaderStateError``."""
        if isinstance(state, str | bytes):
            try:
                state = json.loads(state)
            except ValueError as exc:
                raise LoaderStateError(f"The loader state is not valid JSON: {exc}.") from exc
        self._check_state(state)
        changed = differences(state["fingerprint"], self.fingerprint())
        if changed:
            raise LoaderStateError(
                "The saved loader state belongs to a different pipeline, so resuming would "
                "silently train on other data: " + "; ".join(changed) + ". Restore with the "
                "pipeline that saved it (same data, transforms, seed, batch size and workers)."
            )
        iterator_state = self._elastic(state)
        if state.get("pass", 0) != self._pass:
            self._start_pass(state.get("pass", 0))
        self._pass_done = state.get("pass_done", False)
        self._state_at_close = None
        try:
            self._iter().set_state(iterator_state)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise LoaderStateError(
                f"The loader state is corrupted: {type(exc).__name__}: {exc}."
            ) from exc

    def _check_state(self, state: Any) -> None:
        """Raise ``LoaderStateError`` unless every field of ``state`` holds what it should."""
        if not isinstance(state, dict) or not {"version", "fingerprint", "iterator"} <= set(state):
            raise LoaderStateError(
                "This is not an easydata-grain loader state (expected keys version, fingerprint, "
                f"iterator; got {sorted(state) if isinstance(state, dict) else type(state).__name__})."
            )
        if unknown := sorted(set(state) - _STATE_FIELDS):
            raise LoaderStateError(f"The loader state has unknown fields {unknown}.")
        if not isinstance(state.get("pass_done", False), bool):
            raise LoaderStateError(
                f"The loader state is corrupted: pass_done is {state['pass_done']!r}, not a bool."
            )
        if state["version"] != STATE_VERSION or isinstance(state["version"], bool):
            raise LoaderStateError(
                f"Loader state version {state['version']!r} is not {STATE_VERSION}."
            )
        if not isinstance(state["fingerprint"], dict):
            raise LoaderStateError(
                f"The loader state is corrupted: its fingerprint is a "
                f"{type(state['fingerprint']).__name__}, not a dict."
            )
        for name, minimum in (("hosts", 1), ("batches", 0), ("pass", 0)):
            if name in state and not _is_int(state[name], minimum):
                raise LoaderStateError(
                    f"The loader state is corrupted: {name} is {state[name]!r}, not an int "
                    f">= {minimum}."
                )
        position = state.get("global_position")
        if position is not None and not _is_int(position, -1):
            raise LoaderStateError(
                f"The loader state is corrupted: global_position is {position!r}, not None, -1 "
                "or an int >= 0."
            )
        saved_batch = state["fingerprint"].get("global_batch_size")
        if _is_int(position, 0) and _is_int(saved_batch, 1) and position % saved_batch:
            raise LoaderStateError(
                f"The loader state is corrupted: global_position {position} is not a multiple "
                f"of its global batch size {saved_batch}."
            )
        bad = _non_integer_number(state["iterator"])
        iterator = state["iterator"]
        next_index = iterator.get("next_index") if isinstance(iterator, dict) else 0
        if bad is None and isinstance(next_index, bool):
            bad = next_index
        if bad is not None:
            raise LoaderStateError(
                f"The loader state is corrupted: the iterator position holds {bad!r}, not an int."
            )

    # -- stats --------------------------------------------------------------------------------

    def stats(self) -> dict[str, float]:
        """Throughput and input-boundness: rows/s, batches/s, bytes/s, retries, wait fraction.

        ``wait_fraction`` is the share of wall time since the first batch that the consumer
        spent waiting for data: near 0 means the model is the bottleneck, near 1 the input.
        """
        elapsed = time.perf_counter() - self._started if self._started is not None else 0.0
        io = self.source.stats.snapshot() if hasattr(self.source, "stats") else {}
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
        }


_STATE_FIELDS = frozenset(
    {
        "version",
        "fingerprint",
        "iterator",
        "hosts",
        "global_position",
        "batches",
        "pass",
        "pass_done",
    }
)


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _non_integer_number(value: Any) -> Any:
    """The first float inside a nested state, where positions are ints; else None."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = _non_integer_number(item)
            if found is not None:
                return found
        return None
    return value if isinstance(value, float) else None


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
