"""Conversation turns as Arrow gives them (a column of both layouts: every turn has all four
keys, the other layout's null) and turns with no text: ``transforms/chatml.py``."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from easydata_grain import (
    ChatTemplateTransform,
    ConvertInputOutputToChatML,
    ConvertToChatML,
    MalformedRowError,
    ParquetShardedSource,
    TransformedShardedSource,
)
from easydata_grain.synthetic import tiny_tokenizer

ROWS = [
    {
        "conversations": [
            {"role": "user", "content": "open q"},
            {"role": "assistant", "content": "a"},
        ]
    },
    {"conversations": [{"from": "human", "value": "share q"}, {"from": "gpt", "value": "b"}]},
]


def test_a_parquet_column_of_both_layouts_renders_every_turn(tmp_path: Path) -> None:
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "chat.parquet")
    source = ParquetShardedSource(str(tmp_path / "chat.parquet"))
    raw = list(source.open_shard(source.shard_names[0]))
    assert raw[1]["conversations"][0]["role"] is None  # what Arrow gives: both layouts' keys
    chat = TransformedShardedSource(source, ChatTemplateTransform(tiny_tokenizer()))
    texts = [row["text"] for row in chat.open_shard(chat.shard_names[0])]
    assert "user\nopen q" in texts[0] and "assistant\na" in texts[0]
    assert "user\nshare q" in texts[1] and "assistant\nb" in texts[1]
    converted = ConvertToChatML().map(raw[1])["messages"]
    assert converted == [
        {"role": "user", "content": "share q"},
        {"role": "assistant", "content": "b"},
    ]


@pytest.mark.parametrize("text", [None, 5, ["x"]])
def test_a_sharegpt_turn_without_text_is_an_error(text: object) -> None:
    row = {"conversations": [{"from": "human", "value": text}]}
    with pytest.raises(MalformedRowError, match=r"Message 0 .* has no text"):
        ConvertToChatML().map(row)
    with pytest.raises(MalformedRowError, match=r"Message 0 .* has no text"):
        ChatTemplateTransform(tiny_tokenizer()).map(row)


@pytest.mark.parametrize("field", ["instruction", "output"])
def test_an_alpaca_row_needs_its_instruction_and_output(field: str) -> None:
    row = {"instruction": "say hi", "input": None, "output": "hi", field: None}
    with pytest.raises(MalformedRowError, match=f"'{field}' of the row .* is null"):
        ConvertInputOutputToChatML().map(row)
    ok = {"instruction": "say hi", "input": None, "output": "hi"}
    assert ConvertInputOutputToChatML().map(ok)["messages"][0]["content"] == "say hi"


def test_a_null_target_is_absent_for_the_overwrite_check() -> None:
    """An Alpaca row of a mixed-layout Parquet file has ``messages: None``: converting it writes
    the field (a non-null one is still refused)."""
    row = {"instruction": "say hi", "input": "", "output": "hi", "messages": None}
    assert ConvertInputOutputToChatML().map(row)["messages"][1]["content"] == "hi"
    with pytest.raises(MalformedRowError, match="would overwrite 'messages'"):
        ConvertInputOutputToChatML().map({**row, "messages": [{"role": "user", "content": "x"}]})


def test_a_text_conversation_field_falls_through_to_the_alpaca_layout() -> None:
    row = {"conversation": "conv-123", "instruction": "say hi", "input": "", "output": "hi"}
    out = ChatTemplateTransform(tiny_tokenizer()).map(row)
    assert "user\nsay hi" in out["text"] and "assistant\nhi" in out["text"]
    assert out["conversation"] == "conv-123"  # not a conversation: kept (drop_messages)
    with pytest.raises(MalformedRowError, match="should be a list of messages"):
        ChatTemplateTransform(tiny_tokenizer()).map({"messages": "not turns"})
