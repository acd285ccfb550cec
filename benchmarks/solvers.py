"""Accuracy of every fixed-grid solver against exact samples of a Gaussian mixture.

    python -m benchmarks.solvers [--out benchmarks/solvers.md] [--plot benchmarks/solvers.png]

The data are a 32-D mixture of four isotropic Gaussians, whose perturbed score is closed form
under every linear SDE, so the only error is the solver's. For each solver (built from its
``sampling.method`` config name with the method's default grid and no final denoising step)
at NFE 5, 10, 20, 35 and 50 on VP and VE, from a fixed prior batch:

- the energy distance to a set of exact samples, over the *spread*: the mean energy distance
  from 16 fresh exact sample sets of the same size to that set (1 = as close as exact
  sampling on average; the largest of the 16 is reported too);
- the variance ratio: total sample variance over the truth;
- the component weights' largest error (nearest-centre assignment; exact sampling's standard
  error is about sqrt(w (1 - w) / n), 0.011 at n = 2000).

Solvers whose evaluations per step do not divide an NFE take the largest whole number of
steps below it; the NFE column is what they used. Also on VE: today's PC sampler at 2000 NFE,
the reference the issue's EDM target compares with. The plot is log-log, energy distance
over spread against NFE, one panel per SDE.
"""

import argparse
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from sde_jax import VESDE, VPSDE
from sde_jax.experiment import build as builders

NFES = (5, 10, 20, 35, 50)
DIM, N = 32, 2000
WEIGHTS = np.array([0.4, 0.3, 0.2, 0.1])
SCALE = 0.5
SOLVERS = (
    ("pc (reverse diffusion + langevin)", {"method": "pc"}),
    ("euler", {"method": "euler"}),
    ("heun (in t)", {"method": "heun"}),
    ("rk4", {"method": "rk4"}),
    ("ddim", {"method": "ddim"}),
    ("ddim, eta = 1", {"method": "ddim", "eta": 1.0}),
    ("dpm_solver++ 2M", {"method": "dpm_solver++"}),
    ("dpm_solver++ 3M", {"method": "dpm_solver++_3m"}),
    ("dpm_solver++ 2S", {"method": "dpm_solver++_2s"}),
    ("dpm_solver++ 3S", {"method": "dpm_solver++_3s"}),
    ("dpm_solver++ 2M SDE", {"method": "dpm_solver++_2m_sde"}),
    ("dpm_solver++ 3M SDE", {"method": "dpm_solver++_3m_sde"}),
    ("unipc (bh2)", {"method": "unipc"}),
    ("unipc (bh1)", {"method": "unipc", "variant": "bh1"}),
    ("deis", {"method": "deis"}),
    ("ipndm", {"method": "ipndm"}),
    ("edm heun", {"method": "edm_heun"}),
    ("edm stochastic (churn)", {"method": "edm", "s_churn": 10.0}),
)
"""(label, sampling config) of every solver in the table."""
DPM_TYPE = (
    "ddim",
    "dpm_solver++ 2M",
    "dpm_solver++ 3M",
    "dpm_solver++ 2S",
    "dpm_solver++ 3S",
    "unipc (bh2)",
    "unipc (bh1)",
    "deis",
)
"""Labels of the deterministic exponential-integrator solvers (the issue's 20-NFE target)."""


# --------------------------------------------------------------------------------------------
# The data: a mixture of isotropic Gaussians, its exact samples and its perturbed score.


def mixture_centres(dim: int = DIM, seed: int = 0) -> np.ndarray:
    """Four centres about 3.4 apart in norm, fixed by ``seed``."""
    return 0.6 * np.random.default_rng(seed).standard_normal((len(WEIGHTS), dim))


def exact_samples(key, centres: np.ndarray, n: int) -> jax.Array:
    """``n`` exact samples of the mixture."""
    k_label, k_noise = jax.random.split(key)
    labels = jax.random.choice(k_label, len(WEIGHTS), (n,), p=jnp.asarray(WEIGHTS))
    return jnp.asarray(centres)[labels] + SCALE * jax.random.normal(k_noise, (n, centres.shape[1]))


def mixture_score_fn(sde, centres: np.ndarray):
    r"""The exact score of the mixture perturbed by ``sde``: each component becomes
    :math:`N(m c_k, (m^2 \sigma^2 + s^2) I)`, mixed with its posterior weight."""
    centres, log_w = jnp.asarray(centres), jnp.log(jnp.asarray(WEIGHTS))

    def score_fn(x, t):
        m, s = sde.mean_coeff(t)[:, None, None], sde.marginal_std(t)[:, None, None]
        var = m**2 * SCALE**2 + s**2
        offsets = x[:, None, :] - m * centres  # [batch, component, dim]
        posterior = jax.nn.softmax(log_w - 0.5 * jnp.sum(offsets**2, -1) / var[..., 0], -1)
        return -jnp.einsum("bk,bkd->bd", posterior, offsets / var)

    return score_fn


@jax.jit
def _mean_norm(a: jax.Array, b: jax.Array) -> jax.Array:
    squared = jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None] - 2 * a @ b.T
    return jnp.mean(jnp.sqrt(jnp.maximum(squared, 1e-12)))


