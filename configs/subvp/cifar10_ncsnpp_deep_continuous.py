"""sde-jax train --config=configs/subvp/cifar10_ncsnpp_deep_continuous.py --workdir=WORKDIR

Deep NCSN++ (8 blocks per resolution, 950k steps) with the sub-VP SDE on CIFAR-10,
continuous training.

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    return f.finish(f.ncsnpp(f.vp(f.base(), sub=True), deep=True), variant)
