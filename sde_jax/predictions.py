r"""What a network predicts: score, noise, data or velocity, and how they convert (one place).

Every SDE here is linear, so a sample at time t is :math:`x_t = m(t)\, x_0 + s(t)\, \epsilon`
with :math:`\epsilon \sim N(0, I)` (``sde.mean_coeff`` is m, ``sde.marginal_std`` is s). Any one
of four predictions of a network fixes the other three, given ``x`` and ``t``:

- ``"score"``: :math:`\nabla_x \log p_t(x)`, what every sampler takes (``score_fn(x, t)``);
- ``"eps"``: the noise of Ho et al. (2020), :math:`\epsilon = -s\, \nabla \log p_t`;
- ``"x0"``: the data, Tweedie's denoiser :math:`D(x, t) = E[x_0 | x_t] = (x + s^2 \nabla
  \log p_t)/m` (Karras et al. 2022, eq. 3, with x scaled by m);
- ``"v"``: the velocity of Salimans & Ho (2022, section 4), :math:`v = \alpha\epsilon -
  \sigma x_0`, with :math:`\alpha = m/r` and :math:`\sigma = s/r`, :math:`r = \sqrt{m^2 + s^2}`.
  These are the coefficients of the variance-preserving rescaling :math:`x/r = \alpha x_0 +
  \sigma \epsilon` (:math:`\alpha^2 + \sigma^2 = 1`), so for the VP SDE, where r = 1, v is the
  usual :math:`m\epsilon - s x_0`; for the VE SDE it is :math:`(\epsilon - s x_0)/\sqrt{1+s^2}`.

The array-level functions (``eps_from_score`` ...) hold the algebra; ``to_score_fn`` and
``from_score_fn`` lift it to functions ``fn(x, t)``, so samplers keep taking a plain
``score_fn(x, t)`` whatever the network predicts.

``preconditioned_denoiser`` is the preconditioning of Karras et al. (2022, table 1 and eq. 7):
a raw network :math:`F(c_{in} \hat x, c_{noise})` becomes a denoiser of any SDE through the
noise level :math:`\sigma(t) = s(t)/m(t)` of the rescaled sample :math:`\hat x = x/m = x_0 +
\sigma \epsilon`. Its ``EDMPreconditioning``, ``VEPreconditioning`` and ``VPPreconditioning``
are the table's columns.

Shapes: ``x`` and every prediction are ``[batch, ...]``; ``t`` is ``[batch]`` or a scalar
shared by the batch.
"""

import abc
import dataclasses
from collections.abc import Callable
from typing import Literal, NamedTuple, get_args

import jax
import jax.numpy as jnp

from sde_jax import validation
from sde_jax.array_types import Array, ArrayLike, Data, PerExample, ScoreFn, Times
from sde_jax.sdes import SDE, batch_times, expand_to

__all__ = [
    "PRECONDITIONINGS",
    "PREDICTIONS",
    "EDMPreconditioning",
    "Network",
    "Preconditioning",
    "Prediction",
    "PredictionFn",
    "Scalings",
    "VEPreconditioning",
    "VPPreconditioning",
    "convert",
    "eps_from_score",
    "from_score_fn",
    "get_preconditioning",
    "preconditioned_denoiser",
    "preconditioned_score_fn",
    "score_from_eps",
    "score_from_v",
    "score_from_x0",
    "to_score_fn",
    "v_from_score",
    "x0_from_score",
]

Prediction = Literal["score", "eps", "x0", "v"]
PREDICTIONS: tuple[str, ...] = get_args(Prediction)

PredictionFn = Callable[[Data, PerExample], Data]
"""``fn(x, t) -> prediction``: x ``[batch, ...]``, t ``[batch]``, the prediction shaped like x."""

Network = Callable[[Data, PerExample], Data]
"""``network(x_in, c_noise) -> F``: the raw network of Karras et al., c_noise ``[batch]``."""


