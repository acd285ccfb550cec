"""The command line's own errors: one line on stderr, exit 2; --debug shows the traceback."""

import os
import subprocess
import sys

import pytest

from launch import slurm
from sde_jax.apps import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK = os.path.join(ROOT, "configs", "quickstart.py") + ":smoke"


def run_cli(capsys, *args):
    with pytest.raises(SystemExit) as exit_:
        cli.run(["sde-jax", "train", "--workdir=/nonexistent/never", *args])
    return exit_.value.code, capsys.readouterr().err


def test_misspelled_override_prints_one_line(capsys):
    code, err = run_cli(capsys, f"--config={QUICK}", "--config.training.n_iter=5")
    assert code == 2
    assert err == (
        "sde-jax: error: no such config key 'n_iter' "
        'Did you mean "n_iters" instead of "n_iter"?\n'
    )


def test_missing_config_file_is_named(capsys):
    code, err = run_cli(capsys, "--config=configs/nope.py")
    assert code == 2
    assert (
        err == f"sde-jax: error: --config: no such file 'configs/nope.py' (from {os.getcwd()}).\n"
    )


def test_invalid_training_value_prints_one_line_and_debug_shows_the_traceback(capsys):
    code, err = run_cli(capsys, f"--config={QUICK}", "--config.training.n_jitted_steps=0")
    assert code == 2
    assert err.splitlines()[-1:] == [
        "sde-jax: error: training.n_jitted_steps must be an integer >= 1, got 0."
    ]
    assert "Traceback" not in err
    # Another key: absl defines each override flag once per process.
    debug = ["--debug", "--config.training.n_iters=-5"]
    with pytest.raises(ValueError, match=r"training\.n_iters must be an integer >= 1, got -5"):
        cli.run(["sde-jax", "train", "--workdir=/nonexistent/never", f"--config={QUICK}", *debug])


def test_a_local_module_in_the_working_directory_does_not_shadow_an_installed_one(tmp_path):
    (tmp_path / "optax.py").write_text("raise ImportError('the local optax.py shadowed optax')\n")
    # -P: no script directory on sys.path, as for the installed console script.
    code = (
        f"import sys; sys.path.insert(0, {ROOT!r}); from sde_jax import cli; "
        "cli.run(['sde-jax', 'info'])"
    )
    result = subprocess.run(
        [sys.executable, "-P", "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "optax" in result.stdout


@pytest.mark.parametrize("flag", ["job_name", "partition", "account", "logdir", "setup"])
def test_slurm_rejects_newlines_in_script_values(flag, capsys):
    argv = ["--nodes=1", "--gpus_per_node=1", "--workdir=/s", f"--{flag}=x\nrm -rf /", "--dry_run"]
    with pytest.raises(SystemExit, match=f"--{flag} must be one line without control characters"):
        slurm.main([*argv, "--", "sde-jax", "train"])
    assert capsys.readouterr().out == ""  # no script printed
