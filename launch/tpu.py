r"""Runs one training command on every worker of a Cloud TPU VM pod slice.

    python -m launch.tpu --tpu=my-v4-64 --zone=us-central2-b --project=my-project \
        --workdir=gs://my-bucket/runs/cifar10_ve --repo=https://github.com/ORG/sde_jax.git -- \
        python3 -m sde_jax.cli train --config=configs/ve/cifar10_ncsnpp_continuous.py \
        --config.data.data_dir=gs://my-bucket/tensorflow_datasets

Two ``gcloud compute tpus tpu-vm ssh NAME --worker=all --command=...`` calls, run on every
host of the slice at once:

1. setup (skipped with ``--skip_setup``): clone ``--repo`` at ``--ref`` into ``--remote_dir``
   (or update it), install it with the TPU build of jax (``pip install -e '.[tpu]'``);
2. the command, from ``--remote_dir``, with ``--multihost --workdir=WORKDIR`` appended.

On Cloud TPU, ``jax.distributed.initialize()`` finds the coordinator, the process count and
this host's index by itself, so no coordinator flags are passed. Every host must see the same
working directory and data, hence a ``gs://`` workdir (checkpoints via orbax, TensorBoard
events, samples) and a TFDS ``data.data_dir`` on a bucket. With ``--background`` the command
runs under ``nohup`` (log in ``~/sde_jax_train.log`` on each worker) so that it survives the
SSH session; otherwise ``gcloud`` streams every worker's output until training ends.
``--dry_run`` prints the commands instead of running them.
"""

import argparse
import re
import shlex
import subprocess

from launch import common

LOG = "~/sde_jax_train.log"
RESERVED = (*common.DISTRIBUTED_FLAGS, "--workdir")
_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def _check(args: argparse.Namespace, command: list[str]) -> None:
    if not args.tpu or not _NAME.match(args.tpu):
        raise ValueError(
            f"--tpu must name the TPU VM (lowercase letters, digits and '-'), got {args.tpu!r}."
        )
    if not args.zone:
        raise ValueError("--zone is required (the TPU's zone, e.g. us-central2-b).")
    if not (args.workdir or "").startswith("gs://"):
        raise ValueError(
            f"--workdir must be a gs:// bucket path that every worker can write, got "
            f"{args.workdir!r}; a local path would give each host its own checkpoints."
        )
    if not args.skip_setup and not args.repo:
        raise ValueError(
            "--repo (the git URL to clone on each worker) is required unless "
            "--skip_setup says the workers are already set up."
        )
    common.check_command(command, RESERVED)


def gcloud_ssh(args: argparse.Namespace, remote_command: str) -> list[str]:
    """``gcloud compute tpus tpu-vm ssh`` running ``remote_command`` on all workers."""
    argv = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu, f"--zone={args.zone}"]
    if args.project:
        argv.append(f"--project={args.project}")
    return [*argv, "--worker=all", f"--command={remote_command}"]


def setup_command(args: argparse.Namespace) -> str:
    """Shell for each worker: clone or update the repository, install it for TPU."""
    d, repo, ref = shlex.quote(args.remote_dir), shlex.quote(args.repo), shlex.quote(args.ref)
    return (
        f"set -e; if [ ! -d {d}/.git ]; then git clone {repo} {d}; fi; cd {d}; "
        f"git fetch --all --tags; git checkout {ref}; "
        f"(git pull --ff-only 2>/dev/null || true); "
        f"python3 -m pip install -q -U pip; python3 -m pip install -q -e '.[tpu]'"
    )


def train_command(args: argparse.Namespace, command: list[str]) -> str:
    """Shell for each worker: the training command, from the checkout, as a multi-host job."""
    full = [*command, "--multihost", f"--workdir={args.workdir}"]
    run = shlex.join(full)
    if args.background:
        run = f"nohup {run} > {LOG} 2>&1 &"
    return f"cd {shlex.quote(args.remote_dir)} && {run}"


def plan(args: argparse.Namespace, command: list[str]) -> list[list[str]]:
    """The local commands (gcloud invocations) to run, in order."""
    _check(args, command)
    steps = [] if args.skip_setup else [gcloud_ssh(args, setup_command(args))]
    return [*steps, gcloud_ssh(args, train_command(args, command))]


def parser() -> argparse.ArgumentParser:
    """The launcher's options (those before ``--``)."""
    p = argparse.ArgumentParser(prog="launch.tpu", description=__doc__.splitlines()[0])
    p.add_argument("--tpu", required=True, help="TPU VM name (a pod slice: all its workers)")
    p.add_argument("--zone", required=True)
    p.add_argument("--project", default=None, help="default: gcloud's configured project")
    p.add_argument("--workdir", required=True, help="gs://bucket/path of the run")
    p.add_argument("--repo", default=None, help="git URL cloned on each worker")
    p.add_argument("--ref", default="main", help="branch, tag or commit to check out")
    p.add_argument("--remote_dir", default="sde_jax", help="checkout path on each worker")
    p.add_argument("--skip_setup", action="store_true", help="workers are already set up")
    p.add_argument("--background", action="store_true", help=f"nohup, log in {LOG}")
    p.add_argument("--dry_run", action="store_true", help="print the commands only")
    return p


def main(argv: list[str] | None = None) -> int:
    """Parses ``[options] -- COMMAND ...``; runs (or prints) the gcloud commands."""
    options, command = common.split_argv(argv, "launch.tpu")
    args = parser().parse_args(options)
    try:
        steps = plan(args, command)
    except ValueError as e:
        raise SystemExit(f"launch.tpu: {e}") from e
    for step in steps:
        if args.dry_run:
            print(shlex.join(step))
            continue
        code = subprocess.run(step, check=False).returncode
        if code:
            return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
