"""The ``sde-jax`` command line: ``sde-jax COMMAND [--flags]``.

The CLI only parses arguments and calls library functions. Each command is one entry of
``COMMANDS``; ``sde-jax COMMAND --help`` lists its flags.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from absl import app

import sde_jax


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


COMMANDS: dict[str, Callable[[Sequence[str]], None]] = {
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
    return "\n".join(lines)


def run(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``sde-jax`` console script."""
    argv = list(sys.argv if argv is None else argv)
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
