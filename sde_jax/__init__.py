"""sde_jax: score-based generative modeling through stochastic differential equations in JAX.

Song, Sohl-Dickstein, Kingma, Kumar, Ermon and Poole, "Score-Based Generative Modeling through
Stochastic Differential Equations", ICLR 2021.

The public surface, in one place:

- SDEs (``sde_jax.sdes``): ``VPSDE``, ``SubVPSDE``, ``VESDE`` and the reverse-time and
  probability-flow drifts of any of them given a ``score_fn(x, t)``.
"""

from sde_jax import platform as _platform

_platform.apply_xla_cpu_workarounds()

from sde_jax.sdes import (  # noqa: E402
    SDE,
    VESDE,
    VPSDE,
    ScoreFn,
    SubVPSDE,
    probability_flow_drift,
    reverse_drift,
)

__version__ = "0.1.0"

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "ScoreFn",
    "SubVPSDE",
    "__version__",
    "probability_flow_drift",
    "reverse_drift",
]
