"""RetryPolicy, the transient/permanent classification, and the resumable row stream."""

from __future__ import annotations

import email.utils
import errno
import random
import time
import urllib.error
from typing import ClassVar

import aiohttp
import botocore.exceptions
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easydata_grain import NO_RETRY, IOStats, RetriesExhaustedError, RetryPolicy
from easydata_grain.io.remote_file import RemoteFile
from easydata_grain.io.resumable_rows import resumable_rows
from easydata_grain.io.retry import is_transient, retry_after


def _client_error(status: int, code: str) -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject"
    )


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError(errno.ECONNRESET, "reset"),
        TimeoutError("read timed out"),
        aiohttp.ClientPayloadError("Response payload is not completed"),
        aiohttp.ServerDisconnectedError(),
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"),
        _client_error(503, "SlowDown"),
        _client_error(500, "InternalError"),
        OSError("503 Service Unavailable"),
    ],
    ids=type,
)
def test_transient_faults(exc: Exception) -> None:
    assert is_transient(exc)
    wrapped = RuntimeError("while reading")
    wrapped.__cause__ = exc
    assert is_transient(wrapped)


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError("gone"),
        PermissionError("denied"),
        _client_error(403, "AccessDenied"),
        _client_error(404, "NoSuchKey"),
        botocore.exceptions.NoCredentialsError(),
        ValueError("bad value"),
    ],
    ids=type,
)
def test_permanent_faults(exc: Exception) -> None:
    assert not is_transient(exc)


def test_policy_validation_and_backoff() -> None:
    with pytest.raises(TypeError, match="max_retries"):
        RetryPolicy(max_retries=2.5)
    with pytest.raises(TypeError, match="unexpected keyword"):
        RetryPolicy(retries=3)
    with pytest.raises(ValueError, match="jitter"):
        RetryPolicy(jitter=2)
    with pytest.raises(TypeError):
        RetryPolicy(max_retries=True)
    policy = RetryPolicy(initial_backoff=1.0, multiplier=2.0, max_backoff=5.0, jitter=0.5)
    for retry, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        delays = [policy.delay(retry) for _ in range(200)]
        assert all(base * 0.5 <= d <= base for d in delays)
        assert max(delays) - min(delays) > 0.1 * base


def test_call_retries_transient_only() -> None:
    policy = RetryPolicy(max_retries=3, initial_backoff=0.0)
    attempts = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionResetError("reset")
        return "ok"

    assert policy.call(flaky) == "ok" and len(attempts) == 3
    with pytest.raises(FileNotFoundError):
        policy.call(lambda: (_ for _ in ()).throw(FileNotFoundError("x")))
    with pytest.raises(ConnectionResetError):
        NO_RETRY.call(lambda: (_ for _ in ()).throw(ConnectionResetError("x")))


@settings(max_examples=60, deadline=None)
@given(
    num_rows=st.integers(0, 200),
    chunk=st.integers(1, 17),
    start=st.integers(0, 200),
    fault_rate=st.floats(0, 0.5),
    seed=st.integers(0, 1000),
)
def test_resumable_rows_continue_at_the_same_row(
    num_rows: int, chunk: int, start: int, fault_rate: float, seed: int
) -> None:
    start = min(start, num_rows)
    faults = random.Random(seed)
    opens = []

    def open_at(row: int):
        opens.append(row)
        for first in range(row, num_rows, chunk):
            if faults.random() < fault_rate:
                raise ConnectionResetError(errno.ECONNRESET, "injected")
            yield list(range(first, min(first + chunk, num_rows)))

    stats = IOStats()
    policy = RetryPolicy(max_retries=50, initial_backoff=0.0)
    rows = list(resumable_rows(open_at, start, policy=policy, stats=stats, path="p"))
    assert rows == list(range(start, num_rows))
    assert stats.retries == len(opens) - 1
    assert all(row >= start for row in opens)


def test_resumable_rows_give_up_naming_path_and_row() -> None:
    def open_at(row: int):
        yield [row]
        raise ConnectionResetError(errno.ECONNRESET, "injected")

    stream = resumable_rows(open_at, 5, policy=NO_RETRY, stats=IOStats(), path="s3://b/x.parquet")
    assert next(stream) == 5
    with pytest.raises(
        RetriesExhaustedError, match=r"'s3://b/x.parquet' failed at row 6 after 0 retries"
    ):
        next(stream)


