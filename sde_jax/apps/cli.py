"""The ``sde-jax`` command line: ``sde-jax COMMAND --config=... --workdir=...``.

The CLI only parses arguments and calls library functions. Each command is one entry of
``COMMANDS`` with its own flags (``sde-jax COMMAND --help`` lists them); config values can be
overridden on the command line: ``--config.training.batch_size=64``.

Arguments are parsed and checked before JAX, TensorFlow or the package's heavy modules are
imported, so ``--help`` and a mistyped path answer at once and create nothing. Third-party
INFO logs (orbax, absl, TensorFlow, XLA) are hidden unless ``--verbosity`` is given; the
package's own lines and warnings of any origin stay.
"""

import ast
import logging as std_logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags, logging

from sde_jax.apps.command_flags import Command, command_help

# absl's own flags (--verbosity and the logging flags) stay in the global FlagValues; each
# command's flags live in a FlagValues of their own (sde_jax.apps.command_flags).
FLAGS = flags.FLAGS

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup(fv: flags.FlagValues) -> None:
    """Distributed initialization, common to the commands that run models."""
    import jax

    if fv.multihost:
        # CPU collectives across processes (used only by CPU devices; harmless on GPU/TPU).
        # Not conditioned on jax.default_backend(): asking it would initialize the backends,
        # after which jax.distributed.initialize refuses to run.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=fv.coordinator_address,
            num_processes=fv.num_processes,
            process_id=fv.process_id,
        )
    logging.info(
        "JAX process %d/%d, %d local / %d global devices.",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def _is_main_process() -> bool:
    import jax

    return jax.process_index() == 0


def _report(*lines: str) -> None:
    """Prints what a command wrote and its headline figure (process 0 only)."""
    if _is_main_process():
        print("\n".join(lines), flush=True)


def _npz_summary(path: str, array: str) -> str:
    """``'N images, checkpoint step S, NFE n'`` read back from a written ``.npz``."""
    import numpy as np

    with np.load(path) as f:
        parts = [f"{len(f[array])} images"]
        if "step" in f:
            parts.append(f"checkpoint step {int(f['step'])}")
        if "nfe" in f:
            parts.append(f"NFE {int(f['nfe'])}")
    return ", ".join(parts)


def _info(fv: flags.FlagValues) -> None:
    """Prints the versions of sde_jax and its main dependencies, and the visible devices."""
    del fv
    import flax
    import jax
    import optax

    import sde_jax

    print(f"sde_jax {sde_jax.__version__}")
    print(f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}")
    print(f"backend {jax.default_backend()}: {jax.device_count()} device(s)")
    for device in jax.devices():
        print(f"  {device}")


def _train(fv: flags.FlagValues) -> None:
    """Trains a score model (resuming from WORKDIR's newest checkpoint), then reports it."""
    _setup(fv)
    from sde_jax.training import loop

    config, workdir = fv.config, fv.workdir
    state = loop.train(config, workdir)
    step = int(state.step)
    _report(
        f"trained to step {step}/{config.training.n_iters} in {workdir}:",
        f"  checkpoints   {os.path.join(workdir, 'checkpoints')} (and checkpoints-meta)",
        f"  metrics       tensorboard --logdir {os.path.join(workdir, 'tensorboard')}",
        f"  sample grids  {os.path.join(workdir, 'samples', 'step_*.png')}",
    )
    if config.eval.enable_bpd:
        if step < config.training.n_iters:  # stopped by SIGTERM
            logging.warning("Training stopped at step %d: no final bits/dim.", step)
            return
        _final_bits_per_dim(fv)


class _Terminated(Exception):
    """SIGTERM arrived during the final bits/dim."""


def _final_bits_per_dim(fv: flags.FlagValues) -> None:
    """``train``'s held-out bits/dim: resumable, cached like ``eval``'s, stopped by SIGTERM.

    SIGTERM stops it after the unit in progress (saved, so a rerun resumes it) and exits 0,
    as training does after its preemption checkpoint.
    """
    from sde_jax import evaluation

    terminated = threading.Event()
    eval_dir = os.path.join(fv.workdir, "eval")

    def on_unit(batch_index: int, repeat: int) -> None:
        if terminated.is_set():
            raise _Terminated(f"batch {batch_index}, repeat {repeat}")

    previous = signal.signal(signal.SIGTERM, lambda signum, frame: terminated.set())
    try:
        row = evaluation.final_bits_per_dim(fv.config, fv.workdir, on_unit=on_unit)
    except _Terminated as e:
        logging.warning("SIGTERM: stopped the final bits/dim after %s; progress saved.", e)
        print(
            f"SIGTERM: final bits/dim stopped after {e} (progress saved under {eval_dir}); "
            "rerun the same command to resume it."
        )
        return
    finally:
        signal.signal(signal.SIGTERM, previous)
    _report(
        f"held-out bits/dim: {row['bpd']:.4f} +- {row['bpd_stderr'] or float('nan'):.4f} "
        f"(step {row['step']}; in {os.path.join(eval_dir, 'results.json')})"
    )


def _sample(fv: flags.FlagValues) -> None:
    """Draws --num_samples images with the EMA weights of a checkpoint: .npz and PNG grid."""
    _setup(fv)
    if fv["class"].value is not None:
        _sample_classes(fv)
        return
    from sde_jax.apps import sample, writers

    output = fv.output or os.path.join(fv.workdir, "samples", "final.npz")
    sample.sample_to_files(fv.config, fv.workdir, fv.num_samples, output, fv.step)
    npz = writers.npz_path(output)
    _report(f"wrote {npz} and {writers.png_path(output)}: {_npz_summary(npz, 'samples')}")


def _eval(fv: flags.FlagValues) -> None:
    """Evaluates checkpoints: bits/dim, eval loss, samples, FID/IS/KID (resumable)."""
    _setup(fv)
    from sde_jax import evaluation

    rows = evaluation.evaluate(fv.config, fv.workdir, step=fv.step)
    eval_dir = os.path.join(fv.workdir, "eval")
    lines = [evaluation.format_row(row) for row in rows]
    steps = ", ".join(os.path.basename(evaluation.step_dir(fv.workdir, r["step"])) for r in rows)
    lines.append(f"results in {os.path.join(eval_dir, 'results.json')} (details: {steps})")
    _report(*lines)


def _sample_classes(fv: flags.FlagValues) -> None:
    """``sample --class``: classifier-free guidance, or classifier guidance with a classifier."""
    from sde_jax.apps import class_samples, writers

    try:
        classes = class_samples.parse_classes(fv["class"].value)
    except ValueError as e:
        raise UserError(str(e)) from e
    output = fv.output or os.path.join(
        fv.workdir, "samples", "class_" + "-".join(map(str, classes)) + ".npz"
    )
    class_samples.sample_classes_to_files(
        fv.config,
        fv.workdir,
        output,
        classes,
        fv.num_samples,
        fv.guidance_scale,
        classifier_config=fv.classifier_config,
        classifier_workdir=fv.classifier_workdir,
        step=fv.step,
    )
    npz = writers.npz_path(output)
    _report(
        f"wrote {npz}, {writers.png_path(output)} and {writers.png_path(output, '_class<k>')} "
        f"for each class: {_npz_summary(npz, 'samples')}"
    )


def _fid_stats(fv: flags.FlagValues) -> None:
    """Computes FID/KID reference statistics of a data split (Inception pool3 features)."""
    config = fv.config
    output = fv.output or config.eval.reference_stats
    if output is None:
        raise UserError("missing --output (or set --config.eval.reference_stats)")
    _setup(fv)
    from sde_jax.evaluation import fid_stats

    stats = fid_stats.write_reference_stats(
        config.data,
        fv.inception or config.eval.inception_path,
        output,
        config.eval.batch_size,
        split=fv.split,
        max_examples=fv.max_examples,
    )
    _report(f"wrote {output}: reference statistics of {stats.num_examples} images")


def _convert_inception(fv: flags.FlagValues) -> None:
    """Converts the 2015 Inception graph (classify_image_graph_def.pb) to our .npz weights."""
    from sde_jax.evaluation import inception_graph

    diffs = inception_graph.convert(fv.source, fv.output, verify=fv.verify)
    print(f"wrote {fv.output}")
    if diffs is not None:
        print(f"max difference from the TensorFlow graph: {diffs}")


def _controllable(fv: flags.FlagValues, name: str, array: str, **kwargs: Any) -> None:
    """Runs ``controllable_files.<name>_to_files`` on the flags; reports the files it wrote."""
    _setup(fv)
    from sde_jax.apps import controllable_files, writers

    to_files = getattr(controllable_files, f"{name}_to_files")
    stem = f"inpaint_{fv.mask}" if name == "inpaint" else name
    output = fv.output or os.path.join(fv.workdir, "controllable", f"{stem}.npz")
    source = {"split": fv.split, "image_dir": fv.image_dir, "step": fv.step}
    to_files(fv.config, fv.workdir, output, **source, **kwargs)
    npz = writers.npz_path(output)
    _report(f"wrote {npz} and {writers.png_path(output)}: {_npz_summary(npz, array)}")


def _inpaint(fv: flags.FlagValues) -> None:
    """Inpaints images of a split or --image_dir under --mask: .npz and PNG grid."""
    _controllable(
        fv,
        "inpaint",
        "inpainted",
        num_images=fv.num_images,
        mask=fv.mask,
        method=fv.conditioning,
    )


def _colorize(fv: flags.FlagValues) -> None:
    """Colorizes gray versions of images of a split or --image_dir: .npz and PNG grid."""
    _controllable(fv, "colorize", "colorized", num_images=fv.num_images)


def _interpolate(fv: flags.FlagValues) -> None:
    """Interpolates between pairs of images in the probability-flow latent space: PNG grid."""
    _controllable(fv, "interpolate", "path", num_pairs=fv.num_pairs, num_points=fv.num_points)


_SOURCE = ("split", "Data split (default: data.eval_split)."), "image_dir", "step"

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command(
            "train",
            _train,
            "Train a score model (resumes from WORKDIR), then report held-out bits/dim.",
            ("config", ("workdir", "The run's directory (created if missing).")),
            required=("config", "workdir"),
        ),
        Command(
            "sample",
            _sample,
            "Draw images with a checkpoint's EMA weights: .npz and PNG grid.",
            (
                "config",
                ("workdir", "The trained run's directory."),
                "num_samples",
                ("output", ".npz path (default: WORKDIR/samples/final.npz)."),
                "step",
                "class",
                "guidance_scale",
                "classifier_workdir",
                "classifier_config",
            ),
            required=("config", "workdir"),
            checkpoints=("workdir", "classifier_workdir"),
        ),
        Command(
            "eval",
            _eval,
            "Evaluate checkpoints: bits/dim, eval loss, samples, FID/IS/KID (resumable).",
            ("config", ("workdir", "The trained run's directory."), "step"),
            required=("config", "workdir"),
            checkpoints=("workdir",),
        ),
        Command(
            "inpaint",
            _inpaint,
            "Inpaint images of a split or --image_dir under --mask: .npz and PNG grid.",
            (
                "config",
                ("workdir", "The trained run's directory."),
                "num_images",
                "mask",
                "conditioning",
                *_SOURCE,
                ("output", ".npz path (default: WORKDIR/controllable/inpaint_MASK.npz)."),
            ),
            required=("config", "workdir"),
            checkpoints=("workdir",),
        ),
        Command(
            "colorize",
            _colorize,
            "Colorize gray versions of images of a split or --image_dir: .npz and PNG grid.",
            (
                "config",
                ("workdir", "The trained run's directory."),
                "num_images",
                *_SOURCE,
                ("output", ".npz path (default: WORKDIR/controllable/colorize.npz)."),
            ),
            required=("config", "workdir"),
            checkpoints=("workdir",),
        ),
        Command(
            "interpolate",
            _interpolate,
            "Interpolate between image pairs in the probability-flow latent space.",
            (
                "config",
                ("workdir", "The trained run's directory."),
                "num_pairs",
                "num_points",
                *_SOURCE,
                ("output", ".npz path (default: WORKDIR/controllable/interpolate.npz)."),
            ),
            required=("config", "workdir"),
            checkpoints=("workdir",),
        ),
        Command(
            "info",
            _info,
            "Print the versions of sde_jax, JAX, Flax, optax and the visible devices.",
            (),
            distributed=False,
        ),
        Command(
            "fid-stats",
            _fid_stats,
            "Compute FID/KID reference statistics of a data split (Inception pool3).",
            (
                "config",
                ("output", ".npz path (default: eval.reference_stats)."),
                "inception",
                ("split", "Data split (default: data.train_split)."),
                "max_examples",
            ),
            required=("config",),
        ),
        Command(
            "convert-inception",
            _convert_inception,
            "Convert the 2015 Inception graph (.pb) to our .npz weights.",
            ("source", ("output", "The .npz to write."), "verify"),
            required=("source", "output"),
            distributed=False,
        ),
    )
}

