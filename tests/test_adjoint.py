"""Reverse-mode gradients through the adaptive solve, against closed forms and differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_jax import VPSDE, ode, sampling
from sde_jax import likelihood as lik
from sde_jax.adjoint import Backsolve, RecursiveCheckpoint
from sde_jax.controllable.latent import LatentCodec

TOL = 1e-8  # solver rtol = atol in the float64 tests
# Backsolve differentiates the exact flow to the solver's accuracy, not the discrete solve:
# measured relative errors against the closed forms were up to 3e-8 at TOL (7e-5 at 1e-5).
BACKSOLVE_RTOL = 1e-5


METHODS = pytest.mark.parametrize(
    "method", [RecursiveCheckpoint(), Backsolve()], ids=["checkpoint", "backsolve"]
)


def gradient_rtol(method):
    return BACKSOLVE_RTOL if isinstance(method, Backsolve) else 1e-5


# --------------------------------------------------------------------------------------------
# The solver itself.


def test_linear_ode_gradient_matches_closed_form():
    """dy/dt = a y: y(t1) = y0 exp(a (t1 - t0)), a closed over, y0 differentiated.

    16 checkpoints of a budget of 64: the backward pass replays segments of 4 attempts (the
    default's single segment is exercised by the PF-ODE tests; Backsolve's closed forms too).
    """
    t0, t1 = 0.2, 1.7
    method, max_steps = RecursiveCheckpoint(checkpoints=16), 64

    def total(a, y0):
        sol = ode.solve_adaptive(
            lambda t, y: a * y, y0, t0, t1, rtol=TOL, atol=TOL, max_steps=max_steps, adjoint=method
        )
        return jnp.sum(sol.y), sol.nfe

    with jax.enable_x64(True):
        a, y0 = jnp.asarray(0.7), jnp.asarray([[1.0, -2.0, 0.5]])
        (value, nfe), (grad_a, grad_y0) = jax.jit(
            jax.value_and_grad(total, argnums=(0, 1), has_aux=True)
        )(a, y0)
        growth = np.exp(0.7 * (t1 - t0))
        np.testing.assert_allclose(value, -0.5 * growth, rtol=1e-7)
        np.testing.assert_allclose(grad_a, (t1 - t0) * -0.5 * growth, rtol=gradient_rtol(method))
        np.testing.assert_allclose(grad_y0, np.full((1, 3), growth), rtol=gradient_rtol(method))
        assert int(nfe) > 20  # an adaptive solve, not one step


@pytest.mark.parametrize(
    "method", [RecursiveCheckpoint(checkpoints=50), Backsolve()], ids=["checkpoint", "backsolve"]
)
def test_nonlinear_ode_gradients_match_central_differences(method):
    """A forced pendulum; the parameters a pytree argument, and the initial state."""

    def field(t, y, params):
        force = params["f"] * jnp.cos(t)
        return jnp.stack([y[:, 1], -(params["w"] ** 2) * jnp.sin(y[:, 0]) + force], axis=1)

    def loss(params, y0):
        sol = ode.solve_adaptive(
            lambda t, y: field(t, y, params),
            y0,
            0.0,
            2.0,
            rtol=TOL,
            atol=TOL,
            max_steps=200,  # 50 checkpoints: the backward pass replays segments of 4 attempts
            adjoint=method,
        )
        return jnp.sum(sol.y[:, 0] ** 2 + 0.3 * sol.y[:, 1]), sol.num_steps + sol.num_rejected

    with jax.enable_x64(True):
        params = {"w": jnp.asarray(1.3), "f": jnp.asarray(0.4)}
        y0 = jnp.asarray([[0.5, 0.0], [1.0, -0.3]])
        # One compilation: the differences use the values of the same program.
        value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
        (_, attempts), (grad_params, grad_y0) = value_and_grad(params, y0)
        assert 8 < int(attempts) < 200, attempts  # several segments replayed
        value = lambda p, y: value_and_grad(p, y)[0][0]  # noqa: E731
        h = 1e-5
        for name in ("w", "f"):
            up, down = dict(params), dict(params)
            up[name], down[name] = params[name] + h, params[name] - h
            fd = (value(up, y0) - value(down, y0)) / (2 * h)
            np.testing.assert_allclose(grad_params[name], fd, rtol=gradient_rtol(method))
        fd_y = (value(params, y0.at[1, 0].add(h)) - value(params, y0.at[1, 0].add(-h))) / (2 * h)
        np.testing.assert_allclose(grad_y0[1, 0], fd_y, rtol=gradient_rtol(method))


def test_checkpointed_loop_takes_the_same_steps_as_the_while_loop():
    def fn(t, y):
        return -(y**3) + jnp.sin(3 * t)

    y0 = jnp.linspace(-1.0, 1.0, 16, dtype=jnp.float32).reshape(8, 2)
    solve = jax.jit(
        lambda y, method: ode.solve_adaptive(fn, y, 0.0, 3.0, adjoint=method), static_argnums=1
    )
    plain, checkpointed = solve(y0, None), solve(y0, RecursiveCheckpoint())
    assert int(checkpointed.nfe) == int(plain.nfe) > 30
    assert int(checkpointed.num_rejected) == int(plain.num_rejected)
    np.testing.assert_allclose(checkpointed.y, plain.y, rtol=1e-6, atol=1e-7)
    assert RecursiveCheckpoint().schedule(4096) == (64, 64)
    assert RecursiveCheckpoint().schedule(1000) == (32, 32)
    assert RecursiveCheckpoint(3).schedule(64) == (3, 22)


def test_checkpointed_gradient_memory_grows_sublinearly():
    def loss(a, max_steps):
        sol = ode.solve_adaptive(
            lambda t, y: a * jnp.tanh(y),
            jnp.ones((64, 16)),
            0.0,
            1.0,
            max_steps=max_steps,
            adjoint=RecursiveCheckpoint(),
        )
        return jnp.sum(sol.y)

    def temp_bytes(max_steps):
        compiled = jax.jit(jax.grad(loss), static_argnums=1).lower(0.5, max_steps).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    small, large = temp_bytes(64), temp_bytes(1024)
    # 16 times the budget: sqrt(16) = 4 times the stored states, plus the step's residuals.
    assert large < 6 * small, (small, large)


# --------------------------------------------------------------------------------------------
# The probability-flow ODE: data N(mu, a^2 I), so p_t = N(m(t) mu, v(t) I), v = m^2 a^2 + s^2.

SDE = VPSDE()
EPS = 1e-3


def variance(a, t):
    return SDE.mean_coeff(t) ** 2 * a**2 + SDE.marginal_std(t) ** 2


def make_score(a, mean=0.0):
    return lambda x, t: -(x - SDE.mean_coeff(t)[:, None] * mean) / variance(a, t)[:, None]


def normal_logp(y, var):
    return -0.5 * jnp.sum(y**2 / var + jnp.log(2 * jnp.pi * var), axis=1)


def exact_logp(params, x):
    """The flow's log-density log p_eps(x) + log prior(z) - log p_T(z), z the exact flow of x."""
    a, mean = jnp.exp(params["log_scale"]), params["mean"]
    (m_eps, v_eps), (m_T, v_T) = [(SDE.mean_coeff(t), variance(a, t)) for t in (EPS, SDE.T)]
    z = m_T * mean + (x - m_eps * mean) * jnp.sqrt(v_T / v_eps)
    return (
        normal_logp(x - m_eps * mean, v_eps) + SDE.prior_logp(z) - normal_logp(z - m_T * mean, v_T)
    )


