"""Benchmark AsyncDataLoader against plain pyarrow, in one run, on generated Parquet datasets.

    .venv/bin/python -m ops.bench_loader                                   # 5M rows, 1 and 4 GB
    .venv/bin/python -m ops.bench_loader --rows 500000 --memory-gb 0.25 1  # quicker
    .venv/bin/python -m ops.bench_loader --profile                         # + where the time goes
    .venv/bin/python -m ops.bench_loader --rows 1000000 --shards 4 --shuffle-buffer 10000 \
        --columns id --skip 2 3 4                                          # light rows

Datasets are generated once with ``write_parquet_dataset`` and cached under ``--data``, keyed
by their parameters (the generation time is kept with them and printed). Prints:

1. loader rows/s over one epoch of ``--columns`` (default ``id input_ids``; ``--columns id``
   is the light-row case), ``pad=True``: batch 256 shuffle off and on
   (``--shuffle-buffer``, default 4096) with ``prefetch_workers`` 2 and 0, and batch 4096,
   against three pyarrow readers of the same files and columns: into Python rows
   (``ParquetFile.iter_batches`` + ``to_pylist``), straight to numpy (no per-row Python), and
   the very batches the unshuffled loader makes (256 consecutive rows, lists padded with a
   mask; checked equal to the loader's); every reader ``--rounds`` times, round-robin (the
   order reversed every other round), each time for at least ``--min-seconds`` (whole passes
   repeated), so that a short reader is not favoured by a quiet moment; the best and the
   median round of each are printed, and the issue's targets as best against best, median
   against median and the median of each round's own ratio (other work on a shared machine
   only slows runs down, and moves the baselines as much as the loader);
2. resume latency at 0%, 50% and 99% of the epoch: a fresh source and ``AsyncDataLoader`` +
   ``set_state`` (states saved by ``get_state`` during the shuffled run of 1, as JSON) to the
   first batch, which is checked against the batch that followed the save;
3. peak RSS (``VmHWM``: a child's ``ru_maxrss`` starts at the parent's peak on Linux), one
   subprocess per case, streaming all columns of a ~1 GB and a ~4 GB (decoded) dataset
   through the shuffled loader, and through pyarrow for reference;
4. time to the first batch in a fresh process, with the dataset's files evicted from the page
   cache (cold) and again (warm), and with pandas imported up front (pyarrow imports it on
   the first ``Array.to_numpy``).

``--profile`` adds the shuffled loader's batch path built up stage by stage (us/row, no
profiler) and a cProfile of it, to show where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import itertools
import json
import os
import pstats
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grain
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from easydata_grain import AsyncDataLoader, ParquetShardedSource
from easydata_grain.synthetic import synthetic_table, write_parquet_dataset
from ops.bench_sources import uncompressed_mb

COLUMNS = ["id", "input_ids"]
BATCH_SIZE = 256
SHUFFLE_BUFFER = 4096
SEED = 42
RESUME_POINTS = (0.0, 0.5, 0.99)


# -- datasets ----------------------------------------------------------------------------------


def _dataset(
    root: Path, rows: int, shards: int, row_group_size: int, max_tokens: int
) -> tuple[list[str], float, bool]:
    """The shard paths, the generation time in seconds, and whether it was generated now."""
    directory = root / f"rows{rows}-shards{shards}-rg{row_group_size}-tok{max_tokens}-seed0"
    marker = directory / ".complete.json"
    generated = not marker.exists()
    if generated:
        print(f"generating {rows:,} rows in {shards} shards under {directory} ...", flush=True)
        start = time.perf_counter()
        write_parquet_dataset(
            directory,
            num_shards=shards,
            rows_per_shard=rows // shards,
            row_group_size=row_group_size,
            max_tokens=max_tokens,
        )
        marker.write_text(json.dumps({"seconds": time.perf_counter() - start}))
    seconds = json.loads(marker.read_text())["seconds"]
    return sorted(str(p) for p in directory.glob("shard-*.parquet")), seconds, generated


def _rows_for_gb(gigabytes: float, max_tokens: int, shards: int) -> int:
    """Rows that make ``gigabytes`` of decoded (Arrow) data, a multiple of ``shards``."""
    sample = synthetic_table(4_000, max_tokens=max_tokens, first_id=10**9)
    per_row = sample.nbytes / sample.num_rows
    return max(shards, round(gigabytes * 1e9 / per_row / shards) * shards)


def _sizes(paths: list[str], columns: list[str] | None = None) -> dict[str, float]:
    """Rows, on-disk MB, Parquet-uncompressed MB and decoded (Arrow) MB of ``columns``."""
    rows = sum(pq.read_metadata(path).num_rows for path in paths)
    disk = sum(os.path.getsize(path) for path in paths)
    first = pq.ParquetFile(paths[0])
    sample = first.read_row_group(0, columns=columns)
    decoded = sample.nbytes / sample.num_rows * rows
    return {
        "rows": rows,
        "disk_mb": disk / 1e6,
        "uncompressed_mb": uncompressed_mb(paths, columns),
        "decoded_mb": decoded / 1e6,
    }


def _describe(label: str, paths: list[str], seconds: float, generated: bool) -> None:
    sizes = _sizes(paths)
    groups = pq.read_metadata(paths[0]).row_group(0).num_rows
    print(
        f"{label}: {len(paths)} shards, {sizes['rows']:,} rows, row groups of {groups:,} rows, "
        f"{sizes['decoded_mb']:,.0f} MB decoded / {sizes['uncompressed_mb']:,.0f} MB Parquet-"
        f"uncompressed / {sizes['disk_mb']:,.0f} MB on disk; generated in {seconds:.1f} s"
        f"{'' if generated else ' (cached)'}",
        flush=True,
    )


def _warm(paths: list[str]) -> None:
    """Read the files once so that every reader finds them in the page cache."""
    for path in paths:
        with open(path, "rb") as handle:
            while handle.read(1 << 24):
                pass


def _evict(paths: list[str]) -> None:
    """Drop these files (only) from the page cache, so the next read goes to the disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _load() -> str:
    """The 1-minute load average (other work on a shared machine moves every figure)."""
    return f"(load average {os.getloadavg()[0]:.2f})"


