r"""Training losses: continuous denoising score matching and the discrete SMLD / DDPM losses.

All losses take a plain ``score_fn(x, t) -> score`` (``x`` ``[batch, ...]``, ``t`` ``[batch]``),
so the trainer decides how the network, its parameters and its dropout keys become a score
(see :func:`sde_jax.models.score.get_score_fn`). Each returns a :class:`LossOutput`: the
per-example losses ``[batch]`` and their batch mean, the scalar to differentiate.

Continuous DSM (paper eq. 7) minimizes, over :math:`t \sim U(\epsilon, T)`,
:math:`x_0 \sim p_0` and :math:`z \sim N(0, I)` with :math:`x_t = m(t) x_0 + s(t) z`,

.. math:: \lambda(t)\, \|s_\theta(x_t, t) - \nabla_{x_t}\log p_{0t}(x_t | x_0)\|^2,
          \qquad \nabla_{x_t}\log p_{0t}(x_t | x_0) = -z / s(t),

with :math:`\lambda(t) = s(t)^2` by default and :math:`\lambda(t) = g(t)^2` with likelihood
weighting (Song, Durkan, Murray and Ermon 2021, "Maximum likelihood training of score-based
diffusion models"). Its minimizer is the score of the perturbed data, and at the minimizer the
loss is not zero: see :func:`dsm_loss` for the constant.

The squared norm is reduced over all non-batch axes as the original did: half the sum
(``reduce_mean=False``) or the mean (``reduce_mean=True``). The two differ by exactly the
factor :math:`D/2`, D the number of dimensions of one example.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from sde_jax import validation
from sde_jax.array_types import Array, Data, Key, PerExample, ScoreFn
from sde_jax.sdes import (
    SDE,
    DiscreteDDPM,
    DiscreteSMLD,
    check_log_snr_inverse,
    expand_to,
)

__all__ = [
    "LossFn",
    "LossOutput",
    "ddpm_loss",
    "dsm_loss",
    "get_loss_fn",
    "importance_normalizer",
    "sample_importance_times",
    "smld_loss",
]


class LossOutput(NamedTuple):
    """The result of every loss.

    Attributes:
      loss: scalar, the mean of ``per_example`` over the batch.
      per_example: ``[batch]`` loss of each example.
    """

    loss: Array
    per_example: PerExample


LossFn = Callable[[Key, ScoreFn, Data], LossOutput]
"""``loss(key, score_fn, x) -> LossOutput``, as returned by :func:`get_loss_fn`."""


# ----------------------------------------------------------------------------- validation


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), got {value!r}.")
    return value


def _check_sde(sde: object) -> SDE:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an SDE (e.g. VPSDE or VESDE), got {type(sde).__name__}.")
    return sde


def _check_eps(sde: SDE, eps: object) -> float:
    return validation.interval("eps", eps, 0, sde.T, closed=(False, False))


def _check_num_scales(num_scales: object) -> int:
    return validation.integer("num_scales", num_scales, minimum=2)


def _check_data(x: object) -> Array:
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"x must have shape [batch, ...], got shape {x.shape}.")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be a floating-point array, got dtype {x.dtype}.")
    return x


def _check_discrete_sde(sde: object, expected: type, loss: str, example: str) -> None:
    if not isinstance(sde, expected):
        raise ValueError(
            f"{loss} needs sde to be a {example} (an SDE with the {expected.__name__} table), "
            f"got sde={sde!r}; the discrete losses are smld_loss for VESDE and ddpm_loss for "
            "VPSDE."
        )


# ----------------------------------------------------------------------------- reductions


def _reduce(squares: Data, reduce_mean: bool) -> PerExample:
    """Half the sum (the original's default) or the mean over all non-batch axes."""
    flat = jnp.reshape(squares, (squares.shape[0], -1))
    return jnp.mean(flat, axis=1) if reduce_mean else 0.5 * jnp.sum(flat, axis=1)


def _output(per_example: PerExample) -> LossOutput:
    return LossOutput(jnp.mean(per_example), per_example)


def _float_dtype(x: Array) -> jnp.dtype:
    # bf16/f16 data still get float32 times: t near eps needs the precision.
    return jnp.promote_types(x.dtype, jnp.float32)


# ----------------------------------------------------------------------------- importance sampling


def _float64(fn: Callable[[Array], Array], t: float) -> float:
    """``fn(t)`` as a Python float computed in float64: constants of the SDE, not traced values."""
    with jax.ensure_compile_time_eval(), jax.enable_x64(True):
        return float(fn(jnp.asarray(t, jnp.float64)))


def importance_normalizer(sde: SDE, eps: float = 1e-5) -> float:
    r"""The normalizer :math:`Z = \int_\epsilon^T g(t)^2 / s(t)^2\,dt` of the proposal.

    For every linear SDE :math:`g^2/s^2 = \tfrac{d}{dt}\log(s^2/m^2) = -2\Lambda'(t)`, with
    :math:`\Lambda(t) = \log(m/s)` the half log-SNR ``sde.log_snr`` (written :math:`\Lambda`
    here, keeping :math:`\lambda` for the weighting), so :math:`Z = 2(\Lambda(\epsilon) -
    \Lambda(T))`.

    Args:
      sde: the SDE.
      eps: the smallest time.

    Returns:
      Z as a Python float (computed in float64 from the closed-form log-SNR).

    Raises:
      TypeError: if ``sde`` is not an SDE.
      ValueError: for an ``eps`` outside (0, T).
    """
    _check_sde(sde)
    eps = _check_eps(sde, eps)
    return 2.0 * (_float64(sde.log_snr, eps) - _float64(sde.log_snr, sde.T))


def sample_importance_times(
    key: Key, sde: SDE, batch_size: int, *, eps: float = 1e-5, dtype=jnp.float32
) -> Array:
    r"""Draws times from the density :math:`q(t) \propto g(t)^2 / s(t)^2` on :math:`[\epsilon, T]`.

    This is the proposal that makes the likelihood-weighted DSM loss a :math:`s(t)^2`-weighted
    one (Song, Durkan, Murray and Ermon 2021, "Maximum likelihood training of score-based
    diffusion models"). Since :math:`g^2/s^2 = -2\Lambda'(t)` (see :func:`importance_normalizer`),
    :math:`q` is the law of t when the half log-SNR :math:`\Lambda(t)` is uniform: with
    :math:`u \sim U(0, 1)`, by the SDE's closed-form inverse ``t_of_log_snr``,

    .. math:: t = \Lambda^{-1}\big(\Lambda(\epsilon) + u\,(\Lambda(T) - \Lambda(\epsilon))\big).

    For VE, :math:`\Lambda` is affine in t and the proposal is uniform; for EDM it is uniform in
    :math:`\log t`.

    Args:
      key: PRNG key.
      sde: the SDE, with ``t_of_log_snr``.
      batch_size: number of times.
      eps: the smallest time.
      dtype: floating dtype of the result.

    Returns:
      ``[batch_size]`` times in ``[eps, T]``.

    Raises:
      TypeError: if ``sde`` is not an SDE.
      ValueError: for an SDE without ``t_of_log_snr`` or an ``eps`` outside (0, T).
    """
    check_log_snr_inverse(_check_sde(sde), "importance_sampling")
    eps = _check_eps(sde, eps)
    u = jax.random.uniform(key, (batch_size,), dtype)
    low = sde.log_snr(jnp.asarray(eps, dtype))
    high = sde.log_snr(jnp.asarray(sde.T, dtype))
    t = sde.t_of_log_snr(low + u * (high - low))
    return jnp.clip(t, eps, sde.T)


# ----------------------------------------------------------------------------- losses


def dsm_loss(
    key: Key,
    sde: SDE,
    score_fn: ScoreFn,
    x: Data,
    *,
    reduce_mean: bool = False,
    likelihood_weighting: bool = False,
    importance_sampling: bool = False,
    eps: float = 1e-5,
) -> LossOutput:
    r"""Continuous-time denoising score matching, as the original ``get_sde_loss_fn``.

    With :math:`t \sim U(\epsilon, T)`, :math:`z \sim N(0, I)` and
    :math:`x_t = m(t) x + s(t) z`, the per-example loss is (paper eq. 7, with
    :math:`\nabla \log p_{0t}(x_t|x) = -z/s(t)`)

    .. math:: \ell = \rho\big(\lambda(t)\,(s_\theta(x_t, t) + z / s(t))^2\big)
              = \rho\big((s(t)\, s_\theta(x_t, t) + z)^2\big) \quad (\lambda = s^2),

    or :math:`g(t)^2 \rho\big((s_\theta + z/s(t))^2\big)` with likelihood weighting
    (:math:`\lambda = g^2`). :math:`\rho` is half the sum over dimensions
    (``reduce_mean=False``, the original's convention, so that :math:`\ell = \tfrac12\lambda
    \|s_\theta - \nabla\log p_{0t}\|^2`) or the mean (``reduce_mean=True``); the sum form is
    exactly :math:`D/2` times the mean form.

    Minimum: for fixed t the expected :math:`\|s(t)\, s_\theta + z\|^2` is smallest at the true
    score of :math:`p_t`, where (by Tweedie, :math:`E[z|x_t] = -s(t)\nabla\log p_t(x_t)`) it
    equals :math:`D - s(t)^2\, E\|\nabla\log p_t(x_t)\|^2`, i.e.
    :math:`D - s^2 \mathrm{tr}\,\Sigma_t^{-1}` for Gaussian :math:`p_t = N(\cdot, \Sigma_t)`.

    Importance sampling (only with likelihood weighting) draws t from
    :math:`q(t) = g^2 / (s^2 Z)` (:func:`sample_importance_times`) and weights each example by
    :math:`g^2 / ((T - \epsilon) q(t))`; the per-example loss becomes

    .. math:: \ell = \frac{Z}{T - \epsilon}\, \rho\big((s(t)\, s_\theta + z)^2\big),

    an unbiased estimate of the same objective as uniform t with likelihood weighting, with
    much lower variance for VP and sub-VP (where :math:`g^2/s^2 \sim 1/t` near 0). For VE it
    is the uniform estimator itself.

    Args:
      key: PRNG key (split for t and z; ``score_fn`` brings its own dropout keys).
      sde: the forward SDE.
      score_fn: ``score_fn(x, t) -> score``, x ``[batch, ...]``, t ``[batch]``.
      x: clean data ``[batch, ...]``.
      reduce_mean: average over dimensions instead of half-summing.
      likelihood_weighting: :math:`\lambda = g^2` instead of :math:`s^2`.
      importance_sampling: draw t from :math:`g^2/s^2` and reweight (needs
        ``likelihood_weighting``).
      eps: the smallest time, default 1e-5 as the original.

    Returns:
      :class:`LossOutput`.

    Raises:
      TypeError: if ``sde`` is not an SDE or a flag is not a bool.
      ValueError: for ``importance_sampling`` without ``likelihood_weighting``, ``eps``
        outside (0, T), or ``x`` without a batch axis or of a non-floating dtype.
    """
    sde = _check_sde(sde)
    reduce_mean = _check_bool("reduce_mean", reduce_mean)
    likelihood_weighting = _check_bool("likelihood_weighting", likelihood_weighting)
    importance_sampling = _check_bool("importance_sampling", importance_sampling)
    if importance_sampling and not likelihood_weighting:
        raise ValueError(
            "importance_sampling=True needs likelihood_weighting=True (the proposal "
            "g^2/std^2 is for the likelihood weighting), got likelihood_weighting=False."
        )
    if importance_sampling:
        check_log_snr_inverse(sde, "importance_sampling")
    eps = _check_eps(sde, eps)
    x = _check_data(x)

    t_key, z_key = jax.random.split(key)
    dtype = _float_dtype(x)
    batch = x.shape[0]
    if importance_sampling:
        t = sample_importance_times(t_key, sde, batch, eps=eps, dtype=dtype)
    else:
        t = jax.random.uniform(t_key, (batch,), dtype, minval=eps, maxval=sde.T)
    z = jax.random.normal(z_key, x.shape, x.dtype)
    mean, std = sde.marginal_prob(x, t)
    x_t = mean + expand_to(std, x) * z
    score = score_fn(x_t, t)

    if importance_sampling:
        weight = importance_normalizer(sde, eps) / (sde.T - eps)
        per_example = weight * _reduce((expand_to(std, x) * score + z) ** 2, reduce_mean)
    elif likelihood_weighting:
        g2 = sde.diffusion_coeff(t) ** 2
        per_example = g2 * _reduce((score + z / expand_to(std, x)) ** 2, reduce_mean)
    else:
        per_example = _reduce((expand_to(std, x) * score + z) ** 2, reduce_mean)
    return _output(per_example)


def _discrete_times(index: Array, num_scales: int, dtype) -> Array:
    """Time of index i of an ascending N-entry table: t_i = i / (N - 1)."""
    return index.astype(dtype) / (num_scales - 1)


def smld_loss(
    key: Key,
    sde: DiscreteSMLD,
    score_fn: ScoreFn,
    x: Data,
    *,
    num_scales: int = 1000,
    reduce_mean: bool = False,
) -> LossOutput:
    r"""The discrete SMLD / NCSN loss (Song and Ermon 2019), as the original ``get_smld_loss_fn``.

    An index :math:`i \sim U\{0, \dots, N-1\}` picks :math:`\sigma_i` from the ascending table
    :meth:`VESDE.discrete_sigmas` ``(N)``, at time :math:`t_i = i/(N-1)` (so
    :math:`\sigma_i = \sigma(t_i)`; the original drew the same law from its descending table,
    whose label :math:`N-1-i` is what :func:`~sde_jax.models.score.time_labels` feeds a
    discrete VE network at :math:`t_i`). With :math:`\tilde x = x + \sigma_i z`,

    .. math:: \ell = \rho\big(\sigma_i^2 (s_\theta(\tilde x, t_i) + z/\sigma_i)^2\big)
              = \rho\big((\sigma_i s_\theta + z)^2\big),

    target :math:`-z/\sigma_i` and weight :math:`\sigma_i^2`; :math:`\rho` as in
    :func:`dsm_loss` (default half the sum, as the original's VE configs).

    Args:
      key: PRNG key.
      sde: a ``VESDE`` (any :class:`~sde_jax.sdes.DiscreteSMLD` SDE).
      score_fn: ``score_fn(x, t) -> score``.
      x: clean data ``[batch, ...]``.
      num_scales: N, the number of noise levels.
      reduce_mean: average over dimensions instead of half-summing.

    Returns:
      :class:`LossOutput`.

    Raises:
      ValueError: if ``sde`` is not a ``VESDE``, or for a bad ``num_scales`` or ``x``.
    """
    _check_discrete_sde(sde, DiscreteSMLD, "smld_loss", "VESDE")
    num_scales = _check_num_scales(num_scales)
    reduce_mean = _check_bool("reduce_mean", reduce_mean)
    x = _check_data(x)

    i_key, z_key = jax.random.split(key)
    index = jax.random.randint(i_key, (x.shape[0],), 0, num_scales)
    sigma = expand_to(sde.discrete_sigmas(num_scales).astype(x.dtype)[index], x)
    z = jax.random.normal(z_key, x.shape, x.dtype)
    t = _discrete_times(index, num_scales, _float_dtype(x))
    score = score_fn(x + sigma * z, t)
    return _output(_reduce((sigma * score + z) ** 2, reduce_mean))


def ddpm_loss(
    key: Key,
    sde: DiscreteDDPM,
    score_fn: ScoreFn,
    x: Data,
    *,
    num_scales: int = 1000,
    reduce_mean: bool = True,
) -> LossOutput:
    r"""The discrete DDPM epsilon loss (Ho et al. 2020), as the original ``get_ddpm_loss_fn``.

    With :math:`\bar\alpha_i = \prod_{j \le i}(1 - \beta_j)` from
    :meth:`VPSDE.discrete_betas` ``(N)``, an index :math:`i \sim U\{0, \dots, N-1\}` at time
    :math:`t_i = i/(N-1)`, and :math:`\tilde x = \sqrt{\bar\alpha_i}\, x +
    \sqrt{1 - \bar\alpha_i}\, z`, the noise prediction is read off the score,
    :math:`\hat\epsilon = -\sqrt{1 - \bar\alpha_i}\, s_\theta(\tilde x, t_i)`, and

    .. math:: \ell = \rho\big((\hat\epsilon - z)^2\big)
              = \rho\big((\sqrt{1 - \bar\alpha_i}\, s_\theta + z)^2\big),

    :math:`\rho` as in :func:`dsm_loss` (default the mean, as the original's DDPM configs).
    A score function from :func:`~sde_jax.models.score.get_score_fn` (discrete VP) multiplies
    the network output by :math:`-1/\sqrt{1 - \bar\alpha_i}`, so :math:`\hat\epsilon` is the
    network output and this is the original's loss.

    Args:
      key: PRNG key.
      sde: a ``VPSDE`` (any :class:`~sde_jax.sdes.DiscreteDDPM` SDE).
      score_fn: ``score_fn(x, t) -> score``.
      x: clean data ``[batch, ...]``.
      num_scales: N, the number of DDPM steps.
      reduce_mean: average over dimensions (default) instead of half-summing.

    Returns:
      :class:`LossOutput`.

    Raises:
      ValueError: if ``sde`` is not a ``VPSDE``, or for a bad ``num_scales`` or ``x``.
    """
    _check_discrete_sde(sde, DiscreteDDPM, "ddpm_loss", "VPSDE")
    num_scales = _check_num_scales(num_scales)
    reduce_mean = _check_bool("reduce_mean", reduce_mean)
    x = _check_data(x)

    i_key, z_key = jax.random.split(key)
    index = jax.random.randint(i_key, (x.shape[0],), 0, num_scales)
    alphas_cumprod = jnp.cumprod(1.0 - sde.discrete_betas(num_scales))
    signal = expand_to(jnp.sqrt(alphas_cumprod).astype(x.dtype)[index], x)
    noise_std = expand_to(jnp.sqrt(1.0 - alphas_cumprod).astype(x.dtype)[index], x)
    z = jax.random.normal(z_key, x.shape, x.dtype)
    t = _discrete_times(index, num_scales, _float_dtype(x))
    score = score_fn(signal * x + noise_std * z, t)
    eps_pred = -noise_std * score
    return _output(_reduce((eps_pred - z) ** 2, reduce_mean))


def get_loss_fn(
    sde: SDE,
    *,
    continuous: bool = True,
    reduce_mean: bool = False,
    likelihood_weighting: bool = False,
    importance_sampling: bool = False,
    eps: float = 1e-5,
    num_scales: int = 1000,
) -> LossFn:
    """Returns ``loss(key, score_fn, x) -> LossOutput`` for a training configuration.

    As the original ``get_step_fn``: continuous training uses :func:`dsm_loss` for any SDE;
    discrete training uses :func:`smld_loss` for an SDE with the SMLD table
    (:class:`~sde_jax.sdes.DiscreteSMLD`: VE) and :func:`ddpm_loss` for one with the DDPM table
    (:class:`~sde_jax.sdes.DiscreteDDPM`: VP). All options are checked here, before any
    tracing.

    Args:
      sde: the forward SDE.
      continuous: continuous-time DSM (else the discrete SMLD / DDPM loss).
      reduce_mean: average over dimensions instead of half-summing.
      likelihood_weighting: weight by g^2 (continuous only).
      importance_sampling: draw t from g^2/std^2 (continuous, with likelihood weighting).
      eps: smallest time of continuous training.
      num_scales: N of the discrete losses.

    Returns:
      The loss function.

    Raises:
      TypeError: if ``sde`` is not an SDE or a flag is not a bool.
      ValueError: for discrete training with an SDE without a discrete counterpart (sub-VP,
        cosine VP, EDM) or with
        likelihood weighting / importance sampling, importance sampling without likelihood
        weighting, or a bad ``eps`` / ``num_scales``.
    """
    sde = _check_sde(sde)
    continuous = _check_bool("continuous", continuous)
    reduce_mean = _check_bool("reduce_mean", reduce_mean)
    likelihood_weighting = _check_bool("likelihood_weighting", likelihood_weighting)
    importance_sampling = _check_bool("importance_sampling", importance_sampling)

    if continuous:
        if importance_sampling and not likelihood_weighting:
            raise ValueError(
                "importance_sampling=True needs likelihood_weighting=True, got "
                "likelihood_weighting=False."
            )
        if importance_sampling:
            check_log_snr_inverse(sde, "importance_sampling")
        eps = _check_eps(sde, eps)

        def continuous_loss(key: Key, score_fn: ScoreFn, x: Data) -> LossOutput:
            return dsm_loss(
                key,
                sde,
                score_fn,
                x,
                reduce_mean=reduce_mean,
                likelihood_weighting=likelihood_weighting,
                importance_sampling=importance_sampling,
                eps=eps,
            )

        return continuous_loss

    if likelihood_weighting or importance_sampling:
        raise ValueError(
            "the discrete SMLD/DDPM losses have no likelihood weighting or importance sampling, "
            f"got likelihood_weighting={likelihood_weighting}, "
            f"importance_sampling={importance_sampling} with continuous=False."
        )
    num_scales = _check_num_scales(num_scales)
    if isinstance(sde, DiscreteSMLD):
        discrete = smld_loss
    elif isinstance(sde, DiscreteDDPM):
        discrete = ddpm_loss
    else:
        raise ValueError(
            f"continuous=False needs an SDE with a discrete counterpart, a DiscreteSMLD such as "
            f"VESDE (SMLD) or a DiscreteDDPM such as VPSDE (DDPM), got {type(sde).__name__}; "
            "use continuous=True."
        )

    def discrete_loss(key: Key, score_fn: ScoreFn, x: Data) -> LossOutput:
        return discrete(key, sde, score_fn, x, num_scales=num_scales, reduce_mean=reduce_mean)

    return discrete_loss
