"""Sanity checks of the test infrastructure: emulators, fault proxy, and raw client errors.

The expected exceptions below are what s3fs/gcsfs/adlfs raise with their internal retries
turned off (``StoreEndpoint.filesystem(internal_retries=False)``); see ``ops/BACKENDS.md``.
If a dependency upgrade changes them, these tests say so before the library misclassifies.
"""

from __future__ import annotations

import errno
import http.client
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import botocore.exceptions
import fsspec.exceptions
import gcsfs.retry
import pytest
from azure.core import exceptions as azure_errors

from ops.emulators import StoreEndpoint
from ops.fault_proxy import FaultProxy

DATA = bytes(range(256)) * 256  # 64 KiB

# (store kind, fault kind) -> (exception type, GET attempts seen by the proxy)
EXPECTED: dict[tuple[str, str], tuple[type[BaseException], int]] = {
    ("s3", "500"): (OSError, 1),
    ("s3", "503"): (OSError, 1),
    ("s3", "drop"): (botocore.exceptions.ConnectionClosedError, 2),
    ("s3", "truncate"): (aiohttp.ClientPayloadError, 1),
    ("s3", "stall"): (botocore.exceptions.ReadTimeoutError, 1),
    ("gcs", "500"): (gcsfs.retry.HttpError, 1),
    ("gcs", "503"): (gcsfs.retry.HttpError, 1),
    ("gcs", "drop"): (aiohttp.ServerDisconnectedError, 2),
    ("gcs", "truncate"): (aiohttp.ClientPayloadError, 1),
    ("gcs", "stall"): (fsspec.exceptions.FSTimeoutError, 1),
    ("azure", "500"): (azure_errors.HttpResponseError, 1),
    ("azure", "503"): (azure_errors.HttpResponseError, 1),
    ("azure", "drop"): (azure_errors.ServiceRequestError, 2),
    ("azure", "truncate"): (azure_errors.HttpResponseError, 3),
    ("azure", "stall"): (azure_errors.ServiceResponseTimeoutError, 1),
}
# A substring of the object-download request only (gcsfs also GETs metadata, maybe late).
DOWNLOAD_MARK = {"s3": "/x.bin", "gcs": "alt=media", "azure": "/x.bin"}

ProxyFactory = Callable[[StoreEndpoint], FaultProxy]
RawProxy = tuple[FaultProxy, http.client.HTTPConnection]


def _http_status(exc: BaseException) -> int:
    """The HTTP status in a raw error: s3fs maps it to an errno, gcsfs/Azure keep it."""
    if isinstance(exc, OSError):
        return {errno.EREMOTEIO: 500, errno.EBUSY: 503}[exc.errno]
    return getattr(exc, "code", None) or exc.status_code  # type: ignore[attr-defined]


class _StaticHandler(BaseHTTPRequestHandler):
    """Serves DATA (with Range) on GET/HEAD, chunked under /chunked; PUT echoes the body size."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request log."""

    def do_GET(self) -> None:
        body, status = DATA, 200
        if byte_range := self.headers.get("Range"):
            start, end = (int(x) for x in byte_range.removeprefix("bytes=").split("-"))
            body, status = DATA[start : end + 1], 206
        self.send_response(status)
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 10_000):
                part = body[i : i + 10_000]
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def do_PUT(self) -> None:
        size = len(self.rfile.read(int(self.headers["Content-Length"])))
        reply = f"{size} {self.headers.get('Transfer-Encoding')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


