"""Every ```python block of README.md and of every page in docs/ runs, in order, as a reader
would run it; their links stay inside the repository, and the README's tour is complete.

The blocks of one page share a namespace and run in a fresh directory. Cloud examples read a
bucket called ``my-bucket`` on the emulators, reached through the standard environment variables
(``AWS_ENDPOINT_URL``, ``STORAGE_EMULATOR_HOST``, ``AZURE_STORAGE_CONNECTION_STRING``), and Hub
examples read repos named as on the Hub from the Hub emulator (``HF_ENDPOINT``), so the code on
the page is exactly the code that runs.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from easydata_grain.synthetic import write_parquet_dataset
from ops.emulators import StoreEndpoint, azure_connection_string
from ops.hub_emulator import HubEmulator
from ops.hub_repos import alpaca_like, c4_like, fineweb_like, the_stack_like

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
# What a page's example prints when it went wrong without raising: its own warnings.
MUST_NOT_PRINT = {"trainer_integration.md": ["the step waits for data"]}


def python_blocks(page: Path) -> list[tuple[int, str]]:
    """The page's python blocks with the line each starts on."""
    text = page.read_text()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1)) for m in _BLOCK.finditer(text)]


@pytest.fixture(scope="module")
def my_bucket(
    s3_store: StoreEndpoint,
    gcs_store: StoreEndpoint,
    azure_store: StoreEndpoint,
    tmp_path_factory: pytest.TempPathFactory,
) -> list[StoreEndpoint]:
    """``my-bucket`` on every store, holding data/*.parquet, data/*.jsonl and data/rows.json."""
    shards = write_parquet_dataset(
        tmp_path_factory.mktemp("docs"), num_shards=2, rows_per_shard=2_000, max_tokens=16
    )
    rows = [{"id": i, "text": f"row {i}", "input_ids": [i, i + 1]} for i in range(1_000)]
    for store in (s3_store, gcs_store, azure_store):
        bucket = store.make_bucket("my-bucket")
        for path in shards:
            store.upload(path, f"{bucket}/data/{Path(path).name}")
        for part in range(2):
            lines = "".join(json.dumps(r) + "\n" for r in rows[part * 500 : (part + 1) * 500])
            store.upload(lines.encode(), f"{bucket}/data/part-{part}.jsonl")
        store.upload(json.dumps(rows).encode(), f"{bucket}/data/rows.json")
    return [s3_store, gcs_store, azure_store]


@pytest.fixture(scope="module")
def hub_datasets(hub: HubEmulator) -> None:
    """The Hub emulator (``HF_ENDPOINT``, set by conftest) holding repos shaped like the ones the
    Hub examples read, under their names."""
    fineweb_like(hub.root, "HuggingFaceFW/fineweb")
    the_stack_like(hub.root, "bigcode/the-stack")
    c4_like(hub.root, "allenai/c4")
    alpaca_like(hub.root, "tatsu-lab/alpaca")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_examples_run(
    page: Path,
    my_bucket: list[StoreEndpoint],
    hub_datasets: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3, gcs, azure = my_bucket
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azure_connection_string(azure.url))
    monkeypatch.setenv("EASYDATA_GRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks(page)
    assert blocks, f"{page.name} has no runnable example"
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for line, code in blocks:
        try:
            exec(compile(textwrap.dedent(code), f"{page.name}:{line}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(
                f"the example at {page.name} line {line} failed: {error!r}"
            ) from error
    printed = capsys.readouterr().out
    for warning in MUST_NOT_PRINT.get(page.name, []):
        assert warning not in printed, f"{page.name}'s example printed its warning: {printed}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_links_stay_in_the_repository(page: Path) -> None:
    for target in _LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "#")):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(REPO) and path.exists(), f"{page.name} links to {target}"


def test_readme_tour_lists_every_package_and_module() -> None:
    readme = (REPO / "README.md").read_text()
    package = REPO / "easydata_grain"
    parts = [f"easydata_grain/{p.name}/" for p in package.iterdir() if (p / "__init__.py").exists()]
    parts += [f"easydata_grain/{p.name}" for p in package.glob("*.py") if p.name != "__init__.py"]
    parts += ["ops/", "tpu_scripts/", "tests/", "docs/"]
    assert [p for p in parts if f"`{p}`" not in readme] == []
