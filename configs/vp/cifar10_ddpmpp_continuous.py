"""sde-jax train --config=configs/vp/cifar10_ddpmpp_continuous.py --workdir=WORKDIR

DDPM++ with the VP SDE on CIFAR-10, continuous training (paper: FID 2.55, IS 9.58;
3.16 bits/dim).

Append ``:smoke`` to the config path for the CPU-sized variant (see ``configs/__init__.py``).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    return f.finish(f.ddpmpp(f.vp(f.base())), variant)
