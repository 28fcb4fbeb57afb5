"""Orbax args for the loader: its state saved in the same checkpoint step as the model.

manager.save(step, args=ocp.args.Composite(
    model=ocp.args.StandardSave(params), loader=LoaderSave(loader)))
manager.restore(step, args=ocp.args.Composite(
    model=ocp.args.StandardRestore(params), loader=LoaderRestore(loader)))
"""

from __future__ import annotations

import dataclasses
import json
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
        path = epath.Path(directory) / STATE_FILE
        if not path.exists():
            hosts = args.loader.hosts
            host_path = epath.Path(directory) / state_file(hosts.index, hosts.count)
            path = host_path if host_path.exists() else path
        if not path.exists():
            raise LoaderStateError(
                f"{path} does not exist: this checkpoint holds no loader state (was it saved "
                "with LoaderSave?)."
            )
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
