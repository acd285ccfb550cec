"""The train state: step, parameters, their EMA, the optimizer state and the RNG.

No hyperparameters live in the state: the optimizer, EMA rate and loss are arguments of the
step, so a checkpoint holds arrays only.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from sde_jax.array_types import Array, Key


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training.

    Attributes:
      step: number of optimizer updates done (int32 scalar).
      params: the network parameters.
      ema_params: exponential moving average of ``params``; used for sampling and evaluation.
      opt_state: the optax optimizer state.
      rng: the raw PRNG key data of the next step (``uint32 [2]``; raw so that checkpoints
        hold plain arrays): ``jax.random.wrap_key_data(rng)`` gives the key.
    """

    step: Array
    params: Any
    ema_params: Any
    opt_state: Any
    rng: Array


def create_state(params: Any, tx: optax.GradientTransformation, rng: Key) -> TrainState:
    """A fresh state at step 0 with ``ema_params`` equal to ``params``; ``rng`` a typed key."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        # A copy: on CPU the two trees could otherwise alias, and the step donates the state.
        ema_params=jax.tree.map(jnp.copy, params),
        opt_state=tx.init(params),
        rng=jax.random.key_data(rng),
    )


def update_ema(ema_params: Any, params: Any, rate: float) -> Any:
    r""":math:`\bar\theta \leftarrow r \bar\theta + (1 - r) \theta`."""
    return jax.tree.map(lambda e, p: rate * e + (1.0 - rate) * p, ema_params, params)
