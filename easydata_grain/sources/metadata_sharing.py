"""Who computes a source's listing and metadata: this process, or one host for the whole slice.

Sources know nothing of hosts. They hand their listing and metadata reads to a
``MetadataSharing``: ``LocalMetadata`` computes them here; ``distributed.SliceMetadata`` (installed
as the default when ``easydata_grain.distributed`` is imported, i.e. with the package) lets host 0
compute them and sends the result to every host under ``jax.distributed``, so a slice lists the
files and reads the footers once, not once per host. Without ``jax.distributed`` it computes
locally, so a source is built, inspected and read with no JAX state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")


@runtime_checkable
class MetadataSharing(Protocol):
    """Runs a listing or metadata read where it should run, and returns its JSON-able result."""

    def share(self, compute: Callable[[], Any], *, what: str, key: str) -> Any:
        """``compute()``'s result; ``what`` names it in errors, ``key`` identifies the request
        (hosts whose keys differ are building different things)."""
        ...


class LocalMetadata:
    """Every process lists and reads metadata itself."""

    def share(self, compute: Callable[[], T], *, what: str, key: str) -> T:
        """``compute()``, here."""
        return compute()

    def __repr__(self) -> str:
        return "LocalMetadata()"


_default: list[MetadataSharing] = [LocalMetadata()]


def default_sharing() -> MetadataSharing:
    """The sharing new sources use unless told otherwise."""
    return _default[0]


def set_default_sharing(sharing: MetadataSharing) -> None:
    """Make ``sharing`` the default of sources built from now on."""
    if not isinstance(sharing, MetadataSharing):
        raise TypeError(f"sharing must be a MetadataSharing, got {sharing!r}")
    _default[0] = sharing
