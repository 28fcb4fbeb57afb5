"""ChatTemplateTransform with a real transformers tokenizer built offline: every layout, the
assistant-token mask, and the errors (no silent fallback)."""

from __future__ import annotations

import itertools
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from easydata_grain.io.errors import MalformedRowError
from easydata_grain.synthetic import tiny_tokenizer
from easydata_grain.transforms.chat import ChatTemplateTransform
from easydata_grain.transforms.tokenizer_identity import tokenizer_fingerprint
from tests.helpers import plain

OPENAI = [{"role": "user", "content": "the fox"}, {"role": "assistant", "content": "and the dog"}]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return tiny_tokenizer()


def _render(tokenizer: Any, messages: list[dict[str, str]], **kwargs: Any) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


def test_openai_messages(tokenizer: Any) -> None:
    out = ChatTemplateTransform(tokenizer).map({"messages": OPENAI, "id": 3})
    assert out["text"] == _render(tokenizer, OPENAI) and out["id"] == 3
    assert out["text"].startswith("<|im_start|>user\nthe fox<|im_end|>")


def test_sharegpt_conversations(tokenizer: Any) -> None:
    row = {
        "conversations": [
            {"from": "human", "value": "the fox"},
            {"from": "gpt", "value": "and the dog"},
        ]
    }
    assert ChatTemplateTransform(tokenizer).map(row)["text"] == _render(tokenizer, OPENAI)
    # ShareGPT turns under the messages field, and OpenAI turns under conversations
    assert ChatTemplateTransform(tokenizer).map({"messages": row["conversations"]})["text"] == (
        _render(tokenizer, OPENAI)
    )
    assert ChatTemplateTransform(tokenizer).map({"conversations": OPENAI})["text"] == (
        _render(tokenizer, OPENAI)
    )


def test_alpaca_rows(tokenizer: Any) -> None:
    row = {"instruction": "Add", "input": "1 2", "output": "3", "text": "old"}
    expected = [{"role": "user", "content": "Add\n\n1 2"}, {"role": "assistant", "content": "3"}]
    assert ChatTemplateTransform(tokenizer).map(row)["text"] == _render(tokenizer, expected)
    no_input = {"instruction": "Add", "input": "", "output": "3"}
    assert "Add<|im_end|>" in ChatTemplateTransform(tokenizer).map(no_input)["text"]
    with_system = ChatTemplateTransform(tokenizer, system_prompt="Be brief").map(no_input)
    assert with_system["text"].startswith("<|im_start|>system\nBe brief<|im_end|>")


def test_options(tokenizer: Any) -> None:
    prompt = ChatTemplateTransform(tokenizer, add_generation_prompt=True, output_field="prompt")
    out = prompt.map({"messages": OPENAI[:1]})
    assert out["prompt"].endswith("<|im_start|>assistant\n") and "text" not in out
    custom = ChatTemplateTransform(
        tokenizer, messages_field="chat", chat_template="{{ messages | length }} turns"
    )
    assert custom.map({"chat": OPENAI})["text"] == "2 turns"
    tools = [{"type": "function", "function": {"name": "add", "parameters": {}}}]
    listing = ChatTemplateTransform(
        tokenizer,
        tools=tools,
        chat_template="{{ tools[0].function.name }}: {{ messages[0].content }}",
    )
    assert listing.map({"messages": OPENAI})["text"] == "add: the fox"


