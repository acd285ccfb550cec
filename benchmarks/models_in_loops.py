"""Network evaluations inside loops, samplers and the likelihood solve, and compile times.

    python -m benchmarks.models_in_loops [--quick] [--original=ORIGINAL.json] [--out=FILE.md]

On the two networks of the score_sde parity fixtures (``tests/fixtures/score_sde_parity``:
a tiny NCSN++ with FIR resampling under the VE SDE, a tiny DDPM++ under the VP SDE, 324k and
318k parameters, the original code's released checkpoint format), batch 8 of 16x16x3:

1. the network forward jitted alone (parameters as an argument, and closed over as
   constants), the same forward inside ``lax.scan`` and inside ``lax.while_loop``, and the time
   per network evaluation inside each sampler and the likelihood solve, each over the
   standalone forward (the likelihood's evaluation is a jvp, so it is also divided by the
   augmented evaluation jitted alone);
2. the same PC sampler and forward with the FIR formulation sde_jax had before
   (``benchmarks/fir_depthwise.py``), and the FIR functions alone and 20 times inside one
   ``lax.fori_loop``, in both formulations;
3. the likelihood solve against the original design at equal NFE: scipy's RK45 on the host,
   the drift and the vjp divergence as two device calls per evaluation (score_sde's
   ``likelihood.py``);
4. compile times (lowering plus XLA compilation, ``jit(f).lower(...).compile()``) of every
   sampler, the likelihood solve and the train step: what a user waits for at the first call.

``--original`` adds the original score_sde code's own figures on the same fixture networks and
inputs (a JSON of ``{fixture: {'score_fn': {'ms_per_call_median'}, 'pc_sampler':
{'ms_per_nfe', 'compile_s'}}}``, measured by running that code separately on the same machine;
this repository holds none of it) and the ratios to them.
"""

import argparse
import contextlib
import functools
import json
import math
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import fir_depthwise
from sde_jax import VESDE, VPSDE, likelihood, probability_flow_drift
from sde_jax.compat import load_checkpoint, model_from_config
from sde_jax.experiment import build
from sde_jax.models import fir, get_score_fn

FIXTURES = (
    pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "score_sde_parity"
)
NETWORKS = {"ncsnpp_ve": "NCSN++ (FIR), VE", "ddpmpp_vp": "DDPM++, VP"}
BATCH = 8
LIKELIHOOD_TOL = 1e-3
FIR_LOOP = 20
FIR_FUNCTIONS = ("upsample_2d", "downsample_2d", "upsample_conv_2d", "conv_downsample_2d")


def samplers(num_steps: int) -> dict[str, dict]:
    """The sampling configs measured, by display name."""
    return {
        "pc (reverse diffusion + langevin)": {"method": "pc", "num_steps": num_steps},
        "pc: euler_maruyama": {
            "method": "pc", "predictor": "euler_maruyama", "corrector": "none",
            "num_steps": num_steps,
        },
        "heun": {"method": "heun", "num_steps": num_steps},
        "dpm_solver++ (2M)": {"method": "dpm_solver++", "num_steps": num_steps},
        "ode (adaptive RK45, tol 1e-3)": {"method": "ode", "rtol": 1e-3, "atol": 1e-3},
    }  # fmt: skip


def load_network(name: str):
    """``(sde, model, params, x, t)`` of a parity fixture, the batch tiled to :data:`BATCH`."""
    data = np.load(FIXTURES / f"{name}.npz")
    model = model_from_config(json.loads(str(data["config_json"]))["config"])
    params = load_checkpoint(FIXTURES / f"{name}.msgpack")["params_ema"]
    reps = math.ceil(BATCH / data["x"].shape[0])
    x = jnp.asarray(np.concatenate([data["x"]] * reps)[:BATCH])
    t = jnp.asarray(np.concatenate([data["t"]] * reps)[:BATCH])
    sde = VESDE() if name.endswith("_ve") else VPSDE()
    return sde, model, params, x, t


def scaled(sde) -> bool:
    """The fixtures' VE network (NCSN++) divides its output by sigma; the VP one does not."""
    return isinstance(sde, VESDE)


