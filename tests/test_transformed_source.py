"""TransformedShardedSource: the spec's "Streaming with Transforms" block against the Hub
emulator, addresses and seeks with maps and filters, indexed mode, errors naming shard and row,
and loaders with transforms that resume exactly (hypothesis)."""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grain
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import AsyncDataLoader, IndexedSource, InMemorySource
from easydata_grain.io.errors import MalformedRowError, MissingColumnError
from easydata_grain.sources.protocol import SkippingSource
from easydata_grain.sources.skipped import SkippedRow
from easydata_grain.sources.transformed import IndexedTransformedSource, TransformedShardedSource
from easydata_grain.synthetic import tiny_tokenizer
from easydata_grain.transforms.chain import flatten_transforms
from easydata_grain.transforms.chat import ChatTemplateTransform
from easydata_grain.transforms.fields import DropFields, MapField, RenameFields, SelectFields
from easydata_grain.transforms.filters import FilterByField, FilterNonEmpty
from easydata_grain.transforms.fluent import TransformableSource
from easydata_grain.transforms.tokenize import TokenizeTransform
from ops.hub_emulator import HubEmulator
from ops.hub_repos import alpaca_like

TOKENIZER = tiny_tokenizer()
WORDS = ["the", "fox", "and", "dog", "", "was", "there"]


def _rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"id": i, "body": " ".join(WORDS[(i + k) % len(WORDS)] for k in range(i % 4))}
        for i in range(start, start + n)
    ]


def _is_kept(value: int) -> bool:
    return value % 3 != 0


class StreamSource:
    """Only the spec's three members: shards of rows, seekable by row (streaming mode)."""

    def __init__(self, shards: list[list[dict[str, Any]]]):
        self.shards = shards

    @property
    def shard_names(self) -> list[str]:
        return [f"stream-{i}" for i in range(len(self.shards))]

    def open_shard(self, shard: str) -> Iterator[dict[str, Any]]:
        return self.open_shard_at_row(shard, 0)

    def open_shard_at_row(self, shard: str, row: int) -> Iterator[dict[str, Any]]:
        yield from (dict(r) for r in self.shards[self.shard_names.index(shard)][row:])


def _tokenize_chain() -> Any:
    return (
        RenameFields({"body": "text"})
        >> FilterNonEmpty("text")
        >> TokenizeTransform(TOKENIZER)
        >> DropFields("text")
    )


# -- the spec's block ---------------------------------------------------------------------------


def test_the_spec_streaming_with_transforms_block(
    hub: HubEmulator, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = alpaca_like(hub.root, repo_id="transforms/alpaca")
    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: TOKENIZER)

    # The spec's block, with our package's name.
    from transformers import AutoTokenizer

    from easydata_grain import (
        ChatTemplateTransform,
        HuggingFaceShardedSource,
        TransformedShardedSource,
    )

    tokenizer = AutoTokenizer.from_pretrained("meta-llama/Llama-2-7b-chat-hf")

    # Stream from HuggingFace
    source = HuggingFaceShardedSource(
        "transforms/alpaca",
        streaming=True,
    )

    # Apply chat template on the fly
    transformed = TransformedShardedSource(
        source,
        transform=ChatTemplateTransform(tokenizer),
    )

    # Memory-efficient: transforms applied during iteration
    for example in transformed.open_shard(transformed.shard_names[0]):
        print(example["text"])

    printed = capsys.readouterr().out
    rows = repo.rows[("default", "train")]
    expected = [
        tokenizer.apply_chat_template(
            [
                {
                    "role": "user",
                    "content": f"{r['instruction']}\n\n{r['input']}"
                    if r["input"]
                    else r["instruction"],
                },
                {"role": "assistant", "content": r["output"]},
            ],
            tokenize=False,
        )
        for r in rows
    ]
    assert printed == "".join(text + "\n" for text in expected)
    assert "<|im_start|>user\nInstruction 0\n\ninput 0<|im_end|>" in printed
    # a seek is O(1) and row r is the source's row r
    shard = transformed.shard_names[0]
    assert next(iter(transformed.open_shard_at_row(shard, 7)))["text"] == expected[7]


