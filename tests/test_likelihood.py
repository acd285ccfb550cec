"""Likelihood and bits/dim against closed forms on Gaussian and discrete data."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussians import BrownianSDE

from sde_jax import EDMSDE, VESDE, VPSDE, CosineVPSDE, SubVPSDE
from sde_jax import likelihood as lik

SDES = [VPSDE(), SubVPSDE(), VESDE(), CosineVPSDE(), EDMSDE()]
IDS = ["vp", "subvp", "ve", "cosine", "edm"]
DIM = 4
BATCH = 256
EPS = 1e-5


class Gaussian:
    """N(mu, C) data with a rotated (full) covariance C = Q diag(lam) Q^T.

    Under a linear SDE, p_t = N(m(t) mu, m(t)^2 C + s(t)^2 I): score and log-density are
    closed form at every t.
    """

    def __init__(self, sde, dim=DIM, seed=0, eigs=(0.05, 0.2, 0.7, 1.5)):
        rng = np.random.default_rng(seed)
        self.sde = sde
        self.q = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
        self.mu = rng.standard_normal(dim)
        self.lam = np.asarray(eigs, np.float64)

    def sample(self, n, seed=1):
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((n, self.mu.size)) * np.sqrt(self.lam)
        return jnp.asarray(self.mu + z @ self.q.T, jnp.float32)

    def _coords(self, x, t):
        m, s = self.sde.mean_coeff(t), self.sde.marginal_std(t)
        var = m[:, None] ** 2 * self.lam.astype(x.dtype) + s[:, None] ** 2
        return (x - m[:, None] * self.mu.astype(x.dtype)) @ self.q.astype(x.dtype), var

    def score(self, x, t):
        r, var = self._coords(x, t)
        return -(r / var) @ self.q.T.astype(x.dtype)

    def logp(self, x, t):
        r, var = self._coords(x, jnp.full((x.shape[0],), t, x.dtype))
        return -0.5 * jnp.sum(r**2 / var + jnp.log(2 * jnp.pi * var), axis=-1)

    def reference(self, x, z):
        """The flow's exact log-density: log p_eps(x) + log prior(z) - log p_T(z)."""
        return self.logp(x, EPS) + self.sde.prior_logp(z) - self.logp(z, self.sde.T)


def solve(gauss, x, key=0, **kwargs):
    fn = jax.jit(lambda k, x: lik.log_likelihood(k, gauss.sde, gauss.score, x, **kwargs))
    return jax.block_until_ready(fn(jax.random.key(key), x))


@pytest.mark.parametrize("time_variable", ["t", "log_sigma"])
@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_exact_trace_matches_closed_form_per_example(sde, time_variable):
    gauss = Gaussian(sde)
    x = gauss.sample(BATCH)
    out = solve(gauss, x, hutchinson="exact", time_variable=time_variable)
    assert bool(out.success) and out.logp.shape == (BATCH,) and out.z.shape == x.shape
    ref = gauss.reference(x, out.z)
    np.testing.assert_allclose(out.logp, ref, rtol=1e-4)


@pytest.mark.parametrize("method", ["tsit5", "dop853"])
def test_every_embedded_pair_matches_closed_form(method):
    """``method`` picks the pair: same closed form, and its own step count."""
    gauss = Gaussian(VESDE())
    x = gauss.sample(64)
    out = solve(gauss, x, hutchinson="exact", method=method)
    default = solve(gauss, x, hutchinson="exact")
    assert bool(out.success) and int(out.nfe) != int(default.nfe)
    np.testing.assert_allclose(out.logp, gauss.reference(x, out.z), rtol=1e-4)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_time_variables_agree(sde):
    gauss = Gaussian(sde)
    x = gauss.sample(64)
    plain = solve(gauss, x, key=3, time_variable="t")
    changed = solve(gauss, x, key=3, time_variable="log_sigma")
    # Same probes, same integral: the two solves differ only by solver error.
    np.testing.assert_allclose(changed.logp, plain.logp, rtol=2e-4)
    # z lives on the prior's scale; EDM's is 80 and its solve spans log sigma from 1e-5 to 80.
    atol = 1.5e-2 if isinstance(sde, EDMSDE) else 2e-3
    np.testing.assert_allclose(changed.z, plain.z, atol=atol)


