"""How ``materialize()`` writes: engine, workers, shard and row-group sizes, codec, overwrite.

The settings are a config dataclass, checked on construction like every config of the library
(a wrong type or an unknown choice is an error naming the field).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from easydata_grain.config.validation import Config, bounded, join

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    **{f"{prefix}b": 1000**power for power, prefix in enumerate("kmgt", start=1)},
    **{f"{prefix}ib": 1024**power for power, prefix in enumerate("kmgt", start=1)},
}


def parse_size(size: int | str) -> int:
    """Bytes of ``size``: an int, or text like ``"500MB"`` (10**6) or ``"2GiB"`` (2**30)."""
    if isinstance(size, int) and not isinstance(size, bool):
        if size < 1:
            raise ValueError(f"a size must be >= 1 byte, got {size}")
        return size
    match = _SIZE.match(size) if isinstance(size, str) else None
    if match is None:
        raise ValueError(f"expected bytes or a size like '500MB' or '2GiB', got {size!r}")
    number = float(match[1]) * _UNITS[(match[2] or "").lower()]
    if number < 1:
        raise ValueError(f"a size must be >= 1 byte, got {size!r}")
    return int(number)


@dataclasses.dataclass(frozen=True)
class MaterializeSettings(Config):
    """The settings of one ``materialize()`` call (its keyword arguments)."""

    engine: Literal["local", "ray"] = "local"
    """``local``: processes on this host; ``ray``: tasks on a Ray cluster."""
    workers: int | None = bounded(None, minimum=1)
    """Units written at once: local processes (1: in this process, the default) or Ray tasks
    in flight (default: the cluster's CPUs)."""
    unit_rows: int | None = bounded(None, minimum=1)
    """Positions per shard; None: as many as fit in ``max_shard_size`` (estimated from the
    first rows)."""
    max_shard_size: int | str = "500MB"
    """The size a shard aims at when ``unit_rows`` is None: bytes, or ``"500MB"``, ``"2GiB"``."""
    compression: Literal["zstd", "snappy", "gzip", "brotli", "lz4", "none"] = "zstd"
    """The Parquet codec."""
    row_group_rows: int = bounded(1024, minimum=1)
    """Rows per row group: a seek (a resume, a random access) decodes one row group."""
    overwrite: bool = False
    """Replace an existing output (its manifest and shards); False: existing output is an
    error, and an interrupted run of the same pipeline resumes."""

    def _check(self, path: str) -> None:
        try:
            parse_size(self.max_shard_size)
        except ValueError as exc:
            raise ValueError(f"{join(path, 'max_shard_size')}: {exc}") from None

    @property
    def max_shard_bytes(self) -> int:
        """``max_shard_size`` in bytes."""
        return parse_size(self.max_shard_size)
