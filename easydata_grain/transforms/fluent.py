"""Fluent transform methods for sources: ``source.rename_fields(...).tokenize(tokenizer)``.

``TransformableSource`` is a mixin for any ``ShardedSource`` class: each method returns a
``TransformedShardedSource`` over the source with one more transform (chains flatten, so
``source.map(f).filter(g)`` is one source with two steps).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grain

from easydata_grain.transforms.fields import DropFields, RenameFields, SelectFields
from easydata_grain.transforms.functions import FilterFunction, MapFunction
from easydata_grain.types import Row

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from easydata_grain.sources.transformed import TransformedShardedSource


class TransformableSource:
    """Mixin: fluent ``map``/``filter``/field/chat/tokenize methods on a sharded source."""

    def transformed(self, *ops: Any) -> TransformedShardedSource:
        """This source through ``ops`` (Grain Map/Filter operations, functions or chains)."""
        from easydata_grain.sources.transformed import TransformedShardedSource

        return TransformedShardedSource(self, list(ops))

    def map(self, fn: Callable[[Row], Row] | grain.transforms.Map) -> TransformedShardedSource:
        """Rows through ``fn`` (a function of the row, or a Grain ``Map``)."""
        return self.transformed(fn if isinstance(fn, grain.transforms.Map) else MapFunction(fn))

    def filter(
        self, predicate: Callable[[Row], bool] | grain.transforms.Filter
    ) -> TransformedShardedSource:
        """Only the rows for which ``predicate`` is true (a function or a Grain ``Filter``)."""
        if isinstance(predicate, grain.transforms.Filter):
            return self.transformed(predicate)
        return self.transformed(FilterFunction(predicate))

    def rename_fields(self, mapping: Mapping[str, str], **options: Any) -> TransformedShardedSource:
        """Fields renamed (``RenameFields``)."""
        return self.transformed(RenameFields(mapping, **options))

    def select_fields(
        self, fields: str | Sequence[str], **options: Any
    ) -> TransformedShardedSource:
        """Only the given fields (``SelectFields``)."""
        return self.transformed(SelectFields(fields, **options))

    def drop_fields(self, fields: str | Sequence[str], **options: Any) -> TransformedShardedSource:
        """Without the given fields (``DropFields``)."""
        return self.transformed(DropFields(fields, **options))

    def apply_chat_template(
        self, tokenizer: PreTrainedTokenizerBase, **options: Any
    ) -> TransformedShardedSource:
        """Conversations rendered with the tokenizer's chat template (``ChatTemplateTransform``)."""
        from easydata_grain.transforms.chat import ChatTemplateTransform

        return self.transformed(ChatTemplateTransform(tokenizer, **options))

    def tokenize(
        self, tokenizer: PreTrainedTokenizerBase, **options: Any
    ) -> TransformedShardedSource:
        """A text field tokenized, batched per block (``TokenizeTransform``)."""
        from easydata_grain.transforms.tokenize import TokenizeTransform

        return self.transformed(TokenizeTransform(tokenizer, **options))
