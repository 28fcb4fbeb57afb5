"""``easydata-grain materialize CONFIG --output URL``: a pipeline config's rows (after its
transforms, tokenizer, mixing and packing, before batching) written as Parquet shards and a
manifest, with a summary of what was written."""

from __future__ import annotations

import dataclasses
import time
from typing import Literal


def materialize_config(
    path: str,
    output: str,
    *,
    overwrite: bool = False,
    engine: Literal["local", "ray"] | None = None,
    workers: int | None = None,
) -> str:
    """Save the configured stages of the config at ``path`` to ``output`` (the config's
    ``save`` stage settings, with ``output`` and ``overwrite`` replaced) and describe it:
    shards, rows, bytes, seconds and the manifest's path."""
    from easydata_grain.config import load_config
    from easydata_grain.io.errors import OutputExistsError
    from easydata_grain.materialize.manifest import MANIFEST_NAME
    from easydata_grain.pipeline import Pipeline

    config = load_config(path)
    save = dataclasses.replace(
        config.save, output_dir=output, overwrite=overwrite or config.save.overwrite
    )
    pipeline = Pipeline(dataclasses.replace(config, save=dataclasses.replace(save, enabled=False)))
    start = time.perf_counter()
    try:
        done = pipeline.configured().save(save, engine=engine, workers=workers)
    except OutputExistsError as error:
        raise OutputExistsError(
            f"{output} already holds an output ({error.path}).",
            path=error.path,
            hint="Pass --overwrite to replace it, or choose another --output.",
        ) from error
    seconds = time.perf_counter() - start
    manifest = done.manifest
    size = sum(shard.bytes for shard in manifest.shards)
    kept = f" ({len(done.kept)} kept from an interrupted run)" if done.kept else ""
    return (
        f"wrote {len(manifest.shards)} shard(s){kept}, {manifest.rows:,} rows "
        f"({manifest.positions:,} positions), {size:,} bytes in {seconds:.1f} s\n"
        f"manifest: {done.output}/{MANIFEST_NAME}"
    )
