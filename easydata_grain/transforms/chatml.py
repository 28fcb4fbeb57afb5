"""Conversation layouts -> OpenAI-style messages (``[{"role": ..., "content": ...}]``).

The layouts instruction-tuning sets come in:
- OpenAI: a list of ``{"role", "content"}`` dicts (``messages``);
- ShareGPT: a list of ``{"from", "value"}`` dicts (``conversations``), ``from`` being
  ``human``/``gpt``/``system``/... (``SHAREGPT_ROLES``);
- Alpaca: ``instruction``, an optional ``input`` and ``output`` fields;
- input/output turns (Capybara, Pure-Dove): a list of ``{"input", "output"}`` dicts
  (``conversation``), each turn a user message and the assistant's answer.

``ConvertToChatML`` and ``ConvertInputOutputToChatML`` write the messages into a field;
``ChatTemplateTransform`` reads any of the layouts directly (``find_messages``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from easydata_grain.io.errors import MalformedRowError
from easydata_grain.transforms.base import (
    FieldMap,
    check_name,
    check_new_field,
    check_row,
    describe_row,
    either,
    field_of,
    guarded,
)
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


def input_output_messages(
    value: Any, field: str, row: Row, user_role: str = "user", assistant_role: str = "assistant"
) -> list[dict[str, Any]]:
    """A list of ``{"input", "output"}`` turns (Capybara) as OpenAI messages: each input a
    user message, each output an assistant message (a null or absent one is left out; a turn
    with neither is an error, as is a value that is not a string)."""
    messages = []
    for i, turn in enumerate(_turns(value, field, row)):
        said = (
            [
                (k, role, turn.get(k))
                for k, role in (("input", user_role), ("output", assistant_role))
            ]
            if isinstance(turn, Mapping)
            else []
        )
        said = [(k, role, text) for k, role, text in said if text is not None]
        if not said:
            shown = sorted(turn) if isinstance(turn, Mapping) else type(turn).__name__
            raise MalformedRowError(
                f"Turn {i} of {field!r} in {describe_row(row)} has no 'input' or 'output': {shown}."
            )
        for key, role, text in said:
            if not isinstance(text, str):
                raise MalformedRowError(
                    f"Turn {i} of {field!r} in {describe_row(row)} has an {key!r} that is a "
                    f"{type(text).__name__}, not a string: {text!r:.80}."
                )
            messages.append({"role": role, "content": text})
    return messages


class ConvertToChatML(FieldMap):
    """ShareGPT turns (``from``/``value``) -> OpenAI messages (``role``/``content``).

    Reads ``input_field`` (default ``conversations``) and writes ``output_field`` (default
    ``messages``), removing the input field when they differ. Turns already in OpenAI form
    are kept; an unknown speaker is an error. ``roles`` adds speakers to ``SHAREGPT_ROLES`` (its
    entries win); ``use_default_mapping=False`` uses ``roles`` alone (``role_mapping`` is
    EasyDeL's name of ``roles``). An output field the row has (other than the input) is an
    error unless ``overwrite=True``.
    """

    def __init__(
        self,
        input_field: str = "conversations",
        output_field: str = "messages",
        *,
        roles: Mapping[str, str] | None = None,
        use_default_mapping: bool = True,
        keep_input: bool = False,
        overwrite: bool = False,
        role_mapping: Mapping[str, str] | None = None,
    ):
        self.input_field = check_name(input_field, "input_field")
        self.output_field = check_name(output_field, "output_field")
        given = either(roles, role_mapping, ("roles", "role_mapping"), default={})
        if not isinstance(given, Mapping):
            raise TypeError(f"roles maps speaker names to role names, got {given!r}")
        self.roles = {**(SHAREGPT_ROLES if use_default_mapping else {}), **given}
        for source, role in self.roles.items():
            if not isinstance(source, str) or not isinstance(role, str):
                raise TypeError(f"roles maps speaker names to role names, got {given!r}")
        if not self.roles:
            raise ValueError("use_default_mapping=False needs roles={speaker: role, ...}.")
        self.keep_input = keep_input
        self.overwrite = overwrite or self.output_field == self.input_field
        self.reads = guarded(frozenset({self.input_field}), self.output_field, self.overwrite)
        self.writes = frozenset({self.output_field, self.input_field})
        self._seal()

    def config(self) -> dict[str, Any]:
        """The fields and the speaker -> role map."""
        return {
            "input_field": self.input_field,
            "output_field": self.output_field,
            "roles": self.roles,
            "keep_input": self.keep_input,
            "overwrite": self.overwrite,
        }

    def map(self, element: Row) -> Row:
        """The row with OpenAI messages in ``output_field``."""
        messages = to_messages(
            field_of(element, self.input_field, self), self.input_field, element, self.roles
        )
        if not self.overwrite:
            check_new_field(element, self.output_field, "ConvertToChatML")
        out = {k: v for k, v in element.items() if self.keep_input or k != self.input_field}
        out[self.output_field] = messages
        return out


class ConvertInputOutputToChatML(FieldMap):
    """An Alpaca row (``instruction``, optional ``input``, ``output``) or input/output turns
    (Capybara: ``{"conversation": [{"input", "output"}, ...]}``) -> OpenAI messages.

    Alpaca: the user turn is the instruction, followed by the input after a blank line when
    the input is not empty; the assistant turn is the output. Turns: each input is a user turn
    (``user_role``), each output an assistant turn (``assistant_role``); they are read from
    ``conversation_field``, or from ``input_field`` when it holds a list (EasyDeL's
    ``ConvertInputOutputToChatML(input_field="conversation", output_field="messages")``). A row
    with both layouts is an error. ``system_prompt`` adds a system turn. The fields read are
    removed unless ``keep_input``. ``output_field`` is EasyDeL's name of ``messages_field``;
    a messages field the row has (not one read) is an error unless ``overwrite=True``.
    """

    def __init__(
        self,
        instruction_field: str = "instruction",
        input_field: str = "input",
        response_field: str = "output",
        messages_field: str | None = None,
        *,
        conversation_field: str = "conversation",
        user_role: str = "user",
        assistant_role: str = "assistant",
        system_prompt: str | None = None,
        keep_input: bool = False,
        overwrite: bool = False,
        output_field: str | None = None,
    ):
        self.instruction_field = check_name(instruction_field, "instruction_field")
        self.input_field = check_name(input_field, "input_field")
        self.response_field = check_name(response_field, "response_field")
        self.conversation_field = check_name(conversation_field, "conversation_field")
        self.messages_field = check_name(
            either(messages_field, output_field, ("messages_field", "output_field"), "messages"),
            "messages_field",
        )
        self.user_role = check_name(user_role, "user_role")
        self.assistant_role = check_name(assistant_role, "assistant_role")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise TypeError(f"system_prompt must be a str or None, got {system_prompt!r}")
        self.system_prompt = system_prompt
        self.keep_input = keep_input
        self.overwrite = overwrite
        self.inputs = frozenset(
            {self.instruction_field, self.input_field, self.response_field, conversation_field}
        )
        self.reads = guarded(self.inputs, self.messages_field, overwrite)
        self.writes = self.inputs | {self.messages_field}
        self._seal()

    def config(self) -> dict[str, Any]:
        """The fields, the roles, the system prompt and the flags."""
        return {
            "instruction_field": self.instruction_field,
            "input_field": self.input_field,
            "response_field": self.response_field,
            "conversation_field": self.conversation_field,
            "messages_field": self.messages_field,
            "user_role": self.user_role,
            "assistant_role": self.assistant_role,
            "system_prompt": self.system_prompt,
            "keep_input": self.keep_input,
            "overwrite": self.overwrite,
        }

    def map(self, element: Row) -> Row:
        """The row with the conversation in ``messages_field``."""
        check_row(element, self)
        turns = self._turns_field(element)
        if turns is None:
            fields = self.instruction_field, self.input_field, self.response_field
            used = set(fields)
            messages = alpaca_messages(element, *fields)
        else:
            used = {turns}
            messages = input_output_messages(
                element[turns], turns, element, self.user_role, self.assistant_role
            )
        if self.system_prompt:
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        if not self.overwrite and self.messages_field not in used:
            check_new_field(element, self.messages_field, "ConvertInputOutputToChatML")
        dropped = () if self.keep_input else used
        out = {k: v for k, v in element.items() if k not in dropped}
        out[self.messages_field] = messages
        return out

    def _turns_field(self, row: Row) -> str | None:
        """The field holding input/output turns (None: an Alpaca row)."""
        for field in (self.input_field, self.conversation_field):
            value = row.get(field)
            if isinstance(value, np.ndarray) or (
                isinstance(value, Sequence) and not isinstance(value, str | bytes)
            ):
                if self.instruction_field in row:
                    raise MalformedRowError(
                        f"ConvertInputOutputToChatML found both an Alpaca "
                        f"{self.instruction_field!r} and input/output turns in {field!r} of "
                        f"{describe_row(row)}.",
                        hint="Drop one of them first (DropFields).",
                    )
                return field
        return None
