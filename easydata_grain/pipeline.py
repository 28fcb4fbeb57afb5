"""``Pipeline``: a ``PipelineConfig`` compiled, stage by stage, into one ``AsyncDataLoader``.

``Pipeline.from_config(config).source().tokenize().cache().mix().pack().load().build()``
records each stage (with the config's stage config, or one given to the call) and ``build()``
compiles them: each dataset becomes a source (``num_rows`` exact through ``HeadSource``), its
rows go through its renames, callback and tokenizer as a ``TransformedShardedSource`` (indexed
sources stay indexed: shuffled, exact and elastic O(1) resume), a cached dataset is read from
its materialized Parquet instead (computed there first on a miss), several datasets are mixed
by ``MixedShardedSource``, and the load stage's settings make the loader. Stages must come in
that order, ``source()`` first; stages not called do nothing, and several datasets without
``mix()`` are an error rather than the first dataset.

``save()`` writes the pipeline's rows (epoch 0 in the loader's order, mixed and packed, before
batching) with ``materialize()``; ``rows()`` gives them as ``MaterializableRows``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from easydata_grain.config import (
    CacheStageConfig,
    DatasetConfig,
    LoadStageConfig,
    MixStageConfig,
    PackStageConfig,
    PipelineConfig,
    SaveStageConfig,
    SourceStageConfig,
    TokenizerConfig,
    TokenizeStageConfig,
    load_config,
)
from easydata_grain.io.errors import (
    MalformedRowError,
    NotSupportedYetError,
    SchemaMismatchError,
    ShardNotFoundError,
)
from easydata_grain.loader import AsyncDataLoader
from easydata_grain.sources.head import HeadSource
from easydata_grain.sources.huggingface import HuggingFaceShardedSource
from easydata_grain.sources.in_memory import InMemorySource
from easydata_grain.sources.resolve import file_source
from easydata_grain.sources.transformed import DEFAULT_CHUNK_ROWS, TransformedShardedSource
from easydata_grain.transforms.fields import AddField, DropFields, RenameFields, SelectFields
from easydata_grain.transforms.filters import FilterNonEmpty
from easydata_grain.transforms.functions import MapFunction
from easydata_grain.transforms.tokenize import TokenizeTransform

if TYPE_CHECKING:
    from easydata_grain.materialize import MaterializableRows, Materialized

_ORDER = ("source", "tokenize", "cache", "mix", "pack", "load")


@dataclasses.dataclass(frozen=True)
class _Stages:
    """The stage configs recorded so far (None: the stage was not called)."""

    source: SourceStageConfig | None = None
    tokenize: TokenizeStageConfig | None = None
    cache: CacheStageConfig | None = None
    mix: MixStageConfig | None = None
    pack: PackStageConfig | None = None
    load: LoadStageConfig | None = None


class Pipeline:
    """The fluent pipeline of a ``PipelineConfig`` (see the module's docstring)."""

    def __init__(self, config: PipelineConfig):
        if not isinstance(config, PipelineConfig):
            raise TypeError(
                f"Pipeline needs a PipelineConfig, got {type(config).__name__}: use "
                "Pipeline.from_config for a dict or a YAML/JSON file."
            )
        self.config = config
        self._stages = _Stages()
        self._tokenizers = _Tokenizers()
        _refuse_unsupported(config)

    @classmethod
    def from_config(
        cls, config: PipelineConfig | Mapping[str, Any] | str | os.PathLike[str]
    ) -> Pipeline:
        """A pipeline from a ``PipelineConfig``, a dict of one, or a ``.yaml``/``.json`` file."""
        if isinstance(config, PipelineConfig):
            return cls(config)
        if isinstance(config, Mapping):
            return cls(PipelineConfig.from_dict(config))
        if isinstance(config, str | os.PathLike):
            return cls(load_config(config))
        raise TypeError(
            f"from_config takes a PipelineConfig, a dict or a config file path, got "
            f"{type(config).__name__}"
        )

    @property
    def stages(self) -> list[str]:
        """The stages called so far, in order."""
        return [name for name in _ORDER if getattr(self._stages, name) is not None]

    def _add(self, name: str, config: Any, default: Any, kind: type) -> Pipeline:
        if config is None:
            config = default
        elif isinstance(config, Mapping):
            config = kind.from_dict(config)
        if not isinstance(config, kind):
            raise TypeError(f"{name}() takes a {kind.__name__} (or a dict of one), got {config!r}")
        if getattr(self._stages, name) is not None:
            raise ValueError(f"{name}() was already called on this pipeline")
        later = [s for s in _ORDER[_ORDER.index(name) + 1 :] if getattr(self._stages, s)]
        if later:
            raise ValueError(f"{name}() must come before {', '.join(later)}()")
        if name != "source" and self._stages.source is None:
            raise ValueError(f"call source() before {name}()")
        self._stages = dataclasses.replace(self._stages, **{name: config})
        return self

    def source(self, config: SourceStageConfig | Mapping[str, Any] | None = None) -> Pipeline:
        """Open every dataset (the config's ``source`` stage, or ``config``)."""
        return self._add("source", config, self.config.source, SourceStageConfig)

    def tokenize(self, config: TokenizeStageConfig | Mapping[str, Any] | None = None) -> Pipeline:
        """Tokenize each dataset's ``content_field`` with its tokenizer (batched calls)."""
        return self._add("tokenize", config, self.config.tokenize, TokenizeStageConfig)

    def cache(self, config: CacheStageConfig | Mapping[str, Any] | None = None) -> Pipeline:
        """Read each dataset's processed rows from the cache (``cache_dir``, or the dataset's
        ``cache_path``), materializing them there first on a miss (``docs/caching.md``)."""
        self._add("cache", config, self.config.cache, CacheStageConfig)
        _refuse_cache(self._stages.cache)  # type: ignore[arg-type]
        return self

    def mix(self, config: MixStageConfig | Mapping[str, Any] | None = None) -> Pipeline:
        """Mix the datasets by their weights (needed for more than one dataset)."""
        return self._add("mix", config, self.config.mix, MixStageConfig)

    def pack(self, config: PackStageConfig | Mapping[str, Any] | None = None) -> Pipeline:
        """Pack token sequences into rows of ``seq_length`` tokens (when ``enabled``); a
        tokenizer that pads is refused (packed rows are padded by the packer)."""
        self._add("pack", config, self.config.pack, PackStageConfig)
        if self._packs() and self._stages.tokenize is not None:
            _refuse_padding(self.config, self._stages.tokenize)
        return self

    def load(self, config: LoadStageConfig | Mapping[str, Any] | None = None) -> Pipeline:
        """Batch, shuffle and prefetch (the config's ``load`` stage, or ``config``)."""
        return self._add("load", config, self.config.load, LoadStageConfig)

    def _packs(self) -> bool:
        """Whether the pack stage was called and is enabled."""
        return self._stages.pack is not None and self._stages.pack.enabled

    def configured(self) -> Pipeline:
        """Every stage the config asks for, in order: ``source()``, ``tokenize()`` when a
        tokenizer is set, ``cache()`` when the config sets any cache field, ``mix()`` for
        several datasets (or a source field to add), ``pack()`` when enabled, ``load()`` (what
        ``easydata-grain run CONFIG`` builds)."""
        config = self.config
        self.source()
        if (
            config.default_tokenizer
            or config.tokenize.default_tokenizer
            or any(ds.tokenizer is not None for ds in config.datasets)
        ):
            self.tokenize()
        if config.cache != CacheStageConfig():
            self.cache()
        if len(config.datasets) > 1 or config.mix.add_source_field is not None:
            self.mix()
        if config.pack.enabled:
            self.pack()
        return self.load()

    def save(
        self,
        config: SaveStageConfig | Mapping[str, Any] | None = None,
        *,
        engine: Literal["local", "ray"] | None = None,
        workers: int | None = None,
    ) -> Materialized:
        """Write the pipeline's rows (``rows()``: after the source, tokenize, cache, mix and
        pack stages called, before batching) to ``config.output_dir`` (the config's ``save``
        stage by default) as Parquet shards and a manifest, and each dataset with a
        ``save_path`` to it. ``engine`` and ``workers`` replace the config's (``ray.enabled``
        and ``ray.num_workers``; local: ``tokenize.num_workers`` processes, at least 1).
        Returns the pipeline output's ``Materialized`` (its manifest: shards, rows, bytes)."""
        if config is None:
            config = self.config.save
        elif isinstance(config, Mapping):
            config = SaveStageConfig.from_dict(config)
        if not isinstance(config, SaveStageConfig):
            raise TypeError(f"save() takes a SaveStageConfig (or a dict of one), got {config!r}")
        _refuse_save(config)
        self._tokenizers = _Tokenizers()
        sources = self.sources()
        self._save_datasets(sources, config, engine, workers)
        return self._write(self._rows_of(sources), config.output_dir, config, engine, workers)

    def rows(self) -> MaterializableRows:
        """The pipeline's rows before batching, by ranges of positions: epoch 0 (one pass of
        a mixture) in the order the loader reads it on one host, packed when the pack stage is
        called (each ``materialize()`` unit packed on its own: ``PackedRows``)."""
        self._tokenizers = _Tokenizers()
        return self._rows_of(self.sources())

    # -- compile ----------------------------------------------------------------------------

    def sources(self) -> dict[str, Any]:
        """Each dataset's source by name, after the source, tokenize and cache stages. With no
        stage called yet, the config's stages are run first (``configured()``), so
        ``Pipeline.from_config(config).build()`` (or ``.save()``) does what the config says."""
        if self._stages.source is None:
            self.configured()
        return {ds.name: self._dataset_source(ds) for ds in self.config.datasets}  # type: ignore[misc]

    def build(self, mesh: Any = None) -> Any:
        """The loader: an ``AsyncDataLoader`` over the stages called (the config's ``load``
        stage when ``load()`` was not called); with ``prefetch_to_device`` a
        ``DeviceLoader`` yielding global ``jax.Array`` batches on ``mesh``. Cached datasets
        are read from (or first written to) their cache; each dataset with a ``save_path``
        is written there, and with ``save.enabled`` the pipeline's rows are saved first
        (``save()``). An output this pipeline already wrote, complete and with the same rows
        (a restarted job), is kept and not written again; another one is an error unless
        ``save.overwrite``."""
        self._tokenizers = _Tokenizers()
        sources = self.sources()
        self._save_datasets(sources, self.config.save, None, None, keep_written=True)
        if self.config.save.enabled:
            rows, output = self._rows_of(sources), self.config.save.output_dir
            if not self._written_already(rows, output, self.config.save):
                self._write(rows, output, self.config.save)
        source = self._combined(sources)
        load = self._stages.load or self.config.load
        options: dict[str, Any] = {}
        if self._packs():
            options["pack"] = _pack_of(
                self._stages.pack,  # type: ignore[arg-type]
                self.config,
                self._stages.tokenize,
                self._tokenizers,
                load.batch_size,
            )
        if self._stages.tokenize is not None:
            options["worker_processes"] = self._stages.tokenize.num_workers
        loader = AsyncDataLoader(
            source,
            batch_size=load.batch_size,
            prefetch_enabled=load.prefetch_enabled,
            prefetch_workers=load.prefetch_workers,
            prefetch_buffer_size=load.prefetch_buffer_size,
            shuffle_buffer_size=load.shuffle_buffer_size,
            seed=self.config.seed,
            num_epochs=load.num_epochs,
            drop_remainder=load.drop_last,
            pad=self._pad(load),
            pad_value=self._pad_value(),
            **options,
        )
        if load.prefetch_to_device:
            from easydata_grain.device_loader import DeviceLoader

            return DeviceLoader(loader, mesh)
        return loader

    def _pad(self, load: LoadStageConfig) -> bool | dict[str, int]:
        """The loader's ``pad``: the load stage's, or every token field padded to
        ``max_length`` when a tokenizer asks for ``padding="max_length"``."""
        if self._stages.tokenize is None:
            return load.pad
        lengths = {}
        for ds in self.config.datasets:
            tokenizer = self.config.tokenizer_for(ds)
            if tokenizer is not None and tokenizer.padding == "max_length":
                lengths[tokenizer.max_length] = tokenizer
            elif tokenizer is not None and tokenizer.padding in (True, "longest"):
                return True
        if len(lengths) > 1:
            raise ValueError(
                f"Datasets pad to different max_length values {sorted(lengths)}: batches must "
                "have one shape; give every tokenizer the same max_length."
            )
        if lengths:
            (length,) = lengths
            fields = ["input_ids"]
            if next(iter(lengths.values())).return_attention_mask:
                fields.append("attention_mask")
            return dict.fromkeys(fields, length)
        return load.pad

    def _pad_value(self) -> dict[str, int]:
        """The loader's ``pad_value``: ``input_ids`` padded with the ``pad_token_id`` of the
        tokenizers that pad (as Hugging Face pads), masks with 0."""
        tokenize = self._stages.tokenize
        if tokenize is None:
            return {}
        ids = {}
        for ds in self.config.datasets:
            chosen = _tokenizer_config(ds, self.config, tokenize)
            if chosen is None or chosen.padding in (False, "do_not_pad"):
                continue
            pad_id = self._tokenizers.load(chosen, ds.tokenizer_kwargs).pad_token_id
            if pad_id is None:
                raise ValueError(
                    f"datasets[{ds.name!r}]: the tokenizer {chosen.name_or_path!r} has no pad "
                    f"token, so padding={chosen.padding!r} cannot pad input_ids (Hugging Face "
                    "refuses too). Name one in the dataset's tokenizer_kwargs (pad_token: its "
                    "EOS token, say), or set padding: false and pack the rows (pack.enabled)."
                )
            ids[pad_id] = ds.name
        if len(ids) > 1:
            raise ValueError(
                f"The datasets' tokenizers pad with different pad_token_id values "
                f"({', '.join(f'{name}: {i}' for i, name in ids.items())}): one batch has one "
                "pad value; give them the same pad_token in tokenizer_kwargs."
            )
        return {"input_ids": next(iter(ids))} if ids else {}

    def _combined(self, sources: dict[str, Any]) -> Any:
        """The one dataset's source, or the datasets mixed by the mix stage."""
        if len(sources) > 1 and self._stages.mix is None:
            raise ValueError(
                f"The pipeline has {len(sources)} datasets ({', '.join(sources)}) but no mix "
                "stage: call mix() to interleave them by weight (build() never silently keeps "
                "one)."
            )
        if len(sources) > 1:
            return self._mixed(sources)
        ((name, source),) = sources.items()
        field = self._stages.mix.add_source_field if self._stages.mix is not None else None
        if field is None:
            return source
        return TransformedShardedSource(source, [AddField(field, name)])  # as a mixture would

    def _rows_of(self, sources: dict[str, Any]) -> MaterializableRows:
        """``rows()`` of these sources (see there)."""
        from easydata_grain.materialize import EpochRows, MixtureRows, PackedRows

        source = self._combined(sources)
        load = self._stages.load or self.config.load
        window = load.shuffle_buffer_size or 0
        seed = self.config.seed
        if len(sources) > 1:
            rows: Any = MixtureRows(
                source, global_batch_size=load.batch_size, seed=seed, shuffle_buffer_size=window
            )
        else:
            rows = EpochRows(source, seed=seed, shuffle=window > 0, window_size=max(1, window))
        if self._packs():
            pack = _pack_of(
                self._stages.pack,  # type: ignore[arg-type]
                self.config,
                self._stages.tokenize,
                self._tokenizers,
            )
            rows = PackedRows(rows, pack)
        return rows

    def _write_options(
        self,
        engine: Literal["local", "ray"] | None,
        workers: int | None,
        storage_options: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """``materialize()``'s engine, workers, store options (the source stage's unless
        given) and retry policy."""
        from easydata_grain.materialize import RayOptions

        ray = self.config.ray
        stage = self._stages.source or self.config.source
        options: dict[str, Any] = {
            "storage_options": stage.dask_storage_options
            if storage_options is None
            else storage_options,
            "retry": stage.retry_policy(),
        }
        if engine == "ray" or (engine is None and ray.enabled):
            return {
                **options,
                "engine": "ray",
                "workers": workers or ray.num_workers,
                "ray": RayOptions.from_config(ray),
            }
        tokenize = self._stages.tokenize
        processes = tokenize.num_workers if tokenize is not None else 0
        return {**options, "engine": "local", "workers": workers or max(1, processes)}

    def _write(
        self,
        rows: MaterializableRows,
        output: str,
        stage: SaveStageConfig,
        engine: Literal["local", "ray"] | None = None,
        workers: int | None = None,
    ) -> Materialized:
        """``rows`` materialized to ``output`` with the save stage's settings, and the schema
        of ``_schema_over_nulls``; a column of two types is an error that says what to change
        in the config."""
        from easydata_grain.materialize import materialize

        settings: dict[str, Any] = {
            "compression": stage.compression or "zstd",
            "max_shard_size": stage.max_shard_size,
            "overwrite": stage.overwrite,
            "schema": _schema_over_nulls(rows),
        }
        if stage.num_shards is not None:
            settings["unit_rows"] = max(1, -(-rows.num_positions() // stage.num_shards))
        options = self._write_options(engine, workers, stage.storage_options)
        try:
            return materialize(rows, output, **settings, **options)
        except SchemaMismatchError as error:
            raise SchemaMismatchError(
                f"Saving the pipeline's rows to {output} failed: {error}",
                path=error.path,
                hint="In the pipeline's config: give the field one type in every row (a "
                "dataset's format_callback), or leave it out (the dataset's columns, "
                "additional_fields or tokenize.remove_columns).",
            ) from error

    def _save_datasets(
        self,
        sources: dict[str, Any],
        stage: SaveStageConfig,
        engine: Literal["local", "ray"] | None,
        workers: int | None,
        *,
        keep_written: bool = False,
    ) -> None:
        """Each dataset with a ``save_path``: its processed rows, in its files' order
        (``keep_written``: not when this pipeline already wrote them there)."""
        from easydata_grain.materialize import EpochRows

        for ds in self.config.datasets:
            if ds.save_path is not None:
                rows = EpochRows(sources[ds.name])  # type: ignore[index]
                if not (keep_written and self._written_already(rows, ds.save_path, stage)):
                    self._write(rows, ds.save_path, stage, engine, workers)

    def _written_already(
        self, rows: MaterializableRows, output: str, stage: SaveStageConfig
    ) -> bool:
        """Whether ``output`` holds a finished output of exactly ``rows`` (its manifest's
        fingerprint), its shards all there with their sizes; False with ``overwrite``."""
        from easydata_grain.materialize import open_materialized, read_manifest
        from easydata_grain.materialize.manifest import json_value

        if stage.overwrite:
            return False
        options = self._write_options(None, None, stage.storage_options)
        store = {"storage_options": options["storage_options"], "retry": options["retry"]}
        try:
            manifest = read_manifest(output, **store)
        except ShardNotFoundError:  # none, or a run that did not finish: write (or resume) it
            return False
        if manifest.fingerprint != json_value(rows.fingerprint()):
            return False  # another pipeline's: writing it says so
        open_materialized(output, verify="size", **store)  # a missing or cut shard is an error
        return True

    def _cache_of(self, ds: DatasetConfig) -> tuple[str, CacheStageConfig] | None:
        """Where ``ds`` is cached and with which settings; None when it is not."""
        stage = self._stages.cache or self.config.cache
        tokenize = self._stages.tokenize
        if not ds.cache_enabled or not stage.enabled:
            return None
        if tokenize is not None and not tokenize.cache_tokenized:
            return None
        if ds.cache_path is not None:
            return ds.cache_path, stage
        return (stage.cache_dir, stage) if self._stages.cache is not None else None

    def _cached(self, ds: DatasetConfig, source: Any) -> Any:
        """``source`` (``ds``'s processed rows) read from its cache, made there on a miss."""
        from easydata_grain.materialize import EpochRows, cached_rows

        found = self._cache_of(ds)
        if found is None:
            return source
        cache_dir, stage = found  # its unsupported fields were refused by cache()/__init__
        return cached_rows(
            EpochRows(source),
            cache_dir,
            expiry_seconds=stage.disk_cache_expiry,
            compression=stage.compression,
            unit_rows=_same_layout(source.row_counts()),
            **self._write_options(None, None, stage.storage_options),
        )

    def _dataset_source(self, ds: DatasetConfig) -> Any:
        """One dataset's source with its per-row transforms."""
        source = _open(ds, self.config, self._stages.source or self.config.source)
        if ds.num_rows is not None:
            source = HeadSource(source, ds.num_rows)
        steps: list[Any] = []
        if ds.format_fields:
            steps.append(RenameFields(ds.format_fields))
        if ds.format_callback is not None:
            steps.append(MapFunction(ds.format_callback))
        tokenize = self._stages.tokenize
        if tokenize is not None:
            steps.extend(
                _tokenize_steps(ds, self.config, tokenize, self._tokenizers, self._packs())
            )
        if steps:
            chunk = tokenize.batch_size if tokenize is not None else DEFAULT_CHUNK_ROWS
            source = TransformedShardedSource(source, steps, chunk_rows=chunk)
        return self._cached(ds, source)

    def _mixed(self, sources: dict[str, Any]) -> Any:
        from easydata_grain.sources.mixed import MixedShardedSource

        mix = self._stages.mix
        assert mix is not None
        return MixedShardedSource.from_config(sources, mix, seed=self.config.seed)


def _schema_over_nulls(rows: MaterializableRows) -> pa.Schema | None:
    """The schema to save ``rows`` with when a column is null in the first rows (the rows
    ``materialize()`` takes its schema from): their schema with each such column's type taken
    from its first non-null values further on (read a sample at a time; null only when it is
    null in every row). None (``materialize()``'s own schema) when no column is null there."""
    from easydata_grain.materialize.materializer import SAMPLE_ROWS

    total = rows.num_positions()
    schema = rows.table(0, min(total, SAMPLE_ROWS)).schema
    nulls = {field.name for field in schema if pa.types.is_null(field.type)}
    if not nulls:
        return None
    for start in range(SAMPLE_ROWS, total, SAMPLE_ROWS):
        found = rows.table(start, min(total, start + SAMPLE_ROWS)).schema
        for name in [n for n in nulls if n in found.names]:
            if not pa.types.is_null(found.field(name).type):
                schema = schema.set(schema.get_field_index(name), found.field(name))
                nulls.discard(name)
        if not nulls:
            break
    return schema


def _same_layout(counts: list[int]) -> int | None:
    """Rows per cache shard that give the cache the source's shard sizes (so the loader's
    epoch order, a function of the shard sizes, is the same over both): the shards' common
    size when all but the last are equal and the last is no larger; else None (shards of
    ``max_shard_size``)."""
    if not counts or counts[0] < 1 or any(c != counts[0] for c in counts[:-1]):
        return None
    return counts[0] if counts[-1] <= counts[0] else None


def _refuse_unsupported(config: PipelineConfig) -> None:
    """Raise for fields the pipeline will use but whose feature does not exist, rather than
    ignore them."""
    if config.save.enabled:
        _refuse_save(config.save)
    for i, ds in enumerate(config.datasets):
        if ds.save_path is not None:
            fmt = ds.save_format or config.save.format
            if fmt != "parquet":
                field = "save_format" if ds.save_format else "save.format"
                raise NotSupportedYetError(
                    f"datasets[{i}].save_path: the format {fmt!r} ({field}) is not supported "
                    "yet: only 'parquet' is written; set it to parquet (convert with pyarrow)."
                )
    if any(ds.cache_path is not None for ds in config.datasets) or config.cache != (
        CacheStageConfig()
    ):
        _refuse_cache(config.cache)


def _refuse_save(stage: SaveStageConfig) -> None:
    """NotSupportedYetError for save settings whose feature does not exist."""
    if stage.format != "parquet":
        raise NotSupportedYetError(
            f"save.format={stage.format!r} is not supported yet: only 'parquet' is written "
            "(Parquet shards and a JSON manifest). Set format: parquet, and convert the shards "
            "with pyarrow if another format is needed."
        )
    if stage.push_to_hub:
        raise NotSupportedYetError(
            "save.push_to_hub=True is not supported yet: set it to false and upload "
            "output_dir with huggingface_hub.HfApi().upload_folder(repo_type='dataset')."
        )


def _refuse_cache(stage: CacheStageConfig) -> None:
    """NotSupportedYetError for cache settings that Parquet materialization cannot honour."""
    default = CacheStageConfig()
    if stage.cache_type == "memory":
        raise NotSupportedYetError(
            "cache.cache_type='memory' is not supported yet: the cache is materialized "
            "Parquet on disk or a store. Use cache_type: disk (or streaming: false to hold "
            "the rows in memory)."
        )
    if stage.memory_cache_size != default.memory_cache_size:
        raise NotSupportedYetError(
            f"cache.memory_cache_size={stage.memory_cache_size} is not supported yet: there is "
            "no in-memory item cache (the cache is Parquet; the loader's block cache and the "
            "OS page cache hold recent reads). Remove the field."
        )
    if stage.hash_fn != default.hash_fn:
        raise NotSupportedYetError(
            f"cache.hash_fn={stage.hash_fn!r} is not supported yet: the cache key is "
            "'combined' (each shard's path with its size and etag or mtime, the transforms and "
            "the tokenizer's content). Remove the field."
        )


def _open(ds: DatasetConfig, config: PipelineConfig, stage: SourceStageConfig) -> Any:
    """The source of one dataset's files (or Hub repo), before its transforms."""
    options = config.storage_options_for(ds) or None
    retry = stage.retry_policy()
    files = [ds.data_files] if isinstance(ds.data_files, str) else list(ds.data_files)
    columns = list(ds.columns) if ds.columns else None
    streaming = config.streaming if stage.streaming is None else stage.streaming
    if ds.type == "huggingface":
        return HuggingFaceShardedSource(
            files[0],
            split=ds.split,
            subset=ds.subset,
            streaming=streaming,
            columns=columns,
            storage_options=options,
            retry=retry,
        )
    if ds.subset is not None or ds.split != "train":
        raise ValueError(
            f"Dataset {ds.name!r}: split={ds.split!r} and subset={ds.subset!r} pick a split and "
            f"config of a Hugging Face dataset (type: huggingface), and its data_files {files} "
            "are files: point data_files at the split's files and leave split and subset out."
        )
    source = file_source(
        files,
        ds.type,
        storage_options=options,
        retry=retry,
        columns=columns,
        metadata_cache_dir=stage.metadata_cache_dir,
    )
    if not streaming:
        source = InMemorySource.from_rows(
            [row for name in source.shard_names for row in source.open_shard(name)]
        )
    return source


def _load_tokenizer(config: TokenizerConfig, kwargs: Mapping[str, Any] | None) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        config.name_or_path, trust_remote_code=config.trust_remote_code, **(kwargs or {})
    )


class _Tokenizers:
    """The tokenizers one ``build()`` loads, each once (datasets that share one, and the pack
    stage's EOS lookup, get the same object)."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] = {}

    def load(self, config: TokenizerConfig, kwargs: Mapping[str, Any] | None) -> Any:
        """The tokenizer of ``config`` with ``kwargs``, loaded on first use."""
        key = repr((config.name_or_path, config.trust_remote_code, sorted((kwargs or {}).items())))
        if key not in self._loaded:
            self._loaded[key] = _load_tokenizer(config, kwargs)
        return self._loaded[key]


def _tokenizer_config(
    ds: DatasetConfig, config: PipelineConfig, stage: TokenizeStageConfig
) -> TokenizerConfig | None:
    """The dataset's own tokenizer, else the stage's default, else the pipeline's (with the
    stage's ``max_length``)."""
    default = stage.default_tokenizer or config.default_tokenizer
    if ds.tokenizer_config() is None and default is not None:
        return TokenizerConfig(default, max_length=stage.max_length)
    return ds.tokenizer_config()


def _tokenize_steps(
    ds: DatasetConfig,
    config: PipelineConfig,
    stage: TokenizeStageConfig,
    tokenizers: _Tokenizers,
    packing: bool,
) -> list[Any]:
    """The tokenize stage's transforms for one dataset: empty texts refused or skipped,
    tokenize (cut at ``max_length`` as ``TokenizerConfig.cuts(packing)`` says), keep, drop."""
    chosen = _tokenizer_config(ds, config, stage)
    if chosen is None:
        raise ValueError(
            f"datasets[{ds.name!r}]: the tokenize stage has no tokenizer for this dataset: set "
            "its tokenizer, tokenize.default_tokenizer or the pipeline's default_tokenizer."
        )
    steps: list[Any] = []
    if stage.empty_texts == "skip":  # "error": TokenizeTransform refuses them, naming the fix
        steps.append(FilterNonEmpty(ds.content_field, strip=False))  # empty as it means it
    cut = chosen.cuts(packing)
    steps.append(
        TokenizeTransform(
            tokenizers.load(chosen, ds.tokenizer_kwargs),
            text_field=ds.content_field,
            max_length=chosen.max_length if cut else None,
            truncation=cut,
            add_special_tokens=chosen.add_special_tokens,
            return_attention_mask=chosen.return_attention_mask,
            allow_empty=stage.empty_texts == "keep",
        )
    )
    if not cut and not packing:
        check = functools.partial(
            _refuse_longer, max_length=chosen.max_length, text_field=ds.content_field
        )
        steps.append(MapFunction(check))
    if ds.additional_fields is not None:
        keep = ["input_ids", *(["attention_mask"] if chosen.return_attention_mask else [])]
        steps.append(SelectFields([*keep, *ds.additional_fields]))
    if stage.remove_columns:
        steps.append(DropFields(list(stage.remove_columns), strict=False))
    return steps


def _refuse_padding(config: PipelineConfig, stage: TokenizeStageConfig) -> None:
    """A ``ValueError`` when a dataset's tokenizer pads while the pack stage is enabled."""
    for ds in config.datasets:
        chosen = _tokenizer_config(ds, config, stage)
        if chosen is not None and chosen.padding not in (False, "do_not_pad"):
            raise ValueError(
                f"datasets[{ds.name!r}].tokenizer.padding={chosen.padding!r} with pack.enabled: "
                "packing makes every row exactly seq_length tokens and pads it itself "
                "(pack.pad_token_id), so the tokenizer's padding cannot apply to packed rows. "
                "Set the tokenizer's padding: false, or pack.enabled: false to pad rows instead."
            )


def _refuse_longer(row: dict[str, Any], *, max_length: int, text_field: str) -> dict[str, Any]:
    """``row`` as it is; a ``MalformedRowError`` when its ``input_ids`` are longer than
    ``max_length`` (a tokenizer with ``truncation=False``: nothing is cut silently; the
    source adds the shard and row)."""
    length = len(row["input_ids"])
    if length > max_length:
        raise MalformedRowError(
            f"The text in {text_field!r} is {length} tokens long, more than the tokenizer's "
            f"max_length={max_length}, and truncation is off.",
            hint="Set the tokenizer's truncation: true to cut such texts, raise its "
            "max_length, or drop long texts before tokenizing.",
        )
    return row


def _pack_of(
    stage: PackStageConfig,
    config: PipelineConfig,
    tokenize: TokenizeStageConfig | None,
    tokenizers: _Tokenizers,
    batch_size: int | None = None,
) -> Any:
    """The loader's ``Pack``; without an ``eos_token_id`` the first dataset's tokenizer's.
    With ``batch_size`` (the loader's), ``shuffle_packed`` shuffles the packed rows in windows
    of ``shuffle_buffer_factor`` batches; without it (a save) packed rows are written in
    packing order, and the loader that reads them shuffles them."""
    from easydata_grain.graph.pack import Pack

    if batch_size is None:
        stage = dataclasses.replace(stage, shuffle_packed=False)
    eos = None
    if stage.eos_token_id is None and tokenize is not None:
        first = config.datasets[0]
        chosen = _tokenizer_config(first, config, tokenize)
        if chosen is not None:
            eos = tokenizers.load(chosen, first.tokenizer_kwargs).eos_token_id
    return Pack.from_config(stage, eos_token_id=eos, batch_size=batch_size)
