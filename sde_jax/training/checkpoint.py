"""Checkpoints with orbax: periodic ones kept, a frequent preemption one overwritten.

``workdir/checkpoints`` holds the periodic checkpoints (every ``snapshot_freq`` steps, the
newest ``max_to_keep`` kept; evaluation reads these), ``workdir/checkpoints-meta`` the
latest preemption checkpoint only. Orbax writes each checkpoint to a temporary directory and
renames it when complete, so a crash mid-save never leaves a checkpoint that cannot be
restored; an unfinished one is ignored on restart. Restoring takes the newest step of both.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
    """Saves and restores the train state of one working directory.

    Args:
      workdir: the run's directory (local path or bucket URL).
      max_to_keep: periodic checkpoints kept; None keeps all.
    """

    def __init__(self, workdir: str, max_to_keep: int | None = None):
        if "://" not in workdir:  # orbax needs absolute local paths; bucket URLs stay as given
            workdir = os.path.abspath(workdir)
        self.periodic = ocp.CheckpointManager(
            os.path.join(workdir, "checkpoints"),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )
        self.preemption = ocp.CheckpointManager(
            os.path.join(workdir, "checkpoints-meta"),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True),
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        steps = [s for s in (self.periodic.latest_step(), self.preemption.latest_step()) if s]
        return max(steps) if steps else None

    def save(self, step: int, state: Any, *, periodic: bool) -> None:
        """Starts saving ``state`` (asynchronously); ``periodic`` picks the directory."""
        manager = self.periodic if periodic else self.preemption
        if manager.latest_step() == step:
            return
        manager.save(step, args=ocp.args.StandardSave(state))

    def restore(self, abstract_state: Any, step: int | None = None) -> Any:
        """Restores ``step`` (default: the newest) as ``abstract_state`` describes.

        ``abstract_state`` is a pytree of ``jax.ShapeDtypeStruct`` with shardings; the result
        has its shapes, dtypes and shardings.
        """
        step = self.latest_step() if step is None else step
        manager = self.periodic
        if step not in self.periodic.all_steps():
            manager = self.preemption
        logging.info("Restoring the checkpoint of step %d from %s.", step, manager.directory)
        return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def restore_or_init(self, abstract_state: Any, init_fn) -> tuple[Any, bool]:
        """The newest checkpoint if there is one, else ``init_fn()``; and whether it restored."""
        if self.latest_step() is None:
            return init_fn(), False
        return self.restore(abstract_state), True

    def wait(self) -> None:
        """Blocks until every started save is on disk."""
        self.periodic.wait_until_finished()
        self.preemption.wait_until_finished()

    def close(self) -> None:
        """Waits for saves and releases the managers."""
        self.wait()
        self.periodic.close()
        self.preemption.close()


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
    """``jax.ShapeDtypeStruct`` leaves carrying the shardings to restore into."""
    return jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        abstract_state,
        shardings,
    )
