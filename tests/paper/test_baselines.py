"""agile.paper.baselines: PReLU, Swish-beta and APL, the field's learnable activations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agile.errors import ConfigError
from agile.paper import baselines, steps
from agile.paper.config import get_config, validate
from agile.paper.tasks import build

X = jnp.linspace(-3.0, 3.0, 13).reshape(1, 13)


def _apply(layer, x=X):
    params = layer.init(jax.random.key(0), x)
    return params, layer.apply(params, x)


def test_each_baseline_starts_as_its_published_form():
    """PReLU with slope 0.25, Swish-beta as SiLU (beta 1), APL as ReLU (hinge slopes 0)."""
    params, out = _apply(baselines.PReLU())
    np.testing.assert_allclose(out, jnp.maximum(X, 0) + 0.25 * jnp.minimum(X, 0))
    assert params["params"]["alpha"].shape == (13,)
    _, out = _apply(baselines.SwishBeta())
    np.testing.assert_allclose(out, jax.nn.silu(X), rtol=1e-6)
    params, out = _apply(baselines.APL(hinges=3))
    np.testing.assert_array_equal(out, jax.nn.relu(X))
    np.testing.assert_allclose(params["params"]["hinge"][:, 0], [-1.0, 0.0, 1.0])
    assert params["params"]["slope"].shape == (3, 13)


def test_apl_is_the_sum_of_its_hinges():
    layer = baselines.APL(hinges=2, granularity="scalar")
    params = {"params": {"slope": jnp.array([0.5, -2.0]), "hinge": jnp.array([1.0, -1.0])}}
    expected = (jnp.maximum(X, 0) + 0.5 * jnp.maximum(1.0 - X, 0)
                - 2.0 * jnp.maximum(-1.0 - X, 0))
    np.testing.assert_allclose(layer.apply(params, X), expected)


@pytest.mark.parametrize("granularity, shape", [("channel", (4,)), ("element", (5, 4)),
                                                ("scalar", ())])
def test_parameters_follow_the_granularity_and_get_gradients(granularity, shape):
    x = jax.random.normal(jax.random.key(1), (2, 5, 4))
    for layer, name in ((baselines.PReLU(granularity), "alpha"),
                        (baselines.SwishBeta(granularity), "beta")):
        params = layer.init(jax.random.key(0), x)
        assert params["params"][name].shape == shape
        grad = jax.grad(lambda p, layer=layer: layer.apply(p, x).sum())(params)
        assert np.any(np.asarray(grad["params"][name]) != 0)
    params = baselines.APL(granularity, hinges=2).init(jax.random.key(0), x)
    assert params["params"]["slope"].shape == (2, *shape)


def test_names_and_their_one_line_errors():
    assert baselines.apl_hinges("apl:2") == 2
    assert baselines.is_baseline_name("prelu") and not baselines.is_baseline_name("relu")
    with pytest.raises(ConfigError, match=r"In 'apl:x': APL takes a whole number of hinges"):
        baselines.validate_baseline_name("apl:x")
    with pytest.raises(ConfigError, match=r"Unknown baseline activation 'elu_beta'"):
        baselines.validate_baseline_name("elu_beta")
    config = get_config()
    config.model.conv_activation = "swish"
    with pytest.raises(ConfigError, match=r"Unknown activation 'swish'.*The paper's CNN also "
                                          r"takes the baselines prelu, swish_beta, apl:<hinges>"):
        validate(config)


@pytest.mark.parametrize("name", ["prelu", "swish_beta", "apl:2"])
def test_the_paper_cnn_trains_with_each_baseline_as_weights(name):
    """In both layers, per channel: one finite step; their parameters are weights to
    param_labels (not agile a and b), and move."""
    config = get_config()
    config.model.conv_activation = config.model.dense_activation = name
    config.model.granularity = "channel"
    validate(config)
    state = steps.create_train_state(config, jax.random.key(0))
    labels = steps.model_labels(build(config))
    assert set(jax.tree.leaves(labels["hidden_act"])) == {"weights"}
    batch = {"inputs": jax.random.uniform(jax.random.key(2), (8, 28, 28, 1)),
             "targets": jnp.arange(8) % 10}
    new, metrics = steps.jit_train_step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    before, after = state.params["hidden_act"], new.params["hidden_act"]
    assert any(not np.array_equal(before[k], after[k]) for k in before)
