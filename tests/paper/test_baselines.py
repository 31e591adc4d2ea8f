"""agile.paper.baselines: PReLU, Swish-beta and APL, the field's learnable activations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from agile_testing import FAST_COMPILE, compiled_init, first_fast

from agile.errors import ConfigError
from agile.paper import baselines, steps
from agile.paper.config import get_config, validate
from agile.paper.tasks import build

X = jnp.linspace(-3.0, 3.0, 13).reshape(1, 13)


def _apply(layer, x=X):
    params = compiled_init(layer, jax.random.key(0), x)
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
        params = compiled_init(layer, jax.random.key(0), x)
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


@pytest.mark.slow
@pytest.mark.parametrize("name", first_fast(["prelu", "swish_beta", "apl:2", "xielu"]))
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
    # One step compiled at XLA level 0 (FAST_COMPILE): a third less time than jit_train_step.
    new, metrics = jax.jit(steps.train_step).lower(state, batch).compile(FAST_COMPILE)(state,
                                                                                      batch)
    assert np.isfinite(float(metrics["loss"]))
    before, after = state.params["hidden_act"], new.params["hidden_act"]
    assert any(not np.array_equal(before[k], after[k]) for k in before)


def _xielu_numpy(x, raw_p, raw_n, beta=0.5, eps=-1e-6):
    """xIELU from Huang & Schlag (2024), eq. of xIELU, in float64 numpy: the value and its
    derivatives in x, alpha_p's raw value and alpha_n's raw value (softplus' = sigmoid)."""
    softplus = lambda v: np.log1p(np.exp(v))  # noqa: E731
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    alpha_p, alpha_n = softplus(raw_p), beta + softplus(raw_n)
    clipped = np.minimum(x, eps)
    positive = x > 0
    value = np.where(positive, alpha_p * x**2 + beta * x,
                     alpha_n * (np.expm1(clipped) - x) + beta * x)
    d_x = np.where(positive, 2 * alpha_p * x + beta,
                   alpha_n * (np.exp(clipped) * (x < eps) - 1) + beta)
    d_p = np.where(positive, x**2 * sigmoid(raw_p), 0.0)
    d_n = np.where(positive, 0.0, (np.expm1(clipped) - x) * sigmoid(raw_n))
    return value, d_x, d_p, d_n


def test_xielu_starts_at_the_papers_values():
    """alpha_p = alpha_n = 0.8 at the start (the paper's reference values), per layer at
    granularity scalar; beta 0.5."""
    params, out = _apply(baselines.XIELU(granularity="scalar"))
    raw = params["params"]
    assert raw["alpha_p"].shape == raw["alpha_n"].shape == ()
    np.testing.assert_allclose(jax.nn.softplus(raw["alpha_p"]), 0.8, rtol=1e-6)
    np.testing.assert_allclose(0.5 + jax.nn.softplus(raw["alpha_n"]), 0.8, rtol=1e-6)
    expected, *_ = _xielu_numpy(np.asarray(X, np.float64), float(raw["alpha_p"]),
                                float(raw["alpha_n"]))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_xielu_values_and_gradients_match_the_formula_on_both_sides_of_zero():
    """Values and gradients in x, alpha_p and alpha_n equal the paper's formula written
    independently in numpy, at negative, small and positive inputs (large ones too: the
    unused branch must not leak a nan into the gradient)."""
    x = np.array([-30.0, -4.0, -1.0, -0.3, -1e-3, 0.0, 1e-3, 0.3, 1.0, 4.0, 80.0], np.float32)
    raw_p, raw_n = 0.3, -0.7
    layer = baselines.XIELU(granularity="scalar")
    params = {"params": {"alpha_p": jnp.float32(raw_p), "alpha_n": jnp.float32(raw_n)}}
    value, d_x, d_p, d_n = _xielu_numpy(x.astype(np.float64), raw_p, raw_n)
    np.testing.assert_allclose(layer.apply(params, x), value, rtol=1e-5, atol=1e-6)
    grad_x = jax.vmap(jax.grad(lambda v: layer.apply(params, v)))(jnp.asarray(x))
    np.testing.assert_allclose(grad_x, d_x, rtol=1e-5, atol=1e-6)
    grad_params = jax.grad(lambda p: layer.apply(p, jnp.asarray(x)).sum())(params)["params"]
    np.testing.assert_allclose(grad_params["alpha_p"], d_p.sum(), rtol=1e-5)
    np.testing.assert_allclose(grad_params["alpha_n"], d_n.sum(), rtol=1e-5)
    assert baselines.is_baseline_name("xielu")
    assert isinstance(baselines.baseline_layer("xielu", "channel", "act"), baselines.XIELU)
