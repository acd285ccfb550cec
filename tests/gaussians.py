"""Gaussian and Gaussian-mixture data, whose perturbed scores are closed form under every SDE.

Under a linear SDE, data N(mu, C) become N(m(t) mu, m(t)^2 C + s(t)^2 I) at time t.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from sde_jax.sdes import SDE


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """N(mean, U diag(eigs) U^T) with a rotated (non-diagonal) covariance."""

    mean: np.ndarray
    rotation: np.ndarray
    eigs: np.ndarray

    @classmethod
    def random(cls, dim, seed=0, low=0.2, high=2.0):
        rng = np.random.default_rng(seed)
        rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        eigs = np.exp(np.linspace(np.log(low), np.log(high), dim))
        return cls(0.5 * rng.standard_normal(dim), rotation, eigs)

    @property
    def cov(self):
        return (self.rotation * self.eigs) @ self.rotation.T

    def variances_at(self, sde, t):
        """Eigenvalues of the covariance of p_t, [batch, dim]."""
        m, s = sde.mean_coeff(t), sde.marginal_std(t)
        return m[:, None] ** 2 * self.eigs + s[:, None] ** 2

    def score_fn(self, sde):
        def score(x, t):
            rot = jnp.asarray(self.rotation, x.dtype)
            centred = x - sde.mean_coeff(t)[:, None] * jnp.asarray(self.mean, x.dtype)
            return -((centred @ rot) / self.variances_at(sde, t).astype(x.dtype)) @ rot.T

        return score

    def sample(self, key, n):
        z = jax.random.normal(key, (n, self.mean.size))
        return self.mean + (z * np.sqrt(self.eigs)) @ self.rotation.T

    def flow_map(self, sde, x, t_from, t_to):
        """The exact probability-flow ODE map from t_from to t_to (each eigendirection scales
        its centred coordinate by sqrt(v(t_to) / v(t_from)))."""
        ones = jnp.ones(x.shape[0], x.dtype)
        v_from, v_to = self.variances_at(sde, t_from * ones), self.variances_at(sde, t_to * ones)
        mu_from = sde.mean_coeff(t_from) * self.mean
        mu_to = sde.mean_coeff(t_to) * self.mean
        coords = (x - mu_from) @ self.rotation * jnp.sqrt(v_to / v_from)
        return mu_to + coords @ self.rotation.T


@dataclasses.dataclass(frozen=True)
class Mixture:
    """sum_k w_k N(centres_k, scale^2 I)."""

    weights: np.ndarray
    centres: np.ndarray
    scale: float

    def score_fn(self, sde):
        def score(x, t):
            m, s = sde.mean_coeff(t)[:, None], sde.marginal_std(t)[:, None]
            var = m**2 * self.scale**2 + s**2  # [batch, 1]
            diff = x[:, None, :] - m[:, None] * self.centres  # [batch, k, dim]
            logits = jnp.log(self.weights) - 0.5 * jnp.sum(diff**2, -1) / var
            resp = jax.nn.softmax(logits, axis=-1)
            return -jnp.einsum("bk,bkd->bd", resp, diff) / var

        return score

    def sample(self, key, n):
        k1, k2 = jax.random.split(key)
        labels = jax.random.choice(k1, len(self.weights), (n,), p=jnp.asarray(self.weights))
        return self.centres[labels] + self.scale * jax.random.normal(k2, (n, self.centres.shape[1]))

    def assign(self, x):
        """Index of the nearest centre for each sample."""
        return np.argmin(((np.asarray(x)[:, None] - self.centres) ** 2).sum(-1), axis=1)


def energy_distance(x, y):
    """The (V-statistic) energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'|; 0 iff equal laws."""
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)

    def mean_dist(a, b):
        return jnp.mean(jnp.sqrt(jnp.maximum(jnp.sum((a[:, None] - b[None]) ** 2, -1), 1e-12)))

    return float(2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y))


