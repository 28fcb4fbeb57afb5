"""Small dataset repos shaped like real Hub datasets, served by ops/hub_emulator.py.

Each function writes one repo under an emulator root with :func:`~ops.hub_emulator.make_repo`
and returns a :class:`ShapedRepo`: the repo id and the rows each subset and split holds, in
the order ``datasets`` streams them. Layouts, file names, columns and README ``configs:``
follow the real repos; the contents are generated (a few hundred rows each).
"""

from __future__ import annotations

import gzip
import io
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ops.hub_emulator import make_repo

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class ShapedRepo:
    """A generated repo: its id and its rows by (subset, split)."""

    repo_id: str
    rows: dict[tuple[str, str], Rows]


def parquet_bytes(rows: Rows, row_group_size: int | None = None) -> bytes:
    """``rows`` as a Parquet file."""
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out, row_group_size=row_group_size)
    return out.getvalue()


def _jsonl_gz(rows: Rows) -> bytes:
    """``rows`` as gzipped JSON lines, datetimes as C4 writes them (``2019-04-25T12:57:54Z``)."""

    def encode(value: Any) -> str:
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")

    lines = "".join(json.dumps(row, default=encode) + "\n" for row in rows)
    return gzip.compress(lines.encode(), mtime=0)


def _train_split(config_name: str, path: str, **extra: Any) -> dict[str, Any]:
    return {"config_name": config_name, "data_files": [{"split": "train", "path": path}], **extra}


def fineweb_like(
    root: str | os.PathLike[str], repo_id: str = "hub-emulator/fineweb", rows_per_shard: int = 40
) -> ShapedRepo:
    """FineWeb: Parquet shards ``data/CC-MAIN-*/000_0000i.parquet``, a config per dump.

    Subsets: ``default`` (every dump) and one per dump, each with a ``train`` split.
    """
    dumps = ("CC-MAIN-2013-20", "CC-MAIN-2024-10")
    files, by_dump = {}, {}
    for dump in dumps:
        by_dump[dump] = []
        for shard in range(2):
            rows = [
                {
                    "text": f"{dump} shard {shard} document {i}",
                    "id": f"<urn:uuid:{dump}-{shard}-{i}>",
                    "dump": dump,
                    "url": f"https://example.com/{dump}/{shard}/{i}",
                    "language": "en",
                    "language_score": 0.9 + i / 1000,
                    "token_count": 5 + i,
                }
                for i in range(rows_per_shard)
            ]
            files[f"data/{dump}/000_{shard:05d}.parquet"] = parquet_bytes(rows, row_group_size=16)
            by_dump[dump] += rows
    configs = [_train_split("default", "data/*/*")]
    configs += [_train_split(dump, f"data/{dump}/*") for dump in dumps]
    make_repo(root, repo_id, files, readme_yaml={"license": "odc-by", "configs": configs})
    all_rows = [row for dump in dumps for row in by_dump[dump]]
    rows = {("default", "train"): all_rows} | {(d, "train"): by_dump[d] for d in dumps}
    return ShapedRepo(repo_id, rows)


def the_stack_like(
    root: str | os.PathLike[str], repo_id: str = "hub-emulator/the-stack", rows_per_file: int = 30
) -> ShapedRepo:
    """The Stack: a ``data_dir`` per language (``data/python/``, ``data/rust/``) of Parquet files.

    Subsets: ``python`` and ``rust`` (README ``configs:``), also reachable as
    ``data_dir="data/python"``; the ``default`` subset holds every language.
    """
    languages = {"python": "py", "rust": "rs"}
    files, by_language = {}, {}
    for language, ext in languages.items():
        by_language[language] = []
        for part in range(2):
            rows = [
                {
                    "hexsha": f"{language}{part:02d}{i:036d}",
                    "max_stars_repo_path": f"src/{part}/file_{i}.{ext}",
                    "lang": language.capitalize(),
                    "size": 100 + i,
                    "content": f"// {language} file {part}/{i}\n",
                }
                for i in range(rows_per_file)
            ]
            files[f"data/{language}/train-{part:05d}-of-00002.parquet"] = parquet_bytes(rows)
            by_language[language] += rows
    configs = [_train_split("default", "data/*/*", default=True)]
    configs += [_train_split(language, f"data/{language}/*") for language in languages]
    make_repo(root, repo_id, files, readme_yaml={"configs": configs})
    all_rows = [row for language in languages for row in by_language[language]]
    rows = {("default", "train"): all_rows} | {
        (lang, "train"): by_language[lang] for lang in languages
    }
    return ShapedRepo(repo_id, rows)


def c4_like(
    root: str | os.PathLike[str], repo_id: str = "hub-emulator/c4", rows_per_file: int = 50
) -> ShapedRepo:
    """C4: the ``en`` subset as JSON lines, ``en/c4-train.0000i-of-00002.json.gz`` and
    ``en/c4-validation.00000-of-00001.json.gz`` (timestamps stream back as datetimes)."""

    def rows_of(split: str, part: int) -> Rows:
        return [
            {
                "text": f"{split} {part} text {i}",
                "timestamp": datetime(2019, 4, 10 + part, 12, i % 60, 7),
                "url": f"https://c4.example/{split}/{part}/{i}",
            }
            for i in range(rows_per_file)
        ]

    counts = {"train": 2, "validation": 1}
    rows, files = {}, {}
    for split, n in counts.items():
        rows[("en", split)] = []
        for part in range(n):
            part_rows = rows_of(split, part)
            files[f"en/c4-{split}.{part:05d}-of-{n:05d}.json.gz"] = _jsonl_gz(part_rows)
            rows[("en", split)] += part_rows
    data_files = [{"split": s, "path": f"en/c4-{s}.*.json.gz"} for s in counts]
    configs = [{"config_name": "en", "default": True, "data_files": data_files}]
    make_repo(root, repo_id, files, readme_yaml={"configs": configs})
    return ShapedRepo(repo_id, rows)


def alpaca_like(
    root: str | os.PathLike[str], repo_id: str = "hub-emulator/alpaca", num_rows: int = 120
) -> ShapedRepo:
    """Alpaca: one file ``data/train-00000-of-00001-*.parquet`` (instruction, input, output,
    text), no ``configs:`` (the split comes from the file name), and a Parquet export
    (``refs/convert/parquet``: ``default/train/0000.parquet``)."""
    rows = [
        {
            "instruction": f"Instruction {i}",
            "input": "" if i % 3 else f"input {i}",
            "output": f"Output {i}",
            "text": f"### Instruction:\nInstruction {i}\n\n### Response:\nOutput {i}",
        }
        for i in range(num_rows)
    ]
    data = parquet_bytes(rows)
    features = [{"name": name, "dtype": "string"} for name in rows[0]]
    card = {
        "license": "cc-by-nc-4.0",
        "dataset_info": {
            "features": features,
            "splits": [{"name": "train", "num_bytes": len(data), "num_examples": num_rows}],
        },
    }
    make_repo(
        root,
        repo_id,
        {"data/train-00000-of-00001-a09b74b3ef9c3b56.parquet": data},
        readme_yaml=card,
        parquet_export={"default/train/0000.parquet": data},
    )
    return ShapedRepo(repo_id, {("default", "train"): rows})
