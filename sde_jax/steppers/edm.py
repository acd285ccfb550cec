r"""EDM's samplers (Karras et al. 2022): Heun's method in the noise level, with optional churn.

EDM integrates the probability-flow ODE with the noise level :math:`\sigma` as time and the
data scaled to unit signal (Karras et al. 2022, sec. 4, eq. 4 with :math:`s = 1`). Every SDE of
sde_jax is linear, :math:`x_t = m(t) x_0 + s(t) z`, so with

.. math:: \hat x = x / m(t) = x_0 + \sigma z, \qquad \sigma(t) = s(t) / m(t)

the scaled sample is EDM's noisy sample at noise level :math:`\sigma`, whatever the SDE. Its
denoiser is the data prediction at the unscaled sample,
:math:`D(\hat x; \sigma) = E[x_0 | x_t = m(t)\hat x]` (``predictions.from_score_fn(sde,
score_fn, "x0")`` at ``(m(t) * x_hat, t)``, with :math:`t = \sigma^{-1}(\sigma)`).

General-SDE form of EDM's ODE. The probability-flow ODE (Song et al. 2021, eq. 13) is
:math:`\dot x = f x - \tfrac12 g^2 \nabla\log p_t(x)`. From :math:`\dot m = f m` and
:math:`(s^2)^\cdot = 2 f s^2 + g^2` with :math:`s = m\sigma`, :math:`g^2 = 2 m^2 \sigma
\dot\sigma`; Tweedie's formula gives :math:`\nabla\log p_t(x) = (D - \hat x)/(m \sigma^2)`.
So :math:`\dot x = f x + m (\dot\sigma/\sigma)(\hat x - D)`, and as
:math:`\dot{\hat x} = (\dot x - f x)/m`,

.. math:: \frac{d\hat x}{d\sigma} = \frac{\hat x - D(\hat x; \sigma)}{\sigma},

EDM's eq. 4 with :math:`\sigma(t) = t`, :math:`s(t) = 1` (their "Ours" column of table 1). It
holds for VP, sub-VP, VE, cosine VP and EDM alike; for VE and EDM, :math:`m = 1` and
:math:`\hat x = x`, and the steps below are the paper's formulas verbatim. This is also what
NVlabs/edm's ``ablation_sampler`` computes with its scaling :math:`s(t)` equal to our m(t)
(there, the churned sample is :math:`s(\hat t)/s(t)\,x + \sqrt{\hat\sigma^2 - \sigma^2}\,
s(\hat t)\, S_{noise}\, z`, which is ours multiplied out).

The steppers carry ``x`` in the SDE's own scale (so they compose with the rest of sde_jax),
convert to :math:`\hat x` at the start of a step and back at its end. Their grids come from
:func:`sde_jax.grids.karras_grid` (rho = 7, EDM's eq. 5), the recommended default.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp

from sde_jax import predictions, validation
from sde_jax.array_types import Array, Key, ScoreFn
from sde_jax.sdes import SDE, batch_times, expand_to
from sde_jax.steppers.base import Memoryless, State, register_static

__all__ = ["EDMHeun", "EDMStochastic", "churn_gamma", "heun_in_sigma"]


def _check_sde(sde: object) -> None:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sde_jax.SDE, got {sde!r} of type {type(sde).__name__}.")


def _denoised(sde: SDE, score_fn: ScoreFn, x_hat: Array, t: Array) -> Array:
    r""":math:`D(\hat x; \sigma(t))`: the data prediction at :math:`x = m(t)\hat x`."""
    m = expand_to(sde.mean_coeff(batch_times(x_hat, t)), x_hat)
    return predictions.from_score_fn(sde, score_fn, "x0")(m * x_hat, t)


def heun_in_sigma(sde: SDE, score_fn: ScoreFn, x: Array, t: Array, t_next: Array) -> Array:
    r"""One Heun step of EDM's ODE in :math:`\sigma` (Karras et al. 2022, Algorithm 1, lines 3-7).

    With :math:`\hat x = x/m(t)`, :math:`\sigma = \sigma(t)`, :math:`\sigma' = \sigma(t_{next})`:

    .. math:: d = \frac{\hat x - D(\hat x; \sigma)}{\sigma}, \quad
              \hat x_E = \hat x + (\sigma' - \sigma)\, d, \quad
              d' = \frac{\hat x_E - D(\hat x_E; \sigma')}{\sigma'}, \quad
              \hat x_{next} = \hat x + (\sigma' - \sigma)\,\tfrac12 (d + d'),

    and :math:`x_{next} = m(t_{next})\hat x_{next}`. Where :math:`\sigma' = 0` the step is
    Euler's, :math:`\hat x_E` (Algorithm 1, line 8); sde_jax's grids end at eps > 0, so on
    them every step is a Heun step.

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(x, t) -> score``.
      x: the batch at ``t``, ``[batch, ...]``, in the SDE's scale.
      t: the current time, a scalar.
      t_next: the next time, a scalar with ``sigma(t_next) < sigma(t)``.

    Returns:
      The batch at ``t_next``, in the SDE's scale.
    """
    sigma, sigma_next = sde.sigma(t), sde.sigma(t_next)
    x_hat = x / sde.mean_coeff(t)
    d = (x_hat - _denoised(sde, score_fn, x_hat, t)) / sigma
    x_euler = x_hat + (sigma_next - sigma) * d
    # Double where: the Heun branch's division must not poison gradients where sigma' = 0.
    heun = sigma_next > 0
    safe_sigma_next = jnp.where(heun, sigma_next, 1.0)
    d_next = (x_euler - _denoised(sde, score_fn, x_euler, t_next)) / safe_sigma_next
    x_heun = x_hat + (sigma_next - sigma) * (0.5 * d + 0.5 * d_next)
    return sde.mean_coeff(t_next) * jnp.where(heun, x_heun, x_euler)


@register_static
@dataclasses.dataclass(frozen=True)
class EDMHeun(Memoryless):
    r"""EDM's deterministic sampler: Heun's method in :math:`\sigma` (Karras et al. 2022, Alg. 1).

    One step from t to ``t_next`` is :func:`heun_in_sigma`: two evaluations, second order, for
    any SDE through :math:`\sigma(t) = s/m` and :math:`m(t)` (see the module docstring). On the
    Karras grid (``grids.karras_grid``, rho = 7) with EDM's 18 steps it costs 36 evaluations
    (EDM's own sampler skips the correction of its last step, to sigma = 0: 35).

    This differs from ``ProbabilityFlow(sde, ode.HEUN)``, Heun's method in t on the unscaled
    ODE, except for ``EDMSDE`` (t is sigma and m = 1: the same steps). Which is more accurate
    depends on the SDE and the data: on the same Karras grid and a Gaussian, Heun in t has
    about 3x the error of this stepper on VE (18 and 36 evaluations), but on VP about 0.15x,
    because there a Gaussian with variances near 1 moves almost in a straight line in t, while
    its scaled trajectory :math:`\hat x(\sigma)` bends where :math:`\sigma^2` meets the
    variances. (EDM's sec. 3 argues for sigma on image data, whose variances span scales.)

    The state is ``State(x, x_mean=x, history=())``: no memory between steps.

    Reference: NVlabs/edm ``generate.py`` (``edm_sampler`` with ``S_churn = 0``), k-diffusion
    ``sample_heun``.

    Attributes:
      sde: the forward SDE.

    Raises:
      TypeError: if ``sde`` is not an ``sde_jax.SDE``.
    """

    sde: SDE
    order = 2
    nfe_per_step = 2

    def __post_init__(self):
        _check_sde(self.sde)

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """One Heun step in sigma from ``t`` to ``t_next``; ``key`` is unused."""
        del key
        x = heun_in_sigma(self.sde, score_fn, state.x, t, t_next)
        return state._replace(x=x, x_mean=x)


def churn_gamma(
    sigma: Array, num_steps: int, s_churn: float, s_tmin: float, s_tmax: float
) -> Array:
    r"""EDM's churn :math:`\gamma_i` (Karras et al. 2022, Algorithm 2, line 4).

    .. math:: \gamma_i = \min(S_{churn}/N, \sqrt2 - 1) \text{ if } \sigma_i \in [S_{tmin},
              S_{tmax}], \text{ else } 0.
    """
    gamma_max = min(s_churn / num_steps, math.sqrt(2.0) - 1.0)
    return jnp.where((sigma >= s_tmin) & (sigma <= s_tmax), gamma_max, 0.0).astype(sigma.dtype)


@register_static
@dataclasses.dataclass(frozen=True)
class EDMStochastic(Memoryless):
    r"""EDM's stochastic sampler (Karras et al. 2022, Algorithm 2): churn, then a Heun step.

    At :math:`\sigma = \sigma(t)`, with :math:`\gamma` = :func:`churn_gamma` and
    :math:`\hat\sigma = (1 + \gamma)\sigma`, the step first raises the noise level in the
    scaled variable :math:`\hat x = x/m(t)` (Algorithm 2, lines 5-6),

    .. math:: \hat x \leftarrow \hat x + \sqrt{\hat\sigma^2 - \sigma^2}\, S_{noise}\, z,
              \quad z \sim N(0, I),

    (computed as :math:`\sigma\sqrt{\gamma(2 + \gamma)}`, the same number, whose gradient is
    finite at :math:`\gamma = 0`), then takes :func:`heun_in_sigma` from :math:`\hat\sigma`,
    at the time :math:`\hat t = \sigma^{-1}(\hat\sigma)`, to :math:`\sigma(t_{next})` (lines
    7-10). Where :math:`\gamma = 0` (``s_churn = 0``, or :math:`\sigma` outside
    :math:`[S_{tmin}, S_{tmax}]`) the step is exactly :class:`EDMHeun`'s.

    Beyond the horizon. :math:`\hat\sigma` may exceed :math:`\sigma(T)` (on the first steps,
    when ``s_tmax >= sigma(T)``), so :math:`\hat t > T`. Every SDE of sde_jax defines its
    :math:`\sigma^{-1}` there (VP and sub-VP: the linear beta continued, :math:`\hat t`
    slightly above 1; cosine VP: :math:`\hat t \in (T, 1)`, still finite; VE and EDM: the
    same formula continued), and the step evaluates the score at :math:`\hat t` as EDM
    evaluates its network at :math:`\hat\sigma > \sigma_{max}`. A network trained on
    :math:`[0, T]` then extrapolates; keep ``s_tmax`` below :math:`\sigma(T)` (as EDM's
    table 5 does) to avoid it.

    Parameters of EDM (Karras et al. 2022, table 5): CIFAR-10 VP: S_churn 30, S_tmin 0.01,
    S_tmax 1, S_noise 1.007; CIFAR-10 VE: 80, 0.05, 1, 1.007; ImageNet-64, their model with
    256 steps (511 evaluations): 40, 0.05, 50, 1.003 (this row is also in NVlabs/edm's README
    and example.py; the CIFAR-10 rows are from the paper as we recall it, not checked here).
    Churn adds discretization error at a fixed step count (on exact scores the deterministic
    sampler is already consistent; EDM uses churn to correct a learned score's errors), so it
    needs more steps than :class:`EDMHeun` for the same accuracy.

    The state is ``State(x, x_mean=x, history=())``: the noise enters before the Heun step,
    so the step's result is already noise-free.

    Reference: NVlabs/edm ``generate.py`` (``edm_sampler``, ``ablation_sampler``), k-diffusion
    ``sample_heun`` (the same rule with ``len(sigmas) - 1`` as N).

    Attributes:
      sde: the forward SDE; it must define ``t_of_sigma`` (every SDE of sde_jax does).
      num_steps: N, the number of steps of the grid the sampler runs on (it sets
        :math:`\gamma`; a stepper sees one step at a time, so it is given here).
      s_churn: :math:`S_{churn} \ge 0`, the total churn; 0 gives :class:`EDMHeun`.
      s_tmin: :math:`S_{tmin}`, the lowest noise level that is churned.
      s_tmax: :math:`S_{tmax} \ge S_{tmin}`, the highest (``inf`` allowed).
      s_noise: :math:`S_{noise} \ge 0`, the scale of the added noise (slightly above 1 in EDM).

    Raises:
      TypeError: if ``sde`` is not an SDE, or a parameter is not a number.
      ValueError: for ``num_steps`` not a positive integer, ``s_churn < 0``, ``s_noise < 0``,
        ``s_tmin > s_tmax``, or an SDE without the inverse of its noise level.
    """

    sde: SDE
    num_steps: int
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0
    order = 2
    nfe_per_step = 2

    def __post_init__(self):
        _check_sde(self.sde)
        sde_type = type(self.sde)
        if sde_type.t_of_sigma is SDE.t_of_sigma and sde_type.t_of_log_snr is SDE.t_of_log_snr:
            raise ValueError(
                f"EDMStochastic needs the inverse of the noise level (t_of_sigma, or "
                f"t_of_log_snr), which {sde_type.__name__} does not define; every SDE of "
                "sde_jax does (VPSDE, SubVPSDE, VESDE, CosineVPSDE, EDMSDE)."
            )
        validation.integer("num_steps", self.num_steps, minimum=1)
        values = {
            "s_churn": validation.real("s_churn", self.s_churn),
            "s_tmin": validation.real("s_tmin", self.s_tmin),
            "s_tmax": validation.real("s_tmax", self.s_tmax, allow_inf=True),
            "s_noise": validation.real("s_noise", self.s_noise),
        }
        for name in ("s_churn", "s_noise"):
            validation.interval(name, values[name], 0.0, math.inf)
        if values["s_tmin"] > values["s_tmax"]:
            raise ValueError(
                f"s_tmin must be <= s_tmax, got s_tmin={values['s_tmin']} > "
                f"s_tmax={values['s_tmax']}."
            )
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def step(self, key: Key, score_fn: ScoreFn, state: State, t: Array, t_next: Array) -> State:
        """Churn at ``t`` with ``key``, then a Heun step in sigma to ``t_next``."""
        x, sigma = state.x, self.sde.sigma(t)
        gamma = churn_gamma(sigma, self.num_steps, self.s_churn, self.s_tmin, self.s_tmax)
        sigma_hat = (1.0 + gamma) * sigma
        noise_std = self.s_noise * sigma * jnp.sqrt(gamma * (2.0 + gamma))
        z = jax.random.normal(key, x.shape, x.dtype)
        t_hat = self.sde.t_of_sigma(sigma_hat).astype(jnp.result_type(t))
        x_hat = x / self.sde.mean_coeff(t) + noise_std.astype(x.dtype) * z
        churned = gamma > 0
        # Unchurned steps keep x and t themselves: EDMHeun's step, bit for bit when s_churn = 0
        # (when gamma = 0 is known only at run time, up to a differently fused program's
        # rounding).
        t_hat = jnp.where(churned, t_hat, t)
        x = jnp.where(churned, self.sde.mean_coeff(t_hat) * x_hat, x)
        x = heun_in_sigma(self.sde, score_fn, x, t_hat, t_next)
        return state._replace(x=x, x_mean=x)
