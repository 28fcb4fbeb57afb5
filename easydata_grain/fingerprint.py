"""A pipeline's fingerprint: what a saved loader state is only valid for."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from easydata_grain.op_protocols import Fingerprinted


def digest(value: Any) -> str:
    """A short, stable hash of a JSON-serializable value."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe(fn: Any) -> str:
    """A stable name for a transform: its class or function, module-qualified, and what it does:
    its ``fingerprint()`` when it is ``Fingerprinted`` (a tokenizer by its content, not its
    name), else its fields."""
    kind = fn if isinstance(fn, type) else type(fn)
    if isinstance(fn, Fingerprinted) and not isinstance(fn, type):
        return f"{kind.__module__}.{kind.__qualname__}#{fn.fingerprint()}"
    if dataclasses.is_dataclass(fn) and not isinstance(fn, type):
        fields = {f.name: getattr(fn, f.name) for f in dataclasses.fields(fn)}
        return f"{kind.__module__}.{kind.__qualname__}{fields}"  # nested values included
    if callable(fn) and hasattr(fn, "__qualname__") and not isinstance(fn, type):
        return f"{getattr(fn, '__module__', '?')}.{fn.__qualname__}"
    fields = getattr(fn, "__dict__", {})
    shown = {k: v for k, v in sorted(fields.items()) if isinstance(v, int | float | str | bool)}
    return f"{kind.__module__}.{kind.__qualname__}{shown if shown else ''}"


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The components that differ between two fingerprints, in words."""
    keys = sorted(set(saved) | set(current))
    return [
        f"{key}: saved {saved.get(key)!r}, now {current.get(key)!r}"
        for key in keys
        if saved.get(key) != current.get(key)
    ]
