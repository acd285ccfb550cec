"""The ODE solvers against exact solutions, matrix exponentials, scipy and convergence theory."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, linalg

from sde_jax import ode

STEPS = sorted(ode.FIXED_STEPS)


def decay_pair(t, y):
    """Two leaves: y_a' = -2 y_a and a rotation y_b' = [[0, 1], [-1, 0]] y_b."""
    return {"a": -2.0 * y["a"], "b": jnp.stack([y["b"][1], -y["b"][0]])}


def decay_pair_exact(y0, dt):
    c, s = np.cos(dt), np.sin(dt)
    b0 = np.asarray(y0["b"])
    return {
        "a": np.asarray(y0["a"]) * np.exp(-2.0 * dt),
        "b": np.array([c * b0[0] + s * b0[1], -s * b0[0] + c * b0[1]]),
    }


def cos_growth(t, y):
    """y' = cos(t) y, whose solution is y0 exp(sin t - sin t0): time-dependent and smooth."""
    return jnp.cos(t) * y


def test_adaptive_exact_decay_and_rotation_forward_and_backward():
    with jax.enable_x64(True):
        y0 = {"a": jnp.array([1.0, -3.0]), "b": jnp.array([1.0, 0.5])}
        solve = jax.jit(
            lambda y, t0, t1: ode.solve_adaptive(decay_pair, y, t0, t1, rtol=1e-9, atol=1e-9)
        )
        for t0, t1 in [(0.0, 2.0), (2.0, -1.0)]:
            sol = solve(y0, t0, t1)
            assert bool(sol.success) and float(sol.t) == t1
            exact = decay_pair_exact(y0, t1 - t0)
            for name in ("a", "b"):
                assert sol.y[name].dtype == jnp.float64
                np.testing.assert_allclose(sol.y[name], exact[name], rtol=1e-7, atol=1e-9)


def test_adaptive_linear_system_matches_matrix_exponential():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        a = rng.standard_normal((5, 5)) - 2.0 * np.eye(5)
        y0 = rng.standard_normal(5)
        sol = ode.solve_adaptive(
            lambda t, y: jnp.asarray(a) @ y, jnp.asarray(y0), 0.0, 1.5, rtol=1e-10, atol=1e-10
        )
        np.testing.assert_allclose(sol.y, linalg.expm(1.5 * a) @ y0, rtol=1e-8, atol=1e-10)


def test_adaptive_time_dependent_float32():
    y0 = jnp.array([1.0, 2.0], jnp.float32)
    sol = jax.jit(lambda y: ode.solve_adaptive(cos_growth, y, 0.5, 4.0))(y0)
    assert sol.y.dtype == jnp.float32 and sol.t.dtype == jnp.float32
    exact = np.asarray(y0) * np.exp(np.sin(4.0) - np.sin(0.5))
    np.testing.assert_allclose(sol.y, exact, rtol=1e-4)


def test_adaptive_error_scales_with_tolerance_and_matches_scipy_rk45():
    with jax.enable_x64(True):
        y0 = np.array([1.0, -0.5, 2.0])
        exact = y0 * np.exp(np.sin(6.0))
        errors, nfes = [], []
        for tol in (1e-4, 1e-6, 1e-8):
            sol = ode.solve_adaptive(cos_growth, jnp.asarray(y0), 0.0, 6.0, rtol=tol, atol=tol)
            ref = integrate.solve_ivp(
                lambda t, y: np.cos(t) * y, (0.0, 6.0), y0, "RK45", rtol=tol, atol=tol
            )
            err = np.max(np.abs(np.asarray(sol.y) - exact) / (tol + tol * np.abs(exact)))
            errors.append(err)
            nfes.append(int(sol.nfe))
            # Same method, same tolerance: a comparable number of evaluations as scipy's RK45.
            assert 0.6 * ref.nfev <= int(sol.nfe) <= 1.5 * ref.nfev, (tol, int(sol.nfe), ref.nfev)
        # The global error tracks the tolerance (within a modest factor), and more steps
        # follow from tighter tolerances.
        assert all(e < 30.0 for e in errors), errors
        assert nfes[0] < nfes[1] < nfes[2], nfes
        # At a tight tolerance both solvers agree with each other to well below it.
        tight = ode.solve_adaptive(cos_growth, jnp.asarray(y0), 0.0, 6.0, rtol=1e-10, atol=1e-10)
        ref = integrate.solve_ivp(
            lambda t, y: np.cos(t) * y, (0.0, 6.0), y0, "RK45", rtol=1e-10, atol=1e-10
        )
        np.testing.assert_allclose(tight.y, ref.y[:, -1], rtol=1e-8)


