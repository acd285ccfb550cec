"""Train-step cost against the bare forward+backward, and scaling over simulated devices.

    python -m benchmarks.training [--out benchmarks/training.md]

1. Overhead of the loop's step: the jitted ``train_step`` (loss, gradient, Adam with clipping,
   EMA) against ``jax.grad`` of the same loss alone, for NCSN++ at CIFAR-10 size (62.8M
   parameters, 32x32) at batch 2, side by side, median of repeats.
2. Scaling: the same step for a small NCSN++ (nf 32) at a global batch of 16 on 1, 2, 4 and 8
   simulated CPU devices (each in its own process, since the device count is fixed at start-up;
   blocked per step as on CPU it must be). Simulated devices share the machine's cores, so this
   measures the sharding's overhead, not a speed-up.
"""

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import time

WORKER = "--worker"
# NCSN++ preset overrides and the default global batch of each model size.
SIZES = {
    "full": ({}, 2),  # the preset's own sizes: NCSN++ CIFAR-10, 62.8M parameters
    "small": ({"nf": 32, "ch_mult": (1, 2, 2), "num_res_blocks": 1, "attn_resolutions": (8,)}, 16),
    "tiny": ({"nf": 16, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (16,)}, 8),
}


def measure(
    devices: int,
    size: str,
    repeats: int,
    batch: int | None = None,
    dtype: str = "float32",
) -> dict:
    """Median seconds of the jitted train step and of ``jax.grad`` of its loss, side by side.

    Args:
      devices: the number of devices of the mesh (all this job's devices; recorded only).
      size: a key of :data:`SIZES` (``'full'``: NCSN++ at CIFAR-10 size).
      repeats: timed runs of each.
      batch: the global batch; default: the size's.
      dtype: the model's compute dtype.

    Returns:
      ``{'devices', 'processes', 'batch', 'step_s', 'grad_s', 'flops', 'params'}``; ``flops``
      is XLA's cost analysis of the compiled step (all devices), None where unavailable.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from configs import default
    from sde_jax import losses, sharding
    from sde_jax.experiment import build
    from sde_jax.experiment.tasks import ScoreTask
    from sde_jax.models import presets
    from sde_jax.runtime import block_if_needed, must_block_each_step
    from sde_jax.training.state import create_state
    from sde_jax.training.step import network_score_fn, train_step

    sde = build.build_sde(default.get_default_config().sde)
    sizes, default_batch = SIZES[size]
    batch = batch or default_batch
    model = presets.ncsnpp_cifar10(dropout=0.0, dtype=jnp.dtype(dtype), **sizes)
    tx = build.build_optimizer(default.get_default_config().optim)
    loss_fn = losses.get_loss_fn(sde)
    mesh = sharding.make_mesh(None, 1)
    block = must_block_each_step()

    def init():
        params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), jnp.ones(1))["params"]
        return create_state(params, tx, jax.random.key(1))

    shardings = sharding.state_shardings(jax.eval_shape(init), mesh)
    state = jax.jit(init, out_shardings=shardings)()
    kw = {"continuous": True, "num_scales": 1000}
    task = ScoreTask(model=model, sde=sde, loss_fn=loss_fn, score_kwargs=kw)
    step = jax.jit(
        functools.partial(train_step, objective=task.objective, tx=tx, ema_rate=0.999),
        in_shardings=(shardings, sharding.batch_sharding(mesh)),
        out_shardings=(shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )

    def loss(params, x):
        score_fn = network_score_fn(model, sde, params, **kw)
        return loss_fn(jax.random.key(2), score_fn, x).loss

    grad = jax.jit(jax.grad(loss))
    x = np.random.default_rng(0).random((batch, 32, 32, 3), np.float32)
    rows = batch // jax.process_count()  # each process feeds its own rows
    mine = x[jax.process_index() * rows : (jax.process_index() + 1) * rows]
    images = sharding.global_batch({"image": mine}, sharding.batch_sharding(mesh))
    compiled = step.lower(state, images).compile()
    flops = step_flops(compiled)
    state, _ = jax.block_until_ready(compiled(state, images))
    jax.block_until_ready(grad(state.params, images["image"]))
    step_times, grad_times = [], []
    for _ in range(repeats):  # alternate, so both see the same machine load
        start = time.perf_counter()
        state, _ = jax.block_until_ready(block_if_needed(compiled(state, images), block))
        step_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        jax.block_until_ready(grad(state.params, images["image"]))
        grad_times.append(time.perf_counter() - start)
    return {
        "devices": devices,
        "processes": jax.process_count(),
        "batch": batch,
        "step_s": float(np.median(step_times)),
        "grad_s": float(np.median(grad_times)),
        "flops": flops,
        "params": int(sum(p.size for p in jax.tree.leaves(state.params))),
        "device_kind": jax.devices()[0].device_kind,
        "size": size,
        "dtype": dtype,
    }


def step_flops(compiled) -> float | None:
    """FLOPs of one call of a compiled program by XLA's cost analysis, or None."""
    try:
        analysis = compiled.cost_analysis()
    except NotImplementedError:
        return None
    if isinstance(analysis, list | tuple):  # older jax: one dict per program
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def _worker_env(devices: int) -> dict:
    return {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "PYTHONPATH": os.getcwd(),
    }


