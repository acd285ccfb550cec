"""What the running JAX platform needs from a loop that dispatches sharded steps.

On the CPU platform with several (simulated) devices, in-process collectives deadlock when
sharded steps are dispatched back to back without waiting: the all-reduce rendezvous times
out after about 60 s on a 2-core machine. Blocking on each step's output avoids it. Real
accelerators need no such wait, and waiting there would only cost throughput, so loops ask
:func:`must_block_each_step` once and block only when it says so.
"""

from __future__ import annotations

from typing import TypeVar

import jax

T = TypeVar("T")


def must_block_each_step(devices: list[jax.Device] | None = None) -> bool:
    """True when ``devices`` (default: all) are several CPU devices, where steps must block."""
    devices = jax.devices() if devices is None else devices
    return len(devices) > 1 and all(d.platform == "cpu" for d in devices)


def block_if_needed(tree: T, block: bool) -> T:
    """Waits for ``tree``'s arrays when ``block`` is true; returns ``tree`` either way."""
    return jax.block_until_ready(tree) if block else tree
