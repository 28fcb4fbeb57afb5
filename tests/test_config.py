"""The pipeline configs: round trips through dicts, YAML and JSON (hypothesis over every field of
every class), and every kind of bad input refused with the field's path and a suggestion."""

from __future__ import annotations

import dataclasses
import json
import string
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from easydata_grain.config import (
    CacheStageConfig,
    Config,
    DatasetConfig,
    LoadStageConfig,
    MixStageConfig,
    ObservabilityConfig,
    PackStageConfig,
    PipelineConfig,
    RayConfig,
    SaveStageConfig,
    SourceStageConfig,
    TokenizerConfig,
    TokenizeStageConfig,
    WeightSchedulePoint,
    load_config,
)
from easydata_grain.config.validation import convert, type_name
from easydata_grain.io.retry import RetryPolicy

REPO = Path(__file__).resolve().parents[1]
NAMES = st.text(string.ascii_lowercase + "_", min_size=1, max_size=8)
LEAF_CLASSES = [
    TokenizerConfig,
    SourceStageConfig,
    TokenizeStageConfig,
    PackStageConfig,
    LoadStageConfig,
    ObservabilityConfig,
    CacheStageConfig,
    SaveStageConfig,
    RayConfig,
]
# Fields whose valid values are narrower than their type (the class's own rules).
NARROWER: dict[tuple[type, str], st.SearchStrategy[Any]] = {
    (SaveStageConfig, "max_shard_size"): st.one_of(
        st.integers(1, 10**12), st.sampled_from(["500MB", "2GiB", "1024", "10 kb"])
    ),
    (SaveStageConfig, "push_to_hub"): st.just(False),
    (DatasetConfig, "data_files"): st.one_of(NAMES, st.lists(NAMES, min_size=1, max_size=3)),
    (DatasetConfig, "type"): st.sampled_from([None, "parquet", "json", "jsonl"]),
    (DatasetConfig, "name"): st.none(),
    (DatasetConfig, "columns"): st.none() | st.lists(NAMES, min_size=1, max_size=3),
    (DatasetConfig, "format_callback"): st.none(),
    (PipelineConfig, "seed"): st.integers(0, 2**31),  # None is taken as 0: see its own test
}


def values(hint: Any, minimum: float | None) -> st.SearchStrategy[Any]:
    """Valid plain values (as YAML gives them) of a field's type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(values(a, minimum) for a in args))
    if hint is type(None):
        return st.none()
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin is tuple:
        return st.lists(values(args[0], None), max_size=3)
    if origin is dict:
        return st.dictionaries(NAMES, values(args[1], 0), max_size=3)
    if isinstance(hint, type) and issubclass(hint, Config):
        return config_dicts(hint)
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(int(minimum or 0), 10**6)
    if hint is float:
        return st.floats(minimum or 0, 1e6, allow_nan=False)
    if hint is str:
        return NAMES
    if hint is Any:
        return st.one_of(st.integers(), NAMES, st.booleans())
    raise AssertionError(f"no strategy for {hint}")


def config_dicts(cls: type) -> st.SearchStrategy[dict[str, Any]]:
    """Valid dicts for a config class: the required fields and any of the others."""
    hints = typing.get_type_hints(cls)
    required, optional = {}, {}
    for field in dataclasses.fields(cls):
        strategy = NARROWER.get((cls, field.name))
        if strategy is None:
            strategy = values(hints[field.name], field.metadata.get("minimum"))
        has_default = not (
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        )
        (optional if has_default else required)[field.name] = strategy
    return st.fixed_dictionaries(required, optional=optional)


@st.composite
def pipeline_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Valid pipeline dicts: datasets with unique names, mix weights naming exactly them."""
    datasets = draw(st.lists(config_dicts(DatasetConfig), min_size=1, max_size=4))
    names = draw(st.lists(NAMES, min_size=len(datasets), max_size=len(datasets), unique=True))
    for dataset, name in zip(datasets, names, strict=True):
        dataset.pop("name", None)
        if draw(st.booleans()):
            dataset["name"] = name
    final = [d.get("name", f"dataset_{i}") for i, d in enumerate(datasets)]
    if len(set(final)) < len(final):  # a given name equal to another's default
        for i, dataset in enumerate(datasets):
            dataset["name"] = f"ds{i}"
        final = [d["name"] for d in datasets]
    weights = st.lists(st.floats(0, 100), min_size=len(final), max_size=len(final)).filter(
        lambda w: any(x > 0 for x in w)
    )
    mix: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "block_size": st.integers(1, 10_000),
                "stop_strategy": st.sampled_from(["restart", "first_exhausted", "all_exhausted"]),
                "weight_schedule_type": st.sampled_from(["step", "linear", "cosine"]),
                "seed": st.none() | st.integers(0, 2**31),
                "add_source_field": st.none() | NAMES,
            },
        )
    )
    kind = draw(st.sampled_from(["equal", "weights", "schedule"]))
    if kind == "weights":
        mix["weights"] = dict(zip(final, draw(weights), strict=True))
    elif kind == "schedule":
        steps = sorted(draw(st.sets(st.integers(1, 10**6), max_size=3)))
        mix["weight_schedule"] = [
            {"step": step, "weights": dict(zip(final, draw(weights), strict=True))}
            for step in [0, *steps]
        ]
    data = draw(config_dicts(PipelineConfig))
    data["datasets"] = datasets
    data["mix"] = mix
    return data


