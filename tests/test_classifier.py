"""The noise-conditional Wide-ResNet classifier: structure, log-probs, training, checkpoints."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import default
from configs.classifier import cifar10_wrn28_10
from sde_jax import VESDE, VPSDE, classifier, controllable, data
from sde_jax.data import sources
from sde_jax.experiment import Experiment
from sde_jax.experiment.build import build_model
from sde_jax.experiment.tasks import ClassifierTask
from sde_jax.models.wideresnet import WideResNet
from sde_jax.training import checkpoint, loop
from sde_jax.training.state import create_state
from sde_jax.training.step import train_step

TINY = {"depth": 10, "widen_factor": 1, "num_classes": 10, "embedding_size": 8}


def count_params(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def standard_wrn_params(depth: int, k: int, classes: int, channels: int = 3) -> int:
    """The standard CIFAR WRN-d-k (Zagoruyko & Komodakis): bias-free 3x3 convolutions, a 1x1
    projection shortcut where the width changes, two parameters per normalized channel,
    a dense classifier with bias."""
    n = (depth - 4) // 6
    total = 9 * channels * 16  # stem
    c_in = 16
    for c in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += 2 * c_in + 9 * c_in * c + 2 * c + 9 * c * c
            total += c_in * c if c_in != c else 0
            c_in = c
    return total + 2 * c_in + c_in * classes + classes


def conditioning_params(depth: int, k: int, embedding: int = 128) -> int:
    """Fourier frequencies (E), the MLP 2E -> 4E -> 4E, a 4E -> width dense per block."""
    n, width = (depth - 4) // 6, 4 * embedding
    mlp = embedding + (2 * embedding * width + width) + (width * width + width)
    return mlp + n * sum((width + 1) * c for c in (16 * k, 32 * k, 64 * k))


def test_wrn_28_10_has_the_standard_parameter_count_plus_the_conditioning():
    # 36,479,194: the known figure of the standard CIFAR-10 WRN-28-10.
    assert standard_wrn_params(28, 10, 10) == 36_479_194
    model = build_model(cifar10_wrn28_10.get_config().model, centered=False)
    assert isinstance(model, WideResNet) and (model.depth, model.widen_factor) == (28, 10)
    x, sigmas = jnp.zeros((1, 32, 32, 3)), jnp.ones((1,))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, sigmas, train=False))
    assert set(shapes) == {"params"}  # GroupNorm: no batch statistics to carry
    expected = standard_wrn_params(28, 10, 10) + conditioning_params(28, 10)
    assert count_params(shapes) == expected == 39_171_802
    out = jax.eval_shape(lambda v: model.apply(v, x, sigmas, train=False), shapes)
    assert out.shape == (1, 10)


def test_tiny_wrn_structure_and_noise_conditioning():
    model = WideResNet(**TINY)
    x = jax.random.normal(jax.random.key(0), (3, 8, 8, 1))
    params = jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(1), x, jnp.ones((3,))
    )
    expected = standard_wrn_params(10, 1, 10, channels=1) + conditioning_params(10, 1, 8)
    assert count_params(params) == expected
    apply = jax.jit(functools.partial(model.apply, train=False))
    low = apply(params, x, jnp.full((3,), 0.01))
    high = apply(params, x, jnp.full((3,), 50.0))
    assert low.shape == (3, 10) and not np.allclose(low, high)  # the noise level matters
    # Per-image standardization: the logits ignore the scale and offset of the input.
    shifted = apply(params, 3.0 * x + 2.0, jnp.full((3,), 0.01))
    np.testing.assert_allclose(shifted, low, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad", [{"depth": 12}, {"widen_factor": 0}, {"num_classes": None}])
def test_bad_wrn_fields_raise(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        WideResNet(**{**TINY, **bad})


@pytest.mark.parametrize("sde", [VESDE(sigma_max=50.0), VPSDE()], ids=["ve", "vp"])
def test_log_prob_is_normalized_and_differentiable(sde):
    model = WideResNet(**TINY)
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    init = jax.jit(functools.partial(model.init, train=False))
    params = init(jax.random.key(1), x, jnp.ones((4,)))["params"]
    log_prob = jax.jit(controllable.classifier_log_prob_fn(model, params, sde))
    t = jnp.array([1e-3, 0.3, 0.7, 1.0])
    table = jnp.stack([log_prob(x, t, jnp.full((4,), y)) for y in range(10)], axis=-1)
    assert table.shape == (4, 10) and bool(jnp.all(table <= 0))
    np.testing.assert_allclose(jax.nn.logsumexp(table, axis=-1), 0.0, atol=1e-5)
    # The noise level fed to the network is the SDE's marginal std at t.
    logits = jax.jit(functools.partial(model.apply, train=False))(
        {"params": params}, x, sde.marginal_std(t)
    )
    np.testing.assert_allclose(table, jax.nn.log_softmax(logits), rtol=1e-5, atol=1e-5)
    labels = jnp.array([0, 3, 7, 9])
    grad = jax.jit(jax.grad(lambda x_: jnp.sum(log_prob(x_, t, labels))))(x)
    assert grad.shape == x.shape and bool(jnp.all(jnp.isfinite(grad)))
    assert float(jnp.abs(grad).max()) > 0
    scalar_t = log_prob(x, 0.3, labels)  # a scalar time is shared by the batch
    np.testing.assert_allclose(scalar_t, log_prob(x, jnp.full((4,), 0.3), labels), rtol=1e-6)


def test_perturb_draws_from_the_marginal():
    sde = VPSDE()
    x = jnp.full((20000, 1), 2.0)
    t = jnp.full((20000,), 0.5)
    x_t, sigmas = classifier.perturb(jax.random.key(0), sde, x, t)
    mean, std = sde.marginal_prob(x[:1], t[:1])
    np.testing.assert_allclose(sigmas, std[0], rtol=1e-6)
    assert abs(float(jnp.mean(x_t)) - float(mean[0, 0])) < 4 * float(std[0]) / np.sqrt(20000)
    assert abs(float(jnp.std(x_t)) / float(std[0]) - 1) < 0.03


def digits_batch(n=32, size=8):
    images = sources.load_digits()[:n].astype(np.float32) / 255.0
    labels = sources.load_digit_labels()[:n]
    return {"image": jnp.asarray(images), "label": jnp.asarray(labels)}


def test_loss_decreases_on_a_fixed_batch():
    sde = VESDE(sigma_min=0.01, sigma_max=1.0)
    model = WideResNet(**TINY)
    batch = digits_batch()
    tx = optax.adam(3e-3)
    init = jax.jit(functools.partial(model.init, train=False))
    params = init(jax.random.key(0), batch["image"][:1], jnp.ones((1,)))
    state = create_state(params["params"], tx, jax.random.key(1))
    step = jax.jit(
        functools.partial(
            train_step,
            objective=ClassifierTask(model=model, sde=sde, eps=1e-5).objective,
            tx=tx,
            ema_rate=0.0,
        )
    )

    def fixed_loss(params):  # the same times and noise before and after training
        logits_fn = lambda x, s: model.apply({"params": params}, x, s, train=False)  # noqa: E731
        out = classifier.noisy_classifier_loss(
            jax.random.key(7), logits_fn, sde, batch["image"], batch["label"]
        )
        return float(out.loss)

    before = fixed_loss(state.params)
    np.testing.assert_allclose(before, np.log(10), rtol=0.5)  # near chance at init
    for _ in range(25):
        state, metrics = step(state, batch)
    assert set(metrics) == {"loss", "grad_norm", "accuracy"}
    after = fixed_loss(state.params)
    assert after < 0.6 * before, (before, after)


def test_batches_carry_the_right_labels():
    """Each digit batch label is the scikit-learn target of that very image."""
    config = default.get_default_config()
    config.data.update(dataset="digits", image_size=8, num_channels=1, random_flip=False)
    assert data.num_classes(config.data) == 10
    all_images = sources.load_digits()
    targets = sources.load_digit_labels()
    lookup = {img.tobytes(): int(y) for img, y in zip(all_images, targets, strict=True)}
    (batch,) = [next(data.train_iterator(config.data, 64, seed=3))]
    assert batch["label"].dtype == np.int32 and batch["label"].shape == (64,)
    for image, label in zip(batch["image"], batch["label"], strict=True):
        assert lookup[np.round(image * 255).astype(np.uint8).tobytes()] == label
    evals = next(data.eval_iterator(config.data, 16))
    np.testing.assert_array_equal(evals["label"], targets[1500:1516])


def classifier_config(n_iters):
    config = cifar10_wrn28_10.get_config("smoke")
    config.data.update(dataset="digits", image_size=8, num_channels=1, random_flip=False)
    config.sde.sigma_max = 5.0
    config.model.update(depth=10, widen_factor=1)
    config.training.update(batch_size=16, n_iters=n_iters, log_freq=2, eval_freq=2, snapshot_freq=4)
    config.training.snapshot_freq_for_preemption = 100
    config.optim.warmup = 0
    return config


def test_classifier_trains_checkpoints_and_resumes(tmp_path):
    workdir = str(tmp_path / "clf")
    first = loop.train(classifier_config(4), workdir)
    assert int(first.step) == 4
    experiment = Experiment(classifier_config(4))
    abstract = jax.eval_shape(experiment.init_state)
    ckpt = checkpoint.Checkpointer(workdir)
    assert ckpt.periodic.all_steps() == [4]
    restored = ckpt.restore(abstract)
    ckpt.close()
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(first), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Eval: loss, accuracy at random times and at five fixed noise levels, per example.
    metrics = jax.jit(experiment.eval_metrics)(restored, digits_batch(16), jax.random.key(0))
    fixed = [f"eval_accuracy/t={f:.2f}" for f in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert set(metrics) == {"eval_loss", "eval_accuracy", *fixed}
    for name in ("eval_accuracy", *fixed):
        assert metrics[name].shape == (16,) and set(np.unique(metrics[name])) <= {0.0, 1.0}
    config = classifier_config(6)
    config.eval.enable_loss = False
    resumed = loop.train(config, workdir)
    assert int(resumed.step) == 6
    assert not np.allclose(jax.tree.leaves(resumed.params)[0], jax.tree.leaves(first.params)[0])


def test_classifier_options_are_validated():
    config = classifier_config(2)
    config.model.num_classes = None
    with pytest.raises(ValueError, match=r"needs model\.num_classes"):
        Experiment(config)
    config = classifier_config(2)
    config.training.task = "regression"
    with pytest.raises(ValueError, match=r"training\.task must be one of"):
        Experiment(config)
    config = classifier_config(2)
    config.model.num_classes = 7
    with pytest.raises(ValueError, match=r"model\.num_classes must equal the 10 classes"):
        Experiment(config)
    config = classifier_config(2)
    config.training.label_dropout = 0.1
    with pytest.raises(ValueError, match="label_dropout"):
        Experiment(config)
    config = classifier_config(2)
    config.training.task = "score"
    with pytest.raises(ValueError, match="is a classifier"):
        Experiment(config)
