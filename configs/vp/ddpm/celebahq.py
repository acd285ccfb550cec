"""sde-jax train --config=configs/vp/ddpm/celebahq.py --workdir=WORKDIR

The DDPM baseline (Ho et al., 2020) on CelebA-HQ (an image folder) 256x256: the DDPM network with 6
resolutions, discrete VP training (1000 steps), ancestral sampling, lr 2e-5.

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = f.vp(f.high_res(f.base(), "folder", 256, sigma_max=378), continuous=False)
    config = f.ddpm_256(config)
    return f.finish(config, variant)