def test_max_steps_guard_reports_failure_on_stiff_problem():
    stiff = lambda t, y: -1e6 * (y - jnp.cos(t))  # noqa: E731
    sol = jax.jit(lambda y: ode.solve_adaptive(stiff, y, 0.0, 1.0, max_steps=20))(jnp.ones(2))
    assert not bool(sol.success)
    assert int(sol.num_steps) + int(sol.num_rejected) == 20
    assert float(sol.t) < 1.0
    assert np.all(np.isfinite(sol.y))


def test_non_finite_vector_field_reports_failure():
    sol = ode.solve_adaptive(lambda t, y: y / 0.0 * 0.0, jnp.ones(2), 0.0, 1.0, max_steps=50)
    assert not bool(sol.success)


def count_calls(fn):
    """Wraps fn so that every evaluation, even inside a compiled loop, bumps a host counter."""
    calls = [0]

    def bump():
        calls[0] += 1

    def wrapped(t, y):
        jax.debug.callback(bump)
        return fn(t, y)

    return wrapped, calls


@pytest.mark.parametrize("first_step", [None, 0.01])
def test_nfe_accounting(first_step):
    fn, calls = count_calls(cos_growth)
    sol = ode.solve_adaptive(
        fn, jnp.ones(3), 0.0, 10.0, rtol=1e-6, atol=1e-6, first_step=first_step
    )
    jax.block_until_ready(sol)
    attempts = int(sol.num_steps) + int(sol.num_rejected)
    assert int(sol.num_rejected) > 0  # exercise the rejection branch too
    initial = 2 if first_step is None else 1
    assert int(sol.nfe) == 6 * attempts + initial
    assert calls[0] == int(sol.nfe)


@pytest.mark.parametrize("name", STEPS)
def test_fixed_step_nfe_table(name):
    fn, calls = count_calls(cos_growth)
    jax.block_until_ready(ode.solve_fixed(name, fn, jnp.ones(2), jnp.linspace(0.0, 1.0, 6)))
    assert calls[0] == 5 * ode.FIXED_STEPS[name].nfe


@pytest.mark.parametrize("name", STEPS)
def test_fixed_step_empirical_convergence_order(name):
    """Slope of log error vs log step size on y' = cos(t) y, forward and backward."""
    order = ode.FIXED_STEPS[name].order
    with jax.enable_x64(True):
        y0 = jnp.array([1.0, -2.0])
        for t0, t1 in [(0.0, 3.0), (3.0, 0.5)]:
            exact = np.asarray(y0) * np.exp(np.sin(t1) - np.sin(t0))
            counts = np.array([16, 32, 64, 128, 256])
            errs = [
                np.max(
                    np.abs(
                        ode.solve_fixed(name, cos_growth, y0, jnp.linspace(t0, t1, n + 1)) - exact
                    )
                )
                for n in counts
            ]
            slope = np.polyfit(np.log(abs(t1 - t0) / counts), np.log(errs), 1)[0]
            assert order - 0.2 < slope < order + 0.3, (name, t0, t1, slope)


def test_vmap_and_jit_over_rates():
    rates = jnp.array([0.5, 1.0, 3.0])

    def solve(k):
        return ode.solve_adaptive(lambda t, y: -k * y, jnp.ones(2), 0.0, 1.0, rtol=1e-6, atol=1e-6)

    sol = jax.jit(jax.vmap(solve))(rates)
    assert sol.nfe.shape == (3,) and bool(jnp.all(sol.success))
    np.testing.assert_allclose(sol.y, np.exp(-np.asarray(rates))[:, None] * np.ones(2), rtol=1e-5)
    # Each problem takes its own steps under vmap: the fast decay needs more of them.
    assert int(sol.nfe[2]) > int(sol.nfe[0])


