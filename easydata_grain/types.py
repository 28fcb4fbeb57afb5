"""The types the layers share: a row, a row's address, a per-row transform."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grain

Row = dict[str, Any]
"""One sample: field name -> value (numbers, ``str``, numpy arrays for numeric lists, dicts)."""

Address = tuple[int, int]
"""A row's address: ``(shard index in source.shard_names, row in the shard)``."""

Transform = (
    grain.transforms.Map
    | grain.transforms.RandomMap
    | grain.transforms.Filter
    | Callable[[Any], Any]
)
"""A per-row operation: a Grain ``Map``/``RandomMap``/``Filter``, or a callable (a map)."""
