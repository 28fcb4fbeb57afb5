"""Fluent methods on a mixture (``MixedShardedSource``): ``mixed.map(f)...`` gives the rows of
``AsyncDataLoader(mixed, transforms=[f, ...])`` in the same order, resumes exactly (hypothesis),
and iterated directly is the mixture in file order, transformed."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain import AsyncDataLoader, InMemorySource
from easydata_grain.sources.mixed import MixedShardedSource
from easydata_grain.sources.transformed import TransformedShardedSource, mixture_and_steps
from easydata_grain.synthetic import tiny_tokenizer
from easydata_grain.transforms.fields import DropFields, MapField, RenameFields, SelectFields
from easydata_grain.transforms.filters import FilterByField
from easydata_grain.transforms.tokenize import TokenizeTransform

WORDS = ["the", "fox", "and", "dog", "was", "there"]


def _mixture(sizes: list[int], **options: Any) -> MixedShardedSource:
    return MixedShardedSource(
        {
            f"s{c}": InMemorySource.from_rows(
                [{"src": c, "i": i, "text": " ".join(WORDS[: 1 + i % 5])} for i in range(n)]
            )
            for c, n in enumerate(sizes)
        },
        block_size=5,
        **options,
    )


def _odd(i: int) -> bool:
    return i % 2 == 1


def _double(i: int) -> int:
    return 2 * i


# each: the fluent call and the same step as a transform (in an order that runs any subset)
STEPS = {
    "rename": (
        lambda s: s.rename_fields({"text": "body"}).rename_fields({"body": "text"}),
        RenameFields({"text": "body"}) >> RenameFields({"body": "text"}),
    ),
    "map": (lambda s: s.map(MapField("i", _double)), MapField("i", _double)),
    "filter": (lambda s: s.filter(FilterByField("i", _odd)), FilterByField("i", _odd)),
    "select": (lambda s: s.select_fields(["src", "i"]), SelectFields(["src", "i"])),
    "drop": (lambda s: s.drop_fields("text", strict=False), DropFields("text", strict=False)),
}


def _rows(loader: AsyncDataLoader) -> list[tuple[int, int]]:
    return [(int(s), int(i)) for b in loader for s, i in zip(b["src"], b["i"], strict=True)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 30), min_size=2, max_size=3),
    names=st.lists(st.sampled_from(list(STEPS)), min_size=1, max_size=3, unique=True),
    shuffle=st.sampled_from([0, 8]),
    seed=st.integers(0, 5),
    batch=st.integers(1, 6),
    data=st.data(),
)
def test_fluent_mixture_equals_loader_transforms_and_resumes(
    sizes: list[int], names: list[str], shuffle: int, seed: int, batch: int, data: st.DataObject
) -> None:
    names = sorted(names, key=list(STEPS).index)
    mixed = _mixture(sizes, stop_strategy="all_exhausted")
    fluent: Any = mixed
    for name in names:
        fluent = STEPS[name][0](fluent)
    assert isinstance(fluent, TransformedShardedSource) and fluent.source is mixed
    options = {"batch_size": batch, "shuffle_buffer_size": shuffle, "seed": seed}

    def build() -> AsyncDataLoader:
        return AsyncDataLoader(fluent, **options)

    by_transforms = AsyncDataLoader(mixed, transforms=[STEPS[n][1] for n in names], **options)
    loader = build()
    assert loader.source is mixed and loader.fingerprint() == by_transforms.fingerprint()
    straight = _rows(loader)
    assert straight == _rows(by_transforms)
    stop = data.draw(st.integers(0, -(-len(straight) // batch)))
    first = build()
    head = [
        (int(s), int(i))
        for _ in range(stop)
        for b in [next(first)]
        for s, i in zip(b["src"], b["i"], strict=True)
    ]
    second = build()
    second.set_state(json.loads(json.dumps(first.get_state())))
    assert head + _rows(second) == straight


def _as_chat(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "messages": [{"role": "user", "content": row["text"]}]}


def test_fluent_tokenize_on_a_mixture_and_direct_iteration() -> None:
    tokenizer = tiny_tokenizer()
    mixed = _mixture([7, 9], source_field="from")
    fluent = mixed.filter(FilterByField("from", lambda name: name == "s1")).tokenize(
        tokenizer, text_field="text"
    )
    loader = AsyncDataLoader(fluent, batch_size=4, pad=True, seed=1)
    same = AsyncDataLoader(
        mixed,
        batch_size=4,
        pad=True,
        seed=1,
        transforms=[
            FilterByField("from", lambda name: name == "s1"),
            TokenizeTransform(tokenizer, text_field="text"),
        ],
    )
    got, expected = list(loader), list(same)
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected, strict=True):
        assert a.keys() == b.keys() and set(a["from"]) == {"s1"}
        assert all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)
    # iterated directly: the mixture in file order, through the steps
    direct = list(fluent.open_shard("mixture"))
    op = TokenizeTransform(tokenizer, text_field="text")
    reference = [op.map(r) for r in mixed.open_shard("mixture") if r["from"] == "s1"]
    assert [r["i"] for r in direct] == [r["i"] for r in reference]
    assert all(
        (a["input_ids"] == b["input_ids"]).all() for a, b in zip(direct, reference, strict=True)
    )
    assert mixture_and_steps(fluent) == (mixed, fluent.transform.steps)
    plain = InMemorySource.from_rows([{"i": 1}]).map(MapField("i", _double))
    assert mixture_and_steps(plain) == (plain, ())


def test_fluent_chat_template_on_a_mixture() -> None:
    tokenizer = tiny_tokenizer()
    mixed = _mixture([6, 4])
    fluent = mixed.map(_as_chat).apply_chat_template(tokenizer).select_fields(["src", "text"])
    texts = [list(b["text"]) for b in AsyncDataLoader(fluent, batch_size=3, seed=2)]
    from easydata_grain.transforms.chat import ChatTemplateTransform

    same = AsyncDataLoader(
        mixed,
        batch_size=3,
        seed=2,
        transforms=[_as_chat, ChatTemplateTransform(tokenizer), SelectFields(["src", "text"])],
    )
    assert texts == [list(b["text"]) for b in same]
    assert texts[0][0].startswith("<|im_start|>user")
