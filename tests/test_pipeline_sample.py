"""docs/pipeline.yaml, the sample config, runs end to end: only what points outside this machine
(its buckets, their credentials, the Hub tokenizer) and the million-row ``num_rows`` are
replaced by generated local stand-ins; every other field is the sample's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from easydata_grain import Pipeline
from easydata_grain.synthetic import tiny_tokenizer, write_parquet_dataset

SAMPLE = Path(__file__).resolve().parents[1] / "docs" / "pipeline.yaml"


def test_the_sample_config_runs(tmp_path: Path) -> None:
    config = yaml.safe_load(SAMPLE.read_text())
    web, code = config["datasets"]
    assert web["data_files"].startswith("gs://") and code["data_files"].startswith("s3://")
    write_parquet_dataset(tmp_path / "web", num_shards=2, rows_per_shard=100, max_tokens=8)
    web["data_files"] = f"{tmp_path}/web/*.parquet"
    del web["storage_options"]  # the cloud credentials of the real bucket
    (tmp_path / "code").mkdir()
    body = "\n".join(f"    y{j} = x + {j}" for j in range(60))  # ~700 tokens: 3 packed batches
    rows = [{"content": f"def f{i}(x):\n{body}", "repo": "r"} for i in range(300)]
    (tmp_path / "code" / "0.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code["data_files"] = f"{tmp_path}/code/*.jsonl"
    assert code["num_rows"] > len(rows)
    code["num_rows"] = 200
    tiny_tokenizer().save_pretrained(tmp_path / "tokenizer")
    config["default_tokenizer"] = str(tmp_path / "tokenizer")
    config["observability"]["progress_type"] = "none"

    loader = Pipeline.from_config(config).build()
    length = config["pack"]["seq_length"]
    for step, batch in enumerate(loader):
        assert batch["input_ids"].shape == (config["load"]["batch_size"], length)
        assert "text" not in batch and "content" not in batch  # tokenize.remove_columns
        if step == 2:
            break
    else:
        pytest.fail("the sample config gave fewer than 3 batches")
