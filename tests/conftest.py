"""Shared fixtures: object-store emulators (S3, GCS, Azure), the Hub emulator and fault-injecting
proxies."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# gcsfs hangs against the GCS emulator unless this is set before gcsfs is first imported.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import pytest  # noqa: E402

from ops.emulators import STORE_KINDS, StoreEndpoint, start_emulator  # noqa: E402
from ops.fault_proxy import FaultProxy  # noqa: E402
from ops.hub_emulator import HubEmulator, client_environment, reserve_loopback_port  # noqa: E402

_EMULATOR_FIXTURES = frozenset(
    {"s3_store", "s3_anonymous_store", "gcs_store", "azure_store", "store", "fault_proxy", "hub"}
)

# huggingface_hub and datasets read HF_ENDPOINT, HF_HOME, ... once, when first imported (test
# modules import them at collection): so the Hub emulator's address, a fresh HF_HOME and no
# token or offline switch are set now, for in-process clients and subprocesses alike. Its port
# refuses connections until the ``hub`` fixture serves it.
_HUB_SOCKET = reserve_loopback_port()
_HF_HOME = tempfile.mkdtemp(prefix="hf-home-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
atexit.register(_HUB_SOCKET.close)
client_environment(f"http://127.0.0.1:{_HUB_SOCKET.getsockname()[1]}", _HF_HOME, os.environ)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses an emulator fixture with ``emulators``."""
    for item in items:
        if _EMULATOR_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.emulators)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``synthetic.tiny_tokenizer()`` saved to a directory (a local ``name_or_path``)."""
    from easydata_grain.synthetic import tiny_tokenizer

    directory = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer().save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def s3_store() -> Iterator[StoreEndpoint]:
    """A moto S3 server for the whole session."""
    with start_emulator("s3") as emulator:
        yield emulator.endpoint


@pytest.fixture(scope="session")
def s3_anonymous_store() -> Iterator[StoreEndpoint]:
    """A moto S3 server that checks no credentials, for anonymous (public bucket) access."""
    with start_emulator("s3", check_credentials=False) as emulator:
        yield emulator.endpoint


@pytest.fixture(scope="session")
def gcs_store() -> Iterator[StoreEndpoint]:
    """An in-memory gcp-storage-emulator for the whole session."""
    with start_emulator("gcs") as emulator:
        yield emulator.endpoint


@pytest.fixture(scope="session")
def azure_store() -> Iterator[StoreEndpoint]:
    """An in-memory Azurite blob service for the whole session (npm-installed on demand)."""
    with start_emulator("azure") as emulator:
        yield emulator.endpoint


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubEmulator]:
    """The Hub emulator at HF_ENDPOINT for the whole session; put repos in ``hub.root``."""
    with HubEmulator(tmp_path_factory.mktemp("hub"), sock=_HUB_SOCKET) as emulator:
        yield emulator


@pytest.fixture(params=STORE_KINDS, ids=list(STORE_KINDS))
def store(request: pytest.FixtureRequest) -> StoreEndpoint:
    """Each emulated store in turn: ``s3``, ``gcs``, ``azure``."""
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def fault_proxy() -> Iterator[Callable[[StoreEndpoint], FaultProxy]]:
    """Factory: ``fault_proxy(store)`` starts a FaultProxy in front of it, closed after the test."""
    proxies: list[FaultProxy] = []

    def make(endpoint: StoreEndpoint) -> FaultProxy:
        proxy = FaultProxy(endpoint.url)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.close()
