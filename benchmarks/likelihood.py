"""Benchmark of the on-device likelihood solve (sde_jax.likelihood) on CPU.

Run from the repository root:

    PYTHONPATH=$PWD python benchmarks/likelihood.py > benchmarks/likelihood.md

It measures, and prints as Markdown:

1. The cost of one evaluation of the augmented ODE (PF-ODE drift plus the jvp divergence with
   one probe) divided by one network forward, side by side, on two small NCSN++ networks.
2. End-to-end time of `log_likelihood` (jitted, on device) against host-side scipy RK45 solves
   of the same ODE at the same tolerance with device round trips per evaluation: as the
   original score_sde did it (a drift call and a separate vjp-divergence call), with drift and
   vjp divergence in one call, and with the same jvp augmented function sde_jax integrates.
3. Evaluations needed at equal accuracy, checked against the exact-trace closed form on
   Gaussian data with an image-like spectrum: scipy RK45 against the on-device solver in t and
   in log sigma.

scipy appears only here, never inside the library.
"""

import math
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate

from sde_jax import VESDE, VPSDE, SubVPSDE, probability_flow_drift
from sde_jax import likelihood as lik

IMAGE = (16, 16, 3)
BATCH = 8
TOL = 1e-5
EPS = 1e-5


# --------------------------------------------------------------------------------------------
# Data: a Gaussian with a rotated, image-like spectrum (power-law decay down to about the
# dequantization noise floor), so the exact score and log-density are closed form.


class GaussianData:
    def __init__(self, sde, dim, seed=0, smallest=5e-6, largest=0.5):
        rng = np.random.default_rng(seed)
        self.sde = sde
        self.q = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)
        self.mu = (0.3 * rng.standard_normal(dim)).astype(np.float32)
        self.lam = np.geomspace(largest, smallest, dim).astype(np.float32)

    def sample(self, n, seed=1):
        z = np.random.default_rng(seed).standard_normal((n, self.mu.size)) * np.sqrt(self.lam)
        return (self.mu + z @ self.q.T).astype(np.float32)

    def _coords(self, x, t):
        m, s = self.sde.mean_coeff(t), self.sde.marginal_std(t)
        var = m[:, None] ** 2 * self.lam + s[:, None] ** 2
        return (x - m[:, None] * self.mu) @ self.q, var

    def score(self, x, t):
        flat = x.reshape(x.shape[0], -1)
        r, var = self._coords(flat, t)
        return ((-r / var) @ self.q.T).reshape(x.shape)

    def logp(self, x, t):
        flat = x.reshape(x.shape[0], -1)
        r, var = self._coords(flat, jnp.full((x.shape[0],), t))
        return -0.5 * jnp.sum(r**2 / var + jnp.log(2 * jnp.pi * var), axis=-1)

    def reference(self, x, z):
        return self.logp(x, EPS) + self.sde.prior_logp(z) - self.logp(z, self.sde.T)


# --------------------------------------------------------------------------------------------
# The network.


def build_network(key, channels=64, num_blocks=3):
    """Returns (apply(x, t), description) of a small NCSN++ from sde_jax.models."""
    from sde_jax import models

    x0, t0 = jnp.zeros((BATCH, *IMAGE)), jnp.full((BATCH,), 0.5)
    nf = channels // 2
    model = models.presets.ncsnpp_cifar10(
        nf=nf, ch_mult=(1, 2), num_res_blocks=num_blocks, attn_resolutions=(8,), dropout=0.0
    )
    params = model.init(key, x0, t0, train=False)

    def apply(x, t):
        return model.apply(params, x, t, train=False)

    size = sum(p.size for p in jax.tree.leaves(params))
    return apply, (
        f"sde_jax.models.presets.ncsnpp_cifar10 shrunk to nf={nf}, ch_mult=(1, 2), "
        f"num_res_blocks={num_blocks}, attention at 8x8, no dropout ({size:,} parameters)"
    )


