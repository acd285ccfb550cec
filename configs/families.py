"""Settings shared by the experiment configs: SDE families, networks, data sets, variants.

Every experiment file is ``default.get_default_config()`` passed through a few of these
functions; each function overrides existing keys only (it never adds one), so every config
has exactly the keys of ``configs/default.py``. Values are the paper's (Song et al., ICLR
2021) and its original config files'.
"""

import math

import ml_collections

from configs import default

VARIANTS = ("", "smoke")
"""Valid ``variant`` arguments of every ``get_config``; see ``configs/__init__.py``."""

Config = ml_collections.ConfigDict


def base() -> Config:
    """The schema with the CIFAR-10 defaults (``configs/default.py``)."""
    return default.get_default_config()


# SDE families -------------------------------------------------------------------------------


def ve(config: Config, *, continuous: bool = True) -> Config:
    """VE SDE: reverse diffusion + Langevin sampling, summed loss, EMA 0.999."""
    config.sde.name = "vesde"
    config.training.continuous = continuous
    config.training.reduce_mean = False
    config.data.centered = False
    config.model.ema_rate = 0.999
    config.sampling.method = "pc"
    config.sampling.predictor = "reverse_diffusion"
    config.sampling.corrector = "langevin"
    return config


def vp(config: Config, *, continuous: bool = True, sub: bool = False) -> Config:
    """VP (or sub-VP) SDE: centered data, mean loss, EMA 0.9999, no corrector.

    Continuous training samples with Euler-Maruyama, discrete (DDPM) training with ancestral
    sampling. The original had no discrete sub-VP configs.
    """
    if sub and not continuous:
        raise ValueError("sub-VP has no discrete counterpart; got sub=True, continuous=False.")
    config.sde.name = "subvpsde" if sub else "vpsde"
    config.training.continuous = continuous
    config.training.reduce_mean = True
    config.data.centered = True
    config.model.ema_rate = 0.9999
    config.sampling.method = "pc"
    config.sampling.predictor = "euler_maruyama" if continuous else "ancestral_sampling"
    config.sampling.corrector = "none"
    return config


# Networks -----------------------------------------------------------------------------------


def ncsnpp(config: Config, *, deep: bool = False) -> Config:
    """NCSN++ at 32x32: FIR, residual input pyramid, 4 (deep: 8) blocks per resolution.

    Call it after ``ve`` or ``vp``: the embedding and the output scaling follow the SDE. VE
    configs divide the output by sigma; continuous VE training embeds log sigma with
    Fourier features, every other case (discrete training, VP, sub-VP) embeds the time
    label positionally, as the original configs did.
    """
    model = config.model
    model.name = "ncsnpp"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 8 if deep else 4
    model.attn_resolutions = (16,)
    model.fir = True
    model.resblock_type = "biggan"
    model.progressive = "none"
    model.progressive_input = "residual"
    model.progressive_combine = "sum"
    is_ve = config.sde.name == "vesde"
    model.scale_by_sigma = is_ve
    continuous_ve = is_ve and config.training.continuous
    model.embedding_type = "fourier" if continuous_ve else "positional"
    if deep:
        config.training.n_iters = 950_001
    return config


def ddpmpp(config: Config, *, deep: bool = False) -> Config:
    """DDPM++ at 32x32: NCSN++'s skeleton without FIR or pyramids, positional embedding."""
    ncsnpp(config, deep=deep)
    model = config.model
    model.fir = False
    model.progressive_input = "none"
    model.embedding_type = "positional"
    model.scale_by_sigma = False
    return config


def ddpm(config: Config) -> Config:
    """The DDPM baseline network (Ho et al., 2020): 2 blocks per resolution, 35.2M params."""
    model = config.model
    model.name = "ddpm"
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    model.scale_by_sigma = False
    return config


def ncsnpp_256(config: Config) -> Config:
    """NCSN++ at 256x256: 7 resolutions, 2 blocks each, output_skip / input_skip pyramids."""
    ncsnpp(config)
    model = config.model
    model.ch_mult = (1, 1, 2, 2, 2, 2, 2)
    model.num_res_blocks = 2
    model.progressive = "output_skip"
    model.progressive_input = "input_skip"
    model.dropout = 0.0
    return config


def ncsnpp_1024(config: Config) -> Config:
    """NCSN++ at 1024x1024: nf 16, 8 resolutions (widths 16 ... 512), 1 block each."""
    ncsnpp_256(config)
    model = config.model
    model.nf = 16
    model.ch_mult = (1, 2, 4, 8, 16, 32, 32, 32)
    model.num_res_blocks = 1
    model.ema_rate = 0.9999
    return config


# Data sets ----------------------------------------------------------------------------------


def celeba_64(config: Config) -> Config:
    """CelebA at 64x64 (TFDS ``celeb_a``): sigma_max 90, snr 0.17."""
    config.data.dataset = "celeb_a"
    config.data.image_size = 64
    config.sde.sigma_max = 90.0
    config.sampling.snr = 0.17
    return config


