"""Runs one command as N JAX processes on this machine, joined by jax.distributed on 127.0.0.1.

    python -m launch.local --num_processes=2 -- sde-jax train --config=... --workdir=...

Each process gets ``--multihost --coordinator_address=127.0.0.1:PORT --num_processes=N
--process_id=i`` appended, its own log file ``LOGDIR/process_i.log``, and CPU collectives
(gloo). This exercises the multi-host code paths (per-host data shards, global batches
assembled from process-local data, checkpoints written by all processes) on one machine.
``--dry_run`` prints the commands instead of running them.
"""

import argparse
import os
import shlex
import socket
import subprocess
import sys


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commands(command: list[str], num_processes: int, port: int) -> list[list[str]]:
    """The command of each process."""
    flags = [
        "--multihost",
        f"--coordinator_address=127.0.0.1:{port}",
        f"--num_processes={num_processes}",
    ]
    return [[*command, *flags, f"--process_id={i}"] for i in range(num_processes)]


def run(command: list[str], num_processes: int, logdir: str, env: dict | None = None) -> int:
    """Starts the processes, waits for all, returns the first non-zero exit code (or 0)."""
    os.makedirs(logdir, exist_ok=True)
    env = {**os.environ, **(env or {})}
    processes = []
    for i, argv in enumerate(commands(command, num_processes, free_port())):
        log = open(os.path.join(logdir, f"process_{i}.log"), "wb")  # noqa: SIM115
        processes.append(
            (subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env), log)
        )
    codes = []
    for process, log in processes:
        codes.append(process.wait())
        log.close()
    return next((c for c in codes if c), 0)


def main(argv: list[str] | None = None) -> int:
    """Parses ``[options] -- command ...`` and runs it."""
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        raise SystemExit("usage: python -m launch.local [--num_processes=N] -- COMMAND ...")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="launch.local")
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--logdir", default="launch_logs")
    parser.add_argument("--dry_run", action="store_true")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if args.dry_run:
        for line in commands(command, args.num_processes, port=12345):
            print(shlex.join(line))
        return 0
    return run(command, args.num_processes, args.logdir)


if __name__ == "__main__":
    raise SystemExit(main())
