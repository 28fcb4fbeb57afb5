"""``Pipeline.save()``, ``save.enabled``/``save_path``, ``ray.enabled`` and the cache stage:
saved rows equal the loader's, a packed save is the same bytes whatever the worker count or
engine and loses no token, a second build reads the cache (nothing upstream runs), a changed
tokenizer misses it, a corrupted entry is made again, and the errors name the path."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from easydata_grain import (
    CacheRebuiltWarning,
    InMemorySource,
    ManifestMismatchError,
    OutputExistsError,
    Pack,
    SchemaMismatchError,
    ShardNotFoundError,
)
from easydata_grain.materialize import EpochRows, open_materialized
from easydata_grain.materialize.packed_rows import PackedRows
from easydata_grain.pipeline import Pipeline
from easydata_grain.synthetic import tiny_tokenizer, write_parquet_dataset
from ops.emulators import StoreEndpoint
from tests.helpers import start_ray_for_tests
from tests.test_materialize import files_of

ROWS = 300


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("data")
    write_parquet_dataset(directory, num_shards=2, rows_per_shard=ROWS, max_tokens=24)
    return str(directory)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """Two tokenizer directories: the tiny tokenizer, and one with another vocabulary."""
    first, second = tmp_path_factory.mktemp("tok512"), tmp_path_factory.mktemp("tok300")
    tiny_tokenizer().save_pretrained(first)
    tiny_tokenizer(vocab_size=300).save_pretrained(second)
    return str(first), str(second)


def config(data: str, tokenizer: str, **extra: Any) -> dict[str, Any]:
    """A tokenize pipeline over the generated shards, shuffled, every row kept."""
    dataset = {"data_files": f"{data}/*.parquet", **extra.pop("dataset", {})}
    return {
        "datasets": [dataset],
        "default_tokenizer": tokenizer,
        "tokenize": {"remove_columns": ["text"]},
        "load": {"batch_size": 16, "shuffle_buffer_size": 128, "drop_last": False, "pad": True},
        **extra,
    }


def loader_rows(loader: Any) -> list[tuple[int, list[int]]]:
    """``(id, input_ids)`` of every row the loader gives, in order (padding removed)."""
    out = []
    for batch in loader:
        for i, ids, mask in zip(
            batch["id"], batch["input_ids"], batch["input_ids_mask"], strict=True
        ):
            out.append((int(i), ids[mask].tolist()))
    return out


def saved_rows(output: str | Path) -> list[tuple[int, list[int]]]:
    rows = []
    for shard in sorted(Path(output).glob("part-*.parquet")):
        rows += [(r["id"], r["input_ids"]) for r in pq.read_table(shard).to_pylist()]
    return rows


def test_save_from_a_dict_or_yaml_config_equals_the_loaders_rows(
    data: str, tokenizers: tuple[str, str], tmp_path: Path
) -> None:
    settings = config(data, tokenizers[0])
    expected = loader_rows(Pipeline.from_config(settings).configured().build())
    assert sorted(i for i, _ in expected) == list(range(2 * ROWS))

    done = Pipeline.from_config(settings).configured().save({"output_dir": str(tmp_path / "a")})
    assert saved_rows(tmp_path / "a") == expected
    assert done.manifest.rows == 2 * ROWS and done.output == str(tmp_path / "a")

    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(settings))
    out = tmp_path / "b"
    Pipeline.from_config(path).configured().save({"output_dir": str(out), "num_shards": 3})
    assert saved_rows(out) == expected
    assert len(list(out.glob("part-*.parquet"))) == 3


def test_save_settings_are_honoured(data: str, tokenizers: tuple[str, str], tmp_path: Path) -> None:
    pipeline = Pipeline.from_config(config(data, tokenizers[0])).configured()
    out = str(tmp_path / "out")
    done = pipeline.save({"output_dir": out, "compression": "snappy", "max_shard_size": 4000})
    assert done.manifest.compression == "snappy"
    assert len(done.manifest.shards) > 3  # small shards: the size is honoured
    assert {
        pq.ParquetFile(f).metadata.row_group(0).column(0).compression
        for f in Path(out).glob("*.parquet")
    } == {"SNAPPY"}
    with pytest.raises(OutputExistsError, match=r"manifest\.json exists") as error:
        pipeline.save({"output_dir": out})
    assert isinstance(error.value, FileExistsError) and error.value.path == f"{out}/manifest.json"
    again = pipeline.save({"output_dir": out, "num_shards": 2, "overwrite": True})
    assert sorted(os.listdir(out)) == ["manifest.json", "part-00000.parquet", "part-00001.parquet"]
    assert again.manifest.rows == 2 * ROWS

    other = Pipeline.from_config(config(data, tokenizers[1])).configured()
    with pytest.raises(ManifestMismatchError, match="another pipeline: tokenizers"):
        open_materialized(out, other.rows().fingerprint())


def test_save_enabled_and_save_path_write_when_the_loader_is_built(
    data: str, tokenizers: tuple[str, str], tmp_path: Path
) -> None:
    out, own = tmp_path / "pipeline", tmp_path / "dataset"
    settings = config(
        data,
        tokenizers[0],
        dataset={"save_path": str(own)},
        save={"enabled": True, "output_dir": str(out)},
    )
    loader = Pipeline.from_config(settings).configured().build()
    rows = loader_rows(loader)
    assert saved_rows(out) == rows
    # The dataset's own rows: tokenized, in its files' order.
    assert [i for i, _ in saved_rows(own)] == list(range(2 * ROWS))
    tokenizer = tiny_tokenizer()
    first = pq.read_table(sorted(Path(data).glob("*.parquet"))[0]).slice(0, 3).to_pylist()
    assert [ids for _, ids in saved_rows(own)[:3]] == tokenizer([r["text"] for r in first])[
        "input_ids"
    ]
    # A restarted job builds again: what this pipeline wrote is kept, not written again.
    written = {p: p.stat().st_mtime_ns for p in [*out.iterdir(), *own.iterdir()]}
    again = Pipeline.from_config(settings).configured().build()
    assert loader_rows(again) == rows
    assert {p: p.stat().st_mtime_ns for p in [*out.iterdir(), *own.iterdir()]} == written
    # Another pipeline's output there is an error (overwrite: false) ...
    other = config(
        data,
        tokenizers[1],
        dataset={"save_path": str(own)},
        save={"enabled": True, "output_dir": str(out)},
    )
    with pytest.raises(OutputExistsError):
        Pipeline.from_config(other).configured().build()
    # ... and so is an output of this pipeline that lost a shard.
    next(out.glob("part-*.parquet")).unlink()
    with pytest.raises(ShardNotFoundError):
        Pipeline.from_config(settings).configured().build()


def test_a_mixture_saves_the_loaders_first_pass(
    data: str, tokenizers: tuple[str, str], tmp_path: Path
) -> None:
    settings = config(data, tokenizers[0])
    settings["datasets"] = [
        {"name": "a", "data_files": f"{data}/*-00000.parquet"},
        {"name": "b", "data_files": f"{data}/*-00001.parquet"},
    ]
    settings["mix"] = {"weights": {"a": 0.7, "b": 0.3}, "block_size": 50, "add_source_field": "src"}
    expected = loader_rows(Pipeline.from_config(settings).configured().build())
    Pipeline.from_config(settings).configured().save({"output_dir": str(tmp_path / "mix")})
    assert saved_rows(tmp_path / "mix") == expected
    assert {
        r["src"] for r in pq.read_table(tmp_path / "mix" / "part-00000.parquet").to_pylist()
    } == {"a", "b"}


def unpacked(table_rows: list[dict[str, Any]]) -> list[int]:
    """The real tokens of packed rows, in order (padding left out)."""
    return [
        t
        for row in table_rows
        for t, s in zip(row["input_ids"], row["segment_ids"], strict=True)
        if s > 0
    ]


def documents(rows: Any, eos: int) -> list[int]:
    """Every token of the documents before packing, in order, with EOS appended."""
    out: list[int] = []
    for ids in rows.table(0, rows.num_positions()).column("input_ids").to_pylist():
        out += ids + ([eos] if ids[-1] != eos else [])
    return out


def test_a_packed_save_is_the_same_bytes_with_1_and_2_workers_and_loses_no_token(
    data: str, tokenizers: tuple[str, str], tmp_path: Path
) -> None:
    settings = config(data, tokenizers[0], pack={"enabled": True, "seq_length": 64})
    pipeline = Pipeline.from_config(settings).configured()
    one = pipeline.save({"output_dir": str(tmp_path / "one"), "num_shards": 4}, workers=1)
    two = pipeline.save({"output_dir": str(tmp_path / "two"), "num_shards": 4}, workers=2)
    assert files_of(tmp_path / "one") == files_of(tmp_path / "two")
    assert one.manifest == two.manifest and len(one.manifest.shards) == 4
    rows = pipeline.rows()
    assert isinstance(rows, PackedRows)
    table = [
        r for s in one.manifest.shards for r in pq.read_table(tmp_path / "one" / s.name).to_pylist()
    ]
    assert {len(r["input_ids"]) for r in table} == {64}
    assert unpacked(table) == documents(rows.rows, tiny_tokenizer().eos_token_id)


@settings(max_examples=20, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 30), min_size=1, max_size=60),
    seq_length=st.integers(1, 40),
    unit_rows=st.integers(1, 70),
    strategy=st.sampled_from(["greedy", "first_fit"]),
)
def test_packed_units_keep_every_token_in_order(
    lengths: list[int], seq_length: int, unit_rows: int, strategy: str
) -> None:
    """Each range packed from an empty packer: the ranges' rows, unpacked, are the documents in
    order (greedy) or the documents of each range (first fit keeps documents whole)."""
    tokens = iter(range(1, 10**6))
    docs = [[next(tokens) for _ in range(n)] for n in lengths]
    rows = EpochRows(InMemorySource.from_rows([{"input_ids": d} for d in docs]))
    packed = PackedRows(rows, Pack(seq_length=seq_length, strategy=strategy))  # type: ignore[arg-type]
    for start in range(0, len(docs), unit_rows):
        stop = min(len(docs), start + unit_rows)
        table = packed.table(start, stop).to_pylist()
        assert all(len(r["input_ids"]) == seq_length for r in table)
        got = unpacked(table)
        want = [t for d in docs[start:stop] for t in d]
        assert (got if strategy == "greedy" else sorted(got)) == want


def test_the_cache_hits_on_the_second_build_and_a_new_tokenizer_misses(
    data: str, tokenizers: tuple[str, str], tmp_path: Path
) -> None:
    calls: list[int] = []

    def count(row: dict[str, Any]) -> dict[str, Any]:
        calls.append(row["id"])
        return row

    cache = str(tmp_path / "cache")

    def build(tokenizer: str) -> Any:
        settings = config(data, tokenizer, dataset={"cache_path": cache, "format_callback": count})
        return Pipeline.from_config(settings).configured().build()

    cold = loader_rows(build(tokenizers[0]))
    assert len(calls) == 2 * ROWS and len(os.listdir(cache)) == 1
    settings = config(data, tokenizers[0], dataset={"format_callback": count})
    assert cold == loader_rows(Pipeline.from_config(settings).configured().build())  # as uncached
    calls.clear()
    warm_loader = build(tokenizers[0])
    assert loader_rows(warm_loader) == cold
    assert calls == []  # nothing upstream ran: the rows came from the cache
    assert sorted(i for i, _ in cold) == list(range(2 * ROWS))

    other = loader_rows(build(tokenizers[1]))
    assert len(calls) == 2 * ROWS and len(os.listdir(cache)) == 2  # a miss, a second entry
    assert other != cold


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_corrupted_cache_shard_is_detected_and_made_again(
    data: str, tokenizers: tuple[str, str], tmp_path: Path, damage: str
) -> None:
    settings = config(data, tokenizers[0], cache={"cache_dir": str(tmp_path / "cache")})
    expected = loader_rows(Pipeline.from_config(settings).configured().build())
    (entry,) = (tmp_path / "cache").iterdir()
    shard = entry / "part-00000.parquet"
    raw = bytearray(shard.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0xFF
    else:
        raw = raw[: len(raw) // 2]
    shard.write_bytes(bytes(raw))
    with pytest.warns(CacheRebuiltWarning, match="part-00000.parquet"):
        loader = Pipeline.from_config(settings).configured().build()
    assert loader_rows(loader) == expected
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # made again: a clean hit now
        Pipeline.from_config(settings).configured().build()


def test_an_expired_cache_entry_is_made_again(
    data: str, tokenizers: tuple[str, str], tmp_path: Path
) -> None:
    settings = config(
        data, tokenizers[0], cache={"cache_dir": str(tmp_path / "c"), "disk_cache_expiry": 60}
    )
    Pipeline.from_config(settings).configured().build()
    (entry,) = (tmp_path / "c").iterdir()
    os.utime(entry / "manifest.json", (0, 0))
    with pytest.warns(CacheRebuiltWarning, match="older than 60"):
        Pipeline.from_config(settings).configured().build()


def test_cache_enabled_false_a_disabled_stage_or_cache_tokenized_false_do_not_cache(
    data: str, tokenizers: tuple[str, str], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    for extra in (
        {"dataset": {"cache_path": str(cache), "cache_enabled": False}},
        {"dataset": {"cache_path": str(cache)}, "cache": {"enabled": False}},
        {
            "dataset": {"cache_path": str(cache)},
            "tokenize": {"remove_columns": ["text"], "cache_tokenized": False},
        },
    ):
        Pipeline.from_config(config(data, tokenizers[0], **extra)).configured().build()
        assert not cache.exists()


def test_save_on_the_s3_emulator(
    s3_store: StoreEndpoint, data: str, tokenizers: tuple[str, str], tmp_path: Path
) -> None:
    pipeline = Pipeline.from_config(config(data, tokenizers[0])).configured()
    options = s3_store.storage_options()
    url = f"{s3_store.new_bucket()}/saved"
    done = pipeline.save({"output_dir": url, "num_shards": 2, "storage_options": options})
    assert done.output == url and done.manifest.rows == 2 * ROWS
    local = pipeline.save({"output_dir": str(tmp_path / "local"), "num_shards": 2})
    source = open_materialized(url, pipeline.rows().fingerprint(), storage_options=options)
    back = [
        (r["id"], list(r["input_ids"])) for n in source.shard_names for r in source.open_shard(n)
    ]
    assert back == saved_rows(tmp_path / "local")
    assert local.manifest == done.manifest


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray of 2 CPUs, started in the loopback environment."""
    pytest.importorskip("ray")
    import ray

    start_ray_for_tests()
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_enabled_writes_the_same_bytes_as_the_local_engine(
    ray_cluster: None, data: str, tokenizers: tuple[str, str], tmp_path: Path
) -> None:
    settings = config(
        data,
        tokenizers[0],
        pack={"enabled": True, "seq_length": 64},
        ray={"enabled": True, "num_workers": 2},
    )
    pipeline = Pipeline.from_config(settings).configured()
    by_ray = pipeline.save({"output_dir": str(tmp_path / "ray"), "num_shards": 4})
    local = pipeline.save({"output_dir": str(tmp_path / "local"), "num_shards": 4}, engine="local")
    assert by_ray.manifest == local.manifest
    assert files_of(tmp_path / "ray") == files_of(tmp_path / "local")


