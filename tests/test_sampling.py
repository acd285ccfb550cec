"""Samplers against the truth: Gaussian and mixture data, whose scores are closed form.

Most cases are configured through ``build.get_sampler`` (the original's sampling keys);
the objects API it builds (``sampling.sample``, ``FixedGridSampler``, final steps,
``ProbabilityFlow`` rules) is tested at the end and against recorded outputs in
``test_sampler_outputs.py``.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from gaussians import DATA, DATA_128, DIM, Gaussian, Mixture, check_gaussian_samples
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sde_jax import EDMSDE, VESDE, VPSDE, CosineVPSDE, SubVPSDE, grids, ode, sampling, steppers
from sde_jax.experiment import build
from sde_jax.sdes import SDE, probability_flow_drift

N = 2000


def run(sde, config, key=0, data=DATA, shape=(N, DIM)):
    if isinstance(sde, EDMSDE) and "grid" not in config:
        # EDM's time is sigma, up to 80: a grid uniform in t spends its steps at high noise.
        config = {**config, "grid": "karras"}
    sampler = build.get_sampler(sde, ml_collections.ConfigDict(config), shape)
    return jax.jit(lambda k: sampler(k, data.score_fn(sde)))(jax.random.key(key))


# Each predictor on several SDEs and each SDE under two predictors (the PC runs are 1000 steps).
PC_CASES = [
    (VPSDE(), "euler_maruyama", "none"),
    (SubVPSDE(), "euler_maruyama", "none"),
    (EDMSDE(), "euler_maruyama", "none"),
    (VPSDE(), "ancestral_sampling", "none"),
    (VESDE(), "ancestral_sampling", "none"),
    (CosineVPSDE(), "ancestral_sampling", "none"),
    (EDMSDE(), "ancestral_sampling", "none"),
    (SubVPSDE(), "reverse_diffusion", "none"),
    (VESDE(), "reverse_diffusion", "none"),
    (CosineVPSDE(), "reverse_diffusion", "none"),
]
NEW_SDES = [CosineVPSDE(), EDMSDE()]
NEW_IDS = ["cosine", "edm"]


@pytest.mark.parametrize(
    ("sde", "predictor", "corrector"),
    PC_CASES,
    ids=[f"{type(c[0]).__name__}-{c[1]}" for c in PC_CASES],
)
def test_predictors_match_gaussian_data(sde, predictor, corrector):
    config = {"method": "pc", "predictor": predictor, "corrector": corrector, "num_steps": 1000}
    out = run(sde, config)
    assert int(out.nfe) == 1000 and bool(out.success)
    check_gaussian_samples(out.x)


@pytest.mark.parametrize(
    "sde", [VPSDE(), SubVPSDE(), VESDE(), EDMSDE()], ids=["vp", "subvp", "ve", "edm"]
)
def test_predictor_corrector_with_langevin_matches_gaussian_data(sde):
    """The paper's PC sampler (snr 0.16). Sub-VP crashed in the original.

    Langevin steps of this size carry two known biases on top of the predictor's: the
    unadjusted chain's O(step) inflation and the per-example step's p |score|^2 target,
    about 6% together here, hence ``bias=0.08``.
    """
    config = {"method": "pc", "predictor": "reverse_diffusion", "corrector": "langevin"}
    out = run(sde, {**config, "num_steps": 500}, data=DATA_128, shape=(1000, 128))
    assert int(out.nfe) == 1000 and bool(out.success)
    check_gaussian_samples(out.x, DATA_128, bias=0.08)


def test_annealed_langevin_matches_gaussian_data():
    """NCSN-style corrector-only sampling. At low noise its steps, 2 (snr sigma)^2, are too
    small to finish mixing in 5 iterations per level; the residual inflation is ~7%."""
    config = {"method": "pc", "predictor": "none", "corrector": "ald", "n_steps_each": 5}
    out = run(VESDE(), {**config, "num_steps": 500})
    assert int(out.nfe) == 2500
    check_gaussian_samples(out.x, bias=0.1)


@pytest.mark.parametrize(
    ("sde", "method", "num_steps"),
    [
        (VPSDE(), "ode", None),
        (SubVPSDE(), "ode", None),
        (VESDE(), "ode", None),
        (VPSDE(), "heun", 100),
        (VESDE(), "heun", 100),
        (VPSDE(), "rk4", 50),
        (VPSDE(), "euler", 1000),
        (VPSDE(), "dpm_solver++", 25),
        (SubVPSDE(), "dpm_solver++", 25),
        (CosineVPSDE(), "ode", None),
        (CosineVPSDE(), "heun", 100),
        (CosineVPSDE(), "dpm_solver++", 25),
        (EDMSDE(), "ode", None),
        (EDMSDE(), "heun", 100),
        (EDMSDE(), "dpm_solver++", 25),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, SDE) else str(v),
)
def test_ode_samplers_match_gaussian_data(sde, method, num_steps):
    config = {"method": method}
    if num_steps is not None:
        config["num_steps"] = num_steps
    if method == "heun" and isinstance(sde, VESDE):
        config["grid"] = "karras"
    if method == "dpm_solver++":
        config["grid"] = "log_snr"
    out = run(sde, config)
    assert bool(out.success)
    if method == "ode":
        # Adaptive: reported, finite. Cosine VP's flow is smoother: about 30 evaluations.
        low = 20 if isinstance(sde, CosineVPSDE) else 50
        assert low < int(out.nfe) < 2000
    check_gaussian_samples(out.x)


MIXTURE = Mixture(
    weights=np.array([0.2, 0.8]), centres=np.array([[-2.0, -2.0], [2.0, 2.0]]), scale=0.5
)


@pytest.mark.parametrize(
    ("sde", "config"),
    [
        (VPSDE(), {"method": "pc", "predictor": "euler_maruyama", "corrector": "none"}),
        (VESDE(), {"method": "pc", "predictor": "reverse_diffusion", "corrector": "none"}),
        (VPSDE(), {"method": "ode"}),
        (SubVPSDE(), {"method": "dpm_solver++", "num_steps": 50, "grid": "log_snr"}),
    ],
)
def test_mixture_weights_are_recovered(sde, config):
    n = 4000
    out = run(sde, config, data=MIXTURE, shape=(n, 2))
    labels = MIXTURE.assign(out.x)
    fraction = labels.mean()
    assert abs(fraction - 0.8) < 4 * np.sqrt(0.8 * 0.2 / n) + 0.01, fraction
    for k in range(2):  # each component keeps its spread
        spread = np.asarray(out.x)[labels == k] - MIXTURE.centres[k]
        np.testing.assert_allclose(spread.std(0), 0.5, rtol=0.1)


def _gaussian_flow_error(sde, stepper, num_steps, t_end=0.1):
    data = Gaussian.random(4, seed=1)
    x_init = jax.random.normal(jax.random.key(0), (16, 4), jnp.float64)
    grid = jnp.linspace(sde.T, t_end, num_steps + 1, dtype=jnp.float64)
    if isinstance(sde, EDMSDE):
        # Time is sigma, from 80: steps uniform in sigma^(1/7) (EDM eq. 5), a smooth map of a
        # uniform grid, so the order shows at these step counts.
        root = jnp.linspace(sde.T ** (1 / 7), t_end ** (1 / 7), num_steps + 1, dtype=jnp.float64)
        grid = root**7
    state = sampling.run_steps(
        jax.random.key(0), data.score_fn(sde), stepper, stepper.init(x_init), grid
    )
    exact = data.flow_map(sde, x_init, sde.T, t_end)
    return float(jnp.max(jnp.abs(state.x - exact)))


@pytest.mark.parametrize(
    "sde", [VPSDE(), SubVPSDE(), VESDE(), *NEW_SDES], ids=["vp", "subvp", "ve", *NEW_IDS]
)
@pytest.mark.parametrize(
    ("make", "order"),
    [
        (lambda sde: steppers.ProbabilityFlow(sde, ode.EULER), 1),
        (lambda sde: steppers.ProbabilityFlow(sde, ode.HEUN), 2),
        (lambda sde: steppers.ProbabilityFlow(sde, ode.RK4), 4),
        (steppers.DPMSolverPP2M, 2),
    ],
    ids=["euler", "heun", "rk4", "dpm_solver++"],
)
def test_ode_steppers_converge_at_their_order(sde, make, order):
    """Slope of log error vs log step on the Gaussian PF-ODE, whose solution is closed form."""
    stepper = make(sde)
    assert stepper.order == order
    with jax.enable_x64(True):
        counts = [32, 64, 128, 256] if order < 4 else [16, 32, 64, 128]
        errors = [_gaussian_flow_error(sde, stepper, n) for n in counts]
    slopes = -np.diff(np.log(errors)) / np.diff(np.log(counts))
    assert abs(slopes[-1] - order) < 0.3, (errors, slopes)


def test_probability_flow_round_trip_recovers_x():
    sde, data = VPSDE(), Gaussian.random(8, seed=2)
    score_fn = data.score_fn(sde)

    def velocity(t, x):
        return probability_flow_drift(sde, score_fn, x, t)

    with jax.enable_x64(True):
        x = jnp.asarray(data.sample(jax.random.key(3), 64), jnp.float64)
        eps = 1e-3
        solve = functools.partial(ode.solve_adaptive, velocity, rtol=1e-8, atol=1e-8)
        z = solve(x, jnp.asarray(eps), jnp.asarray(1.0))
        back = solve(z.y, jnp.asarray(1.0), jnp.asarray(eps))
        assert bool(z.success) and bool(back.success)
        np.testing.assert_allclose(z.y, data.flow_map(sde, x, eps, 1.0), atol=1e-6)
        np.testing.assert_allclose(back.y, x, atol=1e-6)


def test_langevin_step_sizes_are_per_example():
    """A sample must not depend on its batch-mates (the original averaged norms over the batch)."""
    sde = VESDE()
    stepper = steppers.PredictorCorrector(
        steppers.ReverseDiffusion(sde), steppers.Langevin(sde, snr=0.16)
    )
    grid = grids.uniform_grid(sde, 20, 1e-5)
    score_fn = DATA.score_fn(sde)
    x = sde.prior_sampling(jax.random.key(4), (4, DIM))
    others = x.at[1:].multiply(7.0)  # same first example, very different batch-mates
    outputs = [
        sampling.run_steps(jax.random.key(5), score_fn, stepper, stepper.init(xi), grid).x[0]
        for xi in (x, others)
    ]
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "config",
    [
        {"method": "pc", "num_steps": 50},
        {"method": "ode"},
        {"method": "dpm_solver++", "num_steps": 20},
    ],
    ids=["pc", "ode", "dpm"],
)
def test_samples_do_not_depend_on_the_device_count(config):
    sde = VESDE() if config["method"] == "pc" else VPSDE()
    sampler = build.get_sampler(sde, config, (64, DIM))
    score_fn = DATA.score_fn(sde)
    key = jax.random.key(6)
    single = jax.block_until_ready(jax.jit(lambda k: sampler(k, score_fn))(key))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded_fn = jax.jit(
        lambda k: sampler(k, score_fn),
        out_shardings=sampling.SampleOutput(
            NamedSharding(mesh, PartitionSpec("data")),
            NamedSharding(mesh, PartitionSpec()),
            NamedSharding(mesh, PartitionSpec()),
        ),
    )
    sharded = jax.block_until_ready(sharded_fn(key))
    assert len(sharded.x.sharding.device_set) == 8
    np.testing.assert_allclose(sharded.x, single.x, rtol=1e-4, atol=1e-4)
    assert int(sharded.nfe) == int(single.nfe)


def test_vmap_over_keys_and_grad_through_a_fixed_grid_sample():
    sde = VPSDE()
    config = {"method": "heun", "num_steps": 20}
    sampler = build.get_sampler(sde, config, (8, 3))
    keys = jax.random.split(jax.random.key(7), 3)
    batch = jax.vmap(lambda k: sampler(k, lambda x, t: -x).x)(keys)
    assert batch.shape == (3, 8, 3)
    assert not np.allclose(batch[0], batch[1])

    # Data N(0, a^2 I): the sample's dependence on a, by jax.grad and by central differences.
    def sample_norm(a):
        def score_fn(x, t):
            m, s = sde.mean_coeff(t), sde.marginal_std(t)
            return -x / (m**2 * a**2 + s**2)[:, None]

        return jnp.sum(sampler64(jax.random.key(8), score_fn).x ** 2)

    with jax.enable_x64(True):
        sampler64 = build.get_sampler(sde, config, (8, 3), jnp.float64)
        a = jnp.asarray(1.5, jnp.float64)
        grad = jax.grad(sample_norm)(a)
        fd = (sample_norm(a + 1e-5) - sample_norm(a - 1e-5)) / 2e-5
    np.testing.assert_allclose(grad, fd, rtol=1e-5)
    assert float(grad) > 0  # wider data, wider samples


def test_chunked_sampling_equals_one_run_and_reports_progress():
    sde = VESDE()
    sampler = build.get_sampler(sde, {"method": "pc", "num_steps": 30}, (16, DIM))
    score_fn = DATA.score_fn(sde)
    key = jax.random.key(9)
    whole = jax.jit(lambda k: sampler(k, score_fn))(key)
    seen = []
    chunked = sampling.sample_in_chunks(
        sampler, key, score_fn, chunk_steps=7, report=lambda d, n: seen.append((d, n))
    )
    assert seen == [(7, 30), (14, 30), (21, 30), (28, 30), (30, 30)]
    np.testing.assert_allclose(chunked.x, whole.x, rtol=1e-5, atol=1e-5)
    assert int(chunked.nfe) == int(whole.nfe) == 60


def test_adaptive_solver_reports_failure_instead_of_hanging():
    sampler = build.get_sampler(VPSDE(), {"method": "ode", "max_steps": 3}, (8, DIM))
    out = jax.jit(lambda k: sampler(k, DATA.score_fn(VPSDE())))(jax.random.key(10))
    assert not bool(out.success)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"method": "ddpm"}, r"sampling.method must be one of .*'dpm_solver\+\+'.*got 'ddpm'"),
        ({"predictor": "heun"}, r"sampling.predictor must be one of .*'reverse_diffusion'"),
        ({"corrector": "hmc"}, r"sampling.corrector must be one of \['ald', 'langevin', 'none'\]"),
        (
            {"grid": "cosine"},
            r"sampling.grid must be one of \['karras', 'log_snr', 'quadratic', 'uniform'\]",
        ),
        ({"n_step_each": 2}, r"unknown sampling key\(s\) \['n_step_each'\]; valid keys"),
        ({"snr": -1.0}, r"snr must be a number in \(0, inf\], got -1.0"),
        ({"num_steps": 0}, r"num_steps must be an integer >= 1, got 0"),
    ],
)
def test_bad_configs_name_the_key_and_valid_choices(config, message):
    with pytest.raises(ValueError, match=message):
        build.get_sampler(VPSDE(), config, (4, 2))


def test_whole_config_is_refused_with_a_hint():
    config = ml_collections.ConfigDict({"sampling": {"method": "pc"}})
    with pytest.raises(ValueError, match=r"pass config\.sampling"):
        build.get_sampler(VPSDE(), config, (4, 2))


# --------------------------------------------------------------------------------------------
# The objects API: sampling.sample, final steps, ProbabilityFlow rules, validation.


def test_sample_equals_the_sampler_object_and_takes_a_traced_grid():
    sde = VPSDE()
    stepper = steppers.PredictorCorrector(
        steppers.ReverseDiffusion(sde), steppers.Langevin(sde, snr=0.16)
    )
    # 25 steps: with 10, beta_i = beta(t) dt reaches 2 and every sample was NaN (equal NaNs
    # passed this comparison); the sampler now refuses such grids.
    grid = grids.uniform_grid(sde, 25, 1e-3)
    score_fn, key = DATA.score_fn(sde), jax.random.key(11)
    out = sampling.sample(key, score_fn, stepper, grid, (8, DIM), sde=sde)
    assert bool(out.success) and np.isfinite(np.asarray(out.x)).all()
    sampler = sampling.FixedGridSampler(sde, stepper, np.asarray(grid), (8, DIM))
    np.testing.assert_array_equal(out.x, sampler(key, score_fn).x)
    assert int(out.nfe) == 50
    # The grid is an argument like any other: jit it, or differentiate through its times.
    traced = jax.jit(lambda g: sampling.sample(key, score_fn, stepper, g, (8, DIM), sde=sde).x)
    np.testing.assert_allclose(traced(grid), out.x, rtol=1e-5, atol=1e-5)


def test_final_steps():
    """None returns x; the noise-free mean x_mean; Tweedie the exact E[x_0 | x_t] of Gaussian
    data, mu + m C (m^2 C + s^2 I)^-1 (x_t - m mu)."""
    sde, g = VPSDE(), Gaussian.random(3, seed=4)
    x = jax.random.normal(jax.random.key(12), (5, 3))
    state = steppers.State(x, 0.5 * x)
    t = jnp.asarray(0.3)
    score_fn = g.score_fn(sde)
    assert sampling.NoDenoising()(sde, score_fn, state, t) is x
    assert sampling.NoiseFreeMean()(sde, score_fn, state, t) is state.x_mean
    tweedie = sampling.TweedieDenoising()(sde, score_fn, state, t)
    m, s = float(sde.mean_coeff(t)), float(sde.marginal_std(t))
    gain = m * g.cov @ np.linalg.inv(m**2 * g.cov + s**2 * np.eye(3))
    expected = g.mean + (np.asarray(x, np.float64) - m * g.mean) @ gain.T
    np.testing.assert_allclose(tweedie, expected, rtol=1e-4, atol=1e-5)
    nfes = [f.nfe for f in (sampling.NoDenoising(), sampling.NoiseFreeMean())]
    assert nfes == [0, 0] and sampling.TweedieDenoising().nfe == 1


def test_probability_flow_rules_are_objects():
    sde = VPSDE()
    for rule, order, nfe in ((ode.EULER, 1, 1), (ode.HEUN, 2, 2), (ode.RK4, 4, 4)):
        stepper = steppers.ProbabilityFlow(sde, rule)
        assert (stepper.order, stepper.nfe_per_step) == (order, nfe)
    assert steppers.ProbabilityFlow(sde).rule is ode.HEUN  # EDM's step by default

    def midpoint(fn, t, t_next, y):  # a user-written rule: explicit midpoint, order 2
        h = t_next - t
        return y + h * fn(t + h / 2, y + (h / 2) * fn(t, y))

    stepper = steppers.ProbabilityFlow(sde, ode.FixedStep(midpoint, order=2, nfe=2))
    with jax.enable_x64(True):
        errors = [_gaussian_flow_error(sde, stepper, n) for n in (64, 128)]
    assert abs(np.log2(errors[0] / errors[1]) - 2) < 0.3, errors
    with pytest.raises(TypeError, match=r"rule must be an ode.FixedStep such as .*got 'heun'"):
        steppers.ProbabilityFlow(sde, "heun")


def test_sample_and_sample_adaptive_validate_their_arguments():
    sde = VPSDE()
    stepper, grid = steppers.DPMSolverPP2M(sde), grids.uniform_grid(sde, 4, 1e-3)
    key, score_fn = jax.random.key(0), DATA.score_fn(sde)
    with pytest.raises(ValueError, match=r"shape must be a non-empty tuple of ints.*got \[4, 2\]"):
        sampling.sample(key, score_fn, stepper, grid, [4, 2], sde=sde)
    with pytest.raises(ValueError, match=r"grid must be 1-D with at least 2 times.*\(1,\)"):
        sampling.sample(key, score_fn, stepper, grid[:1], (4, 2), sde=sde)
    with pytest.raises(TypeError, match=r"stepper must be a stepper.*without \['init'"):
        sampling.sample(key, score_fn, "dpm_solver++", grid, (4, 2), sde=sde)
    with pytest.raises(TypeError, match=r"final_step must be a final step.*got 'tweedie'"):
        sampling.sample(key, score_fn, stepper, grid, (4, 2), sde=sde, final_step="tweedie")
    with pytest.raises(ValueError, match=r"eps must be a number in \(0, 1.0\), got 0.0"):
        sampling.sample_adaptive(key, score_fn, (4, 2), sde=sde, eps=0.0)
    with pytest.raises(ValueError, match=r"rtol must be a number in \(0, inf\], got -1"):
        sampling.sample_adaptive(key, score_fn, (4, 2), sde=sde, rtol=-1)
    with pytest.raises(ValueError, match=r"max_steps must be an integer >= 1, got 0"):
        sampling.sample_adaptive(key, score_fn, (4, 2), sde=sde, max_steps=0)


def test_sample_adaptive_takes_the_sde_default_eps_and_its_final_step():
    sde, shape = VESDE(), (8, DIM)
    score_fn, key = DATA.score_fn(sde), jax.random.key(13)
    out = jax.jit(lambda k: sampling.sample_adaptive(k, score_fn, shape, sde=sde))(key)
    sampler = build.get_sampler(sde, {"method": "ode"}, shape)
    assert sampler.eps == sampling.default_eps(sde)
    np.testing.assert_array_equal(out.x, jax.jit(lambda k: sampler(k, score_fn))(key).x)
    raw = jax.jit(
        lambda k: sampling.sample_adaptive(
            k, score_fn, shape, sde=sde, final_step=sampling.NoDenoising()
        )
    )(key)
    assert int(raw.nfe) == int(out.nfe) - 1 and not np.allclose(raw.x, out.x)
