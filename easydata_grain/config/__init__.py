"""Pipeline configs: EasyData's dataclasses (``PipelineConfig``, ``DatasetConfig``, the stage
configs), checked on construction and built from dicts, YAML or JSON with errors that name the
field's path."""

from easydata_grain.config.dataset import DatasetConfig, TokenizerConfig
from easydata_grain.config.mixing import MixStageConfig, WeightSchedulePoint
from easydata_grain.config.observability import ObservabilityConfig
from easydata_grain.config.output import CacheStageConfig, RayConfig, SaveStageConfig
from easydata_grain.config.pipeline_config import PipelineConfig, load_config
from easydata_grain.config.stages import (
    LoadStageConfig,
    PackStageConfig,
    SourceStageConfig,
    TokenizeStageConfig,
)
from easydata_grain.config.validation import Config

__all__ = [
    "CacheStageConfig",
    "Config",
    "DatasetConfig",
    "LoadStageConfig",
    "MixStageConfig",
    "ObservabilityConfig",
    "PackStageConfig",
    "PipelineConfig",
    "RayConfig",
    "SaveStageConfig",
    "SourceStageConfig",
    "TokenizeStageConfig",
    "TokenizerConfig",
    "WeightSchedulePoint",
    "load_config",
]
