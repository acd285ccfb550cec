"""``sde-jax train``'s final bits/dim: SIGTERM stops it within seconds, a rerun resumes it."""

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from sde_jax import evaluation
from sde_jax.evaluation import store
from tests.evaluation import test_eval

# test_eval.tiny_config, inlined: importing tests.test_eval imports the CLI a second time.
CONFIG_FILE = """
from configs import quickstart


def get_config():
    config = quickstart.get_config("smoke")
    config.data.image_size = 8
    config.model.update(nf=8, attn_resolutions=(4,))
    config.training.update(n_iters=2, snapshot_freq=1, snapshot_sampling=False, eval_freq=0)
    config.eval.update(batch_size=8, bpd_repeats=3, bpd_max_examples=16, num_samples=12)
    config.eval.enable_bpd = True
    return config
"""
UNITS = 2 * 3  # two batches of 8, three repeats


def _config():
    config = test_eval.tiny_config()
    config.eval.update(enable_bpd=True, bpd_repeats=3, bpd_max_examples=16)
    return config


def _wait_for_progress(pattern, process, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = glob.glob(pattern)
        if found:
            return found[0]
        assert process.poll() is None, "train exited before the final bits/dim"
        time.sleep(0.2)
    raise TimeoutError("no bits/dim progress appeared")


@pytest.mark.slow  # a CLI subprocess and two compilations of the likelihood
def test_sigterm_stops_the_final_bpd_and_a_rerun_resumes_then_reuses_it(tmp_path):
    config_path = tmp_path / "config.py"
    config_path.write_text(textwrap.dedent(CONFIG_FILE))
    workdir = str(tmp_path / "work")
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": os.getcwd()}
    command = [sys.executable, "-m", "sde_jax.apps.cli", "train", f"--config={config_path}"]
    with open(tmp_path / "log", "wb") as log:
        process = subprocess.Popen(
            [*command, f"--workdir={workdir}"], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        pattern = os.path.join(evaluation.step_dir(workdir, 2), "bpd-*.npz")
        progress = _wait_for_progress(pattern, process)
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        stopped_after = time.monotonic() - sent
    text = (tmp_path / "log").read_text()
    assert "SIGTERM: final bits/dim stopped after" in text, text[-3000:]
    assert "held-out bits/dim:" not in text
    assert stopped_after < 10, stopped_after
    done = len(store.load_npz(progress)["nfe"])
    assert 1 <= done < UNITS

    # The rerun (what `train` calls once training is done) resumes from the saved units...
    evaluated = []
    row = evaluation.final_bits_per_dim(
        _config(), workdir, on_unit=lambda b, r: evaluated.append((b, r))
    )
    assert len(evaluated) == UNITS - done and row["bpd_examples"] == 16
    assert np.isfinite(row["bpd"])
    # ... and a rerun of a finished train reuses the stored result.
    again = evaluation.final_bits_per_dim(_config(), workdir, on_unit=evaluated.append)
    assert len(evaluated) == UNITS - done and again == row