# -- addresses, modes, seeks --------------------------------------------------------------------


def test_maps_over_an_indexed_source_stay_indexed() -> None:
    source = InMemorySource.from_rows(_rows(3000))
    transformed = TransformedShardedSource(
        source, RenameFields({"body": "text"}) >> MapField("id", int)
    )
    assert isinstance(transformed, IndexedSource) and isinstance(
        transformed, IndexedTransformedSource
    )
    assert not transformed.skips_rows
    assert transformed.row_counts() == source.row_counts()
    assert list(transformed.block_starts(0)) == list(source.block_starts(0))
    assert transformed.read_block(0, 2)[5] == {"id": 2053, "text": _rows(1, 2053)[0]["body"]}
    assert transformed.stats is source.stats
    other = TransformedShardedSource(source, RenameFields({"body": "txt"}))
    assert transformed.identities() != other.identities() != source.identities()
    shard = transformed.shard_names[0]
    assert [r["id"] for r in transformed.open_shard_at_row(shard, 2998)] == [2998, 2999]


def test_a_filter_keeps_source_rows_as_addresses() -> None:
    source = InMemorySource.from_rows(_rows(40))
    transformed = TransformedShardedSource(source, FilterByField("id", _is_kept), chunk_rows=7)
    assert isinstance(transformed, IndexedSource) and isinstance(transformed, SkippingSource)
    assert transformed.skips_rows and transformed.row_counts() == [40]
    shard = transformed.shard_names[0]
    assert [r["id"] for r in transformed.open_shard(shard)] == [i for i in range(40) if i % 3]
    assert [r["id"] for r in transformed.open_shard_at_row(shard, 30)] == [31, 32, 34, 35, 37, 38]
    gaps = list(transformed.rows_with_gaps(shard, 30))
    assert gaps[0] == SkippedRow(shard, 30, None) and gaps[1]["id"] == 31 and len(gaps) == 10
    block = transformed.read_block(0, 0)
    assert len(block) == 40 and block[3] == SkippedRow(shard, 3, None)


def test_a_stream_source_stays_a_stream() -> None:
    source = StreamSource([_rows(10), _rows(10, 10)])
    transformed = TransformedShardedSource(source, _tokenize_chain(), chunk_rows=3)
    assert not isinstance(transformed, IndexedSource)
    rows = list(transformed.open_shard_at_row("stream-1", 4))
    kept = [r for r in _rows(6, 14) if r["body"]]
    assert [r["id"] for r in rows] == [r["id"] for r in kept]
    assert [r["input_ids"].tolist() for r in rows] == [
        TOKENIZER(r["body"])["input_ids"] for r in kept
    ]
    assert set(rows[0]) == {"id", "input_ids"}


def test_wrapping_flattens_and_fluent_methods() -> None:
    source = InMemorySource.from_rows(_rows(50))
    assert isinstance(source, TransformableSource)
    chained = (
        source.rename_fields({"body": "text"})
        .filter(lambda row: row["id"] % 2 == 0)
        .drop_fields("text")
    )
    assert chained.source is source and len(chained.transform.steps) == 3
    assert [r for r in chained.open_shard(chained.shard_names[0])][:2] == [{"id": 0}, {"id": 2}]
    tokens = (
        source.rename_fields({"body": "text"}).filter(lambda r: bool(r["text"])).tokenize(TOKENIZER)
    )
    first = next(iter(tokens.open_shard(tokens.shard_names[0])))
    assert first["input_ids"].dtype == np.int32
    chat = InMemorySource.from_rows(
        [{"messages": [{"role": "user", "content": "hi"}]}]
    ).apply_chat_template(TOKENIZER)
    assert (
        next(iter(chat.open_shard(chat.shard_names[0])))["text"] == "<|im_start|>user\nhi<|im_end|>"
    )


