"""sde-jax train --config=configs/ve/ncsn/celeba_5.py --workdir=WORKDIR

NCSN v1 (Song & Ermon, 2019) on CelebA 64x64: discrete SMLD training, annealed Langevin
sampling; 10 sigmas from 1 to 0.01, 100 Langevin steps each, with EMA 0.999 (technique 5).

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = f.ncsn(f.celeba_64(f.base()), name="ncsn", num_scales=10, sigma_max=1.0)
    config.sampling.n_steps_each = 100
    config.sampling.snr = 0.316
    config.model.ema_rate = 0.999
    return f.finish(config, variant)
