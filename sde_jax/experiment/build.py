"""Where config sections become objects: the one module at the edge that reads configs.

SDEs, models (:func:`build_model`: the one place models meet configs; the networks take no SDE
parameter, :func:`score_kwargs` gives the score wrapper's), optimizers, and the sampling section:
:func:`get_sampler` turns the original score_sde's sampling keys (method, predictor,
corrector, ...) into the objects of :mod:`sde_jax.sampling` (a stepper, a grid, a final step),
and the ``*_from_config`` functions do the same for the controllable builders of
:mod:`sde_jax.controllable`, which themselves take objects. The library below this module
never sees a config; the CLI, training and evaluation call these.
"""

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from sde_jax import controllable, grids, ode, sampling, validation
from sde_jax.experiment.tasks import ClassifierTask, ScoreTask, Task
from sde_jax.losses import get_loss_fn
from sde_jax.models.ddpm import DDPM
from sde_jax.models.ncsnpp import NCSNpp
from sde_jax.models.ncsnv2 import NCSN, NCSNv2
from sde_jax.models.wideresnet import WideResNet
from sde_jax.sdes import EDMSDE, SDE, VESDE, VPSDE, CosineVPSDE, SubVPSDE
from sde_jax.steppers import (
    DDIM,
    DEIS,
    IPNDM,
    AncestralSampling,
    AnnealedLangevin,
    DPMSolverPP2M,
    DPMSolverPP2MSDE,
    DPMSolverPP2S,
    DPMSolverPP3M,
    DPMSolverPP3MSDE,
    DPMSolverPP3S,
    EDMHeun,
    EDMStochastic,
    EulerMaruyama,
    Langevin,
    NoCorrector,
    NoPredictor,
    PredictorCorrector,
    ProbabilityFlow,
    ReverseDiffusion,
    UniPC,
)

SDES: dict[str, type[SDE]] = {
    "vesde": VESDE,
    "vpsde": VPSDE,
    "subvpsde": SubVPSDE,
    "cosinevpsde": CosineVPSDE,
    "edmsde": EDMSDE,
}
"""SDE classes by the original's ``training.sde`` names, and the two added here."""


def build_sde(section: Mapping[str, Any]) -> SDE:
    """Builds the SDE of a config's ``sde`` section (``name`` and its parameters).

    The parameters are the SDE's own fields found in the section (``sigma_min`` and
    ``sigma_max`` for VE and EDM, ``beta_min`` and ``beta_max`` for VP and sub-VP, ``offset``
    and ``t_max`` for cosine VP); a field the section lacks keeps the SDE's default.

    Raises:
      ValueError: for an unknown ``sde.name`` (listing the valid ones) or invalid parameters.
    """
    name = section["name"]
    if not isinstance(name, str) or name.lower() not in SDES:  # names are case-insensitive
        validation.choice("sde.name", name, SDES, sort=True)
    cls = SDES[name.lower()]
    fields = [field.name for field in dataclasses.fields(cls)]
    return cls(**{key: section[key] for key in fields if key in section})


# --------------------------------------------------------------------------------------------
# The model section: the original's key names to a Flax module.

MODELS: dict[str, tuple[type[nn.Module], dict[str, Any]]] = {
    "ncsnpp": (NCSNpp, {}),
    "ddpm": (DDPM, {}),
    "ncsnv2_64": (NCSNv2, {"variant": 64}),
    "ncsnv2_128": (NCSNv2, {"variant": 128}),
    "ncsnv2_256": (NCSNv2, {"variant": 256}),
    "ncsn": (NCSN, {}),
    "wideresnet": (WideResNet, {}),
}
"""Architectures by the original ``model.name``: the class and the fields the name fixes."""