@contextlib.contextmanager
def depthwise_fir():
    """Swaps the depthwise-convolution FIR formulation into ``sde_jax.models.fir``."""
    saved = {name: getattr(fir, name) for name in FIR_FUNCTIONS}
    try:
        for name in FIR_FUNCTIONS:
            setattr(fir, name, getattr(fir_depthwise, name))
        yield
    finally:
        for name, fn in saved.items():
            setattr(fir, name, fn)


def compile_timed(fn, *args):
    """``(compiled, seconds)``: ``jit(fn)`` lowered and compiled for ``args``."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def median_seconds(fn, *args, repeats: int) -> float:
    """Median wall time of ``fn(*args)`` over ``repeats`` runs after one warm-up."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _loops(score_of, n: int):
    """``n`` evaluations in a ``lax.scan`` and in a ``lax.while_loop`` (params as argument)."""

    def scan(params, x):
        def body(y, s):
            return y + 1e-3 * score_of(params)(y, jnp.full((BATCH,), s)), None

        return jax.lax.scan(body, x, jnp.linspace(1.0, 0.1, n))[0]

    def while_loop(params, x):
        def body(carry):
            i, y = carry
            s = jnp.full((BATCH,), 1.0 - 0.9 * i / n)
            return i + 1, y + 1e-3 * score_of(params)(y, s)

        return jax.lax.while_loop(lambda c: c[0] < n, body, (0, x))[1]

    return scan, while_loop


def network_in_loops(name: str, num_steps: int, repeats: int, log) -> dict:
    """Section 1 (and the compile times of section 4) for one fixture network."""
    sde, model, params, x, t = load_network(name)

    def score_of(p):
        return get_score_fn(sde, model.apply, p, scale_by_sigma=scaled(sde))

    forward, compile_forward = compile_timed(lambda p, x, t: score_of(p)(x, t), params, x, t)
    constant = jax.jit(lambda x, t: score_of(params)(x, t))
    scan, while_loop = (jax.jit(f) for f in _loops(score_of, num_steps))
    ms = {}
    for _ in range(repeats):  # alternate, so that all see the same machine load
        for key, fn, args in (
            ("forward", forward, (params, x, t)),
            ("forward, params as constants", constant, (x, t)),
            ("lax.scan", scan, (params, x)),
            ("lax.while_loop", while_loop, (params, x)),
        ):
            per = 1 if key.startswith("forward") else num_steps
            ms.setdefault(key, []).append(1e3 * median_seconds(fn, *args, repeats=1) / per)
    rows = {key: {"ms": statistics.median(v), "nfe": None} for key, v in ms.items()}
    compile_s = {"forward": compile_forward}
    for label, config in samplers(num_steps).items():
        sampler = build.get_sampler(sde, config, x.shape)
        run, compile_s[label] = compile_timed(
            lambda k, p, sampler=sampler: sampler(k, score_of(p)), jax.random.key(0), params
        )
        nfe = int(run(jax.random.key(0), params).nfe)
        seconds = median_seconds(run, jax.random.key(0), params, repeats=repeats)
        rows[label] = {"ms": 1e3 * seconds / nfe, "nfe": nfe}
        log(f"{name}: {label}: {rows[label]['ms']:.2f} ms / NFE, compile {compile_s[label]:.1f} s")
    lik = likelihood_in_loops(sde, score_of, params, x, repeats)
    rows["likelihood solve (per evaluation)"] = {"ms": lik["ms_per_nfe"], "nfe": lik["nfe"]}
    compile_s["likelihood solve"] = lik["compile_s"]
    compile_s["train step"] = train_step_compile(sde, model, params, x)
    fwd = rows["forward"]["ms"]
    for row in rows.values():
        row["ratio"] = row["ms"] / fwd
    return {"rows": rows, "compile_s": compile_s, "likelihood": lik, "forward_ms": fwd}


