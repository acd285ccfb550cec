"""sde-jax train --config=configs/ve/cifar10_ncsnpp.py --workdir=WORKDIR

NCSN++ with the VE SDE on CIFAR-10, discrete SMLD training (1000 noise scales; the
network embeds the scale index positionally).

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    return f.finish(f.ncsnpp(f.ve(f.base(), continuous=False)), variant)
