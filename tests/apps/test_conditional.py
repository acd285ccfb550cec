"""Class-conditional score models for classifier-free guidance: embedding, labels, training."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_jax import VPSDE, data, evaluation
from sde_jax.apps import class_samples
from sde_jax.experiment import Experiment, rng
from sde_jax.models import DDPM, NCSNpp, get_score_fn
from sde_jax.training import loop
from sde_jax.training.step import drop_labels
from tests import test_classifier
from tests.training import test_loop

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY_UNET = {"nf": 16, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (4,)}
TINY_UNET |= {"dropout": 0.0}
TINY_NETS = {
    "ncsnpp": lambda **kw: NCSNpp(**TINY_UNET, fir=False, progressive_input="none", **kw),
    "ddpmpp": lambda **kw: NCSNpp(
        **TINY_UNET,
        fir=False,
        progressive_input="none",
        embedding_type="positional",
        centered=True,
        **kw,
    ),
    "ddpm": lambda **kw: DDPM(**{**TINY_UNET, "nf": 32}, **kw),
}


def count(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", list(TINY_NETS))
def test_class_embedding_conditions_the_network(name):
    make = TINY_NETS[name]
    # One image at one time three times over, with labels 0, 1 and the null label 10.
    x = jnp.repeat(jax.random.normal(jax.random.key(0), (1, 8, 8, 1)), 3, axis=0)
    t_labels = jnp.full((3,), 0.5 if name == "ncsnpp" else 500.0)
    plain = make()
    conditional = make(num_classes=10)
    init = functools.partial(plain.init, train=False)
    p_plain = jax.eval_shape(init, jax.random.key(1), x, t_labels)
    p_cond = jax.jit(functools.partial(conditional.init, train=False))(
        jax.random.key(1), x, t_labels
    )
    # Only the class embedding is new: 11 rows (10 classes and the null label) of 4 nf.
    assert "ClassEmbed" not in p_plain["params"]
    assert p_cond["params"]["ClassEmbed"]["embedding"].shape == (11, 4 * plain.nf)
    assert count(p_cond) == count(p_plain) + 11 * 4 * plain.nf

    @jax.jit
    def outputs(params):
        apply = functools.partial(conditional.apply, params, x, t_labels, train=False)
        return apply(class_labels=jnp.array([0, 1, 10])), apply()

    # The networks zero-initialize their output layers (so every class gives nearly the same
    # output at init): perturb all parameters to see what the architecture can express.
    leaves, tree = jax.tree.flatten(p_cond)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    noisy = [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    labelled, no_labels = outputs(jax.tree.unflatten(tree, noisy))
    assert labelled.shape == x.shape and bool(jnp.all(jnp.isfinite(labelled)))
    scale = float(jnp.abs(labelled).max())
    assert float(jnp.abs(labelled[0] - labelled[1]).max()) > 1e-3 * scale
    assert float(jnp.abs(labelled[0] - labelled[2]).max()) > 1e-3 * scale
    # No labels means the null label.
    np.testing.assert_allclose(
        no_labels, labelled[jnp.array([2, 2, 2])], rtol=1e-4, atol=1e-4 * scale
    )


def test_num_classes_is_validated():
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 1 or None, got 0"):
        TINY_NETS["ncsnpp"](num_classes=0)
    with pytest.raises(ValueError, match="needs conditional=True"):
        TINY_NETS["ncsnpp"](num_classes=10, conditional=False)


def test_conditional_score_fn_takes_labels():
    sde = VPSDE()
    model = TINY_NETS["ddpmpp"](num_classes=3)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    params = jax.jit(functools.partial(model.init, train=False))(
        jax.random.key(1), x, jnp.ones((2,))
    )["params"]
    score_fn = get_score_fn(sde, model.apply, params, class_conditional=True)
    plain_fn = get_score_fn(sde, model.apply, params)
    t = jnp.array([0.3, 0.8])
    labels = jnp.array([2, 0])

    @jax.jit
    def compute():
        # The rule for continuous VP: -output(x, 999 t, labels) / std(t).
        output = model.apply({"params": params}, x, 999 * t, train=False, class_labels=labels)
        expected = -output / sde.marginal_std(t)[:, None, None, None]
        null = score_fn(x, t, jnp.array([3, 3]))
        return score_fn(x, t, labels), expected, plain_fn(x, t), null

    score, expected, plain, null = compute()
    np.testing.assert_allclose(score, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(plain, null, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="class_conditional"):
        get_score_fn(sde, model.apply, params, class_conditional=1)


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.5])
def test_label_dropout_replaces_the_right_fraction(rate):
    n = 100_000
    labels = jnp.arange(n, dtype=jnp.int32) % 10
    dropped = drop_labels(jax.random.key(0), labels, rate, null_label=10)
    is_null = np.asarray(dropped == 10)
    # Binomial(n, rate): within 5 standard deviations.
    assert abs(is_null.mean() - rate) <= 5 * np.sqrt(rate * (1 - rate) / n) + 1e-12
    kept = ~is_null
    np.testing.assert_array_equal(np.asarray(dropped)[kept], np.asarray(labels)[kept])
    # Independent of the label: every class loses the same fraction.
    per_class = [is_null[np.asarray(labels) == k].mean() for k in range(10)]
    assert max(per_class) - min(per_class) <= 10 * np.sqrt(rate * (1 - rate) / (n / 10)) + 1e-12


def conditional_config(n_iters=2, label_dropout=0.2):
    config = test_loop.tiny_config(n_iters)
    config.model.num_classes = 10
    config.training.label_dropout = label_dropout
    config.training.update(snapshot_freq=2, eval_freq=2, log_freq=1)
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two training steps each of a conditional and an unconditional score model and a
    classifier, on the digits."""
    root = tmp_path_factory.mktemp("conditional")
    state = loop.train(conditional_config(2), str(root / "cfg"))
    plain = test_loop.tiny_config(2)
    plain.training.snapshot_sampling = False
    plain.eval.enable_loss = False
    loop.train(plain, str(root / "plain"))
    clf_config = test_classifier.classifier_config(2)
    clf_config.sde.sigma_max = plain.sde.sigma_max  # the score model's SDE
    clf_config.eval.enable_loss = False
    loop.train(clf_config, str(root / "clf"))
    return root, state, plain, clf_config


