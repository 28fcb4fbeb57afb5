"""A loopback reverse proxy that forwards HTTP faithfully and injects faults on demand.

Put it in front of an object-store emulator and point the client's endpoint at
``proxy.url``. Faults are chosen per request by rules added with :meth:`FaultProxy.inject`:

- ``"500"`` / ``"503"``: answer with that status without contacting the upstream;
- ``"429"``: answer 429 Too Many Requests without contacting the upstream, with a
  ``Retry-After`` header when the rule has ``retry_after`` (seconds, or an HTTP date as text);
- ``"drop"``: read the request, then close the connection without answering;
- ``"truncate"``: send the upstream status and full ``Content-Length`` but only half the
  body, then close (never applies to HEAD or to an empty body);
- ``"stall"``: wait ``stall_seconds``, then answer normally (``after_stall="answer"``) or
  close without answering (``after_stall="drop"``).

Every request is counted (``requests``, by method) and logged in order with the fault it got
and when it arrived (``log``), so tests can compare a client's own counts with what reached the
store, and measure the wait between a fault and the retry.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

FaultKind = Literal["429", "500", "503", "drop", "truncate", "stall"]
FAULT_KINDS: tuple[str, ...] = ("429", "500", "503", "drop", "truncate", "stall")

# Hop-by-hop headers (RFC 9110 section 7.6.1) are never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_NO_BODY_STATUSES = frozenset({204, 304})


@dataclass
class FaultRule:
    """One fault rule: every ``every``-th matching request gets ``kind`` (at most ``limit``)."""

    kind: FaultKind
    every: int = 1
    methods: frozenset[str] | None = None
    path_contains: str | None = None
    limit: int | None = None
    stall_seconds: float = 5.0
    after_stall: Literal["answer", "drop"] = "answer"
    retry_after: float | str | None = None
    matched: int = 0
    injected: int = 0

    def matches(self, method: str, path: str) -> bool:
        """Whether a request with this method and path is subject to the rule."""
        if self.kind == "truncate" and method == "HEAD":
            return False
        if self.methods is not None and method not in self.methods:
            return False
        return self.path_contains is None or self.path_contains in path


@dataclass
class LoggedRequest:
    """One request the proxy received, and the fault it got (None: forwarded unchanged)."""

    method: str
    path: str
    fault: FaultKind | None = None
    time: float = field(default_factory=time.monotonic)
    """When it arrived (``time.monotonic()``)."""


@dataclass
class _Counters:
    requests: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    body_bytes_sent: int = 0
    log: list[LoggedRequest] = field(default_factory=list)


class FaultProxy:
    """Reverse proxy on ``127.0.0.1`` (free port) in front of ``upstream``, in a thread.

    Use as a context manager, or call :meth:`close`. Thread-safe.
    """

    def __init__(self, upstream: str, *, upstream_timeout: float = 60.0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = upstream
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port
        self._upstream_timeout = upstream_timeout
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._counters = _Counters()
        self._closing = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fault-proxy", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """Base URL of the proxy, e.g. ``http://127.0.0.1:40123``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def inject(
        self,
        kind: FaultKind,
        every: int = 1,
        methods: str | list[str] | tuple[str, ...] | None = None,
        path_contains: str | None = None,
        limit: int | None = None,
        *,
        stall_seconds: float = 5.0,
        after_stall: Literal["answer", "drop"] = "answer",
        retry_after: float | str | None = None,
    ) -> FaultRule:
        """Add a rule; the first rule whose turn it is decides a request's fault.

        ``retry_after`` (``"429"`` and ``"500"``/``"503"`` answers) is sent as the
        ``Retry-After`` header: a number of seconds, or a string as it is (an HTTP date)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if every < 1:
            raise ValueError("every must be >= 1")
        if after_stall not in ("answer", "drop"):
            raise ValueError("after_stall must be 'answer' or 'drop'")
        if isinstance(methods, str):
            methods = [methods]
        rule = FaultRule(
            kind=kind,
            every=every,
            methods=None if methods is None else frozenset(m.upper() for m in methods),
            path_contains=path_contains,
            limit=limit,
            stall_seconds=stall_seconds,
            after_stall=after_stall,
            retry_after=retry_after,
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove all fault rules (counters are kept)."""
        with self._lock:
            self._rules.clear()

    @property
    def requests(self) -> dict[str, int]:
        """Number of requests received, by HTTP method."""
        with self._lock:
            return dict(self._counters.requests)

    @property
    def request_count(self) -> int:
        """Total number of requests received."""
        with self._lock:
            return sum(self._counters.requests.values())

    @property
    def log(self) -> list[LoggedRequest]:
        """Every request received, in order, with the fault it got."""
        with self._lock:
            return list(self._counters.log)

    @property
    def faults(self) -> dict[str, int]:
        """Number of faults injected, by kind."""
        with self._lock:
            return dict(self._counters.faults)

    @property
    def fault_count(self) -> int:
        """Total number of faults injected."""
        with self._lock:
            return sum(self._counters.faults.values())

    @property
    def body_bytes_sent(self) -> int:
        """Response body bytes written to clients (partial bodies included)."""
        with self._lock:
            return self._counters.body_bytes_sent

    def reset_counters(self) -> None:
        """Zero the request, fault and byte counters and empty the log."""
        with self._lock:
            self._counters = _Counters()

    def close(self) -> None:
        """Stop serving, wake stalled requests and close open client connections."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaultProxy({self.url} -> {self.upstream})"

    # Called from handler threads.

    def _choose_fault(self, method: str, path: str) -> tuple[FaultRule | None, LoggedRequest]:
        with self._lock:
            self._counters.requests[method] += 1
            logged = LoggedRequest(method, path)
            self._counters.log.append(logged)
            chosen = None
            for rule in self._rules:
                if not rule.matches(method, path):
                    continue
                rule.matched += 1
                due = rule.matched % rule.every == 0
                if chosen is None and due and (rule.limit is None or rule.injected < rule.limit):
                    chosen = rule
            if chosen is not None and chosen.kind != "truncate":
                self._record_fault(chosen, logged)
            return chosen, logged

    def _record_fault(self, rule: FaultRule, logged: LoggedRequest) -> None:
        rule.injected += 1
        self._counters.faults[rule.kind] += 1
        logged.fault = rule.kind

    def _record_truncation(self, rule: FaultRule, logged: LoggedRequest) -> None:
        with self._lock:
            self._record_fault(rule, logged)

    def _count_body_bytes(self, n: int) -> None:
        with self._lock:
            self._counters.body_bytes_sent += n

    def _track(self, sock: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._sockets.add(sock)
            else:
                self._sockets.discard(sock)

    def _forward(
        self, method: str, path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes, bool]:
        """Send the request upstream; return status, reason, headers, body, had_length."""
        conn = http.client.HTTPConnection(
            self._upstream_host, self._upstream_port, timeout=self._upstream_timeout
        )
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            if body or method in ("PUT", "POST", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            had_length = resp.getheader("Content-Length") is not None
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data, had_length
        finally:
            conn.close()


def _make_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 120  # idle keep-alive connections are closed after this

        def setup(self) -> None:
            super().setup()
            proxy._track(self.connection, True)

        def finish(self) -> None:
            try:
                super().finish()
            finally:
                proxy._track(self.connection, False)

        def log_message(self, format: str, *args: object) -> None:
            """Silence the per-request log."""

        def handle_one_request(self) -> None:
            try:
                super().handle_one_request()
            except OSError:  # the client went away (e.g. after its read timeout)
                self.close_connection = True

        def _read_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _drop(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def _reply(
            self,
            status: int,
            reason: str,
            headers: list[tuple[str, str]],
            body: bytes,
            truncate: bool = False,
        ) -> None:
            self.send_response_only(status, reason)
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            if self.command == "HEAD" or not body:
                return
            if truncate:
                body = body[: len(body) // 2]
                self.close_connection = True
            proxy._count_body_bytes(len(body))  # before writing: the client may read it at once
            self.wfile.write(body)
            self.wfile.flush()
            if truncate:
                self._drop()

        def _send_error_fault(self, status: int, retry_after: float | str | None) -> None:
            reason = http.client.responses[status]
            body = b"" if self.command == "HEAD" else f"injected fault: {status} {reason}".encode()
            headers = [
                ("Content-Type", "text/plain"),
                ("Content-Length", str(len(body))),
                ("Connection", "keep-alive"),
            ]
            if retry_after is not None:
                value = retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
                headers.append(("Retry-After", value))
            self._reply(status, reason, headers, body)

        def _handle(self) -> None:
            body = self._read_body()
            rule, logged = proxy._choose_fault(self.command, self.path)
            kind = rule.kind if rule else None
            if rule is not None and kind == "stall":
                proxy._closing.wait(rule.stall_seconds)
                if rule.after_stall == "drop" or proxy._closing.is_set():
                    self._drop()
                    return
            if kind in ("429", "500", "503"):
                assert rule is not None
                self._send_error_fault(int(kind), rule.retry_after)
                return
            if kind == "drop":
                self._drop()
                return
            forward_headers = [
                (k, v)
                for k, v in self.headers.items()
                if k.lower() not in _HOP_BY_HOP and k.lower() not in ("content-length", "expect")
            ]
            try:
                status, reason, up_headers, data, had_length = proxy._forward(
                    self.command, self.path, forward_headers, body
                )
            except (OSError, http.client.HTTPException) as exc:
                message = f"fault proxy: upstream error: {exc!r}".encode()
                self._reply(
                    502,
                    "Bad Gateway",
                    [("Content-Type", "text/plain"), ("Content-Length", str(len(message)))],
                    b"" if self.command == "HEAD" else message,
                )
                return
            headers = [
                (k, v)
                for k, v in up_headers
                if k.lower() not in _HOP_BY_HOP
                and (self.command == "HEAD" or k.lower() != "content-length")
            ]
            if self.command != "HEAD" and (data or had_length or status not in _NO_BODY_STATUSES):
                headers.append(("Content-Length", str(len(data))))
            truncate = kind == "truncate" and bool(data)
            if truncate:
                assert rule is not None
                proxy._record_truncation(rule, logged)
            self._reply(status, reason, headers, data, truncate=truncate)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _handle

    return Handler