def test_pickles_for_worker_processes() -> None:
    transformed = TransformedShardedSource(InMemorySource.from_rows(_rows(20)), _tokenize_chain())
    copy = pickle.loads(pickle.dumps(transformed))
    assert type(copy) is IndexedTransformedSource
    name = copy.shard_names[0]
    assert [r["id"] for r in copy.open_shard(name)] == [
        r["id"] for r in transformed.open_shard(name)
    ]


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="ShardedSource"):
        TransformedShardedSource([1, 2, 3], RenameFields({"a": "b"}))
    with pytest.raises(ValueError, match="chunk_rows"):
        TransformedShardedSource(
            InMemorySource.from_rows(_rows(2)), RenameFields({"a": "b"}), chunk_rows=0
        )


# -- errors name the shard and the row ----------------------------------------------------------


def _first_error(transformed: Any, shard_row: int = 0) -> BaseException:
    with pytest.raises(Exception) as info:
        list(transformed.open_shard_at_row(transformed.shard_names[0], shard_row))
    return info.value


@pytest.mark.parametrize("indexed", [True, False])
def test_errors_name_shard_and_row(indexed: bool) -> None:
    rows = _rows(30)
    rows[17] = {"id": 17, "body": None if indexed else 5}  # not a string
    source = InMemorySource.from_rows(rows) if indexed else StreamSource([rows])
    shard = source.shard_names[0]
    transformed = TransformedShardedSource(
        source,
        RenameFields({"body": "text"}) >> TokenizeTransform(TOKENIZER, allow_empty=True),
        chunk_rows=8,
    )
    error = _first_error(transformed)
    assert isinstance(error, MalformedRowError) and error.path == shard and error.row == 17
    assert str(error).startswith(f"{shard}, row 17: TokenizeTransform tokenizes strings")
    if indexed:
        with pytest.raises(MalformedRowError, match=re.escape(f"{shard}, row 17:")):
            transformed.read_block(0, 0)
    empty = TransformedShardedSource(
        source, RenameFields({"body": "text"}) >> TokenizeTransform(TOKENIZER)
    )
    error = _first_error(empty)
    assert error.row == 0 and "is empty" in str(error)  # row 0's body is ""
    missing = TransformedShardedSource(source, TokenizeTransform(TOKENIZER))
    error = _first_error(missing, 3)
    assert isinstance(error, MissingColumnError) and error.row == 3 and "'text'" in str(error)


def test_a_template_error_names_shard_and_row() -> None:
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}]} for i in range(12)]
    rows[9] = {"messages": [{"role": "wizard", "content": "q9"}]}
    source = InMemorySource.from_rows(rows)
    op = ChatTemplateTransform(
        TOKENIZER,
        chat_template="{% for m in messages %}{% if m.role != 'user' %}{{ raise_exception('bad role ' + m.role) }}{% endif %}{{ m.content }}{% endfor %}",
    )
    error = _first_error(TransformedShardedSource(source, op))
    assert isinstance(error, MalformedRowError) and error.row == 9
    assert "bad role wizard" in str(error) and str(error).startswith(
        f"{source.shard_names[0]}, row 9:"
    )


def test_a_users_function_error_is_wrapped_with_the_address() -> None:
    def explode(row: dict[str, Any]) -> dict[str, Any]:
        if row["id"] == 4:
            raise ZeroDivisionError("boom")
        return row

    error = _first_error(TransformedShardedSource(StreamSource([_rows(6)]), explode))
    assert isinstance(error, MalformedRowError) and error.row == 4
    assert isinstance(error.__cause__, ZeroDivisionError) and "ZeroDivisionError: boom" in str(
        error
    )


