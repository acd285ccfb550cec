import subprocess
import sys

import pytest

from sde_jax.apps import cli


def test_help_lists_commands(capsys):
    cli.run(["sde-jax", "--help"])
    out = capsys.readouterr().out
    assert "usage: sde-jax COMMAND" in out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_names_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.run(["sde-jax", "trian"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "'trian'" in err and "info" in err


def test_console_script_info_runs():
    result = subprocess.run(
        [sys.executable, "-c", "from sde_jax.apps.cli import run; run(['sde-jax', 'info'])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "sde_jax" in result.stdout and "device" in result.stdout
