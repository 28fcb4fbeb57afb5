"""Packing: no token dropped, segment ids and positions right, exact resume (in process and in
a fresh process from Orbax), bad input named by row, and the pipeline's pack stage."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import grain
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import (
    AsyncDataLoader,
    ChatTemplateTransform,
    InMemorySource,
    LoaderStateError,
    MalformedRowError,
    Pack,
    PackIterDataset,
    ParquetShardedSource,
)
from easydata_grain.config import DatasetConfig, LoadStageConfig, PackStageConfig, PipelineConfig
from easydata_grain.graph.pack import padding_batch
from easydata_grain.graph.window_shuffle import WindowShuffleIterDataset
from easydata_grain.pipeline import Pipeline
from easydata_grain.synthetic import tiny_tokenizer, write_parquet_dataset

_settings = settings(
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

documents = st.lists(st.integers(1, 70), min_size=1, max_size=60).map(
    lambda lengths: [
        {"input_ids": np.arange(i * 1000, i * 1000 + n, dtype=np.int32) % 50_000 + 1, "id": i}
        for i, n in enumerate(lengths)
    ]
)
packs = st.builds(
    Pack,
    seq_length=st.integers(1, 64),
    eos_token_id=st.sampled_from([None, 0]),
    pad_token_id=st.sampled_from([0, 7]),
    strategy=st.sampled_from(["greedy", "first_fit"]),
    num_packers=st.integers(1, 5),
)


def pieces(rows: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Each row's segments, in order (a continued document is several pieces)."""
    out = []
    for row in rows:
        for segment in range(1, int(row["segment_ids"].max(initial=0)) + 1):
            out.append(row["input_ids"][row["segment_ids"] == segment])
    return out


def with_eos(doc: np.ndarray, pack: Pack) -> np.ndarray:
    if pack.eos_token_id is not None and doc[-1] != pack.eos_token_id:
        return np.append(doc, pack.eos_token_id)
    return doc


def packed(docs: list[dict[str, Any]], pack: Pack) -> list[dict[str, np.ndarray]]:
    return list(PackIterDataset(grain.MapDataset.source(docs).to_iter_dataset(), pack))


@_settings
@given(docs=documents, pack=packs)
def test_unpacking_gives_back_every_token(docs: list[dict[str, Any]], pack: Pack) -> None:
    rows = packed(docs, pack)
    expected = [with_eos(d["input_ids"], pack) for d in docs]
    for row in rows:
        assert {k: v.shape for k, v in row.items()} == dict.fromkeys(
            ["input_ids", "segment_ids", "positions", "attention_mask", "loss_mask"],
            (pack.seq_length,),
        )
        real = row["segment_ids"] > 0
        assert np.all(row["input_ids"][~real] == pack.pad_token_id)
        assert np.array_equal(row["attention_mask"], real.astype(np.int32))
        assert np.array_equal(row["loss_mask"], real.astype(np.int32))
        # segments are numbered 1.. left to right, padding only at the end
        segments = row["segment_ids"][real]
        assert (
            np.all(np.diff(segments) >= 0) and segments[0] == 1 and np.all(np.diff(segments) <= 1)
        )
        assert not np.any(real[int(real.sum()) :])
        for segment in range(1, int(segments.max()) + 1):  # positions count within each segment
            assert row["positions"][row["segment_ids"] == segment].tolist() == list(
                range(int((row["segment_ids"] == segment).sum()))
            )
    got = pieces(rows)
    if pack.strategy == "greedy":
        # laid end to end: the concatenation is the documents' concatenation, in order
        assert np.array_equal(np.concatenate(got), np.concatenate(expected))
        assert all(r["attention_mask"].all() for r in rows[:-1])  # only the last row pads
    else:
        # each document is whole (or cut into seq_length pieces, in order) in some row
        cut = [
            doc[i : i + pack.seq_length]
            for doc in expected
            for i in range(0, len(doc), pack.seq_length)
        ]
        assert sorted(map(tuple, got)) == sorted(map(tuple, cut))
    assert sum(len(p) for p in got) == sum(len(d) for d in expected)  # no token dropped


