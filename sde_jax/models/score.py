r"""From network outputs to scores, per SDE and time conditioning (Song et al., ICLR 2021).

The networks were trained with a fixed time conditioning and output parameterization, which
each SDE names: ``sde.network_labels(t)`` (continuous conditioning) and ``sde.network_output``
(``'score'`` or ``'noise'``); the discrete conditioning exists for the SDEs with the original's
discrete tables (the markers :class:`~sde_jax.sdes.DiscreteSMLD` and
:class:`~sde_jax.sdes.DiscreteDDPM`). These rules reproduce the original ``get_score_fn``
exactly:

==========================  =====================================  ==========================
SDE                         labels fed to the network              score
==========================  =====================================  ==========================
VE, continuous              :math:`\sigma(t)` (float32)            output (the network
                                                                   divides by sigma itself)
VE, discrete (SMLD)         ``round((T - t)(N - 1))`` (int32)      output
VP, continuous              :math:`999\,t`                         -output / std(t)
VP, discrete (DDPM)         :math:`(N - 1)\,t`                     -output / sqrt(1 - abar_i)
sub-VP (both)               :math:`999\,t`                         -output / std(t)
cosine VP (both)            :math:`999\,t`                         -output / std(t)
EDM (both)                  :math:`\sigma(t) = t`                  output
==========================  =====================================  ==========================

``std`` is the SDE's marginal standard deviation (for sub-VP :math:`1 - e^{-B(t)}`, without
the square root); ``abar_i`` is DDPM's cumulative product of ``1 - beta`` at index
``int((N - 1) t)``. An SDE without a discrete table takes its continuous conditioning when
``continuous=False``, as the original did for sub-VP.

A class-conditional network (``model.num_classes`` set; classifier-free guidance) gets
``class_conditional=True`` and gives ``score_fn(x, t, labels)``, labels int ``[batch]`` in
``[0, num_classes]`` where ``num_classes`` is the null (unconditional) label.

Networks that divide their output by the noise level (the original's ``scale_by_sigma``, set
by every NCSN++ / NCSNv2 config of the VE SDE) leave that division to this wrapper:
``scale_by_sigma=True`` divides the network output by :func:`label_sigmas`, the sigma of the
labels it was fed (the label itself for continuous VE and EDM, whose labels are
:math:`\sigma(t)`; the entry of the SDE's SMLD table for discrete VE step indices), before the
rules above. The networks hold no sigma table and no SDE parameter.
"""

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from sde_jax.array_types import Array, Data, PerExample, ScoreFn, Times
from sde_jax.sdes import SDE, DiscreteDDPM, DiscreteSMLD, batch_times, expand_to

__all__ = ["divide_by_sigma", "get_score_fn", "label_sigmas", "time_labels"]

ModelApply = Callable[..., Data]
"""``model_apply(variables, x, labels, train=False) -> output``, e.g. a flax ``model.apply``."""


def _check_sde(sde: object) -> None:
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be an SDE (e.g. VPSDE or VESDE), got {type(sde).__name__}.")


def time_labels(sde: SDE, t: PerExample, continuous: bool = True, num_scales: int = 1000):
    """Returns the time conditioning the original fed its networks at times ``t``.

    Args:
      sde: the SDE the network was trained with.
      t: times ``[batch]``.
      continuous: continuous-time training (else the discrete SMLD / DDPM conditioning).
      num_scales: N of the discrete conditioning.

    Returns:
      ``[batch]`` labels: float32, or int32 step indices for discrete VE (SMLD).

    Raises:
      TypeError: if ``sde`` is not an SDE.
    """
    _check_sde(sde)
    t = jnp.asarray(t, dtype=jnp.float32)
    if not continuous and isinstance(sde, DiscreteSMLD):
        return jnp.round((sde.T - t) * (num_scales - 1)).astype(jnp.int32)
    if not continuous and isinstance(sde, DiscreteDDPM):
        return t * (num_scales - 1)
    return sde.network_labels(t)