def test_resumable_rows_raise_permanent_faults_at_once() -> None:
    calls = []

    def open_at(row: int):
        calls.append(row)
        raise PermissionError("denied")
        yield []

    with pytest.raises(PermissionError):
        list(resumable_rows(open_at, 0, policy=RetryPolicy(), stats=IOStats(), path="p"))
    assert calls == [0]


class _DeadObject:
    """An object on a store whose every read fails with a dropped connection, counting them."""

    reads: ClassVar[list[int]] = []

    def seek(self, position: int) -> int:
        return position

    def read(self, size: int) -> bytes:
        self.reads.append(size)
        raise ConnectionResetError(errno.ECONNRESET, "injected")

    def close(self) -> None:
        """Nothing to release."""


@pytest.mark.parametrize("max_retries", [0, 2])
def test_a_read_that_gave_up_is_not_retried_again_by_its_row_stream(max_retries: int) -> None:
    """RemoteFile retries a read; the row stream around it reports the fault, with the count
    of attempts really made, instead of re-opening for another round of them."""
    _DeadObject.reads.clear()
    policy = RetryPolicy(max_retries=max_retries, initial_backoff=0.0)
    stats = IOStats()

    def open_at(row: int):
        yield [RemoteFile(_DeadObject, 100, policy=policy, stats=stats).read(10)]

    attempts = f"{max_retries + 1} attempt{'s' if max_retries else ''}"
    with pytest.raises(
        RetriesExhaustedError,
        match=rf"'s3://b/x.jsonl' failed at row 0 after {max_retries} retries \({attempts}\)",
    ):
        list(resumable_rows(open_at, 0, policy=policy, stats=stats, path="s3://b/x.jsonl"))
    assert len(_DeadObject.reads) == max_retries + 1
    assert stats.retries == max_retries


def test_call_counts_retries() -> None:
    stats = IOStats()
    faults = iter([TimeoutError("stalled"), ConnectionResetError("reset")])

    def flaky() -> str:
        fault = next(faults, None)
        if fault is not None:
            raise fault
        return "ok"

    assert RetryPolicy(initial_backoff=0.0).call(flaky, stats=stats) == "ok"
    assert stats.retries == 2


# -- Retry-After ---------------------------------------------------------------------------------


def _too_many_requests(retry_after: str | None, style: str = "urllib") -> Exception:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    if style == "botocore":
        return botocore.exceptions.ClientError(
            {
                "Error": {"Code": "SlowDown"},
                "ResponseMetadata": {
                    "HTTPStatusCode": 503,
                    "HTTPHeaders": {k.lower(): v for k, v in headers.items()},
                },
            },
            "GetObject",
        )
    if style == "aiohttp":
        return aiohttp.ClientResponseError(None, (), status=429, headers=headers)  # type: ignore[arg-type]
    return urllib.error.HTTPError("http://hub/x", 429, "Too Many Requests", headers, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("style", ["urllib", "aiohttp", "botocore"])
def test_retry_after_in_seconds_is_read_from_each_client_style(style: str) -> None:
    fault = _too_many_requests("7", style)
    assert retry_after(fault) == 7.0
    wrapped = OSError("read failed")
    wrapped.__cause__ = fault  # as fsspec or pyarrow wrap it
    assert retry_after(wrapped) == 7.0
    assert retry_after(_too_many_requests(None, style)) is None


def test_retry_after_as_an_http_date() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 12, usegmt=True)
    assert retry_after(_too_many_requests(date), now=now) == pytest.approx(12.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert retry_after(_too_many_requests(past), now=now) == 0.0
    assert retry_after(_too_many_requests("soon"), now=now) is None  # neither: backoff


def test_retry_after_replaces_the_backoff_up_to_max_retry_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    policy = RetryPolicy(max_retries=5, initial_backoff=0.01, jitter=0.0, max_retry_after=4.0)
    faults = iter([_too_many_requests("2.5"), _too_many_requests("90"), _too_many_requests(None)])

    def flaky() -> str:
        fault = next(faults, None)
        if fault is not None:
            raise fault
        return "ok"

    stats = IOStats()
    assert policy.call(flaky, stats=stats) == "ok"
    assert slept == [2.5, 4.0, pytest.approx(0.04)]  # asked, capped, then the computed backoff
    assert stats.retries == 3
    assert policy.wait(1, _too_many_requests("1")) == 1.0
    with pytest.raises(ValueError):
        RetryPolicy(max_retry_after=-1)