@pytest.fixture
def raw_proxy() -> Iterator[RawProxy]:
    """A FaultProxy in front of a tiny static HTTP server, and a keep-alive client to it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StaticHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with FaultProxy(f"http://127.0.0.1:{server.server_address[1]}") as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]), timeout=10)
        yield proxy, conn
        conn.close()
    server.shutdown()
    server.server_close()


def _get(conn: http.client.HTTPConnection, path: str = "/x", **headers: str) -> tuple[int, bytes]:
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_round_trip(store: StoreEndpoint, tmp_path: Path) -> None:
    root = store.new_bucket()
    local = tmp_path / "local.bin"
    local.write_bytes(DATA[:1000])
    store.upload(DATA, f"{root}/d/a.bin")
    store.upload(local, f"{root}/d/b.bin")

    fs = store.filesystem()
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{root}/d")) == ["a.bin", "b.bin"]
    assert fs.info(f"{root}/d/a.bin")["size"] == len(DATA)
    assert fs.cat_file(f"{root}/d/a.bin", start=1000, end=1100) == DATA[1000:1100]
    assert fs.cat_file(f"{root}/d/b.bin") == DATA[:1000]
    with fs.open(f"{root}/d/a.bin", "rb", cache_type="none") as f:
        f.seek(40_000)
        assert f.read(10) == DATA[40_000:40_010]
    assert len(fs.glob(f"{root}/d/*.bin")) == 2


def test_proxy_forwards_unchanged(store: StoreEndpoint, fault_proxy: ProxyFactory) -> None:
    proxy = fault_proxy(store)
    fs = store.filesystem(proxy.url)
    root = store.new_bucket()
    fs.pipe_file(f"{root}/x.bin", DATA)  # request bodies go through the proxy too
    fs.invalidate_cache()

    assert fs.info(f"{root}/x.bin")["size"] == len(DATA)  # HEAD on S3/Azure
    assert fs.ls(root) == [f"{root}/x.bin".split("://", 1)[1]]
    proxy.reset_counters()
    assert fs.cat_file(f"{root}/x.bin") == DATA
    full = proxy.body_bytes_sent
    proxy.reset_counters()
    assert fs.cat_file(f"{root}/x.bin", start=5000, end=5100) == DATA[5000:5100]
    ranged = proxy.body_bytes_sent
    assert full >= len(DATA)
    assert 100 <= ranged < len(DATA) // 10
    assert proxy.requests.keys() == {"GET"}
    assert proxy.fault_count == 0


@pytest.mark.parametrize("fault", ["500", "503", "drop", "truncate", "stall"])
def test_fault_is_visible_to_plain_fsspec_read(
    store: StoreEndpoint, fault_proxy: ProxyFactory, fault: str
) -> None:
    root = store.new_bucket()
    store.upload(DATA, f"{root}/x.bin")
    proxy = fault_proxy(store)
    fs = store.filesystem(proxy.url, internal_retries=False, connect_timeout=1.0, read_timeout=1.0)
    expected_type, attempts = EXPECTED[(store.kind, fault)]
    f = fs.open(f"{root}/x.bin", "rb", cache_type="none")
    rule = proxy.inject(
        fault, methods="GET", path_contains=DOWNLOAD_MARK[store.kind], stall_seconds=3.0
    )

    with pytest.raises(expected_type) as caught:
        f.seek(1000)
        f.read(500)
    assert rule.matched == rule.injected == attempts

    with pytest.raises(expected_type):
        fs.cat_file(f"{root}/x.bin", start=1000, end=1500)
    assert rule.matched == rule.injected == 2 * attempts

    if fault in ("500", "503"):
        assert _http_status(caught.value) == int(fault)
    if (store.kind, fault) == ("azure", "truncate"):
        assert isinstance(caught.value.__cause__, azure_errors.IncompleteReadError)

    proxy.clear()
    assert fs.cat_file(f"{root}/x.bin", start=1000, end=1500) == DATA[1000:1500]


def test_every_limit_method_and_path_filters(raw_proxy: RawProxy) -> None:
    proxy, conn = raw_proxy
    rule = proxy.inject("503", every=2, limit=2, methods=["GET"], path_contains="x.bin")
    assert [_get(conn, "/x.bin")[0] for _ in range(6)] == [200, 503, 200, 503, 200, 200]
    assert (rule.matched, rule.injected) == (6, 2)

    assert _get(conn, "/other")[0] == 200  # path filter: not matched
    conn.request("HEAD", "/x.bin")  # method filter: not matched
    resp = conn.getresponse()
    assert (resp.status, resp.getheader("Content-Length"), resp.read()) == (200, "65536", b"")
    assert rule.matched == 6
    assert proxy.requests == {"GET": 7, "HEAD": 1}
    assert proxy.faults == {"503": 2}
    proxy.reset_counters()
    assert (proxy.requests, proxy.faults, proxy.body_bytes_sent) == ({}, {}, 0)


def test_forwarding_ranges_chunked_bodies_and_head_errors(raw_proxy: RawProxy) -> None:
    proxy, conn = raw_proxy
    assert _get(conn, Range="bytes=10-19") == (206, DATA[10:20])
    assert _get(conn, "/chunked") == (200, DATA)  # re-sent with a Content-Length
    conn.request("PUT", "/up", body=iter([b"a" * 1000, b"b" * 500]), encode_chunked=True)
    assert conn.getresponse().read() == b"1500 None"  # de-chunked for the upstream
    assert proxy.body_bytes_sent == 10 + len(DATA) + len(b"1500 None")

    proxy.inject("500", methods="HEAD", limit=1)
    conn.request("HEAD", "/x")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (500, b"")
    assert _get(conn, Range="bytes=0-3") == (206, DATA[:4])  # same connection, no stray body


def test_truncate_drop_and_stall_on_raw_http(raw_proxy: RawProxy) -> None:
    proxy, conn = raw_proxy
    proxy.inject("truncate", limit=1)
    conn.request("GET", "/x")
    resp = conn.getresponse()
    assert resp.getheader("Content-Length") == str(len(DATA))
    with pytest.raises(http.client.IncompleteRead) as caught:
        resp.read()
    assert len(caught.value.partial) == len(DATA) // 2 == proxy.body_bytes_sent
    conn.close()

    proxy.clear()
    proxy.inject("drop", limit=1)
    with pytest.raises(http.client.RemoteDisconnected):
        _get(conn)
    conn.close()

    proxy.clear()
    proxy.inject("stall", stall_seconds=0.3, after_stall="drop", limit=1)
    with pytest.raises(http.client.RemoteDisconnected):
        _get(conn)
    conn.close()
    proxy.inject("stall", stall_seconds=0.3, limit=1)
    assert _get(conn) == (200, DATA)  # stalled, then answered
    assert proxy.faults == {"truncate": 1, "drop": 1, "stall": 2}


def test_s3_multi_level_listing_swallows_errors(
    s3_store: StoreEndpoint, fault_proxy: ProxyFactory
) -> None:
    """Documents the fsspec trap: walk-based listings turn an S3 503 into a short result."""
    proxy = fault_proxy(s3_store)
    root = s3_store.new_bucket()
    for name in ("d/a.bin", "d/b.bin", "e/c.bin"):
        s3_store.upload(b"x", f"{root}/{name}")
    fs = s3_store.filesystem(proxy.url, internal_retries=False)
    proxy.inject("503", path_contains="prefix=e%2F")

    assert len(fs.glob(f"{root}/*/*.bin")) == 2  # 3 exist; no exception
    assert len(fs.find(root, maxdepth=2)) == 2
    with pytest.raises(OSError):
        fs.ls(f"{root}/e")
    assert proxy.fault_count == 3


def test_wrong_credentials_are_rejected(store: StoreEndpoint) -> None:
    if store.kind == "gcs":
        with pytest.raises(ValueError, match="does not check credentials"):
            store.bad_credentials_options()
        return
    root = store.new_bucket()
    store.upload(b"x", f"{root}/x.bin")
    fs = store.filesystem(internal_retries=False, **store.bad_credentials_options())
    with pytest.raises((PermissionError, azure_errors.HttpResponseError)) as caught:
        fs.cat_file(f"{root}/x.bin")
    assert getattr(caught.value, "status_code", 403) == 403
