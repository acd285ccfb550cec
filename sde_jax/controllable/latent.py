r"""Latent manipulation through the probability-flow ODE (paper section 4.3, figure 3).

The probability-flow ODE (eq. 13) is a bijection between data at time eps and latents at T:
``encode`` integrates it forward from eps to T, ``decode`` backward from T to eps, both with
the adaptive Dormand-Prince solver of :mod:`sde_jax.ode`, so ``decode(encode(x))`` returns x
up to the solver tolerance (no final denoising step, which would not be invertible). For the
Gaussian prior, latents interpolate spherically (:func:`slerp`) and sampling can be tempered
by scaling the prior sample (:meth:`LatentCodec.sample`).
"""

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sde_jax import ode, sampling, validation
from sde_jax.adjoint import check_adjoint
from sde_jax.array_types import Array, Data, Key, ScoreFn
from sde_jax.sampling import SampleOutput
from sde_jax.sdes import SDE, probability_flow_drift


class LatentOutput(NamedTuple):
    """What :meth:`LatentCodec.encode` returns.

    Attributes:
      z: the latents at time T, shaped like the data.
      nfe: score evaluations of the solve.
      success: False when the solver stopped at its step limit or met non-finite values.
    """

    z: Array
    nfe: Array
    success: Array


def slerp(z0: Data, z1: Data, alpha: float | Array) -> Data:
    r"""Spherical interpolation of directions with linear interpolation of norms, per example.

    With :math:`u_i = z_i / \|z_i\|` and :math:`\theta = \arccos(u_0 \cdot u_1)`:

    .. math:: z(\alpha) = \big((1-\alpha)\|z_0\| + \alpha \|z_1\|\big)
              \frac{\sin((1-\alpha)\theta)\, u_0 + \sin(\alpha\theta)\, u_1}{\sin\theta}.

    The direction moves along the great circle and the norm stays between the endpoints'
    norms, i.e. on the shell where Gaussian latents concentrate (a straight line between two
    latents cuts through the low-norm interior). Nearly parallel latents fall back to linear
    interpolation of the directions.

    Args:
      z0: latents ``[batch, ...]`` at ``alpha = 0``.
      z1: latents of the same shape at ``alpha = 1``.
      alpha: a scalar in [0, 1].

    Returns:
      The interpolated latents, shaped like ``z0``.
    """
    flat0, flat1 = jnp.reshape(z0, (z0.shape[0], -1)), jnp.reshape(z1, (z1.shape[0], -1))
    n0 = jnp.linalg.norm(flat0, axis=1, keepdims=True)
    n1 = jnp.linalg.norm(flat1, axis=1, keepdims=True)
    u0, u1 = flat0 / n0, flat1 / n1
    theta = jnp.arccos(jnp.clip(jnp.sum(u0 * u1, axis=1, keepdims=True), -1.0, 1.0))
    sin = jnp.sin(theta)
    small = sin < 1e-6
    safe = jnp.where(small, 1.0, sin)
    w0 = jnp.where(small, 1.0 - alpha, jnp.sin((1.0 - alpha) * theta) / safe)
    w1 = jnp.where(small, alpha, jnp.sin(alpha * theta) / safe)
    z = ((1.0 - alpha) * n0 + alpha * n1) * (w0 * u0 + w1 * u1)
    return jnp.reshape(z, z0.shape)


