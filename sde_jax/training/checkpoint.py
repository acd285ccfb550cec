"""Checkpoints with orbax: periodic ones kept, a frequent preemption one overwritten.

``workdir/checkpoints`` holds the periodic checkpoints (every ``snapshot_freq`` steps, the
newest ``max_to_keep`` kept; evaluation reads these), ``workdir/checkpoints-meta`` the
latest preemption checkpoint only. Orbax writes each checkpoint to a temporary directory and
renames it when complete, so a crash mid-save never leaves a checkpoint that cannot be
restored; an unfinished one is ignored on restart. Restoring takes the newest step of both.

Every save first checks on device that the state is finite (one scalar leaves the device)
and refuses to write one that is not; every restore checks the same, so a non-finite
checkpoint left by an older version is refused, not resumed. Each checkpoint records the
config that made it (orbax's per-step custom metadata) so that a resume can compare it with
the new config before anything compiles (:func:`config_differences`).
"""

import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

# The config sections and keys that decide what the arrays of a checkpoint mean. Everything
# else (n_iters, lr, log_freq, paths ...) may change between a run and its resume.
STATE_SECTIONS = ("data", "sde", "model")
STATE_KEYS = ("optim.optimizer", "training.task", "training.continuous")
IGNORED_KEYS = ("data.data_dir", "data.download")


class NonFiniteStateError(FloatingPointError):
    """A train state (to save or just restored) holds NaN or infinite values."""


class ConfigMismatchError(ValueError):
    """A checkpoint was made by a config whose state-defining keys differ from the new one."""


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if _is_float(x)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.array(True)


def _is_float(leaf: Any) -> bool:
    return jnp.issubdtype(leaf.dtype, jnp.inexact)


def is_finite(tree: Any) -> bool:
    """Whether every floating-point leaf of ``tree`` is finite.

    One jitted reduction over the (possibly sharded, multi-host) arrays; only the resulting
    replicated scalar leaves the device, and every process gets the same answer.
    """
    flag = _all_finite(tree)
    return bool(flag.addressable_data(0))


