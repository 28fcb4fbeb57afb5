"""A function's identity in fingerprints follows its code and the values it captures, so a
cache or a saved state made with an edited function is not taken for the new one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from easydata_grain import MapFunction, Pipeline
from easydata_grain.fingerprint import callable_identity

SCALE = 3


def scaled(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "x": row["id"] * SCALE}


def with_value(value: Any) -> Any:
    return lambda row: {**row, "x": value}


def test_an_edited_lambda_body_changes_the_identity() -> None:
    assert callable_identity(lambda r: {**r, "x": 1}) != callable_identity(lambda r: {**r, "x": 2})
    assert callable_identity(lambda r: r["a"]) != callable_identity(lambda r: r["b"])
    assert MapFunction(lambda r: r).identity != MapFunction(lambda r: {**r}).identity


@pytest.mark.parametrize(
    ("one", "other"),
    [(1, 2), ("a", "b"), ((1, 2), (1, 3)), (np.arange(3), np.arange(1, 4)), (1.0, 1.5)],
)
def test_a_captured_value_is_part_of_the_identity(one: Any, other: Any) -> None:
    assert callable_identity(with_value(one)) != callable_identity(with_value(other))
    assert callable_identity(with_value(one)) == callable_identity(with_value(one))


def test_a_module_level_value_the_function_reads_is_part_of_the_identity() -> None:
    global SCALE
    before = callable_identity(scaled)
    SCALE = 4
    try:
        assert callable_identity(scaled) != before
    finally:
        SCALE = 3
    assert callable_identity(scaled) == before


def test_a_captured_list_or_dict_changing_as_rows_run_keeps_the_identity() -> None:
    calls: list[int] = []
    memo: dict[int, int] = {}

    def counted(row: dict[str, Any]) -> dict[str, Any]:
        calls.append(row["id"])
        memo[row["id"]] = len(calls)
        return row

    before = callable_identity(counted)
    for i in range(5):
        counted({"id": i})
    assert callable_identity(counted) == before


def test_recursive_functions_partials_and_callable_objects_have_identities() -> None:
    import functools

    def fact(n: int) -> int:
        return 1 if n < 2 else n * fact(n - 1)

    class Add:
        def __init__(self, k: int) -> None:
            self.k = k

        def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
            return {**row, "x": row["id"] + self.k}

    assert callable_identity(fact).startswith(f"{__name__}.")
    assert callable_identity(Add(1)) != callable_identity(Add(2))
    assert callable_identity(functools.partial(max, 1)) != callable_identity(
        functools.partial(max, 2)
    )


def test_the_identity_is_the_same_in_another_process() -> None:
    code = (
        "import json; from tests.test_callable_identity import identities; "
        "print(json.dumps(identities()))"
    )
    seen = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=Path(__file__).parent.parent,
        ).stdout
        for seed in ("1", "2")
    ]
    assert json.loads(seen[0]) == json.loads(seen[1]) == identities()


def identities() -> list[str]:
    """Identities of functions with sets, frozensets and nested functions in them."""
    return [
        callable_identity(lambda r: r["a"] in {"x", "y", "z"}),
        callable_identity(with_value(frozenset({"p", "q", "r"}))),
        callable_identity(scaled),
    ]


def test_an_edited_format_callback_misses_the_cache(tmp_path: Path) -> None:
    data = tmp_path / "a.jsonl"
    data.write_text("".join(json.dumps({"id": i}) + "\n" for i in range(4)))

    def values(callback: Any) -> list[int]:
        config = {
            "datasets": [
                {
                    "data_files": str(data),
                    "cache_path": str(tmp_path / "cache"),
                    "format_callback": callback,
                }
            ],
            "load": {"batch_size": 4, "drop_last": False},
        }
        return [int(x) for batch in Pipeline.from_config(config).build() for x in batch["x"]]

    assert values(lambda r: {**r, "x": 1}) == [1, 1, 1, 1]
    assert values(lambda r: {**r, "x": 2}) == [2, 2, 2, 2]
    assert values(with_value(5)) == [5, 5, 5, 5]
    assert values(with_value(6)) == [6, 6, 6, 6]
    assert len(os.listdir(tmp_path / "cache")) == 4


def _defined(source: str, name: str) -> Any:
    """``name`` from ``source`` run as a module's code (two versions of one definition)."""
    namespace: dict[str, Any] = {"__name__": "user_module"}
    exec(source, namespace)
    return namespace[name]


def test_regexes_getters_and_methods_count_by_what_they_do() -> None:
    import operator
    import re

    import grain

    from easydata_grain.fingerprint import describe

    assert callable_identity(re.compile("-").sub) != callable_identity(re.compile("_").sub)
    uses = "import re\nPAT = re.compile({!r})\ndef clean(row):\n    return PAT.sub(' ', row)\n"
    assert callable_identity(_defined(uses.format("-"), "clean")) != callable_identity(
        _defined(uses.format("_"), "clean")
    )
    assert describe(operator.itemgetter("a")) != describe(operator.itemgetter("b"))
    assert describe(operator.methodcaller("strip")) != describe(operator.methodcaller("lower"))
    mapper = "import grain\nclass Up(grain.transforms.Map):\n    def map(self, row):\n        {}\n"
    one = _defined(mapper.format("return {'t': row['t'].upper()}"), "Up")()
    other = _defined(mapper.format("return {'t': row['t'].lower()}"), "Up")()
    assert isinstance(one, grain.transforms.Map) and describe(one) != describe(other)
    caller = "class F:\n    def __call__(self, row):\n        return self.f(row)\n    def f(self, row):\n        return {}\n"
    assert callable_identity(_defined(caller.format("1"), "F")()) != callable_identity(
        _defined(caller.format("2"), "F")()
    )


def test_a_function_of_the_programs_own_module_is_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    monkeypatch.syspath_prepend(str(tmp_path))
    identities = []
    for body in ("text.lower()", "text.upper()"):
        (tmp_path / "textutils_probe.py").write_text(f"def normalize(text):\n    return {body}\n")
        sys.modules.pop("textutils_probe", None)
        importlib.invalidate_caches()
        module = importlib.import_module("textutils_probe")
        use = _defined("def clean(row):\n    return textutils_probe.normalize(row)\n", "clean")
        use.__globals__["textutils_probe"] = module
        identities.append(callable_identity(use))
    assert identities[0] != identities[1]
