"""sde-jax train --config=configs/ve/ncsnv2/bedroom.py --workdir=WORKDIR

NCSNv2-128 (Song & Ermon, 2020) on LSUN bedroom 128x128: 1086 sigmas from 190 to 0.01,
discrete SMLD training, annealed Langevin sampling (3 steps each, snr 0.095), EMA 0.9999,
batch 128. (The original file sets ``training.continuouse``, a typo that leaves continuous
training on, which its NCSNv2 cannot run; discrete training is what it meant.)

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = f.high_res(f.base(), "lsun/bedroom", 128, sigma_max=190)
    config = f.ncsn(config, name="ncsnv2_128", num_scales=1086, sigma_max=190.0)
    config.sampling.n_steps_each = 3
    config.sampling.snr = 0.095
    config.model.ema_rate = 0.9999
    config.training.batch_size = 128
    return f.finish(config, variant)
