"""One train step and one eval step of each config family's smoke variant, on mock TFDS data."""

import importlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from sde_jax.training import loop

FAMILIES = [
    "ve.cifar10_ncsnpp_continuous",  # VE, continuous DSM, NCSN++ with FIR
    "ve.cifar10_ncsnpp",  # VE, discrete SMLD loss, sigma-table conditioning
    "vp.cifar10_ddpmpp_continuous",  # VP, continuous DSM, DDPM++
    "vp.cifar10_ddpmpp",  # VP, discrete DDPM loss
    "vp.ddpm.cifar10",  # the DDPM baseline network
    "subvp.cifar10_ddpmpp_continuous",  # sub-VP
    "ve.celeba_ncsnpp",  # CelebA 64 pipeline (center crop 140)
    "ve.bedroom_ncsnpp_continuous",  # LSUN 256 family
]


@pytest.mark.parametrize("name", FAMILIES)
def test_smoke_variant_trains_and_evaluates(name, tmp_path):
    config = importlib.import_module(f"configs.{name}").get_config("smoke")
    config.training.update(n_iters=1, eval_freq=1, log_freq=1, snapshot_sampling=False)
    with tfds.testing.mock_data(num_examples=16, data_dir=str(tmp_path / "tfds")):
        config.data.data_dir = str(tmp_path / "tfds")
        state = loop.train(config, str(tmp_path / "work"))
    assert int(state.step) == 1
    loss_leaves = [np.asarray(x) for x in (state.params, state.ema_params)]
    assert loss_leaves  # the step ran; the loop raises on a non-finite loss