# --------------------------------------------------------------------------------------------


def timeit(fn, *args, repeats=10):
    """Fastest wall time of fn(*args) after a warm-up call, blocking on the result.

    The fastest run is the least disturbed by other processes on a shared machine.
    """
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.min(times))


def evaluation_cost(sde, score_fn, x):
    """Augmented-evaluation cost over forward cost, measured alternately."""
    t = jnp.full((x.shape[0],), 0.5)
    probe = jax.random.rademacher(jax.random.key(0), (1, *x.shape), x.dtype)
    forward = jax.jit(score_fn)
    drift = lambda y: probability_flow_drift(sde, score_fn, y, t)  # noqa: E731
    augmented = jax.jit(lambda y: lik.divergence(drift, y, probe))

    def vjp_divergence(y):
        out, pullback = jax.vjp(drift, y)
        return out, jnp.sum(pullback(probe[0])[0] * probe[0], axis=(1, 2, 3))

    vjp_aug = jax.jit(vjp_divergence)
    rounds = [(timeit(forward, x, t), timeit(augmented, x), timeit(vjp_aug, x)) for _ in range(3)]
    fwd, aug, vjp = (float(np.min(col)) for col in zip(*rounds, strict=True))
    return {"forward": fwd, "jvp": aug, "vjp": vjp}


def host_scipy_solver(sde, score_fn, x, probe, design, tol=TOL):
    """scipy RK45 on the host; every right-hand side evaluation round-trips through numpy.

    design:
      'original': as score_sde's likelihood.py did it: two device calls per evaluation, the
        drift, then the divergence from jax.grad of <drift(x), probe> (a vjp that runs the
        network forward again), each copied to the host and concatenated there.
      'vjp': one device call returning the drift and the vjp divergence together.
      'jvp': one device call of the same jvp augmented function sde_jax integrates.
    """
    shape = x.shape
    size = math.prod(shape)

    def drift_at(t):
        return lambda v: probability_flow_drift(sde, score_fn, v, jnp.full((shape[0],), t))

    @jax.jit
    def drift_fn(t, y):
        return drift_at(t)(y)

    @jax.jit
    def div_fn(t, y):
        grad = jax.grad(lambda v: jnp.sum(drift_at(t)(v) * probe))(y)
        return jnp.sum(grad * probe, axis=tuple(range(1, y.ndim)))

    @jax.jit
    def rhs(t, flat):
        y = flat[:size].reshape(shape)
        if design == "vjp":
            dy, pullback = jax.vjp(drift_at(t), y)
            div = jnp.sum(pullback(probe)[0] * probe, axis=(1, 2, 3))
        else:
            dy, div = lik.divergence(drift_at(t), y, probe[None])
        return jnp.concatenate([dy.reshape(-1), div])

    def fun(t, flat):
        if design == "original":
            y = jnp.asarray(flat[:size].reshape(shape), jnp.float32)
            t = jnp.float32(t)
            drift = np.asarray(drift_fn(t, y), np.float64).reshape(-1)
            div = np.asarray(div_fn(t, y), np.float64)
            return np.concatenate([drift, div])
        return np.asarray(rhs(jnp.float32(t), jnp.asarray(flat, jnp.float32)), np.float64)

    y0 = np.concatenate([np.asarray(x).reshape(-1), np.zeros(shape[0])])
    fun(EPS, y0)  # compile outside the timing

    def solve():
        sol = integrate.solve_ivp(fun, (EPS, sde.T), y0, method="RK45", rtol=tol, atol=tol)
        z = sol.y[:size, -1].reshape(shape)
        logp = np.asarray(sde.prior_logp(jnp.asarray(z))) + sol.y[size:, -1]
        return sol.nfev, logp

    return solve


