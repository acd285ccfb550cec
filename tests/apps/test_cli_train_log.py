"""The quickstart smoke run's log: quiet, with progress; a finished rerun reuses bits/dim."""

import os
import re
import subprocess
import sys

import pytest

from tests.evaluation.test_eval import CLI_OVERRIDES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACKAGE_FILES = {
    name for _, _, names in os.walk(os.path.join(ROOT, "sde_jax")) for name in names
} | {"logging_writer.py"}  # clu's metric lines ("[3] loss=...") are ours too
# TensorFlow's C++ prints "oneDNN custom operations are on" (port.cc) on import, before its
# logging starts: TF_CPP_MIN_LOG_LEVEL does not hide it, only TF_ENABLE_ONEDNN_OPTS=0, which
# would change TensorFlow's numerics. It is the one third-party INFO line left.
TENSORFLOW_IMPORT = "port.cc"
# absl's prefix: "I1202 19:30:01.123456 140000 loop.py:216] Starting at step 0."
INFO_LINE = re.compile(r"^I\d{4} [\d:.]+ +\d+ ([^:\]]+):\d+\]")


def _train(workdir: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "sde_jax.apps.cli",
        "train",
        "--config=configs/quickstart.py:smoke",
        f"--workdir={workdir}",
        *CLI_OVERRIDES,
    ]
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": ROOT}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI's own default, not the test suite's
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow  # two CLI subprocesses, one of them training and evaluating
def test_smoke_train_log_is_quiet_shows_progress_and_a_rerun_reuses_bits_per_dim(tmp_path):
    workdir = str(tmp_path / "run")
    first = _train(workdir)
    log = first.stderr
    info_files = {m.group(1) for m in map(INFO_LINE.match, log.splitlines()) if m}
    third_party = info_files - PACKAGE_FILES - {TENSORFLOW_IMPORT}
    assert "loop.py" in info_files and not third_party, third_party  # no orbax, absl, XLA
    assert "orbax" not in log.lower()
    assert "Compiling the train step" in log
    assert re.search(r"train: step \d+/3 \(\d+%\), .* ETA \d+s", log), log[-3000:]
    assert "Compiling the bits/dim function" in log
    out = first.stdout.splitlines()
    assert out[0] == f"trained to step 3/3 in {workdir}:"
    assert f"  checkpoints   {workdir}/checkpoints (and checkpoints-meta)" in out
    bpd = [line for line in out if line.startswith("held-out bits/dim: ")]
    assert len(bpd) == 1 and f"in {workdir}/eval/results.json" in bpd[0]

    again = _train(workdir)
    assert "Training already finished at step 3" in again.stderr
    assert "Step 3: reusing bpd" in again.stderr
    assert "Compiling the bits/dim function" not in again.stderr
    assert "Compiling the train step" not in again.stderr
    assert [line for line in again.stdout.splitlines() if line.startswith("held-out")] == bpd