def label_sigmas(
    sde: SDE, labels: PerExample, continuous: bool = True, num_scales: int = 1000
) -> PerExample:
    r"""Returns the noise level sigma of the time conditioning ``labels`` of :func:`time_labels`.

    Discrete VE (SMLD) labels are step indices counted from ``T``: label ``i`` is entry
    ``N - 1 - i`` of ``sde.discrete_sigmas(N)``, i.e. :math:`\sigma` at time
    ``(N - 1 - i) / (N - 1)`` (the original's descending table). Every other label is its own
    sigma: :math:`\sigma(t)` for continuous VE and EDM (a network with ``scale_by_sigma`` and
    another SDE divides by its labels, as the original's Fourier-embedding NCSN++ did).

    Args:
      sde: the SDE the network was trained with.
      labels: ``[batch]`` labels of :func:`time_labels`.
      continuous: continuous-time training.
      num_scales: N of the discrete conditioning.

    Returns:
      ``[batch]`` float32 sigmas.

    Raises:
      TypeError: if ``sde`` is not an SDE.
    """
    _check_sde(sde)
    if not continuous and isinstance(sde, DiscreteSMLD):
        ascending = sde.discrete_sigmas(num_scales)
        return ascending[num_scales - 1 - jnp.asarray(labels).astype(jnp.int32)]
    return jnp.asarray(labels, dtype=jnp.float32)


def divide_by_sigma(
    sde: SDE, model_apply: ModelApply, continuous: bool = True, num_scales: int = 1000
) -> ModelApply:
    """Returns ``model_apply`` with its output divided by :func:`label_sigmas` of its labels.

    The original networks' ``scale_by_sigma``: ``divide_by_sigma(sde, model.apply)(variables,
    x, labels, train=False)`` equals the original network's output.

    Raises:
      TypeError: if ``sde`` is not an SDE.
    """
    _check_sde(sde)

    def apply(variables: Any, x: Data, labels: PerExample, *args: Any, **kwargs: Any) -> Data:
        output = model_apply(variables, x, labels, *args, **kwargs)
        sigmas = label_sigmas(sde, labels, continuous, num_scales)
        return output / expand_to(sigmas, output)

    return apply


def _discrete_vp_std(sde: DiscreteDDPM, labels: PerExample, num_scales: int) -> PerExample:
    alphas_cumprod = jnp.cumprod(1.0 - sde.discrete_betas(num_scales))
    # Truncate like the original, but with a thousandth of a step of slack: float32
    # (i / 999) * 999 can land just below i, and the original's plain astype(int32) then read
    # the std of step i - 1 for 170 of the 1000 steps.
    return jnp.sqrt(1.0 - alphas_cumprod)[jnp.floor(labels + 1e-3).astype(jnp.int32)]


def get_score_fn(
    sde: SDE,
    model_apply: ModelApply,
    params: Any,
    continuous: bool = True,
    num_scales: int = 1000,
    class_conditional: bool = False,
    scale_by_sigma: bool = False,
) -> ScoreFn | Callable[[Data, Times, Array], Data]:
    """Returns ``score_fn(x, t) -> score`` for a trained network, as the original did.

    Args:
      sde: the SDE the network was trained with.
      model_apply: ``model_apply({'params': params}, x, labels, train=False) -> output``.
      params: the network parameters (use the EMA parameters for sampling).
      continuous: whether the network was trained with continuous time.
      num_scales: N of the discrete conditioning (ignored for continuous VE and VP).
      class_conditional: the network is class-conditional; the score function then takes
        the class labels as a third argument and passes them to ``model_apply`` as
        ``class_labels=``.
      scale_by_sigma: the network's output is divided by the sigma of its labels
        (:func:`divide_by_sigma`; the original's ``model.scale_by_sigma``).

    Returns:
      A pure function of ``x [batch, ...]`` and ``t [batch]`` (or a scalar ``t``), and of
      ``labels`` (int ``[batch]``) when ``class_conditional``.

    Raises:
      TypeError: if ``sde`` is not an SDE.
    """
    _check_sde(sde)
    if not isinstance(class_conditional, bool):
        raise TypeError(f"class_conditional must be a bool, got {class_conditional!r}.")
    if not isinstance(scale_by_sigma, bool):
        raise TypeError(f"scale_by_sigma must be a bool, got {scale_by_sigma!r}.")
    if scale_by_sigma:
        model_apply = divide_by_sigma(sde, model_apply, continuous, num_scales)

    def conditional_score_fn(x: Data, t: Times, class_labels: Array | None) -> Data:
        t = batch_times(x, t)
        labels = time_labels(sde, t, continuous, num_scales)
        extra = {} if class_labels is None else {"class_labels": class_labels}
        output = model_apply({"params": params}, x, labels, train=False, **extra)
        if sde.network_output == "score":
            return output
        if not continuous and isinstance(sde, DiscreteDDPM):
            std = _discrete_vp_std(sde, labels, num_scales)
        else:
            std = sde.marginal_std(t)
        return -output * expand_to(1.0 / std, output)

    if class_conditional:
        return conditional_score_fn
    return lambda x, t: conditional_score_fn(x, t, None)