def test_through_the_loader_errors_name_the_address() -> None:
    rows = _rows(40)
    rows[33] = {"id": 33, "body": None}
    source = InMemorySource.from_rows(rows)
    ops = RenameFields({"body": "text"}) >> TokenizeTransform(TOKENIZER, allow_empty=True)
    for loader in (
        AsyncDataLoader(TransformedShardedSource(source, ops), batch_size=8, pad=True),
        AsyncDataLoader(source, batch_size=8, pad=True, transforms=[ops]),
    ):
        with pytest.raises(MalformedRowError, match=r"^rows\[40\], row 33: TokenizeTransform"):
            list(loader)


class CountedMap(grain.transforms.Map):
    """Doubles ``id`` and appends a byte to a file per row (rows mapped, across processes)."""

    def __init__(self, log: str):
        self.log = log

    def map(self, row: dict) -> dict:
        with open(self.log, "ab") as log:
            log.write(b".")
        return {**row, "twice": row["id"] * 2}


@pytest.mark.slow
def test_in_worker_processes_each_row_is_transformed_once(tmp_path: Path) -> None:
    rows = _rows(300)
    rows[211] = {"id": 211, "body": None}
    batches = {}
    for workers in (0, 2):
        log = str(tmp_path / f"mapped-{workers}")
        ops = (
            CountedMap(log)
            >> RenameFields({"body": "text"})
            >> TokenizeTransform(TOKENIZER, allow_empty=True)
        )
        source = TransformedShardedSource(InMemorySource.from_rows(rows[:200]), ops, chunk_rows=64)
        loader = AsyncDataLoader(
            source,
            batch_size=16,
            shuffle_buffer_size=50,
            seed=4,
            pad=True,
            worker_processes=workers,
        )
        batches[workers] = _batches(loader)
        assert Path(log).stat().st_size == 200  # not once per worker process that reads it
        if workers:
            assert "maps run as the first row ops" in loader.plan.describe()
        bad = TransformedShardedSource(InMemorySource.from_rows(rows), ops)
        loader = AsyncDataLoader(bad, batch_size=16, pad=True, worker_processes=workers)
        with pytest.raises(MalformedRowError, match=r"^rows\[300\], row 211: TokenizeTransform"):
            list(loader)
    assert batches[0] == batches[2]


# -- loaders with transforms resume exactly -----------------------------------------------------


def _batches(loader: AsyncDataLoader) -> list[Any]:
    return [{k: np.asarray(v).tolist() for k, v in b.items()} for b in loader]


def _build(kind: str, seed: int) -> AsyncDataLoader:
    rows = _rows(157)
    ops = _tokenize_chain() >> SelectFields(["id", "input_ids"])
    options: dict[str, Any] = {
        "batch_size": 8,
        "pad": True,
        "seed": seed,
        "prefetch_buffer_size": 2,
    }
    if kind == "loader transforms":
        return AsyncDataLoader(
            InMemorySource.from_rows(rows),
            shuffle_buffer_size=32,
            transforms=flatten_transforms([ops]),
            **options,
        )
    if kind == "indexed source":
        return AsyncDataLoader(
            TransformedShardedSource(InMemorySource.from_rows(rows), ops),
            shuffle_buffer_size=32,
            **options,
        )
    stream = StreamSource([rows[:60], rows[60:]])
    return AsyncDataLoader(
        TransformedShardedSource(stream, ops, chunk_rows=16), shuffle_buffer_size=16, **options
    )


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["loader transforms", "indexed source", "stream source"]),
    seed=st.integers(0, 3),
    data=st.data(),
)
def test_loaders_with_transforms_resume_exactly(kind: str, seed: int, data: st.DataObject) -> None:
    straight = _batches(_build(kind, seed))
    assert sum(len(b["id"]) for b in straight) == len([r for r in _rows(157) if r["body"]])
    stop = data.draw(st.integers(0, len(straight)), label="stop")
    first = _build(kind, seed)
    head = [next(iter(first)) for _ in range(stop)]
    state = first.get_state()
    first.close()
    second = _build(kind, seed)
    second.set_state(state)
    tail = _batches(second)
    head = [{k: np.asarray(v).tolist() for k, v in b.items()} for b in head]
    assert head + tail == straight