def subset_equal(given: Any, written: Any) -> bool:
    """Whether every value ``given`` appears, equal, in ``written`` (to_dict's full form)."""
    if isinstance(given, dict):
        return all(subset_equal(v, written[k]) for k, v in given.items())
    if isinstance(given, list):
        return len(given) == len(written) and all(map(subset_equal, given, written))
    return given == written and (given is None) == (written is None)


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("cls", LEAF_CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_leaf_configs_round_trip(cls: type, data: st.DataObject) -> None:
    given_dict = data.draw(config_dicts(cls))
    config = cls.from_dict(given_dict)
    assert config == cls(**given_dict)  # the dict and the constructor agree
    written = config.to_dict()
    assert subset_equal(given_dict, written)
    assert cls.from_dict(written) == config
    assert cls.from_yaml(config.to_yaml()) == config
    assert cls.from_json(config.to_json()) == config


@settings(max_examples=80, deadline=None)
@given(data=pipeline_dicts())
def test_pipeline_config_round_trips_through_dict_yaml_and_json(data: dict[str, Any]) -> None:
    config = PipelineConfig.from_dict(data)
    assert config == PipelineConfig(**data)
    written = config.to_dict()
    assert subset_equal(data, written)
    assert [d.name for d in config.datasets] == [d["name"] for d in written["datasets"]]
    assert PipelineConfig.from_dict(written) == config
    assert PipelineConfig.from_yaml(yaml.safe_dump(data)) == config
    assert PipelineConfig.from_json(json.dumps(data)) == config
    assert PipelineConfig.from_yaml(config.to_yaml()) == config
    assert PipelineConfig.from_json(config.to_json()) == config


def test_files_are_picked_by_extension(tmp_path: Path) -> None:
    data = {"datasets": [{"data_files": "a/*.parquet", "name": "a"}], "load": {"batch_size": 4}}
    expected = PipelineConfig.from_dict(data)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "c.yml").write_text(yaml.safe_dump(data))
    (tmp_path / "c.json").write_text(json.dumps(data))
    for name in ("c.yaml", "c.yml", "c.json"):
        assert load_config(tmp_path / name) == expected
        assert load_config(str(tmp_path / name)) == expected
    assert PipelineConfig.from_yaml(str(tmp_path / "c.yaml")) == expected
    assert PipelineConfig.from_json(tmp_path / "c.json") == expected
    (tmp_path / "c.toml").write_text("")
    with pytest.raises(ValueError, match=r"c\.toml: a config file must end in \.yaml"):
        load_config(tmp_path / "c.toml")
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


