"""agile.fold: trained agile layers folded into their neighbours give the same logits."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from agile_testing import compiled_init
from flax import nnx

import agile.nnx as agile_nnx
from agile import Agile, CombinedAgile, fold
from agile.folding import FoldError, Link, chain
from agile.labels import agile_layers

RTOL, ATOL = 1e-5, 1e-6  # float32 rounding of logits of size ~1


def _data(seed, shape, classes=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype(np.float32), rng.integers(0, classes, shape[0])


def _train(model, params, x, y, steps=5, rate=0.05):
    """A few real Adam steps, so that a and b move away from 1 and 0."""
    tx = optax.adam(rate)

    def loss(params):
        logits = model.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(params, state):
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return params


def _moved(params, layer):
    return not np.allclose(params[layer]["a"], 1.0) and not np.allclose(params[layer]["b"], 0.0)


class _MLP(nn.Module):
    plain: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(16, name="hidden")(x)
        x = jnp.tanh(x) if self.plain else Agile("tanh", name="act0")(x)
        x = nn.Dense(8, name="middle")(x)
        x = nn.sigmoid(x) if self.plain else Agile("sigmoid", "element", name="act1")(x)
        return nn.Dense(3, name="out")(x)


def test_linen_mlp_folds_into_the_plain_mlp_with_equal_logits():
    x, y = _data(0, (32, 5))
    params = _train(_MLP(), compiled_init(_MLP(), jax.random.key(0), x)["params"], x, y)
    assert _moved(params, "act0") and _moved(params, "act1")
    params = flax.core.unfreeze(params)
    params["act0"]["a"] = params["act0"]["a"].at[0].set(-0.7)  # a negative a folds too (no pool)
    links = chain(["hidden", "act0", "middle", "act1", "out"], params)
    assert links == [Link("hidden", "act0", "middle"), Link("middle", "act1", "out")]
    result = fold(params, links, _MLP(), x)
    assert result.folded == ("act0", "act1") and result.not_folded == ()
    assert set(result.params) == {"hidden", "middle", "out"}
    np.testing.assert_allclose(
        _MLP(plain=True).apply({"params": result.params}, x),
        _MLP().apply({"params": params}, x),
        rtol=RTOL,
        atol=ATOL,
    )
    np.testing.assert_array_equal(params["act0"]["a"][0], np.float32(-0.7))  # input unchanged
    # The formulas: b into the producer's bias, a into the consumer's kernel rows.
    np.testing.assert_allclose(
        result.params["hidden"]["bias"], params["hidden"]["bias"] - params["act0"]["b"]
    )
    np.testing.assert_allclose(
        result.params["middle"]["kernel"],
        params["act0"]["a"][:, None] * params["middle"]["kernel"],
    )


class _CNN(nn.Module):
    """conv -> agile (per channel) -> max pool -> flatten -> dense -> agile -> dense."""

    plain: bool = False
    conv_granularity: str = "channel"

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), name="conv")(x)
        if self.plain:
            x = nn.relu(x)
        else:
            x = Agile("relu", self.conv_granularity, name="conv_act")(x)
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(8, name="dense")(x)
        x = nn.sigmoid(x) if self.plain else Agile("sigmoid", name="dense_act")(x)
        return nn.Dense(3, name="out")(x)


STEPS = ["conv", "conv_act", "max_pool", "flatten", "dense", "dense_act", "out"]


def test_linen_conv_agile_max_pool_dense_folds_with_equal_logits():
    x, y = _data(1, (16, 8, 8, 1))
    params = _train(_CNN(), compiled_init(_CNN(), jax.random.key(1), x)["params"], x, y)
    assert _moved(params, "conv_act") and _moved(params, "dense_act")
    assert np.all(params["conv_act"]["a"] > 0)
    links = chain(STEPS, params)
    assert links[0] == Link("conv", "conv_act", "dense", ("max_pool", "flatten"))
    result = fold(params, links, _CNN(), x)
    assert result.folded == ("conv_act", "dense_act"), result.report()
    np.testing.assert_allclose(
        _CNN(plain=True).apply({"params": result.params}, x),
        _CNN().apply({"params": params}, x),
        rtol=RTOL,
        atol=ATOL,
    )


def test_what_cannot_fold_is_reported_and_left_in_place():
    x, y = _data(2, (8, 8, 8, 1))
    # Per-element conv a, b: b has no per-channel bias to go to.
    element = _CNN(conv_granularity="element")
    params = _train(element, compiled_init(element, jax.random.key(2), x)["params"], x, y, steps=2)
    result = fold(params, chain(STEPS, params), element, x, strict=False)
    assert result.folded == ("dense_act",)
    (entry,) = result.not_folded
    assert entry.act == "conv_act"
    message = "per-element b of shape (8, 8, 4) cannot fold into the bias of shape (4,)"
    assert message in entry.reason
    np.testing.assert_array_equal(result.params["conv_act"]["a"], params["conv_act"]["a"])
    # A negative a before max pooling.
    params = flax.core.unfreeze(compiled_init(_CNN(), jax.random.key(3), x)["params"])
    params["conv_act"]["a"] = jnp.array([1.0, -0.5, 2.0, 1.0])
    result = fold(params, chain(STEPS, params), _CNN(), x, strict=False)
    assert [e.act for e in result.not_folded] == ["conv_act"]
    assert "negative entries (min -0.5): max pooling" in result.not_folded[0].reason
    # Unknown neighbours, a missing flatten, a layer that is not there.
    params["conv_act"]["a"] = jnp.ones(4)
    # (A layer is linked once per fold call: the unknown consumer is a second call.)
    result = fold(params, [(None, "dense_act", "out"),
                           ("conv", "conv_act", "dense", ("max_pool",)), ("dense", "nope", "out")],
                  strict=False)
    no_consumer = fold(params, [("dense", "dense_act", None)], strict=False)
    reasons = [entry.reason for entry in result.not_folded]
    assert result.folded == () == no_consumer.folded
    assert "its producer is not known" in reasons[0]
    assert "its consumer is not known" in no_consumer.not_folded[0].reason
    assert "takes 64 inputs (is there a flatten in between?" in reasons[1]
    assert "no layer 'nope' in the parameters" in reasons[2]
    assert result.report().splitlines()[0] == f"dense_act: not folded: {reasons[0]}"
    with pytest.raises(ValueError, match="unknown op"):
        Link("conv", "conv_act", "dense", ("pool",))


class _Combined(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = CombinedAgile(("relu", "tanh"), name="mix")(nn.Dense(2, name="hidden")(x))
        return nn.Dense(3, name="out")(x)


def test_a_combined_layer_is_reported_when_its_kind_is_known():
    x = np.ones((2, 4), np.float32)
    params = compiled_init(_Combined(), jax.random.key(0), x)["params"]
    assert params["mix"]["a"].shape == (2, 2)  # K = 2 terms, 2 channels
    result = fold(params, [("hidden", "mix", "out")], layers=agile_layers(_Combined(), x),
                  strict=False)
    assert "combined layer (sum of 2 terms)" in result.not_folded[0].reason
    assert fold(params, [("hidden", "mix", "out")], strict=False).not_folded  # by shape alone
    with pytest.raises(FoldError, match=r"mix: it is a combined layer \(sum of 2 terms\)"):
        fold(params, [("hidden", "mix", "out")], _Combined(), x)


class _NNXNet(nnx.Module):
    """Linear -> agile tanh -> linear -> combined agile -> linear; ``plain`` replaces act1."""

    def __init__(self, rngs, plain=False):
        self.plain = plain
        self.linear1 = nnx.Linear(5, 16, rngs=rngs)
        self.act1 = None if plain else agile_nnx.Agile("tanh", 16)
        self.linear2 = nnx.Linear(16, 8, rngs=rngs)
        self.act2 = agile_nnx.CombinedAgile(("relu", "sigmoid"), 8)
        self.linear3 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        x = self.linear1(x)
        x = jnp.tanh(x) if self.plain else self.act1(x)
        return self.linear3(self.act2(self.linear2(x)))


def test_nnx_model_folds_with_equal_logits_and_reports_its_combined_layer():
    x, y = _data(4, (32, 5))
    model = _NNXNet(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        def loss(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        optimizer.update(model, nnx.grad(loss)(model))

    for _ in range(5):
        step(model, optimizer)
    assert not np.allclose(model.act1.a[...], 1.0) and not np.allclose(model.act1.b[...], 0.0)
    links = [("linear1", "act1", "linear2"), ("linear2", "act2", "linear3")]
    result = fold(model, links, strict=False)
    assert result.folded == ("act1",)
    assert [e.act for e in result.not_folded] == ["act2"]
    assert "combined layer (sum of 2 terms)" in result.not_folded[0].reason
    assert fold(nnx.state(model, nnx.Param), links, strict=False).folded == ("act1",)  # a state
    plain = _NNXNet(nnx.Rngs(1), plain=True)
    state = nnx.state(plain)
    nnx.replace_by_pure_dict(state, result.params)
    nnx.update(plain, state)
    np.testing.assert_allclose(plain(x), model(x), rtol=RTOL, atol=ATOL)
