"""The paper's CNN: fast path == reference path, parameter counts, shapes, errors; paper.ops."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from agile_testing import FAST_COMPILE, REPO_ROOT, first_fast

from agile import param_labels
from agile.activations import get_activation
from agile.paper.combos import COMBOS
from agile.paper.models import ops
from agile.paper.models.paper_cnn import CNN, count_params

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def _normal(seed, shape, scale=1.0):
    """Random float32 numbers from numpy (no per-shape compile, unlike jax.random)."""
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


IMAGES = np.random.default_rng(1).uniform(size=(4, 28, 28, 1)).astype(np.float32)


def _compiled(fn, *args):
    """``fn(*args)`` compiled as one program (run op by op, each op would compile alone)."""
    return jax.jit(fn).lower(*args).compile(FAST_COMPILE)(*args)


def _init_shapes(model, x=IMAGES[:1]):
    """``model.init``'s variables as shapes, without computing them."""
    return jax.eval_shape(model.init, jax.random.key(0), x)


def _perturbed_params(model: CNN, seed: int = 0):
    """Parameters drawn as initialisation draws them (a = 1, b = 0, zero biases, lecun-normal
    kernels) plus 0.3 x normal noise, so agile a and b are moved off 1 and 0 and matter.

    numpy draws into ``model.init``'s shapes: nothing compiled or run op by op.
    """
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        base = {"a": 1.0, "b": 0.0, "bias": 0.0}.get(path[-1].key)
        if base is None:  # a kernel
            base = rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
        return (base + 0.3 * rng.normal(size=leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, _init_shapes(model)["params"])


def _values_and_grads(model: CNN, params):
    """Logits on IMAGES, and the gradient of ``_loss`` in params and images, compiled."""

    def both(params, images):
        logits = model.apply({"params": params}, images)
        return logits, jax.grad(_loss(model), argnums=(0, 1))(params, images)

    return _compiled(both, params, IMAGES)


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


@pytest.mark.parametrize("fields", first_fast(FIELD_COMBOS),
                         ids=lambda f: "-".join(map(str, f.values())))
def test_fast_equals_reference_values_and_gradients(fields):
    fast, reference = _both(**fields)
    params = _perturbed_params(reference)
    assert jax.tree.map(jnp.shape, _init_shapes(fast)) == jax.tree.map(
        jnp.shape, _init_shapes(reference)
    )
    logits_fast, grad_fast = _values_and_grads(fast, params)
    logits_reference, grad_reference = _values_and_grads(reference, params)
    np.testing.assert_allclose(logits_fast, logits_reference, **TOLERANCE)
    _assert_trees_close(grad_fast, grad_reference)


@pytest.mark.slow
def test_fast_and_reference_initialise_identically():
    fast, reference = _both(conv_activation="agile_relu", dense_activation="agile_sigmoid")
    _assert_trees_close(
        *[_compiled(lambda key, model=model: model.init(key, IMAGES[:1]), jax.random.key(3))
          for model in (fast, reference)]
    )


@pytest.mark.slow
def test_odd_maps_crop_like_valid_pooling():
    """7x7 maps pool to 3x3: the last row and column get no gradient in either path."""
    fast, reference = _both(conv_activation="agile_relu", dense_activation="relu")
    params = _perturbed_params(reference)
    grads = {
        name: _compiled(jax.grad(_loss(model)), params, IMAGES)["conv_act_2"]["a"]
        for name, model in (("fast", fast), ("reference", reference))
    }
    _assert_trees_close(grads["fast"], grads["reference"])
    assert grads["fast"].shape == (7, 7, 4)
    np.testing.assert_array_equal(grads["fast"][6, :, :], 0.0)
    np.testing.assert_array_equal(grads["fast"][:, 6, :], 0.0)
    assert np.abs(grads["fast"][:6, :6]).max() > 0


@pytest.mark.slow
@pytest.mark.parametrize("conv_activation, dense_activation",
                         first_fast([COMBOS[12], ("relu", "relu")], multiple_args=True))
def test_fast_equals_reference_under_vmap_over_seeds(conv_activation, dense_activation):
    fast, reference = _both(conv_activation=conv_activation, dense_activation=dense_activation)
    seeds = [_perturbed_params(reference, seed) for seed in range(3)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *seeds)

    def logits_and_grads(model):
        def per_seed(params):
            logits = model.apply({"params": params}, IMAGES)
            return logits, jax.grad(_loss(model), argnums=(0, 1))(params, IMAGES)

        return _compiled(jax.vmap(per_seed), stacked)

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
        shapes = _init_shapes(model)["params"]
        params = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)
        assert count_params(params) == expected


