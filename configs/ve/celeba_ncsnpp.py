"""sde-jax train --config=configs/ve/celeba_ncsnpp.py --workdir=WORKDIR

NCSN++ with the VE SDE on CelebA 64x64 (sigma_max 90, snr 0.17), discrete SMLD training.

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    return f.finish(f.ncsnpp(f.ve(f.celeba_64(f.base()), continuous=False)), variant)