def mean_logp(params, x, method):
    score = make_score(jnp.exp(params["log_scale"]), params["mean"])
    out = lik.log_likelihood(
        jax.random.key(0),
        SDE,
        score,
        x,
        hutchinson="exact",
        rtol=TOL,
        atol=TOL,
        eps=EPS,
        adjoint=method,
    )
    return jnp.mean(out.logp)


# One compilation per method, shared by the tests below (same shapes and sharding).
mean_logp_and_grad = jax.jit(jax.value_and_grad(mean_logp, argnums=(0, 1)), static_argnums=2)


def sharded(x, spec=None, explicit=False):
    """The batch over the 8 devices (``P()``: replicated), on a mesh of automatic axes.

    Parameters are replicated on the mesh, as the gradients come back, so the updated
    parameters have the type of the first ones and reuse the compilation. ``explicit``: on a
    mesh of explicit axes (``jax.make_mesh``'s default), where arrays carry their sharding in
    their type.
    """
    if explicit:
        mesh = jax.make_mesh((jax.device_count(),), ("batch",))
    else:
        mesh = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
    return jax.device_put(x, jax.NamedSharding(mesh, jax.P("batch") if spec is None else spec))


@METHODS
def test_mean_log_likelihood_gradient_matches_closed_form(method):
    with jax.enable_x64(True):
        params = {"mean": jnp.asarray([0.3, -0.2]), "log_scale": jnp.log(jnp.asarray(0.8))}
        params = sharded(jax.tree.map(lambda v: v.astype(jnp.float64), params), jax.P())
        x = sharded(0.8 * jax.random.normal(jax.random.key(1), (8, 2), jnp.float64))
        value, (grads, grad_x) = jax.block_until_ready(mean_logp_and_grad(params, x, method))
        ref_value, (ref, ref_x) = jax.value_and_grad(
            lambda p, x: jnp.mean(exact_logp(p, x)), argnums=(0, 1)
        )(params, x)
        np.testing.assert_allclose(value, ref_value, rtol=1e-6)
        for name in params:
            np.testing.assert_allclose(grads[name], ref[name], rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(grad_x, ref_x, rtol=1e-5, atol=1e-8)
        if isinstance(method, RecursiveCheckpoint):
            h, log_a = 1e-5, params["log_scale"]
            up = mean_logp_and_grad({**params, "log_scale": log_a + h}, x, method)[0]
            down = mean_logp_and_grad({**params, "log_scale": log_a - h}, x, method)[0]
            np.testing.assert_allclose(grads["log_scale"], (up - down) / (2 * h), rtol=1e-5)


@METHODS
def test_gradients_on_an_explicit_axis_mesh_equal_the_automatic_ones(method):
    """jax.make_mesh's explicit axes type arrays by sharding: the solve, its adjoints and the
    probes keep the types consistent, and the numbers do not change."""
    with jax.enable_x64(True):
        params = {"mean": jnp.asarray([0.3, -0.2]), "log_scale": jnp.log(jnp.asarray(0.8))}
        x = 0.8 * jax.random.normal(jax.random.key(1), (8, 2), jnp.float64)
        results = [
            jax.block_until_ready(
                mean_logp_and_grad(
                    sharded(params, jax.P(), explicit=explicit),
                    sharded(x, explicit=explicit),
                    method,
                )
            )
            for explicit in (False, True)
        ]
        assert jax.typeof(results[1][1][1]).sharding.spec == jax.P("batch", None)
        for auto, explicit in zip(*map(jax.tree.leaves, results), strict=True):
            np.testing.assert_allclose(explicit, auto, rtol=1e-12, atol=1e-14)


def test_maximum_likelihood_fine_tuning_lowers_held_out_nll():
    """Adam on the exact PF-ODE likelihood of a score with a learnable mean and scale."""
    optax = pytest.importorskip("optax")
    with jax.enable_x64(True):
        mean, scale = jnp.asarray([1.0, -0.5]), 0.6
        draw = lambda key: sharded(mean + scale * jax.random.normal(key, (8, 2), jnp.float64))  # noqa: E731
        train, held_out = draw(jax.random.key(4)), draw(jax.random.key(5))
        params = sharded({"mean": jnp.zeros(2), "log_scale": jnp.zeros(())}, jax.P())
        optimizer = optax.adam(0.05)
        opt_state = optimizer.init(params)
        method = RecursiveCheckpoint()
        nll = lambda p: -float(mean_logp_and_grad(p, held_out, method)[0])  # noqa: E731
        history = [nll(params)]
        for _ in range(12):
            _, (grads, _) = mean_logp_and_grad(params, train, method)
            updates, opt_state = optimizer.update(jax.tree.map(jnp.negative, grads), opt_state)
            params = optax.apply_updates(params, updates)
            history.append(nll(params))
        # Measured: 2.66 nats before, 1.61 after 12 steps, every step lower.
        assert np.all(np.diff(history) < 0) and history[-1] < history[0] - 0.5, history
        # Tracks the closed form: the solve's held-out NLL is the flow's.
        np.testing.assert_allclose(
            history[-1], -float(jnp.mean(exact_logp(params, held_out))), rtol=1e-6
        )


def central_difference(fn, a, h=1e-5):
    return (fn(a + h) - fn(a - h)) / (2 * h)


@METHODS
def test_adaptive_sample_gradient_matches_closed_form_and_differences(method):
    """x_eps = x_T sqrt(v(eps) / v(T)) exactly, for the exact score of N(0, a^2 I)."""
    shape = (4, 3)

    def sample_norm(a):
        out = sampling.sample_adaptive(
            jax.random.key(2),
            make_score(a),
            shape,
            sde=SDE,
            eps=EPS,
            rtol=TOL,
            atol=TOL,
            final_step=sampling.NoDenoising(),
            dtype=jnp.float64,
            adjoint=method,
        )
        return jnp.sum(out.x**2)

    with jax.enable_x64(True):
        a = jnp.asarray(1.2)
        x_T = SDE.prior_sampling(jax.random.key(2), shape, jnp.float64)
        exact = lambda a: jnp.sum(x_T**2) * variance(a, EPS) / variance(a, SDE.T)  # noqa: E731
        value_and_grad = jax.jit(jax.value_and_grad(sample_norm))
        value, grad = value_and_grad(a)
        np.testing.assert_allclose(value, exact(a), rtol=1e-6)
        np.testing.assert_allclose(grad, jax.grad(exact)(a), rtol=gradient_rtol(method))
        fd = central_difference(lambda a: value_and_grad(a)[0], a)
        np.testing.assert_allclose(grad, fd, rtol=gradient_rtol(method))
        assert float(grad) > 0  # wider data, wider samples


@METHODS
def test_latent_gradients_match_closed_form_and_differences(method):
    """z = x sqrt(v(T) / v(eps)) exactly: gradients of the encoder in the data and in a, and
    of the decoder (its inverse) in the latent."""
    codec = LatentCodec(SDE, EPS, rtol=TOL, atol=TOL, adjoint=method)

    def latent_norm(a, x):
        return jnp.sum(codec.encode(make_score(a), x).z ** 2)

    def decoded_norm(a, z):
        return jnp.sum(codec.decode(make_score(a), z).x ** 2)

    with jax.enable_x64(True):
        a = jnp.asarray(1.2)
        x = jax.random.normal(jax.random.key(3), (4, 3), jnp.float64)
        encode_grad = jax.jit(jax.value_and_grad(latent_norm, argnums=(0, 1)))
        value, (grad_a, grad_x) = encode_grad(a, x)
        ratio = lambda a: variance(a, SDE.T) / variance(a, EPS)  # noqa: E731
        rtol = gradient_rtol(method)
        np.testing.assert_allclose(value, jnp.sum(x**2) * ratio(a), rtol=1e-6)
        np.testing.assert_allclose(grad_x, 2 * x * ratio(a), rtol=rtol)
        np.testing.assert_allclose(grad_a, jnp.sum(x**2) * jax.grad(ratio)(a), rtol=rtol)
        fd = central_difference(lambda a: encode_grad(a, x)[0], a)
        np.testing.assert_allclose(grad_a, fd, rtol=rtol)

        z = x * jnp.sqrt(ratio(a))
        grad_z = jax.jit(jax.grad(decoded_norm, argnums=1))(a, z)
        np.testing.assert_allclose(grad_z, 2 * z / ratio(a), rtol=rtol)


# --------------------------------------------------------------------------------------------
# Arguments.


def test_bad_adjoint_raises():
    fn = lambda t, y: -y  # noqa: E731
    with pytest.raises(TypeError, match=r"adjoint must be one of None, RecursiveCheckpoint"):
        ode.solve_adaptive(fn, jnp.ones((2, 2)), 0.0, 1.0, adjoint="checkpoint")
    with pytest.raises(TypeError, match=r"adjoint=.checkpoint."):
        lik.log_likelihood(
            jax.random.key(0), SDE, make_score(1.0), jnp.ones((2, 2)), adjoint="checkpoint"
        )
    with pytest.raises(TypeError, match="adjoint"):
        sampling.AdaptiveODESampler(SDE, (2, 2), EPS, adjoint=True)
    with pytest.raises(TypeError, match="adjoint"):
        LatentCodec(SDE, EPS, adjoint=object())
    with pytest.raises(ValueError, match=r"checkpoints must be an integer >= 1 \(or None\), got 0"):
        RecursiveCheckpoint(checkpoints=0)
    with pytest.raises(ValueError, match=r"rtol must be a number in \(0, inf\], got 0.0"):
        Backsolve(rtol=0.0)
