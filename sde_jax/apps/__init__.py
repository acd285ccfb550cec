"""The commands of ``sde-jax`` and the files they write (the top layer: nothing imports it).

:mod:`~sde_jax.apps.cli` parses the command line and calls one function per command;
:mod:`~sde_jax.apps.class_samples` (``sample --class``) and
:mod:`~sde_jax.apps.controllable_files` (``inpaint``, ``colorize``, ``interpolate``) restore
a checkpoint, run the library's samplers and write ``.npz`` files and PNG grids.
"""
