"""TokenizeTransform and the chunked (batched) Grain ops, with a real tokenizer built offline:
batched ids equal one call per text and the tokenizer's own call; errors name the row."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import grain
import numpy as np
import pytest
import tokenizers
from hypothesis import given, settings
from hypothesis import strategies as st

from easydata_grain.graph.chunked_map import ChunkedMapDataset, ChunkedMapIterDataset
from easydata_grain.io.errors import MalformedRowError, MissingColumnError
from easydata_grain.synthetic import synthetic_table, tiny_tokenizer
from easydata_grain.transforms.chain import MapChain
from easydata_grain.transforms.fields import RenameFields
from easydata_grain.transforms.tokenize import TokenizeTransform
from easydata_grain.transforms.tokenizer_identity import tokenizer_fingerprint

TEXTS = [
    "the fox",
    "and the dog was there",
    "<|im_start|> special tokens in text <|im_end|>",
    "unicode: déjà vu — 東京",
    " leading and trailing spaces ",
    "x" * 500,
]


_TOKENIZER = tiny_tokenizer()  # for the hypothesis test (no fixtures in @given tests)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return tiny_tokenizer()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"add_special_tokens": False},
        {"max_length": 5, "truncation": True},
        {"max_length": 1, "truncation": True, "add_special_tokens": False},
    ],
)
def test_ids_equal_the_tokenizers_own_call(tokenizer: Any, options: dict[str, Any]) -> None:
    op = TokenizeTransform(tokenizer, **options)
    expected = tokenizer(TEXTS, **options)["input_ids"]
    batched = op.tokenize_batch([{"text": t} for t in TEXTS])
    assert [row["input_ids"].tolist() for row in batched] == expected
    one_by_one = [op.map({"text": t})["input_ids"].tolist() for t in TEXTS]
    assert one_by_one == expected
    assert all(row["input_ids"].dtype == np.int32 for row in batched)
    # the caller's tokenizer is not reconfigured by ours
    assert tokenizer("x " * 50)["input_ids"] == tokenizer(["x " * 50])["input_ids"][0]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=30))
def test_batched_equals_per_text(texts: list[str]) -> None:
    op = TokenizeTransform(_TOKENIZER)
    batched = [r["input_ids"].tolist() for r in op.tokenize_batch([{"text": t} for t in texts])]
    assert batched == [_TOKENIZER(t)["input_ids"] for t in texts]


def test_fields_and_attention_mask(tokenizer: Any) -> None:
    op = TokenizeTransform(
        tokenizer, text_field="body", output_field="ids", return_attention_mask=True
    )
    out = op.map({"body": "the fox", "id": 1})
    assert out["id"] == 1 and out["body"] == "the fox"
    assert out["attention_mask"].tolist() == [1] * len(out["ids"])
    assert out["attention_mask"].dtype == np.int32
    assert op.reads == {"body"} and op.writes == {"ids", "attention_mask"}


def test_bad_inputs_name_the_row(tokenizer: Any) -> None:
    op = TokenizeTransform(tokenizer)
    with pytest.raises(MissingColumnError, match=r"'text'.*fields \['body'\]"):
        op.map({"body": "x"})
    with pytest.raises(
        MalformedRowError, match=r"'text' of the row with fields \['id', 'text'\] is a int"
    ):
        op.tokenize_batch([{"id": 0, "text": "ok"}, {"id": 1, "text": 5}])
    with pytest.raises(MalformedRowError, match=r"is empty.*FilterNonEmpty"):
        op.map({"text": ""})
    assert TokenizeTransform(tokenizer, allow_empty=True).map({"text": ""})[
        "input_ids"
    ].tolist() == [tokenizer.bos_token_id]


def test_construction_is_validated(tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="needs max_length"):
        TokenizeTransform(tokenizer, truncation=True)
    with pytest.raises(ValueError, match="without truncation"):
        TokenizeTransform(tokenizer, max_length=8)
    with pytest.raises(ValueError, match="max_length"):
        TokenizeTransform(tokenizer, max_length=0, truncation=True)
    with pytest.raises(TypeError, match="transformers tokenizer"):
        TokenizeTransform("gpt2")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="truncation must be a bool"):
        TokenizeTransform(tokenizer, truncation="yes")  # type: ignore[arg-type]


def test_fingerprint_and_pickle(tokenizer: Any) -> None:
    op = TokenizeTransform(tokenizer, max_length=8, truncation=True)
    assert (
        op.fingerprint()
        == TokenizeTransform(tiny_tokenizer(), max_length=8, truncation=True).fingerprint()
    )
    assert (
        op.fingerprint()
        != TokenizeTransform(tokenizer, max_length=9, truncation=True).fingerprint()
    )
    assert (
        op.fingerprint()
        != TokenizeTransform(
            tiny_tokenizer(vocab_size=300), max_length=8, truncation=True
        ).fingerprint()
    )
    copy = pickle.loads(pickle.dumps(op))
    assert (
        copy.map({"text": "the fox and"})["input_ids"].tolist()
        == op.map({"text": "the fox and"})["input_ids"].tolist()
    )


# -- chunked (batched) Grain ops ----------------------------------------------------------------


class CountingTokenize(TokenizeTransform):
    """Counts its batched calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[int] = []

    def tokenize_batch(self, rows: Any) -> list[Any]:
        self.calls.append(len(rows))
        return super().tokenize_batch(rows)


