"""Conversations rendered with a tokenizer's chat template (``apply_chat_template``).

``ChatTemplateTransform`` finds the conversation in any of the layouts of chatml.py (the
``messages_field``, a ``conversations`` or ``conversation`` field, OpenAI or ShareGPT turns, or
an Alpaca row) and writes the rendered text. It takes the arguments of EasyDeL's
``easydel.data.ChatTemplateTransform`` too (``drop_messages``, ``convert_from_value_format``,
other keyword arguments going to the template). A template that fails raises
``MalformedRowError`` with the template's own message, never a silent fallback to some other
format. It is a ``BatchMap``: ``map_batch``
renders (and, for the assistant mask, tokenizes) a list of rows' conversations in one
``apply_chat_template`` call, which the loader uses.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from easydata_grain.io.errors import MalformedRowError
from easydata_grain.transforms.base import FieldMap, check_name, check_row, describe_row
from easydata_grain.transforms.chatml import SHAREGPT_ROLES, alpaca_messages, to_messages
from easydata_grain.transforms.tokenizer_identity import tokenizer_fingerprint
from easydata_grain.types import Row

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_GENERATION_BLOCK = re.compile(r"\{%-?\s*generation\s*-?%\}")
ALPACA_FIELDS = ("instruction", "input", "output")
"""The fields of an Alpaca row (``input`` may be empty or absent)."""
CONVERSATION_FIELDS = ("conversations", "conversation")
"""The fields looked in after ``messages_field`` for a list of turns."""
_RENDER_ARGUMENTS = frozenset(
    {
        "tokenize",
        "return_dict",
        "return_assistant_tokens_mask",
        "return_tensors",
        "padding",
        "truncation",
        "max_length",
        "tokenizer_kwargs",
        "conversation",
    }
)
"""``apply_chat_template`` arguments the transform sets itself (not template variables)."""


class ChatTemplateTransform(FieldMap):
    """Render a row's conversation with the tokenizer's chat template into ``output_field``.

    The conversation is the first found of: ``messages_field``, a ``conversations`` or
    ``conversation`` field (OpenAI ``role``/``content`` or ShareGPT ``from``/``value`` turns), or
    an Alpaca row (``instruction``, optional ``input``, ``output``: a user and an assistant
    turn); a null field counts as absent. A row with none of them is an error unless
    ``pass_through=True`` (then it is returned unchanged, but for ``drop_messages``).
    ``drop_messages`` (the default, as EasyDeL's) removes the conversation fields
    (``messages_field``, ``conversations``, ``conversation``) from every row, so the loader can
    batch the rows; the Alpaca fields and the other fields are kept. ``output_field`` is
    overwritten.

    ``tools``, ``add_generation_prompt``, ``template_kwargs`` and any other keyword argument
    (``continue_final_message=True``, template variables) go to
    ``tokenizer.apply_chat_template``. The template is taken when the transform is built
    (``chat_template``, a template or a template's name, else the tokenizer's): a later change
    of ``tokenizer.chat_template`` changes neither the rows nor the fingerprint.

    With ``assistant_mask_field`` the transform also tokenizes the conversation
    (``return_assistant_tokens_mask=True``): ``input_ids_field`` gets the int32 token ids and
    ``assistant_mask_field`` 1 for each token the template's ``{% generation %}`` block marks
    as the assistant's (for SFT loss masking), 0 elsewhere. The template must have such a
    block. ``output_field=None`` then skips the text.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        messages_field: str = "messages",
        output_field: str | None = "text",
        tools: Sequence[Any] | None = None,
        add_generation_prompt: bool = False,
        assistant_mask_field: str | None = None,
        pass_through: bool = False,
        *,
        chat_template: str | None = None,
        input_ids_field: str = "input_ids",
        system_prompt: str | None = None,
        roles: Mapping[str, str] | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
        drop_messages: bool = True,
        convert_from_value_format: bool = True,
        **more_template_kwargs: Any,
    ):
        from transformers import PreTrainedTokenizerBase

        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            raise TypeError(
                f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}"
            )
        if not (chat_template or tokenizer.chat_template):
            raise ValueError(
                f"The tokenizer ({type(tokenizer).__name__}) has no chat template: set "
                "tokenizer.chat_template or pass chat_template=..."
            )
        for flag, value in (
            ("add_generation_prompt", add_generation_prompt),
            ("pass_through", pass_through),
            ("drop_messages", drop_messages),
            ("convert_from_value_format", convert_from_value_format),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be a bool, got {value!r}")
        if not convert_from_value_format:
            raise ValueError(
                "convert_from_value_format=False is not supported: ShareGPT from/value turns are "
                "always read as role/content messages (a template cannot render from/value)."
            )
        if output_field is None and assistant_mask_field is None:
            raise ValueError("output_field=None writes nothing: give assistant_mask_field too.")
        if tools is not None and (isinstance(tools, str) or not isinstance(tools, Sequence)):
            raise TypeError(f"tools must be a list of tool schemas or functions, got {tools!r}")
        kwargs = dict(template_kwargs or {})
        if twice := sorted(kwargs.keys() & more_template_kwargs.keys()):
            raise ValueError(f"Template arguments {twice} are given twice: in template_kwargs too.")
        kwargs.update(more_template_kwargs)
        if reserved := sorted(kwargs.keys() & _RENDER_ARGUMENTS):
            raise ValueError(
                f"{reserved} are set by ChatTemplateTransform, not template arguments: it renders "
                "text (assistant_mask_field also tokenizes); truncate in TokenizeTransform."
            )
        template = tokenizer.get_chat_template(chat_template, tools=tools)
        if assistant_mask_field is not None and not _GENERATION_BLOCK.search(template):
            raise ValueError(
                "assistant_mask_field needs a chat template with a {% generation %} ... "
                "{% endgeneration %} block around the assistant's content; this one has none."
            )
        self.tokenizer = tokenizer
        self.messages_field = check_name(messages_field, "messages_field")
        self.output_field = (
            None if output_field is None else check_name(output_field, "output_field")
        )
        self.assistant_mask_field = (
            None
            if assistant_mask_field is None
            else check_name(assistant_mask_field, "assistant_mask_field")
        )
        self.input_ids_field = check_name(input_ids_field, "input_ids_field")
        self.tools = None if tools is None else list(tools)
        self.add_generation_prompt = add_generation_prompt
        self.pass_through = pass_through
        self.chat_template: str = template
        """The template rendered with, taken when the transform was built."""
        self.system_prompt = system_prompt
        self.roles = dict(SHAREGPT_ROLES if roles is None else roles)
        self.template_kwargs = kwargs
        self.drop_messages = drop_messages
        self.tokenizer_id = tokenizer_fingerprint(tokenizer)
        """The tokenizer's content hash (``tokenizer_fingerprint``), chat template included."""
        self.conversation_fields = tuple(dict.fromkeys((self.messages_field, *CONVERSATION_FIELDS)))
        """The fields a list of turns is looked for in, in order."""
        self.reads = frozenset({*self.conversation_fields, *ALPACA_FIELDS})
        written = {self.output_field} if self.output_field else set()
        if self.assistant_mask_field:
            written |= {self.input_ids_field, self.assistant_mask_field}
        if drop_messages:
            written |= set(self.conversation_fields)
        self.writes = frozenset(written)
        self._seal()

    def fields_needed(self, downstream: frozenset[str] | None) -> frozenset[str] | None:
        """The input fields needed for ``downstream``; with ``pass_through`` a row without a
        conversation keeps its own fields (its ``text``, say), so those are read too."""
        if self.pass_through and downstream is not None:
            return self.reads | downstream
        return super().fields_needed(downstream)

    def config(self) -> dict[str, Any]:
        """The fields, the template's options, the template's hash and the tokenizer's content
        hash."""
        return {
            "tokenizer": self.tokenizer_id,
            "messages_field": self.messages_field,
            "output_field": self.output_field,
            "tools": self.tools,
            "add_generation_prompt": self.add_generation_prompt,
            "assistant_mask_field": self.assistant_mask_field,
            "pass_through": self.pass_through,
            "chat_template": hashlib.sha256(self.chat_template.encode()).hexdigest()[:16],
            "input_ids_field": self.input_ids_field,
            "system_prompt": self.system_prompt,
            "roles": self.roles,
            "template_kwargs": self.template_kwargs,
            "drop_messages": self.drop_messages,
        }

    def messages(self, row: Row) -> tuple[str, list[dict[str, Any]]] | None:
        """The row's layout (its field name, or ``alpaca``) and its messages; None when the
        row has no conversation. A null field counts as absent (a Parquet file of mixed
        layouts has nulls where a row has another layout), and so does a ``conversations`` or
        ``conversation`` field that holds text, not turns (an id, say; ``messages_field``
        must hold turns)."""
        check_row(row, self)
        for field in self.conversation_fields:
            value = row.get(field)
            if value is None or self._holds_text(field, value):
                continue
            messages = to_messages(value, field, row, self.roles)
            if self.system_prompt and messages[0].get("role") != "system":
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            return field, messages
        if row.get("instruction") is not None and row.get("output") is not None:
            return "alpaca", alpaca_messages(row, system_prompt=self.system_prompt)
        return None

    def _render(self, messages: list[Any], tokenize: bool) -> Any:
        """``apply_chat_template`` on one conversation or a list of them."""
        return self.tokenizer.apply_chat_template(
            messages,
            tools=self.tools,
            chat_template=self.chat_template,
            add_generation_prompt=self.add_generation_prompt,
            tokenize=tokenize,
            return_dict=tokenize,
            return_assistant_tokens_mask=tokenize,
            **self.template_kwargs,
        )

    def _conversation(self, element: Row) -> tuple[str, list[dict[str, Any]]] | None:
        """``messages(element)``; a row without a conversation is an error unless
        ``pass_through`` (then None)."""
        found = self.messages(element)
        if found is None and not self.pass_through:
            raise MalformedRowError(
                f"ChatTemplateTransform found no conversation in {describe_row(element)}: "
                f"expected a non-null {self.messages_field!r}, 'conversations' or 'conversation' "
                "(OpenAI role/content or ShareGPT from/value turns), or non-null Alpaca fields "
                "(instruction, output; input optional).",
                hint="Pass messages_field=..., convert the row first, or pass_through=True.",
            )
        return found

    def _outputs(self, conversations: list[Any]) -> list[dict[str, Any]]:
        """The fields written for each conversation: the text, the ids and the mask."""
        outputs: list[dict[str, Any]] = [{} for _ in conversations]
        if self.output_field is not None:
            texts = self._render(conversations, tokenize=False)
            for out, text in zip(outputs, texts, strict=True):
                out[self.output_field] = text
        if self.assistant_mask_field is not None:
            encoded = self._render(conversations, tokenize=True)
            for out, ids, mask in zip(
                outputs, encoded["input_ids"], encoded["assistant_masks"], strict=True
            ):
                out[self.input_ids_field] = np.asarray(ids, dtype=np.int32)
                out[self.assistant_mask_field] = np.asarray(mask, dtype=np.int32)
        return outputs

    def _holds_text(self, field: str, value: Any) -> bool:
        """Whether a ``conversations``/``conversation`` field holds text (an id, say), not
        turns: it is not a conversation, and it is kept."""
        return field != self.messages_field and isinstance(value, str | bytes)

    def _finish(self, element: Row, written: Mapping[str, Any]) -> Row:
        """``element`` with the ``written`` fields, without its conversation fields when
        ``drop_messages``."""
        if not self.drop_messages:
            return {**element, **written}
        kept = {
            k: v
            for k, v in element.items()
            if k not in self.conversation_fields or self._holds_text(k, v)
        }
        return {**kept, **written}

    def map(self, element: Row) -> Row:
        """The row with the rendered conversation (and its ids and mask, when asked)."""
        found = self._conversation(element)
        if found is None:
            return self._finish(element, {})
        layout, messages = found
        try:
            (written,) = self._outputs([messages])
        except Exception as error:
            raise MalformedRowError(
                f"The chat template failed on {describe_row(element)} ({layout} layout, "
                f"{len(messages)} messages, roles {[m.get('role') for m in messages]}): "
                f"{type(error).__name__}: {error}"
            ) from error
        return self._finish(element, written)

    def map_batch(self, elements: list[Row]) -> list[Row]:
        """Many rows, their conversations rendered (and tokenized, for the mask) in one call
        each (the ``BatchMap`` protocol); when that fails, the failing row's error as ``map``
        raises it."""
        found = [self._conversation(row) for row in elements]
        todo = [i for i, f in enumerate(found) if f is not None]
        try:
            written = self._outputs([found[i][1] for i in todo]) if todo else []  # type: ignore[index]
        except Exception:
            for i in todo:
                self.map(elements[i])  # raises, naming the row
            raise
        fields: list[Mapping[str, Any]] = [{} for _ in elements]
        for i, one in zip(todo, written, strict=True):
            fields[i] = one
        return [self._finish(row, one) for row, one in zip(elements, fields, strict=True)]
