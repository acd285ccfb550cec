"""Two processes joined by jax.distributed on 127.0.0.1 train like one device."""

import os
import sys

import jax
import numpy as np

from launch import local
from tests import test_training


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
