"""Orbax args for the loader: its state saved in the same checkpoint step as the model.

manager.save(step, args=ocp.args.Composite(
    model=ocp.args.StandardSave(params), loader=LoaderSave(loader)))
manager.restore(step, args=ocp.args.Composite(
    model=ocp.args.StandardRestore(params), loader=LoaderRestore(loader)))
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import orbax.checkpoint as ocp
from etils import epath

from easydata_grain.io.errors import LoaderStateError
from easydata_grain.loader import AsyncDataLoader

STATE_FILE = "loader_state.json"


def state_file(host: int | None, hosts: int) -> str:
    """The state file's name: one for all hosts, or one per host where each saves its own
    (``loader_state.process_{i}-of-{n}.json``)."""
    return STATE_FILE if host is None else f"loader_state.process_{host}-of-{hosts}.json"


class LoaderCheckpointHandler(ocp.CheckpointHandler):
    """Writes the loader's state (with its pipeline fingerprint) as JSON; restores it into a loader.

    On several hosts only process 0 writes where the state names a global position (every host
    restores the same file); where each host's state is its own (packing, worker processes on
    indexed sources), every host writes and restores its own file.
    """

    def save(self, directory: epath.Path, args: LoaderSave) -> None:
        """Write ``args.loader``'s state into the step's directory."""
        import jax

        state = args.loader.get_state()
        if "host" in state or jax.process_index() == 0:
            (
                epath.Path(directory) / state_file(state.get("host"), state.get("hosts", 1))
            ).write_text(json.dumps(state, indent=1))

    def restore(self, directory: epath.Path, args: LoaderRestore) -> AsyncDataLoader:
        """Set ``args.loader`` to the saved state and return it (prefetch already started)."""
        path = _state_path(epath.Path(directory), args.loader)
        try:
            state = json.loads(path.read_text())
        except ValueError as exc:
            raise LoaderStateError(f"{path} is corrupted: {exc}.") from exc
        args.loader.set_state(state)
        args.loader.start_prefetch()
        return args.loader

    def metadata(self, directory: epath.Path) -> Any:
        """No metadata beyond the state file."""
        return None

    def finalize(self, directory: epath.Path) -> None:
        """Nothing to finalize."""

    def close(self) -> None:
        """Nothing to close."""


def _state_path(directory: epath.Path, loader: AsyncDataLoader) -> epath.Path:
    """The state file ``loader`` restores from: the one shared file, else this host's own; a
    ``LoaderStateError`` says what the step holds instead (per-host states of another host
    count, or none for this host)."""
    shared = directory / STATE_FILE
    hosts = loader.hosts
    own = directory / state_file(hosts.index, hosts.count)
    for path in (shared, own):
        if path.exists():
            return path
    saved = sorted(
        (int(match[2]), int(match[1]), path.name)
        for path in directory.glob("loader_state.process_*-of-*.json")
        if (match := re.fullmatch(r"loader_state\.process_(\d+)-of-(\d+)\.json", path.name))
    )
    if not saved:
        raise LoaderStateError(
            f"{shared} does not exist: this checkpoint holds no loader state (was it saved "
            "with LoaderSave?)."
        )
    counts = sorted({count for count, _, _ in saved})
    names = ", ".join(name for _, _, name in saved)
    if counts != [hosts.count]:
        raise LoaderStateError(
            f"{directory} holds loader states saved on {' and '.join(map(str, counts))} hosts "
            f"({names}) and cannot be restored on {hosts.count}: each host saved its own state "
            "(packing, or worker processes on an indexed source), which restores on the same "
            f"host count only. Restart with {counts[-1]} hosts, or start the loader afresh "
            "(not an exact resume)."
        )
    raise LoaderStateError(
        f"{own} does not exist: this checkpoint holds the states of hosts "
        f"{[index for _, index, _ in saved]} of {hosts.count} ({names}), not of host "
        f"{hosts.index}. Every host must save its own state (LoaderSave on every process) "
        "into the same checkpoint directory."
    )


@ocp.args.register_with_handler(LoaderCheckpointHandler, for_save=True)
@dataclasses.dataclass
class LoaderSave(ocp.args.CheckpointArgs):
    """Save this loader's state (use inside ``ocp.args.Composite``)."""

    loader: AsyncDataLoader


@ocp.args.register_with_handler(LoaderCheckpointHandler, for_restore=True)
@dataclasses.dataclass
class LoaderRestore(ocp.args.CheckpointArgs):
    """Restore a saved state into this loader (use inside ``ocp.args.Composite``)."""

    loader: AsyncDataLoader
