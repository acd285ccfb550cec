"""sde-jax train --config=configs/vp/cifar10_ddpmpp.py --workdir=WORKDIR

DDPM++ with the VP SDE on CIFAR-10, discrete DDPM training (1000 steps, ancestral
sampling).

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    return f.finish(f.ddpmpp(f.vp(f.base(), continuous=False)), variant)