def test_assistant_mask(tokenizer: Any) -> None:
    op = ChatTemplateTransform(tokenizer, assistant_mask_field="loss_mask")
    out = op.map({"messages": OPENAI})
    ids, mask = out["input_ids"], out["loss_mask"]
    assert ids.dtype == np.int32 and mask.dtype == np.int32 and len(ids) == len(mask)
    expected = tokenizer.apply_chat_template(
        OPENAI, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert ids.tolist() == expected["input_ids"] and mask.tolist() == expected["assistant_masks"]
    # the masked tokens decode to the assistant's turn
    assert tokenizer.decode(ids[mask == 1]) == "and the dog<|im_end|>"
    assert out["text"] == _render(tokenizer, OPENAI)
    only_ids = ChatTemplateTransform(tokenizer, output_field=None, assistant_mask_field="m")
    assert "text" not in only_ids.map({"messages": OPENAI})
    # (it removes the conversation fields by default: drop_messages)
    assert only_ids.writes == {"input_ids", "m", "messages", "conversations", "conversation"}
    keeping = ChatTemplateTransform(
        tokenizer, output_field=None, assistant_mask_field="m", drop_messages=False
    )
    assert keeping.writes == {"input_ids", "m"}


def test_construction_errors(tokenizer: Any) -> None:
    with pytest.raises(ValueError, match=r"\{% generation %\}"):
        ChatTemplateTransform(tokenizer, assistant_mask_field="m", chat_template="{{ messages }}")
    bare = tiny_tokenizer()
    bare.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        ChatTemplateTransform(bare)
    with pytest.raises(TypeError, match="transformers tokenizer"):
        ChatTemplateTransform("meta-llama/Llama-2-7b-chat-hf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="writes nothing"):
        ChatTemplateTransform(tokenizer, output_field=None)


def test_row_errors_name_the_row(tokenizer: Any) -> None:
    op = ChatTemplateTransform(tokenizer)
    with pytest.raises(
        MalformedRowError, match=r"no conversation in the row with fields \['id', 'prompt'\]"
    ):
        op.map({"id": 1, "prompt": "x"})
    assert ChatTemplateTransform(tokenizer, pass_through=True).map({"id": 1}) == {"id": 1}
    with pytest.raises(MalformedRowError, match="has no messages"):
        op.map({"messages": []})
    with pytest.raises(MalformedRowError, match="should be a list of messages"):
        op.map({"messages": "hello"})


def test_a_failing_template_is_an_error_not_a_fallback(tokenizer: Any) -> None:
    strict = ChatTemplateTransform(
        tokenizer,
        chat_template=(
            "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}"
            "{{ raise_exception('Unsupported role ' + m.role) }}{% endif %}{{ m.content }}{% endfor %}"
        ),
    )
    assert strict.map({"messages": OPENAI})["text"] == "the foxand the dog"
    with pytest.raises(
        MalformedRowError, match=r"chat template failed .* Unsupported role tool"
    ) as info:
        strict.map({"messages": [{"role": "tool", "content": "x"}]})
    assert info.value.__cause__ is not None  # the template's own error, chained


def test_fingerprint_is_the_tokenizer_content(tokenizer: Any) -> None:
    same = tiny_tokenizer()
    assert tokenizer_fingerprint(same) == tokenizer_fingerprint(tokenizer)
    assert (
        ChatTemplateTransform(same).fingerprint() == ChatTemplateTransform(tokenizer).fingerprint()
    )
    same.name_or_path = "some/other-name"  # the name does not matter
    assert tokenizer_fingerprint(same) == tokenizer_fingerprint(tokenizer)
    other_template = tiny_tokenizer()
    other_template.chat_template = "{{ messages }}"
    assert tokenizer_fingerprint(other_template) != tokenizer_fingerprint(tokenizer)
    other_vocab = tiny_tokenizer(vocab_size=300)
    assert tokenizer_fingerprint(other_vocab) != tokenizer_fingerprint(tokenizer)
    op = ChatTemplateTransform(tokenizer, assistant_mask_field="m")
    copy = pickle.loads(pickle.dumps(op))
    assert copy.fingerprint() == op.fingerprint() and copy.map({"messages": OPENAI})["m"].sum() > 0


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layouts=st.lists(st.sampled_from(["openai", "sharegpt", "alpaca", "none"]), max_size=12),
    mask=st.booleans(),
)
def test_map_batch_equals_map_row_by_row(tokenizer: Any, layouts: list[str], mask: bool) -> None:
    """The batched path (one template call per list: the loader's) gives ``map``'s rows."""
    rows: list[dict[str, Any]] = []
    for i, layout in enumerate(layouts):
        turns = [{**turn, "content": f"{turn['content']} {i}"} for turn in OPENAI]
        if layout == "openai":
            rows.append({"id": i, "messages": turns})
        elif layout == "sharegpt":
            roles = {"user": "human", "assistant": "gpt"}
            rows.append(
                {
                    "conversations": [
                        {"from": roles[t["role"]], "value": t["content"]} for t in turns
                    ]
                }
            )
        elif layout == "alpaca":
            rows.append({"instruction": f"say {i}", "input": "", "output": f"ok {i}"})
        else:
            rows.append({"id": i})
    op = ChatTemplateTransform(
        tokenizer, assistant_mask_field="loss_mask" if mask else None, pass_through=True
    )
    batched, single = op.map_batch(rows), [op.map(row) for row in rows]
    assert [list(r) for r in batched] == [list(r) for r in single]
    assert plain(batched) == plain(single)


def test_map_batch_raises_the_failing_rows_error(tokenizer: Any) -> None:
    strict = ChatTemplateTransform(
        tokenizer,
        chat_template=(
            "{% for m in messages %}{% if m.role != 'user' %}"
            "{{ raise_exception('Unsupported role ' + m.role) }}{% endif %}{{ m.content }}{% endfor %}"
        ),
    )
    rows = [{"messages": [{"role": "user", "content": str(i)}]} for i in range(5)]
    rows[3] = {"id": 3, "messages": [{"role": "tool", "content": "x"}]}
    with pytest.raises(MalformedRowError, match=r"fields \['id', 'messages'\] .* role tool"):
        strict.map_batch(rows)
    with pytest.raises(MalformedRowError, match="no conversation"):
        ChatTemplateTransform(tokenizer).map_batch([{"id": 1}])


def test_a_null_field_falls_through_to_the_next_layout(tokenizer: Any, tmp_path: Any) -> None:
    """A Parquet file of mixed layouts has nulls where a row has another layout: a null
    ``messages`` is absent, so ``conversations`` or the Alpaca fields are used; a row with no
    non-null layout is still an error naming the shard and the row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from easydata_grain.sources.parquet import ParquetShardedSource
    from easydata_grain.sources.transformed import TransformedShardedSource

    sharegpt = [{"from": "human", "value": "the fox"}, {"from": "gpt", "value": "and the dog"}]
    rows = [
        {"messages": OPENAI, "conversations": None, "instruction": None, "output": None},
        {"messages": None, "conversations": sharegpt, "instruction": None, "output": None},
        {"messages": None, "conversations": None, "instruction": "the fox", "output": "and"},
        {"messages": None, "conversations": None, "instruction": None, "output": None},
    ]
    path = tmp_path / "mixed layouts.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    source = TransformedShardedSource(
        ParquetShardedSource(str(path)), ChatTemplateTransform(tokenizer), chunk_rows=1
    )  # one row at a time: the first three are read before the bad one
    shard = source.shard_names[0]
    alpaca = [{"role": "user", "content": "the fox"}, {"role": "assistant", "content": "and"}]
    texts = [row["text"] for row in itertools.islice(source.open_shard(shard), 3)]
    assert texts == [
        _render(tokenizer, OPENAI),
        _render(tokenizer, OPENAI),
        _render(tokenizer, alpaca),
    ]
    with pytest.raises(
        MalformedRowError, match=r"mixed layouts\.parquet, row 3: .*no conversation"
    ):
        list(source.open_shard_at_row(shard, 3))
    # map and map_batch agree on null fields
    op = ChatTemplateTransform(tokenizer)
    assert op.map_batch(rows[:3]) == [op.map(row) for row in rows[:3]]
    assert op.map({"messages": None, "instruction": "a", "input": None, "output": "b"})["text"] == (
        _render(
            tokenizer, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
        )
    )


def test_the_template_is_taken_when_the_transform_is_built(tokenizer: Any) -> None:
    """A later change of ``tokenizer.chat_template`` changes neither the rows nor the
    fingerprint: both are the template the transform was built with."""
    changed = tiny_tokenizer()
    op = ChatTemplateTransform(changed)
    before, identity = op.map({"messages": OPENAI})["text"], op.fingerprint()
    changed.chat_template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}"
    assert op.map({"messages": OPENAI})["text"] == before == _render(tokenizer, OPENAI)
    assert op.map_batch([{"messages": OPENAI}])[0]["text"] == before
    assert op.fingerprint() == identity
    rebuilt = ChatTemplateTransform(changed)  # built after the change: the new template
    assert rebuilt.map({"messages": OPENAI})["text"] == "[user] the fox[assistant] and the dog"
    assert rebuilt.fingerprint() != identity
    named = tiny_tokenizer()
    named.chat_template = {"default": "{{ messages | length }}", "short": "{{ 'short' }}"}
    assert ChatTemplateTransform(named).map({"messages": OPENAI})["text"] == "2"
    assert ChatTemplateTransform(named, chat_template="short").chat_template == "{{ 'short' }}"


def test_pass_through_rows_keep_the_fields_read_downstream(tmp_path: Any) -> None:
    """With ``pass_through`` a row without a conversation is passed on as it is, so the fields
    the next steps read from it (its ``text``) are read from the source too: the loader's
    column projection keeps them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from easydata_grain import AsyncDataLoader, ParquetShardedSource, SelectFields
    from easydata_grain.transforms.tokenize import TokenizeTransform

    tokenizer = tiny_tokenizer()
    chat = ChatTemplateTransform(tokenizer, pass_through=True)
    assert chat.fields_needed(frozenset({"text", "id"})) >= {"text", "id", "messages"}
    strict = ChatTemplateTransform(tokenizer)
    assert "text" not in strict.fields_needed(frozenset({"text"}))  # it writes text on every row
    rows = [
        {"id": i, "messages": OPENAI if i % 2 else None, "text": None if i % 2 else f"doc {i}"}
        for i in range(16)
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "mixed.parquet")
    ops = [chat, TokenizeTransform(tokenizer), SelectFields(["id", "input_ids"])]
    loader = AsyncDataLoader(
        ParquetShardedSource(str(tmp_path / "mixed.parquet")),
        batch_size=4,
        pad=True,
        transforms=ops,
    )
    got = {
        int(i): list(ids[mask == 1])
        for batch in loader
        for i, ids, mask in zip(
            batch["id"], batch["input_ids"], batch["input_ids_mask"], strict=True
        )
    }
    plain_text = tokenizer("doc 4")["input_ids"]
    assert len(got) == 16 and got[4] == plain_text


def test_easydel_arguments(tokenizer: Any) -> None:
    """EasyDeL's ``ChatTemplateTransform(tok, drop_messages=..., **template_kwargs)`` calls work:
    the conversation fields are dropped by default, other keyword arguments go to the template,
    and a singular ``conversation`` field is read too."""
    out = ChatTemplateTransform(tokenizer).map({"messages": OPENAI, "id": 1})
    assert out == {"id": 1, "text": _render(tokenizer, OPENAI)}
    kept = ChatTemplateTransform(tokenizer, drop_messages=False).map({"messages": OPENAI})
    assert kept["messages"] == OPENAI
    # a pass-through row loses its (null) conversation fields too, so rows batch alike
    mixed = ChatTemplateTransform(tokenizer, pass_through=True)
    assert mixed.map({"messages": None, "text": "doc"}) == {"text": "doc"}
    singular = ChatTemplateTransform(tokenizer).map({"conversation": OPENAI})
    assert singular == {"text": _render(tokenizer, OPENAI)}
    go_on = ChatTemplateTransform(tokenizer, continue_final_message=True)
    assert go_on.template_kwargs == {"continue_final_message": True}
    text = go_on.map({"messages": OPENAI})["text"]
    assert text == _render(tokenizer, OPENAI, continue_final_message=True)
    assert text.endswith("and the dog")
    assert go_on.fingerprint() != ChatTemplateTransform(tokenizer).fingerprint()
    variable = ChatTemplateTransform(tokenizer, chat_template="{{ greeting }}", greeting="hi")
    assert variable.map({"messages": OPENAI})["text"] == "hi"
    assert ChatTemplateTransform(tokenizer, convert_from_value_format=True).fingerprint() == (
        ChatTemplateTransform(tokenizer).fingerprint()
    )
    with pytest.raises(ValueError, match="not supported"):
        ChatTemplateTransform(tokenizer, convert_from_value_format=False)
    with pytest.raises(ValueError, match="given twice"):
        ChatTemplateTransform(tokenizer, template_kwargs={"x": 1}, x=2)
    with pytest.raises(ValueError, match=r"\['tokenize'\] are set by ChatTemplateTransform"):
        ChatTemplateTransform(tokenizer, tokenize=True)


def test_chat_template_then_tokenize_in_the_loader() -> None:
    """``AsyncDataLoader(transforms=[ChatTemplateTransform(tok), TokenizeTransform(tok)])``
    batches out of the box: the list-valued conversation field is dropped by default."""
    from easydata_grain import AsyncDataLoader, InMemorySource
    from easydata_grain.transforms.tokenize import TokenizeTransform

    tokenizer = tiny_tokenizer()
    rows = [{"id": i, "messages": OPENAI} for i in range(8)]
    ops = [ChatTemplateTransform(tokenizer), TokenizeTransform(tokenizer)]
    loader = AsyncDataLoader(InMemorySource.from_rows(rows), batch_size=4, pad=True, transforms=ops)
    batch = next(iter(loader))
    assert sorted(batch) == ["id", "input_ids", "input_ids_mask", "text"]
    assert batch["input_ids"].shape[0] == 4
