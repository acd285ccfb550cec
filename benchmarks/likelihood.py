"""Benchmark of the on-device likelihood solve (sde_jax.likelihood) on CPU.

Run from the repository root:

    PYTHONPATH=$PWD python benchmarks/likelihood.py > benchmarks/likelihood.md

It measures, and prints as Markdown:

1. The cost of one evaluation of the augmented ODE (PF-ODE drift plus the jvp divergence with
   one probe) divided by one network forward, side by side, on a small conv net (the
   NCSN++ of sde_jax.models when it can be imported, otherwise a small conv net defined here).
2. End-to-end time of `log_likelihood` (jitted, on device) against a host-side scipy RK45 solve
   of the same ODE at the same tolerance, with one device round trip per evaluation: once with
   the same jvp augmented function, once with a vjp divergence as the original implementation.
3. Evaluations needed at equal accuracy when integrating in t versus in log sigma, checked
   against the exact-trace closed form on Gaussian data with an image-like spectrum.

scipy appears only here, never inside the library.
"""

import math
import platform
import sys
import time

import flax.linen as nn
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


class SmallConvNet(nn.Module):
    """A small U-Net-free conv net with a Fourier time embedding (the fallback model)."""

    channels: int = 64
    num_blocks: int = 3

    @nn.compact
    def __call__(self, x, t):
        freqs = jnp.exp(jnp.linspace(0.0, math.log(1000.0), 16))
        emb = jnp.concatenate([jnp.sin(t[:, None] * freqs), jnp.cos(t[:, None] * freqs)], -1)
        emb = nn.Dense(self.channels)(nn.silu(nn.Dense(self.channels)(emb)))
        h = nn.Conv(self.channels, (3, 3))(x)
        for _ in range(self.num_blocks):
            skip = h
            h = nn.Conv(self.channels, (3, 3))(nn.silu(nn.GroupNorm(8)(h)))
            h = h + emb[:, None, None, :]
            h = nn.Conv(self.channels, (3, 3))(nn.silu(nn.GroupNorm(8)(h)))
            h = (h + skip) / math.sqrt(2.0)
        return nn.Conv(x.shape[-1], (3, 3))(nn.silu(nn.GroupNorm(8)(h)))


def build_network(key, channels=64, num_blocks=3):
    """Returns (apply(x, t), description): a small NCSN++ from sde_jax.models if importable."""
    x0, t0 = jnp.zeros((BATCH, *IMAGE)), jnp.full((BATCH,), 0.5)
    try:
        from sde_jax import models

        nf = channels // 2
        model = models.presets.ncsnpp_cifar10(
            nf=nf, ch_mult=(1, 2), num_res_blocks=num_blocks, attn_resolutions=(8,), dropout=0.0
        )
        params = model.init(key, x0, t0, train=False)

        def apply(x, t):
            return model.apply(params, x, t, train=False)

        jax.block_until_ready(apply(x0, t0))
        size = sum(p.size for p in jax.tree.leaves(params))
        return apply, (
            f"sde_jax.models.presets.ncsnpp_cifar10 shrunk to nf={nf}, ch_mult=(1, 2), "
            f"num_res_blocks={num_blocks}, attention at 8x8, no dropout ({size:,} parameters)"
        )
    except Exception as err:  # any failure (missing module, other API) means the fallback
        reason = f"{type(err).__name__}: {err}"
    model = SmallConvNet(channels, num_blocks)
    params = model.init(key, x0, t0)
    size = sum(p.size for p in jax.tree.leaves(params))
    description = (
        f"fallback SmallConvNet ({channels} channels, {num_blocks} residual blocks, {size:,} "
        f"parameters) defined in the benchmark; sde_jax.models not usable here ({reason})"
    )
    return (lambda x, t: model.apply(params, x, t)), description


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
    return fwd, aug, vjp


def host_scipy_solver(sde, score_fn, x, probe, use_vjp):
    """The original design: scipy RK45 on the host, one device call per evaluation."""
    shape = x.shape
    size = math.prod(shape)

    @jax.jit
    def rhs(t, flat):
        y = flat[:size].reshape(shape)
        drift = lambda v: probability_flow_drift(sde, score_fn, v, jnp.full((shape[0],), t))  # noqa: E731
        if use_vjp:
            dy, pullback = jax.vjp(drift, y)
            div = jnp.sum(pullback(probe)[0] * probe, axis=(1, 2, 3))
        else:
            dy, div = lik.divergence(drift, y, probe[None])
        return jnp.concatenate([dy.reshape(-1), div])

    def fun(t, flat):
        return np.asarray(rhs(jnp.float32(t), jnp.asarray(flat, jnp.float32)), np.float64)

    y0 = np.concatenate([np.asarray(x).reshape(-1), np.zeros(shape[0])])
    fun(EPS, y0)  # compile outside the timing

    def solve():
        sol = integrate.solve_ivp(fun, (EPS, sde.T), y0, method="RK45", rtol=TOL, atol=TOL)
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
    "scipy_vjp": "host scipy RK45, vjp divergence (original design)",
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
        "scipy_vjp": host_scipy_solver(sde, score_fn, x, probe, use_vjp=True),
        "scipy_jvp": host_scipy_solver(sde, score_fn, x, probe, use_vjp=False),
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
    base, host = results["scipy_vjp"][0], results["scipy_jvp"][0]
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
    """NFE and error vs exact-trace closed form, for t and log sigma, over tolerances."""
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
    return curves


