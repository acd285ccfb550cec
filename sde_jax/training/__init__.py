"""Training: state and step, sharding, checkpoints, and the loop that ties them together."""

from sde_jax.training.state import TrainState, create_state, update_ema
from sde_jax.training.step import (
    classifier_eval_step,
    classifier_train_step,
    drop_labels,
    eval_step,
    train_step,
)

__all__ = [
    "TrainState",
    "classifier_eval_step",
    "classifier_train_step",
    "create_state",
    "drop_labels",
    "eval_step",
    "train_step",
    "update_ema",
]
