"""The ``sde-jax`` command line: ``sde-jax COMMAND --config=... --workdir=...``.

The CLI only parses arguments and calls library functions. Each command is one entry of
``COMMANDS``; ``sde-jax COMMAND --help`` lists its flags. Config values can be overridden on
the command line: ``--config.training.batch_size=64``.
"""

import ast
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from absl import app, flags, logging
from ml_collections import config_flags

import sde_jax

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/...).")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.")
flags.DEFINE_integer("num_samples", 64, "sample: number of images to draw.")
flags.DEFINE_string("output", None, "sample: .npz path (default: WORKDIR/samples/final.npz).")
flags.DEFINE_integer("step", None, "sample, eval: checkpoint step (default: the newest).")
flags.DEFINE_string("inception", None, "fid-stats: Inception .npz (default: eval.inception_path).")
flags.DEFINE_string(
    "split",
    None,
    "fid-stats: data split (default: data.train_split); inpaint, colorize,"
    " interpolate: (default: data.eval_split).",
)
flags.DEFINE_integer("max_examples", None, "fid-stats: use only the first N examples of the split.")
flags.DEFINE_string("source", None, "convert-inception: classify_image_graph_def.pb to convert.")
flags.DEFINE_bool("verify", True, "convert-inception: compare with the graph run in TensorFlow.")
flags.DEFINE_integer("num_images", 16, "inpaint/colorize: images to condition on.")
flags.DEFINE_enum("mask", "half", ["half", "center", "random"], "inpaint: the region to fill.")
flags.DEFINE_enum(
    "conditioning",
    "replacement",
    ["replacement", "reconstruction"],
    "inpaint: the paper's replacement, or replacement plus reconstruction guidance.",
)
flags.DEFINE_string("image_dir", None, "inpaint/colorize/interpolate: read a folder instead.")
flags.DEFINE_integer("num_pairs", 4, "interpolate: pairs of images to interpolate between.")
flags.DEFINE_integer("num_points", 8, "interpolate: points along each path, ends included.")
flags.DEFINE_string(
    "class", None, "sample: class(es) to draw, '3' or '0,3,7' (guided; see --guidance_scale)."
)
flags.DEFINE_float(
    "guidance_scale",
    1.0,
    "sample --class: classifier-free weight w ((1 + w) s(x, t, y) - w s(x, t, null)) for a "
    "class-conditional model; classifier guidance scale lambda otherwise (1: the paper's).",
)
flags.DEFINE_string(
    "classifier_workdir", None, "sample --class: the noise-conditional classifier's workdir."
)
config_flags.DEFINE_config_file(
    "classifier_config", None, "sample --class: the classifier's config (configs/classifier/...)."
)
flags.DEFINE_bool("debug", False, "Show the full traceback of an error instead of one line.")
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

    state = loop.train(FLAGS.config, FLAGS.workdir)
    if FLAGS.config.eval.enable_bpd:
        if int(state.step) < FLAGS.config.training.n_iters:  # stopped by SIGTERM
            logging.warning("Training stopped at step %d: no final bits/dim.", int(state.step))
            return
        _final_bits_per_dim()


class _Terminated(Exception):
    """SIGTERM arrived during the final bits/dim."""


def _final_bits_per_dim() -> None:
    """``train``'s held-out bits/dim: resumable, cached like ``eval``'s, stopped by SIGTERM.

    SIGTERM stops it after the unit in progress (saved, so a rerun resumes it) and exits 0,
    as training does after its preemption checkpoint.
    """
    from sde_jax import evaluation

    terminated = threading.Event()

    def on_unit(batch_index: int, repeat: int) -> None:
        if terminated.is_set():
            raise _Terminated(f"batch {batch_index}, repeat {repeat}")

    previous = signal.signal(signal.SIGTERM, lambda signum, frame: terminated.set())
    try:
        row = evaluation.final_bits_per_dim(FLAGS.config, FLAGS.workdir, on_unit=on_unit)
    except _Terminated as e:
        logging.warning("SIGTERM: stopped the final bits/dim after %s; progress saved.", e)
        print(
            f"SIGTERM: final bits/dim stopped after {e} (progress saved under "
            f"{os.path.join(FLAGS.workdir, 'eval')}); rerun the same command to resume it."
        )
        return
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(f"held-out bits/dim: {row['bpd']:.4f} +- {row['bpd_stderr'] or float('nan'):.4f}")