def nfe_to_reach(points, target):
    """Fewest evaluations among tolerances whose error is at most target (None if none)."""
    ok = [nfe for _, nfe, err in points if err <= target]
    return min(ok) if ok else None


def main():
    print("# Likelihood benchmark (CPU)\n")
    print(
        f"jax {jax.__version__}, {jax.devices()[0].platform} x{len(jax.devices())}, "
        f"python {sys.version.split()[0]}, {platform.processor() or platform.machine()}; "
        f"batch {BATCH} of {IMAGE}, float32, rtol = atol = {TOL}, eps = {EPS}.\n"
    )
    sde = VPSDE()
    data = GaussianData(sde, math.prod(IMAGE))
    x = jnp.asarray(data.sample(BATCH).reshape(BATCH, *IMAGE))
    for label, channels, num_blocks in (("small", 64, 2), ("tiny", 16, 1)):
        net, description = build_network(jax.random.key(0), channels, num_blocks)

        def score_fn(y, t, net=net):
            # Exact Gaussian score plus a network term: the ODE keeps the data's stiffness
            # and every evaluation pays for the network.
            return data.score(y, t) + 0.1 * net(y, t)

        print(f"# Network '{label}': {description}\n")
        fwd, aug, vjp = evaluation_cost(sde, score_fn, x)
        print("## 1. Cost of one augmented-ODE evaluation\n")
        print("| function | ms | / forward |\n|---|---|---|")
        print(f"| score forward | {1e3 * fwd:.2f} | 1.00 |")
        print(f"| drift + jvp divergence (1 probe) | {1e3 * aug:.2f} | {aug / fwd:.2f} |")
        print(f"| drift + vjp divergence (original) | {1e3 * vjp:.2f} | {vjp / fwd:.2f} |\n")

        print("## 2. End to end: one likelihood solve of the batch (VP SDE)\n")
        print(
            "| solver | seconds | NFE | ms / NFE | speed-up vs original | speed-up vs host jvp "
            "| max abs logp diff vs on-device t |\n|---|---|---|---|---|---|---|"
        )
        rows, results = end_to_end(sde, score_fn, x)
        print("\n".join(rows) + "\n")
        per_nfe = {k: v[0] / v[1] for k, v in results.items()}
        print(
            f"Per evaluation: host round trip + scipy overhead "
            f"{1e3 * (per_nfe['scipy_jvp'] - aug):.2f} ms; on-device solver / bare augmented "
            f"evaluation {per_nfe['t'] / aug:.2f}x, / bare scan of the same NFE "
            f"{per_nfe['t'] / per_nfe['bare']:.2f}x; at equal NFE the on-device solve is "
            f"{per_nfe['scipy_jvp'] / per_nfe['t']:.2f}x faster than the host solve of the same "
            f"ODE and {per_nfe['scipy_vjp'] / per_nfe['t']:.2f}x faster than the original "
            f"design.\n"
        )

    print("# 3. Evaluations at equal accuracy: t versus log sigma\n")
    print(
        "Gaussian data, dim 32, rotated covariance with eigenvalues geomspace(0.5, 5e-6), "
        "64 examples, exact trace; error = max over examples of |logp - closed form| (nats).\n"
    )
    for sde_i, name in ((VPSDE(), "VP"), (SubVPSDE(), "sub-VP"), (VESDE(), "VE")):
        curves = equal_accuracy_study(sde_i)
        print(f"### {name}\n\n| tol | NFE t | err t | NFE log sigma | err log sigma |")
        print("|---|---|---|---|---|")
        for (tol, n_t, e_t), (_, n_u, e_u) in zip(curves["t"], curves["log_sigma"], strict=True):
            print(f"| {tol:.0e} | {n_t} | {e_t:.1e} | {n_u} | {e_u:.1e} |")
        for target in (1e-2, 1e-3, 1e-4):
            n_t, n_u = nfe_to_reach(curves["t"], target), nfe_to_reach(curves["log_sigma"], target)
            ratio = f"{n_t / n_u:.2f}x" if n_t and n_u else "n/a"
            print(f"\nerror <= {target:.0e}: NFE t = {n_t}, log sigma = {n_u}, ratio {ratio}")
        print()


if __name__ == "__main__":
    main()
