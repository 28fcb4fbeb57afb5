"""``easydata-grain preview URL -n 5``: the first rows of a dataset, in shard order, one field a
line, long values shortened."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from easydata_grain.commands.url_source import file_sources
from easydata_grain.sources.file_source import FileShardedSource

WIDTH = 100
"""The longest line a value takes."""


def _items(values: Any) -> str:
    """A list's elements, the first few and the last two when it is long."""
    shown = [repr(v) for v in values[:8]]
    if len(values) > 10:
        shown += ["...", *(repr(v) for v in values[-2:])]
    else:
        shown += [repr(v) for v in values[8:]]
    return "[" + ", ".join(shown) + "]"


def format_value(value: Any, width: int = WIDTH) -> str:
    """A value on one line of at most ``width`` characters, with its type and size where they
    help (``int32[37] [12, 7, ...]``, ``'some text...' (212 chars)``)."""
    if isinstance(value, np.ndarray):
        text = f"{value.dtype}{list(value.shape)} {_items(value.tolist())}"
    elif isinstance(value, list):
        text = f"list[{len(value)}] {_items(value)}"
    elif isinstance(value, str) and len(value) > width - 20:
        text = f"{value[: width - 30]!r}... ({len(value):,} chars)"
    else:
        text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _rows(sources: list[FileShardedSource]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """Every row with its shard and row number, in shard order."""
    for source in sources:
        for shard in source.shard_names:
            for row, values in enumerate(source.open_shard(shard)):
                yield shard, row, values


def preview_url(url: str, rows: int = 5) -> str:
    """The first ``rows`` rows of the Parquet or JSON files at ``url``, readable."""
    lines = []
    for shard, row, values in itertools.islice(_rows(file_sources(url)), rows):
        lines.append(f"row {row} of {os.path.basename(shard)}")
        width = max((len(name) for name in values), default=0)
        lines += [f"  {name:{width}}  {format_value(value)}" for name, value in values.items()]
    return "\n".join(lines) if lines else f"{url}: no rows"
