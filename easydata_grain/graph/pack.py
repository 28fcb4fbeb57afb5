"""Packing: token sequences into fixed-length rows, with segment ids and positions, dropping
no token.

``Pack(seq_length, eos_token_id, pad_token_id, strategy)`` configures it;
``PackIterDataset(parent, pack)`` is the Grain operation (``AsyncDataLoader(pack=...)`` places
it on each host after the host split). Every output row has ``seq_length`` int32 tokens in
``input_ids``, ``segment_ids`` (1, 2, ... per document piece in the row, 0 for padding),
``positions`` (0, 1, ... within each piece), ``attention_mask`` (1 on real tokens) and
``loss_mask`` (the attention mask, ANDed with ``Pack.mask_field``'s per-token mask when it is
set). Other fields of the input rows are not carried (they have no per-token meaning), except
that a field packing would replace with other content is an error naming the row: a
``loss_mask`` that is not ``mask_field``, ``segment_ids``, ``positions``, and an
``attention_mask`` with 0s (an all-ones one, the tokenizer's, is the packed one).

- ``greedy``: documents are laid end to end and cut every ``seq_length`` tokens: a document
  that does not fit continues in the next row (its positions restart at 0 there), so rows
  are full except the last.
- ``first_fit``: a document of at most ``seq_length`` tokens stays whole and goes into the
  first of ``num_packers`` open rows with room; when none has room the fullest is emitted
  (the oldest on ties). A longer document is cut into ``seq_length`` pieces first. A row
  that has held a document while ``max_held_documents`` documents were read is emitted
  (however full): a restore re-reads at most that many documents, and memory holds no more.
- ``truncate=True`` cuts each document to ``seq_length`` tokens instead (the only case where
  tokens are left out, because it was asked for).

``eos_token_id`` (when given) is appended to each document that does not end with it. The last
rows are emitted padded; with ``drop_remainder`` the loader fills a short last batch of packed
rows with padding rows (``FillBatch``) rather than drop it. The iterator's state is small: the
upstream state before the oldest document still held in an open row, how many documents were
read since, and each open row's layout as ``(document, start, length)`` triples (no tokens): a
restore re-reads those few documents and continues exactly.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Literal

import grain
import numpy as np

from easydata_grain.io.errors import MalformedRowError

_INT32_END = 2**31
"""Token ids are int32: one at or above this cannot be stored."""

PACKED_FIELDS = ("input_ids", "segment_ids", "positions", "attention_mask", "loss_mask")
"""The fields of a packed row."""

# The state keys this op owns.
PARENT = "parent"
DOCS_READ = "docs_read"
OPEN_ROWS = "open_rows"
INPUT_ROWS = "input_rows"
READY_ROWS = "ready_rows"
DONE = "done"


@dataclasses.dataclass(frozen=True)
class Pack:
    """How rows of token ids are packed (see the module docstring).

    ``field``: the token ids of each input row; ``mask_field``: an optional per-token 0/1
    mask ANDed into ``loss_mask`` (ChatTemplateTransform's assistant mask); ``vocab_size``:
    when given, a token outside ``[0, vocab_size)`` is an error naming the row;
    ``shuffle_rows``: when > 0, the packed rows are shuffled in windows of this many rows,
    keyed by the loader's seed (``graph/window_shuffle.py``: nothing but positions is saved,
    and a restore packs at most one window again).
    """

    seq_length: int
    eos_token_id: int | None = None
    pad_token_id: int = 0
    strategy: Literal["greedy", "first_fit"] = "greedy"
    num_packers: int = 4
    truncate: bool = False
    field: str = "input_ids"
    mask_field: str | None = None
    include_segment_ids: bool = True
    vocab_size: int | None = None
    max_held_documents: int = 4096
    shuffle_rows: int = 0

    def __post_init__(self) -> None:
        for name in ("seq_length", "num_packers", "max_held_documents"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Pack.{name} must be an int >= 1, got {value!r}")
        for name in ("eos_token_id", "vocab_size"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                raise ValueError(f"Pack.{name} must be None or an int >= 0, got {value!r}")
        for name in ("pad_token_id", "shuffle_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Pack.{name} must be an int >= 0, got {value!r}")
        if self.strategy not in ("greedy", "first_fit"):
            raise ValueError(
                f"Pack.strategy must be 'greedy' or 'first_fit', got {self.strategy!r}"
            )
        for name in ("truncate", "include_segment_ids"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"Pack.{name} must be a bool, got {getattr(self, name)!r}")
        if not isinstance(self.field, str) or not self.field:
            raise TypeError(f"Pack.field must be a field name, got {self.field!r}")
        if self.mask_field is not None and (
            not isinstance(self.mask_field, str) or not self.mask_field
        ):
            raise TypeError(
                f"Pack.mask_field must be None or a field name, got {self.mask_field!r}"
            )

    @classmethod
    def from_config(
        cls, config: Any, eos_token_id: int | None = None, batch_size: int | None = None
    ) -> Pack:
        """From a ``PackStageConfig``; ``eos_token_id`` (a tokenizer's) when it sets none;
        ``batch_size`` (rows per batch) sizes the window of ``shuffle_packed``."""
        shuffle_rows = 0
        if config.shuffle_packed:
            if batch_size is None:
                raise ValueError("shuffle_packed needs the batch size (rows per window)")
            shuffle_rows = config.shuffle_buffer_factor * batch_size
        return cls(
            seq_length=config.seq_length,
            eos_token_id=config.eos_token_id if config.eos_token_id is not None else eos_token_id,
            pad_token_id=config.pad_token_id,
            strategy=config.strategy,
            num_packers=config.num_packers,
            include_segment_ids=config.include_segment_ids,
            shuffle_rows=shuffle_rows,
            mask_field=config.mask_field,
        )

    def fingerprint(self) -> str:
        """The settings, for the pipeline's fingerprint."""
        return repr(self)


def padding_batch(pack: Pack, batch_size: int) -> dict[str, np.ndarray]:
    """A batch of packed rows holding only padding (every mask 0): what a host out of rows
    yields while other hosts still have batches."""
    fields = [f for f in PACKED_FIELDS if pack.include_segment_ids or f != "segment_ids"]
    batch = {f: np.zeros((batch_size, pack.seq_length), dtype=np.int32) for f in fields}
    batch["input_ids"][:] = pack.pad_token_id
    return batch


class FillBatch(grain.transforms.Map):
    """Fills a short batch of packed rows up to ``batch_size`` with padding rows (``pad_token_id``,
    every mask and segment id 0): with packing, ``drop_remainder`` keeps the batch shape static
    this way instead of dropping the last batch's real tokens."""

    def __init__(self, pack: Pack, batch_size: int):
        self.pack = pack
        self.batch_size = batch_size

    def map(self, element: dict[str, Any]) -> dict[str, Any]:
        """The batch, with padding rows after its own when it is short."""
        missing = self.batch_size - len(element["input_ids"])
        if missing <= 0:
            return element
        filled = {}
        for name, value in element.items():
            value = np.asarray(value)
            padding = np.zeros((missing, *value.shape[1:]), dtype=value.dtype)
            if name == "input_ids":
                padding[:] = self.pack.pad_token_id
            filled[name] = np.concatenate([value, padding])
        return filled

    def __repr__(self) -> str:
        return f"FillBatch(batch_size={self.batch_size}, pad_token_id={self.pack.pad_token_id})"


def _check_not_replaced(row: Mapping[str, Any], pack: Pack, index: int) -> None:
    """Raise ``MalformedRowError`` where input row ``index`` carries a field that packing
    writes and would replace with other content: ``loss_mask`` unless it is
    ``Pack.mask_field`` (ANDed in then), ``segment_ids`` (unless ``include_segment_ids`` is
    False) and ``positions`` (packed rows), and an ``attention_mask`` with 0s (a padded row;
    the tokenizer's all-ones mask is the packed one)."""
    for name in PACKED_FIELDS:
        if name not in row or name in (pack.field, pack.mask_field):
            continue
        if name == "segment_ids" and not pack.include_segment_ids:
            continue  # not written: dropped like any other field
        if name == "loss_mask":
            raise MalformedRowError(
                f"Input row {index} carries 'loss_mask', which packing writes: without "
                "Pack(mask_field='loss_mask') it would be replaced by the attention mask (every "
                "real token in the loss, user turns included).",
                row=index,
                hint="Pass Pack(mask_field='loss_mask') (PackStageConfig mask_field) to AND it "
                "into the packed loss_mask, or drop or rename the field before packing.",
            )
        if name == "attention_mask":
            if np.asarray(row[name]).all():
                continue
            raise MalformedRowError(
                f"Input row {index}: its 'attention_mask' has 0s (a padded row): packing would "
                "pack its padding as real tokens and replace the mask.",
                row=index,
                hint="Do not pad before packing (tokenizer padding=False): packed rows are "
                "padded after the last document; or drop the field.",
            )
        raise MalformedRowError(
            f"Input row {index} carries {name!r}, which packing writes: it would be replaced "
            "by the packed row's own.",
            row=index,
            hint="Drop or rename the field before packing (DropFields, RenameFields).",
        )


def _tokens(row: Any, pack: Pack, index: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The checked token ids (with EOS) and mask of input row ``index``."""
    if not isinstance(row, Mapping) or pack.field not in row:
        fields = sorted(row) if isinstance(row, Mapping) else type(row).__name__
        raise MalformedRowError(
            f"Input row {index} to packing has no {pack.field!r} field (it has {fields}).",
            row=index,
            hint="Tokenize before packing (TokenizeTransform), or set Pack(field=...).",
        )
    _check_not_replaced(row, pack, index)
    ids = np.asarray(row[pack.field])
    if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise MalformedRowError(
            f"Input row {index}: {pack.field!r} must be a 1-D list of token ids, got "
            f"{ids.dtype} of shape {ids.shape}.",
            row=index,
        )
    if ids.size == 0:
        raise MalformedRowError(
            f"Input row {index}: an empty document ({pack.field!r} has no tokens).",
            row=index,
            hint="Filter empty texts before tokenizing (FilterNonEmpty).",
        )
    low, high = int(ids.min()), int(ids.max())
    limit = _INT32_END if pack.vocab_size is None else min(pack.vocab_size, _INT32_END)
    if low < 0 or high >= limit:
        bad = low if low < 0 else high
        raise MalformedRowError(
            f"Input row {index}: token id {bad} is outside the vocabulary [0, {limit}).",
            row=index,
            hint="Check the tokenizer and Pack(vocab_size=...).",
        )
    mask = None
    if pack.mask_field is not None:
        if pack.mask_field not in row:
            raise MalformedRowError(
                f"Input row {index} to packing has no {pack.mask_field!r} field (Pack.mask_field).",
                row=index,
                hint="Write it with ChatTemplateTransform(assistant_mask_field=...), or drop "
                "Pack(mask_field=...).",
            )
        mask = np.asarray(row[pack.mask_field])
        if mask.shape != ids.shape or not np.isin(mask, (0, 1)).all():
            raise MalformedRowError(
                f"Input row {index}: {pack.mask_field!r} must be one 0/1 value per token "
                f"({ids.size} tokens), got {mask.tolist()[:8]} of shape {mask.shape}.",
                row=index,
            )
        mask = mask.astype(np.int32)
    if pack.eos_token_id is not None and int(ids[-1]) != pack.eos_token_id:
        ids = np.append(ids, pack.eos_token_id)
        if mask is not None:
            mask = np.append(mask, mask[-1])
    if pack.truncate:
        ids = ids[: pack.seq_length]
        mask = None if mask is None else mask[: pack.seq_length]
    return ids.astype(np.int32, copy=False), mask


class PackIterDataset(grain.IterDataset):
    """Rows of ``parent`` packed per ``pack`` (see the module docstring).

    ``locate``, when given, names a bad input row's source: it is called with the parent
    iterator's state just after that row and returns its ``(shard, row)`` or None
    (``graph/row_address.py``).
    """

    def __init__(
        self,
        parent: grain.IterDataset,
        pack: Pack,
        locate: Callable[[Any], tuple[str, int] | None] | None = None,
    ):
        super().__init__(parent)
        if not isinstance(pack, Pack):
            raise TypeError(f"pack must be a Pack, got {pack!r}")
        self.pack = pack
        self.locate = locate

    def __iter__(self) -> _PackIterator:
        return _PackIterator(self._parent.__iter__(), self.pack, self.locate)

    def __str__(self) -> str:
        return f"PackIterDataset({self.pack})"


class _PackIterator(grain.DatasetIterator):
    """Packs documents into open rows; the state names the documents, not their tokens."""

    def __init__(
        self,
        parent: grain.DatasetIterator,
        pack: Pack,
        locate: Callable[[Any], tuple[str, int] | None] | None,
    ):
        super().__init__(parent)
        self._pack = pack
        self._locate = locate
        self._anchor = parent.get_state()
        """The parent's state before the oldest document still held."""
        self._docs: list[tuple[np.ndarray, np.ndarray | None]] = []
        """Documents read since the anchor, in order."""
        self._doc_states: list[Any] = []
        """The parent's state before each of ``_docs``."""
        self._rows: list[list[tuple[int, int, int]]] = []
        """Open rows: ``(document since the anchor, start, length)`` pieces."""
        self._ready: list[list[tuple[int, int, int]]] = []
        """Rows complete and not yet returned (their documents are still held)."""
        self._input_rows = 0
        self._done = False

    # -- packing ------------------------------------------------------------------------------

    def _used(self, row: list[tuple[int, int, int]]) -> int:
        return sum(length for _, _, length in row)

    def _place(self, doc: int) -> None:
        """Put document ``doc`` (an index into ``_docs``) into the open rows."""
        ids, _ = self._docs[doc]
        size, n = self._pack.seq_length, len(ids)
        if self._pack.strategy == "greedy":
            start = 0
            while start < n:
                if not self._rows:
                    self._rows.append([])
                row = self._rows[0]
                take = min(size - self._used(row), n - start)
                row.append((doc, start, take))
                start += take
                if self._used(row) == size:
                    self._ready.append(self._rows.pop(0))
            return
        for start in range(0, n, size):
            take = min(size, n - start)
            room = [i for i, row in enumerate(self._rows) if size - self._used(row) >= take]
            if room:
                i = room[0]
            else:
                if len(self._rows) >= self._pack.num_packers:
                    fullest = max(
                        range(len(self._rows)), key=lambda r: (self._used(self._rows[r]), -r)
                    )
                    self._ready.append(self._rows.pop(fullest))
                self._rows.append([])
                i = len(self._rows) - 1
            self._rows[i].append((doc, start, take))
            if self._used(self._rows[i]) == size:
                self._ready.append(self._rows.pop(i))

    def _emit_oldest_if_held_too_long(self) -> None:
        """Emit the open row holding the oldest document once ``max_held_documents`` have
        been read since it (the first_fit rows a long run of larger documents never fills)."""
        if len(self._docs) < self._pack.max_held_documents:
            return
        oldest = min(range(len(self._rows)), key=lambda r: (min(d for d, _, _ in self._rows[r]), r))
        if min(d for d, _, _ in self._rows[oldest]) == 0:
            self._ready.append(self._rows.pop(oldest))

    def _read(self) -> bool:
        """Read one document into the open rows; False at the end of the parent."""
        try:
            row = next(self._parent)
        except StopIteration:
            return False
        self._docs.append(self._checked(row))
        self._input_rows += 1
        self._place(len(self._docs) - 1)
        if self._pack.strategy == "first_fit" and self._rows:
            self._emit_oldest_if_held_too_long()
        return True

    def _checked(self, row: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """``_tokens`` of the row just read; its error names the row's source shard and row
        when ``locate`` can tell them."""
        try:
            return _tokens(row, self._pack, self._input_rows)
        except MalformedRowError as error:
            address = None if self._locate is None else self._locate(self._parent.get_state())
            if address is None:
                raise
            shard, number = address
            named = f"Input row {self._input_rows} (shard {shard!r}, row {number})"
            located = MalformedRowError(
                str(error).replace(f"Input row {self._input_rows}", named, 1),
                path=shard,
                row=number,
            )
            located.hint = error.hint
            raise located from error

    def _emit(self, layout: list[tuple[int, int, int]]) -> dict[str, np.ndarray]:
        size = self._pack.seq_length
        ids = np.full(size, self._pack.pad_token_id, dtype=np.int32)
        segments = np.zeros(size, dtype=np.int32)
        positions = np.zeros(size, dtype=np.int32)
        loss = np.zeros(size, dtype=np.int32)
        at = 0
        for number, (doc, start, length) in enumerate(layout, start=1):
            tokens, mask = self._docs[doc]
            ids[at : at + length] = tokens[start : start + length]
            segments[at : at + length] = number
            positions[at : at + length] = np.arange(length)
            loss[at : at + length] = 1 if mask is None else mask[start : start + length]
            at += length
        row = {
            "input_ids": ids,
            "segment_ids": segments,
            "positions": positions,
            "attention_mask": (segments > 0).astype(np.int32),
            "loss_mask": loss,
        }
        if not self._pack.include_segment_ids:
            del row["segment_ids"]
        return row

    def __next__(self) -> dict[str, np.ndarray]:
        while not self._ready:
            if self._done:
                raise StopIteration
            self._doc_states.append(self._parent.get_state())
            if not self._read():
                self._doc_states.pop()
                self._done = True
                self._ready.extend(self._rows)  # the last rows, padded, oldest first
                self._rows = []
        layout = self._ready.pop(0)
        row = self._emit(layout)
        self._forget_held()
        return row

    def _forget_held(self) -> None:
        """Drop the documents no open or ready row holds, moving the anchor past them."""
        held = [doc for row in [*self._ready, *self._rows] for doc, _, _ in row]
        first = min(held, default=len(self._docs))
        if first == 0:
            return
        self._anchor = (
            self._doc_states[first] if first < len(self._doc_states) else self._parent.get_state()
        )
        self._docs = self._docs[first:]
        self._doc_states = self._doc_states[first:]
        self._rows = [[(d - first, s, n) for d, s, n in r] for r in self._rows]
        self._ready = [[(d - first, s, n) for d, s, n in r] for r in self._ready]

    # -- state --------------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """The parent's state before the oldest held document, the documents read since, and
        the open rows' layouts (ready rows first)."""
        return {
            PARENT: copy.deepcopy(self._anchor),
            DOCS_READ: len(self._docs),
            OPEN_ROWS: [[[int(x) for x in p] for p in r] for r in [*self._ready, *self._rows]],
            READY_ROWS: len(self._ready),
            INPUT_ROWS: self._input_rows - len(self._docs),
            DONE: self._done,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue exactly from ``state``: re-read its held documents from the parent."""
        self._parent.set_state(state[PARENT])
        self._anchor = copy.deepcopy(state[PARENT])
        self._input_rows = int(state[INPUT_ROWS])
        self._docs, self._doc_states = [], []
        for _ in range(int(state[DOCS_READ])):
            self._doc_states.append(self._parent.get_state())
            row = next(self._parent)
            self._docs.append(self._checked(row))
            self._input_rows += 1
        layouts = [[tuple(p) for p in r] for r in state[OPEN_ROWS]]
        ready = int(state[READY_ROWS])
        self._ready = layouts[:ready]  # type: ignore[assignment]
        self._rows = layouts[ready:]  # type: ignore[assignment]
        self._done = bool(state[DONE])
