"""``materialize()``: a pipeline's rows -> Parquet shards + a manifest, atomic and resumable.

1. The header is planned from the first rows: the schema (unless given) and, unless
   ``unit_rows`` is given, the positions per shard that fit ``max_shard_size``.
2. The output is checked: a manifest there is refused (``overwrite=True`` removes it and every
   shard); a run in progress with the same header resumes; shards or a run of another pipeline
   are refused. The header is written to ``_materializing/job.json``.
3. An engine runs every unit (``ShardJob.run``): finished shards are verified and kept, the
   others written, each followed by its progress record.
4. Once every shard is in place with its recorded size, leftovers are removed and
   ``manifest.json`` is written last: the commit marker. The progress folder goes after it.
"""

from __future__ import annotations

import dataclasses
import io
import re
from typing import Any, Literal

import pyarrow as pa

from easydata_grain.io.errors import CorruptShardError, ManifestMismatchError, OutputExistsError
from easydata_grain.io.retry import RetryPolicy
from easydata_grain.materialize.local_engine import run_local
from easydata_grain.materialize.manifest import MANIFEST_NAME, Manifest, json_value
from easydata_grain.materialize.protocol import MaterializableRows
from easydata_grain.materialize.ray_engine import RayOptions, run_ray
from easydata_grain.materialize.settings import MaterializeSettings
from easydata_grain.materialize.shard_writer import (
    JOB_NAME,
    PROGRESS_DIR,
    ShardJob,
    UnitResult,
    write_parquet,
)
from easydata_grain.materialize.store import OutputStore, is_temporary

SAMPLE_ROWS = 1024
"""Positions read first to take the schema and estimate the bytes of a row."""
_SHARD = re.compile(r"part-\d{5,}\.parquet")


@dataclasses.dataclass(frozen=True)
class Materialized:
    """A finished materialization: where, its manifest, and which shards this run wrote or
    kept from an interrupted run."""

    output: str
    manifest: Manifest
    written: tuple[str, ...]
    kept: tuple[str, ...]


def materialize(
    rows: MaterializableRows,
    output: str,
    *,
    engine: Literal["local", "ray"] = "local",
    workers: int | None = None,
    unit_rows: int | None = None,
    max_shard_size: int | str = "500MB",
    compression: Literal["zstd", "snappy", "gzip", "brotli", "lz4", "none"] = "zstd",
    row_group_rows: int = 1024,
    schema: pa.Schema | None = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy | None = None,
    ray: RayOptions | None = None,
) -> Materialized:
    """Write ``rows`` to ``output`` (a local path, ``s3://``, ``gs://``, ``az://``) as
    ``part-NNNNN.parquet`` shards and ``manifest.json`` (see the module's docstring and
    ``MaterializeSettings`` for the settings). ``schema`` fixes the Arrow schema (default: the
    first rows'); ``storage_options`` and ``retry`` reach the store; ``ray`` configures
    ``engine="ray"``. The output is the same, byte for byte, whichever engine and worker count
    wrote it."""
    settings = MaterializeSettings(
        engine=engine,
        workers=workers,
        unit_rows=unit_rows,
        max_shard_size=max_shard_size,
        compression=compression,
        row_group_rows=row_group_rows,
        overwrite=overwrite,
    )
    if not isinstance(rows, MaterializableRows):
        raise TypeError(
            f"rows must be MaterializableRows (fingerprint, num_positions, table), got "
            f"{type(rows).__name__}: wrap a source in EpochRows."
        )
    if schema is not None and not isinstance(schema, pa.Schema):
        raise TypeError(f"schema must be a pyarrow.Schema, got {type(schema).__name__}")
    if ray is not None and not isinstance(ray, RayOptions):
        raise TypeError(f"ray must be RayOptions, got {type(ray).__name__}")
    store = OutputStore(output, storage_options, retry or RetryPolicy())
    header = plan(rows, settings, schema)
    prepare(store, header, overwrite=settings.overwrite)
    job = ShardJob(store, header)
    units = range(header.num_units)
    if settings.engine == "ray":
        results = run_ray(rows, job, units, settings.workers, ray or RayOptions())
    else:
        results = run_local(rows, job, units, settings.workers or 1)
    return commit(job, results)


def plan(
    rows: MaterializableRows, settings: MaterializeSettings, schema: pa.Schema | None
) -> Manifest:
    """The header of the output: the rows' fingerprint, the layout and the schema."""
    positions = rows.num_positions()
    if positions < 1:
        raise ValueError("There are no rows to materialize (the rows have 0 positions).")
    sample_positions = min(positions, SAMPLE_ROWS)
    sample = rows.table(0, sample_positions)
    if schema is None:
        if sample.num_columns == 0:
            raise ValueError(
                f"The first {sample_positions} positions hold no rows (a filter dropped them "
                "all), so the schema cannot be taken from them: pass schema= to materialize()."
            )
        schema = sample.schema
    header = Manifest(
        fingerprint=json_value(rows.fingerprint()),
        positions=positions,
        unit_rows=settings.unit_rows or 1,
        compression=settings.compression,
        row_group_rows=settings.row_group_rows,
        max_shard_size=None if settings.unit_rows else settings.max_shard_bytes,
        schema=schema,
        created_with={"pyarrow": pa.__version__},
    )
    if settings.unit_rows is None:
        header = dataclasses.replace(header, unit_rows=_units_rows(sample, header))
    return header


