"""Tokenization of a text field into int32 token ids, batched: many texts per tokenizer call.

A fast tokenizer encodes a list of texts in one call (in Rust, on several threads) many times
faster per text than one call per text. ``TokenizeTransform`` is a Grain ``Map`` (one row, for
any pipeline) and a ``BatchMap``: ``tokenize_batch``/``map_batch`` take a list of rows. The
batched path is what ``TransformedShardedSource`` uses for each block it reads, and what
``ChunkedMapDataset``/``ChunkedMapIterDataset`` (graph/chunked_map.py) run over chunks of a
Grain dataset (the loader places them for ``transforms=[...]``).

A fast tokenizer is used through a private copy of its Rust backend, configured once with the
tokenizer's Python-side settings (``truncation_side``, ``split_special_tokens``), so calls from
several threads never change shared settings; the ids are those of
``tokenizer(texts, add_special_tokens=..., truncation=..., max_length=...)["input_ids"]`` with
the tokenizer as it was when the transform was built. Those settings are in the fingerprint
(``split_special_tokens`` in the tokenizer's, ``truncation_side`` in the transform's).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from copy import copy as shallow_copy
from typing import TYPE_CHECKING, Any

import numpy as np

from easydata_grain.io.errors import MalformedRowError
from easydata_grain.op_protocols import FieldTransform
from easydata_grain.transforms.base import FieldMap, check_name, describe_row, field_of
from easydata_grain.transforms.tokenizer_identity import tokenizer_fingerprint
from easydata_grain.types import Row

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def _backend_copy(tokenizer: Any, max_length: int | None, truncation_side: str | None) -> Any:
    """A fast tokenizer's Rust backend, copied and configured once as ``tokenizer(...)`` sets
    it before each call (no padding; ``truncation_side`` None: no truncation)."""
    import tokenizers

    backend = tokenizers.Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_padding()
    if truncation_side is None:
        backend.no_truncation()
    else:
        backend.enable_truncation(max_length, direction=truncation_side)
    backend.encode_special_tokens = tokenizer.split_special_tokens
    return backend


class TokenizeTransform(FieldMap):
    """``row[text_field]`` -> ``row[output_field]``: the token ids as an int32 numpy array.

    ``add_special_tokens`` adds the tokenizer's own (a BOS, say); left out (None) it is True,
    and False where the text comes from a chat template that writes them itself (see
    ``after_chat_template``). ``max_length`` with ``truncation=True`` cuts the ids (special
    tokens included) to that length, on the tokenizer's ``truncation_side``;
    ``return_attention_mask`` adds ``attention_mask_field`` (int32 ones: rows are not padded
    here). A text that is not a string is an error, and so is an empty one unless
    ``allow_empty`` (filter them first with ``FilterNonEmpty``).
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        text_field: str = "text",
        output_field: str = "input_ids",
        max_length: int | None = None,
        truncation: bool = False,
        add_special_tokens: bool | None = None,
        return_attention_mask: bool = False,
        *,
        attention_mask_field: str = "attention_mask",
        allow_empty: bool = False,
    ):
        from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            raise TypeError(
                f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}"
            )
        if add_special_tokens is not None and not isinstance(add_special_tokens, bool):
            raise TypeError(
                f"add_special_tokens must be a bool or None, got {add_special_tokens!r}"
            )
        for flag, value in (
            ("truncation", truncation),
            ("return_attention_mask", return_attention_mask),
            ("allow_empty", allow_empty),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be a bool, got {value!r}")
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1
        ):
            raise ValueError(f"max_length must be an int >= 1 or None, got {max_length!r}")
        if truncation and max_length is None:
            raise ValueError("truncation=True needs max_length (the length to cut to).")
        if max_length is not None and not truncation:
            raise ValueError(
                f"max_length={max_length} without truncation=True would not cut anything: pass "
                "truncation=True, or leave max_length out (packing splits long documents)."
            )
        self.tokenizer = tokenizer
        self.text_field = check_name(text_field, "text_field")
        self.output_field = check_name(output_field, "output_field")
        self.attention_mask_field = check_name(attention_mask_field, "attention_mask_field")
        self.max_length = max_length
        self.truncation = truncation
        self.add_special_tokens = True if add_special_tokens is None else add_special_tokens
        self.special_tokens_given = add_special_tokens is not None
        """Whether ``add_special_tokens`` was passed (else it may follow a chat template:
        ``after_chat_template``)."""
        self.return_attention_mask = return_attention_mask
        self.allow_empty = allow_empty
        self.truncation_side: str | None = tokenizer.truncation_side if truncation else None
        """The side cut (the tokenizer's ``truncation_side`` when built), None without
        truncation."""
        self.split_special_tokens: bool = tokenizer.split_special_tokens
        """Whether a special token's text in a document is split like text (the tokenizer's
        setting when built; in ``tokenizer_id``)."""
        self.tokenizer_id = tokenizer_fingerprint(tokenizer)
        """The tokenizer's content hash (``tokenizer_fingerprint``)."""
        self._backend = (
            _backend_copy(tokenizer, max_length, self.truncation_side)
            if isinstance(tokenizer, PreTrainedTokenizerFast)
            else None
        )
        self.reads = frozenset({self.text_field})
        self.writes = frozenset(
            {self.output_field} | ({self.attention_mask_field} if return_attention_mask else set())
        )
        self._seal()

    @property
    def adds_special_tokens(self) -> bool:
        """Whether ``add_special_tokens`` adds any token to a text with this tokenizer."""
        if self._backend is not None:
            return bool(self._backend.encode("", add_special_tokens=True).ids)
        return bool(self.tokenizer("", add_special_tokens=True)["input_ids"])

    def without_special_tokens(self) -> TokenizeTransform:
        """This transform with ``add_special_tokens=False`` (as if passed)."""
        copy = shallow_copy(self)
        copy.add_special_tokens = False
        copy.special_tokens_given = True
        copy._seal()
        return copy

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickled (in a worker process, say): the backend copy is told
        ``split_special_tokens`` again (a backend pickles its definition, not that flag)."""
        self.__dict__.update(state)
        if self._backend is not None:
            self._backend.encode_special_tokens = self.split_special_tokens

    def config(self) -> dict[str, Any]:
        """The fields, options and the tokenizer's content hash."""
        return {
            "tokenizer": self.tokenizer_id,
            "text_field": self.text_field,
            "output_field": self.output_field,
            "max_length": self.max_length,
            "truncation": self.truncation,
            "truncation_side": self.truncation_side,
            "add_special_tokens": self.add_special_tokens,
            "return_attention_mask": self.return_attention_mask,
            "attention_mask_field": self.attention_mask_field,
            "allow_empty": self.allow_empty,
        }

    def _text(self, row: Row) -> str:
        text = field_of(row, self.text_field, self)
        if not isinstance(text, str):
            raise MalformedRowError(
                f"TokenizeTransform tokenizes strings, but {self.text_field!r} of "
                f"{describe_row(row)} is a {type(text).__name__}: {text!r:.80}."
            )
        if not text and not self.allow_empty:
            raise MalformedRowError(
                f"TokenizeTransform: {self.text_field!r} of {describe_row(row)} is empty.",
                hint="Drop empty documents first (FilterNonEmpty; in a pipeline config, "
                "tokenize.empty_texts: skip), or pass allow_empty=True (tokenize.empty_texts: keep).",
            )
        return text

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """The int32 token ids of each text, in one tokenizer call."""
        if not texts:
            return []
        if self._backend is not None:
            ids = [
                e.ids
                for e in self._backend.encode_batch_fast(
                    list(texts), add_special_tokens=self.add_special_tokens
                )
            ]
        else:
            ids = self.tokenizer(
                list(texts),
                add_special_tokens=self.add_special_tokens,
                truncation=self.truncation,
                max_length=self.max_length,
                split_special_tokens=self.split_special_tokens,
                return_attention_mask=False,
                return_token_type_ids=False,
            )["input_ids"]
        return [np.asarray(one, dtype=np.int32) for one in ids]

    def tokenize_batch(self, rows: Sequence[Row]) -> list[Row]:
        """Many rows, their texts tokenized in one call: ``[map(row) for row in rows]``."""
        texts = [self._text(row) for row in rows]
        out = []
        for row, ids in zip(rows, self.encode(texts), strict=True):
            new = dict(row)
            new[self.output_field] = ids
            if self.return_attention_mask:
                new[self.attention_mask_field] = np.ones(len(ids), dtype=np.int32)
            out.append(new)
        return out

    def map_batch(self, elements: list[Row]) -> list[Row]:
        """``tokenize_batch`` (the ``BatchMap`` protocol)."""
        return self.tokenize_batch(elements)

    def map(self, element: Row) -> Row:
        """One row tokenized (batch the calls with ``tokenize_batch`` where rows come in lists)."""
        return self.tokenize_batch([element])[0]


