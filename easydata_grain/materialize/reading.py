"""Reading a materialized output back: its manifest checked, its shards verified, as a source.

``open_materialized(output, fingerprint)`` gives a ``ParquetShardedSource`` over the shards in
the manifest's order (exactly the rows, in the pipeline's order) after checking that the
manifest belongs to that pipeline and that every shard is there with its recorded size and
(by default) sha256. ``find_materialized(cache_dir, fingerprint)`` is the cache's lookup: the
output at ``materialized_path(cache_dir, fingerprint)``, if one was committed there.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from easydata_grain.fingerprint import differences, digest
from easydata_grain.io.errors import CorruptShardError, ManifestMismatchError, ShardNotFoundError
from easydata_grain.io.retry import RetryPolicy
from easydata_grain.materialize.manifest import MANIFEST_NAME, Manifest, ShardRecord, json_value
from easydata_grain.materialize.store import OutputStore
from easydata_grain.sources.parquet import ParquetShardedSource

_CHECKSUM_THREADS = 16


def read_manifest(
    output: str,
    *,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy | None = None,
) -> Manifest:
    """The manifest of ``output``; ``ShardNotFoundError`` when it has none (not a
    materialized output, or its run did not finish)."""
    store = OutputStore(output, storage_options, retry or RetryPolicy())
    return _manifest(store)


def _manifest(store: OutputStore) -> Manifest:
    data = store.read(MANIFEST_NAME)
    if data is None:
        raise ShardNotFoundError(
            f"{store.url} has no {MANIFEST_NAME}: it is not a materialized output, or the run "
            "that writes it did not finish.",
            path=store.path(MANIFEST_NAME),
            hint="Run materialize() (again: an interrupted run resumes where it stopped).",
        )
    return Manifest.from_json(data, store.path(MANIFEST_NAME))


def _check_fingerprint(store: OutputStore, manifest: Manifest, expected: Any) -> None:
    wanted = json_value(expected)
    if manifest.fingerprint != wanted:
        raise ManifestMismatchError(
            f"{store.url} was materialized from another pipeline: "
            f"{'; '.join(differences(manifest.fingerprint, wanted))}.",
            path=store.path(MANIFEST_NAME),
            hint="Materialize this pipeline (to another output, or with overwrite=True).",
        )


def verify_shards(
    store: OutputStore, manifest: Manifest, verify: Literal["checksum", "size"]
) -> None:
    """Every shard of ``manifest`` is there with its size and, for ``"checksum"``, its sha256;
    else ``ShardNotFoundError`` or ``CorruptShardError`` naming the shard."""
    listed = store.list()
    for shard in manifest.shards:
        path = store.path(shard.name)
        size = listed.get(shard.name)
        if size is None:
            raise ShardNotFoundError(
                f"{path} is missing: the manifest lists it ({shard.rows} rows).",
                path=path,
                hint="The output was changed after it was written: materialize again with "
                "overwrite=True.",
            )
        if size != shard.bytes:
            raise CorruptShardError(
                f"{path} is {size} bytes, but the manifest says {shard.bytes}: it was truncated "
                "or replaced.",
                path=path,
                hint="Materialize again with overwrite=True.",
            )
    if verify == "checksum" and manifest.shards:
        workers = min(_CHECKSUM_THREADS, len(manifest.shards))
        with ThreadPoolExecutor(workers) as pool:
            found = list(pool.map(lambda s: store.checksum(s.name), manifest.shards))
        for shard, checked in zip(manifest.shards, found, strict=True):
            _check_sha256(store, shard, checked)


def _check_sha256(store: OutputStore, shard: ShardRecord, found: tuple[int, str] | None) -> None:
    path = store.path(shard.name)
    if found is None or found[1] != shard.sha256:
        actual = "nothing (deleted)" if found is None else f"sha256 {found[1]}"
        raise CorruptShardError(
            f"{path} does not match its checksum: the manifest says sha256 {shard.sha256}, its "
            f"bytes give {actual}. It is corrupt.",
            path=path,
            hint="Materialize again with overwrite=True (the whole output is rewritten).",
        )


def open_materialized(
    output: str,
    expected_fingerprint: Any = None,
    *,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy | None = None,
    verify: Literal["checksum", "size"] = "checksum",
    columns: list[str] | None = None,
) -> ParquetShardedSource:
    """The rows of a materialized output as a source, in order, after the checks (see the
    module's docstring). ``expected_fingerprint`` (the pipeline's) must equal the manifest's
    (None: not checked). ``verify="size"`` skips reading every shard's bytes for its sha256
    (pages still carry checksums that reads verify)."""
    if verify not in ("checksum", "size"):
        raise ValueError(f"verify must be 'checksum' or 'size', got {verify!r}")
    policy = retry or RetryPolicy()
    store = OutputStore(output, storage_options, policy)
    manifest = _manifest(store)
    if expected_fingerprint is not None:
        _check_fingerprint(store, manifest, expected_fingerprint)
    verify_shards(store, manifest, verify)
    source = ParquetShardedSource(
        store.path("part-*.parquet"), storage_options, columns, retry=policy
    )  # one listing, however many shards
    names = [name.rsplit("/", 1)[-1] for name in source.shard_names]
    if names != [shard.name for shard in manifest.shards]:  # so some are not in the manifest
        extra = sorted(set(names) - {shard.name for shard in manifest.shards})
        raise CorruptShardError(
            f"{store.url} holds shards its manifest does not list: {', '.join(extra[:3])}"
            f"{', ...' if len(extra) > 3 else ''}.",
            path=store.path(extra[0]),
            hint="They were added after the output was written: remove them, or materialize "
            "again with overwrite=True.",
        )
    return source


def materialized_path(cache_dir: str, fingerprint: Any) -> str:
    """Where the cache keeps the output of the pipeline with ``fingerprint``."""
    return f"{cache_dir.rstrip('/')}/{digest(json_value(fingerprint))}"


def find_materialized(
    cache_dir: str,
    fingerprint: Any,
    *,
    storage_options: dict[str, Any] | None = None,
    retry: RetryPolicy | None = None,
) -> str | None:
    """The committed output of the pipeline with ``fingerprint`` in ``cache_dir``, or None when
    there is none (never made, or its run did not finish). One read: open it with
    ``open_materialized`` (which verifies the shards)."""
    path = materialized_path(cache_dir, fingerprint)
    store = OutputStore(path, storage_options, retry or RetryPolicy())
    data = store.read(MANIFEST_NAME)
    if data is None:
        return None
    _check_fingerprint(store, Manifest.from_json(data, store.path(MANIFEST_NAME)), fingerprint)
    return path
