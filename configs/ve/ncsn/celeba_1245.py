"""sde-jax train --config=configs/ve/ncsn/celeba_1245.py --workdir=WORKDIR

NCSN v1 (Song & Ermon, 2019) on CelebA 64x64: discrete SMLD training, annealed Langevin
sampling; NCSNv2's techniques 1, 2, 4 and 5: 500 sigmas from 90 to 0.01, 5 Langevin steps
each, EMA 0.999.

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = f.ncsn(f.celeba_64(f.base()), name="ncsn", num_scales=500, sigma_max=90.0)
    config.sampling.n_steps_each = 5
    config.sampling.snr = 0.128
    config.model.ema_rate = 0.999
    return f.finish(config, variant)