def test_the_sample_config_loads() -> None:
    config = load_config(REPO / "docs" / "pipeline.yaml")
    assert [d.name for d in config.datasets] == ["web", "code"]
    assert config.mix.weights == {"web": 0.7, "code": 0.3}
    assert config.load.batch_size == 8 and config.load.shuffle_buffer_size == 10_000


def test_the_specs_streaming_pipeline_config_equals_its_yaml() -> None:
    config = PipelineConfig(
        datasets=[DatasetConfig(data_files="gs://bucket/data/*.parquet", type="parquet")],
        streaming=True,
        load=LoadStageConfig(
            batch_size=8, prefetch_enabled=True, prefetch_buffer_size=4, shuffle_buffer_size=10000
        ),
    )
    text = """
datasets:
  - data_files: gs://bucket/data/*.parquet
    type: parquet
streaming: true
load:
  batch_size: 8
  prefetch_enabled: true
  prefetch_buffer_size: 4
  shuffle_buffer_size: 10000
"""
    assert PipelineConfig.from_yaml(text) == config
    assert config.datasets[0].name == "dataset_0"


# -- bad input -------------------------------------------------------------------------------

ONE = [{"data_files": "a.parquet", "name": "web"}]
TWO = [{"data_files": "a.parquet", "name": "web"}, {"data_files": "b.jsonl", "name": "code"}]
BAD = [
    ({"datasets": ONE, "load": {"batch_size": "8"}}, TypeError, "load.batch_size: expected int, got str '8'"),
    ({"datasets": ONE, "load": {"prefetch_bufer_size": 2}}, ValueError, "load.prefetch_bufer_size: unknown field; did you mean prefetch_buffer_size?"),
    ({"datasets": ONE, "lod": {}}, ValueError, "lod: unknown field; did you mean load?"),
    ({"datasets": ONE, "load": {"batch_size": 0}}, ValueError, "load.batch_size: must be >= 1, got 0"),
    ({"datasets": ONE, "load": {"shuffle_buffer_size": -5}}, ValueError, "load.shuffle_buffer_size: must be >= 0, got -5"),
    ({"datasets": ONE, "load": {"drop_last": "yes"}}, TypeError, "load.drop_last: expected bool, got str 'yes'"),
    ({"datasets": ONE, "load": {"batch_size": 8.0}}, TypeError, "load.batch_size: expected int, got float 8.0"),
    ({"datasets": ONE, "load": None}, TypeError, "load: expected LoadStageConfig (a mapping), got NoneType None"),
    ({"datasets": ONE, "seed": -1}, ValueError, "seed: must be >= 0, got -1"),
    ({"datasets": ONE, "source": {"cloud_retry_delay": float("nan")}}, ValueError, "source.cloud_retry_delay: expected a finite number, got nan"),
    ({"datasets": ONE, "pack": {"strategy": "pool"}}, ValueError, "pack.strategy: expected one of 'greedy', 'first_fit', got 'pool'"),
    ({"datasets": ONE, "mix": {"weight_schedule_type": "cosin"}}, ValueError, "mix.weight_schedule_type: expected one of 'step', 'linear', 'cosine', got 'cosin'; did you mean 'cosine'?"),
    ({"datasets": ONE, "mix": {"stop_strategy": "all_exausted"}}, ValueError, "mix.stop_strategy: expected one of 'restart', 'first_exhausted', 'all_exhausted', got 'all_exausted'; did you mean 'all_exhausted'?"),
    ({"datasets": ONE, "observability": {"log_level": "info"}}, ValueError, "observability.log_level: expected one of"),
    ({"datasets": ONE, "save": {"max_shard_size": "big"}}, ValueError, "save.max_shard_size: expected bytes or a size like '500MB'"),
    ({"datasets": ONE, "save": {"max_shard_size": -1}}, ValueError, "save.max_shard_size: must be > 0 bytes"),
    ({"datasets": ONE, "save": {"push_to_hub": True}}, ValueError, "save.hub_repo_id: push_to_hub needs a repo id"),
    ({"datasets": ONE, "ray": {"resources_per_worker": {"CPU": -1}}}, ValueError, "ray.resources_per_worker['CPU']: must be >= 0"),
    ({"datasets": ONE, "ray": {"num_workers": 0}}, ValueError, "ray.num_workers: must be >= 1, got 0"),
    ({"datasets": []}, ValueError, "datasets: give at least one dataset"),
    ({}, ValueError, "datasets: required field missing"),
    ([1, 2], TypeError, "PipelineConfig: expected PipelineConfig (a mapping), got list [1, 2]"),
    ({"datasets": "a.parquet"}, TypeError, "datasets: expected list of DatasetConfig (a mapping), got str"),
    ({"datasets": [{"name": "x"}]}, ValueError, "datasets[0].data_files: required field missing"),
    ({"datasets": [{"data_files": 3}]}, TypeError, "datasets[0].data_files: expected str or list of str, got int 3"),
    ({"datasets": [{"data_files": ["a", 3]}]}, TypeError, "datasets[0].data_files[1]: expected str, got int 3"),
    ({"datasets": [{"data_files": []}]}, ValueError, "datasets[0].data_files: give at least one path"),
    ({"datasets": [{"data_files": " "}]}, ValueError, "datasets[0].data_files: an empty path"),
    ({"datasets": [{"data_files": "a", "type": "csv"}]}, ValueError, "datasets[0].type: expected one of 'parquet', 'json', 'jsonl', 'huggingface', 'hf', got 'csv'"),
    ({"datasets": [{"data_files": ["a", "b"], "type": "hf"}]}, ValueError, "datasets[0].data_files: a Hugging Face dataset is one repo id"),
    ({"datasets": [{"data_files": "a", "num_rows": -1}]}, ValueError, "datasets[0].num_rows: must be >= 1, got -1"),
    ({"datasets": [{"data_files": "a", "columns": []}]}, ValueError, "datasets[0].columns: an empty list"),
    ({"datasets": [{"data_files": "a", "format_fields": {"a": 1}}]}, TypeError, "datasets[0].format_fields['a']: expected str, got int 1"),
    ({"datasets": [{"data_files": "a", "format_callback": "str.upper"}]}, TypeError, "datasets[0].format_callback: expected a function or None, got str"),
    ({"datasets": [{"data_files": "a", "dataset_split_name": "train"}]}, ValueError, "datasets[0].dataset_split_name: EasyData's dataset_split_name is not supported here: use split"),
    ({"datasets": [{"data_files": "a"}, {"data_files": "b", "tokenizer": {"name_or_path": "t", "max_lenght": 8}}]}, ValueError, "datasets[1].tokenizer.max_lenght: unknown field; did you mean max_length?"),
    ({"datasets": [{"data_files": "a"}, {"data_files": "b", "tokenizer": {"name_or_path": "t", "padding": "longst"}}]}, ValueError, "datasets[1].tokenizer.padding: expected one of 'max_length', 'longest', 'do_not_pad', got 'longst'; did you mean 'longest'?"),
    ({"datasets": [{"data_files": "a"}, {"data_files": "b", "tokenizer": 7}]}, TypeError, "datasets[1].tokenizer: expected str or TokenizerConfig (a mapping) or None, got int 7"),
    ({"datasets": [*TWO[:1], {"data_files": "b", "name": "web"}]}, ValueError, "datasets[1].name: 'web' is also the name of datasets[0]; dataset names must be unique"),
    ({"datasets": [{"data_files": "a"}, {"data_files": "b", "name": "dataset_0"}]}, ValueError, "datasets[1].name: 'dataset_0' is also the name of datasets[0]"),
    ({"datasets": TWO, "mix": {"weights": {"web": 1, "cod": 1}}}, ValueError, "mix.weights['cod']: no dataset is named 'cod'; did you mean 'code'? (datasets: web, code)"),
    ({"datasets": TWO, "mix": {"weights": {"web": 1}}}, ValueError, "mix.weights: no weight for 'code'; give every dataset a weight (0 leaves one out)"),
    ({"datasets": TWO, "mix": {"weights": {"web": -0.5, "code": 1}}}, ValueError, "mix.weights['web']: a weight must be >= 0, got -0.5"),
    ({"datasets": TWO, "mix": {"weights": {"web": 0, "code": 0}}}, ValueError, "mix.weights: all weights are 0; give one > 0"),
    ({"datasets": TWO, "mix": {"weights": {"web": "1", "code": 1}}}, TypeError, "mix.weights['web']: expected float, got str '1'"),
    ({"datasets": TWO, "mix": {"weights": {}}}, ValueError, "mix.weights: no weights given"),
    ({"datasets": TWO, "mix": {"block_size": 0}}, ValueError, "mix.block_size: must be >= 1, got 0"),
    ({"datasets": TWO, "mix": {"weights": {"web": 1, "code": 1}, "weight_schedule": [{"step": 0, "weights": {"web": 1, "code": 1}}]}}, ValueError, "mix.weight_schedule: give weights or a weight_schedule, not both"),
    ({"datasets": TWO, "mix": {"weight_schedule": [{"step": 0, "weights": {"web": 1, "code": 1}}, {"step": 100, "weights": {"web": 1}}]}}, ValueError, "mix.weight_schedule[1].weights: names ['web'] differ from mix.weight_schedule[0]'s ['code', 'web']; every point must weight the same datasets"),
    ({"datasets": TWO, "mix": {"weight_schedule": [{"step": 0, "weights": {"web": 1, "cod": 1}}]}}, ValueError, "mix.weight_schedule[0].weights['cod']: no dataset is named 'cod'"),
    ({"datasets": TWO, "mix": {"weight_schedule": [{"step": 5, "weights": {"web": 1, "code": 1}}]}}, ValueError, "mix.weight_schedule[0].step: the first point must be at step 0"),
    ({"datasets": TWO, "mix": {"weight_schedule": [{"step": 0, "weights": {"web": 1, "code": 1}}, {"step": 0, "weights": {"web": 1, "code": 1}}]}}, ValueError, "mix.weight_schedule[1].step: steps must increase, got 0 after 0"),
    ({"datasets": TWO, "mix": {"weight_schedule": [{"step": 0, "weights": {"web": 0, "code": 0}}]}}, ValueError, "mix.weight_schedule[0].weights: all weights are 0"),
    ({"datasets": TWO, "mix": {"weight_schedule": [{"step": -1, "weights": {"web": 1, "code": 1}}]}}, ValueError, "mix.weight_schedule[0].step: must be >= 0, got -1"),
    ({"datasets": TWO, "mix": {"weight_schedule": []}}, ValueError, "mix.weight_schedule: an empty schedule"),
    ({"datasets": TWO, "mix": {"weight_schedule": [{"weights": {"web": 1, "code": 1}}]}}, ValueError, "mix.weight_schedule[0].step: required field missing"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "error", "message"), BAD, ids=[m[:50] for *_, m in BAD])