@dataclasses.dataclass(frozen=True)
class LatentCodec:
    """Encoder and decoder of the probability-flow ODE; see the module docstring.

    Attributes:
      sde: the forward SDE.
      eps: the data end of the flow.
      rtol: relative tolerance of the adaptive solver.
      atol: absolute tolerance.
      max_steps: step limit; past it the output reports ``success=False``.
      adjoint: reverse mode through the solves (:mod:`sde_jax.adjoint`): None (default, no
        ``jax.grad``), ``RecursiveCheckpoint()`` or ``Backsolve()``.
    """

    sde: SDE
    eps: float
    rtol: float = 1e-5
    atol: float = 1e-5
    max_steps: int = 4096
    adjoint: Any = None

    def __post_init__(self):
        check_adjoint(self.adjoint)

    def _solve(self, score_fn: ScoreFn, x: Data, t0: float, t1: float):
        def velocity(t, x):
            return probability_flow_drift(self.sde, score_fn, x, t)

        return ode.solve_adaptive(
            velocity,
            x,
            jnp.asarray(t0, x.dtype),
            jnp.asarray(t1, x.dtype),
            rtol=self.rtol,
            atol=self.atol,
            max_steps=self.max_steps,
            adjoint=self.adjoint,
        )

    def encode(self, score_fn: ScoreFn, x: Data) -> LatentOutput:
        """Latents ``z`` at T of data ``x`` ``[batch, ...]`` at eps (forward solve)."""
        solution = self._solve(score_fn, jnp.asarray(x), self.eps, self.sde.T)
        return LatentOutput(solution.y, solution.nfe, solution.success)

    def decode(self, score_fn: ScoreFn, z: Data) -> SampleOutput:
        """Data at eps of latents ``z`` ``[batch, ...]`` at T (backward solve)."""
        solution = self._solve(score_fn, jnp.asarray(z), self.sde.T, self.eps)
        return SampleOutput(solution.y, solution.nfe, solution.success)

    def sample(
        self,
        key: Key,
        score_fn: ScoreFn,
        shape: tuple[int, ...],
        temperature: float | Array = 1.0,
        dtype: Any = jnp.float32,
    ) -> SampleOutput:
        """Decodes ``temperature`` times a prior sample (1: the model; < 1: typical samples)."""
        return self.decode(score_fn, temperature * self.sde.prior_sampling(key, shape, dtype))

    def interpolate(
        self, score_fn: ScoreFn, x0: Data, x1: Data, num: int
    ) -> tuple[SampleOutput, Array]:
        """Encodes ``x0`` and ``x1``, interpolates their latents with :func:`slerp`, decodes.

        Args:
          score_fn: the score function.
          x0: data ``[batch, ...]``.
          x1: data of the same shape.
          num: points along each path, endpoints included (``num >= 2``).

        Returns:
          ``(decoded, alphas)``: ``decoded.x`` is ``[num, batch, ...]``, point ``i`` at
          ``alphas[i]`` (``linspace(0, 1, num)``); its nfe counts the encoding too.

        Raises:
          ValueError: if ``num < 2`` or the shapes differ.
        """
        validation.integer("num", num, minimum=2)
        if jnp.shape(x0) != jnp.shape(x1):
            raise ValueError(
                f"x0 and x1 must have one shape, got {jnp.shape(x0)} and {jnp.shape(x1)}."
            )
        batch = jnp.shape(x0)[0]
        encoded = self.encode(score_fn, jnp.concatenate([x0, x1]))
        z0, z1 = encoded.z[:batch], encoded.z[batch:]
        alphas = jnp.linspace(0.0, 1.0, num, dtype=encoded.z.dtype)
        path = jax.vmap(lambda a: slerp(z0, z1, a))(alphas)
        decoded = self.decode(score_fn, jnp.reshape(path, (num * batch, *path.shape[2:])))
        return SampleOutput(
            jnp.reshape(decoded.x, path.shape),
            decoded.nfe + encoded.nfe,
            decoded.success & encoded.success,
        ), alphas


def get_latent_codec(
    sde: SDE,
    eps: float | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
    adjoint: Any = None,
) -> LatentCodec:
    """The codec of ``sde``'s probability-flow ODE, with the SDE's default ``eps``.

    ``experiment.build.latent_codec_from_config`` reads the four settings from a sampling section.

    Args:
      sde: the forward SDE.
      eps: the data end of the flow; None: ``sampling.default_eps(sde)``.
      rtol: relative tolerance of the adaptive solver.
      atol: absolute tolerance.
      max_steps: step limit.
      adjoint: None, ``sde_jax.adjoint.RecursiveCheckpoint()`` or ``Backsolve()``.

    Raises:
      ValueError: if ``eps`` is not in (0, T), a tolerance is not positive or ``max_steps``
        is not a positive integer.
    """
    eps = sampling.default_eps(sde) if eps is None else eps
    validation.interval("eps", eps, 0, sde.T, closed=(False, False))
    for name, value in (("rtol", rtol), ("atol", atol)):
        validation.interval(name, value, 0, math.inf, closed=(False, True))
    validation.integer("max_steps", max_steps, minimum=1)
    return LatentCodec(sde, eps, rtol, atol, max_steps, adjoint)