def _worker_args(devices: int, size: str, repeats: int) -> list[str]:
    return [sys.executable, "-m", "benchmarks.training", WORKER, str(devices), size, str(repeats)]


def run_worker(devices: int, size: str, repeats: int) -> dict:
    """:func:`measure` in a fresh process with ``devices`` simulated CPU devices."""
    args = _worker_args(devices, size, repeats)
    out = subprocess.run(
        args, env=_worker_env(devices), capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_processes(processes: int, size: str, repeats: int, logdir: str) -> dict:
    """:func:`measure` as ``processes`` local processes (launch.local), 1 CPU device each."""
    from launch import local

    args = _worker_args(processes, size, repeats)
    env = _worker_env(1)
    env["JAX_PLATFORMS"] = "cpu"
    code = local.run(args, processes, logdir, env=env, timeout=1200)
    with open(os.path.join(logdir, "process_0.log")) as f:
        text = f.read()
    if code:
        raise RuntimeError(f"the {processes}-process benchmark failed ({code}):\n{text[-3000:]}")
    result = [line for line in text.splitlines() if line.startswith("{")][-1]
    return json.loads(result)


def worker_main(argv: list[str]) -> None:
    """``--worker DEVICES SIZE REPEATS [--multihost ...]``: prints measure's JSON."""
    devices, size, repeats = int(argv[0]), argv[1], int(argv[2])
    flags = dict(a.lstrip("-").split("=", 1) for a in argv[3:] if "=" in a)
    if "--multihost" in argv:
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            flags["coordinator_address"], int(flags["num_processes"]), int(flags["process_id"])
        )
    result = measure(devices, size, repeats)
    if "--multihost" not in argv or flags["process_id"] == "0":
        print(json.dumps(result), flush=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == WORKER:
        worker_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    full = run_worker(1, "full", args.repeats)
    print(full, flush=True)
    scaling = []
    for devices in (1, 2, 4, 8):
        scaling.append(run_worker(devices, "small", args.repeats + 2))
        print(scaling[-1], flush=True)
    lines = [
        "# Training step",
        "",
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPU cores. "
        f"Median of {args.repeats} repeats (scaling: {args.repeats + 2}).",
        "",
        "## Step overhead: NCSN++ CIFAR-10 size (62.8M parameters), batch 2, 1 device",
        "",
        "| train_step (s) | grad of the loss alone (s) | ratio |",
        "|---|---|---|",
        f"| {full['step_s']:.3f} | {full['grad_s']:.3f} | {full['step_s'] / full['grad_s']:.3f} |",
        "",
        "## Scaling over simulated CPU devices: small NCSN++ (nf 32), global batch 16",
        "",
        "| devices | step (s) | relative to 1 device |",
        "|---|---|---|",
    ]
    base = scaling[0]["step_s"]
    lines += [f"| {r['devices']} | {r['step_s']:.3f} | {r['step_s'] / base:.2f} |" for r in scaling]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
