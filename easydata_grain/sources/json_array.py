"""A file holding one JSON array, parsed element by element from a stream, and its seek index."""

from __future__ import annotations

import codecs
import dataclasses
import json
import re
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

from easydata_grain.io.errors import CorruptShardError, MalformedRowError, SourceError

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
    def from_arrays(cls, arrays: dict[str, np.ndarray], size: int | None = None) -> ArrayIndex:
        """The index cached by ``to_arrays``, checked against the stream's length when known.

        Raises ValueError (KeyError for a missing array) for arrays that are not an array
        index of a stream of ``size`` bytes.
        """
        checkpoints, num_rows, every = arrays["checkpoints"], arrays["num_rows"], arrays["every"]
        arrays_ok = all(a.dtype == np.int64 for a in (checkpoints, num_rows, every))
        if not arrays_ok or checkpoints.ndim != 1 or num_rows.ndim or every.ndim:
            raise ValueError("not a JSON array index")
        num_rows, every = int(num_rows), int(every)
        if (
            num_rows < 0
            or every < 1
            or len(checkpoints) != -(-num_rows // every)
            or (len(checkpoints) and checkpoints[0] < 0)
            or np.any(np.diff(checkpoints) <= 0)
        ):
            raise ValueError("its offsets are out of order or out of range")
        if size is not None and len(checkpoints) and checkpoints[-1] >= size:
            raise ValueError(f"it points past the end of the file ({size} bytes)")
        return cls(checkpoints, num_rows, every)


class ArrayElements:
    """The elements of a top-level JSON array, parsed from a binary stream one block at a time.

    The stream is positioned at byte ``offset``: 0 for the start of the file (the ``[`` is
    checked), else the first byte of element number ``element`` (a checkpoint); ``head`` holds
    bytes already read from there, parsed before the stream's. Elements may span any number
    of blocks; multi-byte characters split between blocks are decoded whole.
    With ``checkpoint_every`` set, the byte offset of every such element is collected in
    ``checkpoints``. Bad syntax, a file that is not an array, or one that ends early raises
    ``CorruptShardError`` naming the file and the element; bytes that are not UTF-8 raise
    ``MalformedRowError`` naming the element that holds them.
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
        head: bytes = b"",
    ):
        self._stream = stream
        self._head = head
        self._path = path
        self._block_size = block_size
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._decode = json.JSONDecoder().raw_decode
        self._text = ""
        self._pos = 0
        self._eof = False
        self._bad_utf8: UnicodeDecodeError | None = None
        """Set when the text stops short of bytes that are not UTF-8 (and ``_eof`` with it)."""
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
                raise self._ended()
            if self.checkpoint_every and self.element % self.checkpoint_every == 0:
                self.checkpoints.append(self._byte_offset(self._pos))
            yield self._value()
            self.element += 1
            separator = self._peek()
            if not separator:
                raise self._ended()
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
            if first:
                what = f"it starts with {self._text[self._pos : self._pos + _SNIPPET]!r}"
            elif self._bad_utf8:
                what = "it starts with bytes that are not UTF-8"
            else:
                what = "it holds nothing but whitespace"
            raise CorruptShardError(
                f"{self._path!r} is not a JSON array: {what}.",
                path=self._path,
                hint="jsonl=False reads a file holding one array of objects; pass jsonl=True "
                "for JSON Lines (one object per line). In a pipeline config: the dataset's "
                "type: json, or no type, tells them apart by content; type: jsonl is JSON "
                "Lines.",
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
                near_end = ran_out or exc.pos >= len(self._text) - _TOKEN
                if self._eof and (ran_out or (near_end and self._bad_utf8)):
                    raise self._ended() from exc
                if self._eof or not near_end:
                    raise self._error(f"invalid JSON in element {self.element}: {exc.msg}") from exc
            else:
                # A number at the end of the text may go on in the next block.
                if end < len(self._text) or self._eof:
                    self._pos = end
                    return value
            self._fill(max(self._block_size, len(self._text) - self._pos))

    def _fill(self, size: int = 0) -> bool:
        """Append the next block (at least ``size`` bytes) to the text; False at the end.

        Bytes that are not UTF-8 end the text: parsing goes on up to them, and running out
        there (``_ended``) names the element that holds them.
        """
        if self._eof:
            return False
        data = self._head or self._stream.read(max(size, self._block_size))
        self._head = b""
        self._eof = not data
        try:
            text = self._utf8.decode(data, final=self._eof)
        except UnicodeDecodeError as exc:
            text = exc.object[: exc.start].decode()
            self._eof, self._bad_utf8 = True, exc
        self._byte_offset(self._pos)
        self._text = self._text[self._pos :] + text
        self._pos = self._anchor_char = 0
        return bool(text) or not self._eof

    def _byte_offset(self, char: int) -> int:
        """The byte offset of character ``char`` of the text (at or after the last one asked)."""
        span = self._text[self._anchor_char : char]
        self._anchor_byte += len(span) if span.isascii() else len(span.encode())
        self._anchor_char = char
        return self._anchor_byte

    def _ended(self) -> SourceError:
        """The error for text that ends inside the array: bytes that are not UTF-8, or the
        end of a truncated file."""
        if self._bad_utf8 is not None:
            return MalformedRowError(
                f"{self._path!r} element {self.element} is not valid UTF-8 "
                f"({self._bad_utf8.reason} at byte {self._byte_offset(len(self._text))}).",
                path=self._path,
                row=self.element,
                hint="Fix or rewrite the file (JSON is UTF-8 text); an element of a JSON array "
                "that does not decode cannot be skipped.",
            )
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


def scan_array(
    stream: IO[bytes], path: str, *, block_size: int, every: int, head: bytes = b""
) -> ArrayIndex:
    """Count the elements of a JSON array file and note every ``every``-th one's offset
    (``head``: its first bytes, already read from ``stream``)."""
    elements = ArrayElements(stream, path, block_size=block_size, checkpoint_every=every, head=head)
    count = sum(1 for _ in elements)
    return ArrayIndex(np.array(elements.checkpoints, np.int64), count, every)
