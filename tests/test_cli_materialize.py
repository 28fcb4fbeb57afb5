"""``easydata-grain materialize CONFIG --output URL``, run as users run it (a subprocess): the
summary it prints, the rows it writes (the pipeline's), an existing output refused and
replaced with ``--overwrite``, ``--workers``, and a bad config's one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from easydata_grain.pipeline import Pipeline
from easydata_grain.synthetic import tiny_tokenizer, write_parquet_dataset
from tests.test_materialize import files_of
from tests.test_pipeline_save import documents, unpacked


def materialize(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m easydata_grain materialize ARGS``."""
    return subprocess.run(
        [sys.executable, "-m", "easydata_grain", "materialize", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("cli")
    write_parquet_dataset(directory / "data", num_shards=2, rows_per_shard=200, max_tokens=16)
    tiny_tokenizer().save_pretrained(directory / "tok")
    path = directory / "pipeline.yaml"
    settings = {
        "datasets": [{"data_files": str(directory / "data" / "*.parquet")}],
        "default_tokenizer": str(directory / "tok"),
        "pack": {"enabled": True, "seq_length": 32},
        "load": {"shuffle_buffer_size": 64},
        "save": {"num_shards": 3},
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def test_materialize_writes_the_pipeline_and_prints_a_summary(
    config_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = materialize(str(config_file), "--output", str(out))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f"wrote 3 shard(s), {manifest['rows']:,} rows (400 positions), ")
    assert lines[0].endswith(" s") and " bytes in " in lines[0]
    assert lines[1] == f"manifest: {out}/manifest.json"
    rows = Pipeline.from_config(config_file).configured().rows()
    written = [r for s in manifest["shards"] for r in pq.read_table(out / s["name"]).to_pylist()]
    assert {len(r["input_ids"]) for r in written} == {32}
    assert unpacked(written) == documents(rows.rows, tiny_tokenizer().eos_token_id)

    again = materialize(str(config_file), "--output", str(out))
    assert again.returncode == 2
    assert f"{out} already holds an output ({out}/manifest.json)" in again.stderr
    assert "Pass --overwrite" in again.stderr

    two = tmp_path / "two"
    replaced = materialize(str(config_file), "--output", str(two), "--workers", "2")
    assert replaced.returncode == 0, replaced.stderr
    assert files_of(two) == files_of(out)  # the same bytes with 2 worker processes
    overwritten = materialize(str(config_file), "--output", str(out), "--overwrite")
    assert overwritten.returncode == 0, overwritten.stderr
    assert files_of(out) == files_of(two)


def test_a_bad_config_or_argument_is_one_line(config_file: Path, tmp_path: Path) -> None:
    missing = materialize(str(tmp_path / "none.yaml"), "--output", str(tmp_path / "o"))
    assert missing.returncode == 2 and "none.yaml" in missing.stderr
    assert "Traceback" not in missing.stderr
    no_output = materialize(str(config_file))
    assert no_output.returncode == 2 and "--output" in no_output.stderr
    bad_engine = materialize(str(config_file), "--output", "x", "--engine", "spark")
    assert bad_engine.returncode == 2 and "invalid choice: 'spark'" in bad_engine.stderr


def test_materialize_help_is_fast_and_lists_the_options() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "easydata_grain", "materialize", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert result.returncode == 0
    for option in ("--output", "--overwrite", "--engine", "--workers"):
        assert option in result.stdout
    imported = result.stderr
    assert "pyarrow" not in imported and "grain" not in imported.replace("easydata_grain", "")


def test_an_output_that_cannot_be_written_is_a_clear_error() -> None:
    base = Path(tempfile.mkdtemp(prefix="read-only-"))
    try:
        base.chmod(0o755)  # readable by the user the command runs as
        write_parquet_dataset(base / "data", num_shards=1, rows_per_shard=50, max_tokens=8)
        tiny_tokenizer().save_pretrained(base / "tok")
        config = base / "pipeline.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "datasets": [{"data_files": str(base / "data" / "*.parquet")}],
                    "default_tokenizer": str(base / "tok"),
                }
            )
        )
        subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
        out = base / "out"
        out.mkdir()
        out.chmod(0o555)
        as_nobody = (lambda: os.setuid(65534)) if os.geteuid() == 0 else None  # root writes anyway
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "easydata_grain",
                "materialize",
                str(config),
                "--output",
                str(out),
            ],
            cwd=base,
            env={**os.environ, "HOME": str(base)},
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=as_nobody,
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert str(out) in result.stderr and "can be written" in result.stderr
        assert "Traceback" not in result.stderr
        assert list(out.iterdir()) == []  # nothing half-written
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)