@_settings
@given(docs=documents, pack=packs, data=st.data())
def test_resume_at_any_row_continues_exactly(
    docs: list[dict[str, Any]], pack: Pack, data: st.DataObject
) -> None:
    dataset = PackIterDataset(grain.MapDataset.source(docs).to_iter_dataset(), pack)
    expected = list(dataset)
    k = data.draw(st.integers(0, len(expected)))
    first = iter(dataset)
    head = [next(first) for _ in range(k)]
    state = json.loads(json.dumps(first.get_state()))
    # no tokens in it: the open rows are (document, start, length) triples
    held = [piece for row in state["open_rows"] for piece in row]
    assert all(len(piece) == 3 for piece in held)
    assert all(0 <= piece[0] < state["docs_read"] for piece in held)
    second = iter(dataset)
    second.set_state(state)
    rest = list(second)
    assert len(head) + len(rest) == len(expected)
    for a, b in zip(head + rest, expected, strict=True):
        for key in b:
            assert np.array_equal(a[key], b[key])


def test_truncate_cuts_only_when_asked() -> None:
    docs = [{"input_ids": np.arange(1, 11)}, {"input_ids": np.arange(20, 23)}]
    rows = packed(docs, Pack(4, truncate=True, strategy="first_fit"))
    assert [p.tolist() for p in pieces(rows)] == [[1, 2, 3, 4], [20, 21, 22]]
    rows = packed(docs, Pack(4))
    assert sum(len(p) for p in pieces(rows)) == 13


def test_an_assistant_mask_reaches_the_loss_mask() -> None:
    docs = [{"input_ids": [5, 6, 7], "mask": [0, 1, 1]}, {"input_ids": [8, 9], "mask": [1, 0]}]
    (row,) = packed(docs, Pack(6, mask_field="mask"))
    assert row["loss_mask"].tolist() == [0, 1, 1, 1, 0, 0]
    assert row["attention_mask"].tolist() == [1, 1, 1, 1, 1, 0]


def test_a_row_mask_of_the_packed_names_is_used_or_refused_never_replaced() -> None:
    """docs/transforms.md's SFT mask (ChatTemplateTransform(assistant_mask_field="loss_mask"))
    then Pack without mask_field gave a loss_mask of 1 on every token, user turns included."""
    tokenizer = tiny_tokenizer()
    template = ChatTemplateTransform(tokenizer, output_field=None, assistant_mask_field="loss_mask")
    conversation = [
        {"role": "user", "content": "the fox"},
        {"role": "assistant", "content": "and the dog"},
    ]
    expected = template.map({"messages": conversation})["loss_mask"].tolist()
    source = InMemorySource.from_rows([{"messages": conversation}] * 2)

    def loader(pack: Pack) -> AsyncDataLoader:
        return AsyncDataLoader(source, batch_size=1, transforms=[template], pack=pack)

    with pytest.raises(MalformedRowError, match=r"Pack\(mask_field='loss_mask'\)"):
        next(loader(Pack(64, eos_token_id=tokenizer.eos_token_id)))
    batch = next(loader(Pack(64, eos_token_id=tokenizer.eos_token_id, mask_field="loss_mask")))
    assert batch["loss_mask"][0][: len(expected)].tolist() == expected
    # the tokenizer's all-ones attention_mask is the packed one: it is not refused
    (row,) = packed([{"input_ids": [5, 6], "attention_mask": [1, 1]}], Pack(4))
    assert row["attention_mask"].tolist() == [1, 1, 0, 0]
    # segment_ids that packing does not write are dropped like any other field
    (row,) = packed([{"input_ids": [5], "segment_ids": [3]}], Pack(2, include_segment_ids=False))
    assert "segment_ids" not in row


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"text": "no ids"}, "no 'input_ids' field"),
        ({"input_ids": []}, "an empty document"),
        ({"input_ids": [[1, 2], [3, 4]]}, "1-D list of token ids"),
        ({"input_ids": ["a", "b"]}, "1-D list of token ids"),
        ({"input_ids": [1, -3]}, "token id -3 is outside"),
        ({"input_ids": [1, 600]}, "token id 600 is outside"),
        ({"input_ids": [1, 2], "loss_mask": [0, 1]}, r"carries 'loss_mask'.*mask_field="),
        ({"input_ids": [1, 2], "segment_ids": [1, 1]}, "carries 'segment_ids'"),
        ({"input_ids": [1, 2], "positions": [0, 1]}, "carries 'positions'"),
        ({"input_ids": [1, 2], "attention_mask": [1, 0]}, "'attention_mask' has 0s"),
    ],
)
def test_bad_rows_are_named(row: dict[str, Any], message: str) -> None:
    docs = [{"input_ids": [1, 2, 3]}, row]
    with pytest.raises(MalformedRowError, match=message) as caught:
        packed(docs, Pack(8, vocab_size=512))
    assert caught.value.row == 1 and "row 1" in str(caught.value)