def _check_sde(sde: object) -> None:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an sde_jax.SDE, got {sde!r} of type {type(sde).__name__}.")


def _coefficients(sde: SDE, x: Data, t: Times, value: ArrayLike) -> tuple[Array, Array]:
    """``m(t)`` and ``s(t)`` shaped to broadcast against ``x``, after checking the arguments."""
    _check_sde(sde)
    if jnp.shape(value) != jnp.shape(x):
        raise ValueError(
            f"the prediction must have the shape of x, {jnp.shape(x)}, got {jnp.shape(value)}."
        )
    t = batch_times(x, t)
    return expand_to(sde.mean_coeff(t), x), expand_to(sde.marginal_std(t), x)


def eps_from_score(sde: SDE, x: Data, t: Times, score: Data) -> Data:
    r"""The noise prediction :math:`\epsilon = -s(t)\, \nabla \log p_t(x)`."""
    _, s = _coefficients(sde, x, t, score)
    return -s * score


def score_from_eps(sde: SDE, x: Data, t: Times, eps: Data) -> Data:
    r"""The score :math:`-\epsilon / s(t)`: the inverse of :func:`eps_from_score`."""
    _, s = _coefficients(sde, x, t, eps)
    return -eps / s


def x0_from_score(sde: SDE, x: Data, t: Times, score: Data) -> Data:
    r"""Tweedie's denoiser :math:`D = E[x_0 | x_t] = (x + s^2 \nabla \log p_t(x)) / m`.

    Exact for any data distribution given the exact score (Tweedie's formula, Efron 2011;
    Karras et al. 2022, eq. 3, with x scaled by m).
    """
    m, s = _coefficients(sde, x, t, score)
    return (x + s**2 * score) / m


def score_from_x0(sde: SDE, x: Data, t: Times, x0: Data) -> Data:
    r"""The score :math:`(m x_0 - x) / s^2`: the inverse of :func:`x0_from_score`."""
    m, s = _coefficients(sde, x, t, x0)
    return (m * x0 - x) / s**2


def v_from_score(sde: SDE, x: Data, t: Times, score: Data) -> Data:
    r"""The velocity :math:`v = \alpha \epsilon - \sigma x_0 = (m \epsilon - s x_0)/r`.

    :math:`\alpha = m/r`, :math:`\sigma = s/r`, :math:`r = \sqrt{m^2 + s^2}` (the module
    docstring's convention), with :math:`\epsilon` and :math:`x_0` the noise and data
    predictions of the score.
    """
    m, s = _coefficients(sde, x, t, score)
    eps, x0 = eps_from_score(sde, x, t, score), x0_from_score(sde, x, t, score)
    return (m * eps - s * x0) / jnp.sqrt(m**2 + s**2)


def score_from_v(sde: SDE, x: Data, t: Times, v: Data) -> Data:
    r"""The score from the velocity: the inverse of :func:`v_from_score`.

    :math:`\epsilon = \sigma x/r + \alpha v` (Salimans & Ho 2022, section 4, with the module
    docstring's :math:`\alpha, \sigma, r`), and the score is :math:`-\epsilon / s`.
    """
    m, s = _coefficients(sde, x, t, v)
    r = jnp.sqrt(m**2 + s**2)
    eps = (s * x / r + m * v) / r
    return -eps / s


_TO_SCORE = {
    "eps": score_from_eps,
    "x0": score_from_x0,
    "v": score_from_v,
}
_FROM_SCORE = {
    "eps": eps_from_score,
    "x0": x0_from_score,
    "v": v_from_score,
}


