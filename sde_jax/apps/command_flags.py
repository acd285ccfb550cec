"""The flags of the ``sde-jax`` commands and their ``--help`` text.

Each :class:`Command` names its flags; :data:`FLAG_SPECS` defines each flag once (its kind,
default and help, which a command may reword). Only absl and ml_collections are imported, so
``sde-jax COMMAND --help`` answers before JAX or TensorFlow would load.
"""

import dataclasses
import textwrap
from collections.abc import Callable
from typing import Any

from absl import flags
from ml_collections import config_flags

__all__ = ["COMMON", "DISTRIBUTED", "FLAG_SPECS", "Command", "command_help", "flag_line"]


def _define_enum(name, default, help_text, *, flag_values, enum_values):
    flags.DEFINE_enum(name, default, enum_values, help_text, flag_values=flag_values)


# name -> (define function, default, help, extra keyword arguments)
FLAG_SPECS: dict[str, tuple[Callable[..., Any], Any, str, dict[str, Any]]] = {
    "config": (
        config_flags.DEFINE_config_file,
        None,
        "Experiment config file (configs/...; FILE:VARIANT picks a variant, e.g. :smoke). "
        "Override its keys with --config.KEY=VALUE.",
        {},
    ),
    "workdir": (flags.DEFINE_string, None, "The run's directory.", {}),
    "step": (flags.DEFINE_integer, None, "Checkpoint step (default: the newest).", {}),
    "output": (flags.DEFINE_string, None, "Output path.", {}),
    "num_samples": (flags.DEFINE_integer, 64, "Number of images to draw.", {}),
    "class": (
        flags.DEFINE_string,
        None,
        "Class(es) to draw, '3' or '0,3,7' (guided; see --guidance_scale).",
        {},
    ),
    "guidance_scale": (
        flags.DEFINE_float,
        1.0,
        "With --class: classifier-free weight w ((1 + w) s(x, t, y) - w s(x, t, null)) for a "
        "class-conditional model; classifier guidance scale lambda otherwise (1: the paper's).",
        {},
    ),
    "classifier_workdir": (
        flags.DEFINE_string,
        None,
        "With --class: the noise-conditional classifier's workdir.",
        {},
    ),
    "classifier_config": (
        config_flags.DEFINE_config_file,
        None,
        "With --class: the classifier's config (configs/classifier/...).",
        {},
    ),
    "inception": (
        flags.DEFINE_string,
        None,
        "Inception .npz weights (default: eval.inception_path).",
        {},
    ),
    "split": (flags.DEFINE_string, None, "Data split (default: data.eval_split).", {}),
    "max_examples": (flags.DEFINE_integer, None, "Use only the first N examples.", {}),
    "source": (flags.DEFINE_string, None, "classify_image_graph_def.pb to convert.", {}),
    "verify": (flags.DEFINE_bool, True, "Compare with the graph run in TensorFlow.", {}),
    "num_images": (flags.DEFINE_integer, 16, "Images to condition on.", {}),
    "mask": (
        _define_enum,
        "half",
        "The region to fill.",
        {"enum_values": ["half", "center", "random"]},
    ),
    "conditioning": (
        _define_enum,
        "replacement",
        "The paper's replacement, or replacement plus reconstruction guidance.",
        {"enum_values": ["replacement", "reconstruction"]},
    ),
    "image_dir": (flags.DEFINE_string, None, "Read the images from a folder instead.", {}),
    "num_pairs": (flags.DEFINE_integer, 4, "Pairs of images to interpolate between.", {}),
    "num_points": (flags.DEFINE_integer, 8, "Points along each path, ends included.", {}),
    "debug": (
        flags.DEFINE_bool,
        False,
        "Show the full traceback of an error instead of one line.",
        {},
    ),
    "multihost": (flags.DEFINE_bool, False, "Join a multi-process job (jax.distributed).", {}),
    "coordinator_address": (
        flags.DEFINE_string,
        None,
        "With --multihost: process 0's host:port.",
        {},
    ),
    "num_processes": (flags.DEFINE_integer, None, "With --multihost: number of processes.", {}),
    "process_id": (flags.DEFINE_integer, None, "With --multihost: this process's index.", {}),
}