def test_bad_settings_are_refused() -> None:
    for kwargs in (
        {"seq_length": 0},
        {"strategy": "pool"},
        {"num_packers": 0},
        {"eos_token_id": -1},
    ):
        with pytest.raises(ValueError):
            Pack(**{"seq_length": 8, **kwargs})
    with pytest.raises(TypeError, match="pack must be a Pack"):
        AsyncDataLoader([{"input_ids": [1]}], pack={"seq_length": 8})  # type: ignore[arg-type]


@pytest.mark.parametrize("pad", [True, {"input_ids": 16}])
def test_pad_is_refused_with_pack(pad: bool | dict[str, int]) -> None:
    """Packed rows have a fixed length: pad= only added all-ones *_mask fields."""
    with pytest.raises(ValueError, match=r"with pack=.*Drop pad"):
        AsyncDataLoader([{"input_ids": [1, 2]}], pad=pad, pack=Pack(8))


def token_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {"input_ids": rng.integers(1, 500, rng.integers(1, 40)).tolist(), "id": i} for i in range(n)
    ]


@_settings
@given(
    elements=st.lists(st.integers(), max_size=40),
    window=st.integers(1, 12),
    seed=st.integers(0, 3),
    data=st.data(),
)
def test_window_shuffle_permutes_within_windows_and_resumes_anywhere(
    elements: list[int], window: int, seed: int, data: st.DataObject
) -> None:
    dataset = WindowShuffleIterDataset(
        grain.MapDataset.source(elements).to_iter_dataset(), window, seed=seed
    )
    out = list(dataset)
    for start in range(0, len(elements), window):  # each window is a permutation of itself
        assert sorted(out[start : start + window]) == sorted(elements[start : start + window])
    if len(set(elements)) == len(elements) >= 12:  # distinct elements do move
        assert out != elements or window == 1
    k = data.draw(st.integers(0, len(out)))
    first = iter(dataset)
    head = [next(first) for _ in range(k)]
    state = json.loads(json.dumps(first.get_state()))
    assert set(state) == {"window_start", "window", "returned"}  # positions only
    second = iter(dataset)
    second.set_state(state)
    assert head + list(second) == out


loader_packs = st.tuples(packs, st.sampled_from([0, 1, 3, 8])).map(
    lambda p: dataclasses.replace(p[0], shuffle_rows=p[1])
)


@_settings
@given(
    pack=loader_packs,
    batch=st.integers(1, 8),
    shuffle=st.sampled_from([0, 32]),
    data=st.data(),
)
def test_the_loader_packs_and_resumes_exactly(
    pack: Pack, batch: int, shuffle: int, data: st.DataObject
) -> None:
    source = InMemorySource.from_rows(token_rows(120))

    def loader() -> AsyncDataLoader:
        return AsyncDataLoader(
            source, batch_size=batch, shuffle_buffer_size=shuffle, seed=2, pack=pack
        )

    expected = list(loader())
    tokens = sum(len(r["input_ids"]) for r in token_rows(120))
    eos = 0 if pack.eos_token_id is None else 120
    assert sum(int(b["attention_mask"].sum()) for b in expected) == tokens + eos
    k = data.draw(st.integers(0, len(expected)))
    first = loader()
    head = [next(first) for _ in range(k)]
    second = loader()
    second.set_state(json.dumps(first.get_state()))
    rest = list(second)
    for a, b in zip(head + rest, expected, strict=True):
        assert np.array_equal(a["input_ids"], b["input_ids"])
        assert np.array_equal(a["segment_ids"], b["segment_ids"])