def _sample(argv: Sequence[str]) -> None:
    """Draws --num_samples images with the EMA weights of a checkpoint: .npz and PNG grid."""
    del argv
    _require("config", "workdir")
    _setup()
    if FLAGS["class"].value is not None:
        _sample_classes()
        return
    from sde_jax.apps import sample

    output = FLAGS.output or os.path.join(FLAGS.workdir, "samples", "final.npz")
    sample.sample_to_files(FLAGS.config, FLAGS.workdir, FLAGS.num_samples, output, FLAGS.step)


def _eval(argv: Sequence[str]) -> None:
    """Evaluates checkpoints: bits/dim, eval loss, samples, FID/IS/KID (resumable)."""
    del argv
    _require("config", "workdir")
    _setup()
    from sde_jax import evaluation

    for row in evaluation.evaluate(FLAGS.config, FLAGS.workdir, step=FLAGS.step):
        print(evaluation.format_row(row))


def _sample_classes() -> None:
    """``sample --class``: classifier-free guidance, or classifier guidance with a classifier."""
    from sde_jax.apps import class_samples

    try:
        classes = class_samples.parse_classes(FLAGS["class"].value)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    if (FLAGS.classifier_workdir is None) != (FLAGS.classifier_config is None):
        raise app.UsageError("--classifier_workdir and --classifier_config go together.")
    name = "class_" + "-".join(map(str, classes))
    output = FLAGS.output or os.path.join(FLAGS.workdir, "samples", f"{name}.npz")
    class_samples.sample_classes_to_files(
        FLAGS.config,
        FLAGS.workdir,
        output,
        classes,
        FLAGS.num_samples,
        FLAGS.guidance_scale,
        classifier_config=FLAGS.classifier_config,
        classifier_workdir=FLAGS.classifier_workdir,
        step=FLAGS.step,
    )


def _fid_stats(argv: Sequence[str]) -> None:
    """Computes FID/KID reference statistics of a data split (Inception pool3 features)."""
    del argv
    _require("config")
    _setup()
    from sde_jax.evaluation import fid_stats

    config = FLAGS.config
    output = FLAGS.output or config.eval.reference_stats
    if output is None:
        raise app.UsageError("missing --output (or set --config.eval.reference_stats)")
    fid_stats.write_reference_stats(
        config.data,
        FLAGS.inception or config.eval.inception_path,
        output,
        config.eval.batch_size,
        split=FLAGS.split,
        max_examples=FLAGS.max_examples,
    )


def _convert_inception(argv: Sequence[str]) -> None:
    """Converts the 2015 Inception graph (classify_image_graph_def.pb) to our .npz weights."""
    del argv
    _require("source", "output")
    from sde_jax.evaluation import inception_graph

    diffs = inception_graph.convert(FLAGS.source, FLAGS.output, verify=FLAGS.verify)
    print(f"wrote {FLAGS.output}")
    if diffs is not None:
        print(f"max difference from the TensorFlow graph: {diffs}")


def _controllable_output(name: str) -> str:
    return FLAGS.output or os.path.join(FLAGS.workdir, "controllable", f"{name}.npz")


def _inpaint(argv: Sequence[str]) -> None:
    """Inpaints images of a split or --image_dir under --mask: .npz and PNG grid."""
    del argv
    _require("config", "workdir")
    _setup()
    from sde_jax.apps import controllable_files as files

    files.inpaint_to_files(
        FLAGS.config,
        FLAGS.workdir,
        _controllable_output(f"inpaint_{FLAGS.mask}"),
        num_images=FLAGS.num_images,
        mask=FLAGS.mask,
        method=FLAGS.conditioning,
        split=FLAGS.split,
        image_dir=FLAGS.image_dir,
        step=FLAGS.step,
    )


def _colorize(argv: Sequence[str]) -> None:
    """Colorizes gray versions of images of a split or --image_dir: .npz and PNG grid."""
    del argv
    _require("config", "workdir")
    _setup()
    from sde_jax.apps import controllable_files as files

    files.colorize_to_files(
        FLAGS.config,
        FLAGS.workdir,
        _controllable_output("colorize"),
        num_images=FLAGS.num_images,
        split=FLAGS.split,
        image_dir=FLAGS.image_dir,
        step=FLAGS.step,
    )