@pytest.mark.parametrize("name", STEPS)
def test_grad_through_solve_fixed_matches_analytic_derivative(name):
    with jax.enable_x64(True):

        def y_end(k):
            grid = jnp.linspace(0.0, 2.0, 401)
            return ode.solve_fixed(name, lambda t, y: -k * y, jnp.array(1.5), grid)

        k = 0.7
        grad = jax.jit(jax.grad(y_end))(k)
        # d/dk of 1.5 exp(-2k); the step's own error sets the tolerance (Euler's is O(h)).
        rtol = {"euler": 1e-2, "heun": 1e-4, "rk4": 1e-8}[name]
        np.testing.assert_allclose(grad, -2.0 * 1.5 * np.exp(-2.0 * k), rtol=rtol)


def test_dtypes_are_kept_when_time_and_state_differ():
    with jax.enable_x64(True):
        y0 = {"f32": jnp.ones(2, jnp.float32), "f64": jnp.ones(2, jnp.float64)}
        fn = lambda t, y: jax.tree.map(lambda v: -v, y)  # noqa: E731
        for t_dtype in (jnp.float32, jnp.float64):
            t0, t1 = jnp.asarray(0.0, t_dtype), jnp.asarray(1.0, t_dtype)
            sol = jax.jit(lambda y, a, b: ode.solve_adaptive(fn, y, a, b))(y0, t0, t1)
            assert sol.y["f32"].dtype == jnp.float32 and sol.y["f64"].dtype == jnp.float64
            assert sol.t.dtype == t_dtype
            for name in STEPS:
                out = ode.solve_fixed(name, fn, y0, jnp.linspace(t0, t1, 5))
                assert out["f32"].dtype == jnp.float32 and out["f64"].dtype == jnp.float64