@pytest.mark.parametrize("hutchinson", ["rademacher", "gaussian"])
@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_hutchinson_mean_matches_closed_form(sde, hutchinson):
    gauss = Gaussian(sde)
    x = gauss.sample(BATCH)
    out = solve(gauss, x, key=7, hutchinson=hutchinson)
    diff = np.asarray(out.logp - gauss.reference(x, out.z), np.float64)
    stderr = diff.std(ddof=1) / math.sqrt(diff.size)
    assert stderr > 1e-3  # the full covariance makes the estimator genuinely random
    assert abs(diff.mean()) < 4 * stderr + 1e-3, (diff.mean(), stderr)


def test_hutchinson_is_unbiased_and_more_probes_reduce_variance():
    w = jnp.asarray(np.random.default_rng(0).standard_normal((DIM, DIM)), jnp.float32)

    def fn(x):
        return jnp.tanh(x @ w) + 0.3 * x**2

    x = jnp.asarray(np.random.default_rng(1).standard_normal((3, DIM)), jnp.float32)
    exact_probes = lik._draw_probes(jax.random.key(0), x, "exact", 1)
    _, exact = lik.divergence(fn, x, exact_probes, average=False)
    np.testing.assert_allclose(
        exact, jnp.trace(jax.vmap(jax.jacfwd(fn))(x), axis1=1, axis2=2), rtol=1e-5
    )
    for kind in ("rademacher", "gaussian"):
        num = 20000
        probes = lik._draw_probes(jax.random.key(1), x, kind, num)
        _, mean = lik.divergence(fn, x, probes)
        per_probe = jax.vmap(lambda v: lik.divergence(fn, x, v[None])[1])(probes)
        stderr = np.asarray(per_probe.std(axis=0)) / math.sqrt(num)
        assert np.all(np.abs(np.asarray(mean - exact)) < 4 * stderr), (kind, mean, exact)

    gauss = Gaussian(VPSDE())
    xs = gauss.sample(128)
    ref = None
    spreads = []
    for num_probes in (1, 16):
        out = solve(gauss, xs, key=11, num_probes=num_probes)
        ref = gauss.reference(xs, out.z) if ref is None else ref
        spreads.append(float(jnp.std(out.logp - ref)))
    # Averaging 16 independent probes divides the estimator's variance by 16.
    assert spreads[1] < 0.5 * spreads[0], spreads