SCALE_BY_SIGMA: dict[str, bool] = {
    "ncsnpp": True,
    "ddpm": False,
    "ncsnv2_64": True,
    "ncsnv2_128": True,
    "ncsnv2_256": True,
    "ncsn": False,
    "wideresnet": False,
}
"""``model.scale_by_sigma`` of a section that leaves it out, per ``model.name``: the defaults
the networks had when they divided by sigma themselves (the score wrapper does it now)."""

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
"""Compute dtypes of ``model.dtype``."""

OLDER_CONFIG_DEFAULTS: dict[str, Any] = {
    "model.dtype": "float32",
    "model.remat": False,
    "optim.beta2": 0.999,
}
"""Values for the keys that configs written before they existed lack; each equals the value
configs/default.py sets (tests/experiment/test_configs.py checks it). Every other key is read
from the config as it is, with no second default here."""

# Fields that come from outside the model section (data, run-time options) or from flax.
_NOT_FROM_SECTION = {"parent", "name", "centered", "dtype", "remat", "variant"}
# The original lower-cased these option strings before comparing them.
_CASE_INSENSITIVE = {
    "resblock_type",
    "progressive",
    "progressive_input",
    "progressive_combine",
    "embedding_type",
    "nonlinearity",
}

# Models that read ``embedding_type``: a Fourier embedding of log sigma needs the continuous
# noise level as its label. DDPM, NCSN and NCSNv2 never read the field (the original's
# defaults set it to 'fourier' in every config, discrete ones included).
_READS_EMBEDDING_TYPE = {"ncsnpp"}


def _plain(value: Any) -> Any:
    """Lists (as ConfigDicts and JSON give them) become tuples, so modules stay hashable."""
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


def _model_name(section: Mapping[str, Any]) -> Any:
    return section.get("name", None) if hasattr(section, "get") else section["name"]


def module_kwargs(cls: type[nn.Module], section: Mapping[str, Any]) -> dict[str, Any]:
    """Returns the constructor arguments of ``cls`` found in ``section`` (others ignored).

    Keys a module has no field for (``ema_rate``, ``beta_min``, ``scale_by_sigma``,
    ``sigma_max`` ...) describe training, the SDE or the score wrapper and are ignored.
    """
    names = {f.name for f in dataclasses.fields(cls)} - _NOT_FROM_SECTION
    kwargs = {key: _plain(section[key]) for key in names if key in section}
    for key in _CASE_INSENSITIVE & kwargs.keys():
        if isinstance(kwargs[key], str):
            kwargs[key] = kwargs[key].lower()
    return kwargs


def check_training_compatible(section: Mapping[str, Any], *, continuous: bool | None) -> None:
    """Checks the model section against ``training.continuous``, for the fields it reads.

    Args:
      section: the ``model`` section; ``name`` picks the model, and only a model that reads
        ``embedding_type`` (NCSN++ / DDPM++) is checked.
      continuous: ``training.continuous``; None (unknown) skips the check.

    Raises:
      ValueError: if NCSN++ / DDPM++ has ``embedding_type='fourier'`` with discrete training.
    """
    name = _model_name(section)
    if name not in _READS_EMBEDDING_TYPE or continuous is None:
        return
    embedding = str(section.get("embedding_type", "")).lower()
    if embedding == "fourier" and not continuous:
        raise ValueError(
            f"model.embedding_type='fourier' of model.name={name!r} needs "
            "training.continuous=True (the network embeds log sigma), got "
            "training.continuous=False; use embedding_type='positional' for discrete training."
        )


