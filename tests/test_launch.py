"""The TPU pod and SLURM launchers, in dry-run: the commands and scripts they would run."""

import shlex

import pytest

from launch import slurm, tpu

TRAIN = ["python3", "-m", "sde_jax.cli", "train", "--config=configs/ve/cifar10_ncsnpp.py"]
TPU_ARGS = ["--tpu=my-v4-64", "--zone=us-central2-b", "--project=proj", "--workdir=gs://b/run"]


def test_tpu_dry_run_sets_up_then_trains_on_every_worker(capsys):
    argv = [*TPU_ARGS, "--repo=https://example.com/sde_jax.git", "--ref=v1", "--dry_run"]
    assert tpu.main([*argv, "--", *TRAIN]) == 0
    setup, train = [shlex.split(line) for line in capsys.readouterr().out.splitlines()]
    for step in (setup, train):
        assert step[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-v4-64"]
        assert {"--zone=us-central2-b", "--project=proj", "--worker=all"} <= set(step)
    setup_cmd = setup[-1].removeprefix("--command=")
    assert "git clone https://example.com/sde_jax.git sde_jax" in setup_cmd
    assert "git checkout v1" in setup_cmd and "pip install -q -e '.[tpu]'" in setup_cmd
    remote = shlex.split(train[-1].removeprefix("--command="))
    assert remote[:3] == ["cd", "sde_jax", "&&"]
    # TPU: jax.distributed initializes itself, so no coordinator flags.
    assert remote[3:] == [*TRAIN, "--multihost", "--workdir=gs://b/run"]


def test_tpu_background_and_skip_setup(capsys):
    argv = [*TPU_ARGS, "--skip_setup", "--background", "--dry_run", "--", *TRAIN]
    assert tpu.main(argv) == 0
    (line,) = capsys.readouterr().out.splitlines()
    remote = shlex.split(line)[-1]
    assert remote.startswith("--command=cd sde_jax && nohup python3 -m sde_jax.cli train")
    assert remote.endswith("> ~/sde_jax_train.log 2>&1 &")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tpu=x", "--zone=z", "--workdir=/local/run", "--skip_setup"], "gs:// bucket"),
        (["--tpu=Bad_Name", "--zone=z", "--workdir=gs://b", "--skip_setup"], "--tpu must"),
        (["--tpu=x", "--zone=z", "--workdir=gs://b"], "--repo"),
    ],
)
def test_tpu_rejects_bad_arguments(argv, message):
    with pytest.raises(SystemExit, match=message):
        tpu.main([*argv, "--dry_run", "--", *TRAIN])


def test_tpu_rejects_flags_the_launcher_sets():
    argv = [*TPU_ARGS, "--skip_setup", "--dry_run", "--", *TRAIN, "--workdir=gs://other"]
    with pytest.raises(SystemExit, match="must not set --workdir"):
        tpu.main(argv)
    with pytest.raises(SystemExit, match="usage"):
        tpu.main([*TPU_ARGS, "--dry_run"])


def _sbatch(capsys, *options):
    argv = ["--nodes=4", "--workdir=/shared/runs/x", "--chdir=/shared/sde_jax", *options]
    assert slurm.main([*argv, "--dry_run", "--", *TRAIN]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "sbatch slurm_logs/sde_jax.sbatch"
    return lines[:-1]


def test_slurm_one_process_per_node_drives_all_gpus(capsys):
    script = _sbatch(capsys, "--gpus_per_node=8", "--time=48:00:00", "--partition=gpu")
    assert script[1] == "#!/bin/bash"
    for directive in (
        "--nodes=4",
        "--ntasks-per-node=1",
        "--gpus-per-node=8",
        "--time=48:00:00",
        "--partition=gpu",
        "--signal=TERM@300",
    ):
        assert f"#SBATCH {directive}" in script
    assert "cd /shared/sde_jax" in script
    assert (
        "export JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7"
        in script[script.index("cd /shared/sde_jax") :][1]
    )
    (srun,) = [line for line in script if line.startswith("srun")]
    # No coordinator flags: jax.distributed.initialize() reads SLURM's environment.
    assert shlex.split(srun) == [
        "srun",
        "--kill-on-bad-exit=1",
        *TRAIN,
        "--multihost",
        "--workdir=/shared/runs/x",
    ]


def test_slurm_one_process_per_gpu(capsys):
    script = _sbatch(capsys, "--gpus_per_node=4", "--procs_per_node=4", "--setup=module load cuda")
    assert "#SBATCH --ntasks-per-node=4" in script and "#SBATCH --gpus-per-node=4" in script
    assert "module load cuda" in script
    # JAX's SLURM detection gives each process GPU SLURM_LOCALID by itself.
    assert not any("JAX_LOCAL_DEVICE_IDS" in line for line in script)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--nodes=0", "--gpus_per_node=8", "--workdir=/s"], "--nodes must be a positive"),
        (["--nodes=2", "--gpus_per_node=8", "--procs_per_node=3", "--workdir=/s"], "1 .* or"),
        (["--nodes=2", "--gpus_per_node=8", "--workdir=runs/x"], "absolute path"),
        (["--nodes=2", "--gpus_per_node=8", "--workdir=/s", "--time=2 days"], "--time must"),
    ],
)
def test_slurm_rejects_bad_arguments(options, message):
    with pytest.raises(SystemExit, match=message):
        slurm.main([*options, "--dry_run", "--", *TRAIN])


def test_slurm_writes_the_script(tmp_path, monkeypatch):
    submitted = []
    monkeypatch.setattr(
        slurm.subprocess,
        "run",
        lambda argv, check: submitted.append(argv) or type("R", (), {"returncode": 0})(),
    )
    path = tmp_path / "job.sbatch"
    argv = ["--nodes=1", "--gpus_per_node=2", "--workdir=gs://b/r", f"--script={path}"]
    assert slurm.main([*argv, f"--logdir={tmp_path}", "--", *TRAIN]) == 0
    assert submitted == [["sbatch", str(path)]]
    assert "srun --kill-on-bad-exit=1 python3 -m sde_jax.cli train" in path.read_text()