def test_shuffled_packed_rows_are_the_same_rows_in_another_order() -> None:
    source = InMemorySource.from_rows(token_rows(300))

    def rows(pack: Pack) -> list[tuple[int, ...]]:
        loader = AsyncDataLoader(source, batch_size=4, seed=3, pack=pack)
        return [tuple(row) for batch in loader for row in batch["input_ids"].tolist()]

    plain = rows(Pack(32, eos_token_id=0))
    shuffled = rows(Pack(32, eos_token_id=0, shuffle_rows=16))
    assert shuffled != plain and sorted(shuffled) == sorted(plain)
    for start in range(0, len(plain), 16):  # a row moves only within its window of 16
        assert sorted(shuffled[start : start + 16]) == sorted(plain[start : start + 16])
    loader = AsyncDataLoader(source, batch_size=4, pack=Pack(32, shuffle_rows=16))
    assert "shuffled in windows of 16" in loader.describe()
    with pytest.raises(ValueError, match="shuffle_rows must be an int >= 0"):
        Pack(32, shuffle_rows=-1)


@pytest.mark.filterwarnings("ignore:pack= on host:UserWarning")
def test_packing_states_are_per_host_and_refused_on_other_hosts() -> None:
    from easydata_grain import Hosts

    source = InMemorySource.from_rows(token_rows(64))
    one = AsyncDataLoader(source, batch_size=4, pack=Pack(16), hosts=Hosts(0, 2))
    next(one)
    state = one.get_state()
    assert state["host"] == 0
    other = AsyncDataLoader(source, batch_size=4, pack=Pack(16), hosts=Hosts(1, 2))
    with pytest.raises(LoaderStateError, match="saved by host 0"):
        other.set_state(state)
    single = AsyncDataLoader(source, batch_size=8, pack=Pack(16))
    with pytest.raises(LoaderStateError, match="cannot be restored on 1"):
        single.set_state(state)
    assert "each host packs its own rows" in one.describe()


def test_a_padding_batch_has_every_mask_off() -> None:
    batch = padding_batch(Pack(8, pad_token_id=3), 2)
    assert batch["input_ids"].tolist() == [[3] * 8] * 2
    assert not batch["loss_mask"].any() and not batch["attention_mask"].any()


@pytest.mark.slow
def test_packed_loader_resumes_in_a_fresh_process(tmp_path: Path) -> None:
    from tests.test_loader_resume import save_and_restore

    paths = write_parquet_dataset(
        tmp_path / "data", num_shards=2, rows_per_shard=200, max_tokens=40
    )
    spec = {
        "sources": [paths],
        "loader": {"batch_size": 4, "shuffle_buffer_size": 64, "seed": 1},
        "pack": {"seq_length": 48, "eos_token_id": 0, "strategy": "first_fit"},
        "transforms": ["keep_tokens"],
    }
    from tests.resume_worker import build_loader

    expected = list(build_loader(spec))
    for k in (0, 5, len(expected) - 1):
        (tmp_path / f"k{k}").mkdir()
        head, tail = save_and_restore(spec, k, tmp_path / f"k{k}")
        got = head["batches"] + tail["batches"]
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            assert np.array_equal(a["input_ids"], b["input_ids"])


def test_the_pipeline_pack_stage(tmp_path: Path) -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(tmp_path / "tok")
    paths = write_parquet_dataset(tmp_path / "data", num_shards=1, rows_per_shard=100, max_tokens=8)
    config = PipelineConfig(
        datasets=[DatasetConfig(data_files=paths, additional_fields=[])],
        default_tokenizer=str(tmp_path / "tok"),
        pack=PackStageConfig(enabled=True, seq_length=32, strategy="first_fit"),
        load=LoadStageConfig(batch_size=4, drop_last=False),
    )
    loader = Pipeline.from_config(config).source().tokenize().pack().load().build()
    batches = list(loader)
    assert batches[0]["input_ids"].shape == (4, 32)
    texts = pq.read_table(paths[0]).column("text").to_pylist()
    tokens = sum(len(ids) for ids in tokenizer(texts)["input_ids"])
    eos = tokenizer.eos_token_id
    expected = tokens + sum(1 for ids in tokenizer(texts)["input_ids"] if ids[-1] != eos)
    assert sum(int(b["attention_mask"].sum()) for b in batches) == expected
    assert "pack" in loader.describe()
    shuffled_config = PipelineConfig.from_dict(
        {
            **config.to_dict(),
            "pack": {
                **config.pack.to_dict(),
                "shuffle_packed": True,
                "shuffle_buffer_factor": 3,
            },
        }
    )
    shuffled = Pipeline(shuffled_config).source().tokenize().pack().load().build()
    assert shuffled.pack.shuffle_rows == 12  # 3 batches of 4 rows
    assert "shuffled in windows of 12" in shuffled.describe()
    plain_rows = [tuple(r) for b in batches for r in b["input_ids"].tolist()]
    shuffled_rows = [tuple(r) for b in shuffled for r in b["input_ids"].tolist()]
    assert shuffled_rows != plain_rows and sorted(shuffled_rows) == sorted(plain_rows)