# -- readers -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """What the throughput, resume and profile parts read: files, columns, shuffle window."""

    paths: list[str]
    columns: list[str] | None
    shuffle_buffer: int


def _loader(
    case: Case,
    *,
    shuffle: bool,
    workers: int = 2,
    batch_size: int = BATCH_SIZE,
    source: ParquetShardedSource | None = None,
    **options: Any,
) -> AsyncDataLoader:
    return AsyncDataLoader(
        source or ParquetShardedSource(case.paths, columns=case.columns),
        batch_size=batch_size,
        prefetch_workers=workers,
        shuffle_buffer_size=case.shuffle_buffer if shuffle else None,
        seed=SEED,
        pad=True,
        **options,
    )


def _pyarrow_rows(paths: list[str], columns: list[str] | None) -> Iterable[dict]:
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096, columns=columns):
            yield from batch.to_pylist()


def _numpy_column(array: pa.Array) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """A column as numpy: numbers as they are, lists as ``(values, offsets)`` from 0."""
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        offsets = array.offsets.to_numpy()
        return array.flatten().to_numpy(), offsets - offsets[0]
    return array.to_numpy()


def _pyarrow_numpy(paths: list[str], columns: list[str]) -> Iterable[dict]:
    """Record batches of 4096 rows straight to numpy columns: no per-row Python at all."""
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=4096, columns=columns):
            yield {name: _numpy_column(batch.column(name)) for name in columns}


def _padded(batch: pa.RecordBatch) -> dict[str, np.ndarray]:
    """The loader's batch of these rows with ``pad=True``: numbers as int64/float64 arrays,
    lists padded to the longest row with a mask."""
    out: dict[str, np.ndarray] = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        parts = _numpy_column(column)
        if isinstance(parts, tuple):
            values, offsets = parts
            lengths = np.diff(offsets)
            mask = np.arange(int(lengths.max())) < lengths[:, None]
            padded = np.zeros(mask.shape, dtype=values.dtype)
            padded[mask] = values
            out[name], out[f"{name}_mask"] = padded, mask
        else:
            out[name] = parts.astype(np.float64 if parts.dtype.kind == "f" else np.int64)
    return out


def _pyarrow_batches(paths: list[str], columns: list[str]) -> Iterable[dict]:
    """The batches the unshuffled loader makes (``BATCH_SIZE`` consecutive rows of the files in
    order, lists padded with a mask), made with pyarrow and numpy alone."""
    rest: pa.RecordBatch | None = None
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=16 * BATCH_SIZE, columns=columns):
            if rest is not None:  # only after a file's last, partial batch
                batch, rest = pa.concat_batches([rest, batch]), None
            whole = batch.num_rows - batch.num_rows % BATCH_SIZE
            for start in range(0, whole, BATCH_SIZE):
                yield _padded(batch.slice(start, BATCH_SIZE))
            if whole < batch.num_rows:
                rest = batch.slice(whole)
    if rest is not None:
        yield _padded(rest)


