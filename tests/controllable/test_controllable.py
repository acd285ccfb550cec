"""Controllable generation against closed forms: Gaussian conditionals, mixture posteriors,
the exact probability-flow map of Gaussian data.

The builders take samplers (``controllable.get_inpainter(sampler)`` ...); most cases are
configured through their config versions at the edge (``build.inpainter_from_config`` ...),
which build the same objects (``test_object_and_config_builders_agree``).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gaussians import Gaussian, Mixture
from jax.sharding import NamedSharding, PartitionSpec

import sde_jax
from sde_jax import controllable, grids, sampling, steppers
from sde_jax.experiment import build

PC = {"method": "pc", "num_steps": 200, "corrector": "none"}
STEPPERS = {
    "pc_reverse_diffusion": PC,
    "pc_euler_maruyama": {**PC, "predictor": "euler_maruyama"},
    "pc_ancestral": {**PC, "predictor": "ancestral_sampling"},
    "pc_langevin": {"method": "pc", "num_steps": 100},
    "euler_ode": {"method": "euler", "num_steps": 200},
    "heun_ode": {"method": "heun", "num_steps": 50},
    "dpm_solver++": {"method": "dpm_solver++", "num_steps": 50},
}
"""Sampling sections whose steppers the combinator must condition."""


def gaussian_conditional(g: Gaussian, known: np.ndarray):
    """Regression matrix and covariance of the unknown coordinates given the known ones."""
    k, u = known, ~known
    c = g.cov
    gain = np.linalg.solve(c[np.ix_(k, k)], c[np.ix_(k, u)])  # [known, unknown]
    cond_cov = c[np.ix_(u, u)] - c[np.ix_(u, k)] @ gain
    return gain, cond_cov


@pytest.mark.parametrize("name", list(STEPPERS))
def test_inpainting_gaussian_matches_the_conditional_and_keeps_known_coordinates(name):
    g = Gaussian.random(4, seed=1)
    sde, n = sde_jax.VPSDE(), 2000
    known = np.array([True, True, False, False])
    data = np.asarray(g.sample(jax.random.key(0), n), np.float32)
    inpainter = build.inpainter_from_config(sde, STEPPERS[name], (n, 4))
    out = jax.jit(lambda key: inpainter(key, g.score_fn(sde), data, known.astype(np.float32)))(
        jax.random.key(1)
    )
    x = np.asarray(out.x)
    np.testing.assert_array_equal(x[:, known], data[:, known])
    assert out.nfe == expected_nfe(STEPPERS[name])

    # Unknown half: regress on the known half and compare with the Gaussian conditional
    # E[x_u | y] = mu_u + gain^T (y - mu_k), Cov = cond_cov. Replacement is an approximation
    # that under-uses the known part: measured slopes are about 1/3 of the gain (2/3 with
    # reconstruction guidance), so check that the slope points the right way without
    # overshooting, the intercept is right, and the residual variance lies between the
    # conditional variance and the marginal one (the Langevin corrector inflates it in 4
    # dimensions, see steppers.Langevin).
    slope, intercept, residual_var = regress_unknown(g, known, data, x)
    gain, cond_cov = gaussian_conditional(g, known)
    large = np.abs(gain) > 0.3
    ratio = slope[large] / gain[large]
    assert np.all((ratio > 0.1) & (ratio < 1.1)), (slope, gain)
    np.testing.assert_allclose(intercept, g.mean[~known], atol=0.1)
    upper = 2.5 if name == "pc_langevin" else 1.05
    assert np.all(residual_var > 0.95 * np.diag(cond_cov)), (residual_var, cond_cov)
    assert np.all(residual_var < upper * np.diag(g.cov)[~known]), residual_var


def regress_unknown(g, known, data, x):
    """Least-squares slope, intercept and residual variance of x_u on the known part."""
    design = np.concatenate([data[:, known] - g.mean[known], np.ones((len(x), 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, x[:, ~known], rcond=None)
    residual = x[:, ~known] - design @ coef
    return coef[:-1], coef[-1], residual.var(0)


def test_reconstruction_guidance_is_closer_to_the_gaussian_conditional():
    g = Gaussian.random(4, seed=1)
    sde, n = sde_jax.VPSDE(), 2000
    known = np.array([True, True, False, False])
    data = np.asarray(g.sample(jax.random.key(0), n), np.float32)
    gain, cond_cov = gaussian_conditional(g, known)
    errors = {}
    for method in ("replacement", "reconstruction"):
        inpainter = build.inpainter_from_config(sde, PC, (n, 4), method=method)
        out = inpainter(jax.random.key(1), g.score_fn(sde), data, known.astype(np.float32))
        slope, _, residual_var = regress_unknown(g, known, data, np.asarray(out.x))
        errors[method] = (
            np.abs(slope - gain).max(),
            np.abs(residual_var / np.diag(cond_cov) - 1).max(),
        )
    # Measured: slope errors 0.49 and 0.21, relative variance errors 0.14 and 0.04.
    assert errors["reconstruction"][0] < 0.6 * errors["replacement"][0], errors
    assert errors["reconstruction"][1] < 0.6 * errors["replacement"][1], errors


def expected_nfe(config):
    steps = config["num_steps"]
    per_step = {"euler": 1, "heun": 2, "dpm_solver++": 1}.get(config["method"])
    if per_step is not None:
        return steps * per_step + 1  # plus Tweedie's denoising
    return steps * (1 + (config.get("corrector", "langevin") != "none"))


def test_known_pixels_of_images_are_reproduced_exactly_with_a_random_mask():
    shape = (4, 8, 8, 1)
    sde = sde_jax.VESDE(sigma_max=10.0)
    data = np.asarray(jax.random.uniform(jax.random.key(0), shape), np.float32)
    mask = controllable.make_mask("random", shape, seed=3)
    inpainter = build.inpainter_from_config(sde, {"method": "pc", "num_steps": 20}, shape)
    out = jax.jit(lambda key: inpainter(key, lambda x, t: -x, data, mask))(jax.random.key(0))
    x = np.asarray(out.x)
    np.testing.assert_array_equal(x[mask == 1], data[mask == 1])
    assert np.all(np.isfinite(x)) and not np.allclose(x[mask == 0], data[mask == 0])


def test_masks():
    shape = (2, 8, 6, 3)
    half = controllable.make_mask("half", shape)
    assert half[:, :, :3].min() == 1 and half[:, :, 3:].max() == 0
    center = controllable.make_mask("center", shape)
    assert center.mean() == pytest.approx(1 - (4 * 4) / 48)
    random = controllable.make_mask("random", (64, 8, 8, 3), seed=0)
    assert np.all(random == random[..., :1])
    # 64 * 8 * 8 pixels, each known with probability 1/2: the fraction's standard error is
    # 0.5 / 64; allow 4.5 of them (measured: 0.5088, 1.1 standard errors off).
    assert abs(random.mean() - 0.5) < 4.5 * 0.5 / 64
    with pytest.raises(ValueError, match="mask must be one of"):
        controllable.make_mask("square", shape)


def mixture_for_inpainting():
    """Two components that differ a little (but decisively) in the first half and a lot in
    the second: the second half commits early in the reverse process, before the known first
    half carries any information through replacement."""
    centre = np.array([1.0] * 4 + [5.0] * 4)
    return Mixture(np.array([0.5, 0.5]), np.stack([centre, -centre]), 0.2)


def inpainted_fraction(method, n=1000):
    mix, sde = mixture_for_inpainting(), sde_jax.VPSDE()
    data = np.asarray(mix.sample(jax.random.key(0), n), np.float32)
    truth = mix.assign(data)
    mask = np.array([1.0] * 4 + [0.0] * 4, np.float32)
    inpainter = build.inpainter_from_config(sde, PC, (n, 8), method=method)
    out = jax.jit(lambda key: inpainter(key, mix.score_fn(sde), data, mask))(jax.random.key(1))
    unknown = np.asarray(out.x)[:, 4:]
    distances = ((unknown[:, None] - mix.centres[None, :, 4:]) ** 2).sum(-1)
    component = distances.argmin(1)
    # The unknown half must also look like a draw of its component, not only be near it.
    spread = np.sqrt(distances.min(1).mean() / 4)
    return float(np.mean(component == truth)), spread


def test_reconstruction_guidance_raises_the_fraction_in_the_right_component():
    replaced, replaced_spread = inpainted_fraction("replacement")
    guided, guided_spread = inpainted_fraction("reconstruction")
    # Measured: 0.532 and 1.000 (see sde_jax.controllable.inpainting). Two-proportion z-test.
    pooled = (replaced + guided) / 2
    z = (guided - replaced) / np.sqrt(2 * pooled * (1 - pooled) / 1000)
    assert replaced < 0.8 and guided > 0.95 and z > 5, (replaced, guided, z)
    # A draw of its component lies at squared distance 0.2^2 chi2_4 from the centre, so
    # spread^2 / 0.2^2 is a mean of 1000 chi2_4 / 4 (standard deviation sqrt(8) / 4 each) and
    # spread's relative standard error is sqrt(2 / 1000) / 4 = 1.1%: allow 5 of them
    # (measured: 0.2019 for both methods, about 1 standard error).
    for spread in (replaced_spread, guided_spread):
        assert abs(spread / 0.2 - 1) < 5 * np.sqrt(2 / 1000) / 4, spread


def mixture_classifier(mix: Mixture, sde):
    """The exact noise-conditional classifier: the posterior class under the diffused mixture."""

    def log_prob(x, t, labels):
        m, s = sde.mean_coeff(t)[:, None], sde.marginal_std(t)[:, None]
        var = m**2 * mix.scale**2 + s**2
        diff = x[:, None, :] - m[:, None] * mix.centres
        logits = jnp.log(mix.weights) - 0.5 * jnp.sum(diff**2, -1) / var
        log_posterior = jax.nn.log_softmax(logits, axis=-1)
        return jnp.take_along_axis(log_posterior, labels[:, None], axis=1)[:, 0]

    return log_prob


def separated_mixture():
    centres = np.array([[4.0, 0.0], [-2.0, 3.5], [-2.0, -3.5]])
    return Mixture(np.array([0.5, 0.3, 0.2]), centres, 0.5)


def test_classifier_guidance_with_scale_one_is_the_component_score():
    """Bayes: grad log p_t(x) + grad log p_t(y | x) = grad log p_t(x | y), component y's score."""
    mix, sde = separated_mixture(), sde_jax.VPSDE()
    x = jax.random.normal(jax.random.key(0), (6, 2)) * 3
    t = jnp.linspace(0.05, 0.9, 6)
    labels = jnp.array([0, 1, 2, 0, 1, 2])
    guided = controllable.classifier_guided_score(
        mix.score_fn(sde), mixture_classifier(mix, sde), labels, 1.0
    )(x, t)
    for k in range(3):
        one = Mixture(np.array([1.0]), mix.centres[k : k + 1], mix.scale).score_fn(sde)
        rows = np.asarray(labels) == k
        np.testing.assert_allclose(guided[rows], one(x, t)[rows], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("config", [PC, {"method": "dpm_solver++", "num_steps": 30}])
def test_class_conditional_sampling_lands_in_the_requested_component(config):
    mix, sde, n = separated_mixture(), sde_jax.VPSDE(), 600
    sampler = build.conditional_sampler_from_config(sde, config, (n, 2))
    labels = jnp.arange(n) % 3
    run = jax.jit(
        lambda key, scale: sampler(
            key, mix.score_fn(sde), mixture_classifier(mix, sde), labels, scale
        )
    )
    guided = run(jax.random.key(0), 1.0)
    assert np.mean(mix.assign(guided.x) == np.asarray(labels)) > 0.95
    # Scale 0 is unconditional sampling: component frequencies follow the weights.
    plain = run(jax.random.key(1), 0.0)
    freqs = np.bincount(mix.assign(plain.x), minlength=3) / n
    stderr = np.sqrt(mix.weights * (1 - mix.weights) / n)
    assert np.all(np.abs(freqs - mix.weights) < 4 * stderr), freqs


def test_classifier_free_score_combines_conditional_and_null_scores():
    mix, sde = separated_mixture(), sde_jax.VPSDE()
    scores = [
        Mixture(np.array([1.0]), mix.centres[k : k + 1], mix.scale).score_fn(sde) for k in range(3)
    ]
    unconditional = mix.score_fn(sde)

    def conditional(x, t, labels):  # null label = num_classes = 3
        per_class = jnp.stack([s(x, t) for s in scores] + [unconditional(x, t)])
        return per_class[labels, jnp.arange(x.shape[0])]

    x = jax.random.normal(jax.random.key(0), (4, 2))
    t = jnp.full((4,), 0.3)
    labels = jnp.array([0, 1, 2, 1])
    for w in (0.0, 2.0, -1.0):
        guided = controllable.classifier_free_score(conditional, labels, w, null_label=3)(x, t)
        expected = (1 + w) * conditional(x, t, labels) - w * unconditional(x, t)
        np.testing.assert_allclose(guided, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="null_label"):
        controllable.classifier_free_score(conditional, labels, 1.0, null_label=-1)
    # w = 0 samples the requested component.
    n = 300
    sampler = build.get_sampler(sde, {"method": "dpm_solver++", "num_steps": 30}, (n, 2))
    labels = jnp.arange(n) % 3
    guided = controllable.classifier_free_score(conditional, labels, 0.0, null_label=3)
    out = jax.jit(lambda key: sampler(key, guided))(jax.random.key(0))
    assert np.mean(mix.assign(out.x) == np.asarray(labels)) > 0.95


def test_color_basis_is_orthogonal_and_gray_maps_to_the_first_channel():
    basis = controllable.COLOR_BASIS
    np.testing.assert_allclose(basis @ basis.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(basis[0], np.ones(3) / np.sqrt(3))
    gray = np.repeat(np.linspace(-1, 1, 16).reshape(1, 4, 4, 1), 3, axis=-1).astype(np.float32)
    decoupled = controllable.decouple(jnp.asarray(gray))
    np.testing.assert_allclose(decoupled[..., 0], np.sqrt(3) * gray[..., 0], atol=1e-6)
    np.testing.assert_allclose(decoupled[..., 1:], 0.0, atol=1e-6)
    np.testing.assert_allclose(controllable.couple(decoupled), gray, atol=1e-6)


def exact_colour_correlation(g: Gaussian, shape) -> float:
    """The pooled correlation of true and exactly sampled colour (see the colorizer test)."""
    dim = len(g.mean)
    basis = np.eye(dim, dtype=np.float32).reshape(dim, *shape[1:])
    decoupled = np.asarray(controllable.decouple(jnp.asarray(basis)), np.float64)
    to_colour = decoupled[..., 1:].reshape(dim, -1).T  # decouple is linear
    to_gray = decoupled[..., :1].reshape(dim, -1).T
    c_cc, c_cy = to_colour @ g.cov @ to_colour.T, to_colour @ g.cov @ to_gray.T
    explained = c_cy @ np.linalg.solve(to_gray @ g.cov @ to_gray.T, c_cy.T)
    between = np.var(to_colour @ g.mean)
    return float((np.mean(np.diag(explained)) + between) / (np.mean(np.diag(c_cc)) + between))


def test_colorizer_keeps_the_gray_level_and_samples_the_colour():
    """Pixels of 2x2 RGB images from a correlated Gaussian: the colour given the gray level."""
    shape, sde = (300, 2, 2, 3), sde_jax.VPSDE()
    g = Gaussian.random(12, seed=2)
    flat_score = g.score_fn(sde)

    def score_fn(x, t):
        return flat_score(x.reshape(x.shape[0], -1), t).reshape(x.shape)

    images = np.asarray(g.sample(jax.random.key(0), shape[0]), np.float32).reshape(shape)
    gray = images.mean(-1, keepdims=True)
    colorizer = build.colorizer_from_config(sde, {**PC, "num_steps": 100}, shape)
    out = colorizer(jax.random.key(1), score_fn, gray)
    np.testing.assert_allclose(np.asarray(out.x).mean(-1, keepdims=True), gray, atol=1e-5)
    same = colorizer(jax.random.key(1), score_fn, np.repeat(gray, 3, axis=-1))
    np.testing.assert_allclose(same.x, out.x, atol=1e-5)
    # The colour follows the data: for an exact sampler of colour given gray, the pooled
    # correlation of sampled and true colour coordinates is rho = (mean_j K_jj + var_j mu_j) /
    # (mean_j C_jj + var_j mu_j), with C the colour covariance, K = C_cy C_yy^-1 C_yc its part
    # explained by the gray levels and mu_j the colour means (0.304 here). Its standard error
    # over the 2400 pairs is about (1 - rho^2) / sqrt(2400) = 0.019: allow 5 of them either
    # side (measured: 0.266, 2 below; the upper side catches a sampler that copies the data).
    colour = controllable.decouple(jnp.asarray(images))[..., 1:].ravel()
    sampled = controllable.decouple(out.x)[..., 1:].ravel()
    rho = exact_colour_correlation(g, shape)
    se = (1 - rho**2) / np.sqrt(colour.size)
    assert abs(np.corrcoef(colour, sampled)[0, 1] - rho) < 5 * se, (rho, se)
    with pytest.raises(ValueError, match="gray must have shape"):
        colorizer(jax.random.key(0), score_fn, gray[:, :1])
    with pytest.raises(ValueError, match="shape must be"):
        build.colorizer_from_config(sde, PC, (4, 2, 2, 1))


def test_inpainter_validates_its_inputs():
    sde = sde_jax.VPSDE()
    with pytest.raises(ValueError, match="method must be one of"):
        build.inpainter_from_config(sde, PC, (2, 4), method="repaint")
    with pytest.raises(ValueError, match="adaptive"):
        build.inpainter_from_config(sde, {"method": "ode"}, (2, 4))
    with pytest.raises(
        ValueError, match=r"needs a sampling\.FixedGridSampler; got AdaptiveODESampler"
    ):
        controllable.get_colorizer(sampling.AdaptiveODESampler(sde, (2, 2, 2, 3), eps=1e-3))
    inpainter = build.inpainter_from_config(sde, PC, (2, 4))
    with pytest.raises(ValueError, match="data must have shape"):
        inpainter(jax.random.key(0), lambda x, t: -x, jnp.zeros((3, 4)), jnp.ones(4))
    with pytest.raises(ValueError, match="does not broadcast"):
        inpainter(jax.random.key(0), lambda x, t: -x, jnp.zeros((2, 4)), jnp.ones(3))
    sampler = build.conditional_sampler_from_config(sde, PC, (2, 4))
    with pytest.raises(ValueError, match="labels must have shape"):
        sampler(jax.random.key(0), lambda x, t: -x, lambda x, t, y: x[:, 0], jnp.zeros(3, int))


def test_inpainting_sharded_over_devices_equals_one_device():
    n, sde = 16, sde_jax.VPSDE()
    g = Gaussian.random(4, seed=1)
    data = np.asarray(g.sample(jax.random.key(0), n), np.float32)
    mask = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
    inpainter = build.inpainter_from_config(
        sde, {"method": "pc", "num_steps": 20}, (n, 4), method="reconstruction"
    )
    run = jax.jit(lambda key, data: inpainter(key, g.score_fn(sde), data, mask).x)
    single = run(jax.random.key(2), data)
    mesh = jax.make_mesh((8,), ("data",))
    sharded_data = jax.device_put(data, NamedSharding(mesh, PartitionSpec("data")))
    sharded = jax.block_until_ready(run(jax.random.key(2), sharded_data))
    np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sde", [sde_jax.VPSDE(), sde_jax.VESDE(sigma_max=20.0)])
def test_encoder_is_the_closed_form_flow_map_and_decode_inverts_it(sde):
    """Gaussian data N(mu, U diag(lam) U^T) diffuse to N(m mu, U diag(v) U^T), v = m^2 lam + s^2.
    The flow's velocity is linear, and in the eigenbasis each centred coordinate c obeys
    dc/dt = (f + g^2 / (2 v)) c, while d sqrt(v)/dt = (f + g^2 / (2 v)) sqrt(v) (as
    dv/dt = 2 f v + g^2): so c / sqrt(v) is constant and the encoder from eps to T is
    z = m_T mu + U diag(sqrt(v_T / v_eps)) U^T (x - m_eps mu), a whitening map when v_T = 1."""
    jax.config.update("jax_enable_x64", True)
    try:
        g = Gaussian.random(6, seed=4)
        codec = controllable.get_latent_codec(sde, rtol=1e-8, atol=1e-8)
        x = jnp.asarray(g.sample(jax.random.key(0), 32), jnp.float64)
        encoded = codec.encode(g.score_fn(sde), x)
        assert encoded.success
        expected = g.flow_map(sde, x, codec.eps, sde.T)
        np.testing.assert_allclose(encoded.z, expected, rtol=1e-5, atol=1e-5)
        decoded = codec.decode(g.score_fn(sde), encoded.z)
        np.testing.assert_allclose(decoded.x, x, rtol=1e-5, atol=1e-5)
        if isinstance(sde, sde_jax.VPSDE):  # whitening: latents of p_eps are N(0, v_T I)
            z = codec.encode(g.score_fn(sde), g.sample(jax.random.key(1), 2000)).z
            np.testing.assert_allclose(np.cov(np.asarray(z).T), np.eye(6), atol=0.12)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_decode_round_trip_of_a_mixture_within_solver_tolerance():
    mix, sde = separated_mixture(), sde_jax.VPSDE()
    codec = build.latent_codec_from_config(sde, {"rtol": 1e-5, "atol": 1e-5})
    x = mix.sample(jax.random.key(0), 64)
    z = codec.encode(mix.score_fn(sde), x)
    back = codec.decode(mix.score_fn(sde), z.z)
    assert z.success and back.success and z.nfe > 10
    np.testing.assert_allclose(back.x, x, atol=2e-3)


def test_slerp_follows_the_great_circle_and_interpolates_norms():
    z0 = jax.random.normal(jax.random.key(0), (5, 3, 4))
    z1 = 2.0 * jax.random.normal(jax.random.key(1), (5, 3, 4))
    np.testing.assert_allclose(controllable.slerp(z0, z1, 0.0), z0, atol=1e-5)
    np.testing.assert_allclose(controllable.slerp(z0, z1, 1.0), z1, atol=1e-5)
    flat = lambda z: np.asarray(z).reshape(5, -1)  # noqa: E731
    u0, u1 = (flat(z) / np.linalg.norm(flat(z), axis=1, keepdims=True) for z in (z0, z1))
    theta = np.arccos(np.sum(u0 * u1, 1))
    for alpha in (0.25, 0.5, 0.8):
        z = flat(controllable.slerp(z0, z1, alpha))
        norms = np.linalg.norm(z, axis=1)
        expected = (1 - alpha) * np.linalg.norm(flat(z0), axis=1) + alpha * np.linalg.norm(
            flat(z1), axis=1
        )
        np.testing.assert_allclose(norms, expected, rtol=1e-5)
        u = z / norms[:, None]  # the angle to each end splits theta in proportion alpha
        np.testing.assert_allclose(np.arccos(np.sum(u * u0, 1)), alpha * theta, atol=1e-3)
        np.testing.assert_allclose(np.arccos(np.sum(u * u1, 1)), (1 - alpha) * theta, atol=1e-3)
    same = controllable.slerp(z0, 3.0 * z0, 0.5)  # parallel: no division by sin(0)
    np.testing.assert_allclose(same, 2.0 * z0, rtol=1e-5)


def test_temperature_sampling_and_interpolation_of_gaussian_data():
    g, sde = Gaussian.random(4, seed=5), sde_jax.VPSDE()
    codec = controllable.get_latent_codec(sde)
    key = jax.random.key(3)
    sample = jax.jit(lambda temperature: codec.sample(key, g.score_fn(sde), (8, 4), temperature))
    for temperature in (1.0, 0.5):
        out = sample(temperature)
        z = temperature * sde.prior_sampling(key, (8, 4))
        np.testing.assert_allclose(out.x, g.flow_map(sde, z, sde.T, codec.eps), atol=1e-3)
    x0, x1 = g.sample(jax.random.key(0), 3), g.sample(jax.random.key(1), 3)
    path, alphas = codec.interpolate(g.score_fn(sde), x0, x1, 5)
    assert path.x.shape == (5, 3, 4) and alphas.shape == (5,)
    np.testing.assert_allclose(path.x[0], x0, atol=1e-3)
    np.testing.assert_allclose(path.x[-1], x1, atol=1e-3)
    z0, z1 = (g.flow_map(sde, x, codec.eps, sde.T) for x in (x0, x1))
    middle = g.flow_map(sde, controllable.slerp(z0, z1, 0.5), sde.T, codec.eps)
    np.testing.assert_allclose(path.x[2], middle, atol=1e-3)
    with pytest.raises(ValueError, match="num must be an integer >= 2, got 1"):
        codec.interpolate(g.score_fn(sde), x0, x1, 1)


def test_object_and_config_builders_agree():
    """The objects API by hand gives the config builders' results, key for key."""
    n, sde = 8, sde_jax.VPSDE()
    g = Gaussian.random(4, seed=1)
    data = np.asarray(g.sample(jax.random.key(0), n), np.float32)
    mask = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
    stepper = steppers.PredictorCorrector(
        steppers.ReverseDiffusion(sde), steppers.Langevin(sde, snr=0.16)
    )
    sampler = sampling.FixedGridSampler(sde, stepper, grids.uniform_grid(sde, 20, 1e-3), (n, 4))
    config = {"method": "pc", "num_steps": 20}
    key, score_fn = jax.random.key(3), g.score_fn(sde)
    for method in ("replacement", "reconstruction"):
        by_hand = controllable.get_inpainter(sampler, method=method)(key, score_fn, data, mask)
        by_config = build.inpainter_from_config(sde, config, (n, 4), method=method)
        np.testing.assert_array_equal(by_hand.x, by_config(key, score_fn, data, mask).x)
    labels = jnp.arange(n) % 2
    log_prob = lambda x, t, y: -jnp.sum((x - y[:, None]) ** 2, 1)  # noqa: E731
    by_hand = controllable.get_conditional_sampler(sampler)(key, score_fn, log_prob, labels)
    by_config = build.conditional_sampler_from_config(sde, config, (n, 4))
    np.testing.assert_array_equal(by_hand.x, by_config(key, score_fn, log_prob, labels).x)
    codec = build.latent_codec_from_config(sde, {"rtol": 1e-4, "max_steps": 100, "snr": 1})
    assert codec == controllable.LatentCodec(sde, 1e-3, 1e-4, 1e-5, 100)
    with pytest.raises(ValueError, match=r"eps must be a number in \(0, 1.0\), got 2.0"):
        controllable.get_latent_codec(sde, eps=2.0)
    with pytest.raises(TypeError, match="sampler must be a sampler"):
        controllable.get_conditional_sampler(stepper)