_HELP_FLAGS = ("-h", "--help", "-help", "--helpfull", "--helpshort", "-?")


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: sde-jax COMMAND [--flags]",
        "",
        "Score-based generative modeling through SDEs (Song et al., ICLR 2021) in JAX.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items()),
        "",
        "Run 'sde-jax COMMAND --help' for the flags of one command.",
        "Example: sde-jax train --config=configs/quickstart.py --workdir=runs/quickstart",
    ]
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


def _has_checkpoint(workdir: str) -> bool:
    """Whether ``workdir`` holds a checkpoint step directory (bucket URLs: not checked)."""
    if "://" in workdir:
        return True
    for name in ("checkpoints", "checkpoints-meta"):
        directory = os.path.join(workdir, name)
        if os.path.isdir(directory) and any(e.isdigit() for e in os.listdir(directory)):
            return True
    return False


def _check_flags(command: Command, fv: flags.FlagValues) -> None:
    """Required flags and the workdirs to read, before anything runs or is created."""
    missing = [f"--{n}" for n in command.required if fv[n].value is None]
    if missing:
        raise UserError(f"missing required flag(s): {', '.join(missing)}")
    for name in command.checkpoints:
        workdir = fv[name].value
        if workdir is None:
            continue
        if "://" not in workdir and not os.path.isdir(workdir):
            raise UserError(f"--{name}: no such directory {workdir!r} (from {os.getcwd()}).")
        if not _has_checkpoint(workdir):
            raise UserError(
                f"--{name}: {workdir!r} holds no checkpoint (no {workdir}/checkpoints/<step>); "
                "train first: sde-jax train --config=... --workdir=..."
            )
    if "classifier_workdir" in fv and (fv.classifier_workdir is None) != (
        fv.classifier_config is None
    ):
        raise UserError("--classifier_workdir and --classifier_config go together.")