def config_record(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as plain JSON values (tuples become lists, other objects strings)."""
    return json.loads(json.dumps(config.to_dict(), default=str))


def _flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in node.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _defines_state(key: str) -> bool:
    if key in IGNORED_KEYS:
        return False
    return key in STATE_KEYS or key.split(".", 1)[0] in STATE_SECTIONS


def config_differences(recorded: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``'key: recorded -> new'`` for each state-defining key whose values differ.

    Args:
      recorded: the :func:`config_record` a checkpoint holds.
      new: the :func:`config_record` of the config that resumes from it.

    Returns:
      The differences, sorted by key; a key one side lacks shows as ``<absent>``.
    """
    old_flat, new_flat = _flatten(recorded), _flatten(new)
    keys = sorted(k for k in old_flat.keys() | new_flat.keys() if _defines_state(k))
    absent = "<absent>"
    return [
        f"{k}: {old_flat.get(k, absent)!r} -> {new_flat.get(k, absent)!r}"
        for k in keys
        if old_flat.get(k, absent) != new_flat.get(k, absent)
    ]


def describe_differences(differences: list[str]) -> str:
    """The differing keys in one phrase, ``'keys that differ (checkpoint -> new): ...'``."""
    if not differences:
        return "no config key differs (or the checkpoint records no config)"
    return "keys that differ (checkpoint -> new): " + "; ".join(differences)


class Checkpointer:
    """Saves and restores the train state of one working directory.

    Args:
      workdir: the run's directory (local path or bucket URL).
      max_to_keep: periodic checkpoints kept; None keeps all.
      create: whether to create the checkpoint directories (the trainer does; readers pass
        False, so that a mistyped workdir creates nothing).
    """

    def __init__(self, workdir: str, max_to_keep: int | None = None, *, create: bool = True):
        if "://" not in workdir:  # orbax needs absolute local paths; bucket URLs stay as given
            workdir = os.path.abspath(workdir)
        self.workdir = workdir
        self.periodic = ocp.CheckpointManager(
            os.path.join(workdir, "checkpoints"),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=create),
        )
        self.preemption = ocp.CheckpointManager(
            os.path.join(workdir, "checkpoints-meta"),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, create=create),
        )

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        steps = [s for s in (self.periodic.latest_step(), self.preemption.latest_step()) if s]
        return max(steps) if steps else None

    def _manager(self, step: int) -> ocp.CheckpointManager:
        return self.periodic if step in self.periodic.all_steps() else self.preemption

    def describe(self, step: int | None) -> str:
        """``'step S in DIR'`` of checkpoint ``step``; ``'none'`` for None."""
        if step is None:
            return "none"
        return f"step {step} in {self._manager(step).directory}"

    def describe_latest(self) -> str:
        """The newest complete checkpoint (what a restart resumes), after pending saves."""
        self.wait()
        latest = self.latest_step()
        if latest is None:
            return "none (a restart starts from scratch)"
        return f"{self.describe(latest)} (a restart resumes it)"

    def save(
        self,
        step: int,
        state: Any,
        *,
        periodic: bool,
        config: ml_collections.ConfigDict | None = None,
    ) -> None:
        """Starts saving ``state`` (asynchronously) once it is checked to be finite.

        Args:
          step: the training step of ``state``.
          state: the train state (sharded arrays).
          periodic: the periodic directory if true, else the preemption one.
          config: the config that made ``state``, recorded with it (see
            :func:`config_record`).

        Raises:
          NonFiniteStateError: if ``state`` holds non-finite values; nothing is written and
            the saves already started are finished first.
        """
        manager = self.periodic if periodic else self.preemption
        if manager.latest_step() == step:
            return
        if not is_finite(state):
            raise NonFiniteStateError(
                f"the train state of step {step} holds non-finite values; not saved. "
                f"Newest finite checkpoint: {self.describe_latest()}."
            )
        metadata = None if config is None else {"config": config_record(config)}
        manager.save(step, args=ocp.args.StandardSave(state), custom_metadata=metadata)

    def check_config(
        self, config: ml_collections.ConfigDict, *, allow_change: bool = False
    ) -> list[str]:
        """Compares ``config`` with the one recorded by the newest checkpoint.

        Args:
          config: the config about to resume from this workdir.
          allow_change: resume even if state-defining keys differ (they are logged).

        Returns:
          The differences (see :func:`config_differences`); empty without a checkpoint or
          a record.

        Raises:
          ConfigMismatchError: if keys differ and ``allow_change`` is false.
        """
        step = self.latest_step()
        recorded = None if step is None else self.recorded_config(step)
        if recorded is None:
            if step is not None:
                logging.warning("The checkpoint %s records no config.", self.describe(step))
            return []
        differences = config_differences(recorded, config_record(config))
        if differences and not allow_change:
            raise ConfigMismatchError(
                f"the checkpoint {self.describe(step)} was made by another config; "
                f"{describe_differences(differences)}. Use a new workdir, or set "
                "training.allow_config_change=True to resume it anyway."
            )
        if differences:
            logging.warning(
                "Resuming %s under a changed config (training.allow_config_change): %s.",
                self.describe(step),
                "; ".join(differences),
            )
        return differences

    def recorded_config(self, step: int) -> dict[str, Any] | None:
        """The config record of checkpoint ``step``; None if it has none (older versions)."""
        custom = self._manager(step).metadata(step).custom_metadata or {}
        return custom.get("config")

    def restore(self, abstract_state: Any, step: int | None = None) -> Any:
        """Restores ``step`` (default: the newest) as ``abstract_state`` describes.

        ``abstract_state`` is a pytree of ``jax.ShapeDtypeStruct`` with shardings; the result
        has its shapes, dtypes and shardings.

        Raises:
          NonFiniteStateError: if the checkpoint holds non-finite values.
          ValueError: if its arrays do not fit ``abstract_state`` (other shapes or tree),
            naming the checkpoint.
        """
        step = self.latest_step() if step is None else step
        manager = self._manager(step)
        logging.info("Restoring the checkpoint of step %d from %s.", step, manager.directory)
        try:
            state = manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
        except ValueError as e:
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(
                f"the checkpoint {self.describe(step)} does not fit this config: its arrays "
                f"have other shapes or structure ({first_line})"
            ) from None
        if not is_finite(state):
            raise NonFiniteStateError(
                f"the checkpoint {self.describe(step)} holds non-finite values (written by an "
                "older version, which did not check); refusing to resume it. Delete that step "
                "directory to resume from an older checkpoint, or use a new workdir."
            )
        return state

    def restore_or_init(self, abstract_state: Any, init_fn: Callable[[], Any]) -> tuple[Any, bool]:
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
        try:
            self.wait()
        finally:
            self.periodic.close()
            self.preemption.close()


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
    """``jax.ShapeDtypeStruct`` leaves carrying the shardings to restore into."""
    return jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        abstract_state,
        shardings,
    )
