"""Training: state and step, sharding, checkpoints, and the loop that ties them together."""

from sde_jax.training.state import TrainState, create_state, update_ema
from sde_jax.training.step import eval_step, train_step

__all__ = ["TrainState", "create_state", "eval_step", "train_step", "update_ema"]