def test_bad_input_names_the_field(data: Any, error: type, message: str) -> None:
    with pytest.raises(error) as raised:
        PipelineConfig.from_dict(data)
    assert str(raised.value).startswith(message)


def test_direct_construction_names_the_class() -> None:
    with pytest.raises(TypeError, match=r"^LoadStageConfig\.batch_size: expected int, got str"):
        LoadStageConfig(batch_size="8")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^PipelineConfig\.load\.batch_size: expected int"):
        PipelineConfig(datasets=[DatasetConfig("a")], load={"batch_size": True})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^MixStageConfig\.weights: all weights are 0"):
        MixStageConfig(weights={"a": 0})
    with pytest.raises(ValueError, match=r"^WeightSchedulePoint\.weights\['a'\]: a weight"):
        WeightSchedulePoint(0, {"a": -1})


@settings(max_examples=50, deadline=None)
@given(
    count=st.integers(1, 6),
    data=st.data(),
    cls_field=st.sampled_from(
        [(cls, f.name) for cls in LEAF_CLASSES for f in dataclasses.fields(cls)]
    ),
)
def test_a_wrong_type_anywhere_names_its_path(
    count: int, data: st.DataObject, cls_field: tuple[type, str]
) -> None:
    """A value of the wrong type for any field, put in dataset ``i`` (the tokenizer) or in a
    stage, is a TypeError whose message starts with the full path to the field."""
    cls, name = cls_field
    hint = typing.get_type_hints(cls)[name]
    wrong = data.draw(
        st.sampled_from([["a list"], {"a": "mapping"}, object()]).filter(
            lambda v: not _accepts(hint, v)
        )
    )
    datasets = [{"data_files": f"d{i}"} for i in range(count)]
    if cls is TokenizerConfig:
        i = data.draw(st.integers(0, count - 1))
        datasets[i]["tokenizer"] = {"name_or_path": "t", name: wrong}
        stage, path = {}, f"datasets[{i}].tokenizer.{name}"
    else:
        stage_name = next(
            f.name for f in dataclasses.fields(PipelineConfig) if f.type == cls.__name__
        )
        stage, path = {stage_name: {name: wrong}}, f"{stage_name}.{name}"
    with pytest.raises(TypeError) as raised:
        PipelineConfig.from_dict({"datasets": datasets, **stage})
    message = str(raised.value)
    # a value of another type, or a mapping/list holding one (named by its key or index)
    assert message.startswith((f"{path}: expected {type_name(hint)}, got ", f"{path}["))