@pytest.mark.parametrize("sde", [VESDE(), VPSDE()], ids=["ve", "vp"])
def test_vmap_jit_and_batch_sharding(sde):
    """At the default rtol = atol = 1e-5, 8 devices take exactly the steps of one, for every
    key (the error norm is an order-free sum; a VP case once took 44 evaluations on 1 device
    and 38 on 8)."""
    gauss = Gaussian(sde)
    x = gauss.sample(16)
    fn = jax.jit(lambda k, x: lik.log_likelihood(k, gauss.sde, gauss.score, x))
    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.block_until_ready(jax.jit(jax.vmap(fn, in_axes=(0, None)))(keys, x))
    assert batched.logp.shape == (3, 16) and bool(jnp.all(batched.success))
    mesh = jax.make_mesh((8,), ("batch",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    for i, key in enumerate(keys):
        single = jax.block_until_ready(fn(key, x))
        np.testing.assert_allclose(batched.logp[i], single.logp, rtol=1e-5)
        sharded = jax.block_until_ready(fn(key, jax.device_put(x, sharding)))
        assert int(sharded.nfe) == int(single.nfe)
        np.testing.assert_allclose(sharded.logp, single.logp, rtol=1e-5)


def test_solver_failure_is_reported():
    gauss = Gaussian(VPSDE())
    out = solve(gauss, gauss.sample(8), max_steps=2)
    assert not bool(out.success)
    assert np.all(np.isnan(out.logp))


def test_bad_input_raises_value_error():
    gauss = Gaussian(VPSDE())
    x = gauss.sample(4)
    key = jax.random.key(0)
    call = lambda x, **kw: lik.log_likelihood(key, gauss.sde, gauss.score, x, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="rank"):
        call(x[0])
    with pytest.raises(ValueError, match="finite"):
        call(x.at[1, 2].set(jnp.nan))
    with pytest.raises(ValueError, match=r"hutchinson must be one of .*'rademacher'.*'foo'"):
        call(x, hutchinson="foo")
    with pytest.raises(ValueError, match="time_variable"):
        call(x, time_variable="sigma")
    with pytest.raises(
        ValueError, match=r"method must be one of \[.dop853., .dopri5., .tsit5.\], got .rk4."
    ):
        call(x, method="rk4")
    with pytest.raises(ValueError, match="num_probes"):
        call(x, num_probes=0)
    with pytest.raises(ValueError, match="eps"):
        call(x, eps=0.0)


# --------------------------------------------------------------------------------------------
# Bits per dimension.


def histogram_logp(probs, images_x, data_range):
    """log-density on x of the dequantized discrete distribution: P(k) / a^D, a = bin width."""
    lo, hi = data_range
    width = (hi - lo) / probs.size
    k = np.clip(np.floor((np.asarray(images_x) - lo) / width), 0, probs.size - 1).astype(int)
    return np.sum(np.log(probs[k]) - np.log(width), axis=tuple(range(1, k.ndim)))


@pytest.mark.parametrize("data_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_bits_per_dim_of_known_discrete_distributions(data_range):
    """Uniform 8-bit pixels carry 8 bits; a skewed pixel distribution its entropy."""
    rng = np.random.default_rng(0)
    shape = (512, 2, 2, 3)
    dims = math.prod(shape[1:])
    for probs in (np.full(256, 1 / 256), rng.dirichlet(np.full(256, 0.3))):
        images = rng.choice(256, size=shape, p=probs).astype(np.uint8)
        x = lik.dequantize(jax.random.key(1), images, data_range=data_range)
        lo, hi = data_range
        assert float(x.min()) >= lo and float(x.max()) < hi
        bpd = lik.bits_per_dim(histogram_logp(probs, x, data_range), dims, data_range=data_range)
        # Per example: exactly the code length of the discrete image under P.
        code_length = -np.sum(np.log2(probs[images]), axis=(1, 2, 3)) / dims
        np.testing.assert_allclose(bpd, code_length, rtol=1e-4, atol=1e-4)
        entropy = -np.sum(probs * np.log2(np.maximum(probs, 1e-300)))
        stderr = np.std(code_length) / math.sqrt(shape[0])
        assert abs(float(np.mean(bpd)) - entropy) < 4 * stderr + 1e-6


def test_bits_per_dim_offset_is_the_log_bin_width():
    """Offsets from the change of variables: shrinking the range by 2 adds one bit."""
    logp = jnp.zeros(3)
    unit = lik.bits_per_dim(logp, 10, data_range=(0.0, 1.0))
    centered = lik.bits_per_dim(logp, 10, data_range=(-1.0, 1.0))
    np.testing.assert_allclose(unit - centered, 1.0, rtol=1e-6)
    # A density uniform on the data range is uniform over the 256 levels: 8 bits either way.
    for lo, hi in [(0.0, 1.0), (-1.0, 1.0)]:
        uniform = jnp.full(3, -10 * math.log(hi - lo))
        np.testing.assert_allclose(
            lik.bits_per_dim(uniform, 10, data_range=(lo, hi)), 8.0, rtol=1e-6
        )


def test_log_sigma_needs_a_known_sde_but_t_works_for_any():
    x = jnp.ones((4, 2))
    score = lambda x, t: -x / (1.0 + t[:, None])  # noqa: E731 - N(0, I) data under dx = dw
    out = lik.log_likelihood(jax.random.key(0), BrownianSDE(), score, x, hutchinson="exact")

    def log_normal(y, var):  # N(0, var I) in two dimensions
        return -0.5 * jnp.sum(y**2, axis=1) / var - jnp.log(2 * jnp.pi * var)

    # p_T = N(0, 2 I) is not the N(0, I) prior: the flow's density corrects for it.
    expected = log_normal(x, 1 + EPS) + log_normal(out.z, 1.0) - log_normal(out.z, 2.0)
    np.testing.assert_allclose(out.logp, expected, rtol=1e-4)
    with pytest.raises(ValueError, match="BrownianSDE"):
        lik.log_likelihood(jax.random.key(0), BrownianSDE(), score, x, time_variable="log_sigma")
