"""One process of the two-process training test (tests/training/test_multihost.py).

    python tests/multihost_worker.py OUT.npz --multihost --coordinator_address=127.0.0.1:P \
        --num_processes=2 --process_id=I

Joins the job with jax.distributed (CPU collectives over gloo), runs the train steps of
tests/training/test_training.py on a mesh over every process's devices, each process feeding
only its own rows of each global batch, and (process 0) saves the losses and parameters.
"""

import argparse
import os
import sys

import jax
import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--multihost", action="store_true")
    parser.add_argument("--coordinator_address")
    parser.add_argument("--num_processes", type=int)
    parser.add_argument("--process_id", type=int)
    args = parser.parse_args()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
    sys.path.insert(0, os.getcwd())
    from sde_jax import sharding
    from tests.training import test_training

    mesh = sharding.make_mesh(None, 1)
    state, step, _ = test_training.setup_step(mesh)
    batch_sharding = sharding.batch_sharding(mesh, 1)
    rows = test_training.SHAPE[0] // jax.process_count()
    mine = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
    losses = []
    for batch in test_training.BATCHES:
        local = {"image": batch[None, mine]}
        state, metrics = step(state, sharding.global_batch(local, batch_sharding))
        jax.block_until_ready(state)
        losses.append(np.asarray(metrics["loss"].addressable_data(0)))
    if jax.process_index() == 0:
        leaves = [np.asarray(x.addressable_data(0)) for x in jax.tree.leaves(state.params)]
        arrays = {f"arr_{i}": leaf for i, leaf in enumerate(leaves)}
        np.savez(args.out, losses=np.concatenate(losses), **arrays)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
