"""Records what every configured sampler returns today, for tests/test_sampler_outputs.py.

    python tests/record_sampler_outputs.py   # writes tests/fixtures/sampler_outputs.npz

Run once, on the code before the solver-core redesign (issue 14), on CPU in float32:
the redesign must reproduce these samples for the same keys. Each case is a sampling config
(the original's key names) run through ``experiment.build.get_sampler`` on a 3-D Gaussian's exact
score, batch 4, key 0. They were recorded on the grid every method then defaulted to,
uniform in t; since each method has its own default grid (issue 15), the cases name it.
"""

import pathlib

import jax
import numpy as np

from sde_jax import VESDE, VPSDE, SubVPSDE
from sde_jax.experiment import build

try:
    from tests.gaussians import Gaussian
except ImportError:  # run as a script
    from gaussians import Gaussian

SHAPE = (4, 3)
SDES = {"vp": VPSDE(), "subvp": SubVPSDE(), "ve": VESDE(sigma_min=0.01, sigma_max=5.0)}
# PC cases use 40 steps: with fewer than 20, the original's discrete VP betas exceed 1.
PC = {"method": "pc", "num_steps": 40}
CASES = {
    "pc_rd_langevin": PC,
    "pc_em_none": {**PC, "predictor": "euler_maruyama", "corrector": "none"},
    "pc_ancestral_ald": {**PC, "predictor": "ancestral_sampling", "corrector": "ald"},
    "pc_none_langevin": {**PC, "predictor": "none", "corrector": "langevin"},
    "pc_rd_none_no_denoise": {**PC, "corrector": "none", "noise_removal": False},
    "euler": {"method": "euler", "num_steps": 12, "grid": "uniform"},
    "heun": {"method": "heun", "num_steps": 12, "grid": "uniform"},
    "heun_log_snr": {"method": "heun", "num_steps": 12, "grid": "log_snr"},
    "rk4": {"method": "rk4", "num_steps": 6, "noise_removal": False, "grid": "uniform"},
    "dpm_solver++": {"method": "dpm_solver++", "num_steps": 12, "grid": "uniform"},
    "dpm_solver++_log_snr": {"method": "dpm_solver++", "num_steps": 12, "grid": "log_snr"},
    "ode": {"method": "ode", "rtol": 1e-4, "atol": 1e-4},
}
VE_ONLY = {"heun_karras": {"method": "heun", "num_steps": 12, "grid": "karras"}}
FILE = pathlib.Path(__file__).parent / "fixtures" / "sampler_outputs.npz"


def cases():
    """``(name, sde_name, config)`` of every recorded case (ancestral sampling: VP, VE only)."""
    for sde_name in SDES:
        for name, config in CASES.items():
            if name == "pc_ancestral_ald" and sde_name == "subvp":
                continue
            yield f"{sde_name}/{name}", sde_name, config
    for name, config in VE_ONLY.items():
        yield f"ve/{name}", "ve", config


def run_case(sde_name, config, get_sampler=build.get_sampler):
    sde = SDES[sde_name]
    score_fn = Gaussian.random(SHAPE[1], seed=3).score_fn(sde)
    sampler = get_sampler(sde, config, SHAPE)
    out = jax.jit(lambda k: sampler(k, score_fn))(jax.random.key(0))
    return np.asarray(out.x), int(out.nfe)


def main():
    arrays = {}
    for name, sde_name, config in cases():
        x, nfe = run_case(sde_name, config)
        arrays[f"{name}/x"], arrays[f"{name}/nfe"] = x, np.asarray(nfe)
        print(name, nfe, x[0])
    np.savez(FILE, **arrays)


if __name__ == "__main__":
    main()