def test_sharded_batch_takes_same_steps_as_single_device():
    mesh = jax.make_mesh((8,), ("batch",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    rates = jnp.linspace(0.5, 4.0, 16)[:, None] * jnp.ones((16, 3))
    fn = lambda t, y: -rates * y * jnp.cos(t)  # noqa: E731
    y0 = jnp.ones((16, 3))
    solve = jax.jit(lambda y: ode.solve_adaptive(fn, y, 0.0, 2.0))
    single = jax.block_until_ready(solve(y0))
    sharded = jax.block_until_ready(solve(jax.device_put(y0, sharding)))
    assert int(sharded.nfe) == int(single.nfe)
    np.testing.assert_allclose(sharded.y, single.y, rtol=1e-6)


def test_zero_length_interval_and_invalid_arguments():
    sol = ode.solve_adaptive(cos_growth, jnp.ones(2), 1.0, 1.0)
    assert bool(sol.success) and int(sol.num_steps) == 0
    np.testing.assert_array_equal(sol.y, np.ones(2))
    with pytest.raises(ValueError, match="rtol"):
        ode.solve_adaptive(cos_growth, jnp.ones(2), 0.0, 1.0, rtol=0.0)
    with pytest.raises(ValueError, match="max_steps"):
        ode.solve_adaptive(cos_growth, jnp.ones(2), 0.0, 1.0, max_steps=0)
    with pytest.raises(ValueError, match="step must be one of"):
        ode.solve_fixed("midpoint", cos_growth, jnp.ones(2), jnp.linspace(0.0, 1.0, 3))
    with pytest.raises(ValueError, match="grid"):
        ode.solve_fixed("rk4", cos_growth, jnp.ones(2), jnp.zeros((1,)))


def test_initial_step_probe_stays_inside_the_interval():
    """fn is NaN outside [t1, t0] (like sqrt(beta(t)) at t < 0); a huge first guess must not
    probe there. Regression: the probe once stepped past t1 and every step was rejected."""

    def fn(t, y):
        return jnp.sqrt(t) * 1e-7 * y  # tiny velocity => large first guess; NaN for t < 0

    sol = jax.jit(lambda y: ode.solve_adaptive(fn, y, jnp.asarray(1.0), jnp.asarray(1e-3)))(
        jnp.ones((8, 2))
    )
    assert bool(sol.success), sol
    np.testing.assert_allclose(sol.y, 1.0, atol=1e-6)


def test_error_norm_sum_does_not_depend_on_the_order():
    # The accept/reject decisions must not depend on how a sharded batch is reduced.
    v = np.random.default_rng(0).lognormal(0.0, 3.0, 4097).astype(np.float32)
    sums = [float(ode._order_free_sum(jnp.asarray(p))) for p in (v, v[::-1], np.sort(v))]
    assert sums[0] == sums[1] == sums[2]
    assert sums[0] == pytest.approx(float(np.sum(v.astype(np.float64))), rel=1e-6)
    assert not np.isfinite(float(ode._order_free_sum(jnp.asarray([1.0, np.nan]))))
    assert float(ode._order_free_sum(jnp.zeros(3))) == 0.0


# --------------------------------------------------------------------------------------------
# The embedded pairs: order conditions, fixed-step convergence, adaptive accuracy, sharding.

PAIRS = sorted(ode.PAIRS)


@functools.cache
def rooted_trees(order):
    """The rooted trees with ``order`` nodes, each a sorted tuple of its children's subtrees."""
    if order == 1:
        return ((),)

    def forests(nodes, smallest):
        # Multisets of trees with `nodes` nodes in all, the trees in non-decreasing order.
        if nodes == 0:
            yield ()
            return
        for size in range(1, nodes + 1):
            for tree in rooted_trees(size):
                if (size, tree) >= smallest:
                    for rest in forests(nodes - size, (size, tree)):
                        yield (tree, *rest)

    return tuple(forests(order - 1, (0, ())))


def tree_size(tree):
    return 1 + sum(tree_size(child) for child in tree)


def tree_density(tree):
    """gamma(tree) = |tree| * prod gamma(child): the order condition is b . Phi = 1 / gamma."""
    return tree_size(tree) * math.prod(tree_density(child) for child in tree)


def elementary_weights(a, tree):
    """Phi(tree) per stage: prod over children of (A Phi(child)), all ones for the leaf."""
    phi = np.ones(a.shape[0])
    for child in tree:
        phi = phi * (a @ elementary_weights(a, child))
    return phi


def order_residuals(tableau, weights, order):
    """Per size <= order, the worst |w . Phi(tree) - 1/gamma(tree)| over trees of that size,
    relative to |w| . Phi_|A|(tree), the scale of the float rounding of the coefficients."""
    a = np.zeros((tableau.stages, tableau.stages))
    for i, row in enumerate(tableau.a):
        a[i + 1, : len(row)] = row
    worst = []
    for size in range(1, order + 1):
        worst.append(
            max(
                abs(weights @ elementary_weights(a, tree) - 1 / tree_density(tree))
                / (np.abs(weights) @ elementary_weights(np.abs(a), tree))
                for tree in rooted_trees(size)
            )
        )
    return np.array(worst)


def test_rooted_tree_counts():
    # OEIS A000081: 1, 1, 2, 4, 9, 20, 48, 115 trees with 1..8 nodes.
    assert [len(rooted_trees(n)) for n in range(1, 9)] == [1, 1, 2, 4, 9, 20, 48, 115]
    assert sorted(tree_density(t) for t in rooted_trees(3)) == [3, 6]  # b.c^2 = 1/3, b.Ac = 1/6


@pytest.mark.parametrize("name", PAIRS)
def test_pair_satisfies_its_order_conditions(name):
    """Every rooted-tree condition up to the pair's order (200 trees for DOP853) holds to
    1e-14 relative to the size of its terms, and one above fails: the order is exact."""
    tableau = ode.PAIRS[name]
    b = np.asarray(tableau.b)
    a_rows = [np.asarray(row) for row in tableau.a]
    np.testing.assert_allclose([row.sum() for row in a_rows], tableau.c[1:], atol=1e-15)
    assert tableau.c[0] == 0.0 and b[-1] == 0.0
    estimates = [(b, tableau.order), (b - np.asarray(tableau.b_error), tableau.embedded_order)]
    if tableau.b_error_low is not None:
        estimates.append((b - np.asarray(tableau.b_error_low), 3))
    for weights, order in estimates:
        residuals = order_residuals(tableau, weights, order + 1)
        assert np.all(residuals[:order] < 1e-14), (name, order, residuals)
        assert residuals[order] > 1e-6, (name, order, residuals)
    # The error weights sum to zero: both solutions are consistent.
    assert abs(sum(tableau.b_error)) < 1e-15


def forced(t, y):
    """y' = -y + sin(t), whose solution is (y0 + 1/2) e^-t + (sin t - cos t) / 2."""
    return -y + jnp.sin(t)


def forced_exact(y0, t):
    return (np.asarray(y0) + 0.5) * np.exp(-t) + 0.5 * (np.sin(t) - np.cos(t))


@pytest.mark.parametrize("name", PAIRS)
def test_pair_converges_at_its_order_with_fixed_steps(name):
    """The propagated solution's global error falls as h^order, and the error estimate that
    drives the controller as h^error_order (one step, rtol = atol = 1)."""
    tableau = ode.PAIRS[name]
    with jax.enable_x64(True):
        y0 = jnp.array([1.0, -2.0])

        @jax.jit
        def fixed(n):
            h = 4.0 / n

            def body(i, carry):
                y, k1 = carry
                y, k, _ = ode._dopri_attempt(forced, i * h, y, k1, h, 1.0, 1.0, tableau)
                return y, k

            return jax.lax.fori_loop(0, n, body, (y0, forced(0.0, y0)))[0]

        counts = np.array([4, 8, 16]) if tableau.order == 8 else np.array([16, 32, 64])
        errs = [np.max(np.abs(np.asarray(fixed(n)) - forced_exact(y0, 4.0))) for n in counts]
        slope = np.polyfit(np.log(4.0 / counts), np.log(errs), 1)[0]
        assert tableau.order - 0.2 < slope < tableau.order + 0.6, (name, errs, slope)

        t = jnp.asarray(0.3)
        estimate = jax.jit(
            lambda h: ode._dopri_attempt(forced, t, y0, forced(t, y0), h, 1.0, 1.0, tableau)[2]
        )
        steps = np.array([0.4, 0.2, 0.1])
        slope = np.polyfit(np.log(steps), np.log([float(estimate(h)) for h in steps]), 1)[0]
        assert tableau.error_order - 0.2 < slope < tableau.error_order + 0.3, (name, slope)


@pytest.mark.parametrize("name", PAIRS)
def test_adaptive_pair_matches_closed_form_within_the_tolerance(name):
    """Within 10x the tolerance of the closed form, with every evaluation of fn counted."""
    with jax.enable_x64(True):
        y0 = jnp.array([1.0, -2.0, 0.5])
        exact = forced_exact(y0, 8.0)
        fn, calls = count_calls(forced)
        tol = 1e-7
        sol = ode.solve_adaptive(fn, y0, 0.0, 8.0, rtol=tol, atol=tol, method=name)
        assert bool(sol.success)
        err = np.max(np.abs(np.asarray(sol.y) - exact) / (tol + tol * np.abs(exact)))
        assert err < 10.0, (name, err)
        attempts = int(sol.num_steps) + int(sol.num_rejected)
        assert int(sol.nfe) == ode.PAIRS[name].nfe_per_step * attempts + 2 == calls[0]


@pytest.mark.parametrize("name", ["tsit5", "dop853"])
def test_pair_takes_the_same_steps_on_8_devices(name):
    mesh = jax.make_mesh((8,), ("batch",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    rates = jnp.linspace(0.5, 4.0, 16)[:, None] * jnp.ones((16, 3))
    decay = lambda t, y: -rates * y * jnp.cos(t)  # noqa: E731
    solve = jax.jit(lambda y: ode.solve_adaptive(decay, y, 0.0, 2.0, method=ode.PAIRS[name]))
    y0 = jnp.ones((16, 3))
    single = jax.block_until_ready(solve(y0))
    sharded = jax.block_until_ready(solve(jax.device_put(y0, sharding)))
    assert int(sharded.nfe) == int(single.nfe)
    # float32 rounding, which the pairs' large coefficients (|a_ij| up to 13 for Tsit5, 44 for
    # DOP853) amplify more than Dormand-Prince's: about 4e-6 after 30 steps.
    np.testing.assert_allclose(sharded.y, single.y, rtol=1e-5)


def test_invalid_pairs():
    with pytest.raises(TypeError, match="method must be a Tableau"):
        ode.solve_adaptive(cos_growth, jnp.ones(2), 0.0, 1.0, method=ode.RK4)
    with pytest.raises(ValueError, match="method must be one of"):
        ode.solve_adaptive(cos_growth, jnp.ones(2), 0.0, 1.0, method="rk45")
    with pytest.raises(ValueError, match="first-same-as-last"):
        ode.Tableau("euler2", (0.0, 1.0), ((1.0,),), (0.5, 0.5), (0.5, -0.5), 2, 1, 2)
    with pytest.raises(ValueError, match="b must have length 3"):
        ode.Tableau("short", (0.0, 1.0, 1.0), ((1.0,), (0.5, 0.5)), (0.5, 0.5), (0.0,) * 3, 2, 1, 2)
