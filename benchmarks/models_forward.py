"""Forward (and training-gradient) time and peak memory of NCSN++ at CIFAR-10 size.

Usage: ``PYTHONPATH=. python benchmarks/models_forward.py [--batch 8] [--repeats 5] [--no-grad]``

For float32 / bfloat16 compute and remat off / on, on the default device: the compile time,
the median wall time of a jitted forward pass (``train=False``) and of a jitted
``value_and_grad`` of a mean-squared loss (``train=True``, dropout on), XLA's memory
analysis of each compiled program (temporaries, and arguments + outputs + temporaries: the
peak the program needs), and the activations the gradient saves for the backward pass as JAX
traces it (``jax.ad_checkpoint.print_saved_residuals``, parameters and inputs excluded): the
memory remat trades for recomputation before XLA's own scheduling. Prints a markdown table.
"""

import argparse
import contextlib
import io
import os
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import print_saved_residuals

from sde_jax.models import presets

MiB = 2**20


def _memory(compiled):
    stats = compiled.memory_analysis()
    temp = stats.temp_size_in_bytes
    total = stats.argument_size_in_bytes + stats.output_size_in_bytes + temp
    return temp / MiB, total / MiB


_ITEMSIZE = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "bool": 1, "f64": 8}


def _saved_activations_mib(fn, *args):
    """Bytes of the residuals ``jax.grad(fn)`` saves, less arguments (parameters, inputs)."""
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        print_saved_residuals(fn, *args)
    total = 0
    for line in text.getvalue().splitlines():
        match = re.match(r"(\w+)\[([\d,]*)\]", line)
        if match and "argument" not in line:
            shape = [int(d) for d in match.group(2).split(",") if d]
            total += _ITEMSIZE.get(match.group(1), 4) * int(np.prod(shape))
    return total / MiB


def _time(fn, args, repeats):
    jax.block_until_ready(fn(*args))  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _model_and_inputs(dtype, remat, batch, model_kwargs):
    model = presets.ncsnpp_cifar10(dtype=dtype, remat=remat, **(model_kwargs or {}))
    x = jax.random.uniform(jax.random.key(0), (batch, 32, 32, 3))
    sigmas = jnp.geomspace(0.01, 50.0, batch)
    return model, x, sigmas


def _mse_loss(model):
    def loss(p, x, s):
        out = model.apply(p, x, s, train=True, rngs={"dropout": jax.random.key(2)})
        return jnp.mean((out * s[:, None, None, None] + x) ** 2)

    return loss


def grad_memory(dtype, remat, batch, model_kwargs=None):
    """XLA's memory analysis of the compiled gradient, and the residuals JAX saves; no run.

    Args:
      dtype: the compute dtype (``jnp.float32`` or ``jnp.bfloat16``).
      remat: rematerialize the residual blocks.
      batch: images of 32x32x3.
      model_kwargs: NCSN++ preset overrides (default: CIFAR-10 size).

    Returns:
      ``{'saved activations MiB', 'grad temp MiB', 'grad peak MiB', 'compile s'}``.
    """
    model, x, sigmas = _model_and_inputs(dtype, remat, batch, model_kwargs)
    params = jax.eval_shape(lambda: model.init(jax.random.key(1), x[:1], sigmas[:1], train=False))
    params = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), params)
    loss = _mse_loss(model)
    row = {"saved activations MiB": _saved_activations_mib(loss, params, x, sigmas)}
    start = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(loss)).lower(params, x, sigmas).compile()
    row["compile s"] = time.perf_counter() - start
    row["grad temp MiB"], row["grad peak MiB"] = _memory(compiled)
    return row


def measure(dtype, remat, batch, repeats, grad, model_kwargs=None):
    model, x, sigmas = _model_and_inputs(dtype, remat, batch, model_kwargs)
    params = jax.jit(lambda: model.init(jax.random.key(1), x[:1], sigmas[:1], train=False))()
    row = {}

    def forward(p, x, s):
        return model.apply(p, x, s, train=False)

    start = time.perf_counter()
    compiled = jax.jit(forward).lower(params, x, sigmas).compile()
    row["fwd compile s"] = time.perf_counter() - start
    row["fwd ms"] = _time(compiled, (params, x, sigmas), repeats)
    row["fwd temp MiB"], row["fwd peak MiB"] = _memory(compiled)
    if grad:
        loss = _mse_loss(model)
        row["saved activations MiB"] = _saved_activations_mib(loss, params, x, sigmas)
        start = time.perf_counter()
        compiled = jax.jit(jax.value_and_grad(loss)).lower(params, x, sigmas).compile()
        row["grad compile s"] = time.perf_counter() - start
        row["grad ms"] = _time(compiled, (params, x, sigmas), repeats)
        row["grad temp MiB"], row["grad peak MiB"] = _memory(compiled)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-grad", dest="grad", action="store_false")
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f"NCSN++ CIFAR-10 (62,758,915 params), batch {args.batch}, 32x32, on {device}")
    print(f"jax {jax.__version__}; median of {args.repeats} runs after one warm-up")
    print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    header = None
    for dtype in (jnp.float32, jnp.bfloat16):
        for remat in (False, True):
            row = measure(dtype, remat, args.batch, args.repeats, args.grad)
            if header is None:
                header = list(row)
                print("| dtype | remat | " + " | ".join(header) + " |")
                print("|---|---|" + "---|" * len(header))
            cells = " | ".join(f"{row[k]:.1f}" for k in header)
            print(f"| {jnp.dtype(dtype).name} | {remat} | {cells} |", flush=True)
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