def _source_rows(paths: list[str], columns: list[str] | None) -> Iterable[dict]:
    source = ParquetShardedSource(paths, columns=columns)
    for shard in source.shard_names:
        yield from source.open_shard(shard)


def _time_rows(rows: Iterable[object]) -> tuple[int, float]:
    start = time.perf_counter()
    count = sum(1 for _ in rows)
    return count, time.perf_counter() - start


def _batch_rows(batch: dict[str, Any]) -> int:
    """The rows of a batch of columns: arrays, ``(values, offsets)`` or ``Ragged`` lists."""
    first = next(iter(batch.values()))
    if isinstance(first, tuple):
        return len(first[1]) - 1
    return len(first.lengths) if hasattr(first, "lengths") else len(first)


def _time_batches(batches: Iterable[dict[str, Any]]) -> tuple[int, float]:
    """Rows and seconds of batches of columns."""
    start = time.perf_counter()
    count = sum(_batch_rows(batch) for batch in batches)
    return count, time.perf_counter() - start


Saved = dict[int, tuple[str, np.ndarray]]


def _time_loader(loader: AsyncDataLoader, save_at: Iterable[int] = ()) -> tuple[int, float, Saved]:
    """Rows and seconds of one epoch; the JSON state before batch ``k`` and that batch's ids."""
    save_at = set(save_at)
    saved: Saved = {}
    rows = batches = 0
    start = time.perf_counter()
    while True:
        state = json.dumps(loader.get_state()) if batches in save_at else None
        try:
            batch = next(loader)
        except StopIteration:
            break
        if state is not None:
            saved[batches] = (state, batch["id"].copy())
        rows += len(batch["id"])
        batches += 1
    seconds = time.perf_counter() - start
    loader.close()
    return rows, seconds, saved


def _check_same_batches(case: Case) -> int:
    """Compare every batch of the unshuffled loader with ``_pyarrow_batches``; their count."""
    loader = _loader(case, shuffle=False)
    count = 0
    for ours, theirs in itertools.zip_longest(loader, _pyarrow_batches(case.paths, case.columns)):
        if ours is None or theirs is None or list(ours) != list(theirs):
            raise AssertionError(f"batch {count}: the pyarrow batches differ from the loader's")
        for key, value in ours.items():
            if value.dtype != theirs[key].dtype or not np.array_equal(value, theirs[key]):
                raise AssertionError(f"batch {count}, {key!r}: pyarrow differs from the loader")
        count += 1
    loader.close()
    return count


# -- 1. throughput -----------------------------------------------------------------------------

LOADERS = (  # batch size, shuffle, prefetch_workers
    (BATCH_SIZE, False, 2),
    (BATCH_SIZE, True, 2),
    (BATCH_SIZE, False, 0),
    (BATCH_SIZE, True, 0),
    (4096, False, 2),
    (4096, True, 2),
)


PYLIST = "pyarrow iter_batches + to_pylist"
NUMPY = "pyarrow iter_batches + to_numpy"
BATCHES = f"pyarrow, the loader's batches (batch {BATCH_SIZE}, no shuffle)"


def _loader_name(batch_size: int, shuffle: bool, workers: int) -> str:
    """The name of a loader case in part 1's tables."""
    return (
        f"loader batch {batch_size:<4} shuffle={'on ' if shuffle else 'off'} "
        f"prefetch_workers={workers}"
    )


TARGETS = {  # the issue's targets, shuffle on: (loader, baseline, ratio)
    "light rows": (
        (_loader_name(BATCH_SIZE, True, 2), PYLIST, 1.0),
        (_loader_name(4096, True, 2), NUMPY, 0.3),
    ),
    "heavy rows": ((_loader_name(BATCH_SIZE, True, 2), BATCHES, 0.8),),
}


def _rate(run: Callable[[], tuple[int, float]], min_seconds: float) -> tuple[int, float]:
    """Rows per pass, and rows/s over whole passes of ``run`` repeated for ``min_seconds``."""
    rows = passes = 0
    seconds = 0.0
    while not passes or seconds < min_seconds:
        pass_rows, pass_seconds = run()
        rows += pass_rows
        seconds += pass_seconds
        passes += 1
    return rows // passes, rows / seconds


