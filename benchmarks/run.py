"""Runs every benchmark and writes one markdown report with the machine it ran on.

    python -m benchmarks.run [--quick] [--output=FILE.md] [--gpu] [--original=FILE.json]

Measured side by side in one run, each figure the median of ``--repeats`` runs:

- networks inside loops (benchmarks/models_in_loops.py): the parity-fixture NCSN++ (FIR) and
  DDPM++ jitted alone, inside ``lax.scan``/``lax.while_loop``, inside each sampler and the
  likelihood solve; the FIR formulations; compile times; with ``--original``, the ratio to
  the original score_sde code's figures measured separately on the same machine;
- fast solvers (benchmarks/solvers.py): every fixed-grid solver's energy distance to exact
  samples of a 32-D Gaussian mixture, variance ratio and component weights at NFE 5-50 on VP
  and VE, as tables and a log-log PNG beside the report;
- sampler overhead per network evaluation (benchmarks/samplers.py): each sampler's time per
  evaluation over a bare ``lax.scan`` making the same evaluations;
- likelihood (benchmarks/likelihood.py): one augmented-ODE evaluation (drift + jvp divergence)
  over one forward pass, and the on-device solve's time per evaluation against a host scipy
  RK45 solve of the same ODE (same jvp function; and the original's vjp);
- the train step (benchmarks/training.py): images/s, its time over the bare forward+backward
  (``jax.grad`` of the loss), and the FLOP rate from XLA's cost analysis;
- scaling: the same step on 1, 2, 4, 8 simulated CPU devices (one subprocess each) and as 2
  local processes joined by jax.distributed (launch.local), at the same global batch;
- memory (benchmarks/models_forward.py): XLA's memory analysis of the compiled gradient and the
  residuals JAX saves, float32 / bfloat16 x remat off / on (compiled, not run);
- on a GPU (``--gpu``, or automatically when the default backend is a GPU): absolute
  throughput of NCSN++ at CIFAR-10 size at 128 images per device, images/s and model FLOP
  utilisation (XLA's FLOP count over the device's peak, :data:`PEAK_TFLOPS`).

Simulated CPU devices and local processes share the machine's cores: the scaling rows measure
the overhead of sharding and of cross-process collectives, not a speed-up. Sizes are small so
that the whole run takes a few minutes on 2 cores (``--quick``: smaller still).
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

# Before JAX initializes its backends (machine_description does): sde_jax's import sets the
# XLA CPU flags every sde_jax process runs with (sde_jax.runtime), so the figures are those a
# user gets. Without it the first section ran under other flags and was 10-15% slower.
import sde_jax  # noqa: F401

# Dense peak TFLOP/s per device: (bfloat16, float32 as JAX runs it by default). On NVIDIA
# Ampere and later JAX's default precision runs float32 matmuls and convolutions as TF32; on
# TPU as bfloat16 passes. Sources: NVIDIA H100/H200 and A100 datasheets (SXM, without
# sparsity), Google Cloud TPU system architecture pages. Longer names are matched first.
PEAK_TFLOPS = {
    "H100 PCIe": (756.0, 378.0),
    "H100": (989.0, 495.0),
    "H200": (989.0, 495.0),
    "A100": (312.0, 156.0),
    "TPU v4": (275.0, 275.0),
    "TPU v5 lite": (197.0, 197.0),
    "TPU v5e": (197.0, 197.0),
    "TPU v5p": (459.0, 459.0),
}

QUICK = {
    "repeats": 2,
    "sampler_cases": ("dpm_solver++ (2M)", "ode (adaptive RK45)"),
    "sampler_steps": 8,
    "train_size": "tiny",
    "scaling_size": "tiny",
    "device_counts": (1, 2),
    "memory_batch": 2,
    "loop_steps": 8,
    "solver_nfes": (10, 20),
}
DEFAULT = {
    "repeats": 3,
    "sampler_cases": None,  # all of benchmarks.samplers.CASES
    "sampler_steps": 12,
    "train_size": "tiny",
    "scaling_size": "tiny",
    "device_counts": (1, 2, 4, 8),
    "memory_batch": 4,
    "loop_steps": 20,
    "solver_nfes": (5, 10, 20, 35, 50),
}
SAMPLER_NET = {"nf": 16, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (8,)}
SAMPLER_SHAPE = (8, 16, 16, 3)
MEMORY_NET = {"nf": 32, "ch_mult": (1, 2, 2), "num_res_blocks": 2, "attn_resolutions": (16,)}


# --------------------------------------------------------------------------------------------
# Pure helpers: the machine, peak FLOPs, MFU, markdown.


def machine_description() -> dict:
    """CPU model, cores, memory, jax/jaxlib versions, backend, devices, date (UTC), load."""
    import jaxlib

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory = float("nan")
    devices = jax.devices()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "devices": f"{len(devices)} x {devices[0].device_kind}",
        "load_average": round(os.getloadavg()[0], 2),
    }


def peak_tflops(device_kind: str, dtype: str) -> float | None:
    """The dense peak TFLOP/s of one device of ``device_kind`` for ``dtype``, or None."""
    if dtype not in ("bfloat16", "float32"):
        raise ValueError(f"dtype must be 'bfloat16' or 'float32', got {dtype!r}.")
    for name in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if name.lower() in device_kind.lower():
            return PEAK_TFLOPS[name][0 if dtype == "bfloat16" else 1]
    return None


def mfu(flops_per_device: float, step_s: float, peak_tflops_per_device: float) -> float:
    """Model FLOP utilisation: achieved FLOP/s of one device over its peak.

    Args:
      flops_per_device: FLOPs of one step of the per-device (SPMD-partitioned) program.
      step_s: seconds per step.
      peak_tflops_per_device: the device's peak, in TFLOP/s.
    """
    if step_s <= 0 or peak_tflops_per_device <= 0:
        raise ValueError(
            f"step_s and peak_tflops_per_device must be positive, got {step_s}, "
            f"{peak_tflops_per_device}."
        )
    return flops_per_device / step_s / (peak_tflops_per_device * 1e12)


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
    """Lines of a markdown table; floats get 3 significant digits."""

    def cell(value):
        if isinstance(value, float):
            return "n/a" if math.isnan(value) else f"{value:.3g}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def median(values) -> float:
    """The median of ``values`` as a float."""
    return float(statistics.median(values))


# --------------------------------------------------------------------------------------------
# The benchmarks: each returns (summary rows, detail lines).


def sampler_overhead(settings: dict, log) -> tuple[list, list]:
    """Sampler time per evaluation over a bare scan of the same evaluations."""
    from benchmarks import samplers

    cases = []
    for name, kind, config in samplers.CASES:
        if settings["sampler_cases"] and name not in settings["sampler_cases"]:
            continue
        config = dict(config)
        if "num_steps" in config:
            config["num_steps"] = settings["sampler_steps"]
        cases.append((name, kind, config))
    rows = samplers.measure(cases, SAMPLER_SHAPE, settings["repeats"], small=SAMPLER_NET, log=log)
    ratios = [r["ratio"] for r in rows]
    summary = [
        [
            "samplers",
            "time per network evaluation / bare scan (median over samplers)",
            median(ratios),
            f"range {min(ratios):.3f}-{max(ratios):.3f} over {len(rows)} samplers",
        ]
    ]
    details = [
        f"Small NCSN++/DDPM++ ({SAMPLER_NET}), batch {SAMPLER_SHAPE}; "
        f"{settings['sampler_steps']} steps for fixed grids.",
        "",
        *samplers.table(rows),
    ]
    return summary, details


def likelihood_costs(settings: dict, log) -> tuple[list, list]:
    """Augmented evaluation / forward, and on-device solve vs a host scipy solve."""
    from benchmarks import likelihood as lb
    from sde_jax import VPSDE

    sde = VPSDE()
    data = lb.GaussianData(sde, math.prod(lb.IMAGE))
    x = jnp.asarray(data.sample(lb.BATCH).reshape(lb.BATCH, *lb.IMAGE))
    net, description = lb.build_network(jax.random.key(0), 16, 1)

    def score_fn(y, t):
        return data.score(y, t) + 0.1 * net(y, t)

    cost = lb.evaluation_cost(sde, score_fn, x)
    fwd, aug, vjp = cost["forward"], cost["jvp"], cost["vjp"]
    key = jax.random.key(1)
    probe = jax.random.rademacher(key, (1, *x.shape), x.dtype)[0]
    solvers = {
        "host scipy RK45, drift and vjp divergence as two calls (original design)": (
            lb.host_scipy_solver(sde, score_fn, x, probe, "original")
        ),
        "host scipy RK45, same jvp function": lb.host_scipy_solver(sde, score_fn, x, probe, "jvp"),
        "sde_jax on device (t)": lb.device_solver(sde, score_fn, x, key, "t"),
    }
    per_nfe = {name: [] for name in solvers}
    nfes = {}
    for _ in range(settings["repeats"]):  # alternate the solvers
        for name, solve in solvers.items():
            start = time.perf_counter()
            nfe, _ = solve()
            per_nfe[name].append((time.perf_counter() - start) / nfe)
            nfes[name] = nfe
    ms = {name: 1e3 * median(v) for name, v in per_nfe.items()}
    device = ms["sde_jax on device (t)"]
    host = ms["host scipy RK45, same jvp function"]
    original = ms["host scipy RK45, drift and vjp divergence as two calls (original design)"]
    log(f"likelihood: aug/fwd {aug / fwd:.2f}, host/device per NFE {host / device:.2f}")
    summary = [
        ["likelihood", "augmented evaluation (drift + jvp divergence) / forward", aug / fwd, ""],
        [
            "likelihood",
            "host scipy solve / on-device solve, time per evaluation",
            host / device,
            f"original design (host, drift + vjp as two calls): {original / device:.3g}",
        ],
    ]
    details = [
        f"{description}; VP SDE, batch {lb.BATCH} of {lb.IMAGE}, rtol = atol = {lb.TOL}.",
        "",
        *markdown_table(
            ["function", "ms", "/ forward"],
            [
                ["score forward", 1e3 * fwd, 1.0],
                ["drift + jvp divergence (1 probe)", 1e3 * aug, aug / fwd],
                ["drift + vjp divergence, one call", 1e3 * vjp, vjp / fwd],
                ["drift, then vjp divergence (original)", 1e3 * (fwd + vjp), (fwd + vjp) / fwd],
            ],
        ),
        "",
        *markdown_table(
            ["solver", "NFE", "ms / NFE", "/ on device"],
            [[n, nfes[n], ms[n], ms[n] / device] for n in solvers],
        ),
    ]
    return summary, details


def train_step_cost(settings: dict, log) -> tuple[list, list]:
    """Images/s, step / bare forward+backward, FLOP rate; in a subprocess with 1 device."""
    from benchmarks import training

    r = training.run_worker(1, settings["train_size"], settings["repeats"])
    log(f"train step: {r}")
    gflops = r["flops"] / r["step_s"] / 1e9 if r["flops"] else float("nan")
    summary = [
        ["train step", "images / s (1 CPU device)", r["batch"] / r["step_s"], ""],
        [
            "train step",
            "train step / bare forward+backward",
            r["step_s"] / r["grad_s"],
            "loss + grad + Adam + clipping + EMA, vs jax.grad of the loss",
        ],
        ["train step", "achieved GFLOP/s (XLA cost analysis)", gflops, ""],
    ]
    details = [
        f"NCSN++ size {r['size']!r} ({r['params']:,} parameters), 32x32x3, batch {r['batch']}.",
        "",
        *markdown_table(
            ["step s", "grad s", "ratio", "FLOPs / step", "images / s"],
            [
                [
                    r["step_s"],
                    r["grad_s"],
                    r["step_s"] / r["grad_s"],
                    r["flops"] or "n/a",
                    r["batch"] / r["step_s"],
                ]
            ],
        ),
    ]
    return summary, details


def scaling(settings: dict, log) -> tuple[list, list]:
    """The same step over simulated devices (subprocesses) and 2 local processes."""
    from benchmarks import training

    size, repeats = settings["scaling_size"], settings["repeats"]
    rows = []
    for devices in settings["device_counts"]:
        r = training.run_worker(devices, size, repeats)
        rows.append(["1 process", devices, r["batch"], r["step_s"]])
        log(f"scaling: {devices} devices {r['step_s']:.3f} s")
    with tempfile.TemporaryDirectory() as logdir:
        r = training.run_processes(2, size, repeats, logdir)
    rows.append(["2 processes (launch.local, gloo)", 2, r["batch"], r["step_s"]])
    log(f"scaling: 2 processes {r['step_s']:.3f} s")
    base = rows[0][3]
    two_devices = next(row[3] for row in rows if row[1] == 2)
    for row in rows:
        row.append(row[3] / base)
    summary = [
        [
            "scaling",
            f"step time on {rows[-2][1]} simulated devices / 1 device",
            rows[-2][3] / base,
            "same global batch; devices share the CPU cores",
        ],
        [
            "scaling",
            "step time, 2 processes x 1 device / 1 process x 2 devices",
            r["step_s"] / two_devices,
            "cross-process collectives over gloo",
        ],
    ]
    details = [
        f"NCSN++ size {size!r}, global batch {rows[0][2]}; each row its own process(es).",
        "",
        *markdown_table(["job", "devices", "global batch", "step s", "/ 1 device"], rows),
    ]
    return summary, details


def memory(settings: dict, log) -> tuple[list, list]:
    """Gradient memory of NCSN++ with and without remat and bfloat16 (compiled, not run)."""
    from benchmarks import models_forward

    batch, rows = settings["memory_batch"], []
    for dtype in ("float32", "bfloat16"):
        for remat in (False, True):
            m = models_forward.grad_memory(jnp.dtype(dtype), remat, batch, MEMORY_NET)
            rows.append(
                [dtype, remat, m["saved activations MiB"], m["grad temp MiB"], m["grad peak MiB"]]
            )
            log(f"memory: {dtype} remat={remat}: {m}")
    base = rows[0]
    remat_f32 = rows[1]
    summary = [
        [
            "memory",
            "saved activations, remat / no remat (float32)",
            remat_f32[2] / base[2],
            f"{base[2]:.1f} -> {remat_f32[2]:.1f} MiB",
        ],
        [
            "memory",
            "compiled gradient peak, bfloat16 / float32 (no remat)",
            rows[2][4] / base[4],
            f"{base[4]:.1f} -> {rows[2][4]:.1f} MiB (XLA memory analysis)",
        ],
        [
            "memory",
            "compiled gradient peak, remat / no remat (float32)",
            remat_f32[4] / base[4],
            "XLA:CPU's buffer assignment; accelerators differ",
        ],
    ]
    details = [
        f"NCSN++ {MEMORY_NET}, batch {batch} of 32x32x3; `jax.jit(grad).lower().compile()."
        "memory_analysis()` (temporaries; arguments + outputs + temporaries) and the residuals "
        "`jax.grad` saves (print_saved_residuals, parameters excluded).",
        "",
        *markdown_table(["dtype", "remat", "saved activations MiB", "temp MiB", "peak MiB"], rows),
    ]
    return summary, details


def gpu_throughput(
    settings: dict, log, per_device_batch: int = 128, size: str = "full"
) -> tuple[list, list]:
    """Absolute throughput of NCSN++ (CIFAR-10 size) on this job's accelerators, with MFU."""
    from benchmarks import training

    devices = jax.devices()
    kind = devices[0].device_kind
    rows, summary = [], []
    for dtype in ("float32", "bfloat16"):
        r = training.measure(
            len(devices), size, settings["repeats"], len(devices) * per_device_batch, dtype
        )
        peak = peak_tflops(kind, dtype)
        util = mfu(r["flops"], r["step_s"], peak) if (peak and r["flops"]) else float("nan")
        images = r["batch"] / r["step_s"]
        rows.append([dtype, r["batch"], r["step_s"], images, r["flops"] or "n/a", peak, util])
        summary.append([f"{kind} x{len(devices)}", f"images / s, {dtype}", images, ""])
        summary.append([f"{kind} x{len(devices)}", f"MFU, {dtype}", util, f"peak {peak} TFLOP/s"])
        log(f"gpu {dtype}: {images:.1f} images/s, MFU {util:.3f}")
    details = [
        f"NCSN++ size {size!r}, {per_device_batch} images per device, {len(devices)} x {kind}. "
        "FLOPs: XLA cost analysis of the compiled per-device step; peak from PEAK_TFLOPS.",
        "",
        *markdown_table(
            [
                "dtype",
                "global batch",
                "step s",
                "images / s",
                "FLOPs / device / step",
                "peak TFLOP/s",
                "MFU",
            ],
            rows,
        ),
    ]
    return summary, details