def high_res(config: Config, dataset: str, image_size: int, sigma_max: float) -> Config:
    """256x256 and 1024x1024 data (LSUN, CelebA-HQ, FFHQ): the original's LSUN defaults.

    2.4M steps, N = 2000 noise scales (training table and sampling steps), a preemption
    checkpoint every 5k steps; batch 64 and snr 0.075 at 256px, batch 8 and snr 0.15 at
    1024px.
    """
    config.data.dataset = dataset
    config.data.image_size = image_size
    if dataset.startswith("lsun/"):
        config.data.eval_split = "validation"  # TFDS LSUN has no test split
    config.sde.sigma_max = float(sigma_max)
    config.sde.num_scales = 2000
    config.sampling.num_steps = 2000
    config.sampling.snr = 0.15 if image_size >= 1024 else 0.075
    config.training.batch_size = 8 if image_size >= 1024 else 64
    config.training.n_iters = 2_400_001
    config.training.snapshot_freq_for_preemption = 5000
    return config


# Variants -----------------------------------------------------------------------------------


def _uses_beta_table(config: Config) -> bool:
    """Whether the config's sampler takes discrete DDPM steps (their beta_i must be < 1)."""
    s = config.sampling
    if s.method != "pc" or config.sde.name not in ("vpsde", "subvpsde"):
        return False
    vp_predictor = config.sde.name == "vpsde" and s.predictor in (
        "reverse_diffusion",
        "ancestral_sampling",
    )
    return vp_predictor or s.corrector in ("langevin", "ald")


def smoke(config: Config) -> Config:
    """Shrinks a config to run on CPU in seconds; the family settings stay as they are.

    Tiny network (nf 16, ch_mult (1, 2), 1 block, attention at the lowest resolution,
    dropout 0) on 16x16 images, batch 8, 3 steps, 8 sampling steps of one corrector step
    each. The DDPM baseline keeps nf 32 (its GroupNorm has 32 groups everywhere). Samplers
    with the discrete VP steps (:func:`_uses_beta_table`) get ``floor(beta_max) + 1`` steps
    instead (21 for the paper's beta_max 20): with fewer, a DDPM noise level beta_max / N
    reaches 1 and the sampler refuses the grid (``sde_jax.steppers.validity``).
    """
    model, data, training = config.model, config.data, config.training
    model.nf = 32 if model.name == "ddpm" else 16
    model.ch_mult = (1, 2)
    model.num_res_blocks = 1
    data.image_size = 16
    model.attn_resolutions = (data.image_size // 2 ** (len(model.ch_mult) - 1),)
    model.dropout = 0.0
    training.batch_size = 8
    training.n_iters = 3
    training.log_freq = 1
    training.eval_freq = 2
    training.snapshot_freq = 2
    training.snapshot_freq_for_preemption = 1
    training.sample_batch_size = 8
    config.optim.warmup = 2
    config.sampling.num_steps = 8
    config.sampling.n_steps_each = 1  # NCSN's 100 Langevin steps per level: 800 evaluations
    if _uses_beta_table(config):
        config.sampling.num_steps = math.floor(config.sde.beta_max) + 1
    config.eval.batch_size = 8
    config.eval.num_samples = 8
    config.eval.bpd_repeats = 1
    return config


def finish(config: Config, variant: str) -> Config:
    """Applies ``variant`` ('' for the full experiment, 'smoke' for the CPU-sized one).

    Raises:
      ValueError: for any other variant name.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    if variant == "smoke":
        smoke(config)
    return config


# The NCSN baselines and the high-resolution DDPM (appended: used by ve/ncsn, ve/ncsnv2 and
# vp/ddpm) ------------------------------------------------------------------------------------


def ncsn(config: Config, *, name: str, num_scales: int, sigma_max: float) -> Config:
    """NCSN (``name='ncsn'``) or NCSNv2 (``'ncsnv2_64'``, ``'_128'``): discrete VE, ALD.

    The original's settings for both: nf 128, ELU, annealed Langevin dynamics without a
    predictor, ``num_scales`` sigmas (sampling visits each), Adam without warmup or gradient
    clipping. NCSNv2 divides its output by sigma, NCSN does not; NCSNv2 trains at lr 1e-4,
    NCSN at 1e-3. Set ``n_steps_each``, ``snr`` and ``ema_rate`` afterwards.
    """
    ve(config, continuous=False)
    model = config.model
    model.name = name
    model.nf = 128
    model.nonlinearity = "elu"
    model.scale_by_sigma = name != "ncsn"
    config.sde.sigma_max = float(sigma_max)
    config.sde.num_scales = num_scales
    config.sampling.num_steps = num_scales
    config.sampling.predictor = "none"
    config.sampling.corrector = "ald"
    config.optim.lr = 1e-3 if name == "ncsn" else 1e-4
    config.optim.warmup = 0
    config.optim.grad_clip = 0.0  # none (the original's -1)
    return config


def ddpm_256(config: Config) -> Config:
    """The DDPM network at 256x256 (LSUN, CelebA-HQ): 6 resolutions, 111.6M params, lr 2e-5.

    Call it after ``high_res`` and ``vp``: the discrete DDPM chain keeps 1000 steps.
    """
    ddpm(config)
    config.model.ch_mult = (1, 1, 2, 2, 4, 4)
    config.sde.num_scales = 1000
    config.sampling.num_steps = 1000
    config.optim.lr = 2e-5
    return config
