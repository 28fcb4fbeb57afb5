"""Benchmark HuggingFaceShardedSource against ``datasets`` streaming, in one run, on the Hub
emulator serving a generated repo of 1M rows.

    .venv/bin/python -m ops.bench_hub                   # 1,000,000 rows, 8 Parquet shards
    .venv/bin/python -m ops.bench_hub --rows 200000     # quicker

The emulator (ops/hub_emulator.py) runs in its own process behind a FaultProxy that injects
nothing and counts requests and response bytes, so the clients share no GIL with the server.
Printed, each against ``datasets.load_dataset(..., streaming=True)`` in the same run:

- rows/s for one epoch through the loader (batch 256, shuffle window ``--shuffle``) against
  ``datasets``' ``.shuffle(buffer_size)`` iterated by ``.iter(batch_size=256)``, with the
  requests and bytes each read over the epoch;
- time from a state saved at 1%, 50% and 99% of the epoch to the first batch in a new
  process's reader: our ``set_state`` against ``datasets``' ``load_state_dict`` (which replays
  the current shard up to its saved row);
- a new process's start (construction to first batch) with an empty cache (cold) and with the
  cache the previous start filled (warm), with the requests each made.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ID = "bench/hub-1m"
BATCH = 256
_SHARDS = 8


# -- the repo and its server -------------------------------------------------------------------


def _rows(start: int, count: int) -> Any:
    import numpy as np
    import pyarrow as pa

    ids = np.arange(start, start + count, dtype=np.int64)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    text = [
        " ".join(words[(i + k) % 8] for k in range(8 + i % 24)) for i in range(start, start + count)
    ]
    return pa.table({"id": ids, "text": text, "score": ids.astype(np.float32) / 7})


def generate(root: Path, rows: int) -> None:
    """A FineWeb-like repo of ``rows`` rows in 8 Parquet shards (row groups of 10,000)."""
    import pyarrow.parquet as pq

    from ops.hub_emulator import make_repo

    marker = root / f".complete-{rows}"
    if marker.exists():
        return
    print(f"generating {rows:,} rows in {_SHARDS} Parquet shards under {root} ...", flush=True)
    files: dict[str, bytes] = {}
    per_shard = rows // _SHARDS
    for shard in range(_SHARDS):
        out = io.BytesIO()
        pq.write_table(_rows(shard * per_shard, per_shard), out, row_group_size=10_000)
        files[f"data/train-{shard:05d}-of-{_SHARDS:05d}.parquet"] = out.getvalue()
    make_repo(root, REPO_ID, files)
    marker.touch()


def serve(root: str) -> None:
    """Serve ``root`` behind a counting proxy; print its URL, then answer ``stats`` and
    ``reset`` lines on stdin with JSON lines."""
    from ops.fault_proxy import FaultProxy
    from ops.hub_emulator import HubEmulator

    with HubEmulator(root) as hub, FaultProxy(hub.url) as proxy:
        print(proxy.url, flush=True)
        for line in sys.stdin:
            if line.strip() == "reset":
                proxy.reset_counters()
                hub.reset_counters()
            counts = {
                "requests": proxy.request_count,
                "bytes": proxy.body_bytes_sent,
                "listings": hub.count("tree") + hub.count("paths-info"),
                "resolve": hub.count("resolve"),
            }
            print(json.dumps(counts), flush=True)


class Server:
    """The emulator process: ``counts()`` since the last ``reset()``."""

    def __init__(self, root: Path) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "ops.bench_hub", "serve", str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        assert self._process.stdout is not None
        self.url = self._process.stdout.readline().strip()

    def _ask(self, command: str) -> dict[str, int]:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return json.loads(self._process.stdout.readline())

    def reset(self) -> None:
        self._ask("reset")

    def counts(self) -> dict[str, int]:
        return self._ask("stats")

    def close(self) -> None:
        self._process.terminate()
        self._process.wait()


# -- the two readers ---------------------------------------------------------------------------


def _ours(shuffle: int, cache_dir: str | None = None) -> Any:
    from easydata_grain import AsyncDataLoader, HuggingFaceShardedSource

    source = HuggingFaceShardedSource(REPO_ID, cache_dir=cache_dir)
    return AsyncDataLoader(source, batch_size=BATCH, shuffle_buffer_size=shuffle, seed=0)


def _theirs(shuffle: int) -> Any:
    import datasets

    stream = datasets.load_dataset(REPO_ID, split="train", streaming=True)
    return stream.shuffle(seed=0, buffer_size=shuffle) if shuffle else stream


def _rows_in(batch: dict[str, Any]) -> int:
    return len(batch["id"])


def epoch(server: Server, shuffle: int, total: int) -> list[dict[str, Any]]:
    """One epoch of each reader: rows/s, requests and bytes."""
    _ours(shuffle), _theirs(shuffle)  # imports and first resolutions, outside the timings
    results = []
    for name, batches in (
        ("easydata loader, batch 256, shuffle on", lambda: iter(_ours(shuffle))),
        (
            f"datasets streaming .shuffle({shuffle}).iter(256)",
            lambda: _theirs(shuffle).iter(batch_size=BATCH),
        ),
        ("datasets streaming, no shuffle, .iter(256)", lambda: _theirs(0).iter(batch_size=BATCH)),
    ):
        server.reset()
        start = time.perf_counter()
        rows = sum(_rows_in(batch) for batch in batches())
        seconds = time.perf_counter() - start
        assert rows == total, f"{name}: {rows} rows, expected {total}"
        results.append({"reader": name, "rows/s": rows / seconds, **server.counts()})
    return results


def _saved(batches: Any, get_state: Any, stops: list[int]) -> list[tuple[Any, int]]:
    """The state after each stop (a batch number) and the first id of the batch after it."""
    saved, pending = [], None
    for i, batch in enumerate(batches, 1):
        if pending is not None:
            saved.append((pending, int(batch["id"][0])))
            pending = None
            if len(saved) == len(stops):
                break
        if i in stops:
            pending = get_state()
    return saved


def _states(shuffle: int, total_batches: int, fractions: list[float]) -> dict[str, Any]:
    """Our loader's and ``datasets``' states after each fraction of an epoch, and the first id
    of the batch each should continue with."""
    stops = sorted({min(total_batches - 1, max(1, int(f * total_batches))) for f in fractions})
    loader = _ours(shuffle)
    stream = _theirs(shuffle)
    return {
        "stops": stops,
        "ours": _saved(loader, loader.get_state, stops),
        "theirs": _saved(stream.iter(batch_size=BATCH), stream.state_dict, stops),
    }


def resume_child(reader: str, state_file: str, shuffle: int) -> None:
    """In a new process: build ``reader``, restore its state, take one batch; print seconds."""
    state, first_id = pickle.loads(Path(state_file).read_bytes())
    start = time.perf_counter()
    if reader == "ours":
        loader = _ours(shuffle)
        built = time.perf_counter()
        loader.set_state(state)
        batch = next(iter(loader))
    else:
        stream = _theirs(shuffle)
        built = time.perf_counter()
        stream.load_state_dict(state)
        batch = next(iter(stream.iter(batch_size=BATCH)), None)  # None: the rest was lost
    end = time.perf_counter()
    exact = batch is not None and int(batch["id"][0]) == first_id
    print(json.dumps({"build": built - start, "restore": end - built, "exact": exact}))


def _child(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "ops.bench_hub", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    if result.returncode:
        raise SystemExit(f"{args[0]} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def resume(server: Server, shuffle: int, total: int, fractions: list[float]) -> None:
    total_batches = -(-total // BATCH)
    saved = _states(shuffle, total_batches, fractions)
    print(
        f"\nresume, in a new process (warm HF_HOME): build the reader, restore a state saved "
        f"after a fraction of the epoch, take one batch (shuffle window {shuffle})"
    )
    print(
        f"{'reader':<10} {'at':>6} {'build s':>8} {'restore+batch s':>16} {'requests':>9} "
        f"{'same next batch':>16}"
    )
    with tempfile.TemporaryDirectory() as work:
        for reader in ("ours", "theirs"):
            for stop, state in zip(saved["stops"], saved[reader], strict=True):
                path = Path(work) / f"{reader}-{stop}.pkl"
                path.write_bytes(pickle.dumps(state))
                server.reset()
                timing = _child(["resume-child", reader, str(path), str(shuffle)])
                print(
                    f"{reader:<10} {stop / total_batches:>6.0%} {timing['build']:>8.3f} "
                    f"{timing['restore']:>16.3f} {server.counts()['requests']:>9} "
                    f"{'yes' if timing['exact'] else 'NO':>16}"
                )


def start_child(cache_dir: str) -> None:
    """In a new process: construct the source with ``cache_dir`` and take one batch."""
    start = time.perf_counter()
    loader = _ours(0, cache_dir=cache_dir)
    next(iter(loader))
    print(json.dumps({"seconds": time.perf_counter() - start}))


def starts(server: Server) -> None:
    print("\nstart of a new process: construct, first batch (no shuffle)")
    print(f"{'start':<32} {'seconds':>8} {'requests':>9} {'listings':>9} {'bytes':>12}")
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "HF_HOME": home}
        for label in ("cold (empty cache_dir, HF_HOME)", "warm (the same, filled)"):
            server.reset()
            timing = _child(["start-child", cache], env)
            counts = server.counts()
            print(
                f"{label:<32} {timing['seconds']:>8.3f} {counts['requests']:>9} "
                f"{counts['listings']:>9} {counts['bytes']:>12,}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--shuffle", type=int, default=10_000, help="shuffle window / buffer")
    parser.add_argument("--root", default="/tmp/easydata-bench-hub")
    parser.add_argument("--skip", nargs="*", default=[], choices=["epoch", "resume", "start"])
    args = parser.parse_args()
    root = Path(args.root) / str(args.rows)
    generate(root, args.rows)
    server = Server(root)
    home = tempfile.mkdtemp(prefix="bench-hf-home-")
    from ops.hub_emulator import client_environment

    client_environment(server.url, home, os.environ)
    total = (args.rows // _SHARDS) * _SHARDS
    try:
        if "epoch" not in args.skip:
            print(
                f"\none epoch of {total:,} rows over HTTP from the emulator (shuffle {args.shuffle})"
            )
            results = epoch(server, args.shuffle, total)
            ours = results[0]["rows/s"]
            print(f"{'reader':<46} {'rows/s':>10} {'ours/x':>7} {'requests':>9} {'MB':>8}")
            for r in results:
                print(
                    f"{r['reader']:<46} {r['rows/s']:>10,.0f} {ours / r['rows/s']:>6.2f}x "
                    f"{r['requests']:>9} {r['bytes'] / 1e6:>8.1f}"
                )
        if "resume" not in args.skip:
            resume(server, args.shuffle, total, [0.01, 0.5, 0.99])
        if "start" not in args.skip:
            starts(server)
    finally:
        server.close()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "resume-child":
        resume_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif len(sys.argv) > 1 and sys.argv[1] == "start-child":
        start_child(sys.argv[2])
    else:
        main()
