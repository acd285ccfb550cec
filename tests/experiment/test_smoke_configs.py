"""Two train steps and eval steps of each config family's smoke variant, on mock TFDS data."""

import importlib

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from sde_jax.experiment import Experiment
from sde_jax.training import loop

pytestmark = pytest.mark.slow  # each case trains and evaluates a network: 1-2 min on 2 cores

# One config per family: SDE x loss x network. The CelebA and LSUN pipelines are covered by
# tests/data/test_data.py, and the VP continuous network is the sub-VP one.
FAMILIES = [
    "ve.cifar10_ncsnpp_continuous",  # VE, continuous DSM, NCSN++ with FIR
    "ve.cifar10_ncsnpp",  # VE, discrete SMLD loss, sigma-table conditioning
    "vp.cifar10_ddpmpp",  # VP, discrete DDPM loss, DDPM++
    "vp.ddpm.cifar10",  # the DDPM baseline network
    "subvp.cifar10_ddpmpp_continuous",  # sub-VP, continuous DSM, DDPM++
    "classifier.cifar10_wrn28_10",  # the noise-conditional classifier, cross-entropy
]


@pytest.mark.parametrize("name", FAMILIES)
def test_smoke_variant_trains_and_evaluates(name, tmp_path):
    config = importlib.import_module(f"configs.{name}").get_config("smoke")
    # Two steps: the warmup schedule's learning rate is 0 at the first (as the original's).
    config.training.update(n_iters=2, eval_freq=1, log_freq=1, snapshot_sampling=False)
    with tfds.testing.mock_data(num_examples=16, data_dir=str(tmp_path / "tfds")):
        config.data.data_dir = str(tmp_path / "tfds")
        state = loop.train(config, str(tmp_path / "work"))
        initial = jax.jit(Experiment(config).init_state)().params
    assert int(state.step) == 2  # the loop raises on a non-finite loss or eval failure
    # Step 1's learning rate is 0, so it leaves the parameters at their initial value p0 (and
    # the EMA, r p0 + (1 - r) p0, there too); step 2 moves them to p and the EMA to
    # r p0 + (1 - r) p, so e - p = r (p0 - p) on every leaf (update_ema's relation). The
    # tolerance is float32 rounding of e and p: a few ulps of the values, not of the difference.
    rate = config.model.ema_rate
    moved = []
    for p0, p, e in zip(
        *(jax.tree.leaves(tree) for tree in (initial, state.params, state.ema_params)), strict=True
    ):
        p0, p, e = (np.asarray(a, np.float64) for a in (p0, p, e))
        ulps = 4 * np.finfo(np.float32).eps * (np.abs(p0) + np.abs(p)) + 1e-30
        np.testing.assert_array_less(np.abs((e - p) - rate * (p0 - p)), ulps)
        moved.append(bool(np.any(np.abs(p0 - p) > ulps)))
    assert any(moved)  # step 2 moved the parameters away from their EMA
