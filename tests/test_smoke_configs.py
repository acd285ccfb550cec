"""Two train steps and eval steps of each config family's smoke variant, on mock TFDS data."""

import importlib

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from sde_jax.training import loop

# One config per family: SDE x loss x network. The CelebA and LSUN pipelines are covered by
# tests/test_data.py, and the VP continuous network is the sub-VP one.
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
    assert int(state.step) == 2  # the loop raises on a non-finite loss or eval failure
    changed = [
        not np.allclose(a, b)
        for a, b in zip(
            jax.tree.leaves(state.params), jax.tree.leaves(state.ema_params), strict=True
        )
    ]
    assert any(changed)  # the update moved the parameters away from their EMA
