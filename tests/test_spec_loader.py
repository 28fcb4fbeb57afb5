"""The spec page's loader blocks (Prefetching, Shuffling Streamed Data) against the emulators.

As in test_spec_streaming.py, the code is the user's with only URLs and credentials adapted.
The data is pre-tokenized to a fixed length (``input_ids`` and ``attention_mask`` of 16 ids),
as the spec's own column-projection example suggests, so batches stack without padding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from easydata_grain import AsyncDataLoader, NotResumableError, ParquetShardedSource
from ops.emulators import StoreEndpoint

ROWS = 600


@pytest.fixture(scope="module")
def tokenized_bucket(gcs_store: StoreEndpoint, tmp_path_factory: pytest.TempPathFactory) -> str:
    directory = tmp_path_factory.mktemp("tokenized")
    bucket = gcs_store.new_bucket("spec-loader")
    for shard in range(3):
        ids = np.arange(shard * ROWS // 3, (shard + 1) * ROWS // 3)
        tokens = (ids[:, None] * 16 + np.arange(16)).astype(np.int32)
        table = pa.table(
            {
                "id": ids,
                "input_ids": pa.FixedSizeListArray.from_arrays(tokens.ravel(), 16),
                "attention_mask": pa.FixedSizeListArray.from_arrays(
                    np.ones(tokens.size, np.int8), 16
                ),
            }
        )
        path = directory / f"part-{shard}.parquet"
        pq.write_table(table, path, row_group_size=64)
        gcs_store.upload(str(path), f"{bucket}/data/{path.name}")
    return bucket


def test_prefetching(gcs_store: StoreEndpoint, tokenized_bucket: str) -> None:
    trained: list[np.ndarray] = []

    def train_step(batch: dict) -> None:
        assert batch["input_ids"].shape == (8, 16) and batch["attention_mask"].dtype == np.int8
        trained.append(batch["id"])

    source = ParquetShardedSource(
        f"{tokenized_bucket}/data/*.parquet", storage_options=gcs_store.storage_options()
    )

    loader = AsyncDataLoader(
        source=source,
        batch_size=8,
        prefetch_enabled=True,
        prefetch_workers=2,
        prefetch_buffer_size=4,  # Batches to prefetch
    )

    # Training loop - data arrives while computing
    for batch in loader:
        train_step(batch)  # Next batch loading in background

    assert np.concatenate(trained).tolist() == list(range(ROWS))


def test_shuffling_streamed_data_with_easydata(
    gcs_store: StoreEndpoint, tokenized_bucket: str
) -> None:
    source = ParquetShardedSource(
        f"{tokenized_bucket}/data/*.parquet", storage_options=gcs_store.storage_options()
    )

    # EasyData shuffle during loading
    loader = AsyncDataLoader(
        source=source,
        shuffle_buffer_size=10000,  # Examples to buffer for shuffle
        seed=42,
    )

    ids = [i for batch in loader for i in batch["id"].tolist()]
    assert sorted(ids) == list(range(ROWS)) and ids != list(range(ROWS))
    again = AsyncDataLoader(source=source, shuffle_buffer_size=10000, seed=42)
    assert [i for batch in again for i in batch["id"].tolist()] == ids
    state_after = AsyncDataLoader(source=source, shuffle_buffer_size=10000, seed=42)
    for _ in range(7):
        next(state_after)
    resumed = AsyncDataLoader(source=source, shuffle_buffer_size=10000, seed=42)
    resumed.set_state(json.loads(json.dumps(state_after.get_state())))
    assert [i for batch in resumed for i in batch["id"].tolist()] == ids[7 * 8 :]


def test_shuffling_streamed_data_with_hugging_face(tmp_path: Path) -> None:
    from datasets import load_dataset

    rows = [{"id": i, "text": f"example {i}"} for i in range(300)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    # HuggingFace streaming shuffle ("dataset" is a local JSON Lines dataset here)
    dataset = load_dataset(
        "json", data_files=str(tmp_path / "train.jsonl"), split="train", streaming=True
    )
    dataset = dataset.shuffle(buffer_size=10000, seed=42)

    # EasyData shuffle during loading, on top
    with pytest.warns(UserWarning, match="cannot be checkpointed"):  # said at construction
        loader = AsyncDataLoader(
            source=dataset,
            shuffle_buffer_size=10000,  # Examples to buffer for shuffle
            seed=42,
        )
    assert not loader.resumable and "shuffle" in loader.not_resumable_reason
    ids = [i for batch in loader for i in batch["id"].tolist()]
    assert sorted(ids) == list(range(300)) and ids != list(range(300))
    # datasets' own shuffle leaves its buffer out of its state: saving is refused, not wrong.
    with pytest.raises(NotResumableError, match=r"shuffle"):
        loader.get_state()
    # Without it, our buffer (saved with the state, as values) resumes exactly.
    plain = load_dataset(
        "json", data_files=str(tmp_path / "train.jsonl"), split="train", streaming=True
    )
    first = AsyncDataLoader(source=plain, shuffle_buffer_size=10000, seed=42)
    expected = [i for batch in first for i in batch["id"].tolist()]
    stopped = AsyncDataLoader(source=plain, shuffle_buffer_size=10000, seed=42)
    head = [i for _ in range(5) for i in next(stopped)["id"].tolist()]
    resumed = AsyncDataLoader(source=plain, shuffle_buffer_size=10000, seed=42)
    resumed.set_state(json.loads(json.dumps(stopped.get_state())))
    assert head + [i for batch in resumed for i in batch["id"].tolist()] == expected
