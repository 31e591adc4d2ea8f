"""The paper's CNN: fast path == reference path, parameter counts and shapes, errors; agile.ops."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agile import ops
from agile.combos import COMBOS
from agile.models import CNN, count_params

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}
IMAGES = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))


def _perturbed_params(model: CNN, seed: int = 0):
    """Initial parameters with agile a and b moved off 1 and 0, so they matter."""
    params = model.init(jax.random.key(seed), IMAGES[:1])["params"]
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
    noisy = [
        leaf + 0.3 * jax.random.normal(key, leaf.shape)
        for leaf, key in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(treedef, noisy)


def _loss(model: CNN):
    def loss(params, images):
        logits = model.apply({"params": params}, images)
        return jnp.mean(jnp.sin(logits) * jnp.arange(logits.shape[-1]))

    return loss


def _assert_close_to_scale(actual, expected):
    """|actual - expected| <= 3e-5 * (1 + max |expected|): summation order moves the last bits."""
    scale = 1.0 + float(np.max(np.abs(expected), initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=3e-5 * scale)


def _assert_trees_close(actual, expected):
    jax.tree.map(_assert_close_to_scale, actual, expected)


def _both(**fields) -> tuple[CNN, CNN]:
    return CNN(implementation="fast", **fields), CNN(implementation="reference", **fields)


FIELD_COMBOS = [
    {"conv_activation": "relu", "dense_activation": "relu"},
    {"conv_activation": "agile_relu", "dense_activation": "agile_sigmoid"},
    {"conv_activation": "agile_sigmoid", "dense_activation": "relu", "pooling": "avg"},
    {"conv_activation": "sigmoid", "dense_activation": "agile_relu", "kernel_size": (5, 5)},
    {"conv_activation": "agile_tanh", "dense_activation": "tanh", "granularity": "channel"},
    {"conv_activation": "relu", "dense_activation": "relu", "kernel_size": (2, 2)},
    {"conv_activation": "agile_relu", "dense_activation": "relu", "pool_size": (3, 3)},
]


@pytest.mark.parametrize("fields", FIELD_COMBOS, ids=lambda f: "-".join(map(str, f.values())))
def test_fast_equals_reference_values_and_gradients(fields):
    fast, reference = _both(**fields)
    params = _perturbed_params(reference)
    assert jax.tree.map(jnp.shape, fast.init(jax.random.key(0), IMAGES[:1])) == jax.tree.map(
        jnp.shape, reference.init(jax.random.key(0), IMAGES[:1])
    )
    np.testing.assert_allclose(
        fast.apply({"params": params}, IMAGES),
        reference.apply({"params": params}, IMAGES),
        **TOLERANCE,
    )
    grad_fast = jax.grad(_loss(fast), argnums=(0, 1))(params, IMAGES)
    grad_reference = jax.grad(_loss(reference), argnums=(0, 1))(params, IMAGES)
    _assert_trees_close(grad_fast, grad_reference)


def test_fast_and_reference_initialise_identically():
    fast, reference = _both(conv_activation="agile_relu", dense_activation="agile_sigmoid")
    _assert_trees_close(
        fast.init(jax.random.key(3), IMAGES[:1]), reference.init(jax.random.key(3), IMAGES[:1])
    )


def test_odd_maps_crop_like_valid_pooling():
    """7x7 maps pool to 3x3: the last row and column get no gradient in either path."""
    fast, reference = _both(conv_activation="agile_relu", dense_activation="relu")
    params = _perturbed_params(reference)
    grads = {
        name: jax.grad(_loss(model))(params, IMAGES)["conv_act_2"]["a"]
        for name, model in (("fast", fast), ("reference", reference))
    }
    _assert_trees_close(grads["fast"], grads["reference"])
    assert grads["fast"].shape == (7, 7, 4)
    np.testing.assert_array_equal(grads["fast"][6, :, :], 0.0)
    np.testing.assert_array_equal(grads["fast"][:, 6, :], 0.0)
    assert np.abs(grads["fast"][:6, :6]).max() > 0


@pytest.mark.parametrize("conv_activation, dense_activation", [("relu", "relu"), COMBOS[12]])
def test_fast_equals_reference_under_vmap_over_seeds(conv_activation, dense_activation):
    fast, reference = _both(conv_activation=conv_activation, dense_activation=dense_activation)
    seeds = [_perturbed_params(reference, seed) for seed in range(3)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *seeds)

    def logits_and_grads(model):
        def per_seed(params):
            logits = model.apply({"params": params}, IMAGES)
            return logits, jax.grad(_loss(model), argnums=(0, 1))(params, IMAGES)

        return jax.jit(jax.vmap(per_seed))(stacked)

    _assert_trees_close(logits_and_grads(fast), logits_and_grads(reference))


@pytest.mark.parametrize("combo, expected", [(7, 3032), (12, 31708)])
def test_parameter_counts(combo, expected):
    conv_activation, dense_activation = COMBOS[combo]
    for implementation in ("fast", "reference"):
        model = CNN(
            conv_activation=conv_activation,
            dense_activation=dense_activation,
            implementation=implementation,
        )
        assert count_params(model.init(jax.random.key(0), IMAGES[:1])["params"]) == expected


def test_agile_parameter_shapes_per_layer():
    model = CNN(conv_activation="agile_relu", dense_activation="agile_sigmoid")
    params = model.init(jax.random.key(0), IMAGES[:1])["params"]
    expected = {
        "conv_act_0": (28, 28, 16),
        "conv_act_1": (14, 14, 8),
        "conv_act_2": (7, 7, 4),
        "hidden_act": (30,),
    }
    for layer, shape in expected.items():
        assert params[layer]["a"].shape == shape and params[layer]["b"].shape == shape
    assert set(params) == {*expected, "conv_0", "conv_1", "conv_2", "hidden", "output"}
    assert params["conv_1"]["kernel"].shape == (3, 3, 16, 8)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"conv_activation": "swish"}, "Unknown activation 'swish'"),
        ({"dense_activation": "agile_nope"}, "Unknown activation 'agile_nope'"),
        ({"pooling": "min"}, "Unknown pooling 'min'"),
        ({"granularity": "row"}, "Unknown granularity 'row'"),
        ({"implementation": "cuda"}, "Unknown implementation 'cuda'"),
        ({"conv_features": (16, 0)}, "conv_features must be positive"),
        ({"kernel_size": (0, 3)}, "kernel_size and pool_size must be pairs"),
    ],
)
def test_bad_fields_raise_value_error(fields, message):
    model = CNN(**fields)
    with pytest.raises(ValueError, match=message):
        model.validate()
    with pytest.raises(ValueError, match=message):
        model.init(jax.random.key(0), IMAGES[:1])


def test_fast_path_refuses_pool_window_larger_than_map():
    model = CNN(conv_features=(4, 4, 4, 4, 4, 4))
    with pytest.raises(ValueError, match="larger than"):
        model.init(jax.random.key(0), IMAGES[:1])


# agile.ops


@pytest.mark.parametrize("kernel_size", [(1, 1), (2, 2), (3, 3), (4, 5)])
def test_same_padding_matches_lax(kernel_size):
    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
    kernel = jax.random.normal(jax.random.key(1), (*kernel_size, 3, 5))
    dims = ("NHWC", "HWIO", "NHWC")
    np.testing.assert_allclose(
        jax.lax.conv_general_dilated(
            x, kernel, (1, 1), ops.same_padding(kernel_size), None, None, dims
        ),
        jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=dims),
        **TOLERANCE,
    )


def test_conv_patches_order_and_shape():
    x = jnp.arange(2 * 4 * 5 * 3, dtype=jnp.float32).reshape(2, 4, 5, 3)
    patches = ops.conv_patches(x, (3, 3))
    assert patches.shape == (2, 4, 5, 27)
    # Centre offset (1, 1) is the pixel itself; offset (0, 0) of pixel (1, 1) is pixel (0, 0).
    np.testing.assert_array_equal(patches[..., 12:15], x)
    np.testing.assert_array_equal(patches[:, 1, 1, 0:3], x[:, 0, 0])
    np.testing.assert_array_equal(patches[:, 0, 0, 0:3], 0.0)


@pytest.mark.parametrize("kernel_size", [(3, 3), (5, 5), (2, 2)])
@pytest.mark.parametrize("in_features", [1, 4])
def test_patch_conv_matches_nn_conv(kernel_size, in_features):
    x = jax.random.normal(jax.random.key(0), (2, 7, 6, in_features))
    conv = nn.Conv(5, kernel_size, padding="SAME")
    params = conv.init(jax.random.key(1), x)["params"]
    params = {**params, "bias": jnp.arange(5.0)}
    np.testing.assert_allclose(
        ops.patch_conv(x, params["kernel"], params["bias"]),
        conv.apply({"params": params}, x),
        **TOLERANCE,
    )
    with pytest.raises(ValueError, match="channels"):
        ops.patch_conv(x[..., :0], params["kernel"], params["bias"])


@pytest.mark.parametrize("pooling, reference", [("max", nn.max_pool), ("avg", nn.avg_pool)])
@pytest.mark.parametrize("shape, pool_size", [((2, 8, 8, 3), (2, 2)), ((2, 7, 9, 3), (2, 3))])
def test_reshape_pool_matches_flax_pooling_and_gradient(pooling, reference, shape, pool_size):
    x = jax.random.normal(jax.random.key(0), shape)
    weights = jax.random.normal(jax.random.key(1), (1, shape[1] // pool_size[0], 1, 1))

    def loss(pool):
        return lambda x: jnp.sum(pool(x) ** 2 * weights)

    ours = lambda x: ops.reshape_pool(x, pool_size, pooling)  # noqa: E731
    flax_pool = lambda x: reference(x, pool_size, strides=pool_size, padding="VALID")  # noqa: E731
    np.testing.assert_allclose(ours(x), flax_pool(x), **TOLERANCE)
    np.testing.assert_allclose(jax.grad(loss(ours))(x), jax.grad(loss(flax_pool))(x), **TOLERANCE)


def test_max_pool_gradient_goes_to_first_of_tied_maxima_like_flax():
    x = jnp.array([[1.0, 3.0, 3.0], [3.0, 0.0, 3.0], [2.0, 2.0, 2.0]]).reshape(1, 3, 3, 1)
    x = jnp.concatenate([x, jnp.ones_like(x)], axis=-1)  # A fully tied window too.
    ours = jax.grad(lambda x: ops.reshape_pool(x, (2, 2), "max").sum())(x)
    flax = jax.grad(lambda x: nn.max_pool(x, (2, 2), (2, 2), "VALID").sum())(x)
    np.testing.assert_array_equal(ours, flax)
    assert float(ours.sum()) == 2.0


def test_reshape_pool_errors():
    x = jnp.zeros((1, 4, 4, 1))
    with pytest.raises(ValueError, match="Unknown pooling 'sum'"):
        ops.reshape_pool(x, (2, 2), "sum")
    with pytest.raises(ValueError, match="larger than"):
        ops.reshape_pool(x, (5, 2), "max")


@pytest.mark.parametrize("kernel_size", [(3, 3), (2, 2), (3, 2)])
def test_canonical_conv_matches_lax_values_and_gradients(kernel_size):
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (4, 7, 6, 5))
    kernel = jax.random.normal(keys[1], (*kernel_size, 5, 3))
    grad = jax.random.normal(keys[2], (4, 7, 6, 3))

    def reference(x, kernel):
        return jax.lax.conv_general_dilated(
            x, kernel, (1, 1), ops.same_padding(kernel_size),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )

    value, vjp = jax.vjp(ops.canonical_conv, x, kernel)
    expected, expected_vjp = jax.vjp(reference, x, kernel)
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5)
    for actual, wanted in zip(vjp(grad), expected_vjp(grad), strict=True):
        np.testing.assert_allclose(actual, wanted, rtol=1e-5, atol=1e-5)

