"""Several hosts as real separate processes under ``jax.distributed`` (CPU, one device each).

Every slice runs ``tpu_scripts/train_example.py`` through ``tpu_scripts/simulate_multihost.py``
under a timeout, so a dead peer never hangs the suite. The per-step logs (each host's sample
ids in order, its padding mask, a digest of the global batch) are checked against the global
order one host computes alone.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from easydata_grain import AsyncDataLoader, ParquetShardedSource
from easydata_grain.distributed import Hosts
from easydata_grain.synthetic import write_parquet_dataset
from ops.fault_proxy import FaultProxy
from tpu_scripts.simulate_multihost import (
    SimulatedSlice,
    SliceResult,
    events,
    read_logs,
    run_slice,
)
from tpu_scripts.train_example import ids_digest

SHARDS, ROWS_PER_SHARD = 4, 51  # 204 rows: the last global batch of 8 is half full
ROWS = SHARDS * ROWS_PER_SHARD
GLOBAL_BATCH, SEED, WINDOW = 8, 3, 32
FULL_STEPS = ROWS // GLOBAL_BATCH  # 25 with drop_remainder; 26 with padding
SAVE_EVERY = 4
TIMEOUT = 120.0

Logs = dict[int, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Parquet dataset: ids 0..203 over 4 shards, row groups of 10 rows."""
    root = tmp_path_factory.mktemp("multihost-data")
    write_parquet_dataset(
        root, num_shards=SHARDS, rows_per_shard=ROWS_PER_SHARD, row_group_size=10, max_tokens=16
    )
    return root


@pytest.fixture(scope="module")
def reference_order(data: Path) -> list[int]:
    """The global sample-id order, from one host reading everything in this process."""
    source = ParquetShardedSource(str(data / "*.parquet"), columns=["id"])
    loader = AsyncDataLoader(
        source,
        global_batch_size=GLOBAL_BATCH,
        shuffle_buffer_size=WINDOW,
        seed=SEED,
        hosts=Hosts(0, 1),
        prefetch_enabled=False,
    )
    order = [int(i) for batch in loader for i in batch["id"]]
    assert sorted(order) == list(range(ROWS))
    return order


def train_args(data: Path, log: Path, *extra: str) -> list[str]:
    """``train_example.py`` arguments for the test dataset."""
    return [
        "--data",
        str(data / "*.parquet"),
        "--global-batch",
        str(GLOBAL_BATCH),
        "--seq-len",
        "16",
        "--shuffle-buffer",
        str(WINDOW),
        "--seed",
        str(SEED),
        "--prefetch-workers",
        "1",
        "--log",
        str(log),
        *extra,
    ]


def run_ok(hosts: int, args: list[str], work: Path, **options: Any) -> Logs:
    """Run a slice that must succeed; return its logs."""
    result = run_slice(hosts, args, timeout=TIMEOUT, work_dir=work, **options)
    assert result.ok, result.describe()
    return read_logs(args[args.index("--log") + 1])


def steps_by_number(logs: Logs) -> dict[int, dict[int, dict[str, Any]]]:
    """``{step: {host: record}}``; a step logged twice by a host fails the test."""
    table: dict[int, dict[int, dict[str, Any]]] = {}
    for host, records in events(logs, "step").items():
        for record in records:
            assert host not in table.setdefault(record["step"], {}), f"step {record} twice"
            table[record["step"]][host] = record
    return table


