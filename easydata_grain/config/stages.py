"""The configs of the stages that read, tokenize, pack and load rows: EasyData's names and
defaults (where ours differ, the field says why)."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from easydata_grain.config.validation import Config, bounded, join, require
from easydata_grain.io.retry import RetryPolicy


@dataclasses.dataclass(frozen=True)
class SourceStageConfig(Config):
    """How datasets are opened (``Pipeline.source()``)."""

    streaming: bool | None = None
    """Overrides the pipeline's ``streaming`` for this stage; None: the pipeline's. (EasyData
    has both knobs, default True; one default here keeps them from disagreeing.)"""
    cloud_max_retries: int = bounded(RetryPolicy.max_retries, minimum=0)
    """Retries of a transient storage fault (``RetryPolicy.max_retries``)."""
    cloud_retry_delay: float = bounded(RetryPolicy.initial_backoff, minimum=0)
    """Seconds before the first retry, doubling after (``RetryPolicy.initial_backoff``;
    EasyData's default is 1.0, ours that of every source)."""
    dask_storage_options: dict[str, Any] | None = None
    """fsspec options for every dataset (EasyData's name); a dataset's ``storage_options``
    are merged over them."""
    metadata_cache_dir: str | None = None
    """A directory keeping Parquet footers and JSON line indexes between runs, keyed by each
    file's identity (size and etag or mtime), so a warm start reads no footer
    (``ParquetShardedSource(metadata_cache_dir=)``, ``JsonShardedSource(index_cache_dir=)``);
    None: footers are read at every start, line indexes go to the default cache."""

    def retry_policy(self) -> RetryPolicy:
        """The sources' ``RetryPolicy``: these retries and first delay, the rest default."""
        return RetryPolicy(
            max_retries=self.cloud_max_retries, initial_backoff=self.cloud_retry_delay
        )


@dataclasses.dataclass(frozen=True)
class TokenizeStageConfig(Config):
    """How the tokenize stage (``Pipeline.tokenize()``) turns each dataset's ``content_field``
    into ``input_ids`` (``TokenizeTransform``, the tokenizer called on lists of texts)."""

    default_tokenizer: str | None = None
    """The tokenizer of datasets that name none; None: the pipeline's ``default_tokenizer``."""
    max_length: int = bounded(2048, minimum=1)
    """``max_length`` of tokenizers given by name (a ``TokenizerConfig`` carries its own):
    texts are cut there, except when the pack stage is enabled (packing splits long documents
    across rows; ``TokenizerConfig.truncation``)."""
    batch_size: int = bounded(1000, minimum=1)
    """Texts per tokenizer call (a call on a list is many times faster than one per text)."""
    num_workers: int = bounded(0, minimum=0)
    """Processes tokenizing in parallel (the loader's ``worker_processes``); 0: in the loading
    threads. EasyData's default is 4; ours is 0 since a batched fast tokenizer keeps up with
    loading and processes cost their start-up and memory."""
    cache_tokenized: bool = True
    """Whether the cache stage (and a dataset's ``cache_path``) stores the tokenized rows;
    False: a tokenized dataset is not cached. Nothing without a cache."""
    remove_columns: tuple[str, ...] | None = None
    """Fields dropped after tokenizing (the text, say); None: none."""
    empty_texts: Literal["error", "skip", "keep"] = "error"
    """What an empty ``content_field`` text does: ``error`` (a ``MalformedRowError`` naming
    its file and row), ``skip`` (rows whose text is empty are left out before tokenizing:
    ``FilterNonEmpty(strip=False)``; a text of spaces is not empty in any mode, it has tokens),
    ``keep`` (tokenized as it is: the tokenizer's
    special tokens only, ``TokenizeTransform(allow_empty=True)``; packing refuses a document
    with no token). (Not an EasyData field.)"""


@dataclasses.dataclass(frozen=True)
class PackStageConfig(Config):
    """How the pack stage (``Pipeline.pack()``) packs token sequences into rows of
    ``seq_length`` tokens, with ``segment_ids`` and ``positions``; no token is dropped."""

    enabled: bool = False
    """Whether ``Pipeline.pack()`` packs; False: the stage passes rows through."""
    seq_length: int = bounded(2048, minimum=1)
    """Tokens per packed row."""
    eos_token_id: int | None = bounded(None, minimum=0)
    """Appended to each document that does not end with it; None: the tokenizer's EOS token,
    or nothing without a tokenizer. (EasyData's default, 2, is one model's EOS id.)"""
    pad_token_id: int = bounded(0, minimum=0)
    """The token that fills the end of a row that no document fills."""
    strategy: Literal["greedy", "first_fit"] = "greedy"
    """``greedy``: fill the current row in order; ``first_fit``: each document goes into the
    first of ``num_packers`` open rows with room. (EasyData's ``pool`` is not offered.)"""
    num_packers: int = bounded(4, minimum=1)
    """Rows held open at once by ``first_fit``."""
    include_segment_ids: bool = True
    """Keep the ``segment_ids`` field (document number in the row, 0 for padding)."""
    mask_field: str | None = None
    """A per-token 0/1 field of the input rows (an SFT assistant mask: a column of
    pre-tokenized data, or ``ChatTemplateTransform(assistant_mask_field=...)``) ANDed into the
    packed ``loss_mask`` (``Pack(mask_field=...)``); None: ``loss_mask`` is the attention
    mask. A row without the field is an error naming it. (Not an EasyData field.)"""
    shuffle_packed: bool = False
    """Shuffle packed rows in windows of ``shuffle_buffer_factor`` x batch size rows
    (``Pack(shuffle_rows=...)``: the state saves positions, never rows; a restore packs at most
    one window again). False by default (EasyData: True): rows are already shuffled before
    packing. A save writes packed rows in packing order."""
    shuffle_buffer_factor: int = bounded(10, minimum=1)
    """The packed-row shuffle window, in batches (with ``shuffle_packed``)."""

    def _check(self, path: str) -> None:
        require(
            self.mask_field != "",
            f"{join(path, 'mask_field')}: an empty field name (None: no mask)",
        )


@dataclasses.dataclass(frozen=True)
class LoadStageConfig(Config):
    """How rows become batches (``Pipeline.load()``): ``AsyncDataLoader``'s arguments."""

    batch_size: int = bounded(8, minimum=1)
    """Rows per batch on each host."""
    prefetch_enabled: bool = True
    """Prepare batches in a background thread while the model trains."""
    prefetch_workers: int = bounded(2, minimum=0)
    """Threads reading blocks ahead of the consumer."""
    prefetch_buffer_size: int = bounded(4, minimum=0)
    """Batches kept ready by the background thread."""
    shuffle_buffer_size: int | None = bounded(None, minimum=0)
    """Shuffle: in indexed mode the window of consecutive rows shuffled together (shards are
    shuffled too), in streaming mode a shuffle buffer of this many rows; None or 0: no
    shuffle."""
    drop_last: bool = True
    """Drop the last partial batch of a pass (``drop_remainder``)."""
    prefetch_to_device: bool = False
    """Yield global ``jax.Array`` batches on the pipeline's mesh, built a few steps ahead on a
    background thread (``make_global_batch``)."""
    num_epochs: int | None = bounded(1, minimum=1)
    """Epochs per pass over the data; None: endless. (Not an EasyData field.)"""
    pad: bool = False
    """Pad ragged numeric fields to the longest row of each batch, with masks (``Collate``);
    False: ragged rows raise. (Not an EasyData field.)"""
