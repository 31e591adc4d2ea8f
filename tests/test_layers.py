"""The Flax ``Agile`` layer and ``activation_layer``: shapes, values, training, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agile import Agile, activation_layer, get_activation
from agile.layers import parameter_shape


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


def test_untrained_agile_equals_plain_activation():
    x = jax.random.normal(jax.random.key(1), (4, 7, 7, 3)) * 3
    for name in ("relu", "sigmoid", "tanh", "gelu", "silu", "softplus", "elu", "leaky_relu"):
        layer = Agile(name)
        out = layer.apply(_init(layer, x), x)
        np.testing.assert_allclose(out, get_activation(name)(x), rtol=1e-6)


def test_callable_fn_custom_inits_and_param_dtype():
    x = jnp.linspace(-2, 2, 10).reshape(2, 5)
    layer = Agile(jnp.sin, granularity="channel", a_init=2.0,
                  b_init=nn.initializers.constant(0.5), param_dtype=jnp.bfloat16)
    params = _init(layer, x)
    assert params["params"]["a"].dtype == jnp.bfloat16
    np.testing.assert_allclose(layer.apply(params, x), 2.0 * np.sin(x - 0.5), rtol=1e-2)


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
        (Agile("relu"), jnp.zeros((3,)), "batch axis"),
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
