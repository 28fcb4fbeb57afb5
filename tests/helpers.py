"""Small helpers shared by the tests: row comparison with numpy values, a local Ray."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """A row (or value) with numpy arrays turned into lists, for equality checks."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def start_ray_for_tests(num_cpus: int = 2) -> None:
    """A local Ray (``start_local_ray``: loopback only) whose workers can import ``tests``
    (the repository is put on their ``PYTHONPATH`` while it starts)."""
    from easydata_grain.materialize import start_local_ray

    repo = str(Path(__file__).resolve().parents[1])
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (repo, saved) if p)
    try:
        start_local_ray(num_cpus=num_cpus)
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    """``rows`` written to ``path`` as JSON lines; the path as a string."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)
