"""The pack stage of a config pipeline: no token dropped by the tokenize stage's
``max_length`` unless ``truncation: true`` is asked, ``mask_field`` (SFT loss masks), a
tokenizer's padding refused, and ``tokenize.empty_texts``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from transformers import AutoTokenizer

from easydata_grain import (
    PackStageConfig,
    Pipeline,
    TokenizerConfig,
    TokenizeStageConfig,
    load_config,
)
from easydata_grain.io.errors import MalformedRowError
from tests.helpers import write_jsonl

WORDS = ("the", "fox", "and", "dog", "jumps")


def _texts() -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, n)) for n in (300, 5, 40)]


def _packed_tokens(config: dict[str, Any]) -> int:
    return sum(int(b["attention_mask"].sum()) for b in Pipeline.from_config(config).build())


def _config(data: str, **fields: Any) -> dict[str, Any]:
    return {
        "datasets": [{"data_files": data, "additional_fields": []}],
        "pack": {"enabled": True, "seq_length": 64},
        "load": {"batch_size": 1, "drop_last": False, "shuffle_buffer_size": 0},
        **fields,
    }


def test_packing_keeps_documents_longer_than_max_length(tmp_path: Path, tokenizer_dir: str) -> None:
    texts = _texts()
    data = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in texts])
    lengths = [len(ids) for ids in AutoTokenizer.from_pretrained(tokenizer_dir)(texts).input_ids]
    assert max(lengths) > 32
    whole = sum(n + 1 for n in lengths)  # + the EOS the pack stage appends
    by_name = _config(data, default_tokenizer=tokenizer_dir, tokenize={"max_length": 32})
    assert _packed_tokens(by_name) == whole
    for truncation in (None, False):
        own = {"name_or_path": tokenizer_dir, "max_length": 32, "truncation": truncation}
        config = _config(data)
        config["datasets"][0]["tokenizer"] = own
        assert _packed_tokens(config) == whole, truncation
    config["datasets"][0]["tokenizer"]["truncation"] = True  # asked: cut before packing
    assert _packed_tokens(config) == sum(min(n, 32) + 1 for n in lengths)


def test_truncation_default_cuts_unless_packing() -> None:
    assert TokenizerConfig("t").cuts(packing=False)
    assert not TokenizerConfig("t").cuts(packing=True)
    assert TokenizerConfig("t", truncation=True).cuts(packing=True)
    assert not TokenizerConfig("t", truncation=False).cuts(packing=False)


def test_mask_field_is_anded_into_the_packed_loss_mask(tmp_path: Path) -> None:
    rows = [
        {"input_ids": [5, 6, 7, 8], "loss_mask": [0, 0, 1, 1]},
        {"input_ids": [9, 10, 11], "loss_mask": [0, 1, 1]},
    ]
    data = write_jsonl(tmp_path / "sft.jsonl", rows)
    config = {
        "datasets": [{"data_files": data}],
        "pack": {"enabled": True, "seq_length": 16, "eos_token_id": 2, "mask_field": "loss_mask"},
        "load": {"batch_size": 1, "drop_last": False, "shuffle_buffer_size": 0},
    }
    (batch,) = list(Pipeline.from_config(config).build())
    # each document gets an EOS, which its mask leaves as it is (the mask's last value)
    assert batch["loss_mask"][0].tolist() == [0, 0, 1, 1, 1, 0, 1, 1, 1] + [0] * 7
    assert batch["attention_mask"][0].sum() == 9


def test_mask_field_is_checked() -> None:
    assert PackStageConfig().mask_field is None
    with pytest.raises(ValueError, match=r"PackStageConfig.mask_field: an empty field name"):
        PackStageConfig(mask_field="")
    with pytest.raises(TypeError, match=r"pack.mask_field: expected str or None"):
        Pipeline.from_config({"datasets": [{"data_files": "x"}], "pack": {"mask_field": 3}})


def test_a_tokenizer_that_pads_is_refused_with_packing(tmp_path: Path, tokenizer_dir: str) -> None:
    data = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in _texts()])
    config = _config(data)
    config["datasets"][0]["tokenizer"] = {"name_or_path": tokenizer_dir, "padding": "max_length"}
    with pytest.raises(ValueError, match=r"padding='max_length' with pack.enabled.*padding: false"):
        Pipeline.from_config(config).build()
    config["pack"]["enabled"] = False  # padding without packing still works
    assert next(iter(Pipeline.from_config(config).build()))["input_ids"].shape == (1, 2048)


def test_empty_texts_error_skip_or_keep(tmp_path: Path, tokenizer_dir: str) -> None:
    texts = ("the fox", "", "and the dog", "  ")  # spaces are not empty: they have tokens
    data = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in texts])
    config = _config(data, default_tokenizer=tokenizer_dir)
    with pytest.raises(MalformedRowError, match=r"a.jsonl.*row 1.*tokenize.empty_texts: skip"):
        _packed_tokens(config)
    hf = AutoTokenizer.from_pretrained(tokenizer_dir)
    kept = sum(len(ids) + 1 for ids in hf(["the fox", "and the dog", "  "]).input_ids)
    assert _packed_tokens({**config, "tokenize": {"empty_texts": "skip"}}) == kept
    unpacked = {**config, "pack": {"enabled": False}, "tokenize": {"empty_texts": "keep"}}
    ids = [b["input_ids"][0].tolist() for b in Pipeline.from_config(unpacked).build()]
    assert ids[1] == hf("").input_ids and len(ids) == 4
    with pytest.raises(ValueError, match=r"empty_texts: expected one of 'error', 'skip', 'keep'"):
        TokenizeStageConfig(empty_texts="drop")  # type: ignore[arg-type]


def test_the_sample_config_packs_without_cutting() -> None:
    config = load_config(Path(__file__).resolve().parents[1] / "docs" / "pipeline.yaml")
    assert config.pack.enabled
    for ds in config.datasets:
        assert not config.tokenizer_for(ds).cuts(packing=True)  # type: ignore[union-attr]