def device_solver(sde, score_fn, x, key, time_variable):
    fn = jax.jit(
        lambda k, y: lik.log_likelihood(
            k, sde, score_fn, y, rtol=TOL, atol=TOL, time_variable=time_variable
        )
    )
    jax.block_until_ready(fn(key, x))  # compile outside the timing

    def solve():
        out = jax.block_until_ready(fn(key, x))
        return int(out.nfe), np.asarray(out.logp)

    return solve


def bare_scan_solver(sde, score_fn, x, probe, num_evals):
    """The floor: num_evals augmented evaluations in a lax.scan, no solver around them."""

    def body(carry, _):
        y, acc = carry
        drift = lambda v: probability_flow_drift(sde, score_fn, v, jnp.full((v.shape[0],), 0.5))  # noqa: E731
        dy, div = lik.divergence(drift, y, probe[None])
        return (y + 1e-6 * dy, acc + div), None

    run = jax.jit(lambda y: jax.lax.scan(body, (y, jnp.zeros(y.shape[0])), None, num_evals)[0])
    jax.block_until_ready(run(x))

    def solve():
        jax.block_until_ready(run(x))
        return num_evals, None

    return solve


NAMES = {
    "scipy_original": "host scipy RK45, drift and vjp divergence as two calls (original design)",
    "scipy_vjp": "host scipy RK45, drift + vjp divergence in one call",
    "scipy_jvp": "host scipy RK45, same jvp augmented function",
    "t": "sde_jax on device, time variable t",
    "log_sigma": "sde_jax on device, time variable log sigma",
    "bare": "floor: bare lax.scan of as many augmented evaluations as the t solve",
}


def end_to_end(sde, score_fn, x, rounds=2):
    """Times every variant `rounds` times, interleaved, and keeps each one's fastest run."""
    key = jax.random.key(1)
    probe = jax.random.rademacher(key, (1, *x.shape), x.dtype)[0]
    solvers = {
        "scipy_original": host_scipy_solver(sde, score_fn, x, probe, "original"),
        "scipy_vjp": host_scipy_solver(sde, score_fn, x, probe, "vjp"),
        "scipy_jvp": host_scipy_solver(sde, score_fn, x, probe, "jvp"),
        "t": device_solver(sde, score_fn, x, key, "t"),
        "log_sigma": device_solver(sde, score_fn, x, key, "log_sigma"),
    }
    results = {}
    for _ in range(rounds):
        for name, solve in solvers.items():
            start = time.perf_counter()
            nfe, logp = solve()
            seconds = time.perf_counter() - start
            if name not in results or seconds < results[name][0]:
                results[name] = (seconds, nfe, logp)
        if "bare" not in solvers:
            solvers["bare"] = bare_scan_solver(sde, score_fn, x, probe, results["t"][1])
            start = time.perf_counter()
            solvers["bare"]()
            results["bare"] = (time.perf_counter() - start, results["t"][1], results["t"][2])
    base, host = results["scipy_original"][0], results["scipy_jvp"][0]
    ref = results["t"][2]
    rows = []
    for name in NAMES:
        seconds, nfe, logp = results[name]
        diff = "" if name == "bare" else f"{np.max(np.abs(logp - ref)):.2e}"
        rows.append(
            f"| {NAMES[name]} | {seconds:.2f} | {nfe} | {1e3 * seconds / nfe:.1f} | "
            f"{base / seconds:.2f}x | {host / seconds:.2f}x | {diff} |"
        )
    return rows, results