def test_agile_parameter_shapes_per_layer():
    model = CNN(conv_activation="agile_relu", dense_activation="agile_sigmoid")
    params = _init_shapes(model)["params"]
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
        _init_shapes(model)  # model.init, traced: it refuses before computing anything


# agile.paper.models.ops


@pytest.mark.parametrize("kernel_size", [(1, 1), (2, 2), (3, 3), (4, 5)])
def test_same_padding_matches_lax(kernel_size):
    x = _normal(0, (2, 9, 8, 3))
    kernel = _normal(1, (*kernel_size, 3, 5))
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
    x = _normal(0, (2, 7, 6, in_features))
    conv = nn.Conv(5, kernel_size, padding="SAME")
    kernel_shape = jax.eval_shape(conv.init, jax.random.key(1), x)["params"]["kernel"].shape
    params = {"kernel": _normal(1, kernel_shape), "bias": jnp.arange(5.0)}
    ours, flax_conv = _compiled(
        lambda x, params: (
            ops.patch_conv(x, params["kernel"], params["bias"]),
            conv.apply({"params": params}, x),
        ),
        x,
        params,
    )
    np.testing.assert_allclose(ours, flax_conv, **TOLERANCE)
    with pytest.raises(ValueError, match="channels"):
        ops.patch_conv(x[..., :0], params["kernel"], params["bias"])


@pytest.mark.parametrize("pooling, reference", [("max", nn.max_pool), ("avg", nn.avg_pool)])
@pytest.mark.parametrize("shape, pool_size", [((2, 8, 8, 3), (2, 2)), ((2, 7, 9, 3), (2, 3))])
def test_reshape_pool_matches_flax_pooling_and_gradient(pooling, reference, shape, pool_size):
    x = _normal(0, shape)
    weights = _normal(1, (1, shape[1] // pool_size[0], 1, 1))

    def loss(pool):
        return lambda x: jnp.sum(pool(x) ** 2 * weights)

    ours = lambda x: ops.reshape_pool(x, pool_size, pooling)  # noqa: E731
    flax_pool = lambda x: reference(x, pool_size, strides=pool_size, padding="VALID")  # noqa: E731
    (value, grad), (expected, expected_grad) = _compiled(
        lambda x: [(pool(x), jax.grad(loss(pool))(x)) for pool in (ours, flax_pool)], x
    )
    np.testing.assert_allclose(value, expected, **TOLERANCE)
    np.testing.assert_allclose(grad, expected_grad, **TOLERANCE)


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
    x = _normal(0, (4, 7, 6, 5))
    kernel = _normal(1, (*kernel_size, 5, 3))
    grad = _normal(2, (4, 7, 6, 3))

    def reference(x, kernel):
        return jax.lax.conv_general_dilated(
            x, kernel, (1, 1), ops.same_padding(kernel_size),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )

    def value_and_vjp(conv, x, kernel, grad):
        value, vjp = jax.vjp(conv, x, kernel)
        return value, vjp(grad)

    (value, grads), (expected, expected_grads) = _compiled(
        lambda *args: [value_and_vjp(conv, *args) for conv in (ops.canonical_conv, reference)],
        x,
        kernel,
        grad,
    )
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5)
    for actual, wanted in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(actual, wanted, rtol=1e-5, atol=1e-5)



@pytest.mark.parametrize("size, kernel_size, stride", first_fast(
    [(28, 3, 2), (7, 3, 2), (14, 1, 2), (6, 3, 1), (9, 5, 3), (8, 1, 3)], multiple_args=True))
def test_strided_canonical_conv_matches_lax_values_and_gradients(size, kernel_size, stride):
    """SAME convolution at a stride, even and odd maps (rows and columns differ by one):
    lax's values and both gradients."""
    x = _normal(0, (2, size, size + 1, 3))
    kernel = _normal(1, (kernel_size, kernel_size, 3, 4))

    def reference(x, kernel):
        return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def value_and_vjp(conv, x, kernel):
        value, vjp = jax.vjp(conv, x, kernel)
        return value, vjp(jnp.sin(value))

    (value, grads), (expected, expected_grads) = _compiled(
        lambda *args: [value_and_vjp(conv, *args) for conv in
                       (lambda x, k: ops.strided_canonical_conv(x, k, stride), reference)],
        x, kernel)
    assert value.shape == expected.shape
    np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-5)
    # The kernel gradient sums ~800 products in float32, in another order than lax's.
    for actual, wanted in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(actual, wanted, rtol=1e-4, atol=1e-4)


