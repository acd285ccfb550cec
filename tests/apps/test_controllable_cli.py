"""`sde-jax inpaint|colorize|interpolate` on a tiny trained RGB workdir."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from sde_jax.apps import controllable_files as files
from sde_jax.training import loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Two training steps of quickstart:smoke on a folder of 16 random RGB images."""
    root = tmp_path_factory.mktemp("controllable")
    image_dir = root / "images"
    image_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        (image_dir / f"{i:02d}.png").write_bytes(tf.io.encode_png(image).numpy())
    config_file = root / "rgb_smoke.py"
    config_file.write_text(CONFIG.format(image_dir=str(image_dir)))
    namespace = {}
    exec(config_file.read_text(), namespace)
    config = namespace["get_config"]()
    loop.train(config, str(root / "run"))
    return config, str(root / "run"), str(config_file)


CONFIG = """
from configs import quickstart


def get_config():
    config = quickstart.get_config("smoke")
    config.data.update(dataset="folder", data_dir={image_dir!r}, num_channels=3)
    config.training.update(n_iters=2, snapshot_sampling=False, eval_freq=100)
    config.sampling.update(rtol=1e-3, atol=1e-3, max_steps=200)
    return config
"""
"""quickstart:smoke on a folder of RGB images, as a config file for the CLI."""


def test_inpaint_colorize_interpolate_write_grids(workdir):
    config, run, _ = workdir
    out = os.path.join(run, "out")
    inpainted = files.inpaint_to_files(
        config, run, f"{out}/inpaint.npz", num_images=4, mask="center", method="reconstruction"
    )
    stored = np.load(f"{out}/inpaint.npz")
    assert inpainted.shape == (4, 16, 16, 3) and inpainted.dtype == np.uint8
    known = stored["mask"] == 255
    np.testing.assert_array_equal(inpainted[known], stored["original"][known])
    assert os.path.getsize(f"{out}/inpaint.png") > 0

    colorized = files.colorize_to_files(config, run, f"{out}/colorize.npz", num_images=3)
    stored = np.load(f"{out}/colorize.npz")
    assert colorized.shape == (3, 16, 16, 3)
    assert stored["gray"].shape == (3, 16, 16, 1)
    assert os.path.getsize(f"{out}/colorize.png") > 0

    path = files.interpolate_to_files(
        config, run, f"{out}/interpolate.npz", num_pairs=2, num_points=3
    )
    assert path.shape == (2, 3, 16, 16, 3)
    grid = tf.io.decode_png(tf.io.read_file(f"{out}/interpolate.png")).numpy()
    # A row per pair (ends and 3 points): 35 x 86 px raw, upscaled by 6 to reach 512 px wide.
    assert grid.shape == (6 * (2 * 17 + 1), 6 * (5 * 17 + 1), 3)


def test_cli_inpaint_runs_and_validates_the_mask(workdir):
    _, run, config_file = workdir
    env = {**os.environ, "PYTHONPATH": ROOT}
    base = [
        sys.executable,
        "-m",
        "sde_jax.apps.cli",
        "inpaint",
        f"--config={config_file}",
        f"--workdir={run}",
        "--num_images=2",
    ]
    bad = subprocess.run(
        [*base, "--mask=square"], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert bad.returncode != 0 and "<half|center|random>" in bad.stderr
    output = os.path.join(run, "cli", "inpaint.npz")
    good = subprocess.run(
        [*base, "--mask=half", f"--output={output}"],
        check=True,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    png = os.path.join(run, "cli", "inpaint.png")
    assert good.stdout.splitlines()[-1].startswith(f"wrote {output} and {png}: 2 images, ")
    assert np.load(output)["inpainted"].shape == (2, 16, 16, 3)
    assert os.path.exists(os.path.join(run, "cli", "inpaint.png"))