def convert(
    sde: SDE, x: Data, t: Times, value: Data, source: Prediction, target: Prediction
) -> Data:
    """Converts a ``source`` prediction at ``(x, t)`` into the ``target`` one, through the score.

    Args:
      sde: the forward SDE.
      x: the noisy batch, ``[batch, ...]``.
      t: its times, ``[batch]`` or ``()``.
      value: the ``source`` prediction, shaped like ``x``.
      source: what ``value`` is: ``"score"``, ``"eps"``, ``"x0"`` or ``"v"``.
      target: the prediction to return, one of the same four.

    Returns:
      The ``target`` prediction, shaped like ``x``.

    Raises:
      ValueError: if ``source`` or ``target`` is not a prediction, or a shape does not match.
    """
    source = validation.choice("source", source, PREDICTIONS)
    target = validation.choice("target", target, PREDICTIONS)
    if source == target:
        return value
    score = value if source == "score" else _TO_SCORE[source](sde, x, t, value)
    return score if target == "score" else _FROM_SCORE[target](sde, x, t, score)


def _check_fn(name: str, fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be a function fn(x, t), got {fn!r}.")


def to_score_fn(sde: SDE, fn: PredictionFn, prediction: Prediction) -> ScoreFn:
    """Turns a network's ``fn(x, t) -> prediction`` into the ``score_fn(x, t)`` samplers take.

    Args:
      sde: the forward SDE.
      fn: ``fn(x, t)`` predicting ``prediction``; it receives t as ``[batch]``.
      prediction: what ``fn`` predicts: ``"score"`` (returned as is), ``"eps"``, ``"x0"`` or
        ``"v"``.

    Returns:
      ``score_fn(x, t)``, t ``[batch]`` or ``()``.

    Raises:
      TypeError: if ``sde`` is not an SDE or ``fn`` is not callable.
      ValueError: if ``prediction`` is not one of the four.
    """
    prediction = validation.choice("prediction", prediction, PREDICTIONS)
    _check_sde(sde)
    _check_fn("fn", fn)
    if prediction == "score":
        return fn
    to_score = _TO_SCORE[prediction]

    def score_fn(x: Data, t: Times) -> Data:
        return to_score(sde, x, t, fn(x, batch_times(x, t)))

    return score_fn


def from_score_fn(sde: SDE, score_fn: ScoreFn, prediction: Prediction) -> PredictionFn:
    """Turns ``score_fn(x, t)`` into ``fn(x, t) -> prediction``; the inverse of ``to_score_fn``.

    ``from_score_fn(sde, score_fn, "x0")`` is the denoiser D(x, t) of the fast solvers.

    Args:
      sde: the forward SDE.
      score_fn: ``score_fn(x, t)``; it receives t as ``[batch]``.
      prediction: ``"score"``, ``"eps"``, ``"x0"`` or ``"v"``.

    Returns:
      ``fn(x, t)``, t ``[batch]`` or ``()``.

    Raises:
      TypeError: if ``sde`` is not an SDE or ``score_fn`` is not callable.
      ValueError: if ``prediction`` is not one of the four.
    """
    prediction = validation.choice("prediction", prediction, PREDICTIONS)
    _check_sde(sde)
    _check_fn("score_fn", score_fn)
    if prediction == "score":
        return score_fn
    from_score = _FROM_SCORE[prediction]

    def fn(x: Data, t: Times) -> Data:
        return from_score(sde, x, t, score_fn(x, batch_times(x, t)))

    return fn


# --- EDM preconditioning (Karras et al. 2022, table 1) ---------------------------------------


class Scalings(NamedTuple):
    r"""The four functions of :math:`\sigma` of Karras et al. (2022), table 1.

    ``D = c_skip * x_hat + c_out * F(c_in * x_hat, c_noise)`` (their eq. 7). Each is shaped
    like the ``sigma`` it was computed from.
    """

    c_skip: Array
    c_out: Array
    c_in: Array
    c_noise: Array


def _register(cls: type) -> type:
    """Makes a frozen dataclass a pytree whose fields are static (hashable) metadata."""
    fields = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(cls, data_fields=[], meta_fields=fields)


class Preconditioning(abc.ABC):
    """A column of Karras et al.'s table 1: the scalings as functions of the noise level."""

    @abc.abstractmethod
    def scalings(self, sigma: ArrayLike) -> Scalings:
        r"""``c_skip, c_out, c_in, c_noise`` at the noise level :math:`\sigma` (any shape)."""


@_register
@dataclasses.dataclass(frozen=True)
class EDMPreconditioning(Preconditioning):
    r"""Karras et al.'s own preconditioning (table 1, "EDM"): unit-variance input and target.

    .. math:: c_{skip} = \frac{\sigma_d^2}{\sigma^2 + \sigma_d^2},\
              c_{out} = \frac{\sigma \sigma_d}{\sqrt{\sigma^2 + \sigma_d^2}},\
              c_{in} = \frac{1}{\sqrt{\sigma^2 + \sigma_d^2}},\
              c_{noise} = \tfrac14 \ln \sigma.

    Attributes:
      sigma_data: :math:`\sigma_d`, the data's standard deviation, default 0.5.
    """

    sigma_data: float = 0.5

    def __post_init__(self):
        object.__setattr__(self, "sigma_data", validation.positive("sigma_data", self.sigma_data))

    def scalings(self, sigma: ArrayLike) -> Scalings:
        """See the class docstring."""
        sigma = jnp.asarray(sigma)
        sd2 = self.sigma_data**2
        total = sigma**2 + sd2
        return Scalings(
            c_skip=sd2 / total,
            c_out=sigma * self.sigma_data / jnp.sqrt(total),
            c_in=1.0 / jnp.sqrt(total),
            c_noise=0.25 * jnp.log(sigma),
        )


@_register
@dataclasses.dataclass(frozen=True)
class VEPreconditioning(Preconditioning):
    r"""The VE column of table 1 (NCSN++ of Song et al. 2021): F predicts :math:`(D-\hat x)/\sigma`.

    .. math:: c_{skip} = 1,\ c_{out} = \sigma,\ c_{in} = 1,\ c_{noise} = \ln(\sigma / 2).
    """

    def scalings(self, sigma: ArrayLike) -> Scalings:
        """See the class docstring."""
        sigma = jnp.asarray(sigma)
        ones = jnp.ones_like(sigma)
        return Scalings(c_skip=ones, c_out=sigma, c_in=ones, c_noise=jnp.log(0.5 * sigma))


@_register
@dataclasses.dataclass(frozen=True)
class VPPreconditioning(Preconditioning):
    r"""The VP column of table 1 (DDPM++ of Song et al. 2021): the network predicts the noise.

    .. math:: c_{skip} = 1,\ c_{out} = -\sigma,\ c_{in} = \frac{1}{\sqrt{\sigma^2 + 1}},\
              c_{noise} = (M - 1)\, t(\sigma),

    where :math:`t(\sigma) = (\sqrt{\beta_{min}^2 + 2\beta_d \ln(1 + \sigma^2)} - \beta_{min})
    / \beta_d`, :math:`\beta_d = \beta_{max} - \beta_{min}`, inverts the VP noise level
    :math:`\sigma(t) = \sqrt{e^{\beta_{min} t + \beta_d t^2/2} - 1}` in closed form.

    Attributes:
      beta_min: the VP SDE's :math:`\beta(0)`, default 0.1.
      beta_max: its :math:`\beta(1)`, default 20 (Karras et al.'s :math:`\beta_d = 19.9`).
      num_timesteps: M, default 1000: the network sees :math:`(M-1) t`, as the original's.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    num_timesteps: int = 1000

    def __post_init__(self):
        beta_max = validation.positive("beta_max", self.beta_max)
        beta_min = validation.real("beta_min", self.beta_min)
        if not 0 <= beta_min < beta_max:
            raise ValueError(
                f"beta_min must satisfy 0 <= beta_min < beta_max = {beta_max}, "
                f"got beta_min={self.beta_min!r}."
            )
        validation.integer("num_timesteps", self.num_timesteps, minimum=2)
        object.__setattr__(self, "beta_min", beta_min)
        object.__setattr__(self, "beta_max", beta_max)

    def time_of_sigma(self, sigma: ArrayLike) -> Array:
        r"""The VP time :math:`t(\sigma)` of the class docstring, in closed form."""
        beta_d = self.beta_max - self.beta_min
        sigma = jnp.asarray(sigma)
        root = jnp.sqrt(self.beta_min**2 + 2.0 * beta_d * jnp.log1p(sigma**2))
        return (root - self.beta_min) / beta_d

    def scalings(self, sigma: ArrayLike) -> Scalings:
        """See the class docstring."""
        sigma = jnp.asarray(sigma)
        return Scalings(
            c_skip=jnp.ones_like(sigma),
            c_out=-sigma,
            c_in=1.0 / jnp.sqrt(sigma**2 + 1.0),
            c_noise=(self.num_timesteps - 1) * self.time_of_sigma(sigma),
        )


PRECONDITIONINGS: dict[str, type[Preconditioning]] = {
    "edm": EDMPreconditioning,
    "ve": VEPreconditioning,
    "vp": VPPreconditioning,
}


def get_preconditioning(name: str, **kwargs) -> Preconditioning:
    """The preconditioning called ``name`` (``"edm"``, ``"ve"``, ``"vp"``), for config builders.

    Raises:
      ValueError: if ``name`` is none of them (or a keyword argument is out of range).
      TypeError: if a keyword argument is not a field of that preconditioning.
    """
    validation.choice("preconditioning", name, PRECONDITIONINGS, sort=True)
    return PRECONDITIONINGS[name](**kwargs)


def preconditioned_denoiser(
    sde: SDE, network: Network, preconditioning: Preconditioning = EDMPreconditioning()
) -> PredictionFn:
    r"""Turns a raw network into the denoiser ``D(x, t)`` of any SDE (Karras et al. 2022, eq. 7).

    With :math:`\sigma = s(t)/m(t)` and :math:`\hat x = x / m(t) = x_0 + \sigma \epsilon`,

    .. math:: D(x, t) = c_{skip}(\sigma)\, \hat x
              + c_{out}(\sigma)\, F\big(c_{in}(\sigma)\, \hat x,\ c_{noise}(\sigma)\big).

    Args:
      sde: the forward SDE.
      network: ``F(x_in, c_noise)``, x_in ``[batch, ...]``, c_noise ``[batch]``.
      preconditioning: a :class:`Preconditioning` (default ``EDMPreconditioning()``).

    Returns:
      ``D(x, t) -> x0``, t ``[batch]`` or ``()``; ``to_score_fn(sde, D, "x0")`` gives the score.

    Raises:
      TypeError: if an argument is of the wrong type.
    """
    _check_sde(sde)
    if not callable(network):
        raise TypeError(f"network must be a function F(x_in, c_noise), got {network!r}.")
    if not isinstance(preconditioning, Preconditioning):
        raise TypeError(
            "preconditioning must be an EDMPreconditioning, VEPreconditioning or "
            f"VPPreconditioning (see get_preconditioning), got {preconditioning!r}."
        )

    def denoiser(x: Data, t: Times) -> Data:
        t = batch_times(x, t)
        m = sde.mean_coeff(t)
        sigma = sde.marginal_std(t) / m
        c = preconditioning.scalings(sigma)
        x_hat = x / expand_to(m, x)
        output = network(expand_to(c.c_in, x) * x_hat, c.c_noise)
        return expand_to(c.c_skip, x) * x_hat + expand_to(c.c_out, x) * output

    return denoiser


def preconditioned_score_fn(
    sde: SDE, network: Network, preconditioning: Preconditioning = EDMPreconditioning()
) -> ScoreFn:
    """The ``score_fn(x, t)`` of :func:`preconditioned_denoiser`: what the samplers take."""
    return to_score_fn(sde, preconditioned_denoiser(sde, network, preconditioning), "x0")