def _targets(case: Case, rates: dict[str, list[float]]) -> None:
    """The issue's targets for these columns (heavy: a list column), the default loader with
    shuffle on: best against best, median against median, and the median of the ratios
    within each round."""
    schema = pq.read_schema(case.paths[0])
    names = case.columns or schema.names
    types = [schema.field(name).type for name in names]
    heavy = any(pa.types.is_list(t) or pa.types.is_large_list(t) for t in types)
    what = "heavy rows" if heavy else "light rows"
    print(f"targets, {what} (best / best, median / median, median of each round's own ratio):")
    for loader, base, target in TARGETS[what]:
        ours, theirs = rates[loader], rates[base]
        rounds = statistics.median(a / b for a, b in zip(ours, theirs, strict=True))
        print(
            f"  {loader.split(' prefetch')[0]} against {base} (target {target}x): "
            f"{max(ours) / max(theirs):.2f}x, "
            f"{statistics.median(ours) / statistics.median(theirs):.2f}x, {rounds:.2f}x"
        )


def throughput(case: Case, save_at: list[int], rounds: int, min_seconds: float) -> Saved:
    """Loader rows/s against three pyarrow readers; returns the states saved on the way.

    Every reader reads whole epochs for at least ``min_seconds`` per round, round-robin (the
    order reversed every other round); the best and the median round are printed (other work
    on a shared machine only ever slows a run down).
    """
    batches = _check_same_batches(case)
    print(
        f"\n## 1. One epoch, columns {case.columns}, pad=True, shuffle window "
        f"{case.shuffle_buffer} (same run; {rounds} rounds, round-robin, each reader for at "
        f"least {min_seconds:g} s a round; the pyarrow batches equal the unshuffled loader's, "
        f"all {batches:,} checked)"
    )
    paths, columns = case.paths, case.columns
    readers: list[tuple[str, Callable[[], tuple[int, float]]]] = [
        (PYLIST, lambda: _time_rows(_pyarrow_rows(paths, columns))),
        (NUMPY, lambda: _time_batches(_pyarrow_numpy(paths, columns))),
        (BATCHES, lambda: _time_batches(_pyarrow_batches(paths, columns))),
        (
            "ParquetShardedSource.open_shard (no loader)",
            lambda: _time_rows(_source_rows(paths, columns)),
        ),
    ]
    saved: Saved = {}
    for batch_size, shuffle, workers in LOADERS:

        def run(batch_size: int = batch_size, shuffle: bool = shuffle, workers: int = workers):
            keep = batch_size == BATCH_SIZE and shuffle and workers and not saved
            loader = _loader(case, shuffle=shuffle, workers=workers, batch_size=batch_size)
            rows, seconds, states = _time_loader(loader, save_at if keep else ())
            saved.update(states)
            return rows, seconds

        readers.append((_loader_name(batch_size, shuffle, workers), run))
    rates: dict[str, list[float]] = {name: [] for name, _ in readers}
    rows = 0
    for round_ in range(rounds):
        for name, run in readers if round_ % 2 == 0 else readers[::-1]:
            rows, rate = _rate(run, min_seconds)
            rates[name].append(rate)
            print(f"  round {round_ + 1}: {name:<52} {rate:>11,.0f} rows/s", flush=True)
    bases = [rates[name] for name in (PYLIST, NUMPY, BATCHES)]
    print(
        f"{'reader':<52} {'best rows/s':>11} {'median':>11} {'s/pass':>6} {'vs rows':>11} "
        f"{'vs numpy':>11} {'vs batches':>11}  rounds (rows/s)\n"
        f"{'':<83}(each: best / best, median / median)"
    )
    for name, _ in readers:
        best, median = max(rates[name]), statistics.median(rates[name])
        every = " / ".join(f"{rate / 1000:,.0f}k" for rate in rates[name])
        ratios = " ".join(
            f"{best / max(base):>5.2f} {median / statistics.median(base):>5.2f}" for base in bases
        )
        print(f"{name:<52} {best:>11,.0f} {median:>11,.0f} {rows / best:>6.2f} {ratios}  {every}")
    _targets(case, rates)
    print(_load())
    return saved


# -- 2. resume ---------------------------------------------------------------------------------


