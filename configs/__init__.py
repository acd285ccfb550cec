"""Experiment configs: one ml_collections file per experiment, mirroring the paper's.

Layout: ``default.py`` is the schema (every key, with the CIFAR-10 defaults); ``families.py``
holds the settings shared by SDE families, networks and data sets; ``ve/``, ``vp/`` and
``subvp/`` hold one file per experiment (``ve/cifar10_ncsnpp_continuous.py`` ...);
``quickstart.py`` is a few-minute CPU run on ``digits``.

Variants: every experiment file defines ``get_config(variant: str = "")``. The empty variant
is the full experiment; ``"smoke"`` is the same config with a tiny network on 16x16 images,
batch 8 and a few steps, for tests and CI on CPU (``families.smoke`` lists what it changes;
the SDE, loss, sampler and data set stay the same). ml_collections passes the text after a
colon in the config path as the argument:

    sde-jax train --config=configs/ve/cifar10_ncsnpp_continuous.py:smoke --workdir=/tmp/run

Any other variant raises ValueError. Experiment files import ``configs.families``, so the
repository root must be importable when a config is loaded (as in the original score_sde,
run from its root): ``python -m`` puts the working directory on ``sys.path``, a console
script such as ``sde-jax`` has to add it.

Building the network: a positional embedding with ``scale_by_sigma`` (discrete VE training:
``ve/cifar10_ncsnpp``, ``ve/celeba_ncsnpp``) divides by a table of sigmas that the schema
keeps in the ``sde`` section, so pass ``sigma_min``, ``sigma_max`` and ``num_scales`` from
``config.sde`` to the model builder with the ``model`` section.
"""