def test_strided_canonical_conv_refuses_even_or_oblong_kernels():
    for shape in [(2, 2, 3, 4), (3, 1, 3, 4)]:
        with pytest.raises(ValueError, match=r"takes odd square kernels, got \(" + str(shape[0])):
            ops.strided_canonical_conv(jnp.zeros((1, 8, 8, 3)), jnp.zeros(shape), 2)


# Fused conv -> activation -> max pooling (agile.paper.models.ops.act_max_pool, conv_act_max_pool)

ACTIVATIONS = ["relu", "sigmoid", "tanh"]
POOL_CASES = [((3, 8, 8), (2, 2)), ((2, 7, 9), (2, 3)), ((2, 7, 7), (3, 3))]
KERNEL_SIZES = [(3, 3), (2, 2), (5, 5)]
# Every pool case with every kernel size, the activations in a Latin square over them: each
# activation meets each pool case and each kernel size. The activation enters the fused block
# only through the pooling code conv_act_max_pool shares with act_max_pool (its value, slope
# and first-maximum selection), which the act_max_pool test runs for every activation and pool
# case; the code only conv_act_max_pool has (the per-subgrid convolution, its kernel and input
# gradients) depends on the kernel and pool sizes, not on the activation.
CONV_POOL_CASES = [
    (ACTIVATIONS[(i + j) % len(ACTIVATIONS)], shape, pool_size, kernel_size)
    for i, (shape, pool_size) in enumerate(POOL_CASES)
    for j, kernel_size in enumerate(KERNEL_SIZES)
]


def _agile_pooled_reference(u, fn, a, b, pool_size):
    z = fn(u) if a is None else a * fn(u - b)
    return nn.max_pool(z, pool_size, strides=pool_size, padding="VALID")


def _random_agile(seed, map_shape):
    return 1 + _normal(seed, map_shape, 0.3), _normal(seed + 1, map_shape, 0.3)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("shape, pool_size", first_fast(POOL_CASES, multiple_args=True))
@pytest.mark.parametrize("agile_params", [True, False], ids=["agile", "plain"])
def test_act_max_pool_matches_max_pool_of_activation(name, shape, pool_size, agile_params):
    fn = get_activation(name)
    u = _normal(0, (*shape, 4))
    a, b = _random_agile(1, u.shape[1:]) if agile_params else (None, None)
    pooled_shape = jax.eval_shape(lambda u: _agile_pooled_reference(u, fn, a, b, pool_size), u)
    weights = _normal(3, pooled_shape.shape)

    def loss(pool):
        return lambda u, a, b: jnp.sum(pool(u, fn, a, b, pool_size) * weights)

    args, argnums = (u, a, b), (0, 1, 2) if agile_params else (0,)
    ours, expected = _compiled(
        lambda *args: [
            jax.value_and_grad(loss(pool), argnums)(*args)
            for pool in (ops.act_max_pool, _agile_pooled_reference)
        ],
        *args,
    )
    _assert_trees_close(ours, expected)


@pytest.mark.parametrize("name, shape, pool_size, kernel_size",
                         first_fast(CONV_POOL_CASES, multiple_args=True))