def _accepts(hint: Any, value: Any) -> bool:
    try:
        convert(value, hint, "x")
    except (TypeError, ValueError):
        return False
    return True


@settings(max_examples=50, deadline=None)
@given(count=st.integers(1, 5), data=st.data())
def test_an_unknown_field_in_a_list_names_its_index(count: int, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, count - 1))
    field = data.draw(st.sampled_from([f.name for f in dataclasses.fields(DatasetConfig)]))
    typo = field[:-1] + ("x" if field[-1] != "x" else "y")  # one letter off
    datasets: list[dict[str, Any]] = [{"data_files": f"d{j}"} for j in range(count)]
    datasets[i][typo] = 1
    with pytest.raises(ValueError) as raised:
        PipelineConfig.from_dict({"datasets": datasets})
    assert str(raised.value).startswith(f"datasets[{i}].{typo}: unknown field; did you mean ")


# -- files -----------------------------------------------------------------------------------


def test_a_key_given_twice_is_an_error(tmp_path: Path) -> None:
    text = "datasets:\n  - data_files: a\nload:\n  batch_size: 4\n  batch_size: 8\n"
    with pytest.raises(ValueError, match=r"line 5, column 3: the key 'batch_size' is given twice"):
        PipelineConfig.from_yaml(text)
    (tmp_path / "c.json").write_text('{"datasets": [{"data_files": "a", "data_files": "b"}]}')
    with pytest.raises(ValueError, match=r"c\.json: the key 'data_files' is given twice"):
        load_config(tmp_path / "c.json")


