"""A Hugging Face Hub on 127.0.0.1 for the unmodified ``huggingface_hub`` and ``datasets``.

The emulator serves dataset repos from a directory, read afresh on every request (so a test
changes a repo by writing files, e.g. with :func:`write_files`)::

    root/datasets/{org}/{name}/...              branch ``main``
    root/datasets/{org}/{name}@{ref}/...        another ref, quoted: ``name@dev`` a branch,
                                                ``name@refs%2Fconvert%2Fparquet`` the Parquet export
    root/datasets/{org}/{name}.hub.json         ``{"private": bool, "gated": false | "auto"}``
    root/.objects/{sha256}                      hard links to every file a commit served

A ref's commit sha is derived from its files (paths and contents, hashed once per size, mtime
and inode), so it changes when a file does, and every sha handed out stays a valid revision
serving the files it had (``.objects`` keeps them: write changes by replacing files, never in
place; a blob changed in place answers 500 rather than wrong bytes). LFS-like files are those
matched by ``filter=lfs`` patterns in the tree's ``.gitattributes``.

Endpoints (the ones the clients call; NOTES.md lists what they need):
``GET /api/datasets/{id}[/revision/{rev}]``, ``GET /api/datasets/{id}/tree/{rev}[/{path}]``
(paginated with an absolute ``Link`` header), ``POST /api/datasets/{id}/paths-info/{rev}``,
``GET /api/datasets/{id}/refs`` and ``HEAD``/``GET /datasets/{id}/resolve/{rev}/{path}``
(single ``Range``). Errors carry ``X-Error-Code`` as the Hub's do. A private repo is hidden
from requests without the emulator's token (401 without a token, 404 with another); a gated
repo's files answer ``GatedRepo`` (401 without a token, 403 with another).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatch
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import yaml

Endpoint = Literal["info", "tree", "paths-info", "refs", "resolve", "other"]

DEFAULT_PAGE_SIZE = 1000  # the Hub's tree page size (50 with expand=True)
EXPANDED_PAGE_SIZE = 50
_LFS_EXTENSIONS = [
    "7z",
    "arrow",
    "bin",
    "bz2",
    "gz",
    "lz4",
    "npy",
    "parquet",
    "pt",
    "safetensors",
    "tar",
    "xz",
    "zip",
    "zst",
]
DEFAULT_GITATTRIBUTES = "".join(
    f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n" for ext in _LFS_EXTENSIONS
)
_CHUNK = 1 << 20
_INHERITED_CLIENT_VARIABLES = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HUB_CACHE",
    "HF_DATASETS_CACHE",
    "HF_TOKEN",
    "HF_TOKEN_PATH",
    "HUGGING_FACE_HUB_TOKEN",
)


# --- the directory layout -------------------------------------------------------------------


def repo_dir(root: str | os.PathLike[str], repo_id: str, revision: str = "main") -> Path:
    """The folder holding ``repo_id``'s files at branch or ref ``revision``."""
    org, name = _split_repo_id(repo_id)
    folder = name if revision == "main" else f"{name}@{quote(revision, safe='')}"
    return Path(root) / "datasets" / org / folder


def write_files(
    root: str | os.PathLike[str],
    repo_id: str,
    files: Mapping[str, bytes | None],
    revision: str = "main",
) -> None:
    """Add, replace (``bytes``) or delete (``None``) files of a repo's ``revision``.

    Each file is replaced atomically (a new inode), so commits served before keep their bytes.
    """
    base = repo_dir(root, repo_id, revision)
    for path, data in files.items():
        target = base / path
        if data is None:
            target.unlink()
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, target)


