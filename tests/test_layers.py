"""The Flax ``Agile`` layer and ``activation_layer``: shapes, values, training, errors."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agile import Agile, CombinedAgile, activation_layer, get_activation
from agile.layers import broadcast_shape, parameter_shape, validate_granularity


def _init(layer, x):
    return layer.init(jax.random.key(0), x)


@pytest.mark.parametrize(
    "granularity, shape", [("element", (28, 28, 16)), ("channel", (16,)), ("scalar", ())]
)
def test_granularity_gives_parameter_shapes(granularity, shape):
    x = jnp.zeros((3, 28, 28, 16))
    params = _init(Agile("relu", granularity=granularity), x)["params"]
    assert set(params) == {"a", "b"}
    assert params["a"].shape == shape and params["b"].shape == shape
    assert parameter_shape(x.shape, granularity) == shape


def test_default_granularity_is_one_pair_per_channel():
    x = jnp.zeros((3, 28, 28, 16))
    params = _init(Agile("relu"), x)["params"]
    assert params["a"].shape == (16,) and params["b"].shape == (16,)
    assert activation_layer("agile_relu").granularity == "channel"


def test_channel_and_scalar_layers_accept_any_size_and_no_batch_axis():
    """Init at 6 px, apply at 12 px, to one example, and per example under jax.vmap."""
    key = jax.random.key(7)
    small, large = jax.random.normal(key, (2, 6, 6, 3)), jax.random.normal(key, (2, 12, 12, 3))
    for granularity in ("channel", "scalar"):
        layer = Agile("tanh", granularity=granularity, a_init=nn.initializers.normal(1.0))
        params = _init(layer, small)
        a, b = params["params"]["a"], params["params"]["b"]
        np.testing.assert_allclose(layer.apply(params, large), a * np.tanh(large - b), rtol=1e-6)
        np.testing.assert_allclose(
            layer.apply(params, large[0]), a * np.tanh(large[0] - b), rtol=1e-6
        )
        per_example = jax.vmap(functools.partial(layer.apply, params))(large)
        np.testing.assert_allclose(per_example, layer.apply(params, large), rtol=1e-6)


def test_feature_axes_put_channels_anywhere():
    """NCHW with feature_axes=-3 (or 1) computes what NHWC computes with the same a, b."""
    x_nhwc = jax.random.normal(jax.random.key(8), (2, 5, 5, 4)) * 2
    x_nchw = x_nhwc.transpose(0, 3, 1, 2)
    init = nn.initializers.normal(1.0)
    nhwc = Agile("sigmoid", a_init=init, b_init=init)
    params = _init(nhwc, x_nhwc)
    expected = nhwc.apply(params, x_nhwc).transpose(0, 3, 1, 2)
    for axes in (-3, 1, (1,)):
        nchw = Agile("sigmoid", feature_axes=axes)
        assert _init(nchw, x_nchw)["params"]["a"].shape == (4,)
        np.testing.assert_allclose(nchw.apply(params, x_nchw), expected, rtol=1e-6)
    # Two feature axes: one pair per (height, channel).
    two = Agile("relu", feature_axes=(1, 3))
    assert _init(two, x_nhwc)["params"]["a"].shape == (5, 4)
    assert parameter_shape((2, 5, 6, 4), "channel", (-3, -1)) == (5, 4)
    assert broadcast_shape((5, 4), (2, 5, 6, 4), (1, 3)) == (5, 1, 4)


def test_element_layer_meeting_another_shape_says_which_granularity_fits():
    layer = Agile("relu", granularity="element")
    params = _init(layer, jnp.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"shape \(4, 4, 3\), but .* needs \(8, 8, 3\)"):
        layer.apply(params, jnp.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match="without a batch axis.*granularity='channel'"):
        jax.vmap(functools.partial(layer.apply, params))(jnp.zeros((2, 4, 4, 3)))
    channel = Agile("relu")
    channel_params = _init(channel, jnp.zeros((2, 8)))
    with pytest.raises(ValueError, match=r"shape \(8,\), but this input of shape \(2, 5\) needs"):
        channel.apply(channel_params, jnp.zeros((2, 5)))


def test_validate_granularity():
    for granularity in ("element", "channel", "scalar"):
        assert validate_granularity(granularity) == granularity
    with pytest.raises(ValueError, match="Unknown granularity 'pixel'. Valid: element, channel"):
        validate_granularity("pixel")


def test_untrained_agile_equals_plain_activation():
    x = jax.random.normal(jax.random.key(1), (4, 7, 7, 3)) * 3
    for name in ("relu", "sigmoid", "tanh", "gelu", "silu", "softplus", "elu", "leaky_relu"):
        layer = Agile(name)
        out = layer.apply(_init(layer, x), x)
        np.testing.assert_allclose(out, get_activation(name)(x), rtol=1e-6)


def test_callable_fn_custom_inits_and_param_dtype():
    x = jnp.linspace(-2, 2, 10).reshape(2, 5)
    layer = Agile(
        jnp.sin,
        granularity="channel",
        a_init=2.0,
        b_init=nn.initializers.constant(0.5),
        param_dtype=jnp.bfloat16,
    )
    params = _init(layer, x)
    assert params["params"]["a"].dtype == jnp.bfloat16
    np.testing.assert_allclose(layer.apply(params, x), 2.0 * np.sin(x - 0.5), rtol=1e-2)


def test_dtype_sets_the_computation_dtype():
    x = jnp.linspace(-2, 2, 8).reshape(2, 4)
    for layer in (Agile("tanh", dtype=jnp.bfloat16), CombinedAgile(["tanh"], dtype=jnp.bfloat16)):
        params = _init(layer, x)
        assert params["params"]["a"].dtype == jnp.float32
        out = layer.apply(params, x)
        assert out.dtype == jnp.bfloat16
        np.testing.assert_allclose(out.astype(jnp.float32), np.tanh(x), rtol=1e-2)


@pytest.mark.parametrize(
    "granularity, shape", [("element", (2, 5, 5, 3)), ("channel", (2, 3)), ("scalar", (2,))]
)
def test_combined_layer_shapes_values_and_initial_function(granularity, shape):
    x = jax.random.normal(jax.random.key(9), (4, 5, 5, 3)) * 3
    layer = CombinedAgile(("relu", "sigmoid"), granularity=granularity)
    params = _init(layer, x)
    assert params["params"]["a"].shape == shape and params["params"]["b"].shape == shape
    np.testing.assert_allclose(layer.apply(params, x), jax.nn.relu(x), rtol=1e-6)  # starts as relu
    keys = jax.random.split(jax.random.key(10), 2)
    a, b = (jax.random.normal(k, shape) for k in keys)
    expected = a[0] * jax.nn.relu(x - b[0]) + a[1] * jax.nn.sigmoid(x - b[1])
    out = layer.apply({"params": {"a": a, "b": b}}, x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_combined_layer_with_channels_first():
    x = jax.random.normal(jax.random.key(11), (2, 3, 4, 4))
    layer = CombinedAgile(("tanh", "relu"), feature_axes=-3, b_init=nn.initializers.normal(1.0))
    params = _init(layer, x)
    a, b = params["params"]["a"], params["params"]["b"]
    assert a.shape == (2, 3)
    col = (slice(None), None, None)  # (3,) -> (3, 1, 1)
    expected = a[0][col] * np.tanh(x - b[0][col]) + a[1][col] * np.maximum(x - b[1][col], 0)
    np.testing.assert_allclose(layer.apply(params, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fns", ["relu", (), 3])
def test_combined_layer_needs_a_sequence_of_activations(fns):
    with pytest.raises(ValueError, match=r"CombinedAgile\(fns\) takes a non-empty sequence"):
        _init(CombinedAgile(fns), jnp.zeros((2, 3)))


def test_bf16_input_gives_bf16_output():
    x = jnp.ones((2, 4), jnp.bfloat16)
    layer = Agile("sigmoid")
    assert layer.apply(_init(layer, x), x).dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "layer, x, message",
    [
        (Agile("relu", granularity="pixel"), jnp.zeros((2, 3)), "Unknown granularity 'pixel'"),
        (Agile("swish"), jnp.zeros((2, 3)), "Unknown activation 'swish'"),
        (Agile("agile_relu"), jnp.zeros((2, 3)), r"plain activation.*Agile\('relu'\)"),
        (Agile(3.0), jnp.zeros((2, 3)), "name or a callable"),
        (Agile("relu", granularity="element"), jnp.zeros((3,)), "batch axis"),
        (Agile("relu", feature_axes=2), jnp.zeros((2, 3)), "feature_axes must be"),
        (Agile("relu", feature_axes=(1, -1)), jnp.zeros((2, 3)), "axis twice"),
        (Agile("relu", feature_axes=()), jnp.zeros((2, 3)), "feature_axes must be"),
        (Agile("relu", "element", feature_axes=1), jnp.zeros((2, 3)), "'channel' only"),
        (Agile("relu", "scalar", feature_axes=(0,)), jnp.zeros((2, 3)), "'channel' only"),
        (Agile("relu"), jnp.zeros(()), "needs an input with a feature axis"),
    ],
)
def test_bad_configuration_is_a_clear_error(layer, x, message):
    with pytest.raises(ValueError, match=message):
        _init(layer, x)


def test_activation_layer_maps_names_to_layers():
    layer = activation_layer("agile_tanh", granularity="channel", a_init=0.5)
    assert isinstance(layer, Agile)
    assert (layer.fn, layer.granularity, layer.a_init) == ("tanh", "channel", 0.5)
    assert activation_layer("tanh") is get_activation("tanh")
    combined = activation_layer("combined:relu,sigmoid", granularity="scalar", name="mix")
    assert isinstance(combined, CombinedAgile)
    assert combined.fns == ("relu", "sigmoid")
    assert (combined.granularity, combined.name) == ("scalar", "mix")
    with pytest.raises(ValueError, match="Unknown activation 'agile_swish'"):
        activation_layer("agile_swish")
    with pytest.raises(ValueError, match="Unknown granularity 'node'"):
        activation_layer("relu", granularity="node")


class _TinyModel(nn.Module):
    """Dense -> agile sigmoid -> dense: the smallest model where a and b must learn."""

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(8)(x)
        x = Agile("sigmoid", name="act")(x)
        return nn.Dense(3)(x)


def test_a_and_b_receive_gradients_and_change_after_one_step():
    model = _TinyModel()
    x = jax.random.normal(jax.random.key(2), (16, 5))
    y = jax.random.randint(jax.random.key(3), (16,), 0, 3)
    params = model.init(jax.random.key(4), x)

    def loss(params):
        logits = model.apply(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.grad(loss)(params)
    for name in ("a", "b"):
        assert np.all(np.abs(grads["params"]["act"][name]) > 0), name
    optimizer = optax.sgd(0.1)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    new_params = optax.apply_updates(params, updates)
    for name in ("a", "b"):
        assert not np.allclose(new_params["params"]["act"][name], params["params"]["act"][name])


def test_sgd_update_of_a_and_b_matches_corrected_paper_equations():
    """Eq. 13-16 and 21-24 corrected: a -= rho * s * dL/dz;  b += rho * a*s(1-s) * dL/dz."""
    layer = Agile("sigmoid")
    x = jax.random.normal(jax.random.key(5), (1, 6)) * 2
    upstream = jax.random.normal(jax.random.key(6), (1, 6))  # dL/dz
    params = {"params": {"a": jnp.full((6,), 1.7), "b": jnp.full((6,), -0.3)}}
    grads = jax.grad(lambda p: jnp.sum(layer.apply(p, x) * upstream))(params)
    rho = 0.05
    optimizer = optax.sgd(rho)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    new = optax.apply_updates(params, updates)["params"]
    a, b = 1.7, -0.3
    s = 1 / (1 + np.exp(-(np.asarray(x[0], np.float64) - b)))
    g = np.asarray(upstream[0], np.float64)
    np.testing.assert_allclose(new["a"], a - rho * s * g, rtol=1e-6)
    np.testing.assert_allclose(new["b"], b + rho * a * s * (1 - s) * g, rtol=1e-6)
