"""The ``easydata-grain`` command, run as users run it (a subprocess) on generated data:
``--version``, ``--help``, ``python -m easydata_grain``, ``inspect``, ``preview``, ``validate``
and ``demo``; and ``validate_url``'s promise (every problem listed, nothing else) as properties."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import unittest.mock
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easydata_grain.commands.validate import validate_url
from easydata_grain.synthetic import write_parquet_dataset
from tests.test_parquet_bad_input import checksummed_shard, damage_page

PACKAGE = Path(__file__).resolve().parents[1] / "easydata_grain"
HEAVY = ("jax", "jaxlib", "grain", "pyarrow", "orbax", "numpy", "datasets", "transformers")


def run(*args: str, cache: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m easydata_grain ARGS`` with the JSON index cache under ``cache``."""
    env = {**os.environ, "EASYDATA_GRAIN_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "easydata_grain", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("parquet")
    write_parquet_dataset(directory, num_shards=3, rows_per_shard=500, row_group_size=100)
    return directory


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


# -- the command itself ------------------------------------------------------------------------


def test_version_from_python_m_and_the_script(cache: Path) -> None:
    expected = f"easydata-grain {metadata.version('easydata-grain')}"
    result = run("--version", cache=cache)
    assert (result.returncode, result.stdout.strip()) == (0, expected)
    script = Path(sys.executable).with_name("easydata-grain")
    if script.exists():  # installed into this environment
        installed = subprocess.run([script, "--version"], capture_output=True, text=True)
        assert installed.stdout.strip() == expected


def test_help_lists_the_user_commands_only(cache: Path) -> None:
    result = run("--help", cache=cache)
    assert result.returncode == 0
    listed = [
        line.split()[0]
        for line in result.stdout.splitlines()
        if line.startswith("    ") and not line.startswith("     ")
    ]
    assert listed == ["run", "bench", "materialize", "inspect", "preview", "validate", "demo"]
    assert run("resume", "a", "b", cache=cache).returncode == 2  # not a command


# The command's own modules, imported with the package's __init__ left out (as a lazy __init__
# would leave it): what --help costs once the package imports lazily.
_HELP_WITHOUT_INIT = """
import sys, types
package = types.ModuleType("easydata_grain")
package.__path__ = [sys.argv[1]]
sys.modules["easydata_grain"] = package
import easydata_grain.__main__
from easydata_grain.cli import main
try:
    main(["--help"])
except SystemExit as exit:
    assert exit.code == 0
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_the_command_alone_imports_no_heavy_module_for_help() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _HELP_WITHOUT_INIT, str(PACKAGE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    imported = set(result.stdout.splitlines()[-1].split())
    assert "argparse" in imported and not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_help_imports_no_heavy_module(cache: Path) -> None:
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1", "EASYDATA_GRAIN_CACHE": str(cache)}
    result = subprocess.run(
        [sys.executable, "-m", "easydata_grain", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--shards", "0"], "argument --shards: must be at least 1, got 0"),
        (["demo", "--rows", "-3"], "argument --rows: must be at least 1, got -3"),
        (["demo", "--shards", "two"], "argument --shards: expected a whole number, got 'two'"),
        (["preview", "x", "-n", "0"], "argument -n/--rows: must be at least 1, got 0"),
        (["inspect", "x", "--batch-size", "0"], "argument --batch-size: must be at least 1"),
        (["inspect"], "the following arguments are required: URL"),
    ],
)
def test_argument_errors(args: list[str], message: str, cache: Path) -> None:
    result = run(*args, cache=cache)
    assert result.returncode == 2
    assert message in result.stderr


def test_a_missing_dataset_is_one_line_and_status_2(tmp_path: Path, cache: Path) -> None:
    for command in ("inspect", "preview", "validate"):
        result = run(command, str(tmp_path / "nothing" / "*.parquet"), cache=cache)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"easydata-grain {command}: ")
        assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


# -- inspect and preview -----------------------------------------------------------------------


def test_inspect_parquet(parquet_dir: Path, cache: Path) -> None:
    result = run("inspect", str(parquet_dir), "--shuffle-buffer-size", "64", cache=cache)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "ParquetShardedSource: 3 shard(s), 1,500 rows" in out
    for shard in range(3):
        assert f"shard-{shard:05d}.parquet" in out
    assert out.count("       500 rows") == 3
    assert "  id: int64\n" in out and "  input_ids: list<element: int32>\n" in out
    assert "  mode      indexed: " in out
    assert "windows of 64 consecutive rows" in out
    assert "  batch     8 rows per host" in out
    assert "  resume    exact" in out


def test_inspect_json_lines(tmp_path: Path, cache: Path) -> None:
    lines = [json.dumps({"id": i, "text": f"t{i}", "ids": [i, i]}) for i in range(30)]
    write_lines(tmp_path / "a.jsonl", lines)
    result = run("inspect", str(tmp_path / "a.jsonl"), "--batch-size", "4", cache=cache)
    assert result.returncode == 0, result.stderr
    assert "JsonShardedSource: 1 shard(s), 30 rows" in result.stdout
    assert "  id: int\n  text: str\n  ids: list<int64>\n" in result.stdout
    assert "  batch     4 rows per host" in result.stdout


def test_preview_shows_the_first_rows_in_shard_order(parquet_dir: Path, cache: Path) -> None:
    result = run("preview", str(parquet_dir), "-n", "3", cache=cache)
    assert result.returncode == 0, result.stderr
    headers = [line for line in result.stdout.splitlines() if line.startswith("row ")]
    assert headers == [f"row {i} of shard-00000.parquet" for i in range(3)]
    table = pq.read_table(parquet_dir / "shard-00000.parquet").slice(0, 3).to_pylist()
    for row in table:
        assert f"  id         {row['id']}\n" in result.stdout
        ids = row["input_ids"]
        assert f"  input_ids  int32[{len(ids)}] [{', '.join(map(str, ids[:3]))}" in result.stdout
    assert all(len(line) <= 102 for line in result.stdout.splitlines())


def test_preview_crosses_shards_and_shortens_long_values(tmp_path: Path, cache: Path) -> None:
    write_lines(tmp_path / "a.jsonl", [json.dumps({"text": "x" * 500, "n": [1] * 40})])
    write_lines(tmp_path / "b.jsonl", [json.dumps({"text": "short", "n": []})])
    result = run("preview", str(tmp_path), "-n", "5", cache=cache)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "row 0 of a.jsonl" in out and "row 0 of b.jsonl" in out
    assert "... (500 chars)" in out and "int64[40] [1, 1, 1, 1, 1, 1, 1, 1, ..., 1, 1]" in out
    assert "'short'" in out


# -- validate ------------------------------------------------------------------------------------


def test_validate_a_clean_dataset(parquet_dir: Path, cache: Path) -> None:
    result = run("validate", str(parquet_dir), cache=cache)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("3 shard(s), 1,500 rows read, no problems")


def test_validate_lists_every_parquet_problem(tmp_path: Path, cache: Path) -> None:
    shards = write_parquet_dataset(tmp_path, num_shards=4, rows_per_shard=300, row_group_size=100)
    pq.write_table(pa.table({"id": ["a"] * 5, "text": ["b"] * 5}), shards[1])  # drift
    data = Path(shards[2]).read_bytes()
    Path(shards[2]).write_bytes(data[: len(data) // 2])  # truncated footer
    (tmp_path / "shard-00009.parquet").write_bytes(b"")  # empty
    checksummed_shard(tmp_path / "shard-00010.parquet")
    damage_page(tmp_path / "shard-00010.parquet", group=2, column=0)  # a damaged page
    result = run("validate", str(tmp_path), cache=cache)
    assert result.returncode == 1, result.stderr
    problems = result.stdout.splitlines()[1:]
    assert len(problems) == 5, result.stdout
    assert "differs from" in problems[0] and "shard-00001" in problems[0]
    assert "missing columns ['input_ids']; different types for id" in problems[0]
    assert "shard-00002" in problems[1] and "no valid footer" in problems[1]
    assert "shard-00009" in problems[2] and "is empty (0 bytes)" in problems[2]
    # shard-00010 has other columns (id, x) and one damaged row group of four
    assert "shard-00010" in problems[3] and "differs from" in problems[3]
    assert "shard-00010" in problems[4] and "row group 2" in problems[4]
    assert "CRC checksum" in problems[4]
    # rows decoded: 300 + 5 + 300 (shard 3) + 300 (shard 10 without its damaged row group)
    assert result.stdout.splitlines()[0].endswith(": 6 shard(s), 905 rows read, 5 problem(s)")


def test_validate_lists_every_bad_json_line(tmp_path: Path, cache: Path) -> None:
    lines = [
        '{"id": 0, "text": "a"}',
        '{"id": 1, "text": "b"',
        "[1, 2]",
        '{"id": "3", "text": "c"}',
        '{"text": "d"}',
        '{"id": 5, "text": "e", "extra": 1}',
    ]
    write_lines(tmp_path / "p0.jsonl", lines)
    write_lines(tmp_path / "p1.jsonl", ['{"id": 7, "text": 1}', "not json"])
    result = run("validate", str(tmp_path), cache=cache)
    assert result.returncode == 1
    out = result.stdout
    assert "2 shard(s), 8 rows read, 7 problem(s)" in out
    assert "p0.jsonl' line 2 (row 1) is not valid JSON" in out
    assert "p0.jsonl' line 3 (row 2) is not a JSON object but an array" in out
    assert "p1.jsonl' line 2 (row 1) is not valid JSON" in out
    assert "p0.jsonl: 1 row(s) lack field 'id' (first: row 4)" in out
    assert "p0.jsonl: 1 row(s) have field 'extra' that the first row lacks (first: row 5)" in out
    assert "p0.jsonl: field 'id' holds a str in 1 row(s) (first: row 3), a number at" in out
    assert "p1.jsonl: field 'text' holds a number in 1 row(s) (first: row 0), a str at" in out
    assert "Skipped" not in result.stderr and "on_bad_row" not in out


def _cache_in(work: str) -> Any:
    """The JSON index cache under ``work`` while the block runs."""
    return unittest.mock.patch.dict(os.environ, {"EASYDATA_GRAIN_CACHE": f"{work}/cache"})


BAD_LINES = st.sampled_from(['{"id": 1', "[1]", '"text"', "nope", '{"id": 1}}'])


@settings(max_examples=25, deadline=None)
@given(
    rows=st.lists(st.one_of(st.none(), BAD_LINES), min_size=1, max_size=300),
    shards=st.integers(1, 3),
)
def test_validate_finds_exactly_the_bad_json_rows(rows: list[str | None], shards: int) -> None:
    """Random JSON Lines shards with random bad lines: every bad line is listed with its line
    number, no good line is, and every row is counted."""
    with tempfile.TemporaryDirectory() as work, _cache_in(work):
        expected = set()
        per_shard = -(-len(rows) // shards)
        for shard in range(shards):
            part = rows[shard * per_shard : (shard + 1) * per_shard]
            if not part:
                continue
            if part[0] is not None:
                part = [None, *part]  # a bad first line may make the whole file not JSON Lines
            path = Path(work) / f"s{shard}.jsonl"
            lines = [json.dumps({"id": i}) if line is None else line for i, line in enumerate(part)]
            write_lines(path, lines)
            expected |= {(str(path), i) for i, line in enumerate(part) if line is not None}
        report = validate_url(os.path.join(work, "*.jsonl"))
        found = {(p.shard, int(p.message.split("(row ")[1].split(")")[0])) for p in report.problems}
        assert {p.kind for p in report.problems} <= {"row"}
        assert found == expected
        for problem in report.problems:
            row = int(problem.message.split("(row ")[1].split(")")[0])
            assert f"line {row + 1} (row {row})" in problem.message
        assert report.rows == sum(1 for p in Path(work).glob("*.jsonl") for _ in p.open())


@settings(max_examples=15, deadline=None)
@given(drifting=st.sets(st.integers(1, 5)), shards=st.integers(1, 6))
def test_validate_flags_exactly_the_drifting_parquet_shards(
    drifting: set[int], shards: int
) -> None:
    with tempfile.TemporaryDirectory() as work, _cache_in(work):
        paths = write_parquet_dataset(work, num_shards=shards, rows_per_shard=20, max_tokens=4)
        drifting = {i for i in drifting if i < shards}
        for i in drifting:
            pq.write_table(pa.table({"id": [1.5] * 3}), paths[i])
        report = validate_url(work)
        assert {p.shard for p in report.problems} == {paths[i] for i in drifting}
        assert {p.kind for p in report.problems} <= {"schema"}
        assert report.rows == 20 * (shards - len(drifting)) + 3 * len(drifting)


# -- demo ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_says_what_it_proved_and_prints_no_vanishing_path(cache: Path) -> None:
    result = run("demo", "--shards", "2", "--rows", "1500", cache=cache, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = " ".join(result.stdout.split())  # paragraphs are wrapped at 100 columns
    assert out.startswith("Set up: 2 Parquet shard(s) x 1,500 rows")
    assert "in a temporary directory, deleted when the demo ends" in out
    assert "the demo does no training work" in out
    assert "Proved: - the epoch read each of the 3,000 rows exactly once;" in out
    assert "- yes: run 2's 23 batches and run 3's 24 are run 1's 47 batches" in out
    assert "- yes: the model state came back at step 23." in out
    assert tempfile.gettempdir() not in out and "easydata-grain-demo-" not in out
    assert all(len(line) <= 100 for line in result.stdout.splitlines() if "rows/s]" not in line)


@pytest.mark.slow
def test_demo_keeps_its_files_when_asked(tmp_path: Path, cache: Path) -> None:
    keep = tmp_path / "demo"
    result = run("demo", "--shards", "1", "--rows", "200", "--keep", str(keep), cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{keep}." in result.stdout.split()
    assert sorted(p.name for p in (keep / "data").iterdir()) == ["shard-00000.parquet"]
    assert (keep / "checkpoints").is_dir()


# -- pipeline configs ----------------------------------------------------------------------------


@pytest.fixture
def mixed_config(tmp_path: Path, parquet_dir: Path) -> Path:
    write_parquet_dataset(tmp_path / "code", num_shards=1, rows_per_shard=400, seed=3)
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        f"""datasets:
  - {{data_files: "{parquet_dir}/*.parquet", name: web, columns: [id]}}
  - {{data_files: "{tmp_path}/code/*.parquet", name: code, columns: [id]}}
mix: {{weights: {{web: 0.75, code: 0.25}}, stop_strategy: first_exhausted, block_size: 100}}
load: {{batch_size: 50, shuffle_buffer_size: 100}}
observability: {{progress_type: none}}
"""
    )
    return config


def test_run_a_config_then_resume_it(mixed_config: Path, tmp_path: Path, cache: Path) -> None:
    state = tmp_path / "state.json"
    first = run("run", str(mixed_config), "--steps", "10", "--save-state", str(state), cache=cache)
    assert first.returncode == 0, first.stderr
    assert "10 batches, 500 rows" in first.stdout and "web" in first.stdout
    assert "--resume" in first.stdout and state.exists()
    rest = run("run", str(mixed_config), "--resume", str(state), cache=cache)
    assert rest.returncode == 0, rest.stderr
    # 1,500 web rows at 0.75 and 400 code rows at 0.25: code runs out at 1,600 rows = 32 batches
    assert "22 batches, 1,100 rows" in rest.stdout
    assert "code 25.0%/25%" in rest.stdout


def test_inspect_and_bench_a_config(mixed_config: Path, cache: Path) -> None:
    inspected = run("inspect", str(mixed_config), cache=cache)
    assert inspected.returncode == 0, inspected.stderr
    assert "2 dataset(s)" in inspected.stdout and "mixture" in inspected.stdout
    bench = run("bench", str(mixed_config), "--steps", "10", cache=cache)
    assert bench.returncode == 0, bench.stderr
    assert "easydata-grain" in bench.stdout and "pyarrow" in bench.stdout and "x" in bench.stdout


def test_a_bad_config_names_the_field(tmp_path: Path, cache: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("datasets: [{data_files: x.parquet}]\nload: {batch_sise: 3}\n")
    result = run("run", str(config), cache=cache)
    assert result.returncode == 2
    assert "load.batch_sise: unknown field; did you mean batch_size?" in result.stderr
