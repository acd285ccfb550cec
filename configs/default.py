"""Defaults shared by every experiment config; each experiment file overrides a few values.

Sections: ``data``, ``sde``, ``model``, ``optim``, ``training``, ``sampling``, ``eval``,
``mesh``. Key names follow the original score_sde configs where the concept is the same
(``training.n_iters``, ``training.snapshot_freq``, ``model.nf`` ...); the SDE has its own
section instead of living in ``training.sde`` and ``model.sigma_min``.
"""

import ml_collections


def get_default_config() -> ml_collections.ConfigDict:
    """The CIFAR-10 defaults of the paper (appendix; score_sde ``default_cifar10_configs``)."""
    config = ml_collections.ConfigDict()
    config.seed = 42

    config.data = data = ml_collections.ConfigDict()
    data.dataset = "cifar10"  # see sde_jax.data.DATASETS
    data.data_dir = None  # TFDS data_dir (local or gs://); None: the TFDS default
    data.download = False  # never wait on the network unless asked
    data.image_size = 32
    data.num_channels = 3
    data.random_flip = True
    data.centered = False  # [-1, 1] when True, else [0, 1]
    data.uniform_dequantization = False
    data.train_split = "train"
    data.eval_split = "test"

    config.sde = sde = ml_collections.ConfigDict()
    sde.name = "vesde"  # 'vesde', 'vpsde', 'subvpsde'
    sde.sigma_min = 0.01
    sde.sigma_max = 50.0
    sde.beta_min = 0.1
    sde.beta_max = 20.0
    sde.num_scales = 1000  # N of the discrete losses and of discrete time conditioning

    config.model = model = ml_collections.ConfigDict()
    model.name = "ncsnpp"
    model.ema_rate = 0.999
    model.dropout = 0.1
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 4
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = True
    model.fir_kernel = (1, 3, 3, 1)
    model.skip_rescale = True
    model.resblock_type = "biggan"
    model.progressive = "none"
    model.progressive_input = "residual"
    model.progressive_combine = "sum"
    model.embedding_type = "fourier"
    model.fourier_scale = 16.0
    model.init_scale = 0.0
    model.scale_by_sigma = True
    model.nonlinearity = "swish"
    model.dtype = "float32"  # compute dtype: 'float32' or 'bfloat16'
    model.remat = False
    # Class-conditional score models (classifier-free guidance): None is unconditional; an
    # int adds a class embedding (with the null label num_classes) to the time embedding.
    # For model.name='wideresnet' (the noise-conditional classifier): the number of classes.
    model.num_classes = ml_collections.config_dict.placeholder(int)  # None; CLI-overridable
    model.depth = 28  # 'wideresnet' only: 6 n + 4 layers (WRN-28-10 in the paper)
    model.widen_factor = 10  # 'wideresnet' only: width multiplier k

    config.optim = optim = ml_collections.ConfigDict()
    optim.optimizer = "adam"
    optim.lr = 2e-4
    optim.beta1 = 0.9
    optim.beta2 = 0.999
    optim.eps = 1e-8
    optim.weight_decay = 0.0
    optim.warmup = 5000
    optim.grad_clip = 1.0

    config.training = training = ml_collections.ConfigDict()
    training.task = "score"  # 'score' (the score model) or 'classifier' (noisy-data classifier)
    training.label_dropout = 0.0  # class-conditional score models: P(label -> null label)
    training.batch_size = 128  # global, over all devices and hosts
    training.n_iters = 1_300_001
    training.continuous = True
    training.reduce_mean = False
    training.likelihood_weighting = False
    training.importance_sampling = False
    training.eps = 1e-5  # smallest training time
    training.n_jitted_steps = 1  # steps per compiled call (lax.scan)
    training.log_freq = 50
    training.eval_freq = 100
    training.snapshot_freq = 50_000
    training.snapshot_freq_for_preemption = 10_000
    training.max_to_keep = None  # periodic checkpoints kept; None keeps all
    training.snapshot_sampling = True
    training.sample_batch_size = 64  # images in the periodic sample grid
    training.profile = False  # capture a JAX profiler trace of a few steps into the workdir
    # Resume a workdir whose checkpoint was made with other data/sde/model settings (the
    # differing keys are logged); False refuses, naming them.
    training.allow_config_change = False

    config.sampling = sampling = ml_collections.ConfigDict()
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"
    sampling.snr = 0.16
    sampling.n_steps_each = 1
    sampling.noise_removal = True
    sampling.num_steps = 1000
    sampling.eps = None  # None: 1e-5 for VE, 1e-3 for VP and sub-VP
    sampling.rtol = 1e-5
    sampling.atol = 1e-5
    sampling.max_steps = 4096  # 'ode': the adaptive solver's step limit
    # The fast solvers (sde_jax.experiment.build.METHODS), settable from the command line, e.g.
    # --config.sampling.method=unipc --config.sampling.num_steps=10. None: the method's default.
    optional = ml_collections.config_dict.placeholder
    sampling.grid = optional(str)  # a name in sde_jax.grids.GRIDS
    sampling.rho = 7.0  # the Karras grid's exponent
    sampling.eta = optional(float)  # 'ddim' (default 0), SDE variants (default 1)
    sampling.s_noise = 1.0  # SDE variants and 'edm'
    sampling.order = optional(int)  # 'unipc', 'deis' (default 3)
    sampling.variant = "bh2"  # 'unipc': 'bh1' or 'bh2'
    sampling.s_churn = 0.0  # 'edm' (Karras et al. 2022, Algorithm 2)
    sampling.s_tmin = 0.0
    sampling.s_tmax = optional(float)  # None: no upper bound

    config.eval = evaluate = ml_collections.ConfigDict()
    evaluate.batch_size = 256
    evaluate.num_samples = 50_000
    evaluate.enable_bpd = False
    evaluate.bpd_repeats = 5
    evaluate.enable_sampling = True
    evaluate.enable_loss = True
    # Optional values default to typed placeholders (None) so the command line can set them.
    evaluate.begin_step = optional(int)  # sde-jax eval: first step of a range (None: newest)
    evaluate.end_step = optional(int)  # sde-jax eval: last step of a range (None: no bound)
    evaluate.bpd_on_train = False  # also bits/dim of data.train_split
    evaluate.bpd_max_examples = optional(int)  # bits/dim of the first examples; None: all
    # Sample quality (FID, IS, KID): the converted Inception weights (.npz written by
    # `sde-jax convert-inception`) and the data set's reference statistics (`sde-jax fid-stats`).
    # None skips them.
    evaluate.inception_path = optional(str)
    evaluate.reference_stats = optional(str)

    config.mesh = mesh = ml_collections.ConfigDict()
    mesh.data = None  # devices along the data-parallel axis; None: all that fsdp leaves
    mesh.fsdp = 1  # devices sharing each parameter (FSDP); 1: plain data parallelism
    return config
