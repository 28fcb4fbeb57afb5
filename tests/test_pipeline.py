"""``Pipeline``: the spec's "Streaming Pipeline" block, every stage's fields honoured, and the
errors a config gets instead of being half-applied."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from easydata_grain import AsyncDataLoader, ParquetShardedSource, RowOutOfRangeError
from easydata_grain.config import (
    DatasetConfig,
    LoadStageConfig,
    PipelineConfig,
    TokenizeStageConfig,
)
from easydata_grain.device_loader import DeviceLoader
from easydata_grain.pipeline import NotSupportedYetError, Pipeline
from easydata_grain.synthetic import tiny_tokenizer, write_parquet_dataset
from ops.emulators import StoreEndpoint

ROWS = 400


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("pipeline")
    write_parquet_dataset(directory, num_shards=2, rows_per_shard=ROWS, row_group_size=50)
    return str(directory)


def _ids(loader: object) -> list[int]:
    return [int(i) for batch in loader for i in batch["id"]]  # type: ignore[attr-defined]


def test_the_spec_block_on_gcs(gcs_store: StoreEndpoint, shards: str) -> None:
    bucket = gcs_store.new_bucket("pipeline")
    for path in sorted(Path(shards).glob("*.parquet")):
        gcs_store.upload(str(path), f"{bucket}/data/{path.name}")
    config = PipelineConfig(
        datasets=[
            DatasetConfig(
                data_files=f"{bucket}/data/*.parquet",
                type="parquet",
                columns=["id", "text"],  # the rows' token lists are ragged: not batched here
                storage_options=gcs_store.storage_options(),  # the emulator, not the cloud
            ),
        ],
        streaming=True,  # Enable streaming mode
        load=LoadStageConfig(
            batch_size=8,
            prefetch_enabled=True,
            prefetch_buffer_size=4,
            shuffle_buffer_size=10000,
        ),
    )
    pipeline = Pipeline.from_config(config)
    seen = []
    for batch in pipeline.source().load().build():
        assert len(batch["id"]) == 8 and len(batch["text"]) == 8
        seen.extend(int(i) for i in batch["id"])
    assert len(seen) == len(set(seen)) == 2 * ROWS  # 800 rows: 100 full batches
    assert seen != sorted(seen)  # shuffled


def test_dict_yaml_and_json_configs_equal_the_dataclass(shards: str, tmp_path: Path) -> None:
    data = {
        "datasets": [{"data_files": f"{shards}/*.parquet", "columns": ["id"]}],
        "seed": 3,
        "load": {"batch_size": 16, "shuffle_buffer_size": 100, "drop_last": False},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "c.json").write_text(json.dumps(data))
    dataclass = PipelineConfig(
        datasets=[DatasetConfig(data_files=f"{shards}/*.parquet", columns=["id"])],
        seed=3,
        load=LoadStageConfig(batch_size=16, shuffle_buffer_size=100, drop_last=False),
    )
    expected = _ids(Pipeline.from_config(dataclass).source().load().build())
    assert sorted(expected) == list(range(2 * ROWS))
    for config in (data, tmp_path / "c.yaml", str(tmp_path / "c.json")):
        assert _ids(Pipeline.from_config(config).source().load().build()) == expected


def test_the_load_stage_makes_the_loader_the_user_asked_for(shards: str) -> None:
    config = PipelineConfig(
        datasets=[DatasetConfig(data_files=f"{shards}/*.parquet", columns=["id"])],
        seed=5,
        load=LoadStageConfig(batch_size=32, shuffle_buffer_size=64, drop_last=False, num_epochs=2),
    )
    loader = Pipeline.from_config(config).source().load().build()
    assert isinstance(loader, AsyncDataLoader)
    direct = AsyncDataLoader(
        ParquetShardedSource(f"{shards}/*.parquet", columns=["id"]),
        batch_size=32,
        shuffle_buffer_size=64,
        seed=5,
        num_epochs=2,
    )
    assert (loader.batch_size, loader.seed, loader.num_epochs) == (32, 5, 2)
    assert len(loader) == -(-2 * 2 * ROWS // 32)
    ids = _ids(loader)
    assert sorted(ids) == sorted(list(range(2 * ROWS)) * 2)
    assert len(ids) == len(_ids(direct))
    # load() with its own config overrides the pipeline's
    other = Pipeline.from_config(config).source().load({"batch_size": 10, "drop_last": True})
    assert other.build().batch_size == 10


def test_num_rows_limits_exactly(shards: str) -> None:
    config = PipelineConfig(
        datasets=[DatasetConfig(data_files=f"{shards}/*.parquet", columns=["id"], num_rows=450)],
        load=LoadStageConfig(batch_size=7, drop_last=False, shuffle_buffer_size=0),
    )
    assert _ids(Pipeline.from_config(config).source().load().build()) == list(range(450))
    too_many = PipelineConfig(
        datasets=[DatasetConfig(data_files=f"{shards}/*.parquet", num_rows=2 * ROWS + 1)]
    )
    with pytest.raises(RowOutOfRangeError, match="has only 800 rows"):
        Pipeline.from_config(too_many).source().load().build()


def test_the_tokenize_stage_honours_its_fields(shards: str, tokenizer_dir: str) -> None:
    config = PipelineConfig(
        datasets=[
            DatasetConfig(
                data_files=f"{shards}/*.parquet",
                format_fields={"text": "body"},
                content_field="body",
                additional_fields=["id"],
                num_rows=64,
            )
        ],
        default_tokenizer=tokenizer_dir,
        load=LoadStageConfig(batch_size=8, shuffle_buffer_size=0, pad=True),
    )
    pipeline = Pipeline.from_config(config).source().tokenize(TokenizeStageConfig(max_length=6))
    loader = pipeline.load().build()
    batch = next(iter(loader))
    assert set(batch) >= {"id", "input_ids", "attention_mask"}
    assert "body" not in batch and "text" not in batch
    tokenizer = tiny_tokenizer()
    texts = [r["text"] for r in _first_rows(shards, 8)]
    expected = tokenizer(texts, max_length=6, truncation=True)["input_ids"]
    for row, ids in enumerate(expected):
        assert batch["input_ids"][row][: len(ids)].tolist() == ids
    assert batch["input_ids"].shape[1] <= 6
    assert batch["input_ids"].dtype == np.int32


def _first_rows(shards: str, n: int) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(sorted(Path(shards).glob("*.parquet"))[0]).slice(0, n).to_pylist()


def test_format_callback_and_remove_columns(shards: str, tokenizer_dir: str) -> None:
    config = PipelineConfig(
        datasets=[
            DatasetConfig(
                data_files=f"{shards}/*.parquet",
                format_callback=lambda row: {**row, "text": row["text"].upper()},
                num_rows=16,
            )
        ],
        default_tokenizer=tokenizer_dir,
        tokenize=TokenizeStageConfig(remove_columns=["text"]),
        load=LoadStageConfig(batch_size=4, shuffle_buffer_size=0, pad=True),
    )
    batch = next(iter(Pipeline.from_config(config).source().tokenize().load().build()))
    assert "text" not in batch
    upper = tiny_tokenizer()([_first_rows(shards, 1)[0]["text"].upper()])["input_ids"][0]
    assert batch["input_ids"][0][: len(upper)].tolist() == upper


def test_streaming_false_reads_rows_into_memory(shards: str) -> None:
    config = PipelineConfig(
        datasets=[DatasetConfig(data_files=f"{shards}/*.parquet", columns=["id"])],
        streaming=False,
        load=LoadStageConfig(batch_size=50, shuffle_buffer_size=0),
    )
    loader = Pipeline.from_config(config).source().load().build()
    assert type(loader.source).__name__ == "InMemorySource"
    assert _ids(loader) == list(range(2 * ROWS))


def test_the_source_stage_keeps_footers_in_the_metadata_cache(shards: str, tmp_path: Path) -> None:
    config = PipelineConfig.from_dict(
        {
            "datasets": [{"data_files": f"{shards}/*.parquet", "columns": ["id"]}],
            "source": {"metadata_cache_dir": str(tmp_path / "meta")},
            "load": {"batch_size": 50, "shuffle_buffer_size": 0},
        }
    )
    cold = Pipeline.from_config(config).source().load().build()
    assert cold.source.metadata_cache.misses == 2 and cold.source.metadata_cache.hits == 0
    warm = Pipeline.from_config(config).source().load().build()
    assert warm.source.metadata_cache.hits == 2 and warm.source.metadata_cache.misses == 0
    assert _ids(warm) == _ids(cold) == list(range(2 * ROWS))


def test_several_datasets_without_mix_is_an_error(shards: str) -> None:
    config = PipelineConfig(
        datasets=[
            DatasetConfig(data_files=f"{shards}/*.parquet", name="a"),
            DatasetConfig(data_files=f"{shards}/*.parquet", name="b"),
        ]
    )
    with pytest.raises(ValueError, match="no mix stage: call mix"):
        Pipeline.from_config(config).source().load().build()


def test_stages_must_come_in_order(shards: str) -> None:
    config = PipelineConfig(datasets=[DatasetConfig(data_files=f"{shards}/*.parquet")])
    with pytest.raises(ValueError, match="call source"):
        Pipeline.from_config(config).load()
    with pytest.raises(ValueError, match="must come before load"):
        Pipeline.from_config(config).source().load().tokenize()
    with pytest.raises(ValueError, match="already called"):
        Pipeline.from_config(config).source().source()
    with pytest.raises(TypeError, match="LoadStageConfig"):
        Pipeline.from_config(config).source().load(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="prefetch_buffer_size"):
        Pipeline.from_config(config).source().load({"prefetch_bufer_size": 2})


def test_build_without_stages_runs_the_configs_stages(shards: str, tokenizer_dir: str) -> None:
    config = PipelineConfig.from_dict(
        {
            "datasets": [{"data_files": f"{shards}/*.parquet", "additional_fields": []}],
            "default_tokenizer": tokenizer_dir,
            "pack": {"enabled": True, "seq_length": 32},
            "load": {"batch_size": 4, "shuffle_buffer_size": 16},
        }
    )
    direct = Pipeline.from_config(config).build()
    staged = Pipeline.from_config(config).configured().build()
    assert "pack" in direct.describe()
    for a, b in zip(direct, staged, strict=True):
        assert np.array_equal(a["input_ids"], b["input_ids"])


def test_fields_without_a_feature_are_refused_not_ignored(shards: str) -> None:
    files = f"{shards}/*.parquet"
    for extra, field in (
        ({"save": {"enabled": True, "format": "jsonl"}}, "save.format='jsonl'"),
        ({"save": {"enabled": True, "push_to_hub": True, "hub_repo_id": "a/b"}}, "push_to_hub"),
        ({"cache": {"cache_type": "memory"}}, "cache_type='memory'"),
        ({"cache": {"memory_cache_size": 5}}, "memory_cache_size=5"),
        ({"cache": {"hash_fn": "path"}}, "hash_fn='path'"),
    ):
        with pytest.raises(NotSupportedYetError, match=field):
            Pipeline.from_config({"datasets": [{"data_files": files}], **extra})
    with pytest.raises(NotSupportedYetError, match=r"datasets\[0\].save_path: the format 'arrow'"):
        Pipeline.from_config(
            {"datasets": [{"data_files": files, "save_path": "/x", "save_format": "arrow"}]}
        )
    pipeline = Pipeline.from_config({"datasets": [{"data_files": files}]}).source()
    with pytest.raises(NotSupportedYetError, match=r"save\.format='arrow'"):
        pipeline.save({"format": "arrow"})


def test_the_state_resumes_exactly(shards: str) -> None:
    config = PipelineConfig(
        datasets=[DatasetConfig(data_files=f"{shards}/*.parquet", columns=["id"])],
        seed=9,
        load=LoadStageConfig(batch_size=16, shuffle_buffer_size=50),
    )
    straight = _ids(Pipeline.from_config(config).source().load().build())
    first = Pipeline.from_config(config).source().load().build()
    head = [int(i) for _, batch in zip(range(7), first, strict=False) for i in batch["id"]]
    state = json.dumps(first.get_state())
    second = Pipeline.from_config(config).source().load().build()
    second.set_state(state)
    assert head + _ids(second) == straight


def test_prefetch_to_device_yields_global_arrays_and_exact_state(shards: str) -> None:
    import jax

    config = PipelineConfig(
        datasets=[DatasetConfig(data_files=f"{shards}/*.parquet", columns=["id", "text"])],
        load=LoadStageConfig(batch_size=16, shuffle_buffer_size=50, prefetch_to_device=True),
    )
    loader = Pipeline.from_config(config).source().load().build()
    assert isinstance(loader, DeviceLoader)
    assert "device" in loader.describe()
    batches = [next(loader) for _ in range(3)]
    assert isinstance(batches[0]["id"], jax.Array) and isinstance(batches[0]["text"], list)
    state = loader.get_state()  # the thread has built batches ahead: the state must not move
    rest = [int(i) for batch in loader for i in batch["id"]]
    plain = (
        Pipeline.from_config(config)
        .source()
        .load({"batch_size": 16, "shuffle_buffer_size": 50})
        .build()
    )
    plain.set_state(state)
    assert rest == _ids(plain)
    loader.set_state(state)
    assert [int(i) for batch in loader for i in batch["id"]] == rest


@pytest.mark.parametrize("picked", [{"split": "validation"}, {"subset": "en"}])
def test_split_or_subset_on_files_is_an_error_not_ignored(shards: str, picked: dict) -> None:
    config = {"datasets": [{"data_files": f"{shards}/*.parquet", "name": "web", **picked}]}
    with pytest.raises(ValueError, match=r"Dataset 'web': split=.* point data_files at"):
        Pipeline.from_config(config).build()


def test_add_source_field_labels_a_single_dataset_as_a_mixture_would(shards: str) -> None:
    config = {
        "datasets": [{"data_files": f"{shards}/*.parquet", "name": "web", "columns": ["id"]}],
        "mix": {"add_source_field": "source"},
        "load": {"batch_size": 100},
    }
    batches = list(Pipeline.from_config(config).configured().build())
    assert {s for batch in batches for s in batch["source"]} == {"web"}
    assert sorted(_ids(batches)) == list(range(2 * ROWS))
