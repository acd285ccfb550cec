"""The pure train step (jitted and sharded by the caller).

One update rule serves every task (``training.task``): :func:`train_step` minimizes the task's
objective (``sde_jax.experiment.tasks``: denoising score matching for the score model,
optionally class-conditional with label dropout; cross-entropy on noisy data for the
classifier). The task objects are built once from the config; the step knows no task.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from sde_jax.array_types import Array, Key
from sde_jax.experiment.state import TrainState, update_ema
from sde_jax.experiment.tasks import drop_labels, network_score_fn

# objective(params, batch, key) -> (loss, metrics): the scalar to minimize and scalar metrics.
Objective = Callable[[Any, dict[str, Array], Key], tuple[Array, dict[str, Array]]]

__all__ = ["Objective", "drop_labels", "network_score_fn", "train_step", "train_steps"]


def train_step(
    state: TrainState,
    batch: dict[str, Array],
    *,
    objective: Objective,
    tx: optax.GradientTransformation,
    ema_rate: float,
) -> tuple[TrainState, dict[str, Array]]:
    """One optimizer update of ``objective(params, batch, key) -> (loss, metrics)``.

    Args:
      state: the train state; its key is split into the next state's key and this step's.
      batch: ``{'image': [batch, H, W, C]}`` in model space (and ``'label'`` ``[batch]``).
      objective: the task's objective (``Experiment.task.objective``).
      tx: the optimizer.
      ema_rate: the rate of the parameters' exponential moving average.

    Returns:
      The new state and the metrics ``loss``, ``grad_norm`` and the objective's own (device
      scalars: they leave the device only when the loop logs them).
    """
    rng, step_key = jax.random.split(jax.random.wrap_key_data(state.rng))
    value_and_grad = jax.value_and_grad(objective, has_aux=True)
    (loss, metrics), grads = value_and_grad(state.params, batch, step_key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = TrainState(
        step=state.step + 1,
        params=params,
        ema_params=update_ema(state.ema_params, params, ema_rate),
        opt_state=opt_state,
        rng=jax.random.key_data(rng),
    )
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}


def train_steps(
    state: TrainState,
    batches: dict[str, Array],
    *,
    objective: Objective,
    tx: optax.GradientTransformation,
    ema_rate: float,
) -> tuple[TrainState, dict[str, Array]]:
    """Several steps in one call (the original's ``n_jitted_steps``), over axis 0 of ``batches``.

    The steps are unrolled in the traced program rather than run by ``lax.scan``: XLA:CPU
    (jaxlib 0.10) computes convolution gradients inside a loop several times slower than
    outside one (five steps of the parity-fixture DDPM++ at batch 8: 819 ms scanned, 131 ms
    unrolled), and ``n_jitted_steps`` is small (the original used 5), so unrolling costs
    little compile time on any platform.

    Args:
      state: the train state.
      batches: ``{'image': [steps, batch, H, W, C]}`` (and ``'label'`` ``[steps, batch]``).
      objective: the task's objective, as :func:`train_step`.
      tx: the optimizer.
      ema_rate: the EMA rate.

    Returns:
      The state after all steps and the metrics of each step, stacked ``[steps]``.
    """
    num_steps = jax.tree.leaves(batches)[0].shape[0]
    all_metrics = []
    for i in range(num_steps):
        batch = jax.tree.map(lambda b, i=i: b[i], batches)
        state, metrics = train_step(state, batch, objective=objective, tx=tx, ema_rate=ema_rate)
        all_metrics.append(metrics)
    return state, jax.tree.map(lambda *m: jnp.stack(m), *all_metrics)
