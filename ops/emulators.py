"""Local object-store emulators (moto S3, gcp-storage-emulator GCS, Azurite blob) for tests.

Each emulator runs as a subprocess on ``127.0.0.1`` on a free port, so it never shares the
GIL with the code under test::

    with start_emulator("s3") as emu:
        root = emu.endpoint.new_bucket()  # "s3://b-1f2e3d4c5b6a"
        emu.endpoint.upload(b"hello", f"{root}/x.txt")
        fs = emu.endpoint.filesystem()
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import fsspec

# gcsfs >= 2026.10 otherwise calls a gRPC control API over TLS and hangs against the emulator;
# this must be in the environment before gcsfs is first imported.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

from easydata_grain.io.filesystem import filesystem_for
from easydata_grain.io.retry import RetryPolicy

StoreKind = Literal["s3", "gcs", "azure"]
STORE_KINDS: tuple[StoreKind, ...] = ("s3", "gcs", "azure")

OPS_DIR = Path(__file__).resolve().parent
AZURITE_BIN = OPS_DIR / "node_modules" / ".bin" / "azurite-blob"

AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's documented, public development key (not a secret).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

_PROTOCOLS: dict[str, str] = {"s3": "s3", "gcs": "gs", "azure": "az"}


def azure_connection_string(endpoint_url: str, account_key: str = AZURITE_KEY) -> str:
    """Connection string for Azurite's ``devstoreaccount1`` reached at ``endpoint_url``."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={account_key};"
        f"BlobEndpoint={endpoint_url.rstrip('/')}/{AZURITE_ACCOUNT};"
    )


@dataclass(frozen=True)
class StoreEndpoint:
    """Where an emulated store listens, and how fsspec reaches it.

    ``key``/``secret`` are the S3 credentials (the moto server started here checks them).
    """

    kind: StoreKind
    url: str
    key: str = "testing"
    secret: str = "testing"

    @property
    def protocol(self) -> str:
        """fsspec protocol: ``"s3"``, ``"gs"`` or ``"az"``."""
        return _PROTOCOLS[self.kind]

    def storage_options(self, endpoint_url: str | None = None) -> dict[str, Any]:
        """fsspec kwargs for this store, optionally reached through ``endpoint_url`` (a proxy)."""
        url = endpoint_url or self.url
        if self.kind == "s3":
            return {"key": self.key, "secret": self.secret, "client_kwargs": {"endpoint_url": url}}
        if self.kind == "gcs":
            return {"endpoint_url": url, "token": "anon", "project": "test"}
        return {"connection_string": azure_connection_string(url)}

    def bad_credentials_options(self, endpoint_url: str | None = None) -> dict[str, Any]:
        """Like :meth:`storage_options` but with a wrong secret (S3) or account key (Azure).

        The GCS emulator checks no credentials, so there is nothing to get wrong: ValueError.
        """
        options = self.storage_options(endpoint_url)
        if self.kind == "s3":
            options["secret"] = "wrong-" + self.secret
        elif self.kind == "azure":
            wrong_key = base64.b64encode(b"not the azurite key" * 3).decode()
            options["connection_string"] = azure_connection_string(
                endpoint_url or self.url, account_key=wrong_key
            )
        else:
            raise ValueError("gcp-storage-emulator does not check credentials")
        return options

    def filesystem(
        self,
        endpoint_url: str | None = None,
        *,
        internal_retries: bool = False,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        **overrides: Any,
    ) -> fsspec.AbstractFileSystem:
        """A fresh (uncached) filesystem for this store, ``overrides`` over its options.

        Built as the library builds its own (``filesystem_for``): every retry layer of
        s3fs/botocore, gcsfs and the Azure SDK that can be turned off is off (see
        ``ops/BACKENDS.md``), and the timeouts (``RetryPolicy``'s by default) bound the connect
        and the wait for each read from the socket, in seconds. ``internal_retries=True`` gives
        the client libraries' own defaults instead (their retries on), as BACKENDS.md measures
        them.
        """
        options = {**self.storage_options(endpoint_url), **overrides}
        if internal_retries:
            if connect_timeout is not None or read_timeout is not None:
                raise ValueError("timeouts are set with internal_retries=False only")
            return fsspec.filesystem(self.protocol, skip_instance_cache=True, **options)
        timeouts = {"connect_timeout": connect_timeout, "read_timeout": read_timeout}
        policy = RetryPolicy(**{k: v for k, v in timeouts.items() if v is not None})
        return filesystem_for(f"{self.protocol}://", options, policy)

    @cached_property
    def _admin_fs(self) -> fsspec.AbstractFileSystem:
        return self.filesystem()

    def make_bucket(self, name: str) -> str:
        """Create bucket (container) ``name``; return its URL, e.g. ``"gs://name"``."""
        self._admin_fs.mkdir(name)
        self._admin_fs.invalidate_cache()
        return f"{self.protocol}://{name}"

    def new_bucket(self, prefix: str = "b") -> str:
        """Create a bucket with a unique name; return its URL."""
        return self.make_bucket(f"{prefix}-{uuid.uuid4().hex[:12]}")

    def upload(self, source: bytes | str | os.PathLike[str], remote_url: str) -> None:
        """Write ``source`` (bytes, or a local file path) to ``remote_url``."""
        if isinstance(source, bytes):
            self._admin_fs.pipe_file(remote_url, source)
        else:
            self._admin_fs.put_file(os.fspath(source), remote_url)
        self._admin_fs.invalidate_cache()