def after_chat_template(steps: Sequence[Any]) -> list[Any]:
    """``steps`` (a flat list of operations, in order) where each ``TokenizeTransform`` left at
    ``add_special_tokens=None`` that reads the ``output_field`` of an earlier
    ``ChatTemplateTransform`` tokenizes with ``add_special_tokens=False``: the template wrote the
    special tokens (a Llama template writes ``{{ bos_token }}``), and the tokenizer would add a
    second BOS (transformers' ``apply_chat_template(tokenize=True)`` passes False too). With
    ``pass_through=True`` the rows that pass through are plain text, which needs them: the
    default stays True, with a warning when the tokenizer adds any. Idempotent (a resolved
    transform counts as given).

    The rendered text is followed through the steps between: a ``RenameFields`` moves it, a
    step that declares it writes the field (a drop, an overwrite) ends it there; a step that
    declares nothing (a function) is taken to keep it."""
    from easydata_grain.transforms.chat import ChatTemplateTransform
    from easydata_grain.transforms.fields import RenameFields

    rendered: dict[str, ChatTemplateTransform] = {}
    out = []
    for step in steps:
        if isinstance(step, RenameFields):
            moved = {new: rendered[old] for old, new in step.mapping.items() if old in rendered}
            for field in step.writes:
                rendered.pop(field, None)
            rendered.update(moved)
        elif isinstance(step, FieldTransform) and step.writes:
            for field in step.writes:
                rendered.pop(field, None)
        if isinstance(step, ChatTemplateTransform) and step.output_field is not None:
            rendered[step.output_field] = step
        chat = rendered.get(step.text_field) if isinstance(step, TokenizeTransform) else None
        if chat is not None and not step.special_tokens_given and step.adds_special_tokens:
            if chat.pass_through:
                warnings.warn(
                    f"ChatTemplateTransform(pass_through=True), then TokenizeTransform of "
                    f"{step.text_field!r}: the tokenizer's special tokens are added to every "
                    "row, the rendered ones too (transformers' apply_chat_template(tokenize=True) "
                    "adds none: a template that writes a BOS gets a second one), as the plain "
                    "rows need them. Pass add_special_tokens=True or False to decide.",
                    stacklevel=2,
                )
            else:
                step = step.without_special_tokens()
        out.append(step)
    return out
