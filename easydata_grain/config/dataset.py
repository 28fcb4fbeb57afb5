"""One dataset of a pipeline (``DatasetConfig``) and how its text is tokenized
(``TokenizerConfig``): EasyData's names and defaults, checked on construction."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from easydata_grain.config.validation import Config, bounded, join, require

DatasetType = Literal["parquet", "json", "jsonl", "huggingface", "hf"]


@dataclasses.dataclass(frozen=True)
class TokenizerConfig(Config):
    """A tokenizer and the arguments of its call, used by the tokenize stage."""

    name_or_path: str
    """A Hub tokenizer name or a local directory, loaded with
    ``transformers.AutoTokenizer.from_pretrained``."""
    max_length: int = bounded(2048, minimum=1)
    """The longest token sequence a text gives (see ``truncation``)."""
    truncation: bool | None = None
    """True: cut texts longer than ``max_length`` tokens (even in a pipeline that packs);
    False: never cut, and without packing a longer text is an error naming its row (nothing is
    cut silently). None (the default): cut, except in a pipeline whose pack stage is enabled,
    where a long document continues in the next packed row and no token is dropped
    (``cuts``). EasyData's default is True, which cuts before packing."""
    padding: bool | Literal["max_length", "longest", "do_not_pad"] = False
    """``"max_length"``: every row padded to ``max_length`` (fixed-shape batches);
    ``"longest"`` or True: each batch padded to its longest row, with masks (``Collate``);
    False or ``"do_not_pad"``: no padding (ragged rows must be packed or padded by the load
    stage's ``pad``)."""
    add_special_tokens: bool = True
    """Add the tokenizer's special tokens (BOS/EOS) around each text."""
    return_attention_mask: bool = True
    """Add an ``attention_mask`` field beside ``input_ids``."""
    trust_remote_code: bool = False
    """Run a tokenizer's own code from the Hub. EasyData's default is True; ours is False
    (loading a config must not run code from the network unless asked)."""

    def cuts(self, packing: bool) -> bool:
        """Whether texts are cut at ``max_length``: ``truncation`` when set, else unless the
        pipeline packs (``packing``)."""
        return (not packing) if self.truncation is None else self.truncation


@dataclasses.dataclass(frozen=True)
class DatasetConfig(Config):
    """One dataset: where its rows are, how to read them, and what its fields mean.

    ``name`` (``dataset_{i}`` when not given) is how the mix stage's weights and the realized
    mixture name it.
    """

    retired: ClassVar[dict[str, str]] = {
        "dataset_split_name": "use split (the split of a Hugging Face dataset).",
        "shard_column": "output shards are written by the save stage (save.num_shards).",
        "num_shards": "the number of output shards is the save stage's num_shards.",
    }

    data_files: str | tuple[str, ...]
    """A path (a ``str`` or ``os.PathLike``), glob, directory or URL (``gs://``, ``s3://``,
    ``az://``), or a list of them;
    for ``type="huggingface"`` the dataset's repo id (``"HuggingFaceFW/fineweb"``)."""
    name: str | None = None
    """A unique name for the mix stage's weights and the stats; ``dataset_{i}`` by default."""
    type: DatasetType | None = None
    """``parquet``, ``jsonl`` (JSON Lines), ``json`` (JSON Lines or JSON array files),
    ``huggingface`` (alias ``hf``, kept as ``huggingface``); None: from the files'
    extensions, as ``AsyncDataLoader`` does."""
    split: str = "train"
    """The split of a Hugging Face dataset (``HuggingFaceShardedSource(split=...)``); for
    files, another split than the default is an error (point ``data_files`` at its files)."""
    subset: str | None = None
    """The config name of a Hugging Face dataset (``subset="en"`` for C4); an error for files."""
    num_rows: int | None = bounded(None, minimum=1)
    """Read exactly the first ``num_rows`` rows of the dataset, in shard order (before
    shuffling); more than the dataset has is an error. None: all rows."""
    tokenizer: str | TokenizerConfig | None = None
    """This dataset's tokenizer (a name or path, or a ``TokenizerConfig``); None: the tokenize
    stage's ``default_tokenizer``, then the pipeline's."""
    tokenizer_kwargs: dict[str, Any] | None = None
    """Extra keyword arguments of ``AutoTokenizer.from_pretrained`` for this dataset's
    tokenizer (``{"revision": "main"}``)."""
    cache_path: str | None = None
    """The cache directory of this dataset's processed rows (after its transforms and
    tokenizer): set, the dataset is cached there even without a cache stage (the cache
    stage's ``cache_dir`` otherwise)."""
    cache_enabled: bool = True
    """Whether this dataset is cached (by ``cache_path`` or the cache stage); without either
    it does nothing."""
    save_path: str | None = None
    """Where ``Pipeline.save()`` (and ``build()``) writes this dataset's processed rows (after
    its transforms and tokenizer, in its files' order) as Parquet, with the save stage's
    settings."""
    save_format: Literal["parquet", "arrow", "jsonl"] | None = None
    """The format of ``save_path``; None: the save stage's ``format`` (only ``parquet`` is
    written: the others raise NotSupportedYetError)."""
    content_field: str = "text"
    """The field holding the text the tokenize stage reads."""
    additional_fields: tuple[str, ...] | None = None
    """Fields kept beside the content and token fields; None: every field is kept."""
    format_callback: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """A function applied to each row after ``format_fields`` (Python configs only: YAML and
    JSON cannot hold a function)."""
    format_fields: dict[str, str] | None = None
    """Fields renamed as rows are read, ``{"old": "new"}``, before anything else."""
    storage_options: dict[str, Any] | None = None
    """fsspec options for the store (credentials, endpoint), merged over the source stage's
    ``dask_storage_options``."""
    columns: tuple[str, ...] | None = None
    """Read only these source columns (named as in the files, before ``format_fields``
    renames): Parquet reads only their column chunks, JSON keeps them as each row is parsed;
    None: all."""

    def _check(self, path: str) -> None:
        files = (self.data_files,) if isinstance(self.data_files, str) else self.data_files
        require(bool(files), f"{join(path, 'data_files')}: give at least one path")
        for i, item in enumerate(files):
            where = join(path, "data_files") + (
                "" if isinstance(self.data_files, str) else f"[{i}]"
            )
            require(bool(item.strip()), f"{where}: an empty path")
        if self.type == "hf":
            object.__setattr__(self, "type", "huggingface")
        if self.type == "huggingface":
            require(
                isinstance(self.data_files, str),
                f"{join(path, 'data_files')}: a Hugging Face dataset is one repo id, got a list",
            )
        require(self.name != "", f"{join(path, 'name')}: an empty name")
        require(self.columns != (), f"{join(path, 'columns')}: an empty list (None reads all)")

    def tokenizer_config(self) -> TokenizerConfig | None:
        """This dataset's own tokenizer as a ``TokenizerConfig`` (None when it names none)."""
        if isinstance(self.tokenizer, str):
            return TokenizerConfig(self.tokenizer)
        return self.tokenizer
