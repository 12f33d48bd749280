"""Saving a run: orbax checkpoints to resume from, and the final parameters as an .npz."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import jax
import numpy as np


class Checkpoints:
    """Orbax checkpoints of parameters, optimizer state and history, one per epoch. Orbax
    writes each into a temporary directory and renames it when complete, so a run killed
    mid-write leaves the previous checkpoint as the latest."""

    def __init__(self, directory: str) -> None:
        import orbax.checkpoint as ocp

        self.ocp = ocp
        self.manager = ocp.CheckpointManager(
            pathlib.Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True),
        )

    def save(self, epoch: int, trainer: Any, history: list[dict[str, float]]) -> None:
        state = {"params": trainer.params, "opt_state": trainer.opt_state}
        self.manager.save(epoch, args=self.ocp.args.Composite(
            state=self.ocp.args.StandardSave(state),
            history=self.ocp.args.JsonSave({"history": history}),
        ))
        self.manager.wait_until_finished()

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, epoch: int, trainer: Any) -> list[dict[str, float]]:
        target = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
            {"params": trainer.params, "opt_state": trainer.opt_state},
        )
        restored = self.manager.restore(epoch, args=self.ocp.args.Composite(
            state=self.ocp.args.StandardRestore(target),
            history=self.ocp.args.JsonRestore(),
        ))
        trainer.params = restored.state["params"]
        trainer.opt_state = restored.state["opt_state"]
        return list(restored.history["history"])


def save_params(params: Any, target: str) -> None:
    """Writes the parameters to an .npz file (one per process when there are several, to
    compare them), whole or not at all: into a temporary file, synced, then renamed."""
    # Replicated: every device holds all of it; take this process's first copy.
    flat = {jax.tree_util.keystr(path): np.asarray(x.addressable_data(0))
            for path, x in jax.tree_util.tree_leaves_with_path(params)}
    if jax.process_count() > 1:
        stem, suffix = os.path.splitext(target)
        target = f"{stem}.process{jax.process_index()}{suffix}"
    partial = f"{target}.partial"
    with open(partial, "wb") as f:
        np.savez(f, **flat)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, target)
