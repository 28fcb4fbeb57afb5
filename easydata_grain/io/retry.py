"""Retry policy: which faults are transient, backoff with jitter, and the one attempt loop."""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import errno
import http.client
import random
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from easydata_grain.io.errors import (
    AccessDeniedError,
    RetriesExhaustedError,
    ShardNotFoundError,
    SourceError,
)
from easydata_grain.io.stats import IOStats

T = TypeVar("T")

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_ERRNO = frozenset(
    {errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT, errno.ECONNREFUSED}
)
# Exception class names of the object-store clients that mean "try again" (matched by name so
# that this module does not import aiohttp, botocore, google or azure).
_TRANSIENT_NAMES = frozenset(
    {
        "ClientPayloadError",
        "ServerDisconnectedError",
        "ClientConnectionError",
        "ClientConnectorError",
        "ClientOSError",
        "ServerTimeoutError",
        "ContentLengthError",
        "TransferEncodingError",
        "FSTimeoutError",
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "ResponseStreamingError",
        "IncompleteReadError",
        "ServiceRequestError",
        "ServiceResponseError",
        "IncompleteRead",
        "RemoteDisconnected",
        "ChunkedEncodingError",
        "ProtocolError",
    }
)
_DENIED_NAMES = frozenset(
    {"NoCredentialsError", "ClientAuthenticationError", "PartialCredentialsError"}
)