def _units_rows(sample: pa.Table, header: Manifest) -> int:
    """Positions per shard so that a shard is about ``max_shard_size`` bytes, from the size
    of the sample written with the output's settings (a multiple of ``row_group_rows`` when
    longer than one row group, so that row groups are full)."""
    assert header.max_shard_size is not None
    sample_positions = min(header.positions, SAMPLE_ROWS)
    buffer = io.BytesIO()
    if sample.num_columns:
        write_parquet(sample, buffer, header)
    per_position = max(1, buffer.tell()) / sample_positions
    fitting = max(1, int(header.max_shard_size / per_position))
    if fitting > header.row_group_rows:
        fitting -= fitting % header.row_group_rows
    return min(fitting, header.positions)


def _is_ours(name: str) -> bool:
    """Whether a file in the output is one a materialization writes."""
    return (
        name == MANIFEST_NAME
        or _SHARD.fullmatch(name) is not None
        or name.startswith(PROGRESS_DIR + "/")
        or is_temporary(name)
    )


def prepare(store: OutputStore, header: Manifest, *, overwrite: bool) -> None:
    """Make the output ready for ``header``'s run: refuse, clear (``overwrite``) or resume."""
    files = store.list()
    if overwrite:
        if MANIFEST_NAME in files:  # first: the output must not look complete meanwhile
            store.remove([MANIFEST_NAME])
        store.remove(sorted(name for name in files if _is_ours(name)))
        files = {}
    elif MANIFEST_NAME in files:
        raise OutputExistsError(
            f"{store.path(MANIFEST_NAME)} exists: {store.url} already holds a materialized output.",
            path=store.path(MANIFEST_NAME),
            hint="Read it with open_materialized(), write elsewhere, or pass overwrite=True "
            "to replace it (its shards are removed).",
        )
    previous = store.read(JOB_NAME) if JOB_NAME in files else None
    if previous is not None:
        differences = header.differences(Manifest.from_json(previous, store.path(JOB_NAME)))
        if differences:
            raise ManifestMismatchError(
                f"{store.url} holds an unfinished run of another pipeline or with other "
                f"settings ({'; '.join(differences)}).",
                path=store.path(JOB_NAME),
                hint="Run the same pipeline with the same settings to resume it, write "
                "elsewhere, or pass overwrite=True to start over.",
            )
        store.remove(sorted(name for name in files if is_temporary(name)))
        return
    shards = sorted(name for name in files if _SHARD.fullmatch(name))
    if shards:
        raise OutputExistsError(
            f"{store.url} holds Parquet shards ({', '.join(shards[:3])}"
            f"{', ...' if len(shards) > 3 else ''}) but no manifest and no record of a run "
            "that wrote them.",
            path=store.path(shards[0]),
            hint="Write elsewhere, or pass overwrite=True to replace them.",
        )
    store.make_directory()
    store.make_directory(PROGRESS_DIR)
    store.write_bytes(JOB_NAME, header.header().to_json())


def commit(job: ShardJob, results: dict[int, UnitResult]) -> Materialized:
    """Check every shard is in place, remove leftovers, write the manifest (last), then remove
    the progress records."""
    store, header = job.store, job.header
    records = tuple(results[unit].record for unit in range(header.num_units))
    files = store.list()
    for record in records:
        if files.get(record.name) != record.bytes:
            raise CorruptShardError(
                f"{store.path(record.name)} should be {record.bytes} bytes now that it is "
                f"written, but the store lists {files.get(record.name)}.",
                path=store.path(record.name),
                hint="Another process may be writing to the same output. Run materialize() "
                "again: it keeps the shards that verify.",
            )
    names = {record.name for record in records}
    stale = [n for n in files if is_temporary(n) or (_SHARD.fullmatch(n) and n not in names)]
    store.remove(sorted(stale))
    manifest = dataclasses.replace(header, shards=records)
    store.write_bytes(MANIFEST_NAME, manifest.to_json())
    store.remove(sorted(name for name in files if name.startswith(PROGRESS_DIR + "/")))
    store.remove_directory(PROGRESS_DIR)
    return Materialized(
        output=store.url,
        manifest=manifest,
        written=tuple(r.record.name for _, r in sorted(results.items()) if r.written),
        kept=tuple(r.record.name for _, r in sorted(results.items()) if not r.written),
    )
