"""sde-jax train --config=configs/ve/bedroom_ncsnpp_continuous.py --workdir=WORKDIR

NCSN++ with the VE SDE on LSUN bedroom 256x256 (sigma_max 378, the original's LSUN
default; church uses 380), continuous training.

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = f.high_res(f.base(), "lsun/bedroom", 256, sigma_max=378)
    return f.finish(f.ncsnpp_256(f.ve(config)), variant)
