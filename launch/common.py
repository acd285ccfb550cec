"""What every launcher shares: splitting ``[options] -- COMMAND`` and checking the command."""

import sys
import unicodedata

# Flags a launcher sets on the training command itself; the user must not pass them.
DISTRIBUTED_FLAGS = ("--multihost", "--coordinator_address", "--num_processes", "--process_id")


def split_argv(argv: list[str] | None, prog: str) -> tuple[list[str], list[str]]:
    """``[options] -- COMMAND ...`` -> (options, command); exits with usage if malformed."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        raise SystemExit(f"usage: python -m {prog} [options] -- COMMAND ...  (see --help)")
    split = argv.index("--")
    return argv[:split], argv[split + 1 :]


def flag_names(command: list[str]) -> set[str]:
    """The ``--name`` of every ``--name`` / ``--name=value`` argument of ``command``."""
    return {arg.split("=", 1)[0] for arg in command if arg.startswith("--")}


def check_command(command: list[str], reserved: tuple[str, ...]) -> None:
    """Raises ValueError if ``command`` is empty or passes a flag the launcher sets itself.

    Args:
      command: the training command, e.g. ``["sde-jax", "train", "--config=..."]``.
      reserved: the flags the launcher appends (``--multihost``, ``--workdir`` ...).
    """
    if not command:
        raise ValueError("the command to run is empty: give it after '--'.")
    clash = sorted(flag_names(command) & set(reserved))
    if clash:
        raise ValueError(
            f"the command must not set {', '.join(clash)}: the launcher sets "
            f"{', '.join(reserved)} itself; got {' '.join(command)!r}."
        )


def check_single_line(flag: str, value: str | None) -> None:
    """Raises ValueError if ``value`` holds a newline or another control character.

    The launchers write flag values into scripts, one per line: a newline would start a new
    script line (a command the user never meant to run).

    Args:
      flag: the flag's name, e.g. ``"--job_name"``.
      value: its value; None passes.
    """
    if value is None:
        return
    bad = sorted({c for c in value if unicodedata.category(c) in ("Cc", "Zl", "Zp")})
    if bad:
        raise ValueError(
            f"{flag} must be one line without control characters, got {value!r} "
            f"(contains {', '.join(repr(c) for c in bad)})."
        )