def energy_distance(x: jax.Array, y: jax.Array) -> float:
    """The V-statistic energy distance :math:`2E|X-Y| - E|X-X'| - E|Y-Y'|` (0 iff equal laws)."""
    mean_norm = _mean_norm
    return float(2 * mean_norm(x, y) - mean_norm(x, x) - mean_norm(y, y))


def weights_error(x: jax.Array, centres: np.ndarray) -> float:
    """The largest error of the component weights from nearest-centre assignment."""
    labels = np.argmin(((np.asarray(x)[:, None] - centres) ** 2).sum(-1), 1)
    return float(np.max(np.abs(np.bincount(labels, minlength=len(WEIGHTS)) / len(x) - WEIGHTS)))


def spread(truth: jax.Array, centres: np.ndarray, sets: int = 16) -> np.ndarray:
    """The energy distances from ``sets`` fresh exact sample sets to ``truth`` (same size).

    Measured against the same reference set as the solvers: a reference set's own luck (how
    close it happens to be to the law) moves every distance to it alike.
    """
    keys = jax.random.split(jax.random.key(1000), sets)
    n = truth.shape[0]
    return np.array([energy_distance(exact_samples(k, centres, n), truth) for k in keys])


# --------------------------------------------------------------------------------------------
# The measurement.


