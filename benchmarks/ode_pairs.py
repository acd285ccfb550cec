"""Embedded Runge-Kutta pairs on the likelihood ODE: evaluations, time and error per pair.

Run from the repository root:

    PYTHONPATH=$PWD python benchmarks/ode_pairs.py > benchmarks/ode_pairs.md

The problem is table 3 of benchmarks/likelihood.py in float64: the probability-flow ODE of
Gaussian data (32-D, rotated covariance with eigenvalues geomspace(0.5, 5e-6), an image-like
spectrum), the exact score, the exact trace (one jvp per dimension), 64 examples, from
eps = 1e-5 to T, in t, under the VP and the VE SDE. The error is the largest over the examples
of |log p - closed form| in nats (the flow of Gaussian data is linear, so its log-density is
exact). For each pair of sde_jax.tableaux it prints:

1. At rtol = atol = 1e-5 (the original's tolerance): NFE, accepted/rejected steps, wall time
   of the jitted solve (best of 3) and the error; scipy's host RK45 at the same tolerance for
   reference.
2. Accuracy-matched: over tolerances a quarter decade apart, the fewest evaluations that
   reach Dormand-Prince's error at 1e-5 (and scipy RK45's), the tolerance that does it, and
   Dormand-Prince's NFE divided by the pair's (the issue's target: >= 1.5x).

The augmented ODE is the one sde_jax.likelihood.log_likelihood integrates, built from the
same pieces so that the pair can be chosen; the script checks that with Dormand-Prince it
reproduces log_likelihood's NFE and log p.
"""

import platform
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy import integrate  # noqa: E402

from benchmarks.likelihood import GaussianData  # noqa: E402
from sde_jax import VESDE, VPSDE, ode, probability_flow_drift  # noqa: E402
from sde_jax import likelihood as lik  # noqa: E402

DIM = 32
BATCH = 64
EPS = 1e-5
TOL = 1e-5


class Gaussian64(GaussianData):
    """GaussianData in float64 throughout (an exactly orthogonal rotation)."""

    def __init__(self, sde, dim, seed=0, smallest=5e-6, largest=0.5):
        rng = np.random.default_rng(seed)
        self.sde = sde
        self.q = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
        self.mu = 0.3 * rng.standard_normal(dim)
        self.lam = np.geomspace(largest, smallest, dim)

    def sample(self, n, seed=1):
        z = np.random.default_rng(seed).standard_normal((n, self.mu.size)) * np.sqrt(self.lam)
        return self.mu + z @ self.q.T


def augmented_field(sde, score_fn, x):
    """log_likelihood's augmented ODE in t, exact trace: (dx/dt, divergence)."""
    probes = lik._draw_probes(jax.random.key(0), x, "exact", 1)

    def fn(t, state):
        drift = lambda y: probability_flow_drift(sde, score_fn, y, jnp.full((x.shape[0],), t))  # noqa: E731
        return lik.divergence(drift, state[0], probes, average=False)

    return fn


def solver(data, x, pair, tol):
    """A jitted solve with ``pair`` at ``tol``: returns (logp, nfe, steps, rejected)."""
    fn = augmented_field(data.sde, data.score, x)

    @jax.jit
    def solve(y):
        sol = ode.solve_adaptive(
            fn, (y, jnp.zeros(y.shape[0])), EPS, data.sde.T, rtol=tol, atol=tol, method=pair
        )
        z, delta = sol.y
        logp = data.sde.prior_logp(z) + delta
        err = jnp.max(jnp.abs(logp - data.reference(y, z)))
        return logp, err, sol.nfe, sol.num_steps, sol.num_rejected, sol.success

    return solve


def best_time(fn, x, repeats=3):
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(x))
        best = min(best, time.perf_counter() - start)
    return best


def scipy_rk45(data, x, tol):
    """scipy's RK45 on the host, same augmented ODE: (nfe, error)."""
    fn = jax.jit(augmented_field(data.sde, data.score, x))

    def rhs(t, flat):
        dx, div = fn(jnp.asarray(t), (jnp.asarray(flat[: x.size].reshape(x.shape)),))
        return np.concatenate([np.asarray(dx).ravel(), np.asarray(div)])

    y0 = np.concatenate([np.asarray(x).ravel(), np.zeros(x.shape[0])])
    sol = integrate.solve_ivp(rhs, (EPS, data.sde.T), y0, "RK45", rtol=tol, atol=tol)
    z = jnp.asarray(sol.y[: x.size, -1].reshape(x.shape))
    logp = data.sde.prior_logp(z) + sol.y[x.size :, -1]
    return sol.nfev, float(jnp.max(jnp.abs(logp - data.reference(x, z))))


