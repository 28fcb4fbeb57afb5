"""I/O counters shared by the readers of a source: rows, bytes, requests and retries."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any


@dataclasses.dataclass
class IOStats:
    """Thread-safe running totals of what a source read."""

    rows: int = 0
    bytes_read: int = 0
    requests: int = 0
    retries: int = 0
    skipped_rows: int = 0
    _lock: threading.Lock = dataclasses.field(
        default_factory=threading.Lock, repr=False, compare=False
    )

    def add(self, **counts: int) -> None:
        """Add to the named counters, e.g. ``stats.add(rows=128, bytes_read=4096)``."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, int]:
        """The current totals as a plain dict."""
        with self._lock:
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}

    def __getstate__(self) -> dict[str, Any]:
        return self.snapshot()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)