def _parse_flags(command: Command, fv: flags.FlagValues, argv: list[str]) -> list[str]:
    """Parses absl's flags, then the command's; a bad flag or config is a one-line UserError.

    A misspelled override (``--config.training.n_iter=5``) raises AttributeError inside
    ml_collections; a config file that fails to load raises absl's ``flags.Error``.
    """
    _check_config_paths(argv)
    try:
        rest = FLAGS(argv, known_only=True)  # --verbosity and absl's other logging flags
        rest = fv(rest)
    except flags.UnrecognizedFlagError as e:
        raise UserError(
            f"--{e.flagname} is not a flag of 'sde-jax {command.name}'; its flags: "
            f"{', '.join('--' + f for f in fv)} (sde-jax {command.name} --help)"
        ) from e
    except flags.Error as e:
        raise UserError(_flag_error_line(e)) from e
    except (AttributeError, KeyError) as e:
        raise UserError(f"no such config key {_one_line(e)}") from e
    if len(rest) > 1:
        raise UserError(f"unexpected argument(s) {' '.join(rest[1:])!r}; flags are --name=value")
    return rest


class _OwnInfo(std_logging.Filter):
    """Passes warnings and errors, and INFO lines of sde_jax itself and of its metric writer."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.levelno >= std_logging.WARNING:
            return True
        path = record.pathname
        return path.startswith(_PACKAGE_DIR) or path.endswith(
            os.path.join("metric_writers", "logging_writer.py")
        )


def _quiet_third_party_logs() -> Callable[[], None]:
    """Hides third-party INFO logs unless --verbosity was given; returns the undo function."""
    if FLAGS["verbosity"].present:
        return lambda: None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow and XLA C++: no INFO
    handler = logging.get_absl_handler()
    own = _OwnInfo()
    handler.addFilter(own)
    return lambda: handler.removeFilter(own)


def _wants_debug(argv: Sequence[str]) -> bool:
    return any(arg in ("--debug", "--debug=true", "--debug=True", "--debug=1") for arg in argv)


def _dispatch(command: Command, command_argv: list[str]) -> None:
    """Runs one command; an error of the user's making prints one line (not with --debug)."""
    fv = command.flag_values()

    def main(argv: Sequence[str]) -> None:
        del argv  # parsed by _parse_flags
        _check_flags(command, fv)
        undo = _quiet_third_party_logs()
        try:
            command.run(fv)
        finally:
            undo()

    try:
        app.run(main, argv=command_argv, flags_parser=lambda a: _parse_flags(command, fv, a))
    except (*USER_ERRORS, FloatingPointError) as e:
        if _wants_debug(command_argv):
            raise
        print(f"sde-jax: error: {_one_line(e)}", file=sys.stderr)
        raise SystemExit(1 if isinstance(e, FloatingPointError) else 2) from None
    finally:
        FLAGS.unparse_flags()  # a next run() in this process parses afresh


def run(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``sde-jax`` console script."""
    argv = list(sys.argv if argv is None else argv)
    # Config files import their shared parts (configs.families) relative to the working
    # directory, as `python -m` would allow. Appended, not prepended: a local file named like
    # an installed module (optax.py) must not shadow it.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    if len(argv) < 2 or argv[1] in (*_HELP_FLAGS, "help"):
        print(_usage())
        return
    name = argv[1]
    if name not in COMMANDS:
        print(
            f"sde-jax: error: unknown command {name!r}; valid commands: {', '.join(COMMANDS)}.",
            file=sys.stderr,
        )
        print(_usage(), file=sys.stderr)
        raise SystemExit(2)
    if any(arg in _HELP_FLAGS for arg in argv[2:]):
        print(command_help(COMMANDS[name]))
        return
    command_argv = [f"sde-jax {name}", *argv[2:]]
    # ml_collections finds --config.x overrides in sys.argv when it parses, so run([...]) from
    # Python must show them there too.
    saved, sys.argv = sys.argv, command_argv
    try:
        _dispatch(COMMANDS[name], command_argv)
    finally:
        sys.argv = saved


if __name__ == "__main__":
    run()
