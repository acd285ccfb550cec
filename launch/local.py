"""Runs one command as N JAX processes on this machine, joined by jax.distributed on 127.0.0.1.

    python -m launch.local --num_processes=2 -- sde-jax train --config=... --workdir=...

Each process gets ``--multihost --coordinator_address=127.0.0.1:PORT --num_processes=N
--process_id=i`` appended, its own log file ``LOGDIR/process_i.log``, and CPU collectives
(gloo). This exercises the multi-host code paths (per-host data shards, global batches
assembled from process-local data, checkpoints written by all processes) on one machine.
When one process fails the others are stopped (they would wait for it in a collective
forever). ``--dry_run`` prints the commands instead of running them.
"""

import argparse
import os
import shlex
import socket
import subprocess
import sys
import time

POLL_S = 0.2
GRACE_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def commands(command: list[str], num_processes: int, port: int) -> list[list[str]]:
    """The command of each process."""
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"num_processes must be a positive int, got {num_processes!r}.")
    if not command:
        raise ValueError("command must not be empty: give it after '--'.")
    flags = [
        "--multihost",
        f"--coordinator_address=127.0.0.1:{port}",
        f"--num_processes={num_processes}",
    ]
    return [[*command, *flags, f"--process_id={i}"] for i in range(num_processes)]


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(
    command: list[str],
    num_processes: int,
    logdir: str,
    env: dict | None = None,
    timeout: float | None = None,
) -> int:
    """Starts the processes and waits for all of them.

    Args:
      command: the command every process runs (the multi-host flags are appended).
      num_processes: how many processes.
      logdir: where ``process_i.log`` (stdout and stderr of process i) go.
      env: variables added to this process's environment.
      timeout: seconds after which every process still running is stopped.

    Returns:
      0 if all exited with 0; else the first non-zero exit code (124 on timeout). When one
      process fails the others are stopped at once.
    """
    os.makedirs(logdir, exist_ok=True)
    env = {**os.environ, **(env or {})}
    processes, logs = [], []
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for i, argv in enumerate(commands(command, num_processes, free_port())):
            logs.append(open(os.path.join(logdir, f"process_{i}.log"), "wb"))  # noqa: SIM115
            processes.append(
                subprocess.Popen(argv, stdout=logs[-1], stderr=subprocess.STDOUT, env=env)
            )
        while True:
            codes = [p.poll() for p in processes]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                return failed[0]
            if all(c == 0 for c in codes):
                return 0
            if deadline is not None and time.monotonic() > deadline:
                return 124
            time.sleep(POLL_S)
    finally:
        _stop(processes)
        for log in logs:
            log.close()


def main(argv: list[str] | None = None) -> int:
    """Parses ``[options] -- command ...`` and runs it."""
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        raise SystemExit("usage: python -m launch.local [--num_processes=N] -- COMMAND ...")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="launch.local")
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument("--logdir", default="launch_logs")
    parser.add_argument("--timeout", type=float, default=None, help="seconds; default none")
    parser.add_argument("--dry_run", action="store_true")
    args = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if args.dry_run:
        for line in commands(command, args.num_processes, port=12345):
            print(shlex.join(line))
        return 0
    return run(command, args.num_processes, args.logdir, timeout=args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
