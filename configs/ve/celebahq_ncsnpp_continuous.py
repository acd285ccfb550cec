"""sde-jax train --config=configs/ve/celebahq_ncsnpp_continuous.py --workdir=WORKDIR

NCSN++ with the VE SDE on CelebA-HQ 1024x1024 (sigma_max 1348, N 2000, snr 0.15),
continuous training.

Images come from an image folder: set ``data.data_dir``.

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = f.high_res(f.base(), "folder", 1024, sigma_max=1348)
    return f.finish(f.ncsnpp_1024(f.ve(config)), variant)
