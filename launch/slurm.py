r"""Writes and submits an sbatch script that trains on a multi-node GPU cluster under SLURM.

    python -m launch.slurm --nodes=2 --gpus_per_node=8 --procs_per_node=1 \
        --workdir=/shared/runs/cifar10_ve --partition=gpu --time=48:00:00 \
        --setup='source /shared/venvs/sde_jax/bin/activate' -- \
        python -m sde_jax.cli train --config=configs/ve/cifar10_ncsnpp_continuous.py \
        --config.data.data_dir=/shared/tensorflow_datasets

The script asks for ``--nodes`` nodes with ``--gpus_per_node`` GPUs each and starts the
command with ``srun``, ``--procs_per_node`` tasks per node: 1 (one process drives all the
node's GPUs) or ``--gpus_per_node`` (one process per GPU). ``--multihost`` and
``--workdir=WORKDIR`` are appended; ``jax.distributed.initialize()`` then reads the job from
SLURM's environment (``SLURM_JOB_ID``, ``SLURM_STEP_NODELIST``, ``SLURM_NTASKS``,
``SLURM_PROCID``, ``SLURM_LOCALID``: the coordinator is the first node). JAX's SLURM detection
gives each process only GPU ``SLURM_LOCALID``, right for one process per GPU; with one
process per node the script sets ``JAX_LOCAL_DEVICE_IDS`` to every GPU of the node.

The workdir (checkpoints, TensorBoard, samples) and the data must be on a filesystem every
node sees (a shared mount) or a bucket. SLURM sends SIGTERM ``--signal_s`` seconds before the
time limit; the training loop then writes a checkpoint and stops, and resubmitting the same
script resumes from it. ``--dry_run`` prints the script and the ``sbatch`` command.
"""

import argparse
import os
import re
import shlex
import subprocess

from launch import common

RESERVED = (*common.DISTRIBUTED_FLAGS, "--workdir")
_TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$")


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"--{name} must be a positive integer, got {value!r}.")


# Options whose values become lines of the script.
_SCRIPT_VALUES = ("job_name", "partition", "account", "logdir", "workdir", "chdir", "setup")


def _check(args: argparse.Namespace, command: list[str]) -> None:
    for name in _SCRIPT_VALUES:
        common.check_single_line(f"--{name}", getattr(args, name))
    if args.script is not None:
        common.check_single_line("--script", args.script)
    _positive("nodes", args.nodes)
    _positive("gpus_per_node", args.gpus_per_node)
    if args.procs_per_node not in (1, args.gpus_per_node):
        raise ValueError(
            f"--procs_per_node must be 1 (one process per node) or --gpus_per_node="
            f"{args.gpus_per_node} (one process per GPU), got {args.procs_per_node}."
        )
    if "://" not in args.workdir and not os.path.isabs(args.workdir):
        raise ValueError(
            f"--workdir must be an absolute path on a filesystem all nodes share, or a bucket "
            f"URL, got {args.workdir!r}."
        )
    if args.time is not None and not _TIME.match(args.time):
        raise ValueError(f"--time must be SLURM's [D-]HH[:MM[:SS]], got {args.time!r}.")
    common.check_command(command, RESERVED)


def sbatch_script(args: argparse.Namespace, command: list[str]) -> str:
    """The text of the sbatch script."""
    _check(args, command)
    directives = {
        "job-name": args.job_name,
        "nodes": args.nodes,
        "ntasks-per-node": args.procs_per_node,
        "gpus-per-node": args.gpus_per_node,
        "cpus-per-task": args.cpus_per_task,
        "time": args.time,
        "partition": args.partition,
        "account": args.account,
        "output": os.path.join(args.logdir, "%x-%j.out"),
        "signal": f"TERM@{args.signal_s}",
    }
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH --{k}={v}" for k, v in directives.items() if v is not None]
    lines += ["", "set -euo pipefail", f"cd {shlex.quote(args.chdir)}"]
    if args.setup:
        lines.append(args.setup)
    if args.procs_per_node == 1:
        ids = ",".join(str(i) for i in range(args.gpus_per_node))
        lines.append(f"export JAX_LOCAL_DEVICE_IDS={ids}  # this node's process drives all GPUs")
    full = [*command, "--multihost", f"--workdir={args.workdir}"]
    lines += [
        'echo "sde_jax: job $SLURM_JOB_ID on $SLURM_JOB_NODELIST"',
        f"srun --kill-on-bad-exit=1 {shlex.join(full)}",
        "",
    ]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """The launcher's options (those before ``--``)."""
    p = argparse.ArgumentParser(prog="launch.slurm", description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--gpus_per_node", type=int, required=True)
    p.add_argument("--procs_per_node", type=int, default=1, help="1 or --gpus_per_node")
    p.add_argument("--workdir", required=True, help="shared absolute path or bucket URL")
    p.add_argument("--job_name", default="sde_jax")
    p.add_argument("--partition", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--time", default=None, help="time limit, [D-]HH:MM:SS")
    p.add_argument("--cpus_per_task", type=int, default=None)
    p.add_argument("--signal_s", type=int, default=300, help="SIGTERM this long before the end")
    p.add_argument("--setup", default=None, help="shell line run first, e.g. activate a venv")
    p.add_argument("--chdir", default=os.getcwd(), help="the checkout, on the shared filesystem")
    p.add_argument("--logdir", default="slurm_logs", help="where the job's output goes")
    p.add_argument("--script", default=None, help="sbatch file (default: LOGDIR/JOB.sbatch)")
    p.add_argument("--dry_run", action="store_true", help="print the script, submit nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parses ``[options] -- COMMAND ...``; writes and submits (or prints) the script."""
    options, command = common.split_argv(argv, "launch.slurm")
    args = parser().parse_args(options)
    try:
        text = sbatch_script(args, command)
    except ValueError as e:
        raise SystemExit(f"launch.slurm: {e}") from e
    path = args.script or os.path.join(args.logdir, f"{args.job_name}.sbatch")
    submit = ["sbatch", path]
    if args.dry_run:
        print(f"# {path}\n{text}")
        print(shlex.join(submit))
        return 0
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    os.makedirs(args.logdir, exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return subprocess.run(submit, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
