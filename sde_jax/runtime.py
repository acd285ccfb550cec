"""What the running JAX platform needs from a loop that dispatches sharded steps.

On the CPU platform with several (simulated) devices, in-process collectives deadlock when
sharded steps are dispatched back to back without waiting: the all-reduce rendezvous times
out after about 60 s on a 2-core machine. Blocking on each step's output avoids it. Real
accelerators need no such wait, and waiting there would only cost throughput, so loops ask
:func:`must_block_each_step` once and block only when it says so.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import jax

T = TypeVar("T")


def must_block_each_step(devices: list[jax.Device] | None = None) -> bool:
    """True when ``devices`` (default: all) are several CPU devices, where steps must block."""
    import jax

    devices = jax.devices() if devices is None else devices
    return len(devices) > 1 and all(d.platform == "cpu" for d in devices)


def block_if_needed(tree: T, block: bool) -> T:
    """Waits for ``tree``'s arrays when ``block`` is true; returns ``tree`` either way."""
    import jax

    return jax.block_until_ready(tree) if block else tree


# XLA's CPU compiler in jaxlib 0.10 miscomputes a YNNPACK reduce fusion that holds two expm1
# of different arguments once it has 4096 elements or more (relative errors near 1): e.g.
# jit(lambda t, z: expm1(-20 t) * sum(z * expm1(-10 t)[:, None], 1)). The sub-VP SDE's g(t)^2
# and std(t) are such a pair. Disabling that fusion fixes it.
_YNN_WORKAROUND = "--xla_cpu_experimental_ynn_fusion_type="


def apply_xla_cpu_workarounds() -> bool:
    """Adds the YNNPACK-fusion workaround to ``XLA_FLAGS`` for the affected jaxlib (0.10.x).

    Takes effect only if JAX's backends are not initialized yet (sde_jax calls it on import,
    before importing JAX). Returns whether the flag is now set.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if _YNN_WORKAROUND in flags:
        return True
    if not importlib.metadata.version("jaxlib").startswith("0.10."):
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {_YNN_WORKAROUND}".strip()
    return True
