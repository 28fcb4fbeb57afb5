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


class LoaderCheckpointHandler(ocp.CheckpointHandler):
    """Writes the loader's state (with its pipeline fingerprint) as JSON; restores it into a loader.

    On several hosts only process 0 writes: the state names a global position, not a per-host
    cursor, so every host restores the same file.
    """

    def save(self, directory: epath.Path, args: LoaderSave) -> None:
        """Write ``args.loader``'s state into the step's directory."""
        import jax

        if jax.process_index() == 0:
            (epath.Path(directory) / STATE_FILE).write_text(
                json.dumps(args.loader.get_state(), indent=1)
            )

    def restore(self, directory: epath.Path, args: LoaderRestore) -> AsyncDataLoader:
        """Set ``args.loader`` to the saved state and return it (prefetch already started)."""
        path = epath.Path(directory) / STATE_FILE
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