def _resume_once(case: Case, state: str, expected: np.ndarray) -> list[float]:
    """Seconds for: source, loader, set_state, first batch (checked against ``expected``)."""
    marks = [time.perf_counter()]
    source = ParquetShardedSource(case.paths, columns=case.columns)
    source.row_counts()
    marks.append(time.perf_counter())
    loader = _loader(case, shuffle=True, source=source)
    marks.append(time.perf_counter())
    loader.set_state(state)
    marks.append(time.perf_counter())
    batch = next(loader)
    marks.append(time.perf_counter())
    loader.close()
    if not np.array_equal(batch["id"], expected):
        raise AssertionError("the resumed batch is not the batch that followed the saved state")
    return [b - a for a, b in itertools.pairwise(marks)]


def resume(case: Case, saved: Saved, total_batches: int, repeats: int) -> None:
    """Fresh source + loader + set_state -> first batch, at 0%, 50% and 99% of the epoch."""
    print(
        "\n## 2. Resume: fresh source + AsyncDataLoader + set_state(JSON state) -> first batch "
        f"(shuffle on, median of {repeats}; cold = files evicted from the page cache, 1 run)"
    )
    print(
        f"{'where':<22} {'source':>8} {'loader':>8} {'set_state':>9} {'1st batch':>9} "
        f"{'total':>8} {'cold total':>10}"
    )
    for fraction in RESUME_POINTS:
        at = int(fraction * total_batches)
        state, expected = saved[at]
        runs = [_resume_once(case, state, expected) for _ in range(repeats)]
        parts = [1000 * statistics.median(column) for column in zip(*runs, strict=True)]
        totals = [1000 * sum(run) for run in runs]
        _evict(case.paths)
        cold = 1000 * sum(_resume_once(case, state, expected))
        _warm(case.paths)
        source_ms, loader_ms, set_ms, batch_ms = parts
        print(
            f"{fraction:>4.0%} (batch {at:>6,})     {source_ms:>6.1f}ms {loader_ms:>6.1f}ms "
            f"{set_ms:>7.1f}ms {batch_ms:>7.1f}ms {statistics.median(totals):>6.1f}ms "
            f"{cold:>8.1f}ms",
            flush=True,
        )
    print(f"(state size: {len(saved[0][0])} bytes of JSON; every resumed batch matched) {_load()}")


# -- 3. memory ---------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (``VmRSS``: now, ``VmHWM``: the peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def memory_child(directory: str, reader: str) -> None:
    """(In a subprocess.) Stream every row of ``directory``; print RSS figures as JSON."""
    paths = sorted(str(p) for p in Path(directory).glob("shard-*.parquet"))
    start = time.perf_counter()
    if reader == "loader":
        loader = _loader(Case(paths, None, SHUFFLE_BUFFER), shuffle=True)
        before = _status_kb("VmRSS")
        rows, _, _ = _time_loader(loader)
    else:
        before = _status_kb("VmRSS")
        rows, _ = _time_rows(_pyarrow_rows(paths, None))
    seconds = time.perf_counter() - start
    # VmHWM, not ru_maxrss: Linux carries the parent's peak RSS over fork + exec into the
    # child's ru_maxrss, so a child's ru_maxrss is never below the parent's RSS at the fork.
    peak = _status_kb("VmHWM")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "rows": rows,
                "seconds": seconds,
                "before_kb": before,
                "peak_kb": peak,
                "maxrss": maxrss,
            }
        )
    )


def memory(datasets: list[tuple[str, list[str]]]) -> None:
    """Peak RSS streaming all columns of each dataset through the loader and through pyarrow."""
    print(
        "\n## 3. Peak RSS streaming every row (all columns), one subprocess per case: loader "
        f"shuffle on ({SHUFFLE_BUFFER}), batch {BATCH_SIZE}, pad=True, prefetch_workers=2"
    )
    print(
        f"{'dataset':<30} {'reader':<30} {'rows/s':>9} {'MB/s':>7} {'RSS before':>10} "
        f"{'peak RSS':>9}"
    )
    for label, paths in datasets:
        decoded = _sizes(paths)["decoded_mb"]
        for reader, name in (("loader", "AsyncDataLoader"), ("pyarrow", "pyarrow to_pylist")):
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "ops.bench_loader",
                    "--memory-child",
                    str(Path(paths[0]).parent),
                    reader,
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(
                f"{label:<30} {name:<30} {result['rows'] / result['seconds']:>9,.0f} "
                f"{decoded / result['seconds']:>7.0f} {result['before_kb'] / 1024:>8.0f}MB "
                f"{result['peak_kb'] / 1024:>7.0f}MB",
                flush=True,
            )
    print(_load())


