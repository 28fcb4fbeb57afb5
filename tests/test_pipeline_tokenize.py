"""The tokenize stage's fields as a pipeline honours them: ``remove_columns`` over datasets
with different fields, ``truncation=False`` (a long text is an error naming its row) and
``padding`` with the tokenizer's pad id, as Hugging Face pads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from easydata_grain import Pipeline
from easydata_grain.io.errors import SourceError
from easydata_grain.synthetic import tiny_tokenizer
from tests.helpers import write_jsonl


def _build(tmp_path: Path, tokenizer: dict[str, Any], texts: list[str], batch_size: int = 1) -> Any:
    data = write_jsonl(tmp_path / "a.jsonl", [{"id": i, "text": t} for i, t in enumerate(texts)])
    config = {
        "datasets": [{"data_files": data, "tokenizer": tokenizer}],
        "load": {"batch_size": batch_size, "shuffle_buffer_size": 0},
    }
    return Pipeline.from_config(config).build()


def test_remove_columns_drops_the_named_columns_each_dataset_has(
    tmp_path: Path, tokenizer_dir: str
) -> None:
    web = write_jsonl(
        tmp_path / "web.jsonl", [{"text": f"hello {i}", "url": "u"} for i in range(20)]
    )
    code = write_jsonl(
        tmp_path / "code.jsonl", [{"content": f"def f{i}(): pass"} for i in range(20)]
    )
    config = {
        "datasets": [
            {"data_files": web, "name": "web", "content_field": "text"},
            {"data_files": code, "name": "code", "content_field": "content"},
        ],
        "default_tokenizer": tokenizer_dir,
        "tokenize": {"remove_columns": ["text", "content"]},
        "mix": {"weights": {"web": 0.5, "code": 0.5}, "stop_strategy": "first_exhausted"},
        "load": {"batch_size": 1},
    }
    fields = {frozenset(batch) for batch in Pipeline.from_config(config).build()}
    assert all("text" not in f and "content" not in f and "input_ids" in f for f in fields)
    assert any("url" in f for f in fields)  # columns not named are kept


def test_truncation_false_tokenizes_whole_texts_and_names_a_long_row(
    tmp_path: Path, tokenizer_dir: str
) -> None:
    tokenizer = {"name_or_path": tokenizer_dir, "truncation": False, "max_length": 8}
    hf = AutoTokenizer.from_pretrained(tokenizer_dir)
    short = ["hi", "hi hi"]
    ids = [batch["input_ids"][0].tolist() for batch in _build(tmp_path, tokenizer, short)]
    assert ids == [hf(t)["input_ids"] for t in short]

    long_text = " ".join(["hello"] * 20)
    assert len(hf(long_text)["input_ids"]) > 8
    with pytest.raises(SourceError, match=r"row 1\b.*max_length=8.*truncation") as raised:
        list(_build(tmp_path, tokenizer, ["hi", long_text, "hi"]))
    assert "a.jsonl" in str(raised.value)


def test_padding_uses_the_tokenizers_pad_id(tmp_path: Path, tokenizer_dir: str) -> None:
    hf = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert hf.pad_token_id not in (None, 0)  # else this test could not tell
    texts = ["hi hi", "hi"]
    for padding in ("max_length", "longest"):
        tokenizer = {"name_or_path": tokenizer_dir, "max_length": 8, "padding": padding}
        batch = next(iter(_build(tmp_path, tokenizer, texts, batch_size=2)))
        expected = hf(texts, padding=padding, max_length=8)
        assert batch["input_ids"].tolist() == expected["input_ids"], padding
        assert batch["attention_mask"].tolist() == expected["attention_mask"], padding


def test_padding_without_a_pad_token_says_what_to_set(tmp_path: Path) -> None:
    no_pad = tiny_tokenizer()
    no_pad.pad_token = None
    directory = tmp_path / "no_pad"
    no_pad.save_pretrained(directory)
    tokenizer = {"name_or_path": str(directory), "max_length": 8, "padding": "max_length"}
    with pytest.raises(ValueError, match=r"no pad token.*tokenizer_kwargs.*pad_token"):
        _build(tmp_path, tokenizer, ["hi"])