def models_in_loops(settings: dict, log) -> tuple[list, list]:
    """Networks inside loops, samplers and the likelihood solve; compile times; FIR."""
    from benchmarks import models_in_loops as mil

    original = None
    if settings.get("original"):
        with open(settings["original"]) as f:
            original = json.load(f)
    results = mil.measure(settings["loop_steps"], settings["repeats"], log=log)
    return mil.summary_rows(results, original), mil.details(results, original)


def solver_accuracy(settings: dict, log) -> tuple[list, list]:
    """Every fixed-grid solver's error on a Gaussian mixture at NFE 5-50; a log-log PNG."""
    from benchmarks import solvers

    start = time.perf_counter()
    rows = solvers.measure(nfes=settings["solver_nfes"], log=log)
    plot = settings.get("solver_plot")
    if plot:
        solvers.plot(rows, plot)
    t = solvers.targets(rows)
    summary = [
        [
            "solvers",
            "Gaussian mixture, VP, 10 NFE: best energy distance / exact spread (target <= 2)",
            t["best_vp_10"][1],
            t["best_vp_10"][0],
        ],
        [
            "solvers",
            "VP, 20 NFE: worst DPM-Solver-type energy distance / exact spread",
            t["dpm_vp_20_worst_energy"],
            f"variance ratios {t['dpm_vp_20_variance_range'][0]:.3f}-"
            f"{t['dpm_vp_20_variance_range'][1]:.3f}; exact sets up to {rows[0]['exact_max']:.2f}",
        ],
    ]
    if "ve_pc_2000" in t:
        summary.append(
            [
                "solvers",
                "VE: EDM Heun at 35 NFE / PC at 2000 NFE, energy distance",
                t["ve_edm_heun_35"] / t["ve_pc_2000"],
                f"{t['ve_edm_heun_35']:.3g} / {t['ve_pc_2000']:.3g} (target <= 1)",
            ]
        )
    details = solvers.report(rows, time.perf_counter() - start)
    if plot:
        details += ["", f"![energy distance against NFE]({os.path.basename(plot)})"]
    return summary, details


