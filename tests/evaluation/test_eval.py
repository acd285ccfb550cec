"""Evaluation: sharded and resumable bits/dim, eval loss, sample chunks, checkpoint ranges, CLI."""

import csv
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import quickstart
from sde_jax import data, evaluation, sharding
from sde_jax.apps import cli
from sde_jax.evaluation import cache, parts, samples, store
from sde_jax.experiment import Experiment
from sde_jax.training import loop


class Interrupt(Exception):
    pass


def tiny_config():
    """The quickstart's smoke variant shrunk further: 8x8 digits, nf 8."""
    config = quickstart.get_config("smoke")
    config.data.image_size = 8
    config.model.update(nf=8, attn_resolutions=(4,))
    config.training.update(n_iters=2, snapshot_freq=1, snapshot_sampling=False, eval_freq=0)
    config.eval.update(batch_size=8, bpd_repeats=2, bpd_max_examples=16, num_samples=12)
    return config


# The same values as command-line overrides of configs/quickstart.py:smoke.
CLI_OVERRIDES = [
    "--config.data.image_size=8",
    "--config.model.nf=8",
    "--config.model.attn_resolutions=(4,)",
    "--config.eval.batch_size=8",
    "--config.eval.bpd_max_examples=8",
    "--config.eval.enable_sampling=False",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workdir trained 2 steps with a checkpoint after each; its experiment and EMA params."""
    workdir = str(tmp_path_factory.mktemp("trained"))
    config = tiny_config()
    loop.train(config, workdir)
    experiment = Experiment(config)
    params, step = parts.restore_ema_params(experiment, workdir)
    assert step == 2
    return workdir, experiment, params


def first_batches(config, batch_size, count):
    iterator = data.eval_iterator(config.data, batch_size, raw_uint8=True)
    return [next(iterator) for _ in range(count)]


def test_sharded_bpd_equals_single_device_and_resumes(trained, tmp_path):
    _, experiment, params = trained
    config = experiment.config
    assert experiment.mesh.size == 8
    batches = first_batches(config, 8, 2)
    assert all(b["mask"].all() for b in batches)
    key = jax.random.key(3)
    data_range = (-1.0, 1.0)  # the quickstart's DDPM++ sees centered data
    assert config.data.centered

    def sharded(progress_path=None, on_unit=None, num_repeats=2):
        return evaluation.sharded_bits_per_dim(
            key,
            experiment.sde,
            experiment.score_fn,
            params,
            iter(batches),
            mesh=experiment.mesh,
            num_repeats=num_repeats,
            data_range=data_range,
            progress_path=progress_path,
            on_unit=on_unit,
        )

    result = sharded()
    # The same loop on one device, on the same batches and keys.
    single = evaluation.sharded_bits_per_dim(
        key,
        experiment.sde,
        experiment.score_fn,
        jax.device_get(params),
        iter(batches),
        mesh=sharding.make_mesh(1, 1, jax.devices()[:1]),
        num_repeats=2,
        data_range=data_range,
    )
    assert result._fields == single._fields and result.num_examples == 16
    for name in ("mean", "stderr", "mean_nfe"):  # stderr is small: examples barely differ yet
        np.testing.assert_allclose(
            getattr(result, name), getattr(single, name), rtol=1e-5, atol=1e-6
        )
    np.testing.assert_allclose(result.repeat_means, single.repeat_means, rtol=1e-5)
    assert 1.0 < result.mean < 20.0 and result.stderr > 0

    # Interrupted after the first batch's two repeats, then resumed from the file.
    path = str(tmp_path / "bpd.npz")
    done = []

    def stop_after_two(index, repeat):
        done.append((index, repeat))
        if len(done) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        sharded(path, stop_after_two)
    done.clear()
    resumed = sharded(path, lambda i, r: done.append((i, r)))
    assert done == [(1, 0), (1, 1)]  # batch 0 was not recomputed
    for name in ("mean", "stderr", "mean_nfe", "num_examples"):
        np.testing.assert_allclose(getattr(resumed, name), getattr(result, name), rtol=1e-6)
    np.testing.assert_allclose(resumed.repeat_means, result.repeat_means, rtol=1e-6)

    # A rerun with everything on file evaluates nothing; other settings are refused.
    done.clear()
    again = sharded(path, lambda i, r: done.append((i, r)))
    assert done == [] and again.mean == resumed.mean
    with pytest.raises(ValueError, match="delete the file"):
        sharded(path, num_repeats=3)

    # eval.bpd_max_examples masks the rest of the split: the first 12 examples' values.
    stored = np.load(path)
    per_example = stored["bpd"].reshape(2, 2, 8).transpose(1, 0, 2).reshape(2, 16)
    config.eval.bpd_max_examples = 12
    try:
        limited = parts.bits_per_dim_of_split(experiment, params, "test", key)
    finally:
        config.eval.bpd_max_examples = 16
    assert limited.num_examples == 12
    np.testing.assert_allclose(limited.mean, per_example[:, :12].mean(), rtol=1e-5)


def test_eval_loss_equals_a_direct_computation(trained):
    _, experiment, params = trained
    config = experiment.config
    key = jax.random.key(5)
    result = evaluation.eval_loss(experiment, params, data.eval_iterator(config.data, 8), key)
    # Directly: the loss of each whole (padded) batch on one device, real examples summed.
    params = jax.device_put(params, jax.devices()[0])
    loss_fn = jax.jit(lambda k, x: experiment.loss_fn(k, experiment.score_fn(params), x))
    total, count = 0.0, 0
    for i, batch in enumerate(data.eval_iterator(config.data, 8)):
        out = loss_fn(jax.random.fold_in(key, i), batch["image"])
        total += float(np.sum(np.asarray(out.per_example)[batch["mask"]]))
        count += int(batch["mask"].sum())
    assert count == 297  # the digits test split; its last batch holds one digit and padding
    np.testing.assert_allclose(result, total / count, rtol=1e-5)


def fake_sample_fn(calls):
    def sample(index):
        calls.append(index)
        rng = np.random.default_rng(index)
        return rng.integers(0, 256, (4, 3, 3, 1), dtype=np.uint8), {"nfe": np.asarray(index)}

    return sample


def test_sample_chunks_resume_and_skip_finished_chunks(tmp_path):
    calls = []
    straight = evaluation.sample_chunks(
        fake_sample_fn(calls), num_samples=10, chunk_size=4, directory=str(tmp_path / "a")
    )
    expected = np.concatenate(list(samples.iterate_samples(straight)))
    assert calls == [0, 1, 2] and expected.shape == (10, 3, 3, 1)  # the last chunk keeps 2

    def stop_after_first(index):
        raise Interrupt

    calls.clear()
    with pytest.raises(Interrupt):
        evaluation.sample_chunks(
            fake_sample_fn(calls), num_samples=10, chunk_size=4, directory=str(tmp_path / "b"),
            on_chunk=stop_after_first,
        )  # fmt: skip
    calls.clear()
    paths = evaluation.sample_chunks(
        fake_sample_fn(calls), num_samples=10, chunk_size=4, directory=str(tmp_path / "b")
    )
    assert calls == [1, 2]
    np.testing.assert_array_equal(np.concatenate(list(samples.iterate_samples(paths))), expected)
    assert sorted(os.listdir(tmp_path / "b")) == [f"chunk_{i:06d}.npz" for i in range(3)]


def projection_features(seed=0):
    """A fake Inception: fixed random projections of the pixels (pool3 6-d, logits 5-d)."""
    rng = np.random.default_rng(seed)
    w_pool, w_logit = rng.normal(size=(192, 6)), rng.normal(size=(192, 5))

    def feature_fn(images):  # jittable, as the Inception network is
        flat = jnp.reshape(images, (images.shape[0], -1)).astype(jnp.float32) / 255.0
        return flat @ w_pool[: flat.shape[1]], flat @ w_logit[: flat.shape[1]]

    return feature_fn


def test_sample_quality_sees_every_sample_once_in_order():
    rng = np.random.default_rng(1)
    chunks = [rng.integers(0, 256, (n, 3, 3, 1), dtype=np.uint8) for n in (4, 4, 3)]
    feature_fn = projection_features()
    seen_shapes = []

    def counting(images):
        seen_shapes.append(images.shape)
        return feature_fn(images)

    pool, logits = evaluation.features(chunks, counting, batch_size=5)
    assert seen_shapes == [(5, 3, 3, 3)] * 3  # full batches of RGB, the last one padded
    rgb = np.repeat(np.concatenate(chunks), 3, axis=-1)
    want_pool, want_logits = feature_fn(rgb)
    np.testing.assert_allclose(pool, want_pool)
    np.testing.assert_allclose(logits, want_logits)

    def quality_fn(pool3, logits, reference):
        return {"fid": np.sum((pool3.mean(0) - reference) ** 2), "n": len(logits)}

    result = evaluation.sample_quality(
        chunks, feature_fn, want_pool.mean(0), batch_size=4, quality_fn=quality_fn
    )
    assert result == {"fid": pytest.approx(0.0, abs=1e-10), "n": 11.0}

    # The default metrics (sde_jax.evaluation.metrics) against statistics of the same images.
    from sde_jax.evaluation import metrics

    reference = metrics.ReferenceStats(
        mu=want_pool.mean(0).astype(np.float64),
        sigma=np.cov(np.asarray(want_pool, np.float64), rowvar=False),
        kid_features=np.asarray(want_pool, np.float32),
        num_examples=11,
    )
    result = evaluation.sample_quality(chunks, feature_fn, reference, batch_size=4)
    assert set(result) == {"fid", "inception_score", "inception_score_std", "kid"}
    assert abs(result["fid"]) < 1e-4 and 1.0 <= result["inception_score"] <= 5.0


def test_quality_inputs_fail_clearly_when_a_named_file_is_missing(tmp_path):
    eval_config = tiny_config().eval
    assert evaluation.load_quality_inputs(eval_config) is None  # unset: skipped
    eval_config.inception_path = str(tmp_path / "inception.npz")
    with pytest.raises(FileNotFoundError, match=r"eval.inception_path=.*does not exist"):
        evaluation.load_quality_inputs(eval_config)


def eval_config(**updates):
    config = tiny_config()
    config.eval.update(**updates)
    return config


def test_evaluate_checkpoint_range_once_and_writes_results(trained, tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    shutil.copytree(trained[0], workdir)
    restored = []
    restore = parts.restore_ema_params
    monkeypatch.setattr(
        parts, "restore_ema_params", lambda e, w, s: restored.append(s) or restore(e, w, s)
    )
    quality = (projection_features(), None)

    def quality_fn(pool3, logits, reference):
        return {"fid": float(np.mean(pool3)), "kid": float(len(pool3))}

    config = eval_config(begin_step=2)
    rows = evaluation.evaluate(config, workdir, quality=quality, quality_fn=quality_fn)
    assert restored == [2] and [r["step"] for r in rows] == [2]
    row = rows[0]
    assert row["bpd_examples"] == 16 and 0.0 < row["bpd"] < 20.0 and row["bpd_stderr"] > 0
    assert np.isfinite(row["eval_loss"]) and row["num_samples"] == 12 and row["kid"] == 12.0

    # The whole range: step 1 is new, step 2 is skipped without restoring it.
    config = eval_config(begin_step=1, end_step=2)
    rows = evaluation.evaluate(config, workdir, quality=quality, quality_fn=quality_fn)
    assert restored == [2, 1] and [r["step"] for r in rows] == [1, 2]
    evaluation.evaluate(config, workdir, quality=quality, quality_fn=quality_fn)
    assert restored == [2, 1]

    eval_dir = os.path.join(workdir, "eval")
    with open(os.path.join(eval_dir, "results.json")) as f:
        stored = json.load(f)["rows"]
    assert [r["step"] for r in stored] == [1, 2] and stored[1] == rows[1]
    with open(os.path.join(eval_dir, "results.csv")) as f:
        table = list(csv.DictReader(f))
    assert [int(r["step"]) for r in table] == [1, 2]
    np.testing.assert_allclose([float(r["bpd"]) for r in table], [r["bpd"] for r in stored])
    step2 = evaluation.step_dir(workdir, 2)
    fingerprint = cache.part_fingerprint(config, "samples", 2)
    assert os.path.exists(os.path.join(step2, f"samples-{fingerprint}.png"))
    chunks = os.listdir(os.path.join(step2, f"samples-{fingerprint}"))
    assert len(chunks) == 2  # 12 samples, chunks of 8
    assert any("events" in f for f in os.listdir(os.path.join(eval_dir, "tensorboard")))

    # Enabling another part later evaluates only that part.
    config.eval.bpd_on_train = True
    rows = evaluation.evaluate(config, workdir, step=2, quality=quality, quality_fn=quality_fn)
    assert restored == [2, 1, 2] and rows[0]["bpd_train_examples"] == 16
    assert rows[0]["bpd"] == stored[1]["bpd"]


def test_cli_eval(trained, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    shutil.copytree(trained[0], workdir)
    config = ["--config=configs/quickstart.py:smoke", f"--workdir={workdir}", *CLI_OVERRIDES]
    with pytest.raises(SystemExit) as exit_:  # absl's app.run exits
        cli.run(["sde-jax", "eval", *config])
    assert not exit_.value.code
    out = capsys.readouterr().out
    assert out.startswith("step 2: bpd ") and "eval_loss" in out
    rows = evaluation.read_results(os.path.join(workdir, "eval"))
    assert [r["step"] for r in rows] == [2] and rows[0]["bpd_examples"] == 8
    assert "num_samples" not in rows[0]


def _counting_restores(monkeypatch):
    restored = []
    restore = parts.restore_ema_params
    monkeypatch.setattr(
        parts, "restore_ema_params", lambda e, w, s: restored.append(s) or restore(e, w, s)
    )
    return restored


def test_changed_settings_compute_a_new_entry_and_same_settings_reuse(
    trained, tmp_path, monkeypatch
):
    workdir = str(tmp_path / "run")
    shutil.copytree(trained[0], workdir)
    restored = _counting_restores(monkeypatch)
    config = eval_config(enable_bpd=True, enable_loss=False, enable_sampling=False)
    config.eval.bpd_max_examples = 8
    (first,) = evaluation.evaluate(config, workdir, step=2)
    config.eval.bpd_repeats = 1  # was "already evaluated" with the old row before fingerprints
    (second,) = evaluation.evaluate(config, workdir, step=2)
    assert restored == [2, 2]
    assert second["fingerprint"] != first["fingerprint"] and second["bpd"] != first["bpd"]
    stored = evaluation.read_results(os.path.join(workdir, "eval"))
    assert sorted(r["fingerprint"] for r in stored) == sorted(
        [first["fingerprint"], second["fingerprint"]]
    )
    config.eval.bpd_repeats = 2  # the first settings again: reused, not recomputed
    (again,) = evaluation.evaluate(config, workdir, step=2)
    assert restored == [2, 2] and again == first


def test_interrupted_sample_set_is_not_completed_with_other_settings(
    trained, tmp_path, monkeypatch
):
    workdir = str(tmp_path / "run")
    shutil.copytree(trained[0], workdir)
    config = eval_config(enable_bpd=False, enable_loss=False, enable_sampling=True)
    config.eval.num_samples = 16  # two chunks of 8

    def interrupt(index):
        raise Interrupt

    with pytest.raises(Interrupt):
        evaluation.evaluate(config, workdir, step=2, on_chunk=interrupt)
    old = cache.part_fingerprint(config, "samples", 2)
    config.sampling.num_steps = 3  # another sampler: another NFE
    (row,) = evaluation.evaluate(config, workdir, step=2)
    new = cache.part_fingerprint(config, "samples", 2)
    step2 = evaluation.step_dir(workdir, 2)
    assert new != old and len(os.listdir(os.path.join(step2, f"samples-{old}"))) == 1
    experiment = Experiment(config)
    sampler = experiment.sampler
    expected = sampler.stepper.nfe_per_step * sampler.num_steps + sampler.final_step.nfe
    chunks = [samples.chunk_path(os.path.join(step2, f"samples-{new}"), i) for i in range(2)]
    nfes = [int(store.load_npz(p)["nfe"]) for p in chunks]
    assert nfes == [expected, expected] and row["sample_nfe"] == expected
    # Completing the old directory with the new settings is refused.
    with pytest.raises(ValueError, match="refusing to complete"):
        samples.sample_chunks(
            lambda i: (np.zeros((8, 8, 8, 1), np.uint8), {}),
            num_samples=16,
            chunk_size=8,
            directory=os.path.join(step2, f"samples-{old}"),
            fingerprint=new,
        )