def test_conditional_model_trains_with_label_dropout(trained):
    root, state, _, _ = trained
    tmp_path = root
    assert int(state.step) == 2
    config = conditional_config(2)
    embedding = np.asarray(state.params["ClassEmbed"]["embedding"])
    initial = jax.jit(Experiment(config).init_state)().params["ClassEmbed"]["embedding"]
    moved = set(np.flatnonzero(np.abs(embedding - np.asarray(initial)).max(axis=1) > 0))
    # Adam moves only the rows whose labels occurred: the classes of the two batches (some
    # maybe dropped to the null row 10). Ignoring the labels would move row 10 alone.
    batches = data.train_iterator(config.data, 16, seed=config.seed)
    seen = set(np.concatenate([next(batches)["label"] for _ in range(2)]).tolist())
    assert moved <= seen | {10} and len(moved & seen) >= 5, (moved, seen)
    assert (tmp_path / "cfg" / "samples" / "step_00000002.png").exists()


def test_conditional_options_are_validated():
    config = conditional_config()
    config.training.label_dropout = 1.0
    with pytest.raises(
        ValueError, match=r"training\.label_dropout must be a number in \[0, 1\), got 1.0"
    ):
        Experiment(config)
    config = conditional_config()
    config.model.num_classes = None
    with pytest.raises(ValueError, match="needs a class-conditional score model"):
        Experiment(config)
    config = conditional_config()
    config.model.num_classes = 3
    with pytest.raises(ValueError, match=r"must equal the 10 classes of data\.dataset='digits'"):
        Experiment(config)


CONFIG_FILE = """
from tests.apps import test_conditional


def get_config():
    return test_conditional.conditional_config(2)
"""


def test_sample_class_cli_uses_classifier_free_guidance(trained):
    root, _, _, _ = trained
    config_path = root / "cfg_config.py"
    config_path.write_text(CONFIG_FILE)
    out = root / "cli" / "classes.npz"
    command = [sys.executable, "-m", "sde_jax.apps.cli", "sample", f"--config={config_path}"]
    command += [f"--workdir={root / 'cfg'}", "--class=0,3,7", "--num_samples=6"]
    command += ["--guidance_scale=2.0", f"--output={out}"]
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": ROOT}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[-1].startswith(f"wrote {out}, {root / 'cli' / 'classes.png'}")
    assert result.stdout.splitlines()[-1].endswith(": 6 images, checkpoint step 2")
    stored = np.load(out)
    assert stored["samples"].shape == (6, 8, 8, 1) and stored["samples"].dtype == np.uint8
    np.testing.assert_array_equal(stored["labels"], [0, 3, 7, 0, 3, 7])
    assert str(stored["mode"]) == "classifier-free" and float(stored["guidance_scale"]) == 2.0
    for name in ("classes.png", "classes_class0.png", "classes_class3.png", "classes_class7.png"):
        assert (root / "cli" / name).stat().st_size > 0


def test_sample_classes_with_classifier_guidance(trained):
    root, _, plain, clf_config = trained
    out = str(root / "guided" / "two.npz")
    samples, labels = class_samples.sample_classes_to_files(
        plain,
        str(root / "plain"),
        out,
        (1, 2),
        4,
        0.0,
        classifier_config=clf_config,
        classifier_workdir=str(root / "clf"),
    )
    assert samples.shape == (4, 8, 8, 1) and list(labels) == [1, 2, 1, 2]
    assert str(np.load(out)["mode"]) == "classifier"
    assert os.path.getsize(str(root / "guided" / "two_class2.png")) > 0
    # Scale 0 is the unguided sampler: the plain sampler with the same key and parameters.
    experiment = Experiment(plain)
    params, _ = evaluation.restore_ema_params(experiment, str(root / "plain"))
    key = jax.random.fold_in(rng.stream_key(plain.seed, "class_samples"), 0)
    unguided = experiment.sample_fn(key, params).x
    expected = np.round(np.clip(np.asarray(unguided), 0, 1) * 255).astype(np.uint8)
    # (up to one gray level: the two programs may round differently)
    assert np.abs(samples.astype(int) - expected.astype(int)).max() <= 1


def test_sample_classes_errors(trained):
    root, _, plain, _ = trained
    with pytest.raises(ValueError, match="needs a noise-conditional classifier"):
        class_samples.sample_classes_to_files(plain, str(root / "plain"), "x.npz", (1,), 2)
    with pytest.raises(ValueError, match=r"classes must be in \[0, 10\)"):
        class_samples.sample_classes_to_files(
            conditional_config(2), str(root / "cfg"), "x.npz", (10,), 2
        )
    other = test_classifier.classifier_config(2)
    other.sde.sigma_max = 3.0
    with pytest.raises(ValueError, match="same SDE"):
        class_samples.sample_classes_to_files(
            plain,
            str(root / "plain"),
            "x.npz",
            (1,),
            2,
            classifier_config=other,
            classifier_workdir=str(root / "clf"),
        )
    with pytest.raises(ValueError, match="--class must be an int"):
        class_samples.parse_classes("0,a")
    assert class_samples.parse_classes(" 0, 3,7 ") == (0, 3, 7)