def global_sequence(logs: Logs, hosts: int) -> tuple[list[int], list[int]]:
    """The real sample ids of every global batch in order (hosts in index order), and the steps.

    Also checks each step: every host logged it, with ``GLOBAL_BATCH / hosts`` rows, and every
    host's digest of the global batch equals that of the hosts' rows concatenated.
    """
    ids: list[int] = []
    table = steps_by_number(logs)
    for step in sorted(table):
        by_host = table[step]
        assert sorted(by_host) == list(range(hosts)), f"step {step} logged by {sorted(by_host)}"
        everything = [i for h in range(hosts) for i in by_host[h]["ids"]]
        assert all(len(by_host[h]["ids"]) == GLOBAL_BATCH // hosts for h in range(hosts))
        assert {r["global_digest"] for r in by_host.values()} == {ids_digest(np.array(everything))}
        for h in range(hosts):
            record = by_host[h]
            ids += [i for i, real in zip(record["ids"], record["mask"], strict=True) if real]
    return ids, sorted(table)


class Runs:
    """The uninterrupted runs, each done once per module and shared by the tests."""

    def __init__(self, data: Path, root: Path):
        self.data, self.root = data, root
        self._done: dict[tuple[int, bool], Logs] = {}

    def checkpoints(self, hosts: int, drop: bool) -> Path:
        """Where the run on ``hosts`` keeps its checkpoints (every ``SAVE_EVERY`` steps)."""
        return self.root / f"ckpt-{hosts}-{'drop' if drop else 'pad'}"

    def logs(self, hosts: int, drop: bool) -> Logs:
        """The logs of one whole epoch on ``hosts`` hosts."""
        key = (hosts, drop)
        if key not in self._done:
            name = f"{hosts}-{'drop' if drop else 'pad'}"
            args = train_args(
                self.data,
                self.root / f"log-{name}",
                "--save-every",
                str(SAVE_EVERY),
                "--keep",
                "0",
                "--checkpoint-dir",
                str(self.checkpoints(hosts, drop)),
                *(["--drop-remainder"] if drop else []),
            )
            self._done[key] = run_ok(hosts, args, self.root / f"work-{name}")
        return self._done[key]


@pytest.fixture(scope="module")
def runs(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Uninterrupted runs on 2 and 4 hosts, with and without drop_remainder (lazily)."""
    return Runs(data, tmp_path_factory.mktemp("multihost-runs"))


# -- one epoch: complete, disjoint, equal steps ----------------------------------------------


@pytest.mark.parametrize("drop", [True, False], ids=["drop_remainder", "padded"])
@pytest.mark.parametrize("hosts", [2, 4])
def test_epoch_is_the_dataset_once(
    runs: Runs, reference_order: list[int], hosts: int, drop: bool
) -> None:
    logs = runs.logs(hosts, drop)
    steps = events(logs, "step")
    expected_steps = FULL_STEPS if drop else FULL_STEPS + 1
    assert {len(records) for records in steps.values()} == {expected_steps}, "unequal steps"
    assert all(r[-1]["steps"] == expected_steps for r in events(logs, "end").values())
    sequence, numbers = global_sequence(logs, hosts)
    assert numbers == list(range(expected_steps))
    assert len(sequence) == len(set(sequence)), "a sample was served twice"
    if drop:
        assert sequence == reference_order[: FULL_STEPS * GLOBAL_BATCH]
        assert all(all(r["mask"]) for records in steps.values() for r in records)
    else:
        assert sequence == reference_order
        padding = sum(r["mask"].count(False) for records in steps.values() for r in records)
        assert padding == expected_steps * GLOBAL_BATCH - ROWS
        assert all(records[-1]["step"] == expected_steps - 1 for records in steps.values())
    losses = {r["loss"] for records in steps.values() for r in records if r["step"] == 3}
    assert len(losses) == 1, "hosts computed different losses for one global batch"


# -- elastic: a checkpoint from H hosts resumes on H' ----------------------------------------


@pytest.mark.parametrize(("saved_on", "resumed_on"), [(4, 2), (2, 4)], ids=["4to2", "2to4"])
def test_elastic_resume(
    runs: Runs, reference_order: list[int], tmp_path: Path, saved_on: int, resumed_on: int
) -> None:
    resume_at = 3 * SAVE_EVERY
    uninterrupted = runs.logs(saved_on, True)
    # A copy, so that the resumed run cannot disturb the checkpoints other tests restore.
    checkpoints = tmp_path / "ckpt"
    shutil.copytree(runs.checkpoints(saved_on, True), checkpoints)
    args = train_args(
        runs.data,
        tmp_path / "log",
        "--drop-remainder",
        "--checkpoint-dir",
        str(checkpoints),
        "--restore-step",
        str(resume_at),
    )
    resumed = run_ok(resumed_on, args, tmp_path / "work")
    assert {r[0]["restored_step"] for r in events(resumed, "start").values()} == {resume_at}
    before, numbers_before = global_sequence(uninterrupted, saved_on)
    after, numbers_after = global_sequence(resumed, resumed_on)
    assert numbers_after == list(range(resume_at, FULL_STEPS))
    cut = numbers_before.index(resume_at) * GLOBAL_BATCH
    assert before[:cut] + after == reference_order[: FULL_STEPS * GLOBAL_BATCH]
    # The model came back too: the same global batch gives the same loss on either host count.
    loss_before = steps_by_number(uninterrupted)[resume_at][0]["loss"]
    loss_after = steps_by_number(resumed)[resume_at][0]["loss"]
    assert loss_after == pytest.approx(loss_before, rel=1e-4)


# -- kill -9 the whole slice, relaunch, resume -------------------------------------------------

KILL_STEPS = random.Random(20250607).sample(range(SAVE_EVERY + 1, FULL_STEPS - 5), 3)


def committed_steps(directory: Path) -> list[int]:
    """Checkpoint steps Orbax has committed (a temporary directory is not a step yet)."""
    if not directory.exists():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def wait_for(condition: Callable[[], bool], simulated: SimulatedSlice, timeout: float) -> None:
    """Poll ``condition`` while the slice runs; fail if it ends or the time runs out first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if not simulated.running():
            pytest.fail("the slice ended before the kill:\n" + simulated.result().describe())
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the slice to reach the kill step")
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("kill_step", KILL_STEPS)
def test_kill_whole_slice_and_resume(runs: Runs, tmp_path: Path, kill_step: int) -> None:
    hosts = 2
    reference = steps_by_number(runs.logs(hosts, True))
    checkpoints = tmp_path / "ckpt"
    first_log = tmp_path / "log-killed"

    def reached() -> bool:
        logged = steps_by_number(read_logs(first_log)) if first_log.exists() else {}
        return bool(committed_steps(checkpoints)) and max(logged, default=-1) >= kill_step

    common = ["--drop-remainder", "--save-every", str(SAVE_EVERY), "--keep", "0"]
    common += ["--checkpoint-dir", str(checkpoints)]
    slow = [*train_args(runs.data, first_log, *common), "--step-delay", "0.15"]
    with SimulatedSlice(hosts, slow, work_dir=tmp_path / "work-killed") as simulated:
        wait_for(reached, simulated, TIMEOUT)
        simulated.kill(signal.SIGKILL)
        killed: SliceResult = simulated.result()
    assert killed.returncodes == [-signal.SIGKILL] * hosts, killed.describe()
    before = steps_by_number(read_logs(first_log))
    assert before, "nothing was logged before the kill"
    for step, by_host in before.items():  # what ran before the kill was the reference
        for host, record in by_host.items():
            assert record["ids"] == reference[step][host]["ids"]

    resumed = run_ok(
        hosts, train_args(runs.data, tmp_path / "log-resumed", *common), tmp_path / "work-resumed"
    )
    restored = {r[0]["restored_step"] for r in events(resumed, "start").values()}
    assert len(restored) == 1
    (restored_step,) = restored
    assert restored_step is not None and restored_step % SAVE_EVERY == 0
    assert SAVE_EVERY <= restored_step <= max(before) + 1
    print(f"killed after step {max(before)} (aimed at {kill_step}); resumed at {restored_step}")
    after = steps_by_number(resumed)
    assert sorted(after) == list(range(restored_step, FULL_STEPS))
    for step, by_host in after.items():
        for host, record in by_host.items():
            expected = reference[step][host]
            assert (record["ids"], record["global_digest"]) == (
                expected["ids"],
                expected["global_digest"],
            ), f"step {step} host {host} differs from the uninterrupted run"
            assert record["loss"] == pytest.approx(expected["loss"], rel=1e-5)


# -- bad input: a clear error on every host ----------------------------------------------------


def assert_fails_everywhere(result: SliceResult, hosts: int, *needles: str) -> None:
    """Every host exited by itself with an error whose text contains all ``needles``."""
    assert not result.timed_out, result.describe()
    assert len(result.hosts) == hosts
    for host in result.hosts:
        assert host.returncode is not None and host.returncode > 0, result.describe()
        for needle in needles:
            assert needle in host.stderr, (
                f"host {host.index}: {needle!r} not in\n{host.stderr[-3000:]}"
            )


def test_global_batch_not_divisible_by_hosts(data: Path, tmp_path: Path) -> None:
    args = train_args(data, tmp_path / "log")
    args[args.index("--global-batch") + 1] = "6"
    result = run_slice(4, args, timeout=TIMEOUT, work_dir=tmp_path / "work")
    assert_fails_everywhere(result, 4, "HostMismatchError", "not divisible by the 4 hosts")


def test_hosts_given_different_data(data: Path, tmp_path: Path) -> None:
    other = str(data / "shard-0000[0-2].parquet")
    result = run_slice(
        2,
        train_args(data, tmp_path / "log"),
        host_args={1: ["--data", other]},
        timeout=TIMEOUT,
        work_dir=tmp_path / "work",
    )
    assert_fails_everywhere(result, 2, "HostMismatchError", "Hosts disagree")


def test_checkpoint_from_another_pipeline(runs: Runs, tmp_path: Path) -> None:
    runs.logs(2, True)
    checkpoints = tmp_path / "ckpt"
    shutil.copytree(runs.checkpoints(2, True), checkpoints)
    args = train_args(runs.data, tmp_path / "log", "--drop-remainder")
    args[args.index("--seed") + 1] = str(SEED + 1)
    args += ["--checkpoint-dir", str(checkpoints)]
    result = run_slice(2, args, timeout=TIMEOUT, work_dir=tmp_path / "work")
    assert_fails_everywhere(result, 2, "LoaderStateError", "seed: saved 3, now 4")


# -- S3: with the shared listing only host 0 lists and reads footers --------------------------


@pytest.fixture(scope="module")
def s3_data(data: Path, s3_store: Any) -> tuple[str, dict[str, Any]]:
    """The test dataset uploaded to a fresh bucket of the S3 emulator, and its options."""
    bucket = s3_store.new_bucket()
    for path in sorted(data.glob("*.parquet")):
        s3_store.upload(str(path), f"{bucket}/train/{path.name}")
    return f"{bucket}/train/*.parquet", s3_store.storage_options()


@pytest.mark.parametrize("share", [True, False], ids=["shared", "every_host"])
def test_s3_listing_requests_per_host(
    s3_data: tuple[str, dict[str, Any]], s3_store: Any, data: Path, tmp_path: Path, share: bool
) -> None:
    """Counted twice: by the source (its stats) and as HTTP requests (a proxy per host)."""
    url, _ = s3_data
    args = train_args(data, tmp_path / "log", "--steps", "0", "--drop-remainder")
    args[args.index("--data") + 1] = url
    if not share:
        args.append("--no-share-listing")
    proxies = [FaultProxy(s3_store.url) for _ in range(2)]
    try:
        host_args = {
            h: ["--storage-options", json.dumps(s3_store.storage_options(proxy.url))]
            for h, proxy in enumerate(proxies)
        }
        logs = run_ok(2, args, tmp_path / "work", host_args=host_args)
        http = [proxy.request_count for proxy in proxies]
    finally:
        for proxy in proxies:
            proxy.close()
    counted = [r[0]["source_requests"] for _, r in sorted(events(logs, "start").items())]
    print(f"requests per host ({'shared' if share else 'every host'}): {counted}, HTTP {http}")
    assert counted[0] >= 1 + SHARDS  # one listing, then each shard's size and footer
    assert http[0] >= 1 + SHARDS
    if share:
        assert counted[1] == http[1] == 0
    else:
        assert (counted[1], http[1]) == (counted[0], http[0])


def test_s3_training_steps(s3_data: tuple[str, dict[str, Any]], data: Path, tmp_path: Path) -> None:
    url, options = s3_data
    args = train_args(data, tmp_path / "log", "--steps", "3", "--drop-remainder")
    args[args.index("--data") + 1] = url
    args += ["--storage-options", json.dumps(options)]
    logs = run_ok(2, args, tmp_path / "work")
    sequence, numbers = global_sequence(logs, 2)
    assert numbers == [0, 1, 2] and len(set(sequence)) == 3 * GLOBAL_BATCH


def test_simulator_kills_every_host_on_timeout(tmp_path: Path) -> None:
    script = tmp_path / "sleeper.py"
    script.write_text("import time\ntime.sleep(60)\n")
    started = time.monotonic()
    result = run_slice(2, [], script=script, timeout=1.0, work_dir=tmp_path / "work")
    assert result.timed_out and result.returncodes == [-signal.SIGKILL] * 2
    assert time.monotonic() - started < 15
