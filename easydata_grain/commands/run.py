"""``easydata-grain run CONFIG``, ``inspect CONFIG`` and ``bench CONFIG``: a pipeline config's
loader run with a progress report, explained, or timed against plain pyarrow."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def is_config(path: str) -> bool:
    """Whether ``path`` names a pipeline config file (by its extension)."""
    return path.lower().endswith(CONFIG_SUFFIXES)


def build(path: str) -> tuple[Any, Any]:
    """The config at ``path`` and the loader of its configured stages."""
    from easydata_grain.config import load_config
    from easydata_grain.pipeline import Pipeline

    config = load_config(path)
    return config, Pipeline(config).configured().build()


def _mixture_text(stats: dict[str, Any]) -> str:
    mixture = stats.get("mixture")
    if not mixture:
        return ""
    return " ".join(f"{n} {m['share']:.1%}/{m['target']:.0%}" for n, m in mixture.items())


def run_config(path: str, steps: int | None, resume: str | None, save_state: str | None) -> int:
    """Iterate the config's loader (``steps`` batches, or one pass) with a progress report:
    rows/s, the input-wait fraction and the realized mixture against its target."""
    config, loader = build(path)
    observe = config.observability
    logging.getLogger("easydata_grain").setLevel(observe.log_level)
    if resume:
        loader.set_state(Path(resume).read_text())
    bar = None
    if observe.progress_enabled and observe.progress_type == "tqdm":
        from tqdm import tqdm

        bar = tqdm(total=steps, unit="batch", file=sys.stderr)
    done = 0
    for _ in loader:
        done += 1
        stats = loader.stats()
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(
                f"{stats['rows_per_s']:,.0f} rows/s wait {stats['wait_fraction']:.0%} "
                + _mixture_text(stats)
            )
        if done % observe.log_interval == 0 and observe.progress_enabled:
            if observe.progress_type == "json":
                print(json.dumps({"step": done, **stats}), flush=True)
            elif observe.metrics_enabled:
                logging.getLogger("easydata_grain").info("step %d: %s", done, stats)
        if steps is not None and done >= steps:
            break
    if bar is not None:
        bar.close()
    stats = loader.stats()
    print(
        f"{done} batches, {stats['rows']:,} rows, {stats['rows_per_s']:,.0f} rows/s, the "
        f"loop waited for data {stats['wait_fraction']:.0%} of the time (it does no training "
        "work, so it is all waiting)"
    )
    if stats.get("mixture"):
        print("mixture (realized / target): " + _mixture_text(stats))
    if save_state:
        Path(save_state).write_text(json.dumps(loader.get_state()))
        print(f"state saved to {save_state}: continue with --resume {save_state}")
    return 0


def inspect_config(path: str) -> str:
    """The config's datasets and the compiled plan of its loader."""
    config, loader = build(path)
    lines = [f"{path}: {len(config.datasets)} dataset(s)"]
    for ds in config.datasets:
        lines.append(f"  {ds.name}: {ds.type or 'by extension or content'} {ds.data_files}")
    return "\n".join([*lines, loader.describe()])


def bench_config(path: str, steps: int) -> str:
    """Rows/s of the config's loader next to plain pyarrow reading the same Parquet files in
    order (``iter_batches`` and ``to_pylist``), the same number of rows."""
    import pyarrow.parquet as pq

    from easydata_grain.io.filesystem import filesystem_for
    from easydata_grain.io.retry import RetryPolicy
    from easydata_grain.sources.parquet import ParquetShardedSource
    from easydata_grain.sources.resolve import file_source

    config, loader = build(path)
    start = time.perf_counter()
    rows = 0
    for done, batch in enumerate(loader, start=1):
        rows += len(next(iter(batch.values())))
        if done >= steps:
            break
    ours = rows / (time.perf_counter() - start)
    lines = [f"easydata-grain  {rows:>12,} rows  {ours:>12,.0f} rows/s"]
    parquet = [
        (ds, source)
        for ds in config.datasets
        if ds.type != "huggingface"
        and isinstance(
            source := file_source(
                ds.data_files, ds.type, storage_options=config.storage_options_for(ds)
            ),
            ParquetShardedSource,
        )
    ]
    if not parquet:
        return "\n".join([*lines, "(no Parquet dataset: nothing to compare with pyarrow)"])
    start, read = time.perf_counter(), 0
    for ds, source in parquet:
        options = config.storage_options_for(ds)
        fs = filesystem_for(source.shard_names[0], options, RetryPolicy())
        for name in source.shard_names:
            with fs.open(name, "rb") as handle:
                for part in pq.ParquetFile(handle).iter_batches(4096, columns=ds.columns):
                    read += len(part.to_pylist())
                    if read >= rows:
                        break
            if read >= rows:
                break
        if read >= rows:
            break
    theirs = read / (time.perf_counter() - start)
    lines.append(f"pyarrow         {read:>12,} rows  {theirs:>12,.0f} rows/s")
    lines.append(f"ratio           {ours / theirs:.2f}x (the loader also shuffles and batches)")
    return "\n".join(lines)
