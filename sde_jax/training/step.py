"""The pure training and evaluation steps (jitted and sharded by the caller)."""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from sde_jax.models import get_score_fn
from sde_jax.sdes import SDE
from sde_jax.training.state import TrainState, update_ema
from sde_jax.typing import Array, Key, ScoreFn

# loss_fn(key, score_fn, x) -> LossOutput(loss, per_example); see sde_jax.losses.get_loss_fn.
LossFn = Callable[[Key, ScoreFn, Array], Any]


def network_score_fn(
    model: nn.Module,
    sde: SDE,
    params: Any,
    *,
    continuous: bool,
    num_scales: int,
    dropout_key: Key | None = None,
) -> ScoreFn:
    """The score function of ``model`` with ``params``; training mode if given a dropout key."""
    if dropout_key is None:
        apply = model.apply
    else:

        def apply(variables, x, labels, train):
            del train  # the network runs in training mode, with dropout
            return model.apply(variables, x, labels, train=True, rngs={"dropout": dropout_key})

    return get_score_fn(sde, apply, params, continuous=continuous, num_scales=num_scales)


def train_step(
    state: TrainState,
    batch: dict[str, Array],
    *,
    model: nn.Module,
    sde: SDE,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    ema_rate: float,
    continuous: bool,
    num_scales: int,
) -> tuple[TrainState, dict[str, Array]]:
    """One optimizer update on ``batch['image']`` ``[batch, H, W, C]`` (model space).

    Returns:
      The new state and the metrics ``loss`` and ``grad_norm`` (device scalars: they leave
      the device only when the loop logs them).
    """
    rng, step_key = jax.random.split(jax.random.wrap_key_data(state.rng))
    loss_key, dropout_key = jax.random.split(step_key)

    def objective(params):
        score_fn = network_score_fn(
            model,
            sde,
            params,
            continuous=continuous,
            num_scales=num_scales,
            dropout_key=dropout_key,
        )
        return loss_fn(loss_key, score_fn, batch["image"]).loss

    loss, grads = jax.value_and_grad(objective)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = TrainState(
        step=state.step + 1,
        params=params,
        ema_params=update_ema(state.ema_params, params, ema_rate),
        opt_state=opt_state,
        rng=jax.random.key_data(rng),
    )
    return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads)}


def train_steps(
    state: TrainState, batches: dict[str, Array], **step_kwargs: Any
) -> tuple[TrainState, dict[str, Array]]:
    """Several steps in one call (the original's ``n_jitted_steps``), over axis 0 of ``batches``.

    The steps are unrolled in the traced program rather than run by ``lax.scan``: XLA:CPU
    (jaxlib 0.10) computes convolution gradients inside a loop about 50x slower than outside
    one, and ``n_jitted_steps`` is small (the original used 5), so unrolling costs little
    compile time on any platform.

    Args:
      state: the train state.
      batches: ``{'image': [steps, batch, H, W, C]}``.
      **step_kwargs: the keyword arguments of :func:`train_step`.

    Returns:
      The state after all steps and the metrics of each step, stacked ``[steps]``.
    """
    num_steps = jax.tree.leaves(batches)[0].shape[0]
    all_metrics = []
    for i in range(num_steps):
        state, metrics = train_step(
            state, jax.tree.map(lambda b, i=i: b[i], batches), **step_kwargs
        )
        all_metrics.append(metrics)
    return state, jax.tree.map(lambda *m: jnp.stack(m), *all_metrics)


def eval_step(
    state: TrainState,
    batch: dict[str, Array],
    key: Key,
    *,
    model: nn.Module,
    sde: SDE,
    loss_fn: LossFn,
    continuous: bool,
    num_scales: int,
) -> Array:
    """The per-example loss ``[batch]`` of the EMA parameters (network in eval mode)."""
    score_fn = network_score_fn(
        model, sde, state.ema_params, continuous=continuous, num_scales=num_scales
    )
    return loss_fn(key, score_fn, batch["image"]).per_example
