"""Train-step cost against the bare forward+backward, and scaling over simulated devices.

    python benchmarks/training.py [--out benchmarks/training.md]

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


def measure(devices: int, full_size: bool, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from configs import default
    from sde_jax import builders, losses
    from sde_jax.models import presets
    from sde_jax.training import sharding
    from sde_jax.training.state import create_state
    from sde_jax.training.step import network_score_fn, train_step

    sde = builders.build_sde(default.get_default_config().sde)
    if full_size:
        model, batch = presets.ncsnpp_cifar10(dropout=0.0), 2
    else:
        small = {"nf": 32, "ch_mult": (1, 2, 2), "num_res_blocks": 1, "attn_resolutions": (8,)}
        model, batch = presets.ncsnpp_cifar10(dropout=0.0, **small), 16
    tx = builders.build_optimizer(default.get_default_config().optim)
    loss_fn = losses.get_loss_fn(sde)
    mesh = sharding.make_mesh(None, 1)

    def init():
        params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), jnp.ones(1))["params"]
        return create_state(params, tx, jax.random.key(1))

    shardings = sharding.state_shardings(jax.eval_shape(init), mesh)
    state = jax.jit(init, out_shardings=shardings)()
    kw = {"continuous": True, "num_scales": 1000}
    step = jax.jit(
        functools.partial(
            train_step, model=model, sde=sde, loss_fn=loss_fn, tx=tx, ema_rate=0.999, **kw
        ),
        in_shardings=(shardings, sharding.batch_sharding(mesh)),
        out_shardings=(shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )

    def loss(params, x):
        score_fn = network_score_fn(model, sde, params, **kw)
        return loss_fn(jax.random.key(2), score_fn, x).loss

    grad = jax.jit(jax.grad(loss))
    x = np.random.default_rng(0).random((batch, 32, 32, 3), np.float32)
    images = sharding.global_batch({"image": x}, sharding.batch_sharding(mesh))
    state, _ = jax.block_until_ready(step(state, images))
    jax.block_until_ready(grad(state.params, images["image"]))
    step_times, grad_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        state, _ = jax.block_until_ready(step(state, images))
        step_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        jax.block_until_ready(grad(state.params, images["image"]))
        grad_times.append(time.perf_counter() - start)
    return {
        "devices": devices,
        "batch": batch,
        "step_s": float(np.median(step_times)),
        "grad_s": float(np.median(grad_times)),
    }


def run_worker(devices: int, full_size: bool, repeats: int) -> dict:
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "PYTHONPATH": os.getcwd(),
    }
    args = [sys.executable, __file__, WORKER, str(devices), str(int(full_size)), str(repeats)]
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    if len(sys.argv) > 1 and sys.argv[1] == WORKER:
        devices, full_size, repeats = map(int, sys.argv[2:5])
        print(json.dumps(measure(devices, bool(full_size), repeats)))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    full = run_worker(1, True, args.repeats)
    print(full, flush=True)
    scaling = []
    for devices in (1, 2, 4, 8):
        scaling.append(run_worker(devices, False, args.repeats + 2))
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
