"""sde-jax train --config=configs/vp/ddpm/cifar10.py --workdir=WORKDIR

The DDPM baseline (Ho et al., 2020) on CIFAR-10: the DDPM network, discrete VP training
(1000 steps), ancestral sampling.

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    return f.finish(f.ddpm(f.vp(f.base(), continuous=False)), variant)
