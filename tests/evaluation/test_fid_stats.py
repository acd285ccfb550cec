"""``sde-jax fid-stats``: features of a data split in order, and the command end to end."""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import quickstart
from sde_jax import data
from sde_jax.evaluation import fid_stats, inception, metrics

ROOT = pathlib.Path(__file__).resolve().parents[2]


def identity_features(images):
    """A stand-in network: the pixels themselves, so every row can be traced to its image."""
    flat = np.asarray(images, np.float32).reshape(len(images), -1)
    return flat, flat[:, :3]


@pytest.mark.parametrize("max_examples", [None, 6])
def test_dataset_features_are_the_split_in_order_without_padding(max_examples):
    config = quickstart.get_config().data
    images = np.concatenate(
        [
            b["image"][b["mask"]]
            for b in data.eval_iterator(config, 64, split="test", raw_uint8=True)
        ]
    )
    assert images.dtype == np.uint8 and len(images) == 297  # the digits' test split
    pool3, logits = fid_stats.dataset_features(
        config, identity_features, 4, split="test", max_examples=max_examples
    )
    expected = images[:max_examples].reshape(-1, 16 * 16).astype(np.float32)
    np.testing.assert_array_equal(pool3, expected)
    assert logits.shape == (len(expected), 3)


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from sde_jax.apps.cli import run; import sys; run(sys.argv)",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )


def test_fid_stats_without_weights_says_how_to_get_them(tmp_path):
    output = tmp_path / "s.npz"
    with pytest.raises(FileNotFoundError, match=r"inception-2015-12-05\.tgz.*convert-inception"):
        fid_stats.write_reference_stats(quickstart.get_config().data, None, str(output), 4)
    assert not output.exists()


def test_fid_stats_command_writes_loadable_stats(tmp_path):
    weights = tmp_path / "inception.npz"
    inception.save_params(weights, inception.random_params(jax.random.key(0)))
    output = tmp_path / "stats" / "digits_test.npz"
    result = run_cli(
        "fid-stats",
        "--config=configs/quickstart.py",
        "--config.eval.batch_size=3",
        f"--inception={weights}",
        f"--output={output}",
        "--split=test",
        "--max_examples=3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stats = metrics.load_reference_stats(output)
    assert stats.num_examples == 3
    assert stats.mu.shape == (2048,) and stats.sigma.shape == (2048, 2048)
    assert stats.kid_features.shape == (3, 2048)
    assert np.all(np.isfinite(stats.sigma)) and np.all(stats.mu >= 0)