class BrownianSDE(SDE):
    """dx = dw on [0, 1], as a user would write it: m = 1, s = sqrt(t), no closed-form inverse
    of its log-SNR (for the generic geometry and the errors that need the inverse)."""

    prior_std = 1.0

    def drift_coeff(self, t):
        return jnp.zeros_like(t)

    def diffusion_coeff(self, t):
        return jnp.ones_like(t)

    def mean_coeff(self, t):
        return jnp.ones_like(t)

    def marginal_std(self, t):
        return jnp.sqrt(t)


DIM = 32
DATA = Gaussian.random(DIM, seed=0)
# The Langevin corrector's per-example step makes its chain target p * |score|^2 rather than p
# (see steppers.Langevin): a relative variance inflation of order 2 / dim, so it is tested on
# 128-dimensional data.
DATA_128 = Gaussian.random(128, seed=0, low=0.5, high=2.0)


@functools.cache
def true_energy_bound(dim, n):
    """Four times the mean energy distance between independent true sample sets of size n."""
    data = DATA if dim == DIM else DATA_128
    keys = jax.random.split(jax.random.key(123), 8)
    dists = [
        energy_distance(data.sample(keys[2 * i], n), data.sample(keys[2 * i + 1], n))
        for i in range(4)
    ]
    return 4 * float(np.mean(dists))


def check_gaussian_samples(x, data=DATA, bias=0.02):
    """Moments and a two-sample statistic against the data distribution.

    - Mean: Hotelling's n d^T C^-1 d is chi^2(dim) for exact samples; allow 1.5x its 99.99%
      quantile.
    - Covariance: the variance along each eigendirection divided by the true one. Exact samples
      give ratios with standard error sqrt(2 / n) each and sqrt(2 / (n dim)) on their mean;
      allow 5 standard errors plus ``bias`` (the sampler's discretization bias).
    - Energy distance to fresh true samples below 4x that of true-vs-true sets.
    """
    x = np.asarray(x, np.float64)
    n, dim = x.shape
    assert np.all(np.isfinite(x))
    d = x.mean(0) - data.mean
    hotelling = n * d @ np.linalg.solve(data.cov, d)
    assert hotelling < 1.5 * stats.chi2.ppf(1 - 1e-4, dim), hotelling
    ratios = np.diag(data.rotation.T @ np.cov(x.T) @ data.rotation) / data.eigs
    assert abs(ratios.mean() - 1) < 5 * np.sqrt(2 / (n * dim)) + bias, ratios.mean()
    assert np.max(np.abs(ratios - 1)) < 5 * np.sqrt(2 / n) + bias, ratios
    reference = data.sample(jax.random.key(99), n)
    assert energy_distance(x, reference) < true_energy_bound(dim, n)


def flow_map_error(sde, stepper, grid, data=None, batch=16):
    """Max error of ``stepper`` run over ``grid`` against the exact Gaussian flow map.

    Starts from standard normals at ``grid[0]`` (float64 when x64 is enabled) and compares with
    ``data.flow_map`` from ``grid[0]`` to ``grid[-1]`` (``data``: 4-D ``Gaussian.random(4, 1)``).
    """
    from sde_jax import sampling

    data = Gaussian.random(4, seed=1) if data is None else data
    grid = jnp.asarray(grid, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    x_init = jax.random.normal(jax.random.key(0), (batch, data.mean.size), grid.dtype)
    state = sampling.run_steps(
        jax.random.key(0), data.score_fn(sde), stepper, stepper.init(x_init), grid
    )
    exact = data.flow_map(sde, x_init, grid[0], grid[-1])
    return float(jnp.max(jnp.abs(state.x - exact)))


def order_slopes(errors, counts):
    """Slopes of -log(error) against log(step count): the empirical orders of convergence."""
    return -np.diff(np.log(errors)) / np.diff(np.log(counts))