def equal_accuracy_study(sde, dim=32, batch=64, tols=(1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6)):
    """NFE and error against the exact-trace closed form, over tolerances, for scipy RK45 on
    the host and the on-device solver in t and in log sigma."""
    data = GaussianData(sde, dim)
    x = jnp.asarray(data.sample(batch))
    curves = {}
    for time_variable in ("t", "log_sigma"):
        points = []
        for tol in tols:
            fn = jax.jit(
                lambda k, y, tol=tol, tv=time_variable: lik.log_likelihood(
                    k, sde, data.score, y, hutchinson="exact", rtol=tol, atol=tol, time_variable=tv
                )
            )
            out = fn(jax.random.key(0), x)
            err = float(jnp.max(jnp.abs(out.logp - data.reference(x, out.z))))
            points.append((tol, int(out.nfe), err))
        curves[time_variable] = points

    probes = lik._draw_probes(jax.random.key(0), x, "exact", 1)
    augmented = jax.jit(
        lambda t, y: lik.divergence(
            lambda v: probability_flow_drift(sde, data.score, v, jnp.full((batch,), t)),
            y,
            probes,
            average=False,
        )
    )

    def rhs(t, flat):
        dy, div = augmented(
            jnp.float32(t), jnp.asarray(flat[: x.size].reshape(x.shape), jnp.float32)
        )
        return np.concatenate([np.asarray(dy, np.float64).ravel(), np.asarray(div, np.float64)])

    y0 = np.concatenate([np.asarray(x, np.float64).ravel(), np.zeros(batch)])
    points = []
    for tol in tols:
        sol = integrate.solve_ivp(rhs, (EPS, sde.T), y0, method="RK45", rtol=tol, atol=tol)
        z = jnp.asarray(sol.y[: x.size, -1].reshape(x.shape), jnp.float32)
        logp = sde.prior_logp(z) + jnp.asarray(sol.y[x.size :, -1], jnp.float32)
        points.append((tol, sol.nfev, float(jnp.max(jnp.abs(logp - data.reference(x, z))))))
    curves["scipy"] = points
    return curves


def nfe_to_reach(points, target):
    """Fewest evaluations among tolerances whose error is at most target (None if none)."""
    ok = [nfe for _, nfe, err in points if err <= target]
    return min(ok) if ok else None


def network_study(networks):
    """Tables 1 and 2 for each network; returns the speed-up at equal NFE vs the original."""
    sde = VPSDE()
    data = GaussianData(sde, math.prod(IMAGE))
    x = jnp.asarray(data.sample(BATCH).reshape(BATCH, *IMAGE))
    speedups = {}
    for label, channels, num_blocks in (("small", 64, 2), ("tiny", 16, 1)):
        if label not in networks:
            continue
        net, description = build_network(jax.random.key(0), channels, num_blocks)

        def score_fn(y, t, net=net):
            # Exact Gaussian score plus a network term: the ODE keeps the data's stiffness
            # and every evaluation pays for the network.
            return data.score(y, t) + 0.1 * net(y, t)

        print(f"## Network '{label}': {description}\n")
        cost = evaluation_cost(sde, score_fn, x)
        fwd, aug, vjp = cost["forward"], cost["jvp"], cost["vjp"]
        print("### 1. Cost of one augmented-ODE evaluation\n")
        print("| function | ms | / forward |\n|---|---|---|")
        print(f"| score forward | {1e3 * fwd:.2f} | 1.00 |")
        print(f"| drift + jvp divergence (1 probe) | {1e3 * aug:.2f} | {aug / fwd:.2f} |")
        print(f"| drift + vjp divergence, one call | {1e3 * vjp:.2f} | {vjp / fwd:.2f} |")
        print(
            f"| drift, then vjp divergence: two calls (original) | {1e3 * (fwd + vjp):.2f} | "
            f"{(fwd + vjp) / fwd:.2f} |\n"
        )
        print("### 2. End to end: one likelihood solve of the batch (VP SDE)\n")
        print(
            "| solver | seconds | NFE | ms / NFE | speed-up vs original | speed-up vs host jvp "
            "| max abs logp diff vs on-device t |\n|---|---|---|---|---|---|---|"
        )
        rows, results = end_to_end(sde, score_fn, x)
        print("\n".join(rows) + "\n")
        per_nfe = {k: v[0] / v[1] for k, v in results.items()}
        speedups[label] = per_nfe["scipy_original"] / per_nfe["t"]
        print(
            f"Per evaluation: host round trip + scipy overhead "
            f"{1e3 * (per_nfe['scipy_jvp'] - aug):.2f} ms; on-device solver / bare augmented "
            f"evaluation {per_nfe['t'] / aug:.2f}x, / bare scan of the same NFE "
            f"{per_nfe['t'] / per_nfe['bare']:.2f}x. **At equal NFE the on-device solve is "
            f"{speedups[label]:.2f}x faster than the original design**, "
            f"{per_nfe['scipy_vjp'] / per_nfe['t']:.2f}x faster than a host solve with one vjp "
            f"call, and {per_nfe['scipy_jvp'] / per_nfe['t']:.2f}x faster than the host solve of "
            f"the same jvp function.\n"
        )
    return speedups


