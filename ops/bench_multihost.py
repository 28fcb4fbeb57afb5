"""Benchmark the multi-host start: time to the first global batch, and metadata requests per host.

    .venv/bin/python -m ops.bench_multihost                    # local disk and the S3 emulator
    .venv/bin/python -m ops.bench_multihost --store s3 --shards 256 --repeats 3

Runs ``tpu_scripts/train_example.py`` as a simulated slice (``tpu_scripts/simulate_multihost.py``:
N CPU processes under ``jax.distributed``, one CPU device each) for a few steps, and prints:

1. the time from process launch to the first global batch on 1 host and on 4 hosts (the
   slowest host; the first batch is a collective, so all hosts get it at about the same time),
   median over ``--repeats``, with when the hosts had joined the slice (imports and
   ``jax.distributed``) and how long building the loader took (listing and footers);
2. on the S3 emulator, the HTTP requests each host made to list the files and read their
   footers (each host talks to the store through its own ``ops.fault_proxy.FaultProxy``; the
   source's own ``stats`` count is shown too), with the shared listing (host 0 lists and reads
   footers, then broadcasts) and with ``share_listing=False`` (every host does it all).

All simulated hosts share this machine's cores, so on a small machine 4 hosts also start more
slowly because their imports and compilations compete for the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from easydata_grain.synthetic import write_parquet_dataset  # noqa: E402
from ops.emulators import StoreEndpoint, start_emulator  # noqa: E402
from ops.fault_proxy import FaultProxy  # noqa: E402
from tpu_scripts.simulate_multihost import events, read_logs, run_slice  # noqa: E402

GLOBAL_BATCH = 32
STEPS = 3


def run_case(
    work: Path,
    name: str,
    hosts: int,
    data: str,
    storage_options: dict[str, Any] | None = None,
    *,
    share_listing: bool = True,
    steps: int = STEPS,
    host_args: dict[int, list[str]] | None = None,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """One simulated slice for ``steps`` steps; its start-up timings and requests per host."""
    log = work / f"log-{name}"
    args = [
        "--data",
        data,
        "--global-batch",
        str(GLOBAL_BATCH),
        "--seq-len",
        "32",
        "--shuffle-buffer",
        "1024",
        "--steps",
        str(steps),
        "--log",
        str(log),
        "--storage-options",
        json.dumps(storage_options or {}),
    ]
    if not share_listing:
        args.append("--no-share-listing")
    result = run_slice(
        hosts, args, timeout=timeout, work_dir=work / f"work-{name}", host_args=host_args
    )
    if not result.ok:
        raise SystemExit(f"{name} failed:\n{result.describe()}")
    logs = read_logs(log)
    first = [records[0] for records in events(logs, "first_batch").values() if records]
    start = [records[0] for records in events(logs, "start").values()]
    return {
        "hosts": hosts,
        "share_listing": share_listing,
        "first_batch_s": max((r["since_launch_s"] for r in first), default=None),
        "ready_s": max(r["ready_s"] for r in start),
        "joined_s": max(r["joined_s"] for r in start),
        "loader_s": max(r["loader_s"] for r in start),
        "requests_per_host": [r["source_requests"] for r in sorted(start, key=lambda r: r["host"])],
        "wall_s": result.elapsed_s,
    }


def first_batch_times(
    work: Path, store: str, data: str, options: dict[str, Any], repeats: int
) -> list[dict[str, Any]]:
    """Time to the first global batch on 1 and 4 hosts (medians over ``repeats``)."""
    rows = []
    for hosts in (1, 4):
        cases = [
            run_case(work, f"{store}-{hosts}-{i}", hosts, data, options) for i in range(repeats)
        ]
        rows.append(
            {
                "store": store,
                "hosts": hosts,
                "first_batch_s": statistics.median(c["first_batch_s"] for c in cases),
                "ready_s": statistics.median(c["ready_s"] for c in cases),
                "joined_s": statistics.median(c["joined_s"] for c in cases),
                "loader_s": statistics.median(c["loader_s"] for c in cases),
                "requests_per_host": cases[0]["requests_per_host"],
            }
        )
        print(
            f"{store:>5}  {hosts} host(s): first global batch {rows[-1]['first_batch_s']:.2f}s "
            f"after launch; joined the slice at {rows[-1]['joined_s']:.2f}s, built the loader "
            f"(listing, footers) in {rows[-1]['loader_s']:.2f}s; median of {repeats}",
            flush=True,
        )
    return rows


def listing_requests(work: Path, data: str, endpoint: StoreEndpoint) -> list[dict[str, Any]]:
    """Requests per host to list and read footers on 4 hosts, shared listing on and off.

    Counted by each host's source (``stats``) and as HTTP requests: every host reaches the
    store through its own ``FaultProxy``. No batch is read (``--steps 0``).
    """
    rows = []
    for share in (True, False):
        proxies = [FaultProxy(endpoint.url) for _ in range(4)]
        try:
            host_args = {
                h: ["--storage-options", json.dumps(endpoint.storage_options(p.url))]
                for h, p in enumerate(proxies)
            }
            case = run_case(
                work,
                f"requests-{share}",
                4,
                data,
                share_listing=share,
                steps=0,
                host_args=host_args,
            )
            http = [p.request_count for p in proxies]
        finally:
            for proxy in proxies:
                proxy.close()
        rows.append(
            {
                "share_listing": share,
                "requests_per_host": case["requests_per_host"],
                "http_requests_per_host": http,
                "loader_s": case["loader_s"],
            }
        )
        print(
            f"   s3  4 hosts, share_listing={share!s:5}: HTTP requests per host to list and read "
            f"footers {http} (total {sum(http)}; the sources counted "
            f"{case['requests_per_host']}); loader built in {case['loader_s']:.2f}s",
            flush=True,
        )
    return rows


def main() -> None:
    """Command line."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", nargs="+", choices=["local", "s3"], default=["local", "s3"])
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--rows", type=int, default=1000, help="rows per shard")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    print(f"{os.cpu_count()} CPU cores shared by all simulated hosts", flush=True)
    report: dict[str, Any] = {"cpu_cores": os.cpu_count(), "shards": args.shards}
    with tempfile.TemporaryDirectory(prefix="bench-multihost-") as tmp:
        work = Path(tmp)
        paths = write_parquet_dataset(
            work / "data",
            num_shards=args.shards,
            rows_per_shard=args.rows,
            row_group_size=250,
            max_tokens=64,
        )
        report["first_batch"] = []
        if "local" in args.store:
            report["first_batch"] += first_batch_times(
                work, "local", str(work / "data" / "*.parquet"), {}, args.repeats
            )
        if "s3" in args.store:
            with start_emulator("s3") as emulator:
                endpoint = emulator.endpoint
                bucket = endpoint.new_bucket()
                for path in paths:
                    endpoint.upload(path, f"{bucket}/train/{Path(path).name}")
                url, options = f"{bucket}/train/*.parquet", endpoint.storage_options()
                report["first_batch"] += first_batch_times(work, "s3", url, options, args.repeats)
                report["listing_requests"] = listing_requests(work, url, endpoint)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
