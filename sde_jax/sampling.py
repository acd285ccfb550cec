"""Samplers: run a stepper over a time grid, or an adaptive ODE solve, from T down to eps.

The drivers are pure functions with their loops on device (``lax.scan`` over a fixed grid,
``lax.while_loop`` inside the adaptive solver); they contain no ``jit`` and no sharding, so
the caller compiles them, vmaps them over keys, differentiates through them or shards the
batch. ``get_sampler`` builds one from a config's sampling section, keeping the names of the
original score_sde configs.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sde_jax import grids, ode
from sde_jax.sdes import SDE, probability_flow_drift
from sde_jax.steppers import (
    AncestralSampling,
    AnnealedLangevin,
    DPMSolverPP2M,
    EulerMaruyama,
    Langevin,
    NoCorrector,
    NoPredictor,
    PredictorCorrector,
    ProbabilityFlow,
    ReverseDiffusion,
    State,
    Stepper,
    denoise,
)
from sde_jax.typing import Array, Key, ScoreFn


class SampleOutput(NamedTuple):
    """What a sampler returns.

    Attributes:
      x: the samples, with the sampler's ``shape``.
      nfe: number of score-function evaluations (per example; the batch shares them).
      success: False when the adaptive solver stopped at its step limit before reaching eps
        or met non-finite values; always True for fixed grids.
    """

    x: Array
    nfe: Array
    success: Array


def run_steps(
    key: Key, score_fn: ScoreFn, stepper: Stepper, state: State, grid: Array, first_index: int = 0
) -> State:
    """Applies ``stepper`` over consecutive pairs of ``grid`` with ``lax.scan``.

    Step i (counting from ``first_index``) uses the key ``fold_in(key, i)``, so running a grid
    in several chunks gives exactly the result of one run.

    Args:
      key: PRNG key of the whole run.
      score_fn: ``score_fn(x, t) -> score``.
      stepper: the step rule.
      state: the state at ``grid[0]``.
      grid: decreasing times ``[n + 1]``.
      first_index: global index of the first step (for chunked runs).

    Returns:
      The state at ``grid[-1]``.
    """

    def body(state, inputs):
        index, t, t_next = inputs
        step_key = jax.random.fold_in(key, index)
        return stepper.step(step_key, score_fn, state, t, t_next), None

    indices = first_index + jnp.arange(grid.shape[0] - 1)
    state, _ = jax.lax.scan(body, state, (indices, grid[:-1], grid[1:]))
    return state


@dataclasses.dataclass(frozen=True)
class FixedGridSampler:
    """A stepper run over a fixed grid; ``sampler(key, score_fn) -> SampleOutput``.

    Attributes:
      sde: the forward SDE (its prior gives x_T).
      stepper: the step rule.
      grid: decreasing times from T to eps, ``[num_steps + 1]``.
      shape: the shape of the batch to draw, ``(batch, ...)``.
      final_step: what the last step returns: 'none' (x), 'mean' (x_mean, the noise-free last
        update: the paper's denoising for PC samplers) or 'tweedie' (E[x_0 | x_eps], one more
        evaluation: the denoising of ODE samplers).
      dtype: the floating dtype of the samples.
    """

    sde: SDE
    stepper: Any
    grid: np.ndarray
    shape: tuple[int, ...]
    final_step: str = "mean"
    dtype: Any = jnp.float32

    @property
    def num_steps(self) -> int:
        """Number of steps of the grid."""
        return len(self.grid) - 1

    def init(self, key: Key) -> State:
        """Draws x_T from the prior and returns the stepper's initial state."""
        return self.stepper.init(self.sde.prior_sampling(key, self.shape, self.dtype))

    def advance(
        self, key: Key, score_fn: ScoreFn, state: State, start: int, num_steps: int
    ) -> State:
        """Runs steps ``start .. start + num_steps - 1`` (``start`` may be traced)."""
        grid = jnp.asarray(self.grid, self.dtype)
        times = jax.lax.dynamic_slice(grid, (start,), (num_steps + 1,))
        return run_steps(key, score_fn, self.stepper, state, times, start)

    def finish(self, score_fn: ScoreFn, state: State) -> SampleOutput:
        """Applies the final step and counts evaluations."""
        nfe = self.stepper.nfe_per_step * self.num_steps
        if self.final_step == "mean":
            x = state.x_mean
        elif self.final_step == "tweedie":
            x, nfe = denoise(self.sde, score_fn, state.x, self.grid[-1]), nfe + 1
        else:
            x = state.x
        return SampleOutput(x, jnp.asarray(nfe, jnp.int32), jnp.asarray(True))

    def __call__(self, key: Key, score_fn: ScoreFn) -> SampleOutput:
        """Draws a batch: prior sample, all steps, final step."""
        init_key, step_key = jax.random.split(key)
        state = self.advance(step_key, score_fn, self.init(init_key), 0, self.num_steps)
        return self.finish(score_fn, state)


