"""A generated dataset (token ids and text) for the demo, the tests and the benchmarks."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

_WORDS = np.array(
    str.split(
        "the of and to in a is that for it as was with be by on not he this are or his from at "
        "which but have an they you were her she there one all we their has been would when"
    )
)


def synthetic_table(
    num_rows: int, *, first_id: int = 0, seed: int = 0, max_tokens: int = 256
) -> pa.Table:
    """``num_rows`` rows: ``id`` (unique, from ``first_id``), ``input_ids`` (int32 lists), ``text``."""
    rng = np.random.default_rng([seed, first_id])
    lengths = rng.integers(1, max_tokens + 1, num_rows)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    tokens = rng.integers(0, 50_000, int(offsets[-1]), dtype=np.int32)
    words = _WORDS[rng.integers(0, len(_WORDS), int(offsets[-1]))]
    text = [" ".join(words[a:b]) for a, b in itertools.pairwise(offsets)]
    return pa.table(
        {
            "id": pa.array(np.arange(first_id, first_id + num_rows, dtype=np.int64)),
            "input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(tokens)),
            "text": pa.array(text),
        }
    )


def write_parquet_dataset(
    directory: str | Path,
    *,
    num_shards: int = 4,
    rows_per_shard: int = 10_000,
    row_group_size: int = 1_000,
    seed: int = 0,
    max_tokens: int = 256,
) -> list[str]:
    """Write ``num_shards`` Parquet shards of synthetic rows; ids run 0..N-1 across shards."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in range(num_shards):
        table = synthetic_table(
            rows_per_shard, first_id=shard * rows_per_shard, seed=seed, max_tokens=max_tokens
        )
        path = directory / f"shard-{shard:05d}.parquet"
        pq.write_table(table, path, row_group_size=row_group_size)
        paths.append(str(path))
    return paths


TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] }}<|im_end|>{% endgeneration %}"
    "{% else %}{{ message['content'] }}<|im_end|>{% endif %}\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A ChatML template whose assistant turns sit in a ``{% generation %}`` block."""


def tiny_tokenizer(vocab_size: int = 512, corpus: list[str] | None = None) -> Any:
    """A real ``transformers`` fast tokenizer built offline in a few milliseconds.

    A byte-level BPE trained with ``tokenizers`` on ``corpus`` (the demo words by default),
    with special tokens ``<|bos|>`` (added in front of each text), ``<|eos|>``, ``<|pad|>``,
    ``<|im_start|>``, ``<|im_end|>`` and ``TINY_CHAT_TEMPLATE``: for docs, tests and demos
    where no model hub can be reached. Needs ``transformers`` and ``tokenizers``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|bos|>", "<|eos|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
    if corpus is None:
        words = [str(w) for w in _WORDS]
        corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))]
        corpus += ["user assistant system Instruction Response input Output 0123456789"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A", special_tokens=[("<|bos|>", backend.token_to_id("<|bos|>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        chat_template=TINY_CHAT_TEMPLATE,
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
