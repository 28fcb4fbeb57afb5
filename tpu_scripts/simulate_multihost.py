#!/usr/bin/env python
"""Run N local CPU processes under ``jax.distributed`` as the hosts of a simulated slice.

Each process gets ``JAX_PLATFORMS=cpu`` (one CPU device), its own session (so it and its
children can be killed together) and these flags appended to its arguments::

    --coordinator 127.0.0.1:PORT --num-processes N --process-id I

(``train_example.py`` accepts them; any other script must too). ``EASYDATA_LAUNCH_TIME`` is the
launch time (``time.time()``), and ``EASYDATA_HEARTBEAT_TIMEOUT`` / ``EASYDATA_SHUTDOWN_TIMEOUT``
(10 s) ask ``train_example.py`` for short ``jax.distributed`` timeouts, so that a dead peer is
noticed quickly. stdout and stderr of host ``i`` go to ``WORK/host-i.out`` / ``host-i.err``;
``WORK`` is a new temporary directory unless ``work_dir`` (``--work-dir``) names one.

The hosts run in the caller's current directory (the one at construction), so relative paths
(``--data``, ``--log``, ``--checkpoint-dir``, the script, the work dir) mean what they mean to
the caller; nothing is written into the repository unless the caller runs there.

When a host fails, the others get ``grace`` seconds to fail too (so that every host's error
can be checked), then are killed; at the overall ``timeout`` all are killed. No process
outlives :func:`run_slice` or a ``with SimulatedSlice(...)`` block.

From Python::

    result = run_slice(4, ["--data", "data/*.parquet", "--log", "log"], timeout=120)
    assert result.ok, result.describe()

From the command line (the exit status is the first nonzero host status)::

    python tpu_scripts/simulate_multihost.py --hosts 4 -- --data 'data/*.parquet' --log log
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TRAIN_EXAMPLE = Path(__file__).resolve().parent / "train_example.py"
REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class HostResult:
    """How one simulated host ended: its exit status (negative: killed by that signal)."""

    index: int
    returncode: int | None
    stdout_path: Path
    stderr_path: Path

    @property
    def stdout(self) -> str:
        """Everything the host wrote to stdout."""
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        """Everything the host wrote to stderr."""
        return self.stderr_path.read_text(errors="replace")


@dataclasses.dataclass(frozen=True)
class SliceResult:
    """How a simulated slice ended."""

    hosts: list[HostResult]
    elapsed_s: float
    timed_out: bool

    @property
    def returncodes(self) -> list[int | None]:
        """Every host's exit status, by host index."""
        return [h.returncode for h in self.hosts]

    @property
    def ok(self) -> bool:
        """Whether every host exited with status 0."""
        return not self.timed_out and all(code == 0 for code in self.returncodes)

    def describe(self, tail: int = 3000) -> str:
        """The exit statuses and the end of every host's stderr, for failure messages."""
        parts = [f"returncodes={self.returncodes} timed_out={self.timed_out}"]
        parts += [f"--- host {h.index} stderr ---\n{h.stderr[-tail:]}" for h in self.hosts]
        return "\n".join(parts)