def build_model(
    section: Mapping[str, Any],
    *,
    centered: bool,
    dtype: Any = jnp.float32,
    remat: bool = False,
) -> nn.Module:
    """Builds the module described by a model config section.

    Args:
      section: the ``model`` section (a ConfigDict or a dict), original key names; ``name``
        chooses the architecture (one of :data:`MODELS`).
      centered: whether the data are in [-1, 1] (``data.centered``); otherwise the network
        maps [0, 1] inputs to [-1, 1] itself.
      dtype: compute dtype of activations (parameters stay float32).
      remat: rematerialize residual blocks in the backward pass.
        ``dtype`` and ``remat`` are options of NCSN++ and DDPM, not of NCSNv2 / NCSN.

    Returns:
      An unbound flax module; ``apply({'params': p}, x, labels, train=False)`` evaluates it
      (``labels``: the time conditioning of a score network, the noise level sigma of the
      ``'wideresnet'`` classifier, whose output is logits). ``model.scale_by_sigma`` is not
      the module's: see :func:`scale_by_sigma`.

    Raises:
      ValueError: if ``name`` is unknown, a field has an invalid value, or ``dtype`` /
        ``remat`` are set for a model without them.
    """
    name = validation.choice("model.name", _model_name(section), MODELS, sort=True)
    cls, fixed = MODELS[name]
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {**module_kwargs(cls, section), **fixed}
    if "centered" in names:  # the classifier standardizes each image instead
        kwargs["centered"] = bool(centered)
    options = {"dtype": dtype, "remat": remat}
    for option, value in options.items():
        if option in names:
            kwargs[option] = value
        elif value != {"dtype": jnp.float32, "remat": False}[option]:
            raise ValueError(f"{option}={value!r} is not supported by model {name!r}.")
    return cls(**kwargs)


def build_model_from_config(config: Mapping[str, Any]) -> nn.Module:
    """The score network of a full config (its ``model`` and ``data.centered``).

    Raises:
      ValueError: for an unknown ``model.dtype`` or an invalid model section.
    """
    model = config["model"]
    dtype = model.get("dtype", OLDER_CONFIG_DEFAULTS["model.dtype"])
    dtype = validation.choice("model.dtype", dtype, DTYPES, sort=True)
    # NCSN's conditional normalizations have one row per noise level: the SDE section's N.
    section = {**dict(model), "num_scales": config["sde"]["num_scales"]}
    return build_model(
        section,
        centered=config["data"]["centered"],
        dtype=DTYPES[dtype],
        remat=bool(model.get("remat", OLDER_CONFIG_DEFAULTS["model.remat"])),
    )


def scale_by_sigma(section: Mapping[str, Any]) -> bool:
    """Whether the score wrapper divides the network output by sigma (``model.scale_by_sigma``).

    A section without the key keeps its architecture's default (:data:`SCALE_BY_SIGMA`).

    Raises:
      ValueError: for an unknown ``model.name``.
    """
    name = validation.choice("model.name", _model_name(section), MODELS, sort=True)
    return bool(section.get("scale_by_sigma", SCALE_BY_SIGMA[name]))