def accuracy_study():
    """Prints table 3; returns NFE(scipy at TOL) / NFE(sde_jax at the same accuracy) for VP."""
    print("# 3. Evaluations at equal accuracy: host scipy RK45, on-device t, on-device log sigma\n")
    print(
        "Gaussian data, dim 32, rotated covariance with eigenvalues geomspace(0.5, 5e-6), "
        "64 examples, exact trace; error = max over examples of |logp - closed form| (nats).\n"
    )
    ratios = {}
    for sde, name in ((VPSDE(), "VP"), (SubVPSDE(), "sub-VP"), (VESDE(), "VE")):
        curves = equal_accuracy_study(sde)
        print(f"### {name}\n")
        print("| tol | NFE scipy | err scipy | NFE t | err t | NFE log sigma | err log sigma |")
        print("|---|---|---|---|---|---|---|")
        rows = zip(curves["scipy"], curves["t"], curves["log_sigma"], strict=True)
        for (tol, n_s, e_s), (_, n_t, e_t), (_, n_u, e_u) in rows:
            print(f"| {tol:.0e} | {n_s} | {e_s:.1e} | {n_t} | {e_t:.1e} | {n_u} | {e_u:.1e} |")
        # The host solve at the paper's tolerance sets the accuracy to match.
        (n_host, err_host), *_ = [(n, e) for tol, n, e in curves["scipy"] if tol == TOL]
        n_t, n_u = nfe_to_reach(curves["t"], err_host), nfe_to_reach(curves["log_sigma"], err_host)
        best = min(n for n in (n_t, n_u) if n) if (n_t or n_u) else None
        ratios[name] = n_host / best if best else None
        print(
            f"\nscipy at tol {TOL:.0e}: {n_host} NFE, error {err_host:.1e}. To reach that error "
            f"on device: t {n_t} NFE, log sigma {n_u} NFE"
            + (f"; NFE ratio host / best {ratios[name]:.2f}x.\n" if best else ".\n")
        )
    return ratios


def main(networks=("small", "tiny")):
    print("# Likelihood benchmark (CPU)\n")
    print(
        f"jax {jax.__version__}, {jax.devices()[0].platform} x{len(jax.devices())}, "
        f"python {sys.version.split()[0]}, {platform.processor() or platform.machine()}; "
        f"batch {BATCH} of {IMAGE}, float32, rtol = atol = {TOL}, eps = {EPS}.\n"
    )
    speedups = network_study(networks)
    ratios = accuracy_study()
    print("# Summary\n")
    print(
        "| network | speed-up at equal NFE vs original | x NFE ratio at equal accuracy (VP) "
        "| = end to end at equal accuracy |\n|---|---|---|---|"
    )
    ratio = ratios["VP"]
    for label, speedup in speedups.items():
        cells = f"{ratio:.2f}x | {speedup * ratio:.2f}x" if ratio else "n/a | n/a"
        print(f"| {label} | {speedup:.2f}x | {cells} |")
    return speedups, ratios


if __name__ == "__main__":
    main()
