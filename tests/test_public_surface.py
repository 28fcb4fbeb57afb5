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
