"""Every error class of the library, in one place.

``SourceError`` and its subclasses are raised for bad input and failed I/O: each names the file
(and row or line) and what to do. ``HostMismatchError`` is a ``SourceError`` raised on every
host when hosts disagree; ``LoaderStateError`` and ``CollateError`` are ``ValueError``s for a
state that does not belong to the pipeline and rows that cannot form a batch.
"""

from __future__ import annotations

import re

# Our sentence's period after a quoted error text that already ends in one: "x.." or "x. .",
# but not an ellipsis ("x...") or a relative path ("'../a'", "'a/..'").
_DOUBLED_PERIOD = re.compile(r"(?<![./\\\s])\.\s*\.(?=\s|$)")


class SourceError(Exception):
    """A problem with a source's data or storage, naming the file and what to do about it."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        row: int | None = None,
        hint: str | None = None,
    ):
        self.path = path
        self.row = row
        self.hint = hint
        parts = [message.strip()]
        if hint:
            parts.append(hint.strip())
        super().__init__(_DOUBLED_PERIOD.sub(".", " ".join(parts)))


class ShardNotFoundError(SourceError, FileNotFoundError):
    """A file, bucket or shard name that does not exist."""


class CommitNotFoundError(ShardNotFoundError):
    """A Hub dataset's commit that a source, a cached resolution or a loader state is pinned to
    no longer exists (history squashed or rewritten, the revision deleted): its files cannot be
    read at that commit."""


class NoFilesMatchedError(SourceError, FileNotFoundError):
    """A glob pattern or directory that matched no file."""


class ListingError(SourceError):
    """A listing of the store failed; the file list is unknown, so nothing is read."""


class AccessDeniedError(SourceError, PermissionError):
    """The store refused the credentials (wrong, expired or missing)."""


class OfflineError(SourceError):
    """The Hub cannot be asked (``HF_HUB_OFFLINE=1``, or no network) and what is needed is not
    cached."""


class CorruptShardError(SourceError):
    """A file that cannot be decoded: empty, truncated or not of the declared format."""


class SchemaMismatchError(SourceError):
    """Two shards of one source disagree on their columns or types."""


class MissingColumnError(SourceError, KeyError):
    """A projected column that the shard does not have."""

    __str__ = Exception.__str__


class MalformedRowError(SourceError):
    """A row (a JSON line, say) that cannot be parsed."""


class RowOutOfRangeError(SourceError, IndexError):
    """A row index past the end of a shard."""


class RetriesExhaustedError(SourceError):
    """A transient fault that persisted through every retry of the policy."""


class ShardChangedError(SourceError):
    """A shard rewritten or replaced after its metadata was read: reading on would give the new
    file's bytes through the old footer or line index."""


class UnsupportedFormatError(SourceError, NotImplementedError):
    """Data in a format the sources cannot read as shards (a Hub dataset of CSV or Arrow files
    without a Parquet export)."""


class NotResumableError(SourceError):
    """A stream whose position cannot be saved, or a saved state that cannot be restored."""


class HostMismatchError(SourceError):
    """Hosts that disagree (on the files, the pipeline, the batch split): raised on every host."""


class LoaderStateError(ValueError):
    """A saved state that does not belong to this pipeline, or is not a loader state at all."""


class CollateError(ValueError):
    """Rows that cannot be stacked into one batch; the message names the field and the fix."""


class NotSupportedYetError(NotImplementedError):
    """A config field whose feature has not landed: raised instead of ignoring the field."""


class OutputExistsError(SourceError, FileExistsError):
    """An output (a materialization, a saved pipeline) that already exists where one is to be
    written: refused unless ``overwrite=True``."""


class ManifestMismatchError(SourceError, ValueError):
    """A materialized output (or a run in progress there) written by another pipeline or with
    other settings than the one reading or resuming it."""


class CacheRebuiltWarning(UserWarning):
    """A cache entry that failed its checks (a shard deleted, truncated or altered) or
    expired, and is made again."""


def error_at(
    error: BaseException, shard: str, row: int, last_row: int | None = None
) -> SourceError:
    """``error`` raised by a transform, as a ``SourceError`` naming the shard and row (or the
    rows ``row..last_row`` when the failing one is not known)."""
    where = f"row {row}" if last_row is None else f"rows {row}..{last_row}"
    if isinstance(error, SourceError):
        message = f"{shard}, {where}: {error}"
        try:
            wrapped = type(error)(message, path=shard, row=row)
        except TypeError:
            wrapped = MalformedRowError(message, path=shard, row=row)
    else:
        wrapped = MalformedRowError(
            f"{shard}, {where}: a transform failed: {type(error).__name__}: {error}",
            path=shard,
            row=row,
        )
    wrapped.__cause__ = error
    return wrapped
