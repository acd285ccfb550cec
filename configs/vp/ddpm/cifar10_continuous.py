"""sde-jax train --config=configs/vp/ddpm/cifar10_continuous.py --workdir=WORKDIR

The DDPM network (Ho et al., 2020) with the VP SDE on CIFAR-10, continuous training.

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    return f.finish(f.ddpm(f.vp(f.base())), variant)