class Sweep:
    """Memoized solves of one problem: (pair, tol) -> (nfe, steps, rejected, err)."""

    def __init__(self, data, x):
        self.data, self.x, self.points, self.solvers = data, x, {}, {}

    def solver(self, name, tol):
        """The jitted solve (compiled once per pair and tolerance)."""
        key = (name, float(f"{tol:.6e}"))
        if key not in self.solvers:
            self.solvers[key] = solver(self.data, self.x, ode.PAIRS[name], tol)
        return self.solvers[key]

    def __call__(self, name, tol):
        key = (name, float(f"{tol:.6e}"))
        if key not in self.points:
            _, err, nfe, steps, rejected, ok = self.solver(name, tol)(self.x)
            err = float(err) if bool(ok) else np.inf
            self.points[key] = (int(nfe), int(steps), int(rejected), err)
        return self.points[key]

    def tol_needed(self, name, target, refinements=2):
        """The loosest tolerance (to 1/4 decade) whose error is <= target: (tol, nfe)."""
        exponent = -5.0
        if self(name, 10**exponent)[3] <= target:
            while exponent < -0.5 and self(name, 10 ** (exponent + 1))[3] <= target:
                exponent += 1
            good, bad = exponent, exponent + 1
        else:
            while exponent > -10 and self(name, 10**exponent)[3] > target:
                exponent -= 1
            good, bad = exponent, exponent + 1
        for _ in range(refinements):
            mid = 0.5 * (good + bad)
            good, bad = (mid, bad) if self(name, 10**mid)[3] <= target else (good, mid)
        reached = [
            (nfe, tol)
            for (n, tol), (nfe, *_, err) in self.points.items()
            if n == name and err <= target
        ]
        nfe, tol = min(reached)
        return tol, nfe


def study(sde, label):
    data = Gaussian64(sde, DIM)
    x = jnp.asarray(data.sample(BATCH))

    # The reconstruction matches log_likelihood itself (Dormand-Prince, exact trace).
    ref = jax.jit(
        lambda y: lik.log_likelihood(
            jax.random.key(0), sde, data.score, y, hutchinson="exact", rtol=TOL, atol=TOL
        )
    )(x)
    sweep = Sweep(data, x)
    logp, _, nfe, *_ = sweep.solver("dopri5", TOL)(x)
    same = int(nfe) == int(ref.nfe) and bool(jnp.allclose(logp, ref.logp, rtol=0, atol=1e-12))

    print(f"## {label}\n")
    print(f"(Dormand-Prince here reproduces `log_likelihood`'s NFE and log p: {same}.)\n")
    print(f"### 1. At rtol = atol = {TOL:.0e}\n")
    print("| pair | order | NFE/step | NFE | steps | rejected | seconds | max err (nats) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, pair in ode.PAIRS.items():
        nfe, steps, rejected, err = sweep(name, TOL)
        seconds = best_time(sweep.solver(name, TOL), x)
        print(
            f"| {name} | {pair.order}({pair.embedded_order}) | {pair.nfe_per_step} | {nfe} "
            f"| {steps} | {rejected} | {seconds:.3f} | {err:.2e} |"
        )
    host_nfe, host_err = scipy_rk45(data, x, TOL)
    print(f"| scipy RK45 (host) | 5(4) | 6 | {host_nfe} | | | | {host_err:.2e} |\n")

    target = sweep("dopri5", TOL)[3]
    print("### 2. At equal accuracy\n")
    print(
        f"Target: Dormand-Prince's error at {TOL:.0e}, {target:.2e} nats. The loosest tolerance "
        "(searched to a quarter decade) at which each pair reaches it:\n"
    )
    print("| pair | tol needed | NFE | steps | rejected | NFE dopri5 / NFE pair |")
    print("|---|---|---|---|---|---|")
    base = sweep("dopri5", TOL)[0]
    ratios = {}
    for name in ode.PAIRS:
        tol, nfe = sweep.tol_needed(name, target)
        _, steps, rejected, _ = sweep(name, tol)
        ratios[name] = base / nfe
        print(f"| {name} | {tol:.1e} | {nfe} | {steps} | {rejected} | {base / nfe:.2f} |")
    print()

    print("### 3. The step floor: the loosest tolerances\n")
    print(
        "The fewest steps each pair takes, at tolerances far looser than any useful one; "
        "NFE there is about that floor x NFE/step.\n"
    )
    print("| pair | NFE/step | tol | steps | rejected | NFE | max err |")
    print("|---|---|---|---|---|---|---|")
    for name, pair in ode.PAIRS.items():
        for tol in (1e-1, 1e-2):
            nfe, steps, rejected, err = sweep(name, tol)
            print(
                f"| {name} | {pair.nfe_per_step} | {tol:.0e} | {steps} | {rejected} | {nfe} "
                f"| {err:.2e} |"
            )
    print("\nAll solves:\n\n| pair | tol | NFE | steps | rejected | max err |")
    print("|---|---|---|---|---|---|")
    for (name, tol), (nfe, steps, rejected, err) in sorted(sweep.points.items()):
        print(f"| {name} | {tol:.1e} | {nfe} | {steps} | {rejected} | {err:.2e} |")
    print()
    return ratios


def main():
    start = time.time()
    print("# Embedded pairs on the likelihood ODE (raw output of benchmarks/ode_pairs.py)\n")
    print(
        f"{platform.processor() or platform.machine()}, {jax.devices()[0].device_kind}, "
        f"jax {jax.__version__}, python {sys.version.split()[0]}; float64; Gaussian data "
        f"dim {DIM}, eigenvalues geomspace(0.5, 5e-6), batch {BATCH}, exact score and trace, "
        f"eps {EPS}.\n"
    )
    ratios = {label: study(sde, label) for sde, label in ((VPSDE(), "VP"), (VESDE(), "VE"))}
    print("## Summary: NFE of Dormand-Prince / NFE of the pair at Dormand-Prince's error at 1e-5\n")
    print("| pair | " + " | ".join(ratios) + " |\n|---|" + "---|" * len(ratios))
    for name in ode.PAIRS:
        print(f"| {name} | " + " | ".join(f"{r[name]:.2f}" for r in ratios.values()) + " |")
    print()
    print(f"Total {time.time() - start:.0f} s.")


if __name__ == "__main__":
    main()
