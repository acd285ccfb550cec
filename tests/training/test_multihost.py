"""Two processes joined by jax.distributed on 127.0.0.1 train like one device."""

import os
import sys

import jax
import numpy as np

from launch import local
from tests.training import test_training


def test_two_processes_equal_single_device_training(tmp_path):
    out = tmp_path / "result.npz"
    command = [sys.executable, "tests/multihost_worker.py", str(out)]
    env = {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "PYTHONPATH": os.getcwd(),
        "JAX_PLATFORMS": "cpu",
    }
    code = local.run(command, 2, str(tmp_path / "logs"), env=env)
    logs = "".join(p.read_text() for p in sorted((tmp_path / "logs").iterdir()))
    assert code == 0, logs[-4000:]
    result = np.load(out)
    reference, ref_losses, _ = test_training.single_device_run()
    np.testing.assert_allclose(result["losses"], ref_losses, rtol=2e-5)
    params = jax.tree.leaves(reference.params)
    for i, leaf in enumerate(params):
        np.testing.assert_allclose(result[f"arr_{i}"], leaf, rtol=1e-4, atol=1e-6)


def test_local_launcher_dry_run(capsys):
    assert local.main(["--num_processes=3", "--dry_run", "--", "sde-jax", "train"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert lines[2].endswith("--num_processes=3 --process_id=2")
    assert "--coordinator_address=127.0.0.1:" in lines[0]


# The CLI run below: the quickstart's smoke config, smaller still (compilation dominates).
CLI_OVERRIDES = {
    "data.image_size": 8,
    "model.nf": 8,
    "model.ch_mult": (1,),
    "model.attn_resolutions": (),
    "training.snapshot_freq": 2,
    "training.snapshot_freq_for_preemption": 0,
    "training.snapshot_sampling": False,
    "eval.enable_loss": False,
    "eval.enable_bpd": False,
}


def _cli_config(n_iters):
    from configs import quickstart

    config = quickstart.get_config("smoke")
    for key, value in {**CLI_OVERRIDES, "training.n_iters": n_iters}.items():
        section, name = key.split(".")
        config[section][name] = value
    return config


def _launch_cli_training(workdir, logdir, n_iters):
    """`python -m sde_jax.cli train --multihost ...` as 2 local processes, 1 CPU device each."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    overrides = {**CLI_OVERRIDES, "training.n_iters": n_iters}
    command = [
        sys.executable,
        "-m",
        "sde_jax.apps.cli",
        "train",
        f"--config={root}/configs/quickstart.py:smoke",
        f"--workdir={workdir}",
        *(f"--config.{key}={value}" for key, value in overrides.items()),
    ]
    env = {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
        "PYTHONPATH": root,
        "JAX_PLATFORMS": "cpu",
    }
    code = local.run(command, 2, str(logdir), env=env, timeout=600)
    logs = "\n".join(p.read_text() for p in sorted(logdir.iterdir()))
    assert code == 0, logs[-6000:]
    return logs


def _single_process_reference(config, num_shards):
    """The same steps on one device, each global batch = the hosts' shard batches in order."""
    import functools

    from sde_jax import data
    from sde_jax.experiment import Experiment
    from sde_jax.training.step import train_steps

    experiment = Experiment(config, devices=jax.devices()[:1])
    state = jax.jit(experiment.init_state)()
    step = jax.jit(
        functools.partial(
            train_steps,
            objective=experiment.task.objective,
            tx=experiment.tx,
            ema_rate=config.model.ema_rate,
        )
    )
    local_batch = config.training.batch_size // num_shards
    shards = [
        data.train_iterator(
            config.data, local_batch, seed=config.seed, shard_index=i, num_shards=num_shards
        )
        for i in range(num_shards)
    ]
    for _ in range(config.training.n_iters):
        batch = np.concatenate([next(shard)["image"] for shard in shards])
        state, _ = step(state, {"image": batch[None]})
    return experiment, state


def test_cli_training_on_two_processes_resumes_and_equals_one_process(tmp_path):
    from sde_jax import sharding
    from sde_jax.training import checkpoint

    workdir = tmp_path / "run"
    first = _launch_cli_training(workdir, tmp_path / "logs1", n_iters=2)
    assert "Starting at step 0." in first
    second = _launch_cli_training(workdir, tmp_path / "logs2", n_iters=4)
    assert "Resuming at step 2." in second

    experiment, reference = _single_process_reference(_cli_config(4), num_shards=2)
    abstract = jax.eval_shape(experiment.init_state)
    shardings = sharding.state_shardings(abstract, experiment.mesh)
    ckpt = checkpoint.Checkpointer(str(workdir))
    assert ckpt.latest_step() == 4
    restored = ckpt.restore(checkpoint.abstract_with_shardings(abstract, shardings))
    ckpt.close()
    assert int(restored.step) == int(reference.step) == 4
    for name in ("params", "ema_params"):
        ours, theirs = getattr(restored, name), getattr(reference, name)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # The parameters moved: the comparison is not between two initial states.
    initial = jax.jit(experiment.init_state)()
    moved = [
        float(np.max(np.abs(a - b)))
        for a, b in zip(
            jax.tree.leaves(restored.params), jax.tree.leaves(initial.params), strict=True
        )
    ]
    assert max(moved) > 1e-4
