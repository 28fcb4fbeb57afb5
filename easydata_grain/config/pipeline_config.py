"""The whole pipeline's config (``PipelineConfig``) and ``load_config`` for YAML and JSON files."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from easydata_grain.config.dataset import DatasetConfig, TokenizerConfig
from easydata_grain.config.mixing import MixStageConfig
from easydata_grain.config.observability import ObservabilityConfig
from easydata_grain.config.output import CacheStageConfig, RayConfig, SaveStageConfig
from easydata_grain.config.stages import (
    LoadStageConfig,
    PackStageConfig,
    SourceStageConfig,
    TokenizeStageConfig,
)
from easydata_grain.config.validation import (
    Config,
    bounded,
    building_at,
    did_you_mean,
    join,
    require,
)


@dataclasses.dataclass(frozen=True)
class PipelineConfig(Config):
    """A pipeline: its datasets and the config of each stage (``Pipeline.from_config``).

    Checked on construction, sub-configs given as dicts included: unknown fields, wrong types,
    bad choices and sizes, two datasets of one name, mix weights for unknown datasets. Build it
    in Python, or from a dict, a YAML or a JSON file (``from_dict``, ``from_yaml``,
    ``from_json``, ``load_config``); ``to_dict`` gives it back.
    """

    datasets: tuple[DatasetConfig, ...]
    """The datasets, in order (one without ``name`` is named ``dataset_{i}``)."""
    default_tokenizer: str | None = None
    """The tokenizer of datasets that name none, after the tokenize stage's default."""
    streaming: bool = True
    """For Hugging Face datasets: read the files straight from the Hub (True) or from copies
    downloaded into the Hub cache first (False). For files: read them in place (True), or load
    every row into memory first (False), as EasyData's non-streaming mode does."""
    seed: int | None = bounded(0, minimum=0)
    """The seed of the shuffle and of the mix (unless it has its own). EasyData's default is
    None (unseeded); ours is 0, and None is taken as 0, so that two runs of one config give
    the same order and a saved state resumes."""
    source: SourceStageConfig = dataclasses.field(default_factory=SourceStageConfig)
    """How datasets are opened (retries, storage options)."""
    tokenize: TokenizeStageConfig = dataclasses.field(default_factory=TokenizeStageConfig)
    """The tokenize stage."""
    cache: CacheStageConfig = dataclasses.field(default_factory=CacheStageConfig)
    """The cache stage: each dataset's processed rows materialized once, then read."""
    mix: MixStageConfig = dataclasses.field(default_factory=MixStageConfig)
    """The mix stage (needed for more than one dataset)."""
    pack: PackStageConfig = dataclasses.field(default_factory=PackStageConfig)
    """The pack stage."""
    load: LoadStageConfig = dataclasses.field(default_factory=LoadStageConfig)
    """Batching, shuffling and prefetching."""
    save: SaveStageConfig = dataclasses.field(default_factory=SaveStageConfig)
    """The save stage: the pipeline's rows written as Parquet (``Pipeline.save()``)."""
    ray: RayConfig = dataclasses.field(default_factory=RayConfig)
    """Ray as the engine of ``save()`` and the cache; False: local processes."""
    observability: ObservabilityConfig = dataclasses.field(default_factory=ObservabilityConfig)
    """What a run reports."""

    def _check(self, path: str) -> None:
        if self.seed is None:
            object.__setattr__(self, "seed", 0)
        where = join(path, "datasets")
        require(bool(self.datasets), f"{where}: give at least one dataset")
        named = []
        for i, dataset in enumerate(self.datasets):
            if dataset.name is None:
                with building_at(f"{where}[{i}]"):
                    dataset = dataclasses.replace(dataset, name=f"dataset_{i}")
            named.append(dataset)
        object.__setattr__(self, "datasets", tuple(named))
        first: dict[str, int] = {}
        for i, dataset in enumerate(named):
            j = first.setdefault(dataset.name, i)  # type: ignore[arg-type]
            require(
                j == i,
                f"{where}[{i}].name: {dataset.name!r} is also the name of {where}[{j}]; "
                "dataset names must be unique",
            )
        self._check_mix_names(join(path, "mix"), list(first))

    def _check_mix_names(self, path: str, names: list[str]) -> None:
        weighted = self.mix.weighted_names()
        if weighted is None:
            return
        field = "weights" if self.mix.weights is not None else "weight_schedule[0].weights"
        unknown = sorted(weighted - set(names))
        if unknown:
            name = unknown[0]
            raise ValueError(
                f"{join(path, field)}[{name!r}]: no dataset is named {name!r}"
                f"{did_you_mean(name, names, quote=True)} (datasets: {', '.join(names)})"
            )
        missing = [n for n in names if n not in weighted]
        require(
            not missing,
            f"{join(path, field)}: no weight for {', '.join(map(repr, missing))}; give every "
            "dataset a weight (0 leaves one out)",
        )

    def dataset(self, name: str) -> DatasetConfig:
        """The dataset called ``name`` (a ``KeyError`` naming the others if none is)."""
        for dataset in self.datasets:
            if dataset.name == name:
                return dataset
        names = [d.name for d in self.datasets]
        raise KeyError(f"no dataset is named {name!r}{did_you_mean(name, names, quote=True)}")  # type: ignore[arg-type]

    def get_dataset_by_name(self, name: str) -> DatasetConfig | None:
        """The dataset called ``name``, or None (EasyData's spelling; ``dataset()`` raises)."""
        return next((d for d in self.datasets if d.name == name), None)

    def tokenizer_for(
        self, dataset: DatasetConfig, tokenize: TokenizeStageConfig | None = None
    ) -> TokenizerConfig | None:
        """The tokenizer of ``dataset``: its own, else the tokenize stage's default, else the
        pipeline's (a name gets the stage's ``max_length``); None when none is set. ``tokenize``
        replaces ``self.tokenize`` (a stage's per-call config)."""
        own = dataset.tokenizer_config()
        if own is not None:
            return own
        stage = tokenize or self.tokenize
        name = stage.default_tokenizer or self.default_tokenizer
        return None if name is None else TokenizerConfig(name, max_length=stage.max_length)

    def storage_options_for(
        self, dataset: DatasetConfig, source: SourceStageConfig | None = None
    ) -> dict[str, Any]:
        """The source stage's ``dask_storage_options`` with ``dataset``'s merged over them
        (``source`` replaces ``self.source``)."""
        stage = source or self.source
        return {**(stage.dask_storage_options or {}), **(dataset.storage_options or {})}

    def streams(self, source: SourceStageConfig | None = None) -> bool:
        """The source stage's ``streaming`` when it sets one, else the pipeline's (``source``
        replaces ``self.source``)."""
        stage = source or self.source
        return self.streaming if stage.streaming is None else stage.streaming


def load_config(path: str | os.PathLike[str]) -> PipelineConfig:
    """A ``PipelineConfig`` from a ``.yaml``/``.yml`` or ``.json`` file (by its extension)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return PipelineConfig.from_yaml(path)
    if suffix == ".json":
        return PipelineConfig.from_json(path)
    raise ValueError(f"{path}: a config file must end in .yaml, .yml or .json")