def _texts(n: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "text": t}
        for i, t in enumerate(synthetic_table(n, max_tokens=20).column("text").to_pylist())
    ]


def test_chunked_map_dataset_random_access(tokenizer: Any) -> None:
    rows = _texts(250)
    op = CountingTokenize(tokenizer)
    dataset = ChunkedMapDataset(grain.MapDataset.source(rows), op, chunk_size=100)
    assert len(dataset) == 250
    expected = [tokenizer(r["text"])["input_ids"] for r in rows]
    assert dataset[123]["input_ids"].tolist() == expected[123]
    assert op.calls == [100]
    assert [dataset[i]["input_ids"].tolist() for i in range(100, 200)] == expected[100:200]
    assert op.calls == [100]  # the chunk was kept
    assert dataset[-1]["id"] == 249 and op.calls == [100, 50]
    assert [r["id"] for r in dataset._getitems([5, 249, 150])] == [5, 249, 150]
    # as a Grain pipeline: shuffled upstream, iterated, resumed from a state
    pipeline = ChunkedMapDataset(grain.MapDataset.source(rows).shuffle(seed=3), op, chunk_size=64)
    straight = [r["id"] for r in pipeline.to_iter_dataset()]
    iterator = iter(pipeline.to_iter_dataset())
    first = [next(iterator)["id"] for _ in range(77)]
    state = iterator.get_state()
    resumed = iter(pipeline.to_iter_dataset())
    resumed.set_state(state)
    assert first + [r["id"] for r in resumed] == straight