def _interpolate(argv: Sequence[str]) -> None:
    """Interpolates between pairs of images in the probability-flow latent space: PNG grid."""
    del argv
    _require("config", "workdir")
    _setup()
    from sde_jax.apps import controllable_files as files

    files.interpolate_to_files(
        FLAGS.config,
        FLAGS.workdir,
        _controllable_output("interpolate"),
        num_pairs=FLAGS.num_pairs,
        num_points=FLAGS.num_points,
        split=FLAGS.split,
        image_dir=FLAGS.image_dir,
        step=FLAGS.step,
    )


COMMANDS: dict[str, Callable[[Sequence[str]], None]] = {
    "train": _train,
    "sample": _sample,
    "eval": _eval,
    "inpaint": _inpaint,
    "colorize": _colorize,
    "interpolate": _interpolate,
    "info": _info,
    "fid-stats": _fid_stats,
    "convert-inception": _convert_inception,
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


class UserError(Exception):
    """An error of the command line's input (flags, overrides, the config file)."""


# Errors that the user's input causes (config validation, a bad path, a misspelled key): one
# line on stderr and exit code 2. A diverged run (FloatingPointError) exits with 1.
USER_ERRORS = (UserError, ValueError, TypeError, KeyError, OSError)


def _unquote(text: str) -> str:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return _unquote(value) if isinstance(value, str) and value != text else text


def _one_line(error: BaseException) -> str:
    """The message of ``error`` (or of its cause, if its own is empty) on one line."""
    while error is not None:
        message = error.args[0] if len(error.args) == 1 else str(error)
        message = str(message)
        if message[:1] in "'\"" and message[-1:] == message[:1]:  # KeyError quotes its key
            message = _unquote(message)
        message = " ".join(message.split())
        if message:
            return message
        error = error.__cause__ or error.__context__
    return "unknown error"


def _flag_error_line(error: flags.Error) -> str:
    """``'flag --x=v: LAST LINE'`` of absl's message, which may embed a whole traceback."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) <= 1:
        return _one_line(error)
    head = lines[0].split(": ", 1)[0]
    return f"{head}: {lines[-1]}"


def _check_config_paths(argv: Sequence[str]) -> None:
    """A missing ``--config`` / ``--classifier_config`` file, named (ml_collections hides it)."""
    for arg in argv:
        name, _, value = arg.partition("=")
        if name in ("--config", "--classifier_config") and value:
            path = value.split(":", 1)[0]
            if not os.path.isfile(path):
                raise UserError(f"{name}: no such file {path!r} (from {os.getcwd()}).")


def _parse_flags(argv: list[str]) -> list[str]:
    """Parses the flags; a bad override or config file is a UserError with one line.

    A misspelled override (``--config.training.n_iter=5``) raises AttributeError inside
    ml_collections; a config file that fails to load raises absl's ``flags.Error``.
    """
    _check_config_paths(argv)
    try:
        return FLAGS(argv)
    except flags.Error as e:
        raise UserError(_flag_error_line(e)) from e
    except (AttributeError, KeyError) as e:
        raise UserError(f"no such config key {_one_line(e)}") from e


def _wants_debug(argv: Sequence[str]) -> bool:
    return any(arg in ("--debug", "--debug=true", "--debug=True", "--debug=1") for arg in argv)


def _dispatch(command: str, command_argv: list[str]) -> None:
    """Runs one command; an error of the user's making prints one line (not with --debug)."""
    try:
        app.run(COMMANDS[command], argv=command_argv, flags_parser=_parse_flags)
    except (*USER_ERRORS, FloatingPointError) as e:
        if _wants_debug(command_argv):
            raise
        print(f"sde-jax: error: {_one_line(e)}", file=sys.stderr)
        raise SystemExit(1 if isinstance(e, FloatingPointError) else 2) from None


def run(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``sde-jax`` console script."""
    argv = list(sys.argv if argv is None else argv)
    # Config files import their shared parts (configs.families) relative to the working
    # directory, as `python -m` would allow. Appended, not prepended: a local file named like
    # an installed module (optax.py) must not shadow it.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_usage())
        return
    command = argv[1]
    if command not in COMMANDS:
        print(f"sde-jax: unknown command {command!r}; valid commands: {', '.join(COMMANDS)}.")
        print(_usage())
        raise SystemExit(2)
    command_argv = [f"sde-jax {command}", *argv[2:]]
    # ml_collections finds --config.x overrides in sys.argv when it parses, so run([...]) from
    # Python must show them there too.
    saved, sys.argv = sys.argv, command_argv
    try:
        _dispatch(command, command_argv)
    finally:
        sys.argv = saved


if __name__ == "__main__":
    run()
