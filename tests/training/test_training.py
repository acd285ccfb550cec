"""The train step under sharding, several steps per call, the checkpointer and the loop."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from configs import default
from sde_jax import VESDE, losses, sharding
from sde_jax.experiment import build
from sde_jax.experiment.tasks import ScoreTask
from sde_jax.training import checkpoint
from sde_jax.training.loop import _check_finite
from sde_jax.training.state import create_state
from sde_jax.training.step import train_steps

SHAPE = (16, 8, 8, 3)


class TinyScoreNet(nn.Module):
    """A small network with the NCSN++ call signature; compiles in a second, so the sharding
    tests test the step and its layout rather than wait on XLA. Its dense kernel (192 x 128)
    is large enough for FSDP to split."""

    @nn.compact
    def __call__(self, x, labels, train: bool = False):
        h = nn.Conv(8, (3, 3))(x) + nn.Dense(8)(jnp.log(labels)[:, None])[:, None, None, :]
        h = nn.Dropout(0.1, deterministic=not train)(nn.swish(h))
        h = nn.Dense(128)(h.reshape(h.shape[0], -1)[:, :192])
        return nn.Dense(x[0].size)(nn.swish(h)).reshape(x.shape) / labels[:, None, None, None]


def setup_step(mesh):
    sde = VESDE()
    model = TinyScoreNet()
    optim = default.get_default_config().optim
    optim.warmup = 2
    tx = build.build_optimizer(optim)
    loss_fn = losses.get_loss_fn(sde, continuous=True, reduce_mean=False)
    score_kwargs = {"continuous": True, "num_scales": 1000}
    task = ScoreTask(model=model, sde=sde, loss_fn=loss_fn, score_kwargs=score_kwargs)

    def init():
        params = model.init(jax.random.key(0), jnp.zeros((1, *SHAPE[1:])), jnp.ones(1))["params"]
        return create_state(params, tx, jax.random.key(1))

    abstract = jax.eval_shape(init)
    shardings = sharding.state_shardings(abstract, mesh)
    state = jax.jit(init, out_shardings=shardings)()
    step = jax.jit(
        functools.partial(
            train_steps,
            objective=task.objective,
            tx=tx,
            ema_rate=0.9,
        ),
        in_shardings=(shardings, sharding.batch_sharding(mesh, 1)),
        out_shardings=(shardings, sharding.replicated(mesh)),
        donate_argnums=0,
    )
    return state, step, shardings


def run_steps(mesh, batches, per_call=1):
    state, step, shardings = setup_step(mesh)
    batch_sharding = sharding.batch_sharding(mesh, 1)
    losses_ = []
    for i in range(0, len(batches), per_call):
        chunk = {"image": np.stack(batches[i : i + per_call])}
        state, metrics = jax.block_until_ready(
            step(state, sharding.global_batch(chunk, batch_sharding))
        )
        losses_.extend(np.asarray(metrics["loss"]))
    return state, np.array(losses_), shardings


BATCHES = [np.asarray(jax.random.uniform(jax.random.key(10 + i), SHAPE)) for i in range(4)]


@functools.cache
def single_device_run():
    return run_steps(sharding.make_mesh(None, 1, jax.devices()[:1]), BATCHES)


@pytest.mark.parametrize(("data", "fsdp"), [(8, 1), (2, 4)], ids=["dp8", "dp2xfsdp4"])
def test_sharded_training_equals_single_device(data, fsdp):
    reference, ref_losses, _ = single_device_run()
    state, losses_, shardings = run_steps(sharding.make_mesh(data, fsdp), BATCHES)
    np.testing.assert_allclose(losses_, ref_losses, rtol=2e-5)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(reference.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(
        jax.tree.leaves(state.ema_params), jax.tree.leaves(reference.ema_params), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    layout = sharding.describe(shardings)
    if fsdp > 1:  # large kernels and their Adam moments are split, small ones replicated
        assert layout["sharded"] > 0 and layout["replicated"] > 0
        assert state.params["Dense_1"]["kernel"].sharding.spec == PartitionSpec("fsdp", None)
    else:
        assert layout["sharded"] == 0
    assert int(state.step) == len(BATCHES)


def test_several_steps_per_call_equal_one_per_call():
    mesh = sharding.make_mesh(None, 1, jax.devices()[:1])
    reference, ref_losses, _ = single_device_run()
    state, losses_, _ = run_steps(mesh, BATCHES, per_call=2)
    np.testing.assert_allclose(losses_, ref_losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(reference.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_fsdp_shards_large_arrays_along_a_divisible_axis():
    mesh = sharding.make_mesh(2, 4)
    abstract = {"big": jax.ShapeDtypeStruct((3, 3, 64, 128), jnp.float32)}
    abstract["small"] = jax.ShapeDtypeStruct((128,), jnp.float32)
    abstract["odd"] = jax.ShapeDtypeStruct((3, 3, 9, 999), jnp.float32)
    specs = sharding.state_shardings(abstract, mesh)
    assert specs["big"].spec == PartitionSpec(None, None, None, "fsdp")
    assert specs["small"].spec == PartitionSpec()
    assert specs["odd"].spec == PartitionSpec()  # no axis divisible by 4


def test_mesh_and_batch_errors_name_the_key():
    with pytest.raises(ValueError, match=r"mesh.data \* mesh.fsdp must equal the device count 8"):
        sharding.make_mesh(3, 2)
    with pytest.raises(ValueError, match=r"mesh.fsdp must be a positive divisor of 8"):
        sharding.make_mesh(None, 3)
    with pytest.raises(ValueError, match=r"training.batch_size=12 must be divisible by .*\(8\)"):
        sharding.check_batch_size(12, sharding.make_mesh(None, 1))


def test_non_finite_loss_names_the_step():
    _check_finite(np.array([1.0, 2.0]), 10)
    with pytest.raises(FloatingPointError, match="at step 12"):
        _check_finite(np.array([1.0, 2.0, np.nan, np.inf]), 10)


def test_checkpoint_round_trip_restores_exactly_into_shardings(tmp_path, monkeypatch):
    mesh = sharding.make_mesh(2, 4)
    state, _, shardings = setup_step(mesh)
    monkeypatch.chdir(tmp_path)
    ckpt = checkpoint.Checkpointer("runs/relative", max_to_keep=2)  # as the README's workdir
    ckpt.save(7, state, periodic=True)
    ckpt.save(9, state.replace(step=state.step + 9), periodic=False)
    ckpt.wait()
    assert ckpt.latest_step() == 9
    abstract = checkpoint.abstract_with_shardings(jax.eval_shape(lambda: state), shardings)
    restored = ckpt.restore(abstract, 7)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
        assert a.sharding.is_equivalent_to(b.sharding, a.ndim)
    assert int(ckpt.restore(abstract).step) == 9  # the newest: the preemption checkpoint
    ckpt.close()
    assert (tmp_path / "runs" / "relative" / "checkpoints" / "7").is_dir()
    assert isinstance(jax.tree.leaves(shardings)[0], NamedSharding)