def test_file_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("datasets:\n  - data_files: [a\nload: 1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: line 3, column 5: "):
        load_config(path)
    path.write_text("datasets:\n  - data_files: a\nload:\n  batch_size: '8'\n")
    with pytest.raises(TypeError, match=r"bad\.yaml: load\.batch_size: expected int, got str '8'"):
        load_config(path)
    (tmp_path / "bad.json").write_text('{"datasets": [}')
    with pytest.raises(ValueError, match=r"bad\.json: line 1, column 15: "):
        load_config(tmp_path / "bad.json")
    with pytest.raises(TypeError, match=r"^PipelineConfig: expected PipelineConfig \(a mapping\)"):
        PipelineConfig.from_yaml("- just\n- a list\n")


def test_yaml_needs_the_safe_loader() -> None:
    with pytest.raises(ValueError, match="could not determine a constructor"):
        PipelineConfig.from_yaml("datasets: !!python/object/apply:os.system ['true']\n")


def test_a_function_cannot_be_written_to_yaml() -> None:
    config = PipelineConfig([DatasetConfig("a", format_callback=dict)])
    assert PipelineConfig.from_dict(config.to_dict()) == config
    with pytest.raises(TypeError, match=r"datasets\[0\]\.format_callback: a type cannot be"):
        config.to_yaml()


