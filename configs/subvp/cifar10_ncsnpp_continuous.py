"""sde-jax train --config=configs/subvp/cifar10_ncsnpp_continuous.py --workdir=WORKDIR

NCSN++ with the sub-VP SDE on CIFAR-10, continuous training.

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    return f.finish(f.ncsnpp(f.vp(f.base(), sub=True)), variant)