def _status_of(exc: BaseException) -> int | None:
    """The HTTP status an exception carries, if any (boto, gcsfs, azure and aiohttp styles)."""
    for attr in ("status_code", "status", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        value = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(value, int):
            return value
    return None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_transient(exc: BaseException) -> bool:
    """Whether a fault is worth retrying: dropped connections, timeouts, 5xx, 429, truncated bodies.

    Not found, access denied, bad credentials, a changed object (412) and decoding errors are
    permanent. The exception's cause chain is inspected, so a fault wrapped by fsspec or pyarrow
    is still recognised.
    """
    if is_precondition_failed(exc):  # its wrapper's text may hold a 5xx-like number
        return False
    for cause in _causes(exc):
        name = type(cause).__name__
        if name in _DENIED_NAMES or isinstance(
            cause, FileNotFoundError | PermissionError | IsADirectoryError
        ):
            return False
        status = _status_of(cause)
        if status is not None:
            return status in _TRANSIENT_STATUS
        if name in _TRANSIENT_NAMES or isinstance(
            cause,
            ConnectionError | TimeoutError | asyncio.TimeoutError | http.client.IncompleteRead,
        ):
            return True
        if isinstance(cause, OSError) and cause.errno in _TRANSIENT_ERRNO:
            return True
        if isinstance(cause, OSError) and any(
            marker in str(cause)
            for marker in ("503", "500", "502", "504", "SlowDown", "Service Unavailable")
        ):
            return True
    return False


def _headers_of(exc: BaseException) -> Any:
    """The response headers an exception carries, if any: ``urllib.error.HTTPError.headers``,
    aiohttp's ``headers``, ``response.headers`` (huggingface_hub, requests, httpx), botocore's
    ``response["ResponseMetadata"]["HTTPHeaders"]``."""
    headers = getattr(exc, "headers", None)
    if headers is not None and hasattr(headers, "get"):
        return headers
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPHeaders")
    headers = getattr(response, "headers", None)
    return headers if headers is not None and hasattr(headers, "get") else None


def _seconds_from(value: Any, now: float) -> float | None:
    """A ``Retry-After`` value in seconds: delay-seconds (``"120"``) or an HTTP date (then the
    time left until it, at least 0); None when it is neither."""
    text = str(value).strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is in GMT
            return None
        return max(0.0, when.timestamp() - now)
    return seconds if seconds >= 0 and seconds == seconds else None  # not negative, not NaN


def retry_after(exc: BaseException, *, now: float | None = None) -> float | None:
    """The seconds a failed response asked the client to wait (its ``Retry-After`` header, as
    sent with 429 Too Many Requests or 503), found along the exception's cause chain; None when
    no response carries one."""
    now = time.time() if now is None else now
    for cause in _causes(exc):
        headers = _headers_of(cause)
        if headers is None:
            continue
        value = headers.get("Retry-After")
        if value is None:
            value = headers.get("retry-after")
        if value is not None:
            seconds = _seconds_from(value, now)
            if seconds is not None:
                return seconds
    return None


def is_access_denied(exc: BaseException) -> bool:
    """Whether the store refused the credentials (401/403, PermissionError, no credentials)."""
    return any(
        isinstance(cause, PermissionError)
        or type(cause).__name__ in _DENIED_NAMES
        or _status_of(cause) in (401, 403)
        for cause in _causes(exc)
    )


def is_not_found(exc: BaseException) -> bool:
    """Whether the object or bucket does not exist (FileNotFoundError, 404)."""
    return any(
        isinstance(cause, FileNotFoundError) or _status_of(cause) == 404 for cause in _causes(exc)
    )


def is_precondition_failed(exc: BaseException) -> bool:
    """Whether a conditional request was refused because the object changed (HTTP 412)."""
    return any(_status_of(cause) == 412 for cause in _causes(exc))


def is_storage_fault(exc: BaseException) -> bool:
    """Whether an error came from the store (transient, denied, not found), not from the data."""
    return is_transient(exc) or is_access_denied(exc) or is_not_found(exc)


def attempts_text(retries: int, *, transient: bool) -> str:
    """How often an operation was tried, for an error message: ``after 3 retries (4 attempts)``
    when a transient fault outlasted the retries, ``after 1 attempt (not retried: permanent)``
    when the fault was permanent."""
    attempts = f"{retries + 1} attempt{'s' if retries else ''}"
    retried = f"{retries} retr{'y' if retries == 1 else 'ies'}"
    if transient:
        return f"after {retried} ({attempts})"
    if retries:
        return f"after {attempts} ({retried}, then a permanent fault: not retried)"
    return f"after {attempts} (not retried: permanent)"


class _RetriesExhausted(Exception):
    """A transient fault that outlasted the retries of the attempt loop that raised it (from the
    fault): a read inside a larger operation gave up, and the operation reports it (see
    ``storage_error``) instead of retrying what was already retried."""

    def __init__(self, fault: BaseException, retries: int):
        super().__init__(
            f"{attempts_text(retries, transient=True)}: {type(fault).__name__}: {fault}"
        )
        self.fault = fault
        self.retries = retries


def storage_error(
    fault: BaseException,
    path: str,
    row: int | None = None,
    *,
    retries: int,
    what: str = "Reading",
) -> SourceError | None:
    """The error naming ``path`` (and ``row``) for a storage fault that its attempt loop gave up
    on after ``retries`` retries: access denied, not found, or a transient fault that outlasted
    the retries (a ``_RetriesExhausted`` states its own fault and count). None for other errors
    (bad data, a ``SourceError`` already), which are raised as they are."""
    if isinstance(fault, SourceError):
        return None
    if isinstance(fault, _RetriesExhausted):
        fault, retries = fault.fault, fault.retries
    detail = f"{type(fault).__name__}: {fault}"
    if is_access_denied(fault):
        return AccessDeniedError(
            f"Access to {path!r} was denied ({detail}).",
            path=path,
            row=row,
            hint="Check the credentials in storage_options (key, secret, token, connection string).",
        )
    if is_not_found(fault):
        return ShardNotFoundError(
            f"{path!r} does not exist ({detail}).",
            path=path,
            row=row,
            hint="Check the path and the bucket; a file listed earlier may have been deleted.",
        )
    if is_transient(fault):
        at = "" if row is None else f" at row {row}"
        return RetriesExhaustedError(
            f"{what} {path!r} failed{at} {attempts_text(retries, transient=True)}: {detail}.",
            path=path,
            row=row,
            hint="The store kept failing; check the network or raise RetryPolicy.max_retries.",
        )
    return None


def _retryable(fault: BaseException) -> bool:
    """A transient fault that is not yet a verdict (a ``SourceError``, or ``_RetriesExhausted``
    from a loop that already retried it)."""
    return not isinstance(fault, SourceError | _RetriesExhausted) and is_transient(fault)


class Attempts:
    """The attempts of one operation under a ``RetryPolicy``: the library's one retry loop.

    After a failed attempt, ``retry(fault)`` either counts a retry (``stats.retries``), waits
    (the policy's backoff, or what the failed response's ``Retry-After`` asked for, up to
    ``policy.max_retry_after``) and says to try again, or says to give up: on a permanent fault, on a
    ``SourceError`` or a fault an inner loop gave up on (``_RetriesExhausted``: never retried
    twice), or when this fault episode has had ``max_retries`` retries. ``progress()`` (a row
    delivered) starts a new episode. Requests are counted by the code that sends them, failed
    ones included, so ``stats.requests`` counts every attempt's requests.
    """

    def __init__(self, policy: RetryPolicy, stats: IOStats | None = None):
        self.policy = policy
        self.stats = stats
        self.retries = 0
        """Retries made in the current fault episode."""

    def progress(self) -> None:
        """Progress was made: the next fault has all the policy's retries again."""
        self.retries = 0

    def retry(self, fault: BaseException) -> bool:
        """Whether to attempt again after ``fault`` (having counted the retry and waited)."""
        if not _retryable(fault) or self.retries >= self.policy.max_retries:
            return False
        self.retries += 1
        if self.stats is not None:
            self.stats.add(retries=1)
        time.sleep(self.policy.wait(self.retries, fault))
        return True

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()``, attempted again while ``retry`` says so; the last fault is raised as it is."""
        while True:
            try:
                return fn()
            except Exception as exc:
                if not self.retry(exc):
                    raise

    def exhausted(self, fault: BaseException) -> _RetriesExhausted | None:
        """For a read inside a larger operation, once ``retry(fault)`` said no: the
        ``_RetriesExhausted`` to raise from a transient fault that outlasted the retries (so that
        the operation does not retry it again); None for other faults, raised as they are."""
        if not _retryable(fault):
            return None
        return _RetriesExhausted(fault, self.retries)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How transient faults are retried: up to ``max_retries`` times with jittered backoff.

    The delay before retry ``n`` (1-based) is ``min(max_backoff, initial_backoff *
    multiplier**(n-1))``, scaled by a random factor in ``[1 - jitter, 1]``. A retry count is
    per fault episode: progress (a row read) starts the count again. ``connect_timeout`` and
    ``read_timeout`` (seconds) bound each connection and each wait on the socket of a remote
    store; a stalled read then fails as a transient fault and is retried.

    A failed response that says how long to wait (``Retry-After``, in seconds or as an HTTP
    date, as the Hub and other stores send with 429 Too Many Requests or 503) is obeyed instead
    of the computed backoff, up to ``max_retry_after`` seconds (a longer wait is cut to it).
    """

    max_retries: int = 3
    initial_backoff: float = 0.2
    max_backoff: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    max_retry_after: float = 60.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            expected = int if field.type in ("int", int) else (int, float)
            if isinstance(value, bool) or not isinstance(value, expected):
                raise TypeError(f"RetryPolicy.{field.name} must be {field.type}, got {value!r}")
            if value < 0:
                raise ValueError(f"RetryPolicy.{field.name} must be >= 0, got {value!r}")
        if self.jitter > 1:
            raise ValueError(f"RetryPolicy.jitter must be in [0, 1], got {self.jitter!r}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("RetryPolicy timeouts must be > 0")
        if self.multiplier < 1:
            raise ValueError(f"RetryPolicy.multiplier must be >= 1, got {self.multiplier!r}")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return base * (1.0 - self.jitter * random.random())

    def wait(self, retry: int, fault: BaseException | None = None) -> float:
        """Seconds to wait before retry number ``retry`` after ``fault``: what its response's
        ``Retry-After`` asked for (at most ``max_retry_after``), else ``delay(retry)``."""
        asked = None if fault is None else retry_after(fault)
        if asked is not None:
            return min(asked, self.max_retry_after)
        return self.delay(retry)

    def attempts(self, stats: IOStats | None = None) -> Attempts:
        """A new attempt loop under this policy, counting its retries in ``stats``."""
        return Attempts(self, stats)

    def call(self, fn: Callable[[], T], *, stats: IOStats | None = None) -> T:
        """Run ``fn``, retrying transient faults; the last fault is re-raised when retries run out."""
        return self.attempts(stats).call(fn)


NO_RETRY = RetryPolicy(max_retries=0)
"""A policy that never retries: every fault surfaces at once."""