class SimulatedSlice:
    """``num_hosts`` processes of ``script`` under one coordinator; start, wait, kill."""

    def __init__(
        self,
        num_hosts: int,
        args: Sequence[str] = (),
        *,
        script: str | os.PathLike[str] = TRAIN_EXAMPLE,
        work_dir: str | os.PathLike[str] | None = None,
        host_args: Mapping[int, Sequence[str]] | None = None,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        distributed_timeout_s: int = 10,
    ):
        if num_hosts < 1:
            raise ValueError(f"num_hosts must be >= 1, got {num_hosts}")
        self.num_hosts = num_hosts
        self.args = list(args)
        self.cwd = Path.cwd()
        self.script = Path(script).resolve()
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="simulated-slice-")).resolve()
        self.host_args = {int(k): list(v) for k, v in (host_args or {}).items()}
        self.env = dict(env or {})
        self.python = python
        self.distributed_timeout_s = distributed_timeout_s
        self.processes: list[subprocess.Popen[bytes]] = []
        self._started = 0.0

    def _environment(self) -> dict[str, str]:
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
            "EASYDATA_HEARTBEAT_TIMEOUT": str(self.distributed_timeout_s),
            "EASYDATA_SHUTDOWN_TIMEOUT": str(self.distributed_timeout_s),
            "EASYDATA_LAUNCH_TIME": repr(time.time()),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            **self.env,
        }
        # The host index and count must come from jax.distributed, not from an override.
        env.pop("EASYDATA_HOST_INDEX", None)
        env.pop("EASYDATA_HOST_COUNT", None)
        return env

    def start(self) -> SimulatedSlice:
        """Launch every host (host 0 hosts the coordinator)."""
        if self.processes:
            raise RuntimeError("this slice was already started")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        coordinator = f"127.0.0.1:{free_port()}"
        env = self._environment()
        self._started = time.monotonic()
        try:
            for index in range(self.num_hosts):
                command = [
                    self.python,
                    str(self.script),
                    *self.args,
                    *self.host_args.get(index, []),
                    "--coordinator",
                    coordinator,
                    "--num-processes",
                    str(self.num_hosts),
                    "--process-id",
                    str(index),
                ]
                with (
                    open(self.work_dir / f"host-{index}.out", "wb") as out,
                    open(self.work_dir / f"host-{index}.err", "wb") as err,
                ):
                    self.processes.append(
                        subprocess.Popen(
                            command,
                            stdin=subprocess.DEVNULL,
                            stdout=out,
                            stderr=err,
                            env=env,
                            cwd=self.cwd,
                            start_new_session=True,
                        )
                    )
        except BaseException:
            self.kill()
            raise
        return self

    def poll(self) -> list[int | None]:
        """Every host's exit status so far (None: still running)."""
        return [p.poll() for p in self.processes]

    def running(self) -> bool:
        """Whether any host is still running."""
        return any(code is None for code in self.poll())

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to every host's process group (the host and its children), then reap."""
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            for process in self.processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
                if process.poll() is None:  # ignored SIGTERM: no mercy
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)

    def wait(self, timeout: float = 300.0, grace: float = 20.0) -> SliceResult:
        """Wait for every host; kill all at ``timeout``, or ``grace`` s after a host failed."""
        deadline = time.monotonic() + timeout
        timed_out = False
        while self.running():
            now = time.monotonic()
            if any(code not in (None, 0) for code in self.poll()):
                deadline = min(deadline, now + grace)
            if now >= deadline:
                timed_out = not any(code not in (None, 0) for code in self.poll())
                self.kill()
                break
            time.sleep(0.05)
        return self.result(timed_out)

    def result(self, timed_out: bool = False) -> SliceResult:
        """The slice's result as it stands (hosts still running have ``returncode`` None)."""
        hosts = [
            HostResult(
                i, p.poll(), self.work_dir / f"host-{i}.out", self.work_dir / f"host-{i}.err"
            )
            for i, p in enumerate(self.processes)
        ]
        return SliceResult(hosts, time.monotonic() - self._started, timed_out)

    def __enter__(self) -> SimulatedSlice:
        return self.start() if not self.processes else self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


def run_slice(
    num_hosts: int,
    args: Sequence[str] = (),
    *,
    timeout: float = 300.0,
    grace: float = 20.0,
    **options: object,
) -> SliceResult:
    """Run ``num_hosts`` hosts to the end (see :class:`SimulatedSlice` for ``options``)."""
    with SimulatedSlice(num_hosts, args, **options) as simulated:  # type: ignore[arg-type]
        return simulated.wait(timeout=timeout, grace=grace)


def read_logs(directory: str | os.PathLike[str]) -> dict[int, list[dict[str, Any]]]:
    """``train_example.py``'s JSON-lines logs in ``directory``, by host index.

    A last line cut short by a kill is skipped.
    """
    logs: dict[int, list[dict[str, Any]]] = {}
    for path in sorted(Path(directory).glob("host-*.jsonl")):
        records = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        logs[int(path.stem.split("-")[1])] = records
    return logs


def events(logs: Mapping[int, list[dict[str, Any]]], event: str) -> dict[int, list[dict[str, Any]]]:
    """Each host's records of one kind (``start``, ``first_batch``, ``step``, ``end``)."""
    return {host: [r for r in records if r["event"] == event] for host, records in logs.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``simulate_multihost.py --hosts N [--script S] -- SCRIPT ARGS...``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--script", default=str(TRAIN_EXAMPLE))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole run")
    parser.add_argument(
        "--work-dir", default=None, help="where host-<i>.out/.err go (default: a new temp dir)"
    )
    parser.add_argument("script_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    script_args = args.script_args[1:] if args.script_args[:1] == ["--"] else args.script_args
    result = run_slice(
        args.hosts, script_args, timeout=args.timeout, script=args.script, work_dir=args.work_dir
    )
    for host in result.hosts:
        print(f"host {host.index}: exit status {host.returncode} (stderr: {host.stderr_path})")
    print(
        f"{args.hosts} hosts in {result.elapsed_s:.1f}s{' (timed out)' if result.timed_out else ''}"
    )
    if not result.ok:
        print(result.describe(), file=sys.stderr)
    return next((code if code and code > 0 else 1 for code in result.returncodes if code != 0), 0)


if __name__ == "__main__":
    sys.exit(main())
