"""sde-jax train --config=configs/ve/cifar10_ddpm.py --workdir=WORKDIR

The DDPM network (Ho et al., 2020) trained with the discrete SMLD loss of the VE SDE on
CIFAR-10 (1000 noise scales), its output divided by sigma; reverse diffusion + Langevin.

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = f.ddpm(f.ve(f.base(), continuous=False))
    config.model.scale_by_sigma = True
    return f.finish(config, variant)