# -- 4. first batch ----------------------------------------------------------------------------

_FIRST_BATCH = """
import json, sys, time
started = time.perf_counter()
paths, shuffle, pandas_first = json.loads(sys.argv[1])
if pandas_first:
    import pandas
from easydata_grain import AsyncDataLoader, ParquetShardedSource
imported = time.perf_counter()
source = ParquetShardedSource(paths, columns=["id", "input_ids"])
source.row_counts()
sourced = time.perf_counter()
loader = AsyncDataLoader(source, batch_size=256, shuffle_buffer_size=4096 if shuffle else None,
                         seed=42, pad=True)
built = time.perf_counter()
batch = next(loader)
done = time.perf_counter()
print(json.dumps({"wall": time.time(), "import": imported - started, "source": sourced - imported,
                  "loader": built - sourced, "batch": done - built}), flush=True)
loader.close()
"""


def first_batch(paths: list[str]) -> None:
    """A fresh process: import, source (footers), loader, first batch; cold and warm cache.

    The last case imports pandas before the clock of the first batch starts: pyarrow imports it
    on the first ``Array.to_numpy`` (in ``arrow_rows.numpy_lists``), inside the first batch.
    """
    print(
        "\n## 4. Time to the first batch in a fresh process (cold: the dataset's files evicted "
        "from the page cache first; '+pandas': pandas imported with the rest, before the source)"
    )
    print(
        f"{'case':<24} {'import':>8} {'source':>8} {'loader':>8} {'1st batch':>9} "
        f"{'src+loader+batch':>16} {'process start->batch':>20}"
    )
    cases = [(False, "cold"), (False, "warm"), (True, "cold"), (True, "warm")]
    for shuffle, cache in [*cases, (True, "cold +pandas"), (True, "warm +pandas")]:
        if cache.startswith("cold"):
            _evict(paths)
        launched = time.time()
        pandas_first = cache.endswith("+pandas")
        out = subprocess.run(
            [sys.executable, "-c", _FIRST_BATCH, json.dumps([paths, shuffle, pandas_first])],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        ms = {k: 1000 * v for k, v in r.items() if k != "wall"}
        print(
            f"shuffle={'on ' if shuffle else 'off'} {cache:<12} {ms['import']:>6.0f}ms "
            f"{ms['source']:>6.0f}ms {ms['loader']:>6.0f}ms {ms['batch']:>7.0f}ms "
            f"{ms['source'] + ms['loader'] + ms['batch']:>14.0f}ms "
            f"{1000 * (r['wall'] - launched):>18.0f}ms",
            flush=True,
        )
    print(_load())
    _warm(paths)


# -- profile -----------------------------------------------------------------------------------


def _per_row(
    name: str, make: Callable[[], Iterable[int]], rows: int, reference: float, repeats: int
) -> float:
    """Best of ``repeats`` timings of ``rows`` rows of ``make()``, which yields row counts."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        seen = 0
        for count in make():
            seen += count
            if seen >= rows:
                break
        best = min(best, 1e6 * (time.perf_counter() - start) / seen)
    added = f"{best - reference:+7.2f}" if reference else ""
    print(f"{name:<60} {best:>7.3f} {added:>8} {1e6 / best:>11,.0f}", flush=True)
    return best


def _loader_sizes(loader: AsyncDataLoader) -> Iterable[int]:
    try:
        yield from map(_batch_rows, loader)
    finally:
        loader.close()


def stages(case: Case, rows: int, batch_size: int, repeats: int) -> None:
    """The shuffled loader's batch path built up stage by stage (one thread unless said, no
    profiler): us per row, the best of ``repeats``."""
    from grain.experimental import ThreadPrefetchIterDataset

    from easydata_grain import Collate
    from easydata_grain.graph.batch_dataset import BatchedMapDataset, BatchIterDataset
    from easydata_grain.graph.columns import block_columns
    from easydata_grain.graph.indexed_dataset import IndexedSourceDataset
    from easydata_grain.graph.thread_prefetch import PrefetchThreadIterDataset

    print(
        f"\n## Profile A: the shuffled loader built up stage by stage, batch {batch_size}, "
        f"first {rows:,} rows, wall clock without a profiler, best of {repeats}"
    )
    print(f"{'stage':<60} {'us/row':>7} {'added':>8} {'rows/s':>11}")
    read = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    paths, columns = case.paths, case.columns

    def batched() -> BatchedMapDataset:
        source = ParquetShardedSource(paths, columns=columns)
        rows = IndexedSourceDataset(
            source, seed=SEED, shuffle=True, window_size=case.shuffle_buffer
        )
        return BatchedMapDataset(rows, batch_size, drop_remainder=False, batch_fn=Collate(pad=True))

    def blocks() -> Iterable[int]:
        source = ParquetShardedSource(paths, columns=columns)
        for shard in range(len(paths)):
            for block in range(len(source.block_starts(shard))):
                table = source.read_block_table(shard, block)
                block_columns(table)
                yield table.num_rows

    def permutations() -> Iterable[int]:
        order = batched()._parent.order
        for shard, size in enumerate(order.shard_sizes):
            for window in range(-(-size // order.window_length)):
                yield len(order.window_rows(0, shard, window))

    def gathered() -> Iterable[int]:
        dataset = batched()
        parent = dataset._parent
        for i in range(len(dataset)):
            start = i * batch_size
            stop = min(start + batch_size, len(parent))
            yield _batch_rows(parent._gather_columns(range(start, stop)))

    def collated() -> Iterable[int]:
        dataset = batched()
        return (_batch_rows(dataset[i]) for i in range(len(dataset)))

    def stage(name: str, make: Callable[[], Iterable[int]], reference: float = 0.0) -> float:
        return _per_row(name, make, rows, reference, repeats)

    pyarrow = stage(
        "pyarrow iter_batches + to_pylist (reference)",
        lambda: (1 for _ in _pyarrow_rows(paths, columns)),
    )
    stage(
        "pyarrow iter_batches + to_numpy (reference)",
        lambda: map(_batch_rows, _pyarrow_numpy(paths, columns)),
    )
    stage("(the order's window permutations alone, in 2: window_rows)", permutations)
    step = stage("1 read_block_table + block_columns, every row group", blocks)
    step = stage("2 IndexedSourceDataset._gather_columns per batch (order)", gathered, step)
    step = stage("3 + Collate.columns: BatchedMapDataset[i]", collated, step)
    stage(
        "4g + Grain's .to_iter_dataset() (for comparison)",
        lambda: map(_batch_rows, batched().to_iter_dataset(read)),
        step,
    )
    step = stage(
        "4 + BatchIterDataset (the batches in order, per batch)",
        lambda: map(_batch_rows, BatchIterDataset(batched())),
        step,
    )
    stage(
        "5g + Grain's ThreadPrefetchIterDataset over 4g",
        lambda: map(
            _batch_rows,
            ThreadPrefetchIterDataset(batched().to_iter_dataset(read), prefetch_buffer_size=4),
        ),
        step,
    )
    step = stage(
        "5 + PrefetchThreadIterDataset (a thread hands batches over)",
        lambda: map(
            _batch_rows,
            PrefetchThreadIterDataset(BatchIterDataset(batched()), prefetch_buffer_size=4),
        ),
        step,
    )
    step = stage(
        "6 AsyncDataLoader(prefetch_enabled=False)",
        lambda: _loader_sizes(
            _loader(case, shuffle=True, workers=0, batch_size=batch_size, prefetch_enabled=False)
        ),
        step,
    )
    stage(
        "7 AsyncDataLoader() default (read threads + prefetch)",
        lambda: _loader_sizes(_loader(case, shuffle=True, batch_size=batch_size)),
        step,
    )
    print(f"(1.0x pyarrow to_pylist = {pyarrow:.3f} us/row) {_load()}")


def _where(function: tuple[str, int, str]) -> str:
    """A short name for the file of a profiled function."""
    filename = function[0]
    if filename == "~":
        return "builtins/C"
    for marker in ("grain/_src/", "easydata_grain/", "pyarrow/", "numpy/"):
        if marker in filename:
            return marker.split("/")[0] + "/" + filename.split(marker)[1]
    return Path(filename).name


def profile(case: Case, rows: int, batch_size: int) -> None:
    """cProfile of the shuffled loader in one thread (prefetch off), over ``rows`` rows."""
    print(
        f"\n## Profile B: cProfile, loader shuffle on, batch {batch_size}, prefetch_enabled=False "
        f"(all work in this thread), first {rows:,} rows. cProfile inflates many small calls."
    )
    loader = _loader(case, shuffle=True, workers=0, batch_size=batch_size, prefetch_enabled=False)
    profiler = cProfile.Profile()
    profiler.enable()
    seen = 0
    for batch in loader:
        seen += _batch_rows(batch)
        if seen >= rows:
            break
    profiler.disable()
    loader.close()
    table = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in table.values())
    print(f"total {total:.1f} s profiled; own time by file:")
    by_file: dict[str, float] = {}
    for function, (_, _, own, _, _) in table.items():
        key = _where(function).split(":")[0]
        by_file[key] = by_file.get(key, 0.0) + own
    for key, own in sorted(by_file.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {100 * own / total:5.1f}%  {key}")
    print(f"{'own %':>6} {'cum %':>6} {'calls':>9}  function")
    top = sorted(table.items(), key=lambda kv: -kv[1][2])[:20]
    for function, (_, calls, own, cumulative, _) in top:
        where = _where(function)
        print(
            f"{100 * own / total:>5.1f}% {100 * cumulative / total:>5.1f}% {calls:>9,}  "
            f"{where}:{function[1]}({function[2]})"
        )


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    """Run every benchmark and print the comparison tables."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows of the main dataset")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--row-group-size", type=int, default=10_000)
    parser.add_argument("--max-tokens", type=int, default=32, help="token list lengths 1..N")
    parser.add_argument(
        "--columns", nargs="+", default=COLUMNS, help="columns read by parts 1, 2 and profiles"
    )
    parser.add_argument("--shuffle-buffer", type=int, default=SHUFFLE_BUFFER, help="the window")
    parser.add_argument(
        "--memory-gb", type=float, nargs="*", default=[1.0, 4.0], help="sizes for part 3"
    )
    parser.add_argument("--memory-max-tokens", type=int, default=1024)
    parser.add_argument("--memory-row-group-size", type=int, default=2_000)
    parser.add_argument(
        "--rounds", type=int, default=2, help="throughput and profile rounds (best counts)"
    )
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=0.5,
        help="part 1: each reader reads whole epochs for at least this long a round",
    )
    parser.add_argument("--repeats", type=int, default=5, help="resume repeats")
    parser.add_argument("--skip", nargs="*", default=[], choices=["1", "2", "3", "4"])
    parser.add_argument("--profile", action="store_true", help="also cProfile the loader")
    parser.add_argument("--profile-rows", type=int, default=1_000_000)
    parser.add_argument("--profile-batch", type=int, default=BATCH_SIZE)
    parser.add_argument(
        "--data", type=Path, default=Path(tempfile.gettempdir()) / "easydata-bench-loader"
    )
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return

    started = time.perf_counter()
    load = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f} at start; Python {sys.version.split()[0]}",
        flush=True,
    )
    paths, seconds, generated = _dataset(
        args.data, args.rows, args.shards, args.row_group_size, args.max_tokens
    )
    _describe(f"main dataset (max_tokens={args.max_tokens})", paths, seconds, generated)
    memory_sets: list[tuple[str, list[str]]] = []
    if "3" not in args.skip:
        for gigabytes in args.memory_gb:
            rows = _rows_for_gb(gigabytes, args.memory_max_tokens, 8)
            memory_paths, seconds, generated = _dataset(
                args.data, rows, 8, args.memory_row_group_size, args.memory_max_tokens
            )
            _describe(
                f"~{gigabytes:g} GB dataset (max_tokens={args.memory_max_tokens})",
                memory_paths,
                seconds,
                generated,
            )
            memory_sets.append((f"~{gigabytes:g} GB ({rows:,} rows)", memory_paths))

    _warm(paths)
    case = Case(paths, args.columns, args.shuffle_buffer)
    total_batches = -(-sum(pq.read_metadata(p).num_rows for p in paths) // BATCH_SIZE)
    save_at = sorted({min(int(f * total_batches), total_batches - 1) for f in RESUME_POINTS})
    saved: Saved = {}
    if "1" not in args.skip:
        saved = throughput(case, save_at, args.rounds, args.min_seconds)
    if "2" not in args.skip:
        if not saved:
            _, _, saved = _time_loader(_loader(case, shuffle=True), save_at)
        resume(case, saved, total_batches, args.repeats)
    if "3" not in args.skip:
        memory(memory_sets)
    if "4" not in args.skip:
        first_batch(paths)
    if args.profile:
        stages(case, args.profile_rows, args.profile_batch, args.rounds)
        profile(case, args.profile_rows, args.profile_batch)
    load = os.getloadavg()
    print(
        f"\nbenchmark ran {time.perf_counter() - started:.0f} s; load average {load[0]:.2f} "
        f"{load[1]:.2f} {load[2]:.2f} at the end"
    )


if __name__ == "__main__":
    main()