def test_changed_source_data_or_transform_misses_the_cache(
    tokenizers: tuple[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    write_parquet_dataset(data, num_shards=2, rows_per_shard=50, max_tokens=12)
    cache = tmp_path / "cache"

    def build(**dataset: Any) -> Any:
        settings = config(str(data), tokenizers[0], dataset={"cache_path": str(cache), **dataset})
        return Pipeline.from_config(settings).configured().build()

    def ids() -> list[tuple[int, list[int]]]:
        return loader_rows(build())

    first = ids()
    assert ids() == first and len(os.listdir(cache)) == 1  # a hit
    write_parquet_dataset(data, num_shards=2, rows_per_shard=50, max_tokens=12, seed=9)
    assert ids() != first and len(os.listdir(cache)) == 2  # the files changed: a miss
    build(format_fields={"id": "row_id"})
    assert len(os.listdir(cache)) == 3  # another transform: a miss


@pytest.mark.parametrize("first_value", [0, 1500, None])
def test_save_types_a_column_that_is_null_in_the_first_rows(
    tmp_path: Path, first_value: int | None
) -> None:
    rows = [
        {"id": i, "x": None if first_value is None or i < first_value else f"s{i}"}
        for i in range(2000)
    ]
    data = tmp_path / "a.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"datasets": [{"data_files": str(data)}], "load": {"shuffle_buffer_size": 0}}
    out = str(tmp_path / "out")
    Pipeline.from_config(config).save({"output_dir": out, "num_shards": 2})
    saved = [
        r for shard in sorted(Path(out).glob("*.parquet")) for r in pq.read_table(shard).to_pylist()
    ]
    assert sorted(saved, key=lambda r: r["id"]) == rows


def test_a_column_of_two_types_says_what_to_change_in_the_config(tmp_path: Path) -> None:
    rows = [{"id": i, "x": i if i < 2000 else f"s{i}"} for i in range(3000)]  # the last shard
    data = tmp_path / "a.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"datasets": [{"data_files": str(data)}], "load": {"shuffle_buffer_size": 0}}
    with pytest.raises(SchemaMismatchError, match=r"format_callback.*columns"):
        Pipeline.from_config(config).save({"output_dir": str(tmp_path / "out"), "num_shards": 3})
