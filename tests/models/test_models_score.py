"""Scores from network outputs, per SDE and time conditioning, as the original."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_jax.compat import load_checkpoint, model_from_config, score_kwargs
from sde_jax.models import get_score_fn, label_sigmas, time_labels
from sde_jax.sdes import EDMSDE, VESDE, VPSDE, CosineVPSDE, SubVPSDE

FIXTURES = pathlib.Path(__file__).parents[1] / "fixtures" / "score_sde_parity"
CASES = {"ncsnpp_ve": VESDE(sigma_min=0.01, sigma_max=50.0), "ddpmpp_vp": VPSDE(0.1, 20.0)}


@pytest.mark.parametrize("name", list(CASES))
def test_score_and_labels_match_the_original(name):
    sde = CASES[name]
    fx = np.load(FIXTURES / f"{name}.npz")
    np.testing.assert_array_equal(time_labels(sde, fx["t"]), fx["labels"])  # bit for bit
    config = json.loads(str(fx["config_json"]))["config"]
    model = model_from_config(config)
    params = load_checkpoint(FIXTURES / f"{name}.msgpack")["params_ema"]
    score_fn = get_score_fn(sde, model.apply, params, **score_kwargs(config))
    score = np.asarray(jax.jit(score_fn)(fx["x"], fx["t"]))
    ref = fx["score_from_params_ema"]
    if isinstance(sde, VESDE):
        deviation = np.abs(score - ref).max(axis=(1, 2, 3)) / np.abs(ref).max(axis=(1, 2, 3))
        assert np.all(deviation <= 1e-5), deviation
    else:
        np.testing.assert_allclose(score, ref, rtol=1e-4, atol=1e-5)


def _recording_apply(calls):
    def apply(variables, x, labels, train):
        assert train is False and set(variables) == {"params"}
        calls.append(labels)
        return jnp.ones_like(x) * 2.0

    return apply


T = jnp.array([0.05, 0.3, 0.7, 0.999])
X = jnp.zeros((4, 2, 2, 1))


@pytest.mark.parametrize("continuous", [True, False])
def test_subvp_feeds_999t_and_divides_by_its_std(continuous):
    # The original fed 999 t to sub-VP networks in the discrete case too.
    sde, calls = SubVPSDE(), []
    score = get_score_fn(sde, _recording_apply(calls), {}, continuous=continuous)(X, T)
    np.testing.assert_allclose(calls[0], 999 * T, rtol=1e-7)
    b = 0.1 * T + 0.5 * T**2 * 19.9
    std = 1 - np.exp(-b)
    np.testing.assert_allclose(score[:, 0, 0, 0], -2.0 / std, rtol=1e-5)


def test_discrete_vp_uses_ddpm_step_labels_and_alpha_bar():
    sde, calls = VPSDE(), []
    score = get_score_fn(sde, _recording_apply(calls), {}, continuous=False, num_scales=1000)(X, T)
    np.testing.assert_allclose(calls[0], T * 999, rtol=1e-7)
    betas = np.linspace(0.1 / 1000, 20 / 1000, 1000)
    sqrt_1m_abar = np.sqrt(1 - np.cumprod(1 - betas))
    idx = np.asarray(T * 999, dtype=np.float32).astype(np.int32)
    np.testing.assert_allclose(score[:, 0, 0, 0], -2.0 / sqrt_1m_abar[idx], rtol=1e-4)


def test_discrete_ve_feeds_descending_step_index_and_returns_output():
    sde, calls = VESDE(), []
    score = get_score_fn(sde, _recording_apply(calls), {}, continuous=False, num_scales=1000)(X, T)
    assert calls[0].dtype == jnp.int32
    np.testing.assert_array_equal(calls[0], np.round((1 - np.asarray(T)) * 999).astype(np.int32))
    np.testing.assert_array_equal(score, 2.0)


def test_scalar_time_is_broadcast_and_unknown_sde_rejected():
    calls = []
    get_score_fn(VPSDE(), _recording_apply(calls), {})(X, 0.5)
    assert calls[0].shape == (4,)
    with pytest.raises(TypeError, match="sde must be"):
        get_score_fn(object(), _recording_apply(calls), {})


@pytest.mark.parametrize("continuous", [True, False])
def test_new_sdes_follow_their_named_conventions(continuous):
    """Cosine VP is VP-like (999 t, -output / std); EDM is VE-like (sigma = t, the output).

    Neither has a discrete table, so ``continuous=False`` keeps the continuous conditioning.
    """
    cosine, calls = CosineVPSDE(), []
    score = get_score_fn(cosine, _recording_apply(calls), {}, continuous=continuous)(X, T * 0.99)
    np.testing.assert_allclose(calls[0], 999 * T * 0.99, rtol=1e-6)
    std = np.asarray(cosine.marginal_std(T * 0.99))
    np.testing.assert_allclose(score[:, 0, 0, 0], -2.0 / std, rtol=1e-6)
    edm, calls = EDMSDE(), []
    score = get_score_fn(edm, _recording_apply(calls), {}, continuous=continuous)(X, T * 80)
    np.testing.assert_allclose(calls[0], T * 80, rtol=1e-7)
    np.testing.assert_array_equal(score, 2.0)


def _affine_apply(variables, x, labels, train):
    """A stand-in network whose output depends on x and not on the labels."""
    del variables, labels, train
    return 3.0 * x + 1.0


XR = jax.random.normal(jax.random.key(0), (4, 2, 2, 1))


def test_scale_by_sigma_divides_continuous_ve_output_by_sigma_of_t():
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)
    score = get_score_fn(sde, _affine_apply, {}, scale_by_sigma=True)(XR, T)
    sigma = 0.01 * (50.0 / 0.01) ** np.asarray(T, np.float64)  # sigma(t), independently
    expected = (3.0 * np.asarray(XR) + 1.0) / sigma[:, None, None, None]
    np.testing.assert_allclose(score, expected, rtol=2e-6)
    plain = get_score_fn(sde, _affine_apply, {})(XR, T)
    np.testing.assert_allclose(plain, 3.0 * np.asarray(XR) + 1.0, rtol=1e-7)


@pytest.mark.parametrize("num_scales", [1000, 10])
def test_scale_by_sigma_divides_discrete_ve_output_by_sigma_of_the_step(num_scales):
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)
    score_fn = get_score_fn(
        sde, _affine_apply, {}, continuous=False, num_scales=num_scales, scale_by_sigma=True
    )
    score = score_fn(XR, T)
    # The original's descending table (get_sigmas), indexed by the step label.
    table = np.geomspace(50.0, 0.01, num_scales)
    step = np.round((1 - np.asarray(T, np.float64)) * (num_scales - 1)).astype(int)
    expected = (3.0 * np.asarray(XR) + 1.0) / table[step][:, None, None, None]
    np.testing.assert_allclose(score, expected, rtol=2e-6)
    labels = time_labels(sde, T, continuous=False, num_scales=num_scales)
    np.testing.assert_allclose(label_sigmas(sde, labels, False, num_scales), table[step], rtol=2e-6)


def test_scale_by_sigma_elsewhere_divides_by_the_labels_and_must_be_a_bool():
    # EDM's labels are sigma = t; VP's are 999 t, which the original's Fourier NCSN++ divided by.
    edm = get_score_fn(EDMSDE(), _affine_apply, {}, scale_by_sigma=True)(XR, T * 80)
    expected = (3.0 * np.asarray(XR) + 1.0) / (np.asarray(T) * 80)[:, None, None, None]
    np.testing.assert_allclose(edm, expected, rtol=2e-6)
    sde = VPSDE()
    vp = get_score_fn(sde, _affine_apply, {}, scale_by_sigma=True)(XR, T)
    std = np.asarray(sde.marginal_std(T))
    expected = -(3.0 * np.asarray(XR) + 1.0) / (999 * np.asarray(T) * std)[:, None, None, None]
    np.testing.assert_allclose(vp, expected, rtol=2e-6)
    with pytest.raises(TypeError, match="scale_by_sigma must be a bool"):
        get_score_fn(sde, _affine_apply, {}, scale_by_sigma=1)