@dataclasses.dataclass(frozen=True)
class AdaptiveODESampler:
    """The probability-flow ODE solved by adaptive Dormand-Prince 5(4) from T to eps.

    Attributes:
      sde: the forward SDE.
      shape: ``(batch, ...)``.
      eps: the final time.
      rtol: relative tolerance.
      atol: absolute tolerance.
      max_steps: step limit; past it the output reports ``success=False``.
      denoise: apply Tweedie's denoising at eps (one more evaluation).
      dtype: the floating dtype of the samples.
    """

    sde: SDE
    shape: tuple[int, ...]
    eps: float
    rtol: float = 1e-5
    atol: float = 1e-5
    max_steps: int = 4096
    denoise: bool = True
    dtype: Any = jnp.float32

    def __call__(self, key: Key, score_fn: ScoreFn) -> SampleOutput:
        """Draws a batch by solving the probability-flow ODE from a prior sample."""

        def velocity(t, x):
            return probability_flow_drift(self.sde, score_fn, x, t)

        x_init = self.sde.prior_sampling(key, self.shape, self.dtype)
        solution = ode.solve_adaptive(
            velocity,
            x_init,
            jnp.asarray(self.sde.T, x_init.dtype),
            jnp.asarray(self.eps, x_init.dtype),
            rtol=self.rtol,
            atol=self.atol,
            max_steps=self.max_steps,
        )
        x, nfe = solution.y, solution.nfe
        if self.denoise:
            x, nfe = denoise(self.sde, score_fn, x, self.eps), nfe + 1
        return SampleOutput(x, nfe, solution.success)


def sample_in_chunks(
    sampler: FixedGridSampler,
    key: Key,
    score_fn: ScoreFn,
    chunk_steps: int,
    report: Callable[[int, int], None] | None = None,
) -> SampleOutput:
    """Runs a fixed-grid sampler in compiled chunks of steps, reporting progress between them.

    The result equals ``sampler(key, score_fn)`` exactly. Each chunk is one compiled call, so
    the loop inside stays on device; at most two chunk lengths are compiled.

    Args:
      sampler: the sampler to run.
      key: PRNG key.
      score_fn: the score function.
      chunk_steps: steps per compiled call.
      report: called as ``report(steps_done, total_steps)`` after each chunk.

    Returns:
      The sampler's output.
    """
    if isinstance(chunk_steps, bool) or not isinstance(chunk_steps, int) or chunk_steps < 1:
        raise ValueError(f"chunk_steps must be a positive integer, got {chunk_steps!r}.")
    init_key, step_key = jax.random.split(key)
    advance = jax.jit(
        lambda state, start, n: sampler.advance(step_key, score_fn, state, start, n),
        static_argnums=2,
    )
    state = jax.jit(sampler.init)(init_key)
    done, total = 0, sampler.num_steps
    while done < total:
        n = min(chunk_steps, total - done)
        state = jax.block_until_ready(advance(state, done, n))
        done += n
        if report is not None:
            report(done, total)
    return jax.jit(lambda state: sampler.finish(score_fn, state))(state)


METHODS = ("pc", "ode", "euler", "heun", "rk4", "dpm_solver++")
PREDICTORS = {
    "euler_maruyama": EulerMaruyama,
    "reverse_diffusion": ReverseDiffusion,
    "ancestral_sampling": AncestralSampling,
    "none": None,
}
CORRECTORS = {"langevin": Langevin, "ald": AnnealedLangevin, "none": None}
DEFAULTS = {
    "method": "pc",
    "predictor": "reverse_diffusion",
    "corrector": "langevin",
    "snr": 0.16,
    "n_steps_each": 1,
    "noise_removal": True,
    "num_steps": 1000,
    "eps": None,
    "rtol": 1e-5,
    "atol": 1e-5,
    "max_steps": 4096,
    "grid": "uniform",
    "rho": 7.0,
}
"""Values used for keys the config leaves out. ``eps=None`` means the SDE's default."""


def default_eps(sde: SDE) -> float:
    """The SDE's smallest sampling time, ``sde.default_eps``.

    1e-5 for VE and 1e-3 for VP and sub-VP (the paper's), 1e-3 for cosine VP, sigma_min for EDM.
    """
    return sde.default_eps