def likelihood_in_loops(sde, score_of, params, x, repeats: int) -> dict:
    """The on-device solve per evaluation, the augmented evaluation alone, the original design."""
    from benchmarks import likelihood as lb

    data = jnp.clip(0.5 + 0.2 * x, 0.0, 1.0)  # image-like values in [0, 1]
    key = jax.random.key(1)
    probe = jax.random.rademacher(key, (1, *x.shape), x.dtype)
    solve, compile_s = compile_timed(
        lambda k, p, y: likelihood.log_likelihood(
            k, sde, score_of(p), y, rtol=LIKELIHOOD_TOL, atol=LIKELIHOOD_TOL
        ),
        key, params, data,
    )  # fmt: skip

    def augmented(p, y):
        t = jnp.full((y.shape[0],), 0.5)
        return likelihood.divergence(
            lambda v: probability_flow_drift(sde, score_of(p), v, t), y, probe
        )

    aug = jax.jit(augmented)
    original = lb.host_scipy_solver(
        sde, score_of(params), data, probe[0], "original", tol=LIKELIHOOD_TOL
    )
    ours, theirs, alone = [], [], []
    nfe = int(solve(key, params, data).nfe)
    for _ in range(repeats):
        ours.append(median_seconds(solve, key, params, data, repeats=1) / nfe)
        alone.append(median_seconds(aug, params, data, repeats=1))
        start = time.perf_counter()
        original_nfe, _ = original()
        theirs.append((time.perf_counter() - start) / original_nfe)
    return {
        "nfe": nfe,
        "original_nfe": original_nfe,
        "ms_per_nfe": 1e3 * statistics.median(ours),
        "augmented_ms": 1e3 * statistics.median(alone),
        "original_ms_per_nfe": 1e3 * statistics.median(theirs),
        # The fastest runs too (benchmarks/likelihood.py's estimator: least disturbed by load).
        "fastest_ratio": min(theirs) / min(ours),
        "compile_s": compile_s,
    }


def train_step_compile(sde, model, params, x) -> float:
    """Seconds to lower and compile the train step of ``model`` (Adam, EMA, the DSM loss)."""
    from configs import default
    from sde_jax import losses
    from sde_jax.experiment import build
    from sde_jax.experiment.tasks import ScoreTask
    from sde_jax.training.state import create_state
    from sde_jax.training.step import train_step

    tx = build.build_optimizer(default.get_default_config().optim)
    state = create_state(params, tx, jax.random.key(0))
    kw = {"continuous": True, "num_scales": 1000, "scale_by_sigma": scaled(sde)}
    task = ScoreTask(model=model, sde=sde, loss_fn=losses.get_loss_fn(sde), score_kwargs=kw)
    step = functools.partial(train_step, objective=task.objective, tx=tx, ema_rate=0.999)
    images = {"image": jnp.clip(0.5 + 0.2 * x, 0.0, 1.0)}
    return compile_timed(step, state, images)[1]


def before_and_after(num_steps: int, repeats: int) -> dict:
    """NCSN++'s forward and PC sampler with the slice-sum FIR and the depthwise one."""
    sde, model, params, x, t = load_network("ncsnpp_ve")
    sampler = build.get_sampler(
        sde, samplers(num_steps)["pc (reverse diffusion + langevin)"], x.shape
    )
    score = functools.partial(get_score_fn, sde, model.apply, scale_by_sigma=scaled(sde))
    out = {}
    for label, context in (
        ("slice sums (now)", contextlib.nullcontext),
        ("depthwise conv (before)", depthwise_fir),
    ):
        with context():
            fwd = jax.jit(lambda p, x, t: score(p)(x, t))
            pc = jax.jit(lambda k, p: sampler(k, score(p)))
            nfe = int(pc(jax.random.key(0), params).nfe)
            out[label] = {
                "forward_ms": 1e3 * median_seconds(fwd, params, x, t, repeats=repeats),
                "pc_ms_per_nfe": 1e3
                * median_seconds(pc, jax.random.key(0), params, repeats=repeats)
                / nfe,
            }
    return out


def fir_functions(repeats: int) -> list[dict]:
    """Each FIR function alone and :data:`FIR_LOOP` times in one ``fori_loop``, both ways."""
    k = (1, 3, 3, 1)
    keys = jax.random.split(jax.random.key(1234), 4)
    up_in = jax.random.normal(keys[0], (8, 16, 16, 16))
    down_in = jax.random.normal(keys[1], (8, 8, 8, 32))
    w16 = 0.1 * jax.random.normal(keys[2], (3, 3, 16, 16))
    cases = [
        ("upsample_2d (8,16,16,16)", lambda m, x: m.upsample_2d(x, k), up_in),
        ("downsample_2d (8,8,8,32)", lambda m, x: m.downsample_2d(x, k), down_in),
        ("upsample_conv_2d (8,16,16,16), 3x3", lambda m, x: m.upsample_conv_2d(x, w16, k), up_in),
        ("conv_downsample_2d (8,16,16,16), 3x3", lambda m, x: m.conv_downsample_2d(x, w16, k), up_in),  # noqa: E501
    ]  # fmt: skip
    rows = []
    for label, op, x in cases:
        row = {"function": label}
        for name, module in (("slices", fir), ("depthwise", fir_depthwise)):
            alone = jax.jit(lambda x, op=op, module=module: op(module, x))

            def chained(x, op=op, module=module):
                # Each call's full output is loop state and feeds the next input.
                def body(_, carry):
                    y = op(module, carry[0])
                    return carry[0] + 1e-6 * y[0, 0, 0, 0], y

                return jax.lax.fori_loop(0, FIR_LOOP, body, (x, op(module, x)))[1]

            row[f"{name}_alone_ms"] = 1e3 * median_seconds(alone, x, repeats=repeats)
            row[f"{name}_loop_ms"] = 1e3 * median_seconds(jax.jit(chained), x, repeats=repeats)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------
