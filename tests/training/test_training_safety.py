"""Training-state safety: no non-finite checkpoint is written or resumed, configs must match.

One tiny run (the ``test_loop`` network, so the compiled step is shared through the test
compilation cache) diverges on purpose: its data turn to NaN from a chosen step on.
"""

import os
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sde_jax import data
from sde_jax.experiment import Experiment
from sde_jax.training import checkpoint, loop
from tests.training import test_loop

REAL_TRAIN_ITERATOR = data.train_iterator


def config(n_iters=9, **training):
    c = test_loop.tiny_config(n_iters)
    c.training.update(log_freq=10, snapshot_freq=100, snapshot_freq_for_preemption=3)
    c.training.update(snapshot_sampling=False, **training)
    c.eval.enable_loss = False
    return c


def poison(monkeypatch, nan_from, sigterm_at=None):
    """Batches of step ``nan_from`` on are NaN; SIGTERM arrives as step ``sigterm_at`` starts."""

    def iterator(section, local, *, seed, start_step):
        real = REAL_TRAIN_ITERATOR(section, local, seed=seed, start_step=start_step)
        for i, batch in enumerate(real):
            step = start_step + i + 1  # the step this batch is for
            if step == sigterm_at:
                os.kill(os.getpid(), signal.SIGTERM)
            if step >= nan_from:
                batch = {**batch, "image": np.full_like(batch["image"], np.nan)}
            yield batch

    monkeypatch.setattr(data, "train_iterator", iterator)


def on_disk(workdir):
    """{directory: [entries]} of both checkpoint directories."""
    return {
        d: sorted(os.listdir(os.path.join(workdir, d))) for d in ("checkpoints", "checkpoints-meta")
    }


def assert_finite(state):
    for leaf in jax.tree.leaves(state):
        assert np.all(np.isfinite(np.asarray(leaf)))


def restart(workdir):
    """A restart without the NaN data (n_iters 3: restores without training further)."""
    state = loop.train(config(n_iters=3), workdir)
    assert_finite(state)
    return int(state.step)


@pytest.fixture(scope="module")
def diverged(tmp_path_factory):
    """A run whose data turn NaN at step 4: finite preemption save at 3, periodic save at 5."""
    workdir = str(tmp_path_factory.mktemp("diverged"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        poison(monkeypatch, nan_from=4)
        with pytest.raises(checkpoint.NonFiniteStateError) as error:
            loop.train(config(snapshot_freq=5), workdir)
    return workdir, str(error.value)


def test_divergence_between_log_steps_saves_nothing_and_names_the_steps(diverged):
    workdir, error = diverged
    meta = os.path.join(os.path.abspath(workdir), "checkpoints-meta")
    assert error == (
        "training diverged: the train state was finite at step 3 and is not at step 5; "
        f"nothing was saved for step 5. Newest finite checkpoint: step 3 in {meta} "
        "(a restart resumes it). Lower optim.lr or check the data scaling."
    )
    # No non-finite checkpoint and no half-written '*.orbax-checkpoint-tmp*' directory.
    assert on_disk(workdir) == {"checkpoints": [], "checkpoints-meta": ["3"]}
    assert restart(workdir) == 3


def test_sigterm_on_a_diverged_run_saves_nothing_and_fails(tmp_path, monkeypatch):
    workdir = str(tmp_path)
    poison(monkeypatch, nan_from=5, sigterm_at=5)
    with pytest.raises(
        checkpoint.NonFiniteStateError, match="finite at step 3 and is not at step 5"
    ):
        loop.train(config(), workdir)
    assert on_disk(workdir) == {"checkpoints": [], "checkpoints-meta": ["3"]}
    monkeypatch.undo()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    assert restart(workdir) == 3


def test_resuming_with_another_sde_or_model_fails_naming_the_keys(diverged):
    workdir, _ = diverged
    other = config(n_iters=3)
    other.sde.name = "vpsde"
    other.sampling.num_steps = 20  # VP's discrete PC sampler needs >= 20 (sampling: not compared)
    other.model.dropout = 0.1
    other.optim.lr = 1e-3  # a training hyper-parameter: may change
    with pytest.raises(checkpoint.ConfigMismatchError) as error:
        loop.train(other, workdir)
    message = str(error.value)
    assert "keys that differ (checkpoint -> new): model.dropout: 0.0 -> 0.1; " in message
    assert "sde.name: 'vesde' -> 'vpsde'. Use a new workdir, or set " in message
    assert "optim.lr" not in message and os.path.abspath(workdir) in message
    other.training.allow_config_change = True
    assert int(loop.train(other, workdir).step) == 3  # same shapes: resumes when allowed


def test_other_shapes_are_reported_with_the_differing_keys(diverged):
    workdir, _ = diverged
    other = config(n_iters=3)
    other.model.nf = 8
    other.training.allow_config_change = True
    with pytest.raises(checkpoint.ConfigMismatchError) as error:
        loop.train(other, workdir)
    message = str(error.value)
    assert message.startswith(f"the checkpoint step 3 in {os.path.abspath(workdir)}")
    assert "does not fit this config" in message and "model.nf: 16 -> 8" in message
    assert len(message.splitlines()) == 1


def test_a_non_finite_checkpoint_on_disk_is_refused_by_name(diverged, tmp_path):
    workdir = str(tmp_path / "old")
    shutil.copytree(diverged[0], workdir)
    state = loop.train(config(n_iters=3), workdir)
    poisoned = jax.tree.map(
        lambda x: x * np.nan if jnp.issubdtype(x.dtype, jnp.inexact) else x, state
    )
    poisoned = poisoned.replace(step=jnp.asarray(7, jnp.int32))
    old = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))  # as older versions did
    old.save(7, args=ocp.args.StandardSave(poisoned))
    old.close()
    checkpoints = os.path.join(os.path.abspath(workdir), "checkpoints")
    with pytest.raises(checkpoint.NonFiniteStateError, match=f"step 7 in {checkpoints} holds"):
        loop.train(config(n_iters=8), workdir)


def test_finite_check_sees_one_bad_value_of_a_sharded_array():
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    x = np.ones((8 * 3,), np.float32)
    tree = {"w": jax.device_put(x, sharded), "count": jnp.ones((), jnp.int32)}
    assert checkpoint.is_finite(tree)
    x[-1] = np.inf  # on the last device only
    assert not checkpoint.is_finite({**tree, "w": jax.device_put(x, sharded)})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("n_jitted_steps", 0, "training.n_jitted_steps must be an integer >= 1, got 0."),
        ("n_jitted_steps", -2, "training.n_jitted_steps must be an integer >= 1, got -2."),
        ("n_iters", -5, "training.n_iters must be an integer >= 1, got -5."),
        ("n_iters", 0, "training.n_iters must be an integer >= 1, got 0."),
        ("log_freq", -1, r"training.log_freq must be an integer >= 0 \(steps between"),
        ("max_to_keep", 0, r"training.max_to_keep must be an integer >= 1 or None"),
        ("eps", 0.0, r"training.eps must be a number in \(0, 1\], got 0.0."),
        ("label_dropout", 1.5, r"training.label_dropout must be a number in \[0, 1\]"),
    ],
)
def test_invalid_training_values_fail_before_compiling(key, value, message):
    bad = config()
    bad.training[key] = value
    with pytest.raises(ValueError, match=message):
        Experiment(bad)
