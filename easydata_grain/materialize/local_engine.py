"""The local engine: units written by processes on this host (one: in this process).

Worker processes are spawned (not forked: a fork of a process holding threads, a JAX runtime or
open store clients is unsafe), each given the rows once, then unit numbers. A script that
uses several workers needs the ``if __name__ == "__main__":`` guard, as for any spawned pool.
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from easydata_grain.io.errors import SourceError
from easydata_grain.materialize.protocol import MaterializableRows
from easydata_grain.materialize.shard_writer import ShardJob, UnitResult

_WORKER: dict[str, Any] = {}
"""In a worker process: the rows and the job, installed once by ``_install``."""


def _install(rows: MaterializableRows, job: ShardJob) -> None:
    _WORKER.update(rows=rows, job=job)


def _run_unit(unit: int) -> UnitResult:
    return _WORKER["job"].run(_WORKER["rows"], unit)


def run_local(
    rows: MaterializableRows, job: ShardJob, units: Sequence[int], workers: int
) -> dict[int, UnitResult]:
    """Each unit's result, written by ``workers`` spawned processes (1: in this process). The
    first failure stops the run (units not started are cancelled) and is raised."""
    if workers == 1 or len(units) <= 1:
        return {unit: job.run(rows, unit) for unit in units}
    _check_picklable(rows, workers)
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(units)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_install,
        initargs=(rows, job),
    )
    with pool:
        futures = {pool.submit(_run_unit, unit): unit for unit in units}
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            pool.shutdown(wait=True, cancel_futures=True)
            first = min(failed, key=futures.__getitem__)
            error = first.exception()
            if isinstance(error, BrokenProcessPool):
                raise SourceError(
                    f"A worker process died while writing {job.where(futures[first])} ({error}).",
                    path=job.store.url,
                    hint="The shards finished so far are kept: run materialize() again to "
                    "resume. A process killed for memory needs smaller units (unit_rows).",
                ) from error
            raise error  # type: ignore[misc]
        return {futures[f]: f.result() for f in futures}


def _check_picklable(rows: MaterializableRows, workers: int) -> None:
    """A clear error, before any process starts, when the rows cannot be sent to workers."""
    try:
        pickle.dumps(rows)
    except (pickle.PicklingError, AttributeError, TypeError) as error:
        raise TypeError(
            f"workers={workers} sends the pipeline to spawned processes, and it cannot be "
            f"pickled: {error}. Use module-level functions (not lambdas or functions defined "
            "inside others) in transforms and format_callback, or workers=1."
        ) from error