def _choice(name: str, value: object, valid) -> None:
    if value not in valid:
        raise ValueError(f"sampling.{name} must be one of {sorted(valid)}, got {value!r}.")


IGNORED_KEYS = frozenset({"probability_flow"})
"""Keys of the original's sampling section that sde_jax does not need."""


def _settings(config: Any) -> dict[str, Any]:
    if isinstance(config, ml_collections.ConfigDict):
        if "sampling" in config and isinstance(config.sampling, ml_collections.ConfigDict):
            raise ValueError("get_sampler takes the sampling section: pass config.sampling.")
        values = config.to_dict()
    elif isinstance(config, dict):
        values = dict(config)
    else:
        raise TypeError(f"config must be a ConfigDict or dict, got {type(config).__name__}.")
    unknown = set(values) - set(DEFAULTS) - IGNORED_KEYS
    if unknown:
        raise ValueError(
            f"unknown sampling key(s) {sorted(unknown)}; valid keys: {sorted(DEFAULTS)}."
        )
    return {**DEFAULTS, **{k: v for k, v in values.items() if k in DEFAULTS}}


def get_sampler(
    sde: SDE,
    config: ml_collections.ConfigDict | dict,
    shape: tuple[int, ...],
    dtype: Any = jnp.float32,
) -> FixedGridSampler | AdaptiveODESampler:
    """Builds a sampler from a config's sampling section (the original's names).

    Keys (defaults in ``DEFAULTS``): ``method`` ('pc', 'ode' (adaptive RK45), 'euler',
    'heun', 'rk4' (fixed-grid probability flow), 'dpm_solver++'); ``predictor``
    ('euler_maruyama', 'reverse_diffusion', 'ancestral_sampling', 'none') and ``corrector``
    ('langevin', 'ald', 'none') for 'pc'; ``snr``; ``n_steps_each``; ``noise_removal`` (the
    final denoising step); ``num_steps`` (N); ``eps`` (None: 1e-5 for VE, 1e-3 otherwise);
    ``rtol``, ``atol``, ``max_steps`` for 'ode'; ``grid`` ('uniform', 'karras' (VE only),
    'log_snr') and ``rho`` for fixed grids. Unknown keys raise (typos would pass silently).

    Args:
      sde: the forward SDE.
      config: the sampling section, an ``ml_collections.ConfigDict`` or a dict.
      shape: the batch shape to draw, ``(batch, ...)``.
      dtype: the floating dtype of the samples (float64 needs ``jax_enable_x64``).

    Returns:
      A pure callable ``sampler(key, score_fn) -> SampleOutput(x, nfe, success)``.

    Raises:
      ValueError: for an unknown name (listing the valid ones) or an invalid value.
    """
    s = _settings(config)
    _choice("method", s["method"], METHODS)
    if not isinstance(shape, tuple) or not shape or not all(isinstance(d, int) for d in shape):
        raise ValueError(f"shape must be a non-empty tuple of ints (batch, ...), got {shape!r}.")
    eps = default_eps(sde) if s["eps"] is None else s["eps"]
    if s["method"] == "ode":
        return AdaptiveODESampler(
            sde, shape, eps, s["rtol"], s["atol"], s["max_steps"], bool(s["noise_removal"]), dtype
        )
    _choice("grid", s["grid"], grids.GRIDS)
    if s["grid"] == "karras":
        grid = grids.karras_grid(sde, s["num_steps"], eps, s["rho"])
    else:
        grid = grids.GRIDS[s["grid"]](sde, s["num_steps"], eps)
    final_step = "tweedie" if s["noise_removal"] else "none"
    if s["method"] == "pc":
        _choice("predictor", s["predictor"], PREDICTORS)
        _choice("corrector", s["corrector"], CORRECTORS)
        predictor = PREDICTORS[s["predictor"]]
        corrector = CORRECTORS[s["corrector"]]
        stepper = PredictorCorrector(
            NoPredictor() if predictor is None else predictor(sde),
            NoCorrector() if corrector is None else corrector(sde, s["snr"], s["n_steps_each"]),
        )
        final_step = "mean" if s["noise_removal"] else "none"
    elif s["method"] == "dpm_solver++":
        stepper = DPMSolverPP2M(sde)
    else:
        stepper = ProbabilityFlow(sde, s["method"])
    return FixedGridSampler(sde, stepper, np.asarray(grid), shape, final_step, dtype)