# --- processes --------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_azurite_installed(timeout: float = 300.0) -> Path:
    """Install Azurite into ``ops/node_modules`` with npm if it is missing; return the binary."""
    if AZURITE_BIN.exists():
        return AZURITE_BIN
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed to install Azurite (ops/package.json); none on PATH")
    subprocess.run(
        [npm, "install", "--prefix", str(OPS_DIR), "--no-audit", "--no-fund", "--silent"],
        check=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if not AZURITE_BIN.exists():
        raise RuntimeError(f"npm install finished but {AZURITE_BIN} is missing")
    return AZURITE_BIN


@dataclass
class Emulator:
    """A running emulator subprocess; stop it with :meth:`stop` or a ``with`` block."""

    endpoint: StoreEndpoint
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "emulator.log"

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the emulator's combined stdout/stderr."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        return ""

    def stop(self) -> None:
        """Terminate the process (kill after 5 s) and remove its working directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _command(kind: StoreKind, port: int) -> list[str]:
    if kind == "s3":
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    if kind == "gcs":
        return [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
            "--quiet",
        ]
    return [
        str(ensure_azurite_installed()),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--skipApiVersionCheck",
        "--inMemoryPersistence",
        "--disableTelemetry",
        "--loose",
        "--silent",
    ]


def _answers_http(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False


def _enable_moto_auth(url: str) -> tuple[str, str]:
    """Make moto check S3 credentials; return a key and secret with full access.

    moto checks nothing by default. ``/moto-api/reset-auth`` lets the next 3 actions through
    unauthenticated (the IAM calls below) and enforces signatures and IAM policies after.
    """
    import boto3

    request = urllib.request.Request(
        f"{url}/moto-api/reset-auth",
        data=b"3",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10):
        pass
    iam = boto3.client(
        "iam",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="bootstrap",
        aws_secret_access_key="bootstrap",
    )
    iam.create_user(UserName="tests")
    iam.put_user_policy(
        UserName="tests",
        PolicyName="everything",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        ),
    )
    access_key = iam.create_access_key(UserName="tests")["AccessKey"]
    return access_key["AccessKeyId"], access_key["SecretAccessKey"]


def start_emulator(
    kind: StoreKind, *, timeout: float = 60.0, check_credentials: bool = True
) -> Emulator:
    """Start the emulator for ``kind`` on a free port and wait until it answers HTTP.

    The S3 (moto) server is switched to checking credentials, and its endpoint carries them,
    unless ``check_credentials`` is false (then it also serves anonymous requests).
    """
    if kind not in STORE_KINDS:
        raise ValueError(f"unknown store kind {kind!r}; expected one of {STORE_KINDS}")
    workdir = Path(tempfile.mkdtemp(prefix=f"emulator-{kind}-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        command = _command(kind, port)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    with open(workdir / "emulator.log", "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    emulator = Emulator(StoreEndpoint(kind, url), process, workdir)
    deadline = time.monotonic() + timeout
    while not _answers_http(url):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = emulator.log_tail()
            emulator.stop()
            raise RuntimeError(f"{kind} emulator did not start at {url}:\n{tail}")
        time.sleep(0.05)
    if kind == "s3" and check_credentials:
        try:
            key, secret = _enable_moto_auth(url)
        except BaseException:
            emulator.stop()
            raise
        emulator.endpoint = StoreEndpoint(kind, url, key=key, secret=secret)
    return emulator
