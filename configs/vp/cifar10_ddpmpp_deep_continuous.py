"""sde-jax train --config=configs/vp/cifar10_ddpmpp_deep_continuous.py --workdir=WORKDIR

Deep DDPM++ (8 blocks per resolution, 950k steps) with the VP SDE on CIFAR-10,
continuous training (paper: FID 2.41, IS 9.68; 3.13 bits/dim).

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    return f.finish(f.ddpmpp(f.vp(f.base()), deep=True), variant)
