"""Conversation layouts -> OpenAI-style messages (``[{"role": ..., "content": ...}]``).

The layouts instruction-tuning sets come in:
- OpenAI: a list of ``{"role", "content"}`` dicts (``messages``);
- ShareGPT: a list of ``{"from", "value"}`` dicts (``conversations``), ``from`` being
  ``human``/``gpt``/``system``/... (``SHAREGPT_ROLES``);
- Alpaca: ``instruction``, an optional ``input`` and ``output`` fields.

``ConvertToChatML`` and ``ConvertInputOutputToChatML`` write the messages into a field;
``ChatTemplateTransform`` reads any of the layouts directly (``find_messages``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from easydata_grain.io.errors import MalformedRowError
from easydata_grain.transforms.base import FieldMap, check_name, check_row, describe_row, field_of
from easydata_grain.types import Row

SHAREGPT_ROLES: Mapping[str, str] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "bing": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
    "function_call": "assistant",
}
"""ShareGPT's ``from`` values -> OpenAI roles."""


_LAYOUT_KEYS = frozenset({"role", "content", "from", "value"})
"""The keys that tell a turn's layout (OpenAI ``role``/``content``, ShareGPT ``from``/``value``)."""


def _turns(value: Any, field: str, row: Row) -> list[Any]:
    """A conversation field's turns as a list (Parquet lists may come as numpy arrays)."""
    if isinstance(value, np.ndarray) and value.dtype == object:
        value = value.tolist()
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise MalformedRowError(
            f"{field!r} of {describe_row(row)} should be a list of messages, not a "
            f"{type(value).__name__}: {value!r:.80}."
        )
    if not value:
        raise MalformedRowError(f"{field!r} of {describe_row(row)} has no messages.")
    return list(value)


def to_messages(
    value: Any, field: str, row: Row, roles: Mapping[str, str] = SHAREGPT_ROLES
) -> list[dict[str, Any]]:
    """A list of OpenAI or ShareGPT turns as OpenAI messages (OpenAI turns are kept as they
    are, with any extra keys such as ``tool_calls``).

    A null key counts as absent: a Parquet or Arrow column that holds both layouts gives every
    turn all four keys, the other layout's null. A ShareGPT turn's ``value`` must be a string."""
    messages = []
    for i, turn in enumerate(_turns(value, field, row)):
        if isinstance(turn, Mapping):
            turn = {k: v for k, v in turn.items() if not (k in _LAYOUT_KEYS and v is None)}
        if isinstance(turn, Mapping) and "role" in turn:
            messages.append(turn)
        elif isinstance(turn, Mapping) and "from" in turn:
            source, text = turn["from"], turn.get("value")
            if source not in roles:
                raise MalformedRowError(
                    f"Message {i} of {field!r} in {describe_row(row)} is from {source!r}, a "
                    f"speaker not in {sorted(roles)}.",
                    hint="Pass roles={...} mapping it to a role.",
                )
            if not isinstance(text, str):
                raise MalformedRowError(
                    f"Message {i} of {field!r} in {describe_row(row)} (from {source!r}) has no "
                    f"text: its 'value' is {text!r:.80}, not a string."
                )
            extra = {k: v for k, v in turn.items() if k not in ("from", "value")}
            messages.append({"role": roles[source], "content": text, **extra})
        else:
            shown = sorted(turn) if isinstance(turn, Mapping) else type(turn).__name__
            raise MalformedRowError(
                f"Message {i} of {field!r} in {describe_row(row)} is neither OpenAI "
                f"(role/content) nor ShareGPT (from/value): {shown}."
            )
    return messages


