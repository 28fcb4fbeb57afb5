"""What the graph asks of a row operation, declared where both ``graph/`` and ``transforms/``
import it (the graph never imports the transforms).

- ``FieldTransform``: the fields it reads and writes, so the compiler can find the columns a
  pipeline needs from its source (projection push-down).
- ``BatchMap``: a map that also transforms a list of rows in one call (a tokenizer), so the
  compiler runs it on chunks of rows rather than once per row.
- ``Fingerprinted``: a stable identity of its configuration (a tokenizer by its content), which
  a saved loader state is checked against.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class FieldTransform(Protocol):
    """A row transform that says which fields it reads and which it sets or removes."""

    reads: frozenset[str] | None
    """The fields it may read (absent ones are allowed where the transform says so); None: any."""

    writes: frozenset[str] | None
    """The fields it sets or removes; None: it may change any field."""

    def fields_needed(self, downstream: frozenset[str] | None) -> frozenset[str] | None:
        """The input fields needed so that ``downstream`` fields exist after it (None: all)."""
        ...


@runtime_checkable
class BatchMap(Protocol):
    """A map that also transforms many rows in one call (a tokenizer called on a list)."""

    def map(self, element: Any) -> Any:
        """One row."""
        ...

    def map_batch(self, elements: list[Any]) -> list[Any]:
        """Many rows at once: ``[map(e) for e in elements]``, faster."""
        ...


@runtime_checkable
class Fingerprinted(Protocol):
    """An operation with a stable identity of its configuration, for a pipeline's fingerprint."""

    def fingerprint(self) -> str:
        """A short hash of what the operation does (its class and configuration)."""
        ...
