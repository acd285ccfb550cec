"""sde-jax train --config=configs/vp/ddpm/cifar10_unconditional.py --workdir=WORKDIR

The DDPM network (Ho et al., 2020) without time conditioning on CIFAR-10: discrete VP
training (1000 steps), ancestral sampling.

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = f.ddpm(f.vp(f.base(), continuous=False))
    config.model.conditional = False
    return f.finish(config, variant)