# Report.


def _table(header: list[str], rows: list[list]) -> list[str]:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def measure(num_steps: int = 20, repeats: int = 3, log=print) -> dict:
    """Every section's measurements, as one dict (see :func:`report`)."""
    results = {"networks": {}}
    for name in NETWORKS:
        log(f"{name} ...")
        results["networks"][name] = network_in_loops(name, num_steps, repeats, log)
    log("FIR before and after ...")
    results["before_after"] = before_and_after(num_steps, repeats)
    results["fir"] = fir_functions(max(repeats, 5))
    results["num_steps"] = num_steps
    return results


def summary_rows(results: dict, original: dict | None = None) -> list[list]:
    """``[benchmark, measure, value, notes]`` rows for the runner's summary table."""
    rows = []
    for name, r in results["networks"].items():
        loops = {k: v["ratio"] for k, v in r["rows"].items() if not k.startswith("forward")}
        loops.pop("likelihood solve (per evaluation)")
        worst = max(loops, key=loops.get)
        lik = r["likelihood"]
        rows.append(
            [
                "models in loops",
                f"{NETWORKS[name]}: per evaluation in loops and samplers / forward alone (max)",
                loops[worst],
                f"{worst}; likelihood evaluation / augmented evaluation alone "
                f"{lik['ms_per_nfe'] / lik['augmented_ms']:.2f}",
            ]
        )
        rows.append(
            [
                "models in loops",
                f"{NETWORKS[name]}: likelihood, original design / sde_jax, time per evaluation",
                lik["original_ms_per_nfe"] / lik["ms_per_nfe"],
                "equal NFE: host scipy RK45 with drift and vjp divergence as two calls; "
                f"fastest runs {lik.get('fastest_ratio', float('nan')):.2f}",
            ]
        )
        pc = r["rows"]["pc (reverse diffusion + langevin)"]["ms"]
        if original and name in original:
            theirs = original[name]["pc_sampler"]["ms_per_nfe"]
            rows.append(
                [
                    "models in loops",
                    f"{NETWORKS[name]}: PC sampler ms per evaluation, sde_jax / original score_sde",
                    pc / theirs,
                    f"{pc:.2f} / {theirs:.2f} ms",
                ]
            )
        slowest = max(r["compile_s"], key=r["compile_s"].get)
        rows.append(
            [
                "compile",
                f"{NETWORKS[name]}: slowest compile (s)",
                r["compile_s"][slowest],
                slowest,
            ]
        )
    return rows