# -- what the Pipeline reads ----------------------------------------------------------------


def test_configs_are_frozen_and_lists_become_tuples() -> None:
    config = PipelineConfig([{"data_files": ["a", "b"], "columns": ["x"]}])  # type: ignore[list-item]
    assert config.datasets[0].data_files == ("a", "b") and config.datasets[0].columns == ("x",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.load = LoadStageConfig()  # type: ignore[misc]
    assert "hub_token" not in repr(SaveStageConfig(hub_token="secret"))


def test_tokenizer_resolution_dataset_then_stage_then_pipeline() -> None:
    config = PipelineConfig(
        [
            DatasetConfig("a", tokenizer=TokenizerConfig("own", max_length=16)),
            DatasetConfig("b", tokenizer="named"),
            DatasetConfig("c"),
        ],
        default_tokenizer="global",
        tokenize=TokenizeStageConfig(max_length=64),
    )
    a, b, c = config.datasets
    assert config.tokenizer_for(a) == TokenizerConfig("own", max_length=16)
    assert config.tokenizer_for(b) == TokenizerConfig("named")
    assert config.tokenizer_for(c) == TokenizerConfig("global", max_length=64)
    staged = dataclasses.replace(config, tokenize=TokenizeStageConfig(default_tokenizer="stage"))
    assert staged.tokenizer_for(c) == TokenizerConfig("stage")
    assert config.tokenizer_for(c, TokenizeStageConfig(default_tokenizer="call")) == (
        TokenizerConfig("call")
    )
    assert dataclasses.replace(config, default_tokenizer=None).tokenizer_for(c) is None


def test_source_settings() -> None:
    config = PipelineConfig(
        [
            DatasetConfig("a.parquet", storage_options={"anon": True, "key": "k"}),
            DatasetConfig("org/repo", name="b", type="hf"),
        ],
        source=SourceStageConfig(dask_storage_options={"anon": False, "token": "t"}),
        streaming=False,
    )
    a, b = config.datasets
    assert config.storage_options_for(a) == {"anon": True, "token": "t", "key": "k"}
    assert config.storage_options_for(b) == {"anon": False, "token": "t"}
    assert b.type == "huggingface"
    assert config.streams() is False
    assert dataclasses.replace(config, source=SourceStageConfig(streaming=True)).streams()
    assert config.streams(SourceStageConfig(streaming=True))
    assert config.storage_options_for(b, SourceStageConfig()) == {}
    assert config.source.retry_policy() == RetryPolicy()
    custom = SourceStageConfig(cloud_max_retries=7, cloud_retry_delay=1).retry_policy()
    assert (custom.max_retries, custom.initial_backoff) == (7, 1.0)
    assert config.dataset("b") is b and a.name == "dataset_0"
    with pytest.raises(KeyError, match="no dataset is named 'bb'; did you mean 'b'"):
        config.dataset("bb")


def test_easydata_spellings_paths_seed_none_and_get_dataset_by_name(tmp_path: Path) -> None:
    one = DatasetConfig(data_files=tmp_path / "a.parquet", name="a")
    assert one.data_files == str(tmp_path / "a.parquet")
    many = DatasetConfig(data_files=[tmp_path / "a.parquet", str(tmp_path / "b.parquet")])
    assert many.data_files == (str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet"))
    config = PipelineConfig(datasets=[one], seed=None)
    assert config.seed == 0 and PipelineConfig.from_dict(config.to_dict()) == config
    assert config.get_dataset_by_name("a") is config.datasets[0]
    assert config.get_dataset_by_name("b") is None
    with pytest.raises(ValueError, match=r"datasets\[0\].num_rows: must be >= 1, got 0"):
        PipelineConfig.from_dict({"datasets": [{"data_files": "a", "num_rows": 0}]})