def alpaca_messages(
    row: Row,
    instruction_field: str = "instruction",
    input_field: str = "input",
    output_field: str = "output",
    system_prompt: str | None = None,
) -> list[dict[str, str]]:
    """An Alpaca row as a user turn (instruction, then the input after a blank line when it
    is not empty) and an assistant turn (the output)."""
    instruction = field_of(row, instruction_field, "ConvertInputOutputToChatML")
    extra = row.get(input_field)
    output = field_of(row, output_field, "ConvertInputOutputToChatML")
    for name, value in (
        (instruction_field, instruction),
        (input_field, extra),
        (output_field, output),
    ):
        if value is None and name != input_field:
            raise MalformedRowError(
                f"{name!r} of {describe_row(row)} is null: an Alpaca row needs its instruction "
                "and its output (only the input may be empty)."
            )
        if value is not None and not isinstance(value, str):
            raise MalformedRowError(
                f"{name!r} of {describe_row(row)} should be a string, not a "
                f"{type(value).__name__}: {value!r:.80}."
            )
    user = f"{instruction}\n\n{extra}" if extra else instruction
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": output}]


class ConvertToChatML(FieldMap):
    """ShareGPT turns (``from``/``value``) -> OpenAI messages (``role``/``content``).

    Reads ``input_field`` (default ``conversations``) and writes ``output_field`` (default
    ``messages``), removing the input field when they differ. Turns already in OpenAI form
    are kept; an unknown speaker is an error (``roles`` maps more).
    """

    def __init__(
        self,
        input_field: str = "conversations",
        output_field: str = "messages",
        *,
        roles: Mapping[str, str] | None = None,
        keep_input: bool = False,
    ):
        self.input_field = check_name(input_field, "input_field")
        self.output_field = check_name(output_field, "output_field")
        self.roles = dict(SHAREGPT_ROLES if roles is None else roles)
        for source, role in self.roles.items():
            if not isinstance(source, str) or not isinstance(role, str):
                raise TypeError(f"roles maps speaker names to role names, got {roles!r}")
        self.keep_input = keep_input
        self.reads = frozenset({self.input_field})
        self.writes = frozenset({self.output_field, self.input_field})
        self._seal()

    def config(self) -> dict[str, Any]:
        """The fields and the speaker -> role map."""
        return {
            "input_field": self.input_field,
            "output_field": self.output_field,
            "roles": self.roles,
            "keep_input": self.keep_input,
        }

    def map(self, element: Row) -> Row:
        """The row with OpenAI messages in ``output_field``."""
        messages = to_messages(
            field_of(element, self.input_field, self), self.input_field, element, self.roles
        )
        out = {k: v for k, v in element.items() if self.keep_input or k != self.input_field}
        out[self.output_field] = messages
        return out


class ConvertInputOutputToChatML(FieldMap):
    """An Alpaca row (``instruction``, optional ``input``, ``output``) -> OpenAI messages.

    The user turn is the instruction, followed by the input after a blank line when the input
    is not empty; the assistant turn is the output; ``system_prompt`` adds a system turn. The
    three fields are removed unless ``keep_input``.
    """

    def __init__(
        self,
        instruction_field: str = "instruction",
        input_field: str = "input",
        response_field: str = "output",
        messages_field: str = "messages",
        *,
        system_prompt: str | None = None,
        keep_input: bool = False,
    ):
        self.instruction_field = check_name(instruction_field, "instruction_field")
        self.input_field = check_name(input_field, "input_field")
        self.response_field = check_name(response_field, "response_field")
        self.messages_field = check_name(messages_field, "messages_field")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise TypeError(f"system_prompt must be a str or None, got {system_prompt!r}")
        self.system_prompt = system_prompt
        self.keep_input = keep_input
        inputs = {self.instruction_field, self.input_field, self.response_field}
        self.reads = frozenset(inputs)
        self.writes = frozenset(inputs | {self.messages_field})
        self._seal()

    def config(self) -> dict[str, Any]:
        """The fields and the system prompt."""
        return {
            "instruction_field": self.instruction_field,
            "input_field": self.input_field,
            "response_field": self.response_field,
            "messages_field": self.messages_field,
            "system_prompt": self.system_prompt,
            "keep_input": self.keep_input,
        }

    def map(self, element: Row) -> Row:
        """The row with the conversation in ``messages_field``."""
        check_row(element, self)
        messages = alpaca_messages(
            element,
            self.instruction_field,
            self.input_field,
            self.response_field,
            self.system_prompt,
        )
        dropped = () if self.keep_input else self.reads
        out = {k: v for k, v in element.items() if k not in dropped}
        out[self.messages_field] = messages
        return out
