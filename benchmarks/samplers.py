"""Solver overhead per network evaluation, for a small NCSN++ / DDPM++ on CPU.

    python benchmarks/samplers.py [--out benchmarks/samplers.md]

For each sampler: (sampler wall time / its NFE) / (bare-scan wall time / the same NFE), where
the bare scan is a ``lax.scan`` making the same number of network evaluations and nothing else
(its carry is ``x + 1e-3 * score`` so no evaluation can be skipped). Both are jitted and timed
side by side, alternating, and the median of the repeats is reported. 1.00 means the solver
adds nothing measurable to the network's cost.
"""

import argparse
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from sde_jax import VESDE, VPSDE
from sde_jax.experiment import build
from sde_jax.models import get_score_fn, presets

SHAPE = (8, 16, 16, 3)
SMALL = {"nf": 32, "ch_mult": (1, 2, 2), "num_res_blocks": 1, "attn_resolutions": (8,)}
CASES = [
    ("pc (reverse diffusion + langevin)", "ve", {"method": "pc", "num_steps": 25}),
    ("pc: euler_maruyama", "vp", {"method": "pc", "predictor": "euler_maruyama",
                                  "corrector": "none", "num_steps": 50}),
    ("heun", "vp", {"method": "heun", "num_steps": 25}),
    ("dpm_solver++ (2M)", "vp", {"method": "dpm_solver++", "num_steps": 50}),
    ("dpm_solver++ (3M)", "vp", {"method": "dpm_solver++_3m", "num_steps": 50}),
    ("dpm_solver++ (3S)", "vp", {"method": "dpm_solver++_3s", "num_steps": 16}),
    ("dpm_solver++ (3M SDE)", "vp", {"method": "dpm_solver++_3m_sde", "num_steps": 50}),
    ("ddim (eta = 1)", "vp", {"method": "ddim", "eta": 1.0, "num_steps": 50}),
    ("unipc (bh2, order 3)", "vp", {"method": "unipc", "num_steps": 50}),
    ("deis (order 3)", "vp", {"method": "deis", "num_steps": 50}),
    ("ipndm", "vp", {"method": "ipndm", "num_steps": 50}),
    ("edm heun", "ve", {"method": "edm_heun", "num_steps": 25}),
    ("edm (churn)", "ve", {"method": "edm", "s_churn": 10.0, "num_steps": 25}),
    ("ode (adaptive RK45)", "vp", {"method": "ode", "rtol": 1e-3, "atol": 1e-3}),
]  # fmt: skip


def make_score_fn(kind, shape=SHAPE, small=SMALL):
    if kind == "ve":
        sde, model = VESDE(), presets.ncsnpp_cifar10(dropout=0.0, **small)
    else:
        sde, model = VPSDE(), presets.ddpmpp_cifar10(dropout=0.0, **small)
    x = jnp.zeros(shape)
    params = model.init(jax.random.key(0), x, jnp.ones(shape[0]), train=False)["params"]
    # Non-zero output layers, so the samples move as a trained model's would.
    params = jax.tree.map(
        lambda p: p + 0.02 * jax.random.normal(jax.random.key(1), p.shape), params
    )
    # NCSN++ (VE) divides its output by sigma, as its configs set model.scale_by_sigma.
    return sde, get_score_fn(sde, model.apply, params, scale_by_sigma=kind == "ve")


def bare_scan(score_fn, nfe):
    def run(x):
        def body(x, t):
            return x + 1e-3 * score_fn(x, jnp.full((x.shape[0],), t)), None

        x, _ = jax.lax.scan(body, x, jnp.linspace(1.0, 1e-3, nfe))
        return x

    return jax.jit(run)


def median_time(fn, arg, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(arg))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure(cases=CASES, shape=SHAPE, repeats=5, small=SMALL, log=print) -> list[dict]:
    """Times each sampler against a bare scan of the same NFE; one dict per case.

    Returns:
      ``{'sampler', 'nfe', 'sampler_ms_per_nfe', 'scan_ms_per_nfe', 'ratio', 'success'}`` per
      case, times the medians of ``repeats`` alternating runs.
    """
    rows = []
    for name, kind, config in cases:
        sde, score_fn = make_score_fn(kind, shape, small)
        sampler = build.get_sampler(sde, config, shape)
        run_sampler = jax.jit(lambda k, sampler=sampler, score_fn=score_fn: sampler(k, score_fn))
        out = jax.block_until_ready(run_sampler(jax.random.key(0)))  # compile
        nfe = int(out.nfe)
        scan = bare_scan(score_fn, nfe)
        jax.block_until_ready(scan(jnp.zeros(shape)))  # compile
        sampler_times, scan_times = [], []
        for _ in range(repeats):  # alternate, so both see the same machine load
            sampler_times.append(median_time(run_sampler, jax.random.key(0), 1))
            scan_times.append(median_time(scan, jnp.zeros(shape), 1))
        t_sampler, t_scan = float(np.median(sampler_times)), float(np.median(scan_times))
        rows.append(
            {
                "sampler": name,
                "nfe": nfe,
                "sampler_ms_per_nfe": 1e3 * t_sampler / nfe,
                "scan_ms_per_nfe": 1e3 * t_scan / nfe,
                "ratio": t_sampler / t_scan,
                "success": bool(out.success),
            }
        )
        log(f"{name:36s} nfe={nfe:4d} {t_sampler / t_scan:.3f}")
    return rows


def table(rows: list[dict]) -> list[str]:
    """Markdown table lines of :func:`measure`'s rows."""
    lines = [
        "| sampler | NFE | ms / NFE (sampler) | ms / NFE (bare scan) | overhead ratio | success |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['sampler']} | {r['nfe']} | {r['sampler_ms_per_nfe']:.2f} | "
        f"{r['scan_ms_per_nfe']:.2f} | {r['ratio']:.3f} | {r['success']} |"
        for r in rows
    ]
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = measure(repeats=args.repeats, log=lambda m: print(m, flush=True))
    lines = [
        "# Sampler overhead per network evaluation",
        "",
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{jax.device_count()} x {jax.devices()[0].platform}, jax {jax.__version__}. "
        f"Small NCSN++/DDPM++ (nf=32, ch_mult=(1,2,2), 1 block), batch {SHAPE}. "
        f"Median of {args.repeats} alternating repeats.",
        "",
        *table(rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
