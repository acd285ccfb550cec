"""sde-jax's per-command help, its checks before any side effect, and its quiet logs."""

import json
import logging
import os
import subprocess
import sys

import pytest

from sde_jax.apps import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK = os.path.join(ROOT, "configs", "quickstart.py")

# What each command's help must show (written out here, not read from the flag table).
SHOWN = {
    "train": ["--config=FILE", "--workdir=DIR", "--[no]multihost", "--verbosity=N"],
    "sample": ["--num_samples=N", "--class=K[,K...]", "--guidance_scale=X", "--step=N"],
    "eval": ["--config=FILE", "--workdir=DIR", "--step=N"],
    "inpaint": ["--mask=half|center|random", "--conditioning=replacement|reconstruction"],
    "colorize": ["--num_images=N", "--image_dir=DIR", "--split=SPLIT"],
    "interpolate": ["--num_pairs=N", "--num_points=N"],
    "info": ["--[no]debug"],
    "fid-stats": ["--inception=PATH", "--max_examples=N"],
    "convert-inception": ["--source=PATH", "--output=PATH", "--[no]verify"],
}
# Flags of other commands that a command's help must not list.
HIDDEN = {
    "train": ["--num_samples", "--step"],
    "sample": ["--num_pairs", "--mask"],
    "eval": ["--num_samples", "--class"],
    "interpolate": ["--num_images", "--mask"],
    "info": ["--config", "--workdir", "--multihost"],
    "convert-inception": ["--config", "--workdir"],
}


def test_every_command_has_help_that_lists_its_own_flags(capsys):
    assert set(SHOWN) == set(cli.COMMANDS)
    for name in cli.COMMANDS:
        cli.run(["sde-jax", name, "--help"])  # returns: exit code 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: sde-jax {name} "), out
        for flag in SHOWN[name]:
            assert flag in out, (name, flag)
        for flag in HIDDEN.get(name, []):
            assert flag not in out, (name, flag)
        assert max(map(len, out.splitlines())) <= 100


def test_command_list_is_aligned(capsys):
    cli.run(["sde-jax", "--help"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert [row.split()[0] for row in rows] == list(cli.COMMANDS)
    starts = {len(row) - len(row.split(None, 1)[1]) for row in rows}
    assert len(starts) == 1, rows  # every summary starts in the same column


# Help, a command's help and a wrong workdir, in a fresh Python: none of them may start JAX.
NO_JAX = f"""
import json, sys
from sde_jax.apps import cli
cli.run(["sde-jax", "--help"])
cli.run(["sde-jax", "sample", "--help"])
try:
    cli.run(["sde-jax", "sample", "--config={QUICK}", "--workdir=runs/typo"])
except SystemExit as e:
    print("exit", e.code)
heavy = ("jax", "jaxlib", "tensorflow", "flax", "orbax.checkpoint", "optax")
print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
"""


def test_help_and_input_errors_do_not_import_jax_or_tensorflow(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", NO_JAX],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert json.loads(lines[-1]) == []
    assert lines[-2] == "exit 2"
    assert result.stderr.strip().splitlines() == [
        f"sde-jax: error: --workdir: no such directory 'runs/typo' (from {tmp_path})."
    ]
    assert os.listdir(tmp_path) == []  # nothing created


def test_module_help_exits_zero():
    result = subprocess.run(
        [sys.executable, "-m", "sde_jax.apps.cli", "interpolate", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "--num_pairs=N" in result.stdout


def _error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.run(["sde-jax", *argv])
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.mark.parametrize("command", ["sample", "eval", "inpaint", "colorize", "interpolate"])
def test_a_workdir_without_checkpoints_is_one_line_and_nothing_is_created(
    command, tmp_path, capsys
):
    config = f"--config={QUICK}"
    typo = tmp_path / "typo"
    line = _error(capsys, command, config, f"--workdir={typo}")
    cwd = os.getcwd()
    assert line == f"sde-jax: error: --workdir: no such directory {str(typo)!r} (from {cwd})."
    assert not typo.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _error(capsys, command, config, f"--workdir={empty}")
    assert "holds no checkpoint" in line and "sde-jax train" in line
    assert os.listdir(empty) == []


def test_the_classifier_workdir_is_checked_too(tmp_path, capsys):
    run = tmp_path / "run" / "checkpoints" / "3"
    run.mkdir(parents=True)
    line = _error(
        capsys,
        "sample",
        f"--config={QUICK}",
        f"--workdir={tmp_path / 'run'}",
        "--class=3",
        f"--classifier_workdir={tmp_path / 'clf'}",
        f"--classifier_config={QUICK}",
    )
    assert line.startswith("sde-jax: error: --classifier_workdir: no such directory")
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_a_flag_of_another_command_names_the_valid_ones(capsys):
    line = _error(capsys, "sample", f"--config={QUICK}", "--workdir=w", "--num_pairs=3")
    assert line.startswith("sde-jax: error: --num_pairs is not a flag of 'sde-jax sample'")
    assert "--num_samples" in line and "sde-jax sample --help" in line


def test_missing_required_flags_and_stray_arguments(capsys):
    assert _error(capsys, "eval", f"--config={QUICK}") == (
        "sde-jax: error: missing required flag(s): --workdir"
    )
    line = _error(capsys, "train", f"--config={QUICK}", "--workdir=w", "extra")
    assert line == "sde-jax: error: unexpected argument(s) 'extra'; flags are --name=value"
    assert not os.path.exists("w")


def _record(path: str, level: int) -> logging.LogRecord:
    return logging.LogRecord("absl", level, path, 1, "message", None, None)


def test_log_filter_keeps_our_lines_and_third_party_warnings_only():
    keep = cli._OwnInfo().filter
    ours = os.path.join(ROOT, "sde_jax", "training", "loop.py")
    orbax = "/venv/lib/python3.11/site-packages/orbax/checkpoint/checkpoint_manager.py"
    metric_lines = "/venv/lib/python3.11/site-packages/clu/metric_writers/logging_writer.py"
    assert keep(_record(ours, logging.INFO))
    assert keep(_record(metric_lines, logging.INFO))  # the "[25] loss=..." lines
    assert not keep(_record(orbax, logging.INFO))
    assert keep(_record(orbax, logging.WARNING)) and keep(_record(orbax, logging.ERROR))
