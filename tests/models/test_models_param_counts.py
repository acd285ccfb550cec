"""Full-size networks have exactly the original's parameter counts (shapes only, no memory)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sde_jax.models import presets

# (preset, image size, exact parameter count, leaves) from ../shared/reference/param_counts.md
ROWS = {
    "ve/cifar10_ncsnpp_continuous": (presets.ncsnpp_cifar10, {}, 32, 62_758_915, 571),
    "ve/cifar10_ncsnpp_deep_continuous": (
        presets.ncsnpp_cifar10,
        {"deep": True},
        32,
        107_587_075,
        963,
    ),
    "vp/cifar10_ddpmpp_continuous": (presets.ddpmpp_cifar10, {}, 32, 61_804_419, 564),
    "vp/cifar10_ddpmpp_deep_continuous": (
        presets.ddpmpp_cifar10,
        {"deep": True},
        32,
        106_632_579,
        956,
    ),
    "vp/ddpm/cifar10": (presets.ddpm_cifar10, {}, 32, 35_218_947, 308),
    "ve/celebahq_256_ncsnpp_continuous": (presets.ncsnpp_celebahq256, {}, 256, 65_574_549, 645),
    # Leaf counts None: the reference table gives parameter counts only for these.
    "vp/ddpm/bedroom": (presets.ddpm_256, {}, 256, 111_569_923, None),
    "ve/ncsnv2/cifar10": (presets.ncsnv2_cifar10, {}, 32, 33_970_563, None),
    "ve/ncsn/cifar10": (presets.ncsn_cifar10, {}, 32, 34_428_675, None),
    "ve/ncsn/cifar10_124": (presets.ncsn_cifar10, {"num_scales": 232}, 32, 44_828_931, None),
}


@pytest.mark.parametrize("config_name", list(ROWS))
def test_parameter_count_equals_the_original(config_name):
    make, kwargs, size, count, leaves = ROWS[config_name]
    model = make(**kwargs)
    x, labels = jnp.zeros((1, size, size, 3)), jnp.ones((1,))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, labels, train=False))
    assert set(shapes) == {"params"}
    flat = jax.tree_util.tree_leaves(shapes["params"])
    assert leaves is None or len(flat) == leaves
    assert sum(int(np.prod(a.shape)) for a in flat) == count
