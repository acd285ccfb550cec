"""The ``sde-jax`` command line: ``sde-jax COMMAND --config=... --workdir=...``.

The CLI only parses arguments and calls library functions. Each command is one entry of
``COMMANDS``; ``sde-jax COMMAND --help`` lists its flags. Config values can be overridden on
the command line: ``--config.training.batch_size=64``.
"""

import os
import sys
from collections.abc import Callable, Sequence

from absl import app, flags, logging
from ml_collections import config_flags

import sde_jax

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/...).")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.")
flags.DEFINE_integer("num_samples", 64, "sample: number of images to draw.")
flags.DEFINE_string("output", None, "sample: .npz path (default: WORKDIR/samples/final.npz).")
flags.DEFINE_integer("step", None, "sample: checkpoint step to use (default: the newest).")
flags.DEFINE_bool("multihost", False, "Join a multi-process job with jax.distributed.")
flags.DEFINE_string("coordinator_address", None, "multihost: host:port of process 0.")
flags.DEFINE_integer("num_processes", None, "multihost: number of processes.")
flags.DEFINE_integer("process_id", None, "multihost: this process's index.")


def _setup() -> None:
    """Distributed initialization and logging, common to the commands that run models."""
    import jax

    if FLAGS.multihost:
        # CPU collectives across processes (used only by CPU devices; harmless on GPU/TPU).
        # Not conditioned on jax.default_backend(): asking it would initialize the backends,
        # after which jax.distributed.initialize refuses to run.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )
    logging.info(
        "JAX process %d/%d, %d local / %d global devices.",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def _require(*names: str) -> None:
    missing = [f"--{n}" for n in names if getattr(FLAGS, n) is None]
    if missing:
        raise app.UsageError(f"missing required flag(s): {', '.join(missing)}")


def _info(argv: Sequence[str]) -> None:
    """Prints the versions of sde_jax and its main dependencies, and the visible devices."""
    del argv
    import flax
    import jax
    import optax

    print(f"sde_jax {sde_jax.__version__}")
    print(f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}")
    print(f"backend {jax.default_backend()}: {jax.device_count()} device(s)")
    for device in jax.devices():
        print(f"  {device}")


def _train(argv: Sequence[str]) -> None:
    """Trains a score model (resuming from WORKDIR's newest checkpoint), then reports it."""
    del argv
    _require("config", "workdir")
    _setup()
    from sde_jax.training import loop

    loop.train(FLAGS.config, FLAGS.workdir)
    if FLAGS.config.eval.enable_bpd:
        from sde_jax import evaluation

        result = evaluation.held_out_bits_per_dim(FLAGS.config, FLAGS.workdir)
        print(f"held-out bits/dim: {result.mean:.4f} +- {result.stderr:.4f}")


def _sample(argv: Sequence[str]) -> None:
    """Draws --num_samples images with the EMA weights of a checkpoint: .npz and PNG grid."""
    del argv
    _require("config", "workdir")
    _setup()
    from sde_jax import evaluation

    output = FLAGS.output or os.path.join(FLAGS.workdir, "samples", "final.npz")
    evaluation.sample_to_files(FLAGS.config, FLAGS.workdir, FLAGS.num_samples, output, FLAGS.step)


COMMANDS: dict[str, Callable[[Sequence[str]], None]] = {
    "train": _train,
    "sample": _sample,
    "info": _info,
}


def _usage() -> str:
    lines = [
        "usage: sde-jax COMMAND [--flags]",
        "",
        "Score-based generative modeling through SDEs (Song et al., ICLR 2021) in JAX.",
        "",
        "commands:",
    ]
    for name, fn in COMMANDS.items():
        lines.append(f"  {name:<10} {(fn.__doc__ or '').strip().splitlines()[0]}")
    lines.append("")
    lines.append("Run 'sde-jax COMMAND --help' for the flags of one command.")
    lines.append("Example: sde-jax train --config=configs/quickstart.py --workdir=/tmp/quickstart")
    return "\n".join(lines)


def run(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``sde-jax`` console script."""
    argv = list(sys.argv if argv is None else argv)
    # Config files import their shared parts (configs.families) relative to the working
    # directory, as `python -m` would allow.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_usage())
        return
    command = argv[1]
    if command not in COMMANDS:
        print(f"sde-jax: unknown command {command!r}; valid commands: {', '.join(COMMANDS)}.")
        print(_usage())
        raise SystemExit(2)
    app.run(COMMANDS[command], argv=[f"sde-jax {command}", *argv[2:]])


if __name__ == "__main__":
    run()
