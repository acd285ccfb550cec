"""Training: the train step, checkpoints, and the loop that ties them together.

The experiment it trains (``sde_jax.experiment``: the config's objects, the task objects with
their objectives, the train state, the random streams) is built one layer below.
"""

from sde_jax.training.state import TrainState, create_state, update_ema
from sde_jax.training.step import drop_labels, train_step, train_steps

__all__ = [
    "TrainState",
    "create_state",
    "drop_labels",
    "train_step",
    "train_steps",
    "update_ema",
]
