"""``worker_processes > 0`` in a plain script: no absl set-up, every row, and a quiet exit.

Each test writes a script, as a user would, and runs it in a fresh interpreter: only there do
unparsed absl flags, spawned workers and interpreter teardown behave as they do for users.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from absl import flags

REPO = Path(__file__).resolve().parents[1]
ROWS = 30

# Iterates a loader with two worker processes at the top level of ``__main__`` (so the last
# batch stays alive until the interpreter exits); argv: directory, then "all" batches, "stop"
# after two, or "close" the loader after two.
PLAIN_SCRIPT = f"""
import sys

import pyarrow as pa
import pyarrow.parquet as pq

from easydata_grain import AsyncDataLoader, ParquetShardedSource

if __name__ == "__main__":
    directory, how = sys.argv[1:]
    path = f"{{directory}}/data.parquet"
    table = pa.table({{"id": range({ROWS}), "input_ids": [[i] * 4 for i in range({ROWS})]}})
    pq.write_table(table, path, row_group_size=7)
    loader = AsyncDataLoader(ParquetShardedSource(path), batch_size=4, worker_processes=2)
    ids = []
    for batch in loader:
        ids += batch["id"].tolist()
        if how != "all" and len(ids) == 8:
            break
    if how == "close":
        loader.close()
    print(len(ids), sorted(ids) == list(range({ROWS})))
"""

# Defines a flag of its own and parses the command line itself, before building a loader with
# worker processes or after reading all its batches; prints the flag's value and the row count.
FLAGS_SCRIPT = f"""
import sys

import pyarrow as pa
import pyarrow.parquet as pq
from absl import app, flags

from easydata_grain import AsyncDataLoader, ParquetShardedSource

ANSWER = flags.DEFINE_integer("answer", 1, "A flag of the script's own.")


def rows(directory):
    path = f"{{directory}}/data.parquet"
    pq.write_table(pa.table({{"id": range({ROWS})}}), path)
    loader = AsyncDataLoader(ParquetShardedSource(path), batch_size=4, worker_processes=2)
    return sum(len(batch["id"]) for batch in loader)


if __name__ == "__main__":
    how, directory = sys.argv[1], sys.argv[2]
    if how == "argv-after-loader":
        count = rows(directory)
        flags.FLAGS(sys.argv)
        print(ANSWER.value, count)
    elif how == "argv-before-loader":
        flags.FLAGS(sys.argv)
        print(ANSWER.value, rows(directory))
    elif how == "app-run-after-loader":
        count = rows(directory)
        app.run(lambda argv: print(ANSWER.value, count))
    else:
        app.run(lambda argv: print(ANSWER.value, rows(argv[2])))
"""


def run_script(directory: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as a script in a fresh interpreter that imports this checkout."""
    script = directory / "script.py"
    script.write_text(textwrap.dedent(source))
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_a_plain_script_reads_every_row_with_worker_processes(tmp_path: Path) -> None:
    result = run_script(tmp_path, PLAIN_SCRIPT, str(tmp_path), "all")
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.split() == [str(ROWS), "True"]


@pytest.mark.parametrize("how", ["all", "stop", "close"])
def test_a_plain_script_with_worker_processes_exits_quietly(tmp_path: Path, how: str) -> None:
    """Nothing left to free at exit, whether the script reads every batch, stops early or
    closes the loader, though it still holds a batch: no teardown errors, no leaks."""
    result = run_script(tmp_path, PLAIN_SCRIPT, str(tmp_path), how)
    assert result.returncode == 0, result.stderr[-4000:]
    for noise in ("Exception ignored", "leaked", "Traceback"):
        assert noise not in result.stderr, result.stderr[-4000:]
    assert result.stdout.split()[0] == str(ROWS if how == "all" else 8)


@pytest.mark.parametrize(
    "how",
    ["argv-after-loader", "argv-before-loader", "app-run-after-loader", "app-run-runs-loader"],
)
def test_a_script_that_parses_its_own_flags_keeps_their_values(tmp_path: Path, how: str) -> None:
    result = run_script(tmp_path, FLAGS_SCRIPT, how, str(tmp_path), "--answer=42")
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.split() == ["42", str(ROWS)]


def test_unparsed_flags_are_marked_parsed_and_still_parse_later() -> None:
    from easydata_grain.graph.worker_processes import allow_unparsed_flags

    values = flags.FlagValues()
    flags.DEFINE_integer("answer", 1, "", flag_values=values)
    allow_unparsed_flags(values)
    assert values.is_parsed() and values.answer == 1
    assert values(["program", "--answer=42", "rest"]) == ["program", "rest"]
    assert values.answer == 42
    allow_unparsed_flags(values)  # parsed: left alone
    assert values.answer == 42 and values["answer"].present
