"""``AsyncDataLoader(transforms=[...])`` with our transforms, as the compiler plans them: chains
and lists, batched maps given lists of rows (one tokenizer call per chunk; each host only its own
rows), the projection pushed down into the Parquet reads (bytes counted by the source and by a
proxy in front of the S3 emulator), content fingerprints, ``describe()``, the fluent methods on
every source, and the loader equal to ``TransformedShardedSource`` row for row (hypothesis)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import (
    AsyncDataLoader,
    ChatTemplateTransform,
    ConcatSource,
    FilterByField,
    Hosts,
    InMemorySource,
    LoaderStateError,
    MapFunction,
    MissingColumnError,
    Pack,
    ParquetShardedSource,
    SelectFields,
    TokenizeTransform,
    TransformableSource,
    TransformedShardedSource,
)
from easydata_grain.sources.parquet import selected_column_chunks
from easydata_grain.synthetic import synthetic_table, tiny_tokenizer
from ops.emulators import StoreEndpoint
from ops.fault_proxy import FaultProxy
from tests.helpers import plain
from tests.resume_worker import TRANSFORMS, KeepNotDivisible, ShardsOnly, few_words, make_transform

TOKENIZER = tiny_tokenizer()
ROWS = 2500


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two Parquet shards of synthetic rows (id, input_ids, text), row groups of 100 rows."""
    root = tmp_path_factory.mktemp("transform-loader")
    for shard in range(2):
        table = synthetic_table(ROWS // 2, first_id=shard * ROWS // 2, seed=shard, max_tokens=12)
        pq.write_table(table, root / f"part-{shard}.parquet", row_group_size=100)
    return str(root / "*.parquet")


def batches(loader: AsyncDataLoader) -> list[dict[str, Any]]:
    """Every batch of a loop, as plain lists (comparable)."""
    out = [plain(batch) for batch in loader]
    loader.close()
    return out


def ids(got: list[dict[str, Any]]) -> list[int]:
    return [i for batch in got for i in batch["id"]]


class CountingTokenize(TokenizeTransform):
    """The real tokenizer transform, recording every call: the ids of each ``map_batch`` list
    and the number of one-row ``map`` calls."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.calls: list[list[int]] = []
        self.single = 0

    def map_batch(self, elements: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.calls.append([row["id"] for row in elements])
        return super().map_batch(elements)

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        self.single += 1
        return super().map(element)


# -- chains and lists ---------------------------------------------------------------------------


def test_chains_lists_and_nested_lists_are_one_pipeline(data: str) -> None:
    source = ParquetShardedSource(data)
    tokens = TokenizeTransform(TOKENIZER, output_field="tokens")
    filtered = FilterByField("text", few_words) >> tokens >> SelectFields(["id", "tokens"])
    reference = batches(
        AsyncDataLoader(source, batch_size=16, pad=True, transforms=list(filtered.steps))
    )
    for transforms in (
        filtered,
        [filtered],
        [[filtered.steps[0]], filtered.steps[1] >> filtered.steps[2]],
    ):
        loader = AsyncDataLoader(source, batch_size=16, pad=True, transforms=transforms)
        assert loader.plan.row_ops == filtered.steps
        assert batches(loader) == reference
    assert ids(reference) == [
        i
        for i, t in enumerate(pq.read_table(source.shard_names).column("text").to_pylist())
        if few_words(t)
    ]
    with pytest.raises(TypeError, match="chains of them, got 3"):
        AsyncDataLoader(source, transforms=[tokens, 3])


# -- batched maps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "sizes"),
    [
        ("one host", [1024, 1024, 452]),
        ("second of two hosts", [1024, 232]),
        ("filter first", None),
        ("stream", [1024, 1024, 452]),
    ],
)
def test_a_batched_map_gets_lists_of_rows(data: str, case: str, sizes: list[int] | None) -> None:
    """``map_batch`` calls cover exactly the rows the loader yields on this host, each once, in
    lists of ``rows_per_call``; ``map`` (one row) is never called."""
    op = CountingTokenize(TOKENIZER, output_field="tokens")
    source: Any = ParquetShardedSource(data)
    transforms: list[Any] = [op]
    options: dict[str, Any] = {"batch_size": 8, "shuffle_buffer_size": 300, "pad": True}
    if case == "second of two hosts":
        options["hosts"] = Hosts(1, 2)
    if case == "filter first":
        transforms = [KeepNotDivisible(3), op]
    if case == "stream":
        source = ShardsOnly(source)
        options["shuffle_buffer_size"] = 0
    loader = AsyncDataLoader(source, transforms=transforms, **options)
    assert loader.plan.batching is not None
    served = ids(batches(loader))
    transformed = [i for call in op.calls for i in call]
    assert op.single == 0
    if case == "second of two hosts":
        # Only this host's rows are tokenized (the last global batch pads with real rows).
        assert sorted(set(transformed)) == sorted(set(served))
        assert len(transformed) == len(served)
    else:
        assert transformed == served
    if sizes is not None:
        assert [len(call) for call in op.calls] == sizes
    else:  # each call: the rows a filter kept among 1024 consecutive positions of the order
        assert len(op.calls) == 3 and sum(map(len, op.calls)) == len(served) == ROWS - 834


@pytest.mark.slow
@pytest.mark.parametrize("filtered", [False, True], ids=["batches", "filter"])
def test_worker_processes_give_the_same_rows(data: str, filtered: bool) -> None:
    """With ``worker_processes=2`` the batched map runs in the workers, each on its own rows
    (one call per batch, or on the every-n-th rows it is given after a filter): the batches
    are those of one process (with a filter each worker batches its own rows, so the same rows
    come in other batches)."""
    transforms = [KeepNotDivisible(3)] * filtered + [make_transform("tokenize", {})]
    options: dict[str, Any] = {"batch_size": 32, "shuffle_buffer_size": 64, "pad": True}
    alone = batches(AsyncDataLoader(ParquetShardedSource(data), transforms=transforms, **options))
    loader = AsyncDataLoader(
        ParquetShardedSource(data), transforms=transforms, worker_processes=2, **options
    )
    text = loader.describe()
    assert ("in each worker process" if filtered else "one call per batch") in text
    got = batches(loader)
    if not filtered:
        assert got == alone
    assert sorted(ids(got)) == sorted(ids(alone))
    assert tokens_by_id(got) == tokens_by_id(alone)


def tokens_by_id(got: list[dict[str, Any]]) -> dict[int, list[int]]:
    """Each row's ``tokens`` without the batch's padding."""
    return {
        i: tokens[: sum(mask)]
        for batch in got
        for i, tokens, mask in zip(batch["id"], batch["tokens"], batch["tokens_mask"], strict=True)
    }


def test_a_random_map_after_the_batched_map_keeps_worker_rows_per_row(data: str) -> None:
    loader = AsyncDataLoader(
        ParquetShardedSource(data),
        transforms=[
            KeepNotDivisible(3),
            make_transform("tokenize", {}),
            TRANSFORMS["random_map"](),
        ],
        worker_processes=2,
    )
    assert loader.plan.batching is not None and loader.plan.batching.rows_per_call == 0
    assert "one row at a time" in loader.describe()
    loader.close()


# -- projection push-down -----------------------------------------------------------------------


def chunk_bytes(paths: list[str], columns: list[str] | None) -> int:
    """The compressed size of the column chunks of ``columns`` (all for None) in ``paths``."""
    total = 0
    for path in paths:
        metadata = pq.read_metadata(path)
        for group in range(metadata.num_row_groups):
            total += sum(
                c.total_compressed_size for c in selected_column_chunks(metadata, group, columns)
            )
    return total


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One Parquet file whose ``text`` column is most of its bytes (2 kB of text a row)."""
    path = tmp_path_factory.mktemp("wide") / "wide.parquet"
    rng = np.random.default_rng(0)
    text = ["".join(rng.choice(list("abcdefgh "), 2000)) for _ in range(600)]
    pq.write_table(
        pa.table({"id": range(600), "input_ids": [[i, i + 1] for i in range(600)], "text": text}),
        path,
        row_group_size=100,
    )
    return str(path)


def even_id(value: int) -> bool:
    return value % 2 == 0


PROJECTED = [FilterByField("id", even_id), SelectFields(["id", "input_ids"])]


def test_the_reads_fetch_only_the_columns_the_transforms_need(wide: str) -> None:
    everything = [MapFunction(dict), *PROJECTED]  # a function may read any field
    projected = AsyncDataLoader(
        ParquetShardedSource(wide), batch_size=10, pad=True, transforms=PROJECTED
    )
    full = AsyncDataLoader(
        ParquetShardedSource(wide), batch_size=10, pad=True, transforms=everything
    )
    assert projected.plan.columns == ("id", "input_ids") and full.plan.columns is None
    assert batches(projected) == batches(full)
    read, read_all = projected.stats()["bytes_read"], full.stats()["bytes_read"]
    assert read == chunk_bytes([wide], ["id", "input_ids"])  # each row group once
    assert read_all == chunk_bytes([wide], None)
    assert read * 20 < read_all
    print(f"bytes read: {read:,} projected, {read_all:,} without the projection")


def test_a_transformed_source_projects_its_inner_source(wide: str) -> None:
    """Transforms held by the source (``TransformedShardedSource``, the fluent methods) are
    walked like the loader's: the Parquet reads fetch only what they and the batch need."""
    wrapped = TransformedShardedSource(ParquetShardedSource(wide), PROJECTED)
    fluent = (
        ParquetShardedSource(wide)
        .filter(lambda row: row["id"] % 2 == 0)
        .select_fields(["id", "input_ids"])
    )
    tail = AsyncDataLoader(
        TransformedShardedSource(ParquetShardedSource(wide), PROJECTED[0]),
        batch_size=10,
        pad=True,
        transforms=[PROJECTED[1]],
    )
    reference = AsyncDataLoader(
        ParquetShardedSource(wide), batch_size=10, pad=True, transforms=PROJECTED
    )
    expected = batches(reference)
    for source_or_loader, projected in ((wrapped, True), (fluent, False), (tail, True)):
        loader = (
            source_or_loader
            if isinstance(source_or_loader, AsyncDataLoader)
            else AsyncDataLoader(source_or_loader, batch_size=10, pad=True)
        )
        assert batches(loader) == expected
        if projected:
            assert loader.plan.columns == ("id", "input_ids")
            assert loader.stats()["bytes_read"] == chunk_bytes([wide], ["id", "input_ids"])
        else:  # a filter by a function may read any field: every column is read
            assert loader.plan.columns is None
            assert loader.stats()["bytes_read"] == chunk_bytes([wide], None)


def test_the_projection_on_a_store_fetches_fewer_bytes(
    wide: str, s3_store: StoreEndpoint, fault_proxy: Callable[[StoreEndpoint], FaultProxy]
) -> None:
    """Counted by the proxy in front of the S3 emulator: the bytes that crossed the wire."""
    bucket = s3_store.new_bucket("projection")
    s3_store.upload(wide, f"{bucket}/wide.parquet")
    proxy = fault_proxy(s3_store)
    options = s3_store.storage_options(proxy.url)
    sent = {}
    for name, transforms in (("projected", PROJECTED), ("all", [MapFunction(dict), *PROJECTED])):
        proxy.reset_counters()
        source = ParquetShardedSource(f"{bucket}/wide.parquet", storage_options=options)
        loader = AsyncDataLoader(source, batch_size=10, pad=True, transforms=transforms)
        assert len(ids(batches(loader))) == 300
        sent[name] = proxy.body_bytes_sent
        assert source.stats.bytes_read <= sent[name]
    print(f"bytes over the wire: {sent}")
    assert sent["projected"] * 10 < sent["all"]
    assert sent["projected"] >= chunk_bytes([wide], ["id", "input_ids"])


def test_columns_given_and_the_projection_combine(wide: str) -> None:
    source = ParquetShardedSource(wide, columns=["id", "text"])
    loader = AsyncDataLoader(source, batch_size=10, transforms=[SelectFields(["id"])])
    assert loader.plan.columns == ("id",)
    assert "['id'], not ['text']" in loader.describe()
    assert ids(batches(loader)) == list(range(600))
    assert loader.stats()["bytes_read"] == chunk_bytes([wide], ["id"])
    with pytest.raises(MissingColumnError, match=r"no column\(s\) \['nope'\]"):
        AsyncDataLoader(ParquetShardedSource(wide, columns=["nope"]))
    narrow = AsyncDataLoader(
        ParquetShardedSource(wide, columns=["id"]), transforms=[make_transform("tokenize", {})]
    )
    with pytest.raises(MissingColumnError, match="'text'"):  # the transform needs a column left out
        list(narrow)


def test_packing_reads_only_what_it_packs(wide: str) -> None:
    loader = AsyncDataLoader(
        ParquetShardedSource(wide),
        batch_size=2,
        transforms=[TokenizeTransform(TOKENIZER, max_length=16, truncation=True)],
        pack=Pack(32, eos_token_id=1),
    )
    assert loader.plan.columns == ("text",)
    assert "packing reads ['input_ids']" in loader.describe()
    assert next(iter(loader))["input_ids"].shape == (2, 32)
    loader.close()


@pytest.mark.parametrize("kind", ["parquet", "memory", "concat"])
def test_with_columns_keeps_rows_identities_and_counters(wide: str, kind: str) -> None:
    def build() -> Any:
        if kind == "parquet":
            return ParquetShardedSource(wide)
        table = pq.read_table(wide)
        if kind == "memory":
            return InMemorySource(table)
        return ConcatSource([InMemorySource(table.slice(0, 250)), ParquetShardedSource(wide)])

    source = build()
    projected = source.with_columns({"text", "id"})
    assert projected.column_names == ["id", "text"]  # the source's order
    assert source.with_columns(["text", "input_ids", "id"]) is source
    assert projected.identities() == source.identities()
    shard = source.shard_names[-1]
    rows = list(projected.open_shard_at_row(shard, 7))
    expected = [{"id": r["id"], "text": r["text"]} for r in source.open_shard_at_row(shard, 7)]
    assert rows == expected
    assert plain(projected.read_block(len(source.shard_names) - 1, 1)) == [
        {"id": r["id"], "text": r["text"]}
        for r in plain(source.read_block(len(source.shard_names) - 1, 1))
    ]
    with pytest.raises(MissingColumnError, match=r"no column\(s\) \['nope'\]"):
        source.with_columns(["id", "nope"])
    with pytest.raises(TypeError, match="non-empty"):
        source.with_columns("id")
    if kind == "parquet":
        assert projected.stats is source.stats


# -- fingerprints -------------------------------------------------------------------------------


def _state_after(loader: AsyncDataLoader, steps: int) -> dict[str, Any]:
    for _ in range(steps):
        next(loader)
    state = json.loads(json.dumps(loader.get_state()))
    loader.close()
    return state


def test_a_state_is_refused_by_a_pipeline_with_another_tokenizer(data: str) -> None:
    def loader(tokenizer: Any) -> AsyncDataLoader:
        op = TokenizeTransform(tokenizer, output_field="tokens")
        return AsyncDataLoader(ParquetShardedSource(data), batch_size=4, pad=True, transforms=[op])

    state = _state_after(loader(TOKENIZER), 3)
    same = loader(tiny_tokenizer())  # built again: the same content, another object
    same.set_state(state)
    assert next(iter(same))["id"].shape == (4,)
    same.close()
    other_template = tiny_tokenizer()
    other_template.chat_template = "{{ messages }}"
    for other in (tiny_tokenizer(vocab_size=400), other_template):
        with pytest.raises(LoaderStateError, match="transforms: saved"):
            loader(other).set_state(state)


def test_a_stream_through_transforms_is_fingerprinted_with_them(data: str) -> None:
    def loader(divisor: int) -> AsyncDataLoader:
        stream = ShardsOnly(ParquetShardedSource(data))
        built = AsyncDataLoader(
            TransformedShardedSource(stream, KeepNotDivisible(divisor)), batch_size=4, pad=True
        )
        assert built.mode == "streaming"
        return built

    state = _state_after(loader(3), 2)
    loader(3).set_state(state)
    with pytest.raises(LoaderStateError, match="sources: saved"):
        loader(5).set_state(state)


# -- describe() ---------------------------------------------------------------------------------


def test_describe_names_the_ops_the_batching_and_the_columns(data: str) -> None:
    ops = [
        TRANSFORMS["round_trip"](),
        FilterByField("text", few_words),
        make_transform("tokenize", {}),
        TRANSFORMS["drop_tokens"](),
        TRANSFORMS["function"](),
        KeepNotDivisible(3),
    ]
    text = AsyncDataLoader(ParquetShardedSource(data), transforms=ops, pad=True).describe()
    row_ops = next(line for line in text.splitlines() if line.startswith("  row ops"))
    assert row_ops.startswith(
        "  row ops   RenameFields(mapping={'text': 'body'}, strict=True) [reads body, text; writes "
        "body, text] -> RenameFields(mapping={'body': 'text'}, strict=True) [reads body, text; "
        "writes body, text] -> FilterByField [reads text] -> TokenizeTransform [reads text; writes tokens] -> "
        "DropFields(fields=['tokens'], strict=False) [writes tokens] -> upper_text -> "
        "KeepNotDivisible; the row count changes"
    )
    assert "  batched   TokenizeTransform on 1024 rows per call: ChunkedMapDataset" in text
    assert "  columns   all 3 of the source's: the batch takes every field" in text
    function_first = [*ops[:3], TRANSFORMS["function"](), SelectFields(["id", "tokens"])]
    described = AsyncDataLoader(ParquetShardedSource(data), transforms=function_first).describe()
    assert "  columns   all 3 of the source's: upper_text may read any field" in described
    selected = AsyncDataLoader(ParquetShardedSource(data), transforms=[SelectFields(["id"])])
    assert (
        "  columns   ['id'], not ['input_ids', 'text'] (projected into the reads: SelectFields "
        "keeps only the fields it names)" in selected.describe()
    )
    two_hosts = AsyncDataLoader(
        ParquetShardedSource(data), global_batch_size=16, hosts=Hosts(0, 2), transforms=ops[2:3]
    )
    assert "ChunkedMapDataset over this host's rows, after the host split" in two_hosts.describe()


# -- fluent methods on every source -------------------------------------------------------------


def test_every_source_has_the_fluent_methods(data: str) -> None:
    parquet = ParquetShardedSource(data)
    memory = InMemorySource(pq.read_table(parquet.shard_names))
    concat = ConcatSource(
        [ParquetShardedSource(parquet.shard_names[0]), ParquetShardedSource(parquet.shard_names[1])]
    )
    expected = None
    for source in (parquet, memory, concat):
        assert isinstance(source, TransformableSource)
        fluent = (
            source.filter(lambda row: few_words(row["text"]))
            .rename_fields({"text": "body"})
            .select_fields(["id", "body"])
            .map(lambda row: {**row, "words": len(row["body"].split())})
            .drop_fields("body")
        )
        assert isinstance(fluent, TransformedShardedSource) and fluent.source is source
        assert len(fluent.transform.steps) == 5
        got = batches(AsyncDataLoader(fluent, batch_size=64))  # in order: one answer
        expected = expected or got
        assert got == expected
    assert all(w <= 4 for batch in expected for w in batch["words"])


# -- the loader's transforms equal TransformedShardedSource ---------------------------------------

POOL = [
    "filter",
    "few_words",
    "tokenize",
    "upper_field",
    "round_trip",
    "select",
    "drop_tokens",
    "map",
    "function",
]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    names=st.lists(st.sampled_from(POOL), min_size=1, max_size=4, unique=True),
    batch_size=st.integers(1, 40),
    shuffle=st.sampled_from([0, 50, 700]),
    epochs=st.integers(1, 2),
    hosts=st.sampled_from([(0, 1), (1, 2)]),
    seed=st.integers(0, 5),
)
def test_loader_transforms_equal_a_transformed_source(
    data: str,
    names: list[str],
    batch_size: int,
    shuffle: int,
    epochs: int,
    hosts: tuple[int, int],
    seed: int,
) -> None:
    """The same transforms in ``AsyncDataLoader(transforms=...)`` (planned: batched calls,
    projection) and in ``TransformedShardedSource`` (blocks transformed whole) give the same
    batches, row for row."""
    ops = [make_transform(name, {}) for name in names]
    options: dict[str, Any] = {
        "batch_size": batch_size,
        "shuffle_buffer_size": shuffle,
        "num_epochs": epochs,
        "hosts": Hosts(*hosts),
        "seed": seed,
        "pad": True,
        "prefetch_buffer_size": 0,
    }
    source = ParquetShardedSource(data)
    planned = AsyncDataLoader(source, transforms=ops, **options)
    wrapped = AsyncDataLoader(TransformedShardedSource(source, ops), **options)
    first, second = batches(planned), batches(wrapped)
    assert len(first) == len(second)
    for a, b in itertools.zip_longest(first, second):
        assert a == b


def test_the_chat_template_is_batched_in_the_loader() -> None:
    rows = [
        {"id": i, "messages": [{"role": "user", "content": f"the fox {i}"}]} for i in range(300)
    ]
    source = InMemorySource.from_rows(rows)
    ops = [ChatTemplateTransform(TOKENIZER)]  # the conversation is dropped (drop_messages)
    loader = AsyncDataLoader(source, batch_size=50, transforms=ops)
    assert "ChatTemplateTransform on 1000 rows per call" in loader.describe()
    got = batches(loader)
    assert sorted(got[0]) == ["id", "text"]
    fluent = source.apply_chat_template(TOKENIZER)
    assert got == batches(AsyncDataLoader(fluent, batch_size=50))
    assert got[0]["text"][3] == "<|im_start|>user\nthe fox 3<|im_end|>"
