"""Device mesh and shardings: data parallelism over all devices, optional FSDP.

The mesh has two axes, ``data`` and ``fsdp``. The batch is split over both (every device gets
its own examples). Parameters and optimizer state are replicated when ``fsdp == 1``; with
``fsdp > 1`` each large array is split along one of its dimensions over the ``fsdp`` axis, so
a model too big for one device's memory still trains (ZeRO-3 / FSDP style; XLA inserts the
gathers). Shardings are derived once from ``jax.eval_shape`` of the state.
"""

import math
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sde_jax import validation

BATCH_AXES = ("data", "fsdp")
MIN_SHARDED_SIZE = 2**14  # smaller arrays (biases, norms) stay replicated under FSDP


def make_mesh(data: int | None, fsdp: int, devices: list[jax.Device] | None = None) -> Mesh:
    """A ``(data, fsdp)`` mesh over ``devices`` (default: all devices of all hosts).

    Args:
      data: devices along the data axis; None uses all that ``fsdp`` leaves.
      fsdp: devices sharing each parameter.
      devices: the devices to use.

    Raises:
      ValueError: if the sizes do not multiply to the device count.
    """
    devices = jax.devices() if devices is None else devices
    count = len(devices)
    if isinstance(fsdp, bool) or not isinstance(fsdp, int) or fsdp < 1 or count % fsdp:
        raise ValueError(f"mesh.fsdp must be a positive divisor of {count} devices, got {fsdp!r}.")
    data = count // fsdp if data is None else data
    if data * fsdp != count:
        raise ValueError(
            f"mesh.data * mesh.fsdp must equal the device count {count}, got "
            f"mesh.data={data}, mesh.fsdp={fsdp}; set mesh.data=None to use all devices."
        )
    return Mesh(np.asarray(devices).reshape(data, fsdp), ("data", "fsdp"))


def batch_sharding(mesh: Mesh, leading_axes: int = 0) -> NamedSharding:
    """Batch arrays split over all devices, after ``leading_axes`` unsplit axes.

    ``leading_axes=1`` fits ``[n_jitted_steps, batch, ...]``.
    """
    return NamedSharding(mesh, PartitionSpec(*([None] * leading_axes), BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same full array on every device."""
    return NamedSharding(mesh, PartitionSpec())


def _leaf_spec(shape: tuple[int, ...], fsdp: int) -> PartitionSpec:
    if fsdp == 1 or math.prod(shape) < MIN_SHARDED_SIZE:
        return PartitionSpec()
    # Split the largest dimension that divides evenly.
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % fsdp == 0:
            spec = [None] * len(shape)
            spec[axis] = "fsdp"
            return PartitionSpec(*spec)
    return PartitionSpec()


def state_shardings(abstract_state: Any, mesh: Mesh) -> Any:
    """Shardings for every leaf of a state, from its abstract shapes (``jax.eval_shape``)."""
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(
        lambda leaf: NamedSharding(mesh, _leaf_spec(tuple(leaf.shape), fsdp)), abstract_state
    )


def check_batch_size(batch_size: int, mesh: Mesh, name: str = "training.batch_size") -> None:
    """Raises ValueError unless ``batch_size`` splits evenly over the devices and hosts."""
    devices, hosts = mesh.size, jax.process_count()
    validation.integer(name, batch_size, minimum=1)
    if batch_size % devices or batch_size % hosts:
        raise ValueError(
            f"{name}={batch_size} must be divisible by the number of devices ({devices}) "
            f"and of hosts ({hosts})."
        )


def global_batch(local_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, Any]:
    """Assembles each host's slice of the batch into global arrays with ``sharding``."""
    return {
        key: jax.make_array_from_process_local_data(sharding, value)
        for key, value in local_batch.items()
    }


def describe(shardings: Any) -> dict[str, int]:
    """Counts of sharded and replicated leaves, to check the layout at start-up."""
    leaves = jax.tree.leaves(shardings)
    sharded = sum(any(p is not None for p in s.spec) for s in leaves)
    return {"sharded": sharded, "replicated": len(leaves) - sharded}