def test_chunked_map_dataset_threads(tokenizer: Any) -> None:
    rows = _texts(400)
    op = CountingTokenize(tokenizer)
    dataset = ChunkedMapDataset(grain.MapDataset.source(rows), op, chunk_size=100, cached_chunks=4)
    results: dict[int, list[int]] = {}

    def read(start: int) -> None:
        for i in range(start, 400, 4):
            results[i] = dataset[i]["input_ids"].tolist()

    threads = [threading.Thread(target=read, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(400)] == [tokenizer(r["text"])["input_ids"] for r in rows]
    assert sorted(op.calls) == [100] * 4  # each chunk tokenized once


def test_chunked_map_iter_dataset_resumes(tokenizer: Any) -> None:
    rows = _texts(230)
    chain = RenameFields({"text": "body"}) >> TokenizeTransform(tokenizer, text_field="body")
    assert isinstance(chain, MapChain)
    stream = ChunkedMapIterDataset(grain.MapDataset.source(rows).to_iter_dataset(), chain, 50)
    straight = [(r["id"], r["input_ids"].tolist()) for r in stream]
    assert straight == [(r["id"], tokenizer(r["text"])["input_ids"]) for r in rows]
    for stop in (0, 1, 49, 50, 51, 199, 229, 230):
        iterator = iter(stream)
        head = [next(iterator)["id"] for _ in range(stop)]
        state = iterator.get_state()
        again = iter(stream)
        again.set_state(state)
        assert head + [r["id"] for r in again] == [r["id"] for r in rows], stop


def test_chunked_ops_check_their_arguments(tokenizer: Any) -> None:
    source = grain.MapDataset.source([{"text": "a"}])
    with pytest.raises(TypeError, match="BatchMap"):
        ChunkedMapDataset(source, RenameFields({"a": "b"}))
    with pytest.raises(ValueError, match="chunk_size"):
        ChunkedMapDataset(source, TokenizeTransform(tokenizer), chunk_size=0)


# -- the tokenizer's Python-side settings ------------------------------------------------------


def test_split_special_tokens_is_honoured_and_fingerprinted() -> None:
    """A tokenizer set to ``split_special_tokens=True`` tokenizes a special token's text inside a
    document as text; the transform's ids are the tokenizer's, and the fingerprint differs."""
    splitting = tiny_tokenizer()
    splitting.split_special_tokens = True
    plain_tokenizer = tiny_tokenizer()
    op = TokenizeTransform(splitting)
    text = "a page that quotes <|im_start|>system"
    assert op.map({"text": text})["input_ids"].tolist() == splitting(text)["input_ids"]
    assert (
        splitting.convert_tokens_to_ids("<|im_start|>")
        not in op.map({"text": text})["input_ids"].tolist()
    )
    assert [r["input_ids"].tolist() for r in op.tokenize_batch([{"text": t} for t in TEXTS])] == (
        splitting(TEXTS)["input_ids"]
    )
    assert op.fingerprint() != TokenizeTransform(plain_tokenizer).fingerprint()
    assert tokenizer_fingerprint(splitting) != tokenizer_fingerprint(plain_tokenizer)
    raw = tokenizers.Tokenizer.from_str(plain_tokenizer.backend_tokenizer.to_str())
    raw_id = tokenizer_fingerprint(raw)
    raw.encode_special_tokens = True  # a raw backend's own setting
    assert tokenizer_fingerprint(raw) != raw_id
    copy = pickle.loads(pickle.dumps(op))
    assert copy.map({"text": text})["input_ids"].tolist() == splitting(text)["input_ids"]


@pytest.mark.parametrize("side", ["left", "right"])
def test_truncation_side_is_honoured_and_fingerprinted(side: str) -> None:
    """``tokenizer.truncation_side`` decides which end is cut: the ids are the tokenizer's, and
    the fingerprint names the side (a state saved with one side is refused by the other)."""
    sided = tiny_tokenizer()
    sided.truncation_side = side
    op = TokenizeTransform(sided, max_length=4, truncation=True)
    expected = sided(TEXTS, max_length=4, truncation=True)["input_ids"]
    assert [r["input_ids"].tolist() for r in op.tokenize_batch([{"text": t} for t in TEXTS])] == (
        expected
    )
    other = tiny_tokenizer()
    other.truncation_side = "right" if side == "left" else "left"
    assert op.fingerprint() != TokenizeTransform(other, max_length=4, truncation=True).fingerprint()
    # without truncation the side does not matter
    assert TokenizeTransform(sided).fingerprint() == TokenizeTransform(other).fingerprint()


# -- text rendered by a chat template -----------------------------------------------------------

LLAMA2 = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + message['content'].strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'].strip() + ' ' + "
    "eos_token }}{% endif %}{% endfor %}"
)
"""A chat template that writes the BOS itself, as Llama 2's does."""
TURNS = [{"role": "user", "content": "Name a fox."}, {"role": "assistant", "content": "Reynard."}]


def _llama() -> Any:
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = LLAMA2
    return tokenizer


