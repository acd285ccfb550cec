"""Evaluating trained checkpoints: bits/dim, eval loss, samples and their FID / IS / KID.

``evaluate(config, workdir)`` is ``sde-jax eval`` (see :mod:`sde_jax.evaluation.run`; the
files of ``sde-jax sample`` are the apps layer's); ``final_bits_per_dim`` is the report at the
end of ``sde-jax train`` (``evaluate``'s bpd part, resumable and cached under the same fingerprints,
:mod:`sde_jax.evaluation.cache`); ``held_out_bits_per_dim`` the same without a cache. The
parts, each usable alone: :func:`sharded_bits_per_dim` (resumable, sharded bits/dim),
:func:`eval_loss`, :func:`sample_chunks` and :func:`sample_quality`.
"""

from sde_jax.evaluation.bpd import sharded_bits_per_dim
from sde_jax.evaluation.parts import (
    checkpoint_steps,
    eval_loss,
    load_quality_inputs,
    restore_ema_params,
)
from sde_jax.evaluation.run import (
    PARTS,
    enabled_parts,
    evaluate,
    final_bits_per_dim,
    format_row,
    held_out_bits_per_dim,
    step_dir,
)
from sde_jax.evaluation.samples import features, sample_chunks, sample_quality
from sde_jax.evaluation.store import read_results

__all__ = [
    "PARTS",
    "checkpoint_steps",
    "enabled_parts",
    "eval_loss",
    "evaluate",
    "features",
    "final_bits_per_dim",
    "format_row",
    "held_out_bits_per_dim",
    "load_quality_inputs",
    "read_results",
    "restore_ema_params",
    "sample_chunks",
    "sample_quality",
    "sharded_bits_per_dim",
    "step_dir",
]
