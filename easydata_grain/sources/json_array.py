"""A file holding one JSON array, parsed element by element from a stream, and its seek index."""

from __future__ import annotations

import codecs
import dataclasses
import json
import re
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

from easydata_grain.io.errors import CorruptShardError

_SPACE = re.compile(r"[ \t\n\r]*")
_SNIPPET = 60
_TOKEN = 16
"""A number, literal or escape cut off by the end of a block fails at most this close to it."""


@dataclasses.dataclass(frozen=True)
class ArrayIndex:
    """The element count of a JSON array file and the byte offset of every ``every``-th element."""

    checkpoints: np.ndarray
    """int64 byte offset of elements 0, every, 2 * every, ... (of the decompressed stream)."""
    num_rows: int
    every: int

    def location(self, row: int) -> str:
        """Where a row is, in words."""
        return f"element {row}"

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays to cache."""
        return {
            "checkpoints": self.checkpoints,
            "num_rows": np.int64(self.num_rows),
            "every": np.int64(self.every),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ArrayIndex:
        """The index cached by ``to_arrays``."""
        return cls(arrays["checkpoints"], int(arrays["num_rows"]), int(arrays["every"]))


class ArrayElements:
    """The elements of a top-level JSON array, parsed from a binary stream one block at a time.

    The stream is positioned at byte ``offset``: 0 for the start of the file (the ``[`` is
    checked), else the first byte of element number ``element`` (a checkpoint). Elements may
    span any number of blocks; multi-byte characters split between blocks are decoded whole.
    With ``checkpoint_every`` set, the byte offset of every such element is collected in
    ``checkpoints``. Bad syntax, a file that is not an array, or one that ends early raises
    ``CorruptShardError`` naming the file and the element.
    """

    def __init__(
        self,
        stream: IO[bytes],
        path: str,
        *,
        block_size: int,
        offset: int = 0,
        element: int = 0,
        checkpoint_every: int = 0,
    ):
        self._stream = stream
        self._path = path
        self._block_size = block_size
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._decode = json.JSONDecoder().raw_decode
        self._text = ""
        self._pos = 0
        self._eof = False
        self._anchor_char = 0
        self._anchor_byte = offset
        self._at_file_start = offset == 0
        self.element = element
        """The number of the next element."""
        self.checkpoint_every = checkpoint_every
        self.checkpoints: list[int] = []

    def __iter__(self) -> Iterator[Any]:
        if self._at_file_start:
            self._open_array()
            if self._peek() == "]":
                self._pos += 1
                self._expect_end()
                return
        while True:
            if not self._peek():
                raise self._truncated()
            if self.checkpoint_every and self.element % self.checkpoint_every == 0:
                self.checkpoints.append(self._byte_offset(self._pos))
            yield self._value()
            self.element += 1
            separator = self._peek()
            if not separator:
                raise self._truncated()
            self._pos += 1
            if separator == "]":
                self._expect_end()
                return
            if separator != ",":
                raise self._error(f"expected ',' or ']' after element {self.element - 1}")

    def _open_array(self) -> None:
        first = self._peek()
        if first == "\ufeff":
            self._pos += 1
            first = self._peek()
        if first != "[":
            raise CorruptShardError(
                f"{self._path!r} is not a JSON array: it starts with "
                f"{self._text[self._pos : self._pos + _SNIPPET] or 'nothing but whitespace'!r}.",
                path=self._path,
                hint="jsonl=False reads a file holding one array of objects; pass jsonl=True "
                "for JSON Lines (one object per line).",
            )
        self._pos += 1

    def _expect_end(self) -> None:
        """After the closing bracket only whitespace may follow."""
        if self._peek():
            raise self._error("unexpected data after the end of the array")

    def _peek(self) -> str:
        """The next character that is not whitespace (the position moves to it); "" at the end."""
        while True:
            self._pos = _SPACE.match(self._text, self._pos).end()
            if self._pos < len(self._text):
                return self._text[self._pos]
            if not self._fill():
                return ""

    def _value(self) -> Any:
        """Decode the element at the position, reading more blocks while it is incomplete."""
        while True:
            try:
                value, end = self._decode(self._text, self._pos)
            except json.JSONDecodeError as exc:
                ran_out = exc.msg.startswith("Unterminated string") or exc.pos >= len(self._text)
                if self._eof and ran_out:
                    raise self._truncated() from exc
                if self._eof or (not ran_out and exc.pos < len(self._text) - _TOKEN):
                    raise self._error(f"invalid JSON in element {self.element}: {exc.msg}") from exc
            else:
                # A number at the end of the text may go on in the next block.
                if end < len(self._text) or self._eof:
                    self._pos = end
                    return value
            self._fill(max(self._block_size, len(self._text) - self._pos))

    def _fill(self, size: int = 0) -> bool:
        """Append the next block (at least ``size`` bytes) to the text; False at the end."""
        if self._eof:
            return False
        data = self._stream.read(max(size, self._block_size))
        self._eof = not data
        try:
            text = self._utf8.decode(data, final=self._eof)
        except UnicodeDecodeError as exc:
            raise self._error(f"invalid UTF-8 near element {self.element}") from exc
        self._byte_offset(self._pos)
        self._text = self._text[self._pos :] + text
        self._pos = self._anchor_char = 0
        return not self._eof

    def _byte_offset(self, char: int) -> int:
        """The byte offset of character ``char`` of the text (at or after the last one asked)."""
        span = self._text[self._anchor_char : char]
        self._anchor_byte += len(span) if span.isascii() else len(span.encode())
        self._anchor_char = char
        return self._anchor_byte

    def _truncated(self) -> CorruptShardError:
        return CorruptShardError(
            f"{self._path!r} ends inside the JSON array, at element {self.element}: the file "
            "is truncated.",
            path=self._path,
            row=self.element,
            hint="Rewrite the file; an interrupted upload leaves such files.",
        )

    def _error(self, what: str) -> CorruptShardError:
        return CorruptShardError(
            f"{self._path!r} is not a valid JSON array: {what} (at byte "
            f"{self._byte_offset(self._pos)}: {self._text[self._pos : self._pos + _SNIPPET]!r}).",
            path=self._path,
            row=self.element,
            hint="Fix or rewrite the file; a syntax error in an array cannot be skipped.",
        )


def scan_array(stream: IO[bytes], path: str, *, block_size: int, every: int) -> ArrayIndex:
    """Count the elements of a JSON array file and note every ``every``-th one's offset."""
    elements = ArrayElements(stream, path, block_size=block_size, checkpoint_every=every)
    count = sum(1 for _ in elements)
    return ArrayIndex(np.array(elements.checkpoints, np.int64), count, every)
