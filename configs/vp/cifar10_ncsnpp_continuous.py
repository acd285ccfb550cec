"""sde-jax train --config=configs/vp/cifar10_ncsnpp_continuous.py --workdir=WORKDIR

NCSN++ with the VP SDE on CIFAR-10, continuous training.

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    return f.finish(f.ncsnpp(f.vp(f.base())), variant)