def make_repo(
    root: str | os.PathLike[str],
    repo_id: str,
    files: Mapping[str, bytes],
    *,
    readme_yaml: str | Mapping[str, Any] | None = None,
    private: bool = False,
    gated: bool = False,
    parquet_export: Mapping[str, bytes] | None = None,
) -> Path:
    """Create dataset repo ``repo_id`` under ``root``; return its folder.

    ``files`` are path -> bytes; a Hub-style ``.gitattributes`` (LFS for Parquet, archives...) is
    added unless given. ``readme_yaml`` becomes README.md's YAML header (e.g. ``configs:``).
    ``parquet_export`` is the tree of the ``refs/convert/parquet`` ref, path -> bytes (the Hub
    writes ``{config}/{split}/0000.parquet``).
    """
    trees = {"main": dict(files)}
    if readme_yaml is not None:
        if "README.md" in files:
            raise ValueError("give either README.md in files or readme_yaml, not both")
        header = readme_yaml if isinstance(readme_yaml, str) else yaml.safe_dump(dict(readme_yaml))
        trees["main"]["README.md"] = f"---\n{header}---\n\n# {repo_id}\n".encode()
    if parquet_export is not None:
        trees["refs/convert/parquet"] = dict(parquet_export)
    for revision, tree in trees.items():
        tree.setdefault(".gitattributes", DEFAULT_GITATTRIBUTES.encode())
        repo_dir(root, repo_id, revision).mkdir(parents=True, exist_ok=True)
        write_files(root, repo_id, tree, revision)
    settings = {"private": private, "gated": "auto" if gated else False}
    _settings_path(root, repo_id).write_text(json.dumps(settings))
    return repo_dir(root, repo_id)


def client_environment(
    url: str, hf_home: str | os.PathLike[str], environ: MutableMapping[str, str]
) -> None:
    """Point the clients' variables in ``environ`` at the emulator at ``url`` (in place).

    ``huggingface_hub`` and ``datasets`` read them once, when first imported: change
    ``os.environ`` before that, or pass a copy to a subprocess. Offline switches, cache
    locations and tokens inherited from the caller are removed.
    """
    for name in _INHERITED_CLIENT_VARIABLES:
        environ.pop(name, None)
    environ.update(
        HF_ENDPOINT=url.rstrip("/"),
        HF_HOME=os.fspath(hf_home),
        HF_UPDATE_DOWNLOAD_COUNTS="0",
        HF_HUB_DISABLE_TELEMETRY="1",
    )


def reserve_loopback_port() -> socket.socket:
    """A TCP socket bound to a free port of 127.0.0.1, for a :class:`HubEmulator` to serve on.

    It does not listen yet (connections are refused, not left hanging) until the emulator
    starts, so a caller can publish the URL (``HF_ENDPOINT``) before that.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def _split_repo_id(repo_id: str) -> tuple[str, str]:
    org, _, name = repo_id.partition("/")
    if not org or not name or "/" in name or "@" in repo_id:
        raise ValueError(f"a dataset repo id is 'org/name', got {repo_id!r}")
    return org, name


def _settings_path(root: str | os.PathLike[str], repo_id: str) -> Path:
    org, name = _split_repo_id(repo_id)
    return Path(root) / "datasets" / org / f"{name}.hub.json"


# --- commits --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """A file's content: git and LFS ids, and the stored object serving it."""

    size: int
    oid: str  # git blob sha1
    sha256: str
    mtime_ns: int
    object_path: Path

    @property
    def lfs_pointer_size(self) -> int:
        """Size of the git-lfs pointer file standing for this blob."""
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
        return len(pointer) + len(f"size {self.size}\n")


@dataclass(frozen=True)
class Commit:
    """A snapshot of one ref's files."""

    sha: str
    files: dict[str, Blob]
    lfs: frozenset[str]
    date: datetime

    @cached_property
    def dirs(self) -> dict[str, str]:
        """Every folder (not the root) and its tree id."""
        hashers: dict[str, Any] = {}
        for path in sorted(self.files):
            parts = path.split("/")
            for depth in range(1, len(parts)):
                hasher = hashers.setdefault("/".join(parts[:depth]), hashlib.sha1())
                hasher.update(f"{path}\0{self.files[path].oid}\n".encode())
        return {path: hasher.hexdigest() for path, hasher in hashers.items()}

    def card_data(self) -> dict[str, Any] | None:
        """The YAML header of README.md, if any."""
        blob = self.files.get("README.md")
        if blob is None:
            return None
        text = blob.object_path.read_text(encoding="utf-8")
        match = re.match(r"---\n(.*?\n)---\n", text, re.DOTALL)
        data = yaml.safe_load(match[1]) if match else None
        return data if isinstance(data, dict) else None


