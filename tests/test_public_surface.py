"""What a user imports: every error class, the host helpers and the sources, from the package."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import easydata_grain
from easydata_grain.io import errors


def test_every_error_class_is_in_the_errors_module_and_exported() -> None:
    defined = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, Exception)
    }
    assert {"SourceError", "HostMismatchError", "LoaderStateError", "CollateError"} <= defined
    assert defined <= set(easydata_grain.__all__)
    for info in pkgutil.walk_packages(easydata_grain.__path__, "easydata_grain."):
        if info.name == "easydata_grain.cli":
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, Exception) and name[0] != "_":
                assert value.__module__ in (errors.__name__,) or not value.__module__.startswith(
                    "easydata_grain"
                ), f"{info.name}.{name} is defined outside easydata_grain.io.errors"


def test_hosts_and_global_batches_are_importable_from_the_package() -> None:
    from easydata_grain import Hosts, make_global_batch

    assert Hosts(1, 2).split(8) == 4 and callable(make_global_batch)


def test_every_exported_name_exists() -> None:
    for name in easydata_grain.__all__:
        assert getattr(easydata_grain, name) is not None


def test_sources_know_nothing_of_hosts() -> None:
    """No module under sources/ (or io/) imports distributed.py or JAX: a source is built,
    inspected and read with no JAX state; sharing across hosts is a MetadataSharing."""
    for folder in ("sources", "io"):
        for path, names in _imports(folder):
            assert not [n for n in names if "distributed" in n or n.split(".")[0] == "jax"], path


def test_the_graph_does_not_import_the_transforms() -> None:
    """The columnar batch protocol lives in batch_format.py, which both import."""
    for path, names in _imports("graph"):
        assert not [n for n in names if n.startswith("easydata_grain.transforms")], path


def _imports(folder: str) -> list[tuple[object, list[str]]]:
    """Each module of a package folder and the modules it imports."""
    import ast
    from pathlib import Path

    found = []
    for path in (Path(easydata_grain.__file__).parent / folder).glob("*.py"):
        tree = ast.parse(path.read_text())
        found.append(
            (
                path,
                [
                    alias.name if isinstance(node, ast.Import) else (node.module or "")
                    for node in ast.walk(tree)
                    if isinstance(node, ast.Import | ast.ImportFrom)
                    for alias in (node.names if isinstance(node, ast.Import) else [node])
                ],
            )
        )
    return found


def test_a_source_takes_its_metadata_sharing(tmp_path: object) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from easydata_grain import ParquetShardedSource
    from easydata_grain.distributed import SliceMetadata
    from easydata_grain.sources.metadata_sharing import LocalMetadata

    path = f"{tmp_path}/a.parquet"
    pq.write_table(pa.table({"id": [1, 2]}), path)
    calls = []

    class Counting(LocalMetadata):
        def share(self, compute, *, what, key):  # type: ignore[no-untyped-def]
            calls.append(what)
            return compute()

    source = ParquetShardedSource(path, metadata_sharing=Counting())
    assert source.row_counts() == [2]
    assert any("listing" in c for c in calls) and any("metadata" in c for c in calls)
    assert isinstance(ParquetShardedSource(path).metadata_sharing, SliceMetadata)
    assert isinstance(
        ParquetShardedSource(path, share_listing=False).metadata_sharing, LocalMetadata
    )