def test_conv_act_max_pool_matches_conv_then_max_pool(name, shape, pool_size, kernel_size):
    fn = get_activation(name)
    x = _normal(10, (*shape, 1))
    kernel = _normal(11, (*kernel_size, 1, 5), 0.5)
    bias = _normal(12, (5,), 0.1)
    a, b = _random_agile(13, (*shape[1:], 5))

    def reference(x, kernel, bias, a, b):
        return _agile_pooled_reference(ops.patch_conv(x, kernel, bias), fn, a, b, pool_size)

    weights = _normal(15, jax.eval_shape(reference, x, kernel, bias, a, b).shape)

    def loss(pooled):
        return lambda x, k, bias, *ab: jnp.sum(pooled(x, k, bias, *ab) * weights)

    ours = lambda x, k, bias, *ab: ops.conv_act_max_pool(  # noqa: E731
        x, k, bias, fn, *ab, pool_size=pool_size
    )
    ref = lambda x, k, bias, *ab: reference(x, k, bias, *(ab or (None, None)))  # noqa: E731

    def ours_and_reference(x, kernel, bias, a, b):
        """Values and gradients of both, agile (with a, b) and plain, in one program."""
        results = []
        for args in [(x, kernel, bias, a, b), (x, kernel, bias)]:
            argnums = tuple(range(len(args)))
            results.append(
                [jax.value_and_grad(loss(pooled), argnums)(*args) for pooled in (ours, ref)]
            )
        return results

    for ours_result, ref_result in _compiled(ours_and_reference, x, kernel, bias, a, b):
        _assert_trees_close(ours_result, ref_result)


@pytest.mark.slow
def test_fused_pooling_sends_tied_gradients_to_the_first_maximum_like_flax():
    """Saturated sigmoids (exact 1.0s) and all-equal windows: a, b and kernel gradients tie-break
    to each window's first maximum in row-major order, as nn.max_pool's gradient does."""
    fn = get_activation("sigmoid")
    x = jnp.zeros((2, 6, 6, 1)).at[:, ::3, ::2].set(1.0)
    kernel = jnp.full((3, 3, 1, 3), 30.0).at[..., 2].set(0.0)  # Channels 0, 1 saturate; 2 ties.
    bias = jnp.array([40.0, 35.0, 0.5])
    a, b = jnp.ones((6, 6, 3)), jnp.zeros((6, 6, 3))

    def loss(pooled):
        return lambda *args: jnp.sum(pooled(*args) * jnp.arange(1.0, 4.0))

    ours = lambda x, k, bias, a, b: ops.conv_act_max_pool(x, k, bias, fn, a, b)  # noqa: E731
    ref = lambda x, k, bias, a, b: _agile_pooled_reference(  # noqa: E731
        ops.patch_conv(x, k, bias), fn, a, b, (2, 2))
    ours_act = lambda u, a, b: ops.act_max_pool(u, fn, a, b)  # noqa: E731
    ref_act = lambda u, a, b: _agile_pooled_reference(u, fn, a, b, (2, 2))  # noqa: E731

    def gradients(x, kernel, bias, a, b):
        """The fused blocks' gradients and the reference's, in one program."""
        u = ops.patch_conv(x, kernel, bias)
        return (
            [jax.grad(loss(f), argnums=(1, 2, 3, 4))(x, kernel, bias, a, b) for f in (ours, ref)],
            [jax.grad(loss(f), argnums=(0, 1, 2))(u, a, b) for f in (ours_act, ref_act)],
        )

    (ours_grads, expected), (ours_act_grads, expected_act) = _compiled(
        gradients, x, kernel, bias, a, b
    )
    first_of_window = np.tile([[True, False], [False, False]], (3, 3))
    np.testing.assert_array_equal(expected[2] != 0, np.repeat(first_of_window[..., None], 3, -1))
    _assert_same_support_and_close(ours_grads, expected)
    _assert_same_support_and_close(ours_act_grads, expected_act)


def _assert_same_support_and_close(actual, expected):
    """Zero exactly where ``expected`` is (which window position got the gradient), else close."""
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(x != 0, y != 0), actual, expected)
    _assert_trees_close(actual, expected)


