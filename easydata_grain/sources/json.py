"""JsonShardedSource: JSON Lines (or JSON array) files, row counts and O(1) seeks from a cached index."""

from __future__ import annotations

import bisect
import codecs
import contextlib
import functools
import io
import itertools
import json
import logging
import lzma
import operator
import os
import struct
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from typing import IO, Any, ClassVar, Literal, NamedTuple

import fsspec.compression
import numpy as np
import orjson

from easydata_grain.io.errors import CorruptShardError, MalformedRowError
from easydata_grain.io.remote_file import RemoteFile
from easydata_grain.io.retry import RetryPolicy, is_storage_fault
from easydata_grain.sources.file_source import FileShardedSource, Row, ShardMeta, file_identity
from easydata_grain.sources.json_array import ArrayElements, ArrayIndex, scan_array
from easydata_grain.sources.line_index import IndexCache, LineIndex, default_cache_dir, scan_lines
from easydata_grain.sources.metadata_sharing import MetadataSharing
from easydata_grain.sources.skipped import SkippedRow, is_skipped
from easydata_grain.transforms.fluent import TransformableSource

logger = logging.getLogger(__name__)

_COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}
_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number"}
_SNIPPET = 80
_PARQUET_MAGIC = b"PAR1"
_JSON_SPACE = b" \t\r\n"


class _BadLine(NamedTuple):
    """A JSON Lines row that does not parse."""

    reason: str
    text: bytes


def compression_of(path: str) -> str | None:
    """The compression of a file by its extension (fsspec's codec name), or None."""
    return next((codec for suffix, codec in _COMPRESSIONS.items() if path.endswith(suffix)), None)


_LONG_DIGITS = 19
"""orjson reads an integer outside [-2**63, 2**64) as a float; ``json`` keeps it an int. Such an
integer has at least this many digits."""
_DIGITS_TO_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_HIGH_NIBBLES = np.uint64(0xF0F0F0F0F0F0F0F0)
_DIGIT_NIBBLES = np.uint64(0x3030303030303030)
_CHECK_WORDS = 1 << 15
_OPEN_BRACE = ord("{")
_PACKERS: dict[tuple[str, int], struct.Struct] = {}


def _parse_exact(line: bytes) -> Any:
    """What ``json`` makes of one line, the reference the fast path must equal; a
    ``_BadLine`` for a line that is not UTF-8 or not JSON."""
    try:
        # Not json.loads(line): it decodes bytes with "surrogatepass" (and guesses
        # UTF-16/32), letting invalid UTF-8 through as lone surrogates.
        return json.loads(line.decode().removeprefix("\ufeff"))
    except UnicodeDecodeError as exc:
        return _BadLine(f"not valid UTF-8 ({exc.reason} at byte {exc.start})", line)
    except json.JSONDecodeError as exc:
        return _BadLine(f"not valid JSON ({exc.msg} at column {exc.colno})", line)
    except (ValueError, RecursionError) as exc:
        return _BadLine(f"not valid JSON ({type(exc).__name__}: {exc})", line)


def _has_long_number(line: bytes) -> bool:
    """Whether a line holds a run of ``_LONG_DIGITS`` digits (an integer orjson may not keep)."""
    return b"0" * _LONG_DIGITS in line.translate(_DIGITS_TO_ZERO)


def _parse_line(line: bytes) -> Any:
    """``_parse_exact``'s value at orjson's speed where orjson gives the same value.

    orjson refuses what ``json`` accepts beyond the JSON standard (NaN, Infinity, -Infinity,
    1e400, lone surrogates escaped as ``\\ud800``), and refuses invalid UTF-8, a byte-order
    mark and anything else ``json`` refuses: every line orjson refuses is parsed again by
    ``json``, which gives the value or the error it always gave. The one value orjson gives
    differently, a float for an integer beyond 64 bits, is kept from it by the digit check.
    """
    if _has_long_number(line):
        return _parse_exact(line)
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return _parse_exact(line)


