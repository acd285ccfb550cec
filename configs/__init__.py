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

Building the network: ``sde_jax.experiment.build.build_model_from_config(config)``. The
networks take no SDE parameter: ``model.scale_by_sigma`` (dividing the output by sigma, as
every VE config does) is applied by the score wrapper with the SDE of the ``sde`` section
(``get_score_fn(sde, model.apply, params, **build.score_kwargs(config))``).
"""