def test_fused_pooling_errors():
    fn = get_activation("relu")
    with pytest.raises(ValueError, match="1-channel"):
        ops.conv_act_max_pool(jnp.zeros((1, 4, 4, 2)), jnp.zeros((3, 3, 2, 4)), jnp.zeros(4), fn)
    with pytest.raises(ValueError, match="larger than"):
        ops.act_max_pool(jnp.zeros((1, 2, 2, 3)), fn, pool_size=(3, 3))
    with pytest.raises(ValueError, match="both a and b"):
        ops.act_max_pool(jnp.zeros((1, 4, 4, 3)), fn, a=jnp.ones(3))


@pytest.mark.parametrize("size", [1, 2, 7, 100])
def test_batch_sum_equals_sum_over_the_leading_axis(size):
    x = _normal(size, (size, 3, 5))
    np.testing.assert_allclose(ops.batch_sum(x), x.sum(0), rtol=1e-5, atol=1e-5)


def test_stored_returns_the_function_value_also_under_vmap_and_grad():
    fn = lambda x, y: (jnp.sin(x) * y, x + y)  # noqa: E731
    x, y = jnp.arange(3.0), jnp.full(3, 2.0)
    _assert_trees_close(jax.jit(ops.stored, static_argnums=0)(fn, x, y), fn(x, y))
    _assert_trees_close(jax.vmap(lambda x: ops.stored(fn, x, y))(x[:, None]),
                        jax.vmap(lambda x: fn(x, y))(x[:, None]))
    np.testing.assert_allclose(jax.grad(lambda x: ops.stored(fn, x, y)[0].sum())(x),
                               jnp.cos(x) * y, rtol=1e-6)


def test_convolutions_padded_for_ynnpack_equal_plain_ones():
    x = _normal(0, (2, 5, 5, 3))
    kernel = _normal(1, (3, 3, 3, 4))
    np.testing.assert_allclose(
        ops._conv_nhwc(x, kernel, ((1, 1), (1, 1))),
        jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")),
        rtol=1e-5, atol=1e-5)


def test_no_conv_features_is_a_network_of_dense_layers_only():
    """The paper's Fig. 11 setting: 784 -> 30 -> 10, (agile) activation on the dense layer."""
    for implementation in ("fast", "reference"):
        model = CNN(conv_features=(), dense_activation="agile_sigmoid",
                    implementation=implementation)
        params = _compiled(model.init, jax.random.key(0), IMAGES[:1])["params"]
        assert set(params) == {"hidden", "hidden_act", "output"}
        assert params["hidden"]["kernel"].shape == (784, 30)
        assert _compiled(model.apply, {"params": params}, IMAGES).shape == (4, 10)


def test_param_labels_of_the_paper_cnn():
    """The call the training code makes: params from model.init(rng, x)["params"]."""
    model = CNN(conv_activation="combined:relu,sigmoid", dense_activation="agile_sigmoid")
    images = jnp.zeros((1, 28, 28, 1))
    params = jax.eval_shape(model.init, jax.random.key(0), images)["params"]  # shapes suffice
    assert params["conv_act_0"]["a"].shape == (2, 28, 28, 16)  # CNN keeps "element"
    labels = param_labels(params, model, images)
    agile_paths = {
        path for path, label in flax.traverse_util.flatten_dict(labels).items() if label == "agile"
    }
    layers = ("conv_act_0", "conv_act_1", "conv_act_2", "hidden_act")
    assert agile_paths == {(layer, p) for layer in layers for p in "ab"}


def test_sample_config_gives_the_paper_cnn_a_combined_activation():
    import importlib.util


    path = REPO_ROOT / "configs" / "combined_relu_sigmoid.py"
    spec = importlib.util.spec_from_file_location("combined_relu_sigmoid", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    m = module.get_config().model
    assert (m.conv_activation, m.dense_activation) == ("combined:relu,sigmoid", "agile_sigmoid")
    model = CNN(
        conv_activation=m.conv_activation,
        dense_activation=m.dense_activation,
        granularity=m.granularity,
    )
    model.validate()
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    assert params["conv_act_1"]["b"].shape == (2, 14, 14, 8)
    with pytest.raises(ValueError, match="In 'combined:relu,swish': Unknown activation 'swish'"):
        CNN(conv_activation="combined:relu,swish").validate()