def score_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``sde_jax.models.get_score_fn`` that a full config fixes.

    ``continuous`` (``training.continuous``), ``num_scales`` (``sde.num_scales``) and
    ``scale_by_sigma`` (:func:`scale_by_sigma` of the model section).
    """
    return {
        "continuous": config["training"]["continuous"],
        "num_scales": config["sde"]["num_scales"],
        "scale_by_sigma": scale_by_sigma(config["model"]),
    }


OPTIMIZERS = ("adam", "adamw")


def build_optimizer(section: Mapping[str, Any]) -> optax.GradientTransformation:
    r"""The original's optimizer: Adam with linear warmup and global-norm gradient clipping.

    The learning rate is :math:`\mathrm{lr} \cdot \min(1, \mathrm{step}/\mathrm{warmup})`;
    gradients are clipped to global norm ``grad_clip`` (None or 0: no clipping) before Adam
    with ``beta1``, ``beta2`` and ``eps``. ``adamw`` adds decoupled weight decay
    ``weight_decay``. Every key is read from the section (configs/default.py sets them all);
    ``beta2``, which older configs lack, falls back to :data:`OLDER_CONFIG_DEFAULTS`.

    Raises:
      ValueError: for an unknown ``optim.optimizer`` or a non-positive ``optim.lr``.
    """
    name = section["optimizer"]
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:  # case-insensitive
        validation.choice("optim.optimizer", name, OPTIMIZERS)
    validation.interval("optim.lr", section["lr"], 0, math.inf, closed=(False, True))
    warmup = int(section["warmup"] or 0)
    if warmup > 0:
        schedule = optax.warmup_constant_schedule(0.0, section["lr"], warmup)
    else:
        schedule = optax.constant_schedule(section["lr"])
    b2 = section.get("beta2", OLDER_CONFIG_DEFAULTS["optim.beta2"])
    kwargs = {"b1": section["beta1"], "b2": b2, "eps": section["eps"]}
    if name.lower() == "adamw":
        adam = optax.adamw(schedule, weight_decay=section["weight_decay"], **kwargs)
    else:
        adam = optax.adam(schedule, **kwargs)
    clip = section["grad_clip"]
    return optax.chain(optax.clip_by_global_norm(clip), adam) if clip else adam


def check_image_size(config: Mapping[str, Any]) -> None:
    """Raises ValueError unless ``data.image_size`` halves cleanly at every U-Net level."""
    size, ch_mult = config["data"]["image_size"], tuple(config["model"]["ch_mult"])
    factor = 2 ** (len(ch_mult) - 1)
    if size % factor:
        raise ValueError(
            f"data.image_size={size} must be divisible by 2^(len(model.ch_mult) - 1) = {factor} "
            f"for model.ch_mult={ch_mult}."
        )


# --------------------------------------------------------------------------------------------
# The sampling section: the original's key names to sampling objects.

PREDICTORS = {
    "euler_maruyama": EulerMaruyama,
    "reverse_diffusion": ReverseDiffusion,
    "ancestral_sampling": AncestralSampling,
    "none": None,
}
CORRECTORS = {"langevin": Langevin, "ald": AnnealedLangevin, "none": None}


def _pc(sde: SDE, s: Mapping[str, Any]):
    _choice("predictor", s["predictor"], PREDICTORS)
    _choice("corrector", s["corrector"], CORRECTORS)
    predictor, corrector = PREDICTORS[s["predictor"]], CORRECTORS[s["corrector"]]
    return PredictorCorrector(
        NoPredictor() if predictor is None else predictor(sde),
        NoCorrector() if corrector is None else corrector(sde, s["snr"], s["n_steps_each"]),
    )


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


@dataclasses.dataclass(frozen=True)
class Method:
    """A fixed-grid ``sampling.method``: how its stepper is built and its default grid.

    Attributes:
      stepper: ``stepper(sde, settings) -> Stepper`` from the filled-in sampling section.
      grid: the grid name used when the section leaves ``grid`` unset (None).
      keys: the section keys the method reads besides the common ones (for the docs).
    """

    stepper: Callable[[SDE, Mapping[str, Any]], Any]
    grid: str
    keys: tuple[str, ...] = ()


METHODS: dict[str, Method | None] = {
    "pc": Method(_pc, "uniform", ("predictor", "corrector", "snr", "n_steps_each")),
    "ode": None,  # the adaptive RK45 solve: no grid, see get_sampler
    "euler": Method(lambda sde, s: ProbabilityFlow(sde, ode.EULER), "karras"),
    "heun": Method(lambda sde, s: ProbabilityFlow(sde, ode.HEUN), "karras"),
    "rk4": Method(lambda sde, s: ProbabilityFlow(sde, ode.RK4), "karras"),
    "ddim": Method(lambda sde, s: DDIM(sde, _or(s["eta"], 0.0)), "log_snr", ("eta",)),
    "dpm_solver++": Method(lambda sde, s: DPMSolverPP2M(sde), "log_snr"),
    "dpm_solver++_3m": Method(lambda sde, s: DPMSolverPP3M(sde), "log_snr"),
    "dpm_solver++_2s": Method(lambda sde, s: DPMSolverPP2S(sde), "log_snr"),
    "dpm_solver++_3s": Method(lambda sde, s: DPMSolverPP3S(sde), "log_snr"),
    "dpm_solver++_2m_sde": Method(
        lambda sde, s: DPMSolverPP2MSDE(sde, _or(s["eta"], 1.0), s["s_noise"]),
        "log_snr",
        ("eta", "s_noise"),
    ),
    "dpm_solver++_3m_sde": Method(
        lambda sde, s: DPMSolverPP3MSDE(sde, _or(s["eta"], 1.0), s["s_noise"]),
        "log_snr",
        ("eta", "s_noise"),
    ),
    "unipc": Method(
        lambda sde, s: UniPC(sde, _or(s["order"], 3), s["variant"]),
        "log_snr",
        ("order", "variant"),
    ),
    "deis": Method(lambda sde, s: DEIS(sde, _or(s["order"], 3)), "log_snr", ("order",)),
    "ipndm": Method(lambda sde, s: IPNDM(sde), "log_snr"),
    "edm_heun": Method(lambda sde, s: EDMHeun(sde), "karras"),
    "edm": Method(
        lambda sde, s: EDMStochastic(
            sde,
            s["num_steps"],
            s["s_churn"],
            s["s_tmin"],
            _or(s["s_tmax"], math.inf),
            s["s_noise"],
        ),
        "karras",
        ("s_churn", "s_tmin", "s_tmax", "s_noise"),
    ),
}
"""``sampling.method`` names: the adaptive ODE ('ode') and every fixed-grid method with its
stepper and default grid (log-SNR for the exponential integrators, EDM's Karras grid with
rho = 7 for EDM's samplers and the fixed-step probability-flow rules, uniform in t for the
paper's PC samplers)."""
DEFAULTS = {
    "method": "pc",
    "predictor": "reverse_diffusion",
    "corrector": "langevin",
    "snr": 0.16,
    "n_steps_each": 1,
    "noise_removal": True,
    "num_steps": 1000,
    "eps": None,
    "rtol": 1e-5,
    "atol": 1e-5,
    "max_steps": 4096,
    "grid": None,
    "rho": 7.0,
    "eta": None,
    "s_noise": 1.0,
    "order": None,
    "variant": "bh2",
    "s_churn": 0.0,
    "s_tmin": 0.0,
    "s_tmax": None,
}
"""Values used for keys the config leaves out. ``eps=None`` means the SDE's default,
``grid=None`` the method's default grid (:data:`METHODS`), ``eta=None`` the method's (0 for
'ddim', 1 for the SDE variants), ``order=None`` 3 ('unipc', 'deis'), ``s_tmax=None`` no upper
bound on EDM's churn."""

IGNORED_KEYS = frozenset({"probability_flow"})
"""Keys of the original's sampling section that sde_jax does not need."""


def _choice(name: str, value: object, valid) -> None:
    validation.choice(f"sampling.{name}", value, valid, sort=True)


def sampling_settings(section: Any) -> dict[str, Any]:
    """A sampling section as a dict with every key of :data:`DEFAULTS` filled in.

    Raises:
      ValueError: for a whole config instead of its sampling section, or an unknown key.
      TypeError: if ``section`` is neither a ConfigDict nor a dict.
    """
    if isinstance(section, ml_collections.ConfigDict):
        if "sampling" in section and isinstance(section.sampling, ml_collections.ConfigDict):
            raise ValueError("get_sampler takes the sampling section: pass config.sampling.")
        values = section.to_dict()
    elif isinstance(section, dict):
        values = dict(section)
    else:
        raise TypeError(f"config must be a ConfigDict or dict, got {type(section).__name__}.")
    unknown = set(values) - set(DEFAULTS) - IGNORED_KEYS
    if unknown:
        raise ValueError(
            f"unknown sampling key(s) {sorted(unknown)}; valid keys: {sorted(DEFAULTS)}."
        )
    return {**DEFAULTS, **{k: v for k, v in values.items() if k in DEFAULTS}}


def _grid(sde: SDE, s: Mapping[str, Any], eps: float) -> np.ndarray:
    name = _or(s["grid"], METHODS[s["method"]].grid)
    _choice("grid", name, grids.GRIDS)
    if name == "karras":
        return np.asarray(grids.karras_grid(sde, s["num_steps"], eps, s["rho"]))
    return np.asarray(grids.GRIDS[name](sde, s["num_steps"], eps))


def get_sampler(
    sde: SDE,
    config: ml_collections.ConfigDict | dict,
    shape: tuple[int, ...],
    dtype: Any = jnp.float32,
) -> sampling.FixedGridSampler | sampling.AdaptiveODESampler:
    """Builds a sampler from a config's sampling section (the original's names).

    Keys (defaults in :data:`DEFAULTS`): ``method`` (a name in :data:`METHODS`: 'pc',
    'ode' (adaptive RK45), 'euler', 'heun', 'rk4' (fixed-step probability flow in t), 'ddim',
    'dpm_solver++' (2M), 'dpm_solver++_3m', 'dpm_solver++_2s', 'dpm_solver++_3s',
    'dpm_solver++_2m_sde', 'dpm_solver++_3m_sde', 'unipc', 'deis', 'ipndm', 'edm_heun' (EDM's
    Algorithm 1, Heun in sigma), 'edm' (Algorithm 2, with churn)); ``predictor``
    ('euler_maruyama', 'reverse_diffusion', 'ancestral_sampling', 'none') and ``corrector``
    ('langevin', 'ald', 'none') for 'pc'; ``snr``; ``n_steps_each``; ``noise_removal`` (the
    final denoising step: ``NoiseFreeMean`` for 'pc', ``TweedieDenoising`` otherwise,
    ``NoDenoising`` when False); ``num_steps`` (N); ``eps`` (None: the SDE's default);
    ``rtol``, ``atol``, ``max_steps`` for 'ode'; ``grid`` (a name in ``grids.GRIDS``; None:
    the method's default) and ``rho`` (for 'karras') for fixed grids; ``eta`` ('ddim' and the
    SDE variants), ``s_noise`` (SDE variants, 'edm'), ``order`` ('unipc', 'deis'),
    ``variant`` ('unipc': 'bh1' or 'bh2'), ``s_churn``, ``s_tmin``, ``s_tmax`` ('edm'). Unknown
    keys raise (typos would pass silently).

    The result is the object one would build by hand, e.g. for 'pc'
    ``sampling.FixedGridSampler(sde, PredictorCorrector(ReverseDiffusion(sde), Langevin(sde,
    snr, n_steps_each)), grids.uniform_grid(sde, num_steps, eps), shape, NoiseFreeMean())``.

    Args:
      sde: the forward SDE.
      config: the sampling section, an ``ml_collections.ConfigDict`` or a dict.
      shape: the batch shape to draw, ``(batch, ...)``.
      dtype: the floating dtype of the samples (float64 needs ``jax_enable_x64``).

    Returns:
      A pure callable ``sampler(key, score_fn) -> SampleOutput(x, nfe, success)``.

    Raises:
      ValueError: for an unknown name (listing the valid ones) or an invalid value.
    """
    s = sampling_settings(config)
    _choice("method", s["method"], METHODS)
    sampling.check_shape(shape)
    eps = sampling.default_eps(sde) if s["eps"] is None else s["eps"]
    if s["method"] == "ode":
        final = sampling.TweedieDenoising() if s["noise_removal"] else sampling.NoDenoising()
        return sampling.AdaptiveODESampler(
            sde, shape, eps, s["rtol"], s["atol"], s["max_steps"], final, dtype
        )
    grid = _grid(sde, s, eps)
    stepper = METHODS[s["method"]].stepper(sde, s)
    if not s["noise_removal"]:
        final = sampling.NoDenoising()
    elif s["method"] == "pc":
        final = sampling.NoiseFreeMean()
    else:
        final = sampling.TweedieDenoising()
    return sampling.FixedGridSampler(sde, stepper, grid, shape, final, dtype)


def inpainter_from_config(
    sde: SDE,
    config: Any,
    shape: tuple[int, ...],
    method: str = "replacement",
    guidance_scale: float = 1.0,
    dtype: Any = jnp.float32,
):
    """``controllable.get_inpainter`` of the sampler of a sampling section (a fixed grid).

    The original's ``get_pc_inpainter``. ``method`` and ``guidance_scale`` are those of
    :func:`sde_jax.controllable.get_inpainter`.

    Raises:
      ValueError: as :func:`get_sampler`, for an unknown ``method``, or for 'ode' (adaptive).
    """
    return controllable.get_inpainter(
        get_sampler(sde, config, shape, dtype), method=method, guidance_scale=guidance_scale
    )


def colorizer_from_config(sde: SDE, config: Any, shape: tuple[int, ...], dtype: Any = jnp.float32):
    """``controllable.get_colorizer`` of the sampler of a sampling section (a fixed grid).

    The original's ``get_pc_colorizer``; ``shape`` is ``(batch, H, W, 3)``.

    Raises:
      ValueError: as :func:`get_sampler`, for a shape without 3 channels, or for 'ode'.
    """
    return controllable.get_colorizer(get_sampler(sde, config, shape, dtype))


def conditional_sampler_from_config(
    sde: SDE, config: Any, shape: tuple[int, ...], dtype: Any = jnp.float32
):
    """``controllable.get_conditional_sampler`` of a sampling section's sampler ('ode' too).

    The original's ``get_pc_conditional_sampler``.

    Raises:
      ValueError: as :func:`get_sampler`.
    """
    return controllable.get_conditional_sampler(get_sampler(sde, config, shape, dtype))


def latent_codec_from_config(sde: SDE, config: Any) -> controllable.LatentCodec:
    """The probability-flow codec with ``eps``, ``rtol``, ``atol``, ``max_steps`` of a section.

    Other sampling keys are ignored (the codec always solves the ODE adaptively).

    Raises:
      ValueError: for unknown or invalid sampling keys.
    """
    s = sampling_settings(config)
    return controllable.get_latent_codec(
        sde, eps=s["eps"], rtol=s["rtol"], atol=s["atol"], max_steps=s["max_steps"]
    )


# --------------------------------------------------------------------------------------------
# The training section and the task: ``training.*`` checks, ``training.task`` to a task object.

TRAINING_POSITIVE_INTS = ("n_iters", "n_jitted_steps", "batch_size", "sample_batch_size")
TRAINING_FREQUENCIES = ("log_freq", "eval_freq", "snapshot_freq", "snapshot_freq_for_preemption")

TASKS = ("score", "classifier")
"""Valid ``training.task`` values."""

CONDITIONAL_MODELS = ("ncsnpp", "ddpm")
"""Score networks with a class embedding (``model.num_classes``)."""


def check_training_options(training: Mapping[str, Any]) -> None:
    """Validates the ``training`` section (steps, frequencies, sizes, flags).

    Args:
      training: the config's ``training`` section.

    Raises:
      ValueError: naming the key, the value and the valid range, for the first bad value.
      TypeError: if ``training.allow_config_change`` is not a bool.
    """
    for name in TRAINING_POSITIVE_INTS:
        validation.integer(f"training.{name}", training[name], minimum=1)
    for name in TRAINING_FREQUENCIES:
        meaning = " (steps between events; 0: never)"
        validation.integer(f"training.{name}", training[name], minimum=0, meaning=meaning)
    if training.get("max_to_keep") is not None:
        meaning = " or None (keep all)"
        validation.integer(
            "training.max_to_keep", training["max_to_keep"], minimum=1, meaning=meaning
        )
    validation.interval("training.eps", training["eps"], 0, 1, closed=(False, True))
    if "label_dropout" in training:
        validation.interval("training.label_dropout", training["label_dropout"], 0, 1)
    allow = training.get("allow_config_change", False)
    if not isinstance(allow, bool):
        raise TypeError(f"training.allow_config_change must be True or False, got {allow!r}.")


def check_task_options(
    config: Mapping[str, Any], data_classes: int | None
) -> tuple[str, int | None]:
    """Validates ``training.task``, ``model.num_classes`` and ``training.label_dropout``.

    Args:
      config: the experiment config (its training, model and data sections are read).
      data_classes: the number of classes of the data set's labels, or None if it has none
        (``sde_jax.data.num_classes``).

    Returns:
      The task and the number of classes (None for an unconditional score model).

    Raises:
      ValueError: naming the key, the value and what was expected, for an unknown task, a
        classifier that is not a ``'wideresnet'`` or has no ``num_classes``, label dropout
        without a class-conditional model, a conditional model of another architecture, or
        ``num_classes`` that differs from the data set's (or a data set without labels).
    """
    t, model = config["training"], config["model"]
    task = t.get("task", "score")
    validation.choice("training.task", task, TASKS)
    num_classes = model.get("num_classes", None)
    if task == "classifier" and num_classes is None:
        raise ValueError("training.task='classifier' needs model.num_classes, got None.")
    if task == "classifier" and model["name"] != "wideresnet":
        raise ValueError(
            f"training.task='classifier' needs model.name='wideresnet', got {model['name']!r}."
        )
    if task == "score" and model["name"] == "wideresnet":
        raise ValueError("model.name='wideresnet' is a classifier: set training.task='classifier'.")
    rate = t.get("label_dropout", 0.0)
    # Stricter than check_training_options: 1 drops every label.
    validation.interval("training.label_dropout", rate, 0, 1, closed=(True, False))
    if rate > 0 and (task != "score" or num_classes is None):
        raise ValueError(
            f"training.label_dropout={rate} needs a class-conditional score model "
            "(training.task='score' and model.num_classes set)."
        )
    if task == "score" and num_classes is not None and model["name"] not in CONDITIONAL_MODELS:
        raise ValueError(
            f"model.num_classes={num_classes} (a class-conditional score model) needs "
            f"model.name in {list(CONDITIONAL_MODELS)}, got {model['name']!r}."
        )
    if num_classes is not None:
        dataset = config["data"]["dataset"]
        if data_classes is None:
            raise ValueError(
                f"model.num_classes={num_classes} needs class labels, but data.dataset="
                f"{dataset!r} has none."
            )
        if data_classes != num_classes:
            raise ValueError(
                f"model.num_classes must equal the {data_classes} classes of data.dataset="
                f"{dataset!r}, got {num_classes!r}."
            )
    return task, num_classes


def build_task(
    config: Mapping[str, Any], sde: SDE, model: nn.Module, score_kwargs: Mapping[str, Any]
) -> Task:
    """The task object of ``training.task`` (checked first by :func:`check_task_options`).

    Args:
      config: the experiment config (its training, model and sde sections are read).
      sde: the forward SDE (:func:`build_sde`).
      model: the network (:func:`build_model_from_config`).
      score_kwargs: the score parameterization's keywords, passed through to the score task.

    Raises:
      ValueError: for a ``training.task`` not in :data:`TASKS`.
    """
    t = config["training"]
    name = validation.choice("training.task", t.get("task", "score"), TASKS)
    if name == "classifier":
        return ClassifierTask(model=model, sde=sde, eps=t["eps"])
    loss_fn = get_loss_fn(
        sde,
        continuous=t["continuous"],
        reduce_mean=t["reduce_mean"],
        likelihood_weighting=t["likelihood_weighting"],
        importance_sampling=t["importance_sampling"],
        eps=t["eps"],
        num_scales=config["sde"]["num_scales"],
    )
    return ScoreTask(
        model=model,
        sde=sde,
        loss_fn=loss_fn,
        score_kwargs=dict(score_kwargs),
        num_classes=config["model"].get("num_classes", None),
        label_dropout=t.get("label_dropout", 0.0),
    )