def details(results: dict, original: dict | None = None) -> list[str]:
    """The markdown detail sections."""
    n = results["num_steps"]
    lines = [
        "Parity-fixture networks (tests/fixtures/score_sde_parity), batch "
        f"{BATCH} of 16x16x3, float32; fixed-grid samplers {n} steps, loops {n} evaluations. "
        "ms per evaluation; the ratio is to the forward jitted alone with the parameters as an "
        "argument.",
        "",
    ]
    for name, r in results["networks"].items():
        lines += [f"### {NETWORKS[name]} ({name})", ""]
        lines += _table(
            ["where the network runs", "NFE", "ms / evaluation", "/ forward alone"],
            [[k, v["nfe"], v["ms"], v["ratio"]] for k, v in r["rows"].items()],
        )
        lik = r["likelihood"]
        lines += [
            "",
            f"Likelihood solve (rtol = atol = {LIKELIHOOD_TOL}, data 0.5 + 0.2 x clipped to "
            f"[0, 1]): {lik['nfe']} evaluations of {lik['ms_per_nfe']:.2f} ms; the augmented "
            f"evaluation (drift + jvp divergence) jitted alone takes {lik['augmented_ms']:.2f} ms "
            f"(ratio {lik['ms_per_nfe'] / lik['augmented_ms']:.2f}). The original design "
            f"(host RK45, {lik['original_nfe']} evaluations) takes "
            f"{lik['original_ms_per_nfe']:.2f} ms per evaluation: "
            f"{lik['original_ms_per_nfe'] / lik['ms_per_nfe']:.2f}x ours at equal NFE "
            f"(fastest runs: {lik.get('fastest_ratio', float('nan')):.2f}x).",
            "",
        ]
        lines += _table(["compiled function", "lower + compile s"], list(r["compile_s"].items()))
        lines.append("")
    lines += [
        "### NCSN++ with the FIR formulation before and after",
        "",
        *_table(
            ["FIR formulation", "forward alone ms", "PC sampler ms / evaluation"],
            [[k, v["forward_ms"], v["pc_ms_per_nfe"]] for k, v in results["before_after"].items()],
        ),
        "",
        f"### FIR functions, kernel [1, 3, 3, 1]: alone, and {FIR_LOOP} chained calls in one "
        "`lax.fori_loop` (ms for the whole loop)",
        "",
        *fir_table(results["fir"], (original or {}).get("fir")),
    ]
    if original:
        lines += ["", "### Against the original score_sde code", "", original_note(original), ""]
        rows = []
        for name in NETWORKS:
            if name not in original:
                continue
            ours = results["networks"][name]
            theirs = original[name]
            pc = ours["rows"]["pc (reverse diffusion + langevin)"]["ms"]
            rows.append(
                [
                    NETWORKS[name],
                    theirs["score_fn"]["ms_per_call_median"],
                    ours["forward_ms"],
                    theirs["pc_sampler"]["ms_per_nfe"],
                    pc,
                    pc / theirs["pc_sampler"]["ms_per_nfe"],
                    theirs["pc_sampler"].get("compile_s"),
                    ours["compile_s"].get("pc (reverse diffusion + langevin)"),
                ]
            )
        lines += _table(
            [
                "network",
                "original forward ms",
                "sde_jax forward ms",
                "original PC ms / NFE",
                "sde_jax PC ms / NFE",
                "sde_jax / original",
                "original PC compile s",
                "sde_jax PC compile s",
            ],
            rows,
        )
    return lines


def fir_table(rows: list[dict], original: dict | None) -> list[str]:
    """The FIR functions' table, with the original's columns when its figures are given."""
    header = ["function", "slices alone", "slices loop", "depthwise alone", "depthwise loop"]
    keys = ["slices_alone_ms", "slices_loop_ms", "depthwise_alone_ms", "depthwise_loop_ms"]
    body = [[r["function"], *(r[k] for k in keys)] for r in rows]
    if original:
        header += ["original alone", "original loop"]
        for row, r in zip(body, rows, strict=True):
            theirs = original.get(r["function"].split()[0], {})
            row += [theirs.get("single_ms_median"), theirs.get("loop20_ms_median")]
    return _table(header, body)


def original_note(original: dict) -> str:
    """Where the original's figures came from."""
    return (
        f"The original's figures: {original.get('code', 'score_sde')}, on jax "
        f"{original.get('versions', {}).get('jax', '?')}, run separately on this machine just "
        "before this benchmark, on the same fixture networks, parameters and inputs (its PC "
        "sampler pmapped on one device as its run_lib does; NFE 2N)."
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 steps, 2 repeats")
    parser.add_argument("--original", default=None, help="JSON of the original's figures")
    parser.add_argument("--out", default=None, help="also write the markdown here")
    args = parser.parse_args()
    original = json.loads(pathlib.Path(args.original).read_text()) if args.original else None
    results = measure(8 if args.quick else 20, 2 if args.quick else 3, log=print)
    lines = [
        "# Networks inside loops, samplers and the likelihood solve",
        "",
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{jax.device_count()} x {jax.devices()[0].platform}, jax {jax.__version__}.",
        "",
        *_table(["benchmark", "measure", "value", "notes"], summary_rows(results, original)),
        "",
        *details(results, original),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