def _lfs_paths(files: dict[str, Blob]) -> frozenset[str]:
    blob = files.get(".gitattributes")
    if blob is None:
        return frozenset()
    patterns = [
        line.split()[0]
        for line in blob.object_path.read_text(encoding="utf-8").splitlines()
        if "filter=lfs" in line.split()[1:]
    ]

    def matches(path: str, pattern: str) -> bool:
        return fnmatch(path if "/" in pattern else path.rsplit("/", 1)[-1], pattern)

    return frozenset(p for p in files if any(matches(p, pattern) for pattern in patterns))


# --- requests and errors --------------------------------------------------------------------


@dataclass(frozen=True)
class HubRequest:
    """One request the emulator answered (never its headers: no token is recorded)."""

    method: str
    endpoint: Endpoint
    path: str
    repo_id: str | None
    revision: str | None
    status: int
    body_bytes: int = 0
    """Bytes of the answer's body that were sent (0 for HEAD)."""


class HubError(Exception):
    """An error answer: status, ``X-Error-Code`` (may be empty), message and more headers."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def _repo_not_found(token: str | None) -> HubError:
    if token is None:  # the Hub answers 401 to anonymous requests for missing or private repos
        return HubError(401, "RepoNotFound", "Invalid username or password.")
    return HubError(404, "RepoNotFound", "Repository not found")


@dataclass
class _Route:
    endpoint: Endpoint
    repo_id: str | None = None
    revision: str | None = None
    path: str = ""
    repo_like: bool = False  # "other" for a repo this emulator never holds: RepoNotFound


def _split_revision(segments: list[str]) -> tuple[str, list[str]]:
    """The revision at the head of ``segments`` (quoted, or a bare ``refs/x/y``) and the rest."""
    if segments[0] == "refs" and len(segments) >= 3:
        return "/".join(segments[:3]), segments[3:]
    return unquote(segments[0]), segments[1:]


def _route(method: str, url_path: str) -> _Route:
    """Which endpoint a request is for."""
    segments = url_path.strip("/").split("/")
    api = segments[0] == "api"
    if api:
        segments = segments[1:]
    if not segments or segments[0] != "datasets":  # a model or space repo, or not a repo
        repo_like = (bool(segments) and segments[0] in ("models", "spaces")) or len(segments) >= 3
        return _Route("other", repo_like=repo_like)
    if len(segments) < 3:  # /api/datasets/{org}: never a repo (hub 0.36 probes it)
        return _Route("other", repo_like=True)
    repo_id = f"{unquote(segments[1])}/{unquote(segments[2])}"
    rest = segments[3:]
    if api and method == "GET" and not rest:
        return _Route("info", repo_id, "main")
    if api and method == "GET" and rest[:1] == ["refs"] and len(rest) == 1:
        return _Route("refs", repo_id)
    if len(rest) >= 2:
        kind = rest[0]
        revision, tail = _split_revision(rest[1:])
        path = unquote("/".join(tail))
        if api and method == "GET" and kind == "revision" and not tail:
            return _Route("info", repo_id, revision)
        if api and method == "GET" and kind == "tree":
            return _Route("tree", repo_id, revision, path)
        if api and method == "POST" and kind == "paths-info" and not tail:
            return _Route("paths-info", repo_id, revision)
        if not api and method in ("GET", "HEAD") and kind == "resolve" and tail:
            return _Route("resolve", repo_id, revision, path)
    return _Route("other", repo_id)


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (start, stop) of a single ``bytes=`` range; None to send the whole file."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header or "")
    if match is None or not (match[1] or match[2]):
        return None
    if match[1]:
        start = int(match[1])
        stop = min(int(match[2]) + 1, size) if match[2] else size
    else:
        start, stop = max(size - int(match[2]), 0), size
    if start >= stop:
        message = f"Range Not Satisfiable: {header} of {size} bytes"
        raise HubError(416, "", message, {"Content-Range": f"bytes */{size}"})
    return start, stop


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _truthy(values: list[str] | None) -> bool:
    return bool(values) and values[0].lower() in ("1", "true")


# --- the server -----------------------------------------------------------------------------


@dataclass
class _State:
    blobs: dict[tuple[int, int, int, int], Blob] = field(default_factory=dict)
    commits: dict[tuple[str, str], Commit] = field(default_factory=dict)
    log: list[tuple[int, HubRequest]] = field(default_factory=list)
    """(arrival number, request): a request is logged once answered, so not in arrival order."""
    arrivals: int = 0


class HubEmulator:
    """The Hub emulator serving ``root`` on 127.0.0.1, in a thread; a context manager.

    ``token`` (generated if not given) opens private and gated repos. ``page_size`` is the tree
    listing's page size (settable while running, to exercise pagination). ``sock`` is a
    bound socket to serve on (:func:`reserve_loopback_port`); a free port otherwise.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        token: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        sock: socket.socket | None = None,
    ) -> None:
        self.root = Path(root)
        self.token = token or f"hf_emulator_{secrets.token_hex(12)}"
        self.page_size = page_size
        self._objects = self.root / ".objects"
        self._objects.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0  # requests being answered (their log entry not written yet)
        self._state = _State()
        self._connections: set[socket.socket] = set()
        handler = _make_handler(self)
        if sock is None:
            self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        else:
            self._server = ThreadingHTTPServer(sock.getsockname(), handler, bind_and_activate=False)
            self._server.socket.close()
            self._server.socket = sock
            self._server.server_activate()
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="hub-emulator", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123`` (HF_ENDPOINT: no trailing slash)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def log(self) -> list[HubRequest]:
        """Every request answered, in the order they arrived (once the requests being answered
        are logged: a client may read its answer, and send the next request, before the
        emulator logs it)."""
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=10)
            return [request for _, request in sorted(self._state.log, key=lambda e: e[0])]

    @property
    def requests(self) -> Counter[tuple[str, str]]:
        """Number of requests by (method, URL path without the query)."""
        return Counter((request.method, request.path) for request in self.log)

    def count(
        self,
        endpoint: Endpoint | None = None,
        *,
        method: str | None = None,
        repo_id: str | None = None,
    ) -> int:
        """Number of requests answered for ``endpoint``, ``method`` and ``repo_id`` (None: any)."""
        return sum(
            1
            for request in self.log
            if endpoint in (None, request.endpoint)
            and method in (None, request.method)
            and repo_id in (None, request.repo_id)
        )

    def reset_counters(self) -> None:
        """Empty the request log (once the requests being answered are logged)."""
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=10)
            self._state.log.clear()

    @contextlib.contextmanager
    def pages_of(self, size: int) -> Iterator[None]:
        """Within the block, tree listings answer ``size`` entries per page."""
        previous, self.page_size = self.page_size, size
        try:
            yield
        finally:
            self.page_size = previous

    def commit_sha(self, repo_id: str, revision: str = "main") -> str:
        """The commit sha ``revision`` of ``repo_id`` resolves to now."""
        return self._commit(repo_id, revision).sha

    def delete_commit(self, repo_id: str, sha: str) -> None:
        """Make commit ``sha`` of ``repo_id`` unknown, as squashing or rewriting the history of
        the Hub repo does: it answers ``RevisionNotFound`` from then on. No ref may point at
        it (update the branch first, e.g. with :func:`write_files`)."""
        pointing = [ref for ref in self._refs(repo_id) if self.commit_sha(repo_id, ref) == sha]
        if pointing:
            raise ValueError(f"{pointing} still point at {sha}: change those refs first")
        with self._lock:
            if self._state.commits.pop((repo_id, sha), None) is None:
                raise KeyError(f"{repo_id} has no commit {sha}")

    def close(self) -> None:
        """Stop serving and close open client connections."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)

    def __enter__(self) -> HubEmulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"HubEmulator({self.url}, root={str(self.root)!r})"

    # --- repos, refs and commits (called from handler threads) ---

    def _settings(self, repo_id: str) -> dict[str, Any]:
        path = _settings_path(self.root, repo_id)
        return json.loads(path.read_text()) if path.exists() else {}

    def _refs(self, repo_id: str) -> list[str]:
        org, name = _split_repo_id(repo_id)
        prefix = f"{name}@"
        folders = (self.root / "datasets" / org).iterdir()
        others = sorted(
            unquote(f.name[len(prefix) :]) for f in folders if f.name.startswith(prefix)
        )
        return ["main", *others]

    def _check_access(self, repo_id: str, token: str | None, *, content: bool) -> None:
        try:
            exists = repo_dir(self.root, repo_id).is_dir()
        except ValueError:
            exists = False
        settings = self._settings(repo_id) if exists else {}
        allowed = token is not None and hmac.compare_digest(token, self.token)
        if not exists or (settings.get("private") and not allowed):
            raise _repo_not_found(token)
        if content and settings.get("gated") and not allowed:
            message = f"Access to dataset {repo_id} is restricted. You must have access to it."
            raise HubError(401 if token is None else 403, "GatedRepo", message)

    def _commit(self, repo_id: str, revision: str) -> Commit:
        ref = revision.removeprefix("refs/heads/")
        folder = repo_dir(self.root, repo_id, ref)
        if folder.is_dir():
            return self._snapshot(repo_id, folder)
        with self._lock:
            commit = self._state.commits.get((repo_id, revision))
        if commit is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    def _snapshot(self, repo_id: str, folder: Path) -> Commit:
        files: dict[str, Blob] = {}
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for filename in sorted(filenames):
                if not filename.startswith(".tmp-"):
                    path = Path(dirpath) / filename
                    files[path.relative_to(folder).as_posix()] = self._blob(path)
        digest = hashlib.sha1(repo_id.encode())
        for path, blob in sorted(files.items()):
            digest.update(f"\n{path}\0{blob.sha256}".encode())
        newest = max((blob.mtime_ns for blob in files.values()), default=0)
        commit = Commit(
            digest.hexdigest(), files, _lfs_paths(files), datetime.fromtimestamp(newest / 1e9, UTC)
        )
        with self._lock:
            return self._state.commits.setdefault((repo_id, commit.sha), commit)

    def _blob(self, path: Path) -> Blob:
        stat = path.stat()
        key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        with self._lock:
            blob = self._state.blobs.get(key)
        if blob is not None:
            return blob
        sha256, git = hashlib.sha256(), hashlib.sha1(f"blob {stat.st_size}\0".encode())
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                sha256.update(chunk)
                git.update(chunk)
        stored = self._objects / sha256.hexdigest()
        if not stored.exists():
            try:
                os.link(path, stored)
            except FileExistsError:
                pass
            except OSError:  # another file system: keep a copy
                shutil.copy2(path, stored)
        blob = Blob(
            stat.st_size, git.hexdigest(), sha256.hexdigest(), stored.stat().st_mtime_ns, stored
        )
        with self._lock:
            self._state.blobs[key] = blob
        return blob

    def _record(self, arrival: int, request: HubRequest) -> None:
        with self._lock:
            self._state.log.append((arrival, request))

    def _answering(self, started: bool) -> int:
        """A request's answer started (its arrival number is returned), or ended (logged or not:
        the client may have gone)."""
        with self._idle:
            self._in_flight += 1 if started else -1
            self._idle.notify_all()
            if started:
                self._state.arrivals += 1
            return self._state.arrivals

    def _track(self, connection: socket.socket, is_open: bool) -> None:
        with self._lock:
            (self._connections.add if is_open else self._connections.discard)(connection)


# --- answers --------------------------------------------------------------------------------


def _entry(commit: Commit, path: str, expand: bool) -> dict[str, Any]:
    """A tree / paths-info entry for a file or folder of ``commit``."""
    blob = commit.files.get(path)
    if blob is None:
        entry: dict[str, Any] = {
            "type": "directory",
            "oid": commit.dirs[path],
            "size": 0,
            "path": path,
        }
    else:
        entry = {"type": "file", "oid": blob.oid, "size": blob.size, "path": path}
        if path in commit.lfs:
            entry["lfs"] = {
                "oid": blob.sha256,
                "size": blob.size,
                "pointerSize": blob.lfs_pointer_size,
            }
    if expand:
        entry["lastCommit"] = {"id": commit.sha, "title": "Upload files", "date": _iso(commit.date)}
    return entry


def _tree_paths(commit: Commit, path: str, recursive: bool) -> list[str]:
    """The paths below folder ``path`` (folders first, then files, each sorted)."""
    if path and path not in commit.dirs:
        raise HubError(404, "EntryNotFound", f"{path} does not exist on this revision")
    prefix = f"{path}/" if path else ""

    def below(p: str) -> bool:
        return p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])

    return sorted(p for p in commit.dirs if below(p)) + sorted(p for p in commit.files if below(p))


def _info(
    repo_id: str, commit: Commit, settings: dict[str, Any], query: dict[str, list[str]]
) -> dict[str, Any]:
    blobs = _truthy(query.get("blobs"))
    siblings = []
    for path, blob in sorted(commit.files.items()):
        sibling: dict[str, Any] = {"rfilename": path}
        if blobs:
            sibling.update(size=blob.size, blobId=blob.oid)
            if path in commit.lfs:
                sibling["lfs"] = {
                    "size": blob.size,
                    "sha256": blob.sha256,
                    "pointerSize": blob.lfs_pointer_size,
                }
        siblings.append(sibling)
    info: dict[str, Any] = {
        "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
        "id": repo_id,
        "author": repo_id.split("/")[0],
        "sha": commit.sha,
        "createdAt": _iso(commit.date),
        "lastModified": _iso(commit.date),
        "private": bool(settings.get("private")),
        "gated": settings.get("gated", False),
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": siblings,
        "usedStorage": sum(blob.size for blob in commit.files.values()),
    }
    card = commit.card_data()
    if card is not None:
        info["cardData"] = card
    expand = query.get("expand")
    if expand:
        info = {key: value for key, value in info.items() if key in ("_id", "id", *expand)}
    return info


def _make_handler(hub: HubEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 60  # idle keep-alive connections are closed after this

        def setup(self) -> None:
            super().setup()
            hub._track(self.connection, True)

        def finish(self) -> None:
            try:
                super().finish()
            finally:
                hub._track(self.connection, False)

        def log_message(self, format: str, *args: object) -> None:
            """Silence the per-request log."""

        def handle_one_request(self) -> None:
            try:
                super().handle_one_request()
            except OSError:  # the client went away
                self.close_connection = True

        def _token(self) -> str | None:
            scheme, _, value = self.headers.get("Authorization", "").partition(" ")
            return value.strip() if scheme.lower() == "bearer" and value.strip() else None

        def _send_headers(self, status: int, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self._send_headers(status, {"Content-Length": str(len(body)), **headers})
            if self.command != "HEAD":
                self.wfile.write(body)
                self.body_bytes += len(body)

        def _send_json(self, data: Any, headers: dict[str, str] | None = None) -> None:
            body = json.dumps(data).encode()
            self._send(
                200, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body
            )

        def _handle(self) -> None:
            arrival = hub._answering(True)
            try:
                self._handle_logged(arrival)
            finally:
                hub._answering(False)

        def _handle_logged(self, arrival: int) -> None:
            url = urlsplit(self.path)
            self.body_bytes = 0
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode()) if length else {}
            route = _Route("other")
            try:
                route = _route(self.command, url.path)
                status = self._answer(route, parse_qs(url.query), form)
            except OSError:
                raise  # the client went away
            except Exception as exc:  # answered, so that a client does not retry a dropped request
                error = (
                    exc if isinstance(exc, HubError) else HubError(500, "", f"emulator: {exc!r}")
                )
                status = error.status
                headers = {
                    "Content-Type": "application/json; charset=utf-8",
                    "X-Error-Message": error.message.encode("ascii", "replace").decode(),
                    **({"X-Error-Code": error.code} if error.code else {}),
                    **error.headers,
                }
                self._send(error.status, headers, json.dumps({"error": error.message}).encode())
            hub._record(
                arrival,
                HubRequest(
                    self.command,
                    route.endpoint,
                    unquote(url.path),
                    route.repo_id,
                    route.revision,
                    status,
                    self.body_bytes,
                ),
            )

        def _answer(
            self, route: _Route, query: dict[str, list[str]], form: dict[str, list[str]]
        ) -> int:
            token = self._token()
            if route.endpoint == "other":
                raise _repo_not_found(token) if route.repo_like else HubError(404, "", "Not Found")
            assert route.repo_id is not None
            hub._check_access(route.repo_id, token, content=route.endpoint == "resolve")
            if route.endpoint == "refs":
                self._send_json(self._refs(route.repo_id))
                return 200
            assert route.revision is not None
            commit = hub._commit(route.repo_id, route.revision)
            if route.endpoint == "info":
                self._send_json(_info(route.repo_id, commit, hub._settings(route.repo_id), query))
            elif route.endpoint == "tree":
                self._send_tree(commit, route.path, query)
            elif route.endpoint == "paths-info":
                expand = _truthy(form.get("expand"))
                paths = [p.strip("/") for p in form.get("paths", [])]
                known = [p for p in paths if p in commit.files or p in commit.dirs]
                self._send_json([_entry(commit, p, expand) for p in known])
            else:
                return self._send_file(commit, route.path)
            return 200

        def _refs(self, repo_id: str) -> dict[str, Any]:
            refs: dict[str, Any] = {"branches": [], "converts": [], "tags": [], "pullRequests": []}
            for ref in hub._refs(repo_id):
                sha = hub._commit(repo_id, ref).sha
                if ref.startswith("refs/convert/"):
                    refs["converts"].append(
                        {"name": ref.rsplit("/", 1)[1], "ref": ref, "targetCommit": sha}
                    )
                else:
                    refs["branches"].append(
                        {"name": ref, "ref": f"refs/heads/{ref}", "targetCommit": sha}
                    )
            return refs

        def _send_tree(self, commit: Commit, path: str, query: dict[str, list[str]]) -> None:
            expand = _truthy(query.get("expand"))
            paths = _tree_paths(commit, path, _truthy(query.get("recursive")))
            size = min(hub.page_size, EXPANDED_PAGE_SIZE) if expand else hub.page_size
            cursor = int((query.get("cursor") or ["0"])[0])
            headers = {}
            if cursor + size < len(paths):
                next_query = {**{k: v[0] for k, v in query.items()}, "cursor": str(cursor + size)}
                host = self.headers.get("Host") or hub.url.removeprefix("http://")
                raw_path = urlsplit(self.path).path  # keeps the %2F-quoted path in repo
                headers["Link"] = f'<http://{host}{raw_path}?{urlencode(next_query)}>; rel="next"'
            self._send_json(
                [_entry(commit, p, expand) for p in paths[cursor : cursor + size]], headers
            )

        def _send_file(self, commit: Commit, path: str) -> int:
            blob = commit.files.get(path)
            if blob is None:
                raise HubError(404, "EntryNotFound", f"{path} does not exist on this revision")
            with blob.object_path.open("rb") as f:
                stat = os.fstat(f.fileno())
                if (stat.st_size, stat.st_mtime_ns) != (blob.size, blob.mtime_ns):
                    raise HubError(500, "", f"{path} was changed in place; replace files instead")
                etag = f'"{blob.sha256 if path in commit.lfs else blob.oid}"'
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Accept-Ranges": "bytes",
                    "ETag": etag,
                    "X-Repo-Commit": commit.sha,
                }
                if path in commit.lfs:
                    headers.update({"X-Linked-Etag": etag, "X-Linked-Size": str(blob.size)})
                span = _byte_range(self.headers.get("Range"), blob.size)
                start, stop = span or (0, blob.size)
                status = 200 if span is None else 206
                if span is not None:
                    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{blob.size}"
                self._send_headers(status, {"Content-Length": str(stop - start), **headers})
                if self.command == "GET":
                    f.seek(start)
                    remaining = stop - start
                    while remaining and (chunk := f.read(min(_CHUNK, remaining))):
                        self.wfile.write(chunk)
                        self.body_bytes += len(chunk)
                        remaining -= len(chunk)
            return status

        do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle

    return Handler