BENCHMARKS = {
    "Networks inside loops, samplers and the likelihood solve": models_in_loops,
    "Fast solvers on a Gaussian mixture": solver_accuracy,
    "Sampler overhead per network evaluation": sampler_overhead,
    "Likelihood cost per evaluation": likelihood_costs,
    "Train step": train_step_cost,
    "Scaling over simulated devices and processes": scaling,
    "Model memory: remat and bfloat16": memory,
}


def report(
    machine: dict, summary: list, sections: dict, wall_s: float, mode: str, note: str = ""
) -> str:
    """The markdown report: machine, one summary table, then each benchmark's details."""
    lines = [
        f"# sde_jax benchmarks ({machine['backend']})",
        "",
        f"Produced by `python -m benchmarks.run{' --quick' if mode == 'quick' else ''}` in "
        f"{wall_s / 60:.1f} min. Ratios are measured side by side in one run; each figure is "
        "the median of the repeats.",
        *(["", f"**Note:** {note}"] if note else []),
        "",
        *markdown_table(["machine", ""], [[k, v] for k, v in machine.items()]),
        "",
        "## Summary",
        "",
        *markdown_table(["benchmark", "measure", "value", "notes"], summary),
    ]
    for title, details in sections.items():
        lines += ["", f"## {title}", "", *details]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmarks and writes the report."""
    parser = argparse.ArgumentParser(prog="benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--output", default=None, help="default benchmarks/RESULTS-BACKEND.md")
    parser.add_argument("--gpu", action="store_true", help="also the full-size GPU throughput")
    parser.add_argument("--only", default=None, help="comma-separated benchmark title words")
    parser.add_argument("--note", default="", help="a remark printed under the title")
    parser.add_argument(
        "--original",
        default=None,
        help="JSON of the original score_sde code's figures on the parity fixtures, measured "
        "separately on this machine (see benchmarks/models_in_loops.py)",
    )
    args = parser.parse_args(argv)
    settings = dict(QUICK if args.quick else DEFAULT, original=args.original)
    backend = jax.default_backend()
    output = args.output or os.path.join("benchmarks", f"RESULTS-{backend}.md")
    settings["solver_plot"] = os.path.splitext(output)[0] + "-solvers.png"
    benchmarks = dict(BENCHMARKS)
    if args.gpu or backend == "gpu":
        benchmarks["Absolute throughput on the accelerator"] = gpu_throughput
    if args.only:
        words = [w.strip().lower() for w in args.only.split(",")]
        benchmarks = {t: f for t, f in benchmarks.items() if any(w in t.lower() for w in words)}

    def log(message):
        print(f"[{time.perf_counter() - start:6.0f} s] {message}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    machine = machine_description()
    summary, sections = [], {}
    for title, fn in benchmarks.items():
        log(f"{title} ...")
        rows, details = fn(settings, log)
        summary += rows
        sections[title] = details
    machine["load_average_end"] = round(os.getloadavg()[0], 2)
    wall_s = time.perf_counter() - start
    text = report(machine, summary, sections, wall_s, "quick" * args.quick, args.note)
    with open(output, "w") as f:
        f.write(text)
    print(text)
    log(f"wrote {output}")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    raise SystemExit(main())