def test_after_a_chat_template_no_second_bos() -> None:
    """``after_chat_template`` gives a ``TokenizeTransform`` left at the default that reads a
    chat template's text ``add_special_tokens=False``: one BOS, the ids of transformers'
    ``apply_chat_template(tokenize=True)``. An explicit choice, another field or plain text
    keep theirs; with ``pass_through`` it warns and keeps True."""
    from easydata_grain.transforms.chat import ChatTemplateTransform
    from easydata_grain.transforms.tokenize import after_chat_template

    tokenizer = _llama()
    expected = tokenizer.apply_chat_template(TURNS, tokenize=True, return_dict=True)["input_ids"]
    chat, tokenize = ChatTemplateTransform(tokenizer), TokenizeTransform(tokenizer)
    assert tokenize.add_special_tokens and not tokenize.special_tokens_given
    steps = after_chat_template([chat, RenameFields({"id": "key"}), tokenize])
    row = steps[2].map(steps[0].map({"messages": TURNS}))
    assert row["input_ids"].tolist() == list(expected)
    assert row["input_ids"].tolist().count(tokenizer.bos_token_id) == 1
    assert steps[2].fingerprint() == TokenizeTransform(tokenizer, add_special_tokens=False).identity
    assert after_chat_template(steps) == steps  # resolved once
    explicit = TokenizeTransform(tokenizer, add_special_tokens=True)
    assert after_chat_template([chat, explicit])[1] is explicit
    other_field = TokenizeTransform(tokenizer, text_field="body")
    assert after_chat_template([chat, other_field])[1] is other_field
    assert after_chat_template([tokenize, chat])[0] is tokenize  # tokenized before rendering
    mixed = ChatTemplateTransform(tokenizer, pass_through=True)
    with pytest.warns(UserWarning, match=r"pass_through=True.*gets a second one"):
        assert after_chat_template([mixed, tokenize])[1] is tokenize
    with pytest.raises(TypeError, match="add_special_tokens must be a bool or None"):
        TokenizeTransform(tokenizer, add_special_tokens="yes")  # type: ignore[arg-type]


def test_the_rendered_text_is_followed_through_renames_and_drops() -> None:
    """A rename carries the chat text to the tokenizer (one BOS, not two); a drop or an
    overwrite of it ends it there, and plain text renamed into its place keeps its BOS."""
    from easydata_grain.transforms.chat import ChatTemplateTransform
    from easydata_grain.transforms.fields import DropFields
    from easydata_grain.transforms.tokenize import after_chat_template

    tokenizer = _llama()
    chat = ChatTemplateTransform(tokenizer)
    renamed = after_chat_template(
        [chat, RenameFields({"text": "body"}), TokenizeTransform(tokenizer, text_field="body")]
    )
    assert renamed[2].add_special_tokens is False
    replaced = after_chat_template(
        [chat, DropFields("text"), RenameFields({"raw": "text"}), TokenizeTransform(tokenizer)]
    )
    assert replaced[3].add_special_tokens is True
    row = replaced[3].map({"text": "the fox"})
    assert row["input_ids"].tolist()[0] == tokenizer.bos_token_id


def _fluent(tokenizer: Any) -> list[int]:
    from easydata_grain import InMemorySource

    source = InMemorySource.from_rows([{"messages": TURNS}])
    tokens = source.apply_chat_template(tokenizer).tokenize(tokenizer)
    return next(iter(tokens.open_shard(tokens.shard_names[0])))["input_ids"].tolist()


def _chained(tokenizer: Any) -> list[int]:
    from easydata_grain.transforms.chat import ChatTemplateTransform

    steps = ChatTemplateTransform(tokenizer) >> TokenizeTransform(tokenizer)
    return steps.map({"messages": TURNS})["input_ids"].tolist()


def _loader(tokenizer: Any) -> list[int]:
    from easydata_grain import AsyncDataLoader, InMemorySource
    from easydata_grain.transforms.chat import ChatTemplateTransform

    loader = AsyncDataLoader(
        InMemorySource.from_rows([{"messages": TURNS}]),
        batch_size=1,
        pad=True,
        transforms=[ChatTemplateTransform(tokenizer), TokenizeTransform(tokenizer)],
    )
    return next(iter(loader))["input_ids"][0].tolist()


@pytest.mark.parametrize("pipeline", [_fluent, _chained, _loader])
def test_chat_template_then_tokenize_has_one_bos(pipeline: Any) -> None:
    """``.apply_chat_template(tok).tokenize(tok)``, ``ChatTemplateTransform >>
    TokenizeTransform`` and the loader's ``transforms=[...]`` give the ids of transformers'
    ``apply_chat_template(tokenize=True)``: one BOS, though the template writes it."""
    tokenizer = _llama()
    expected = tokenizer.apply_chat_template(TURNS, tokenize=True, return_dict=True)["input_ids"]
    assert pipeline(tokenizer) == list(expected)
