"""The multi-host simulator works from any directory and writes nothing into the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from easydata_grain.synthetic import write_parquet_dataset
from tpu_scripts.simulate_multihost import TRAIN_EXAMPLE, SimulatedSlice, events, read_logs

REPO_ROOT = Path(__file__).resolve().parents[1]
SIMULATOR = REPO_ROOT / "tpu_scripts" / "simulate_multihost.py"


def untracked() -> set[str]:
    """The files ``git status --porcelain`` lists as new (untracked, not ignored)."""
    output = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line[3:] for line in output.splitlines() if line.startswith("??")}


def test_paths_resolve_against_the_callers_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    simulated = SimulatedSlice(2, script="train.py", work_dir="work")
    assert simulated.cwd == tmp_path
    assert simulated.script == tmp_path / "train.py"
    assert simulated.work_dir == tmp_path / "work"


def test_default_work_dir_is_outside_the_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT)
    work_dir = SimulatedSlice(2).work_dir
    try:
        assert not work_dir.is_relative_to(REPO_ROOT)
    finally:
        work_dir.rmdir()


def test_command_line_from_another_directory(tmp_path: Path) -> None:
    """Relative paths everywhere (simulator, script, data, log, checkpoints, work dir)."""
    write_parquet_dataset(tmp_path / "data", num_shards=2, rows_per_shard=16, max_tokens=8)
    before = untracked()
    command = [
        sys.executable,
        os.path.relpath(SIMULATOR, tmp_path),
        "--hosts",
        "2",
        "--timeout",
        "240",
        "--work-dir",
        "work",
        "--script",
        os.path.relpath(TRAIN_EXAMPLE, tmp_path),
        "--",
        "--data",
        "data/*.parquet",
        "--global-batch",
        "4",
        "--seq-len",
        "8",
        "--steps",
        "3",
        "--save-every",
        "2",
        "--checkpoint-dir",
        "ckpt",
        "--log",
        "log",
    ]
    finished = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    ends = events(read_logs(tmp_path / "log"), "end")
    assert sorted(ends) == [0, 1] and all(records[0]["steps"] == 3 for records in ends.values())
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [
        "host-0.err",
        "host-0.out",
        "host-1.err",
        "host-1.out",
    ]
    assert (tmp_path / "ckpt" / "2").is_dir()
    assert not untracked() - before, f"new in the repository: {untracked() - before}"
