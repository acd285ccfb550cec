"""sde-jax train --config=configs/ve/church_ncsnpp_continuous.py --workdir=WORKDIR

NCSN++ with the VE SDE on LSUN church_outdoor 256x256 (sigma_max 380), continuous
training.

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = f.high_res(f.base(), "lsun/church_outdoor", 256, sigma_max=380)
    return f.finish(f.ncsnpp_256(f.ve(config)), variant)
