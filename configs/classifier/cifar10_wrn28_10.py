"""sde-jax train --config=configs/classifier/cifar10_wrn28_10.py --workdir=WORKDIR

The noise-conditional classifier of class-conditional sampling (Song et al., ICLR 2021,
appendix I.1): a Wide-ResNet-28-10 conditioned on Fourier features of log sigma, trained with
cross-entropy on CIFAR-10 images perturbed by the VE SDE of the CIFAR-10 NCSN++ run
(``ve/cifar10_ncsnpp_continuous``: sigma from 0.01 to 50, ``t ~ U(1e-5, 1)``), so it guides
that score model. Eval reports the accuracy on noisy test images at random times and at five
fixed ones (``eval_accuracy/t=...``).

The original shipped no training code, so the optimizer is our choice: AdamW (lr 3e-4,
betas 0.9 / 0.999, decoupled weight decay 0.05, i.e. 1.5e-5 per step), 1000 warmup steps,
gradient clipping at global norm 1, batch 128, 200k steps (~510 epochs; the random noise
level of every example is a strong augmentation, the decay keeps the low-noise end from
overfitting), EMA 0.999 of the weights for evaluation and guidance. No dropout (the
original WRN setting for CIFAR without it; noise already regularizes).

Append ``:smoke`` to the config path for the CPU-sized variant (WRN-10-1 on 16x16 images).
"""

import ml_collections

from configs import families as f


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = f.ve(f.base())  # the SDE (and data scaling) of ve/cifar10_ncsnpp_continuous
    config.training.task = "classifier"
    config.training.n_iters = 200_001
    config.training.snapshot_freq = 10_000
    config.training.eval_freq = 1000
    config.training.snapshot_sampling = False
    model = config.model
    model.name = "wideresnet"
    model.depth = 28
    model.widen_factor = 10
    model.num_classes = 10
    model.dropout = 0.0
    model.fourier_scale = 16.0
    model.ema_rate = 0.999
    optim = config.optim
    optim.optimizer = "adamw"
    optim.lr = 3e-4
    optim.weight_decay = 0.05
    optim.warmup = 1000
    optim.grad_clip = 1.0
    config = f.finish(config, variant)
    if variant == "smoke":
        model.depth = 10
        model.widen_factor = 1
    return config
