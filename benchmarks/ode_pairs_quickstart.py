"""Embedded Runge-Kutta pairs on the trained quickstart model: evaluations, time and error.

The second problem of issue 16, item 4 (the first, Gaussian data, is benchmarks/ode_pairs.py).
Train the quickstart first, then run from the repository root:

    sde-jax train --config=configs/quickstart.py --workdir=runs/quickstart
    PYTHONPATH=$PWD python benchmarks/ode_pairs_quickstart.py runs/quickstart \
        > benchmarks/ode_pairs_quickstart.md

The log-likelihood (:func:`sde_jax.likelihood.log_likelihood`, VP in ``t`` from eps = 1e-5,
one fixed Rademacher probe per example) of ``NUM_EXAMPLES`` dequantized held-out digits,
under the EMA parameters of the newest checkpoint. The probes, the dequantization noise and
the network are the same for every solve, so every solve integrates the same ODE; its exact
solution is taken from Dormand-Prince 8(5,3) at rtol = atol = 1e-7 (the same at 1e-6
estimates its accuracy), and the error of a solve is its largest deviation over the
examples from that reference, in nats and in bits/dim of the mean. For each pair, in float32
as users run it, over tolerances half a decade apart: NFE and error, and at 1e-5 the wall
time of the jitted solve (best of 2); then, at Dormand-Prince's error at 1e-5 (the original's
tolerance), the fewest evaluations each pair needs to reach it (the issue's target:
Dormand-Prince's NFE / the pair's >= 1.5). Everything runs in float32: in float64 the
reference solve at 1e-9 failed (success=False after 15 minutes; a float64 network solve
takes many minutes on two CPU cores), hence also eight digits.
"""

import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import configs.quickstart
from sde_jax import data, ode
from sde_jax import likelihood as lik
from sde_jax.evaluation.parts import restore_ema_params
from sde_jax.experiment import Experiment

NUM_EXAMPLES = 8
EPS = 1e-5
TOL = 1e-5
REFERENCE_TOL = 1e-7
EXPONENTS = [-3.0, -3.5, -4.0, -4.5, -5.0, -5.5, -6.0]


def held_out_digits(config, n):
    """The first ``n`` test digits, dequantized with a fixed key, in the model's range."""
    batches = data.eval_iterator(config.data, n, split="test", raw_uint8=True)
    images = next(iter(batches))["image"][:n]
    data_range = (-1.0, 1.0) if config.data.centered else (0.0, 1.0)
    x = lik.dequantize(jax.random.key(7), jnp.asarray(images), data_range=data_range)
    return x


def make_solve(experiment, params, x, method, tol, dtype):
    """A jitted log-likelihood solve; returns (logp, nfe, steps, rejected, success)."""
    params = jax.tree.map(lambda p: jnp.asarray(p, dtype), params)
    score_fn = experiment.score_fn(params)

    @jax.jit
    def solve(y):
        out = lik.log_likelihood(
            jax.random.key(3),
            experiment.sde,
            score_fn,
            y.astype(dtype),
            rtol=tol,
            atol=tol,
            eps=EPS,
            method=method,
        )
        return out.logp, out.nfe, out.success

    return solve


def best_time(fn, x, repeats=3):
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(x))
        best = min(best, time.perf_counter() - start)
    return best


def main(workdir: str) -> None:
    begin = time.perf_counter()
    config = configs.quickstart.get_config()
    experiment = Experiment(config)
    params, step = restore_ema_params(experiment, workdir)
    x = held_out_digits(config, NUM_EXAMPLES)
    dims = int(np.prod(x.shape[1:]))
    to_bpd = 1.0 / (dims * np.log(2.0))

    def run(method, tol, dtype):
        logp, nfe, ok = make_solve(experiment, params, x, method, tol, dtype)(x)
        return np.asarray(logp), int(nfe), bool(ok)

    ref, ref_nfe, ok = run("dop853", REFERENCE_TOL, jnp.float32)
    assert ok, "the reference solve failed"
    check, check_nfe, _ = run("dop853", 10 * REFERENCE_TOL, jnp.float32)

    print("# Embedded pairs on the trained quickstart model (raw output)\n")
    print(
        f"{platform.machine()}, {jax.default_backend()}, jax {jax.__version__}, python "
        f"{platform.python_version()}; checkpoint step {step} of {workdir}; {NUM_EXAMPLES} "
        f"held-out digits ({dims} dimensions), VP in t from eps = {EPS:g}, one Rademacher "
        "probe per example.\n"
    )
    print(
        f"Reference: dop853 at rtol = atol = {REFERENCE_TOL:g}, {ref_nfe} NFE; at "
        f"{10 * REFERENCE_TOL:g} ({check_nfe} NFE) it differs by at most "
        f"{np.max(np.abs(check - ref)):.1e} nats. Mean log p {ref.mean():.3f} nats, "
        f"{-ref.mean() * to_bpd:.3f} bits/dim before the dequantization offset.\n"
    )
    print("## float32, over tolerances\n")
    print("| pair | tol | NFE | max err (nats) | err of the mean (bits/dim) | seconds | ms/NFE |")
    print("|---|---|---|---|---|---|---|")
    points = {}
    for name in ode.PAIRS:
        for exponent in EXPONENTS:
            solve = make_solve(experiment, params, x, name, 10**exponent, jnp.float32)
            logp, nfe, ok = jax.device_get(solve(x))
            err = np.max(np.abs(logp - ref)) if ok else np.inf
            points[name, exponent] = (int(nfe), err)
            mean_err = abs(logp.mean() - ref.mean()) * to_bpd
            timing = "| | |"
            if exponent == np.log10(TOL):
                seconds = best_time(solve, x, repeats=2)
                timing = f"| {seconds:.2f} | {1e3 * seconds / int(nfe):.1f} |"
            print(f"| {name} | 1e{exponent:g} | {int(nfe)} | {err:.2e} | {mean_err:.1e} {timing}")
            sys.stdout.flush()
    target = points["dopri5", np.log10(TOL)][1]
    base = points["dopri5", np.log10(TOL)][0]
    print(f"\n## At equal accuracy: Dormand-Prince's error at {TOL:g}, {target:.2e} nats\n")
    print("| pair | loosest tol reaching it | NFE | NFE dopri5 / NFE pair |")
    print("|---|---|---|---|")
    for name in ode.PAIRS:
        reached = [(nfe, e) for (n, e), (nfe, err) in points.items() if n == name and err <= target]
        if not reached:
            print(f"| {name} | none of the tolerances | | |")
            continue
        nfe, exponent = min(reached)
        print(f"| {name} | 1e{exponent:g} | {nfe} | {base / nfe:.2f} |")
    print(f"\nTotal {time.perf_counter() - begin:.0f} s.")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/quickstart")
