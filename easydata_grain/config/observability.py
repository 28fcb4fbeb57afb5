"""What a run reports while it loads (``ObservabilityConfig``)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from easydata_grain.config.validation import Config, bounded


@dataclasses.dataclass(frozen=True)
class ObservabilityConfig(Config):
    """What a run (``easydata-grain run``) shows while it loads."""

    progress_enabled: bool = True
    """Show progress: rows/s, the input-wait fraction and the realized mixture."""
    progress_type: Literal["tqdm", "json", "none"] = "tqdm"
    """``tqdm``: a progress bar; ``json``: one JSON line of stats every ``log_interval``
    steps; ``none``: nothing. (EasyData's ``rich`` is not offered.)"""
    metrics_enabled: bool = True
    """Log the loader's stats (``loader.stats()``) every ``log_interval`` steps."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """The level of the ``easydata_grain`` loggers during the run."""
    log_interval: int = bounded(100, minimum=1)
    """Steps between two stats reports."""