def build(sde, config: dict, nfe: int):
    """The sampler of ``config`` with as many steps as fit in ``nfe``; None if none fits."""
    probe = builders.get_sampler(sde, {**config, "num_steps": 1}, (N, DIM))
    per_step = probe.stepper.nfe_per_step
    if nfe < per_step:
        return None
    return builders.get_sampler(
        sde, {**config, "num_steps": nfe // per_step, "noise_removal": False}, (N, DIM)
    )


def evaluate(sde, sampler, centres: np.ndarray, truth: jax.Array, truth_spread: float) -> dict:
    """One solver run's errors (the keys of the table)."""
    out = jax.block_until_ready(
        jax.jit(lambda k: sampler(k, mixture_score_fn(sde, centres)))(jax.random.key(0))
    )
    x = out.x
    finite = bool(jnp.all(jnp.isfinite(x)))
    true_variance = float(np.sum(np.var(np.asarray(truth), 0)))
    return {
        "nfe": int(out.nfe),
        "energy_over_spread": energy_distance(x, truth) / truth_spread if finite else float("inf"),
        "variance_ratio": float(jnp.sum(jnp.var(x, 0))) / true_variance if finite else float("nan"),
        "weights_error": weights_error(x, centres) if finite else float("nan"),
    }


def measure(solvers=SOLVERS, nfes=NFES, log=print) -> list[dict]:
    """Every solver at every NFE on VP and VE; one dict per run.

    Returns:
      ``{'sde', 'solver', 'target_nfe', 'nfe', 'energy_over_spread', 'variance_ratio',
      'weights_error'}`` per run, plus the VE PC sampler at 2000 NFE (``target_nfe`` 2000).
    """
    centres = mixture_centres()
    truth = exact_samples(jax.random.key(7), centres, N)
    exact = spread(truth, centres)
    truth_spread, exact_max = float(np.mean(exact)), float(np.max(exact) / np.mean(exact))
    rows = []
    for sde_name, sde in (("vp", VPSDE()), ("ve", VESDE())):
        runs = [(label, config, nfe) for label, config in solvers for nfe in nfes]
        if sde_name == "ve":
            runs.append(("pc (reverse diffusion + langevin)", {"method": "pc"}, 2000))
        for label, config, nfe in runs:
            sampler = build(sde, config, nfe)
            if sampler is None:
                continue
            row = {"sde": sde_name, "solver": label, "target_nfe": nfe}
            row.update(evaluate(sde, sampler, centres, truth, truth_spread))
            row.update(spread=truth_spread, exact_max=exact_max)
            rows.append(row)
            log(
                f"{sde_name} {label:34s} nfe={row['nfe']:4d} energy/spread="
                f"{row['energy_over_spread']:8.3f} var={row['variance_ratio']:.3f}"
            )
    return rows


def targets(rows: list[dict]) -> dict:
    """The issue's accuracy targets, from :func:`measure`'s rows."""

    def at(sde, nfe, labels=None):
        return [
            r
            for r in rows
            if r["sde"] == sde
            and r["target_nfe"] == nfe
            and (labels is None or r["solver"] in labels)
        ]

    best_10 = min(at("vp", 10), key=lambda r: r["energy_over_spread"])
    dpm_20 = at("vp", 20, DPM_TYPE)
    pc_2000 = at("ve", 2000)
    edm_35 = at("ve", 35, ("edm heun",))
    result = {
        "best_vp_10": (best_10["solver"], best_10["energy_over_spread"]),
        "dpm_vp_20_worst_energy": max((r["energy_over_spread"] for r in dpm_20), default=None),
        "dpm_vp_20_variance_range": (
            min((r["variance_ratio"] for r in dpm_20), default=None),
            max((r["variance_ratio"] for r in dpm_20), default=None),
        ),
    }
    if pc_2000 and edm_35:
        result["ve_edm_heun_35"] = edm_35[0]["energy_over_spread"]
        result["ve_pc_2000"] = pc_2000[0]["energy_over_spread"]
    return result


def table(rows: list[dict], sde: str) -> list[str]:
    """Markdown lines: one row per solver, energy / spread (variance ratio) per NFE."""
    solvers = list(dict.fromkeys(r["solver"] for r in rows if r["sde"] == sde))
    nfes = sorted({r["target_nfe"] for r in rows if r["sde"] == sde})
    lines = [
        "| solver | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
        "|---|" + "---|" * len(nfes),
    ]
    for solver in solvers:
        cells = []
        for n in nfes:
            match = [
                r for r in rows if (r["sde"], r["solver"], r["target_nfe"]) == (sde, solver, n)
            ]
            if not match:
                cells.append("")
                continue
            r = match[0]
            used = "" if r["nfe"] == n else f" [{r['nfe']}]"
            if math.isfinite(r["energy_over_spread"]):
                cells.append(f"{r['energy_over_spread']:.3g} ({r['variance_ratio']:.3f}){used}")
            else:
                cells.append(f"non-finite{used}")
        lines.append(f"| {solver} | " + " | ".join(cells) + " |")
    return lines


def plot(rows: list[dict], path: str) -> None:
    """Log-log energy distance over spread against NFE, one panel per SDE, as a PNG.

    Exponential integrators are solid lines, the other solvers dashed; every solver has its own
    colour and marker. Values above 1000 are cut off (the axis would hide the rest).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    solvers = list(dict.fromkeys(r["solver"] for r in rows))
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, 20))
    markers = "osD^v<>phX*"
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5), sharey=True)
    for ax, sde in zip(axes, ("vp", "ve"), strict=True):
        for i, solver in enumerate(solvers):
            points = [
                (r["nfe"], r["energy_over_spread"])
                for r in rows
                if r["sde"] == sde and r["solver"] == solver and r["target_nfe"] <= max(NFES)
            ]
            if points:
                ax.plot(
                    *zip(*points, strict=True),
                    "-" if solver in DPM_TYPE else "--",
                    color=colours[i % 20],
                    marker=markers[i % len(markers)],
                    ms=4,
                    label=solver,
                )
        ax.axhline(1.0, color="k", lw=1.0, ls=":", label="exact sampling (spread)")
        ax.set(xscale="log", yscale="log", xlabel="NFE", title=f"{sde.upper()} SDE")
        ax.set_ylim(0.5, 1e3)
        ax.set_xticks(NFES, [str(n) for n in NFES])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("energy distance to exact samples / exact-vs-exact")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center right")
    fig.suptitle(f"Solvers on a {DIM}-D Gaussian mixture (exact score), {N} samples")
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(rows: list[dict], wall_s: float) -> list[str]:
    """The markdown section: targets, then a table per SDE."""
    t = targets(rows)
    first = rows[0]
    lines = [
        f"{DIM}-D mixture of {len(WEIGHTS)} Gaussians (weights {WEIGHTS.tolist()}, scale "
        f"{SCALE}), {N} samples from one fixed prior batch, exact score. Each cell: energy "
        f"distance to exact samples / the exact-vs-exact spread ({first['spread']:.4g}; exact "
        f"sample sets range up to {first['exact_max']:.3g}), then (variance ratio); [n]: the "
        "NFE used when the steps do not divide the target. Default grid of each method, no "
        f"final denoising. {wall_s / 60:.1f} min.",
        "",
        f"- Best at 10 NFE on VP: {t['best_vp_10'][0]}, energy / spread "
        f"{t['best_vp_10'][1]:.3g} (target <= 2).",
        f"- DPM-Solver-type at 20 NFE on VP: worst energy / spread "
        f"{t['dpm_vp_20_worst_energy']:.3g} (target: within exact sampling's, up to "
        f"{first['exact_max']:.3g}), variance ratios "
        f"{t['dpm_vp_20_variance_range'][0]:.3f}-{t['dpm_vp_20_variance_range'][1]:.3f} "
        "(target 0.97-1.03).",
    ]
    if "ve_pc_2000" in t:
        lines.append(
            f"- VE: EDM Heun at 35 NFE {t['ve_edm_heun_35']:.3g} vs PC at 2000 NFE "
            f"{t['ve_pc_2000']:.3g} (target: EDM at least as accurate)."
        )
    for sde in ("vp", "ve"):
        lines += ["", f"### {sde.upper()} SDE", "", *table(rows, sde)]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.solvers", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/solvers.md")
    parser.add_argument("--plot", default="benchmarks/solvers.png")
    parser.add_argument("--json", default="benchmarks/solvers.json", help="the rows, for replots")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = measure(log=lambda m: print(m, flush=True))
    lines = ["# Solvers on a Gaussian mixture", "", *report(rows, time.perf_counter() - start)]
    lines += ["", f"![energy distance against NFE]({args.plot.split('/')[-1]})"]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=1)
    plot(rows, args.plot)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