COMMON = ("debug",)
DISTRIBUTED = ("multihost", "coordinator_address", "num_processes", "process_id")


@dataclasses.dataclass(frozen=True)
class Command:
    """One ``sde-jax`` command.

    Attributes:
      name: the command's name.
      run: ``run(fv)``, given the parsed flags.
      summary: one line for the command list.
      flags: its own flags, each ``name`` or ``(name, help)`` when the help differs from the
        shared one; ``--debug`` (and the distributed flags when ``distributed``) are added.
      required: the flags it cannot run without.
      checkpoints: the flags naming workdirs whose checkpoints it reads (checked first).
      distributed: whether it takes the ``--multihost`` flags.
    """

    name: str
    run: Callable[[flags.FlagValues], None]
    summary: str
    flags: tuple[str | tuple[str, str], ...]
    required: tuple[str, ...] = ()
    checkpoints: tuple[str, ...] = ()
    distributed: bool = True

    def flag_values(self) -> flags.FlagValues:
        """A fresh FlagValues with this command's flags defined."""
        fv = flags.FlagValues()
        extra = COMMON + (DISTRIBUTED if self.distributed else ())
        for entry in (*self.flags, *extra):
            name, help_text = entry if isinstance(entry, tuple) else (entry, None)
            define, default, shared_help, kwargs = FLAG_SPECS[name]
            define(name, default, help_text or shared_help, flag_values=fv, **kwargs)
        return fv


_METAVARS = {
    "workdir": "DIR",
    "classifier_workdir": "DIR",
    "image_dir": "DIR",
    "output": "PATH",
    "source": "PATH",
    "inception": "PATH",
    "coordinator_address": "HOST:PORT",
    "class": "K[,K...]",
    "split": "SPLIT",
}
_TYPE_METAVARS = {"int": "N", "float": "X", "multi_string": "VALUE"}


def flag_line(flag: flags.Flag) -> tuple[str, str]:
    """``('--name=VALUE', 'help (default: d; one of: ...)')`` of one flag."""
    enum_values = getattr(flag.parser, "enum_values", None)
    if flag.flag_type() == "bool":
        left = f"--[no]{flag.name}"
    elif flag.name.endswith("config"):
        left = f"--{flag.name}=FILE"
    elif enum_values:
        left = f"--{flag.name}={'|'.join(enum_values)}"
    else:
        metavar = _METAVARS.get(flag.name, _TYPE_METAVARS.get(flag.flag_type(), "VALUE"))
        left = f"--{flag.name}={metavar}"
    help_text = flag.help
    if enum_values and help_text.startswith("<"):  # absl's "<a|b|c>: " prefix, shown on the left
        help_text = help_text.split(": ", 1)[-1]
    if flag.default is not None and not flag.name.endswith("config"):
        default = str(flag.default).lower() if flag.flag_type() == "bool" else flag.default
        help_text += f" (default: {default})"
    return left, help_text


def command_help(command: Command) -> str:
    """The ``sde-jax COMMAND --help`` text: usage, summary and every flag of ``command``."""
    name = command.name
    fv = command.flag_values()
    required = " ".join(f"--{r}=..." for r in command.required)
    rows = [flag_line(fv[f]) for f in fv]
    rows.append(("--verbosity=N", "Log level; given, third-party INFO logs show too (0: INFO)."))
    width = min(max(len(left) for left, _ in rows), 24)
    lines = [
        f"usage: sde-jax {name} {required} [flags]".replace("  ", " "),
        "",
        command.summary,
        "",
        "flags:",
    ]
    for left, right in rows:
        indent = " " * (width + 4)
        if len(left) > width:  # the help on the next line
            lines.append(f"  {left}")
            lines.append(textwrap.fill(right, 96, initial_indent=indent, subsequent_indent=indent))
        else:
            first = f"  {left:<{width}}  "
            lines.append(textwrap.fill(right, 96, initial_indent=first, subsequent_indent=indent))
    return "\n".join(lines)
