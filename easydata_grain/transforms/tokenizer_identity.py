"""A tokenizer's identity for fingerprints: a hash of what it does, not of its name.

Two tokenizers with the same name can differ (a revision changed the vocabulary or the chat
template) and two names can be the same tokenizer; a saved state or a materialized cache must
follow the content. The hash covers the fast tokenizer's whole definition (vocabulary, merges,
normalizer, pre-tokenizer, post-processor, added and special tokens, from ``tokenizer.json``),
the chat template, the special tokens map and ``split_special_tokens`` (whether a special
token's text inside a document is split like any text: ``tokenizer(text)`` honours it). The
truncation and padding settings of the backend are left out: a call with ``truncation=True``
changes them, not the tokenizer (``TokenizeTransform`` fingerprints the side it cuts).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tokenizers
    from transformers import PreTrainedTokenizerBase

_CALL_STATE = ("truncation", "padding")


def _backend_definition(backend: tokenizers.Tokenizer) -> Any:
    definition = json.loads(backend.to_str())
    for key in _CALL_STATE:
        definition.pop(key, None)
    return definition


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase | tokenizers.Tokenizer) -> str:
    """A short hash of the tokenizer's content: vocabulary, merges, special tokens, chat
    template, ``split_special_tokens`` (a slow tokenizer: its vocabulary, added tokens and
    special tokens)."""
    import tokenizers  # imported here: transformers takes seconds to import
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

    if isinstance(tokenizer, tokenizers.Tokenizer):
        content: dict[str, Any] = {"tokenizer.json": _backend_definition(tokenizer)}
        split = tokenizer.encode_special_tokens
    elif isinstance(tokenizer, PreTrainedTokenizerBase):
        if isinstance(tokenizer, PreTrainedTokenizerFast):
            content = {"tokenizer.json": _backend_definition(tokenizer.backend_tokenizer)}
        else:
            content = {
                "class": type(tokenizer).__qualname__,
                "vocab": sorted(tokenizer.get_vocab().items()),
            }
        content["added_tokens"] = sorted(
            (index, str(token), bool(token.special))
            for index, token in tokenizer.added_tokens_decoder.items()
        )
        content["special_tokens"] = {k: str(v) for k, v in tokenizer.special_tokens_map.items()}
        content["chat_template"] = tokenizer.chat_template
        split = tokenizer.split_special_tokens
    else:
        raise TypeError(
            "tokenizer must be a transformers tokenizer (PreTrainedTokenizerBase) or a "
            f"tokenizers.Tokenizer, got {type(tokenizer).__name__}"
        )
    if split:  # (only when set: the hashes of tokenizers that do not split stay as they were)
        content["split_special_tokens"] = True
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
