"""Named random streams, the task objects against the previous code's numbers, one compile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_jax import sharding
from sde_jax.evaluation import cache
from sde_jax.experiment import Experiment, rng
from sde_jax.training import loop
from sde_jax.training.state import create_state
from sde_jax.training.step import train_step
from tests import test_classifier
from tests.training import test_loop

# Recorded with the code before the task objects (commit b508e92: `Experiment.step_fn` with
# `step_kwargs`, and `Experiment.eval_metrics`), on the parameters of `_fixed_state`, the 16
# first digits and eval key 7. The step's key is split as before (loss, dropout, labels).
OLD_SCORE_TRAIN = {"loss": 32.709930419921875, "grad_norm": 58.791786193847656}
OLD_CLASSIFIER_TRAIN = {"loss": 2.409496545791626, "grad_norm": 1.7427583932876587}
OLD_CLASSIFIER_EVAL = {
    "eval_loss": 2.3669791221618652,
    "eval_accuracy": 0.125,
    "eval_accuracy/t=0.00": 0.125,
    "eval_accuracy/t=0.25": 0.0625,
    "eval_accuracy/t=0.50": 0.0625,
    "eval_accuracy/t=0.75": 0.125,
    "eval_accuracy/t=1.00": 0.0625,
}


def test_streams_of_nearby_seeds_never_collide():
    seeds = range(64)
    keys = jax.vmap(
        lambda s: jax.vmap(lambda i: jax.random.fold_in(jax.random.key(s), i))(
            jnp.arange(len(rng.STREAMS))
        )
    )(jnp.arange(64))
    data = np.asarray(jax.random.key_data(keys)).reshape(-1, 2)
    assert len({tuple(row) for row in data}) == len(seeds) * len(rng.STREAMS)
    # stream_key is that fold: spot-check it, and that seed 43's init is not 42's next stream
    for seed, name in [(0, "init"), (42, "train_eval_loss"), (63, rng.STREAMS[-1])]:
        got = jax.random.key_data(rng.stream_key(seed, name))
        np.testing.assert_array_equal(got, data[seed * len(rng.STREAMS) + rng.STREAMS.index(name)])
    init_43 = jax.random.key_data(rng.stream_key(43, "init"))
    assert not np.array_equal(init_43, jax.random.key_data(rng.stream_key(42, "train")))


def test_stream_errors_name_the_valid_streams():
    with pytest.raises(ValueError, match=r"stream must be one of \['init', 'train'"):
        rng.stream_key(0, "sampels")
    with pytest.raises(ValueError, match=r"seed must be an integer, got 1.5"):
        rng.stream_key(1.5, "init")


def test_split_named_keeps_the_keys_of_the_first_names():
    key = jax.random.key(3)
    two = rng.split_named(key, ("loss", "dropout"))
    three = rng.split_named(key, rng.STEP_STREAMS)
    for name in ("loss", "dropout"):
        np.testing.assert_array_equal(
            jax.random.key_data(two[name]), jax.random.key_data(three[name])
        )


def test_the_fingerprint_records_the_stream_version(monkeypatch):
    config = test_loop.tiny_config(2)
    before = {part: cache.part_fingerprint(config, part, 2) for part in cache.PART_KEYS}
    assert all(cache.settings(config, p, 2)["rng"] == rng.STREAMS_VERSION for p in before)
    monkeypatch.setattr(cache, "STREAMS_VERSION", "streams-v0")
    for part, fingerprint in before.items():
        assert cache.part_fingerprint(config, part, 2) != fingerprint


def _fixed_state(experiment):
    x = jnp.zeros((1, *experiment.image_shape))
    init = jax.jit(lambda: experiment.model.init(jax.random.key(0), x, jnp.ones(1), train=False))
    return create_state(init()["params"], experiment.tx, jax.random.key(1))


def test_score_step_matches_the_old_code_and_compiles_once():
    config = test_loop.tiny_config(2)
    config.training.n_jitted_steps = 1
    experiment = Experiment(config, devices=jax.devices()[:1])
    state = _fixed_state(experiment)
    shardings = sharding.state_shardings(jax.eval_shape(lambda: state), experiment.mesh)
    state = jax.device_put(state, shardings)
    step_fn = loop._compile_step(experiment, shardings)
    batch = {"image": np.asarray(test_classifier.digits_batch(16)["image"])[None]}
    state, metrics = step_fn(state, batch)
    for name, value in OLD_SCORE_TRAIN.items():
        np.testing.assert_allclose(float(metrics[name][0]), value, rtol=1e-5)
    state, _ = step_fn(state, batch)
    assert int(state.step) == 2
    assert step_fn._cache_size() == 1  # the second call reused the first compilation


def test_classifier_task_matches_the_old_code():
    experiment = Experiment(test_classifier.classifier_config(2))
    assert experiment.task_name == "classifier" and experiment.sampler is None
    state = _fixed_state(experiment)
    batch = test_classifier.digits_batch(16)
    step = jax.jit(
        lambda s, b: train_step(
            s, b, objective=experiment.task.objective, tx=experiment.tx, ema_rate=0.999
        )
    )
    _, metrics = step(state, batch)
    assert set(metrics) == {"loss", "grad_norm", "accuracy"}
    for name, value in OLD_CLASSIFIER_TRAIN.items():
        np.testing.assert_allclose(float(metrics[name]), value, rtol=1e-5)
    evals = jax.jit(experiment.eval_metrics)(state, batch, jax.random.key(7))
    assert set(evals) == set(OLD_CLASSIFIER_EVAL)
    for name, value in OLD_CLASSIFIER_EVAL.items():
        np.testing.assert_allclose(float(jnp.mean(evals[name])), value, rtol=1e-5)
