"""The training loop end to end on the embedded digits: outputs, exact resume, crash safety."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
import tensorflow as tf

from configs import default
from sde_jax.apps import sample
from sde_jax.experiment import Experiment
from sde_jax.training import checkpoint, loop


def tiny_config(n_iters=6):
    config = default.get_default_config()
    config.data.update(dataset="digits", image_size=8, num_channels=1, random_flip=False)
    config.sde.sigma_max = 10.0
    config.model.update(nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,))
    config.model.update(dropout=0.0, fir=False, progressive_input="none")
    config.optim.warmup = 2
    config.training.update(
        batch_size=16,
        n_iters=n_iters,
        log_freq=2,
        eval_freq=3,
        snapshot_freq=4,
        snapshot_freq_for_preemption=2,
        sample_batch_size=4,
    )
    config.sampling.update(num_steps=4)
    config.eval.enable_bpd = False
    return config


def leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state)]


def test_train_writes_checkpoints_metrics_and_samples_and_resumes_exactly(
    tmp_path, caplog, monkeypatch
):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)  # log lines, not a tqdm bar
    caplog.set_level(logging.INFO)
    straight = loop.train(tiny_config(6), str(tmp_path / "straight"))
    assert int(straight.step) == 6
    text = caplog.text
    assert "Compiling the train step" in text and "Sampling 4 images at step 4" in text
    assert "train: step 2/6 (33%)" in text and "ETA" in text and "train: 6/6 in" in text
    ckpt = checkpoint.Checkpointer(str(tmp_path / "straight"))
    assert ckpt.periodic.all_steps() == [4, 6]
    assert ckpt.preemption.all_steps() == [2]  # overwritten: only the newest is kept
    ckpt.close()
    samples = sorted(os.listdir(tmp_path / "straight" / "samples"))
    assert samples == ["step_00000004.png", "step_00000006.png"]
    first = str(tmp_path / "straight" / "samples" / samples[0])
    snapshot = tf.io.decode_png(tf.io.read_file(first))
    assert snapshot.shape == (513, 513, 1)  # 4 8x8 digits, 2 columns: 19 px upscaled by 27
    assert any("events" in f for f in os.listdir(tmp_path / "straight" / "tensorboard"))

    # `sde-jax sample`: the EMA weights of the newest checkpoint, written after every batch.
    out = tmp_path / "samples.npz"
    samples = sample.sample_to_files(tiny_config(6), str(tmp_path / "straight"), 6, str(out))
    stored = np.load(out)
    assert stored["samples"].shape == (6, 8, 8, 1) and stored["samples"].dtype == np.uint8
    np.testing.assert_array_equal(stored["samples"], samples)
    assert int(stored["step"]) == 6
    grid = tf.io.decode_png(tf.io.read_file(str(tmp_path / "samples.png")))
    assert grid.shape == (19 * 19, 19 * 28, 1)  # 6 digits, 3 columns: 19 x 28 px, factor 19

    # Stop after 4 steps, then resume to 6: same data position and RNG stream, same result.
    loop.train(tiny_config(4), str(tmp_path / "resumed"))
    resumed = loop.train(tiny_config(6), str(tmp_path / "resumed"))
    assert int(resumed.step) == 6
    caplog.clear()
    loop.train(tiny_config(6), str(tmp_path / "resumed"))  # finished: no steps, no bar
    assert "Training already finished at step 6" in caplog.text and "train:" not in caplog.text
    for a, b in zip(leaves(resumed), leaves(straight), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_bad_configs_fail_before_compilation():
    config = tiny_config()
    config.data.image_size = 9  # ch_mult (1, 2) halves the image once
    with pytest.raises(ValueError, match=r"data.image_size=9 must be divisible by"):
        Experiment(config)
    config = tiny_config()
    config.sde.name = "ddpm"
    with pytest.raises(ValueError, match=r"sde.name must be one of"):
        Experiment(config)
    config = tiny_config()
    config.model.name = "unet"
    with pytest.raises(ValueError, match=r"model.name must be one of"):
        Experiment(config)
    config = tiny_config()
    config.sampling.predictor = "ddim"
    with pytest.raises(ValueError, match=r"sampling.predictor must be one of"):
        Experiment(config)
    config = tiny_config()
    config.training.batch_size = 12
    with pytest.raises(ValueError, match=r"training.batch_size=12 must be divisible"):
        Experiment(config)
    config = tiny_config()
    config.data.update(dataset="cifar10", data_dir="/nonexistent", num_channels=3)
    with pytest.raises(ValueError, match="tfds build"):
        Experiment(config)


CONFIG_FILE = """
from tests.training import test_loop


def get_config():
    config = test_loop.tiny_config(n_iters=100000)
    config.training.update(snapshot_freq=1000000, snapshot_freq_for_preemption=5, log_freq=5)
    config.training.snapshot_sampling = False
    config.eval.enable_loss = False
    return config
"""


def _start(config_path, workdir, log):
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": os.getcwd()}
    command = [sys.executable, "-m", "sde_jax.apps.cli", "train", f"--config={config_path}"]
    return subprocess.Popen(
        [*command, f"--workdir={workdir}"], stdout=log, stderr=subprocess.STDOUT, env=env
    )


def _wait_for_checkpoint(workdir, process, above=0, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        ckpt = checkpoint.Checkpointer(workdir)
        step = ckpt.latest_step()
        ckpt.close()
        if step is not None and step > above:
            return step
        assert process.poll() is None, "training exited early"
        time.sleep(0.5)
    raise TimeoutError("no checkpoint appeared")


def test_kill_and_sigterm(tmp_path):
    """kill -9 mid-run, restart: resumes from the last complete checkpoint. SIGTERM: saves a
    checkpoint at the current step and exits cleanly."""
    config_path = tmp_path / "config.py"
    config_path.write_text(textwrap.dedent(CONFIG_FILE))
    workdir = str(tmp_path / "work")
    with open(tmp_path / "log1", "wb") as log:
        process = _start(config_path, workdir, log)
        first = _wait_for_checkpoint(workdir, process)
        time.sleep(1.0)
        process.kill()  # SIGKILL: no chance to clean up, maybe mid-save
        process.wait()
    ckpt = checkpoint.Checkpointer(workdir)
    crashed_at = ckpt.latest_step()
    ckpt.close()
    assert crashed_at >= first
    with open(tmp_path / "log2", "wb") as log:
        process = _start(config_path, workdir, log)
        later = _wait_for_checkpoint(workdir, process, above=crashed_at)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0
    text = (tmp_path / "log2").read_text()
    assert f"Resuming at step {crashed_at}" in text, text[-3000:]
    assert "after a preemption checkpoint" in text, text[-3000:]
    ckpt = checkpoint.Checkpointer(workdir)
    final = ckpt.latest_step()
    ckpt.close()
    assert final >= later
    # The checkpoint restores: a fresh loop run continues from it.
    config = tiny_config(final + 1)
    config.training.snapshot_sampling = False
    state = loop.train(config, workdir)
    assert int(state.step) == final + 1