@pytest.mark.slow
def test_two_hosts_pack_their_rows_with_equal_steps_and_resume(tmp_path: Path) -> None:
    from tpu_scripts.simulate_multihost import run_slice

    data = tmp_path / "data"
    # 303 documents: the last 3 fill no global batch of 4, and are shared among the hosts.
    write_parquet_dataset(data, num_shards=3, rows_per_shard=101, row_group_size=20, max_tokens=30)
    script = Path(__file__).with_name("multihost_worker.py")
    out = tmp_path / "out"
    out.mkdir()
    result = run_slice(
        2, ["pack", str(data), str(out)], script=script, timeout=180, work_dir=tmp_path / "w"
    )
    assert result.ok, result.describe()
    hosts = [json.loads((out / f"host-{h}.json").read_text()) for h in range(2)]
    assert len(hosts[0]) == len(hosts[1])  # equal steps, padding batches at the end of one
    assert {len(step["input_ids"]) for steps in hosts for step in steps} == {2}  # filled
    tokens = pq.read_table(sorted(data.glob("*.parquet"))).column("input_ids").to_pylist()
    expected = sorted(t for ids in tokens for t in [*ids, *([0] if ids[-1] != 0 else [])])
    got = sorted(
        t
        for steps in hosts
        for step in steps
        for ids, mask in zip(step["input_ids"], step["attention_mask"], strict=True)
        for t, m in zip(ids, mask, strict=True)
        if m
    )
    assert got == expected  # every token once, over both hosts
    k = len(hosts[0]) // 2
    saved = tmp_path / "saved"
    saved.mkdir()
    args = ["pack", str(data), str(saved)]
    assert run_slice(
        2, [*args, "--save-at", str(k)], script=script, timeout=180, work_dir=tmp_path / "s"
    ).ok
    assert sorted(p.name for p in (saved / "checkpoints" / str(k) / "loader").glob("*.json")) == [
        "loader_state.process_0-of-2.json",
        "loader_state.process_1-of-2.json",
    ]
    restored = run_slice(
        2, [*args, "--restore"], script=script, timeout=180, work_dir=tmp_path / "r"
    )
    assert restored.ok, restored.describe()
    for h in range(2):
        rest = json.loads((saved / f"host-{h}-restored.json").read_text())
        assert rest == hosts[h][k:]


def test_a_pre_tokenized_loss_mask_column_is_read_and_refused_or_used(tmp_path: Path) -> None:
    """The projection keeps the columns packing writes, so a Parquet loss_mask column is seen:
    refused without mask_field (it was never read: silently replaced), ANDed in with it."""
    rows = {"input_ids": [[5, 6, 7], [8, 9]], "loss_mask": [[0, 1, 1], [1, 0]], "id": [0, 1]}
    pq.write_table(pa.table(rows), tmp_path / "sft.parquet")

    def first(pack: Pack) -> dict[str, Any]:
        source = ParquetShardedSource(str(tmp_path / "sft.parquet"))
        return next(iter(AsyncDataLoader(source, batch_size=1, pack=pack)))

    with pytest.raises(MalformedRowError, match=r"carries 'loss_mask'"):
        first(Pack(8))
    batch = first(Pack(8, mask_field="loss_mask"))
    assert batch["loss_mask"][0].tolist() == [0, 1, 1, 1, 0, 0, 0, 0]