def _long_number_lines(data: bytes, starts: np.ndarray) -> list[int]:
    """The positions of the lines (starting at byte ``starts`` of ``data``) that may hold an
    integer orjson would make a float: a run of 19 digits or more covers an 8-byte word
    (counted from the start of ``data``) of bytes 0x30-0x3f, which is rare otherwise. The
    words are checked a slice at a time, in buffers that stay in the CPU's cache."""
    words = np.frombuffer(data, np.uint64, len(data) // 8)
    step = min(len(words), _CHECK_WORDS)
    if not step:
        return []
    masked = np.empty(step, np.uint64)
    matches = np.empty(step, np.bool_)
    hits = []
    for first in range(0, len(words), step):
        part = words[first : first + step]
        size = len(part)
        np.bitwise_and(part, _HIGH_NIBBLES, out=masked[:size])
        np.equal(masked[:size], _DIGIT_NIBBLES, out=matches[:size])
        if matches[:size].any():
            hits.append(first + np.flatnonzero(matches[:size]))
    if not hits:
        return []
    offsets = np.concatenate(hits) * 8
    return np.unique(np.searchsorted(starts, offsets, side="right") - 1).tolist()


def _packer(code: str, count: int) -> struct.Struct:
    """A struct packing ``count`` native int64 (``q``) or float64 (``d``) values."""
    packer = _PACKERS.get((code, count))
    if packer is None:
        if len(_PACKERS) >= 4096:
            _PACKERS.clear()
        packer = _PACKERS[code, count] = struct.Struct(f"={count}{code}")
    return packer


def _numeric_array_exact(items: list[Any]) -> np.ndarray | None:
    """A list of ints as int64, of ints and floats as float64; None for anything else."""
    kinds = set(map(type, items))
    try:
        if kinds == {int}:
            return np.array(items, np.int64)
        if kinds <= {int, float}:
            return np.array(items, np.float64)
    except OverflowError:
        return None
    return None


def _numeric_array(items: list[Any]) -> np.ndarray | None:
    """``_numeric_array_exact``'s value, packed by ``struct`` rather than converted by numpy.

    ``struct`` refuses anything but ints (``q``: of 64 bits) or ints and floats (``d``), but
    packs bools as numbers: they, and whether a ``d`` list holds a float at all, show in the
    list's JSON text (no ``t`` or ``f`` in numbers; a float has ``.``, ``e`` or, NaN, ``null``).
    """
    count = len(items)
    array = np.empty(count, np.int64)
    try:
        _packer("q", count).pack_into(array, 0, *items)
    except struct.error:
        array = np.empty(count, np.float64)
        try:
            _packer("d", count).pack_into(array, 0, *items)
            text = orjson.dumps(items)
        except (struct.error, OverflowError, TypeError):
            return _numeric_array_exact(items)
        if b"t" in text or b"f" in text:
            return None
        if b"." in text or b"e" in text or b"n" in text:
            return array
        return _numeric_array_exact(items)
    text = orjson.dumps(items)
    if b"t" in text or b"f" in text:
        return None
    return array


def _split_lines(data: memoryview, edges: list[int], first: int, end: int) -> list[bytes]:
    """Lines ``first`` to ``end`` of a block, its lines starting at ``edges`` (then its end);
    a line keeps the blank lines after it. (``bytes`` lines: one allocation each, where a
    bytearray's lines would take two.)"""
    lines = bytes(data[edges[first] : edges[end]]).split(b"\n")
    if not lines[-1]:
        lines.pop()
    if len(lines) == end - first:
        return lines
    return [bytes(data[a:b]) for a, b in itertools.pairwise(edges[first : end + 1])]


def _to_row(value: dict[str, Any]) -> dict[str, Any]:
    """A parsed object as a row: its non-empty numeric lists become numpy arrays."""
    for key, item in value.items():
        if type(item) is list and item:
            array = _numeric_array(item)
            if array is not None:
                value[key] = array
    return value


def _lists_to_arrays(rows: list[dict[str, Any]]) -> None:
    """``_to_row`` for many rows, a key at a time: the int lists of one key in all rows are
    packed into one int64 array by one ``struct`` call, each row getting its slice (a view).
    A row whose list holds a bool keeps its list (``struct`` packs bools as 0 and 1: only
    those values are looked at); a key whose lists are not all ints of 64 bits (floats,
    anything else) is converted row by row."""
    for key, (owners, lists) in _list_columns(rows).items():
        flat: list[Any] = []
        for item in lists:
            flat += item
        array = np.empty(len(flat), np.int64)
        try:
            _packer("q", len(flat)).pack_into(array, 0, *flat)
        except struct.error:
            for row, item in zip(owners, lists, strict=True):
                converted = _numeric_array(item)
                if converted is not None:
                    row[key] = converted
            continue
        lengths = list(map(len, lists))
        ends = list(itertools.accumulate(lengths))
        with_bools = _lists_with_bools(lists, ends, array)
        if lengths.count(lengths[0]) == len(lengths):
            # Rows of one length: iterating the 2-d array makes the views in C.
            views = iter(array.reshape(len(lists), lengths[0]))
        else:
            views = map(array.__getitem__, map(slice, [0, *ends], ends))
        for position, (row, view) in enumerate(zip(owners, views, strict=True)):
            if position not in with_bools:
                row[key] = view


def _list_columns(
    rows: list[dict[str, Any]],
) -> dict[str, tuple[list[dict[str, Any]], list[list[Any]]]]:
    """For each key, the rows whose value there is a non-empty list, and those lists; a key
    at a time (in C) when all rows have the first row's keys, else row by row."""
    keys = rows[0].keys()
    columns: dict[str, tuple[list[dict[str, Any]], list[list[Any]]]] = {}
    if len(set().union(*rows)) == len(keys) and set(map(len, rows)) == {len(keys)}:
        for key in keys:
            values = list(map(operator.itemgetter(key), rows))
            kinds = set(map(type, values))
            if kinds == {list} and all(values):
                columns[key] = (rows, values)
            elif list in kinds:
                owners = [row for row in rows if type(row[key]) is list and row[key]]
                if owners:
                    columns[key] = (owners, [row[key] for row in owners])
        return columns
    for row in rows:
        for key, item in row.items():
            if type(item) is list and item:
                owners, lists = columns.setdefault(key, ([], []))
                owners.append(row)
                lists.append(item)
    return columns


def _lists_with_bools(lists: list[list[Any]], ends: list[int], packed: np.ndarray) -> set[int]:
    """The positions of the lists holding a bool, ``packed`` being all their items (list
    ``i`` ending at ``ends[i]``) packed as int64: only a 0 or a 1 there may be one."""
    small = packed.view(np.uint64) <= 1
    if not small.any():
        return set()
    suspects = np.flatnonzero(small)
    owners = np.searchsorted(ends, suspects, side="right")
    firsts = np.asarray([0, *ends])[owners]
    return {
        owner
        for owner, item in zip(owners.tolist(), (suspects - firsts).tolist(), strict=True)
        if type(lists[owner][item]) is bool
    }


def _content(head: bytes) -> bytes:
    """The first bytes of a file past its byte-order mark and whitespace."""
    return head.removeprefix(codecs.BOM_UTF8).lstrip(_JSON_SPACE)


def _check_format(path: str, head: bytes, jsonl: bool) -> None:
    """Raise ``CorruptShardError`` for a file whose first bytes show the wrong format.

    That is Parquet, or for JSON Lines a JSON array or binary data (a NUL byte in the first
    line): no row of such a file is right, so it is refused whole, never skipped row by row.
    """
    if head.startswith(_PARQUET_MAGIC):
        raise CorruptShardError(
            f"{path!r} is a Parquet file, not JSON.",
            path=path,
            hint="Read it with ParquetShardedSource.",
        )
    if not jsonl:
        return
    start = _content(head)
    if start.startswith(b"["):
        raise CorruptShardError(
            f"{path!r} is a JSON array (it starts with '['), not JSON Lines.",
            path=path,
            hint="Pass jsonl=False to read the elements of a JSON array as rows (in a "
            "pipeline config: the dataset's type: json, or no type, tells them apart).",
        )
    if b"\0" in start.partition(b"\n")[0]:
        raise CorruptShardError(
            f"{path!r} is not JSON Lines text: its first line holds a NUL byte (binary data, "
            "or UTF-16 text).",
            path=path,
            hint="JSON Lines is UTF-8 text; a compressed file needs its extension "
            f"({', '.join(_COMPRESSIONS)}).",
        )


def _read_exact(stream: IO[bytes], size: int, path: str) -> bytes | bytearray:
    """Exactly ``size`` bytes; a stream that ends first no longer matches its index.

    A local file is read into a bytearray: ``RawIOBase.read`` would read into one, then copy.
    """
    if isinstance(stream, io.RawIOBase) and not isinstance(stream, RemoteFile):
        data = bytearray(size)
        with memoryview(data) as view:
            filled = 0
            while filled < size:
                count = stream.readinto(view[filled:])
                if not count:
                    raise _ended_early(path, size - filled)
                filled += count
        return data
    block = stream.read(size)
    while len(block) < size:
        more = stream.read(size - len(block))
        if not more:
            raise _ended_early(path, size - len(block))
        block += more
    return block


def _ended_early(path: str, missing: int) -> CorruptShardError:
    return CorruptShardError(
        f"{path!r} ended {missing} bytes earlier than its index says.",
        path=path,
        hint="The file was truncated or rewritten while in use; open the source again.",
    )


class JsonShardedSource(TransformableSource, FileShardedSource):
    """JSON Lines (or JSON array) files: a path, glob, directory or list; local or gs/s3/az.

    A directory lists the files ending in ``.jsonl``, ``.ndjson`` or ``.json``, optionally
    compressed (``.gz``, ``.bz2``, ``.xz``; ``.zst`` needs the ``zstandard`` package); paths
    and globs are taken as given, and only those extensions mark a file compressed. Each row
    is a JSON object; rows are dicts whose numeric lists (all ints: int64, ints and floats:
    float64) are numpy arrays unless ``numpy_lists=False``; strings stay ``str``, nested
    objects dicts, and empty lists lists (JSON gives them no element type).

    Row ``r`` of a JSON Lines file is its ``r``-th non-blank line. The first time a file is
    read, one sequential pass records where every row starts; that index is cached under
    ``index_cache_dir`` (default ``$EASYDATA_GRAIN_CACHE`` or ``~/.cache/easydata_grain``)
    keyed by the file's URL, size and etag/mtime, so row counts and ``open_shard_at_row`` are
    O(1) afterwards and a rewritten file is indexed again. A cached index is checked before
    it is used (that of an uncompressed file must end at the file's size); one that fails the
    check is logged and rebuilt. In a compressed file a seek must decompress (not parse)
    everything before the row: it is linear, not O(1).

    With ``jsonl=False`` each file holds one JSON array of objects whose elements are the rows;
    it is parsed incrementally (never loaded whole) and the index holds the offset of every
    1024th element, so a seek parses at most 1023 elements.

    JSON Lines are parsed by orjson, ``batch_size`` lines at a time, and numeric lists packed
    into numpy by ``struct`` (the int lists of one key in those rows into one buffer, each
    row's array a view of its own slice); the rows are exactly what Python's ``json`` module makes of the
    lines: what orjson refuses is parsed again by ``json``, so ``NaN``, ``Infinity`` and
    ``-Infinity`` are floats, ``1e400`` is ``inf`` and escaped lone surrogates (``"\\ud800"``)
    stay in the string, while a line holding 19 digits in a row (orjson would make a float
    of an integer beyond 64 bits) is found by a vectorised scan of the bytes and read by
    ``json``, exact. Duplicate keys keep the last value. (JSON array files are parsed by ``json``.)

    A line that is not a JSON object (or not valid UTF-8) raises ``MalformedRowError`` naming
    file, line and row. With ``on_bad_row="skip"`` it is left out instead, counted in
    ``stats.skipped_rows`` and listed in ``skipped`` (the latest 1000). A skipped row keeps its
    number: rows are numbered before skipping, ``num_rows`` counts them all, and
    ``open_shard_at_row(s, r)`` yields the rows numbered ``r`` and above that ``open_shard(s)``
    yields; ``stats.rows`` counts skipped rows too. (Syntax errors in a JSON array cannot be
    skipped: without line breaks there is no telling where the next element starts; nor can
    an element that is not valid UTF-8, which raises ``MalformedRowError`` naming it.)

    Empty files, files without any row, and files of another format raise
    ``CorruptShardError`` when they are indexed, whatever ``on_bad_row``: a Parquet file (by
    its magic bytes, whatever its name) and, with ``jsonl=True``, a JSON array (a file whose
    first byte past whitespace is ``[``: pass ``jsonl=False``) or binary data (a NUL byte in
    the first line).
    """

    suffixes: ClassVar[tuple[str, ...]] = tuple(
        base + compression
        for base in (".jsonl", ".ndjson", ".json")
        for compression in ("", *_COMPRESSIONS)
    )
    block_size: ClassVar[int] = 4 << 20
    """Bytes per read: one request on an object store."""
    checkpoint_every: ClassVar[int] = 1024
    """In a JSON array, one element in this many has its offset indexed."""
    skipped_kept: ClassVar[int] = 1000

    def __init__(
        self,
        paths: str | Sequence[str],
        jsonl: bool = True,
        storage_options: dict[str, Any] | None = None,
        *,
        retry: RetryPolicy | None = None,
        share_listing: bool = True,
        metadata_sharing: MetadataSharing | None = None,
        on_bad_row: Literal["raise", "skip"] = "raise",
        index_cache_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        numpy_lists: bool = True,
    ):
        if not isinstance(jsonl, bool):
            raise TypeError(f"jsonl must be True or False, got {jsonl!r}")
        if on_bad_row not in ("raise", "skip"):
            raise ValueError(f'on_bad_row must be "raise" or "skip", got {on_bad_row!r}')
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.jsonl = jsonl
        self.on_bad_row = on_bad_row
        self.batch_size = batch_size
        self.numpy_lists = bool(numpy_lists)
        self.index_cache_dir = os.fspath(index_cache_dir or default_cache_dir())
        self.skipped: deque[SkippedRow] = deque(maxlen=self.skipped_kept)
        self._cache = IndexCache(self.index_cache_dir)
        super().__init__(
            paths,
            storage_options,
            retry=retry,
            share_listing=share_listing,
            metadata_sharing=metadata_sharing,
        )
        if "zstd" not in fsspec.compression.compr:
            zstd_files = [p for p in self._shards if compression_of(p) == "zstd"]
            if zstd_files:
                raise ImportError(
                    f"Reading {zstd_files[0]!r} ({len(zstd_files)} .zst files in all) needs "
                    "the zstandard package: pip install zstandard."
                )

    def _settings(self) -> list[Any]:
        return [self.jsonl, self.on_bad_row, self.numpy_lists]

    @property
    def skips_rows(self) -> bool:
        """Whether bad rows are left out (``on_bad_row="skip"``) rather than raised."""
        return self.on_bad_row == "skip"

    def open_shard_at_row(self, shard: str, row: int) -> Iterator[Row]:
        """Iterate over the rows of ``shard`` from ``row`` on (skipped rows left out)."""
        rows = self.rows_with_gaps(shard, row)
        if self.on_bad_row == "skip":
            return (r for r in rows if not is_skipped(r))
        return rows

    # -- the index --------------------------------------------------------------------------

    def _read_meta(self, path: str) -> ShardMeta:
        info = self._info(path)
        identity = file_identity(info)
        url = f"{self.protocol}://{self._key(path)}"
        index_type = LineIndex if self.jsonl else ArrayIndex
        kind = "lines" if self.jsonl else f"array-{self.checkpoint_every}"
        # The decompressed length of a compressed file is unknown: its index is checked less.
        stream_size = None if compression_of(path) else info["size"]
        parse = functools.partial(index_type.from_arrays, size=stream_size)
        index = self._cache.load(url, identity, kind, parse)
        if index is None:
            index = self._scan(path, info["size"])
            if index.num_rows:
                self._cache.save(url, identity, kind, index.to_arrays())
        if not index.num_rows:
            raise CorruptShardError(
                f"{path!r} holds no rows ({'only blank lines' if self.jsonl else 'an empty array'}).",
                path=path,
                hint="Remove it or rewrite it; training on it would silently use less data.",
            )
        return ShardMeta(
            num_rows=index.num_rows, schema=None, identity=identity, size=info["size"], index=index
        )

    def _scan(self, path: str, size: int) -> LineIndex | ArrayIndex:
        """Build a file's index in one sequential pass, checking its format by its first bytes."""
        with self._stream(path, size, 0) as stream:
            head = b""
            while len(_content(head)) < len(_PARQUET_MAGIC) and (
                block := stream.read(self.block_size)
            ):
                head += block
            _check_format(path, head, self.jsonl)
            if self.jsonl:
                blocks = iter(functools.partial(stream.read, self.block_size), b"")
                return scan_lines(itertools.chain([head], blocks))
            return scan_array(
                stream, path, head=head, block_size=self.block_size, every=self.checkpoint_every
            )

    @contextlib.contextmanager
    def _stream(self, path: str, size: int, offset: int) -> Iterator[IO[bytes]]:
        """The file's (decompressed) bytes from ``offset`` on; bad compressed data is corrupt."""
        codec = compression_of(path)
        with contextlib.ExitStack() as stack:
            raw = stack.enter_context(self._open(path, size))
            if codec is None:
                raw.seek(offset)
                self._count_reads(stack, raw)
                yield raw
                return
            try:
                # The decompressors read small pieces: buffer them into one request per block.
                buffered = stack.enter_context(io.BufferedReader(raw, self.block_size))
                stream = stack.enter_context(fsspec.compression.compr[codec](buffered, mode="rb"))
                self._count_reads(stack, raw)
                while offset:
                    offset -= len(_read_exact(stream, min(offset, self.block_size), path))
                yield stream
            except (EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
                if is_storage_fault(exc):
                    raise
                raise CorruptShardError(
                    f"{path!r} is not a valid {codec} file: {type(exc).__name__}: {exc}.",
                    path=path,
                    hint="It is truncated or corrupt; rewrite or remove it.",
                ) from exc

    def _count_reads(self, stack: contextlib.ExitStack, raw: IO[bytes]) -> None:
        """Count the bytes read from a local file from now until ``stack`` closes (before the
        file does); a ``RemoteFile`` counts its own."""
        if not isinstance(raw, RemoteFile):
            start = raw.tell()
            stack.callback(lambda: self.stats.add(bytes_read=raw.tell() - start))

    # -- the rows -----------------------------------------------------------------------------

    def _read_chunks(self, path: str, meta: ShardMeta, row: int) -> Iterator[list[Row]]:
        index: LineIndex | ArrayIndex = meta.index
        if row >= index.num_rows:
            return
        pieces = (
            self._line_pieces(path, meta.size, index, row)
            if self.jsonl
            else self._element_pieces(path, meta.size, index, row)
        )
        # Pieces end at every batch_size-th row from ``row`` (and at block ends): a chunk is
        # one piece or several, and a bad row raises once the chunks before it are delivered.
        chunk: list[Any] = []
        skipped: list[SkippedRow] = []
        for values, bad in pieces:
            first = row + len(chunk)
            for position in bad:
                values[position] = self._bad_row(
                    path, index, first + position, values[position], skipped
                )
            if chunk:
                chunk.extend(values)
            else:
                chunk = values
            if len(chunk) >= self.batch_size:
                self._report_skipped(path, skipped)
                yield chunk
                row += len(chunk)
                chunk, skipped = [], []
        if chunk:
            self._report_skipped(path, skipped)
            yield chunk

    def _line_pieces(
        self, path: str, size: int, index: LineIndex, row: int
    ) -> Iterator[tuple[list[Any], list[int]]]:
        """The rows of a JSON Lines file from ``row`` on, a block of lines per read, in pieces
        of at most ``batch_size`` rows (ending where chunks from ``row`` end): each piece with
        the positions of its values that are not rows (not objects, ``_BadLine``s)."""
        bounds = index.bounds
        start = row
        with self._stream(path, size, int(bounds[row])) as stream:
            while row < index.num_rows:
                target = int(bounds[row]) + self.block_size
                stop = int(np.searchsorted(bounds, target, side="right")) - 1
                stop = min(index.num_rows, max(row + 1, stop))
                starts = bounds[row : stop + 1] - bounds[row]
                data = _read_exact(stream, int(starts[-1]), path)
                suspects = _long_number_lines(data, starts[:-1])
                # A line orjson parses that starts with "{" is an object: no need to look.
                objects = bool((np.frombuffer(data, np.uint8)[starts[:-1]] == _OPEN_BRACE).all())
                edges = starts.tolist()
                view = memoryview(data)
                position = 0
                while position < stop - row:
                    size_left = self.batch_size - (row + position - start) % self.batch_size
                    end = min(stop - row, position + size_left)
                    careful = bisect.bisect_left(suspects, position) < bisect.bisect_left(
                        suspects, end
                    )
                    lines = _split_lines(view, edges, position, end)
                    yield self._parse_piece(lines, careful, objects)
                    position = end
                row = stop

    def _parse_piece(
        self, lines: list[bytes], careful: bool, objects: bool
    ) -> tuple[list[Any], list[int]]:
        """Parse lines to rows, all at once with orjson while every line is an object (known
        when ``objects``) and none holds a long integer (``careful`` when one may), else line
        by line as ``_parse_line`` says."""
        if not careful:
            try:
                values = list(map(orjson.loads, lines))
            except orjson.JSONDecodeError:
                pass
            else:
                if objects or all(type(value) is dict for value in values):
                    if self.numpy_lists:
                        _lists_to_arrays(values)
                    return values, []
        return self._rows_or_bad(list(map(_parse_line, lines)))

    def _rows_or_bad(self, values: list[Any]) -> tuple[list[Any], list[int]]:
        """Objects made rows, and the positions of the other values."""
        bad = []
        for position, value in enumerate(values):
            if type(value) is dict:
                values[position] = self._row(value)
            else:
                bad.append(position)
        return values, bad

    def _element_pieces(
        self, path: str, size: int, index: ArrayIndex, row: int
    ) -> Iterator[tuple[list[Any], list[int]]]:
        """The elements of a JSON array file from ``row`` on, ``batch_size`` at a time."""
        elements = self._elements(path, size, index, row)
        while piece := list(itertools.islice(elements, self.batch_size)):
            yield self._rows_or_bad(piece)

    def _elements(self, path: str, size: int, index: ArrayIndex, row: int) -> Iterator[Any]:
        """The elements of a JSON array file from ``row`` on, from the checkpoint before it."""
        checkpoint = row // index.every
        offset = int(index.checkpoints[checkpoint])
        with self._stream(path, size, offset) as stream:
            elements = ArrayElements(
                stream,
                path,
                block_size=self.block_size,
                offset=offset,
                element=checkpoint * index.every,
            )
            yield from itertools.islice(elements, row - checkpoint * index.every, None)

    def _row(self, value: dict[str, Any]) -> Row:
        """A parsed object as a row: numeric lists become numpy arrays."""
        return _to_row(value) if self.numpy_lists else value

    def _bad_row(
        self,
        path: str,
        index: LineIndex | ArrayIndex,
        row: int,
        value: Any,
        skipped: list[SkippedRow],
    ) -> object:
        """Raise ``MalformedRowError`` for a row that is not an object, or note it as skipped;
        a bad first row of a file that is not JSON Lines at all raises ``CorruptShardError``."""
        if isinstance(value, _BadLine):
            reason, raw = value.reason, value.text
        else:
            reason = f"not a JSON object but {_JSON_TYPES.get(type(value), json.dumps(value))}"
            raw = json.dumps(value).encode()
        if self.jsonl and row == 0:
            # The index may have been cached before the file's format was checked.
            _check_format(path, raw, jsonl=True)
        text = raw.decode(errors="replace").strip()
        if self.on_bad_row == "raise":
            raise MalformedRowError(
                f"{path!r} {index.location(row)} is {reason}: {text[:_SNIPPET]!r}.",
                path=path,
                row=row,
                hint='Fix the row, or pass on_bad_row="skip" to leave bad rows out (they are '
                "counted in source.stats.skipped_rows and listed in source.skipped).",
            )
        line = index.line_number(row) if isinstance(index, LineIndex) else None
        placeholder = SkippedRow(path, row, line)
        skipped.append(placeholder)
        return placeholder

    def _report_skipped(self, path: str, skipped: list[SkippedRow]) -> None:
        """Count and list the rows skipped in a chunk, once it is delivered."""
        if not skipped:
            return
        self.stats.add(skipped_rows=len(skipped))
        self.skipped.extend(skipped)
        logger.warning(
            "Skipped %d malformed row(s) of %s: %s",
            len(skipped),
            path,
            ", ".join(f"row {s.row}" + (f" (line {s.line})" if s.line else "") for s in skipped),
        )
