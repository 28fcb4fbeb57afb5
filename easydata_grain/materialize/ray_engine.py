"""The Ray engine: units written by Ray tasks on a cluster (an address, or a local one).

Each unit is one ``ray.remote`` task running the same ``ShardJob.run`` as the local engine,
so the shards are byte-identical whichever engine wrote them (Ray Data's own Parquet writer
would cut other row groups and name files itself). At most ``workers`` tasks are in flight; a
task whose worker dies (killed, out of memory, a lost node) is retried by Ray up to
``max_retries`` times, and a retry finds the shards already finished and verified. The rows go
to the object store once. Ray is imported only when this engine runs.

Ray, left alone, contacts cloud metadata addresses (and its usage-stats server) when it
starts. A local cluster started here starts under ``loopback_environment()``, so its processes
send nothing beyond this host. The tasks get the driver's storage settings (credentials,
emulator endpoints, proxies) as ``runtime_env`` variables, since a cluster's workers do not
inherit the driver's environment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from typing import Any

from easydata_grain.config import RayConfig
from easydata_grain.config.validation import Config, bounded
from easydata_grain.io.errors import RetriesExhaustedError
from easydata_grain.materialize.protocol import MaterializableRows
from easydata_grain.materialize.shard_writer import ShardJob, UnitResult

LOOPBACK_ENVIRONMENT: Mapping[str, str] = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "http_proxy": "http://127.0.0.1:9",
    "no_proxy": "127.0.0.1,localhost",
}
"""The environment a local Ray starts in, so that it sends nothing beyond loopback (no cloud
metadata probe, no usage report: plain-HTTP requests go to a closed local port)."""

_PROXIES = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
_STORAGE_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_", "GCSFS_", "HF_", "STORAGE_EMULATOR_HOST")


@dataclasses.dataclass(frozen=True)
class RayOptions(Config):
    """Where the Ray engine runs and what each task gets."""

    address: str | None = None
    """A cluster to attach to (``"auto"``, ``"ray://head:10001"``); None: the Ray already
    started in this process, else a local cluster started for the job (and stopped after)."""
    num_cpus: int | None = bounded(None, minimum=1)
    """CPUs of a local cluster started for the job; None: Ray's default (all)."""
    object_store_memory: int | None = bounded(None, minimum=1)
    """Bytes of a local cluster's object store; None: Ray's default."""
    max_retries: int = bounded(3, minimum=0)
    """Retries of a task whose worker died (a Python exception is not retried: it is raised)."""
    num_cpus_per_task: float = bounded(1.0, minimum=0)
    """CPUs each task reserves."""
    num_gpus_per_task: float = bounded(0.0, minimum=0)
    """GPUs each task reserves."""
    resources_per_task: dict[str, float] | None = None
    """Other Ray resources each task reserves."""
    env_vars: tuple[str, ...] = ()
    """Names of more driver environment variables to pass to the tasks (storage credentials
    and endpoints are passed already: ``AWS_*``, ``AZURE_*``, ``GOOGLE_*``, ``GCSFS_*``,
    ``HF_*``, ``STORAGE_EMULATOR_HOST``)."""

    @classmethod
    def from_config(cls, config: RayConfig, address: str | None = None) -> RayOptions:
        """The options of a pipeline's ``RayConfig`` (its ``num_workers`` is ``materialize``'s
        ``workers``); ``address`` replaces the config's."""
        return cls(
            address=address or config.address,
            object_store_memory=config.object_store_memory,
            num_gpus_per_task=1.0 if config.use_gpu else 0.0,
            resources_per_task=config.resources_per_worker,
        )


@contextlib.contextmanager
def loopback_environment(environ: MutableMapping[str, str] = os.environ) -> Iterator[None]:
    """``LOOPBACK_ENVIRONMENT`` set in ``environ`` inside the block, the old values after."""
    saved = {name: environ.get(name) for name in LOOPBACK_ENVIRONMENT}
    environ.update(LOOPBACK_ENVIRONMENT)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                environ.pop(name, None)
            else:
                environ[name] = value


def start_local_ray(num_cpus: int | None = None, object_store_memory: int | None = None) -> None:
    """Start a Ray cluster on this host for this process, in ``loopback_environment()`` (see
    the module's docstring); ``ray.shutdown()`` stops it."""
    import ray

    with loopback_environment():
        ray.init(
            address="local",
            num_cpus=num_cpus,
            object_store_memory=object_store_memory,
            include_dashboard=False,
        )


def task_environment(
    environ: Mapping[str, str], names: Sequence[str] = (), *, local_cluster: bool
) -> dict[str, str]:
    """The variables a task gets: the driver's storage settings and ``names``; on a local
    cluster also the driver's proxies (or none), undoing ``LOOPBACK_ENVIRONMENT`` for the
    job's own requests to its stores."""
    env = {
        name: value
        for name, value in environ.items()
        if name.startswith(_STORAGE_PREFIXES) or name in names
    }
    if local_cluster:
        env.update({name: environ.get(name, "") for name in _PROXIES})
    return env


def _run_unit(rows: MaterializableRows, job: ShardJob, unit: int) -> UnitResult:
    return job.run(rows, unit)


def run_ray(
    rows: MaterializableRows,
    job: ShardJob,
    units: Sequence[int],
    workers: int | None,
    options: RayOptions,
) -> dict[int, UnitResult]:
    """Each unit's result, written by Ray tasks, at most ``workers`` at once (None: the
    cluster's CPUs over ``num_cpus_per_task``). A task's exception is raised as it is."""
    import ray

    environment = dict(os.environ)  # before a local cluster's start changes it
    started = not ray.is_initialized()
    if started and options.address is None:
        start_local_ray(options.num_cpus, options.object_store_memory)
    elif started:
        ray.init(address=options.address)
    try:
        if workers is None:
            cpus = ray.cluster_resources().get("CPU", 1.0)
            workers = max(1, int(cpus // max(options.num_cpus_per_task, 1e-9)))
        task = ray.remote(_run_unit).options(
            max_retries=options.max_retries,
            retry_exceptions=False,
            num_cpus=options.num_cpus_per_task,
            num_gpus=options.num_gpus_per_task,
            resources=options.resources_per_task or {},
            runtime_env={
                "env_vars": task_environment(
                    environment, options.env_vars, local_cluster=started and not options.address
                )
            },
        )
        return _run_tasks(ray, task, ray.put(rows), job, units, workers, options)
    finally:
        if started:
            ray.shutdown()


def _run_tasks(
    ray: Any,
    task: Any,
    rows: Any,
    job: ShardJob,
    units: Sequence[int],
    workers: int,
    options: RayOptions,
) -> dict[int, UnitResult]:
    """Run the tasks, ``workers`` in flight; on the first failure cancel the rest and raise."""
    queue = list(reversed(units))
    pending: dict[Any, int] = {}
    results: dict[int, UnitResult] = {}
    try:
        while queue or pending:
            while queue and len(pending) < workers:
                unit = queue.pop()
                pending[task.remote(rows, job, unit)] = unit
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                unit = pending.pop(ref)
                try:
                    results[unit] = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise exc.cause from exc
                except ray.exceptions.RayError as exc:
                    raise RetriesExhaustedError(
                        f"Ray gave up on {job.where(unit)} after {options.max_retries} "
                        f"retries: {type(exc).__name__}: {exc}.",
                        path=job.store.url,
                        hint="The shards finished so far are kept: run materialize() again to "
                        "resume. Workers killed for memory need smaller units (unit_rows).",
                    ) from exc
    finally:
        for ref in pending:
            ray.cancel(ref)
    return results
