"""Bits/dim of a data set: the evaluation's loop on one device against closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_jax import VESDE, VPSDE, sharding
from sde_jax import likelihood as lik
from sde_jax.evaluation import sharded_bits_per_dim

EPS = 1e-5


def dataset_bpd(key, sde, score_fn, images, **kwargs):
    """``sharded_bits_per_dim`` on one device, every example of the plain batches counted."""
    batches = ({"image": x, "mask": np.ones(len(x), bool)} for x in images)
    mesh = sharding.make_mesh(1, 1, jax.devices()[:1])
    return sharded_bits_per_dim(key, sde, lambda _: score_fn, None, batches, mesh=mesh, **kwargs)


def test_dataset_bits_per_dim_matches_closed_form():
    sde = VPSDE()
    rng = np.random.default_rng(0)
    mean, std = 0.5, 0.2  # isotropic Gaussian model on [0, 1] pixel values
    shape = (2, 2, 1)
    batches = [
        np.clip(np.round(255 * (mean + std * rng.standard_normal((16, *shape)))), 0, 255).astype(
            np.uint8
        )
        for _ in range(3)
    ]

    def score(x, t):
        m, s = sde.mean_coeff(t)[:, None, None, None], sde.marginal_std(t)[:, None, None, None]
        return -(x - m * mean) / (m**2 * std**2 + s**2)

    result = dataset_bpd(
        jax.random.key(0), sde, score, iter(batches), num_repeats=2, hutchinson="exact"
    )
    assert result.num_examples == 48 and result.repeat_means.shape == (2,)
    assert result.stderr > 0 and result.mean_nfe > 10

    # Closed form: the flow's density is log p_eps(x) + log prior(z) - log p_T(z); the last two
    # nearly cancel for VP, and E over dequantization is estimated with many draws.
    images = np.concatenate(batches)
    var0 = sde.mean_coeff(EPS) ** 2 * std**2 + sde.marginal_std(EPS) ** 2
    x = lik.dequantize(jax.random.key(5), np.repeat(images, 64, axis=0))
    logp = -0.5 * jnp.sum(
        (x - sde.mean_coeff(EPS) * mean) ** 2 / var0 + jnp.log(2 * jnp.pi * var0), axis=(1, 2, 3)
    )
    expected = float(jnp.mean(lik.bits_per_dim(logp, 4)))
    assert abs(result.mean - expected) < 0.02, (result.mean, expected)


def test_dataset_bits_per_dim_rejects_bad_images():
    sde = VESDE()
    score = lambda x, t: -x  # noqa: E731
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="integer"):
        dataset_bpd(key, sde, score, [np.zeros((2, 3, 3), np.float32)])
    with pytest.raises(ValueError, match=r"\[0, 255\], got values in \[300, 300\]"):
        dataset_bpd(key, sde, score, [np.full((2, 3, 3), 300, np.int16)])
    with pytest.raises(ValueError, match="empty"):
        dataset_bpd(key, sde, score, [])
    with pytest.raises(ValueError, match="num_repeats"):
        dataset_bpd(key, sde, score, [np.zeros((2, 3), np.uint8)], num_repeats=0)


def test_dataset_bits_per_dim_reports_solver_failure():
    images = [np.full((2, 2, 2, 1), 128, np.uint8)]
    with pytest.raises(RuntimeError, match="batch 0, repeat 0"):
        dataset_bpd(jax.random.key(0), VPSDE(), lambda x, t: -x, images, num_repeats=1, max_steps=1)
