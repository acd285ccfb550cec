"""sde-jax train --config=configs/ve/ffhq_256_ncsnpp_continuous.py --workdir=WORKDIR

NCSN++ with the VE SDE on FFHQ 256x256 (sigma_max 348), continuous training.

Images come from an image folder: set ``data.data_dir``.

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = f.high_res(f.base(), "folder", 256, sigma_max=348)
    return f.finish(f.ncsnpp_256(f.ve(config)), variant)
