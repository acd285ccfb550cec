"""``python -m sde_jax.cli``: the ``sde-jax`` command (:mod:`sde_jax.apps.cli`) by its old path.

Launch scripts and job specs run the command as a module; this alias keeps that spelling
working now that the commands live in the apps layer.
"""

from sde_jax.apps.cli import run

__all__ = ["run"]

if __name__ == "__main__":
    run()
