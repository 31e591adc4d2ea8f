"""agile.fold refuses or verifies (#27 F1-F3, F7; reliability report N014, N031): a partial fold
raises unless asked for, links are checked against the model, a one-call output check, the NNX
recipe keeps BatchNorm statistics. Written as a user would meet each case."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from agile_testing import compiled_init
from flax import nnx

import agile
import agile.nnx as agile_nnx
from agile import Agile, fold
from agile.folding import FoldError, chain


def _trained_like(params, seed=0):
    """Every agile a, b moved away from 1, 0 (positive a), as training would."""
    rng = np.random.default_rng(seed)

    def move(path, leaf):
        name = path[-1].key
        if name == "a":
            return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
        if name == "b":
            return jnp.asarray(rng.uniform(-0.3, 0.3, leaf.shape), leaf.dtype)
        return leaf

    return jax.tree_util.tree_map_with_path(move, params)


def test_agile_fold_is_the_function_and_the_old_module_path_still_imports():
    """F7: ``agile.fold(...)`` and ``from agile import fold`` are the function; ``from
    agile.fold import chain, fold`` (before 0.4.0) still works."""
    from agile.fold import chain as old_chain
    from agile.fold import fold as old_fold

    assert callable(agile.fold) and agile.fold is fold is old_fold
    assert old_chain is chain
    assert agile.__version__ == "0.4.0"


class _Residual(nn.Module):
    """A ResNet-style block with BatchNorm: conv -> bn -> act -> conv -> (+x) -> act."""

    plain: bool = False

    @nn.compact
    def __call__(self, x, train=False):
        def act(name):
            return nn.relu if self.plain else Agile("relu", name=name)

        y = act("act0")(nn.Conv(4, (3, 3), name="conv0")(x))
        y = nn.BatchNorm(use_running_average=not train, name="bn")(nn.Conv(4, (3, 3),
                                                                           name="conv1")(y))
        y = act("act2")(act("act1")(y) + x)  # a residual sum: no single producer
        return nn.Dense(3, name="out")(y.reshape((y.shape[0], -1)))


def _residual():
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 4))
    variables = compiled_init(_Residual(), jax.random.key(1), x)
    return x, _trained_like(variables["params"]), variables["batch_stats"]


@pytest.mark.slow
def test_a_partial_fold_raises_by_default_and_its_leftovers_fail_the_check():
    """F1: a network whose post-residual activation cannot fold: fold raises naming it; with
    strict=False the partial result's leftover a, b make the plain twin's check fail."""
    x, params, stats = _residual()
    links = [("conv0", "act0", "conv1"), (None, "act2", "out", ("flatten",))]
    with pytest.raises(FoldError) as error:
        fold(params, links, _Residual(), x)
    message = str(error.value)
    assert "act2: its producer is not known" in message
    assert "act1: no link names it" in message and "strict=False" in message
    result = fold(params, links, _Residual(), x, strict=False)
    assert result.folded == ("act0",) and {"act1", "act2"} <= set(result.params)
    with pytest.raises(FoldError, match=r"the folded parameters hold act1/a, act1/b, "
                                        r"act2/a, act2/b, which the plain model has no "
                                        r"place for"):
        result.check(_Residual(), _Residual(plain=True), x, variables={"batch_stats": stats})


def test_a_full_fold_passes_the_one_call_check_and_a_wrong_twin_fails_it():
    """The one-call output check: equal outputs pass (the largest difference returned);
    different outputs raise past the tolerance, whatever the twin."""
    x, params, stats = _residual()
    links = [("conv0", "act0", "conv1")]
    result = fold(params, links, _Residual(), x, strict=False)

    def agile_apply(p, x):
        return _Residual().apply({"params": p, "batch_stats": stats}, x)

    def plain_apply(p, x):  # act0 folded (an identity agile layer), act1, act2 kept
        identity = {"a": jnp.ones(4), "b": jnp.zeros(4)}
        return _Residual().apply({"params": {**p, "act0": identity}, "batch_stats": stats}, x)

    assert result.check(agile_apply, plain_apply, x) < 1e-4
    with pytest.raises(FoldError, match=r"outputs differ from the agile network's by up to"):
        result.check(agile_apply, lambda p, x: plain_apply(p, x) + 1.0, x)


class _ConvBN(nn.Module):
    rows: int | None = None  # the consumer's rows if not the flattened features

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3), name="conv1")(x)
        x = nn.BatchNorm(use_running_average=True, name="bn")(x)
        x = Agile("relu", name="act1")(x).reshape((x.shape[0], -1))
        return nn.Dense(3, name="out")(x)


def test_links_are_checked_against_the_linen_model():
    """F3: a BatchNorm between the producer and the layer, and a consumer whose kernel rows do
    not match the flattened features, are refused, naming the cause."""
    x = jnp.ones((2, 7, 7, 1))
    model = _ConvBN()
    params = _trained_like(compiled_init(model, jax.random.key(0), x)["params"])
    with pytest.raises(FoldError, match=r"act1: its input is the output of 'bn', not of 'conv1' "
                                        r"\(a BatchNorm between them\?\): link \('bn', 'act1', "):
        fold(params, [("conv1", "act1", "out", ("flatten",))], model, x)
    assert fold(params, [("bn", "act1", "out", ("flatten",))], model, x).folded == ("act1",)
    wrong = {**params, "out": {"kernel": jnp.ones((64, 3)), "bias": jnp.zeros(3)}}
    with pytest.raises(FoldError, match=r"its input of shape \(2, 7, 7, 4\) flattens to 196 "
                                        r"features, but the kernel of 'out' has 64 rows"):
        fold(wrong, [("bn", "act1", "out", ("flatten",))], model, x)


class _Gated(nn.Module):
    """dense -> dropout -> agile, with a gate (a layer with parameters) called in between on
    another branch: it does not feed the agile layer, so it does not stop the fold."""

    plain: bool = False

    @nn.compact
    def __call__(self, x):
        h = nn.Dropout(0.5, deterministic=True)(nn.Dense(4, name="dense")(x))
        gate = nn.sigmoid(nn.Dense(4, name="gate")(x))
        h = nn.tanh(h) if self.plain else Agile("tanh", name="act")(h)
        return nn.Dense(2, name="out")(h * 1.0) + 0 * gate.sum()


def test_the_linen_producer_is_traced_through_dropout_past_a_side_branch():
    """The order check follows the layer's input, not the call order: a side branch's layer
    called between producer and layer is no reason to refuse."""
    x = jax.random.normal(jax.random.key(0), (3, 5))
    params = _trained_like(compiled_init(_Gated(), jax.random.key(1), x)["params"])
    result = fold(params, [("dense", "act", "out", ("dropout",))], _Gated(), x)
    assert result.check(_Gated(), _Gated(plain=True), x) < 1e-5


class _NNXBatchNorm(nnx.Module):
    """flax's NNX MNIST CNN pattern: conv -> BatchNorm -> agile -> pool -> flatten -> linear."""

    def __init__(self, rngs, plain=False):
        self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.act = None if plain else agile_nnx.Agile("relu", 4)
        self.out = nnx.Linear(4 * 4 * 4, 3, rngs=rngs)

    def __call__(self, x):
        x = self.bn(self.conv(x))
        x = nn.relu(x) if self.act is None else self.act(x)
        x = nnx.avg_pool(x, (2, 2), (2, 2))
        return self.out(x.reshape((x.shape[0], -1)))


def _trained_nnx_batchnorm(x):
    model = _NNXBatchNorm(nnx.Rngs(0))
    model.train()
    model(x)  # one training-mode call moves the BatchNorm statistics
    model.act.a[...] = jnp.array([0.5, 1.5, 2.0, -0.7])
    model.act.b[...] = jnp.array([0.1, -0.2, 0.3, 0.0])
    model.eval()
    return model


def test_nnx_fold_keeps_batchnorm_statistics_and_checks_in_one_call():
    """F2: the NNX recipe folds the whole state: the twin gets the BatchNorm statistics
    (the Param-only state left them at their initial values, silently)."""
    x = jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
    model = _trained_nnx_batchnorm(x)
    assert not np.allclose(model.bn.mean[...], 0.0)
    result = fold(model, [("bn", "act", "out", ("avg_pool", "flatten"))])
    plain = _NNXBatchNorm(nnx.Rngs(1), plain=True)
    plain.eval()
    assert result.check(model, plain, x) < 1e-4  # puts result.params into plain, compares
    np.testing.assert_allclose(plain.bn.mean[...], model.bn.mean[...])
    # The old Param-only route now says what it drops.
    params_only = fold(nnx.state(model, nnx.Param), [("bn", "act", "out", ("avg_pool",
                                                                           "flatten"))],
                       strict=False)
    with pytest.raises(FoldError, match=r"the plain model has bn/mean, bn/var, which the "
                                        r"folded parameters lack \(fold the NNX model itself"):
        params_only.update(_NNXBatchNorm(nnx.Rngs(1), plain=True))


def test_nnx_a_normalisation_defined_between_producer_and_layer_is_refused():
    """F3 for NNX: ('conv', 'act', ...) when a BatchNorm is defined between conv and act."""
    x = jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
    model = _trained_nnx_batchnorm(x)
    with pytest.raises(FoldError, match=r"act: 'bn' \(BatchNorm\) comes between 'conv' and it "
                                        r"in the module, so it is what feeds it: link \('bn', "):
        fold(model, [("conv", "act", "out", ("avg_pool", "flatten"))])


class _NCHW(nnx.Module):
    """N014: conv (channels last) -> transpose to NCHW -> per-channel agile on axis 1 ->
    flatten -> linear."""

    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        self.act = agile_nnx.Agile("relu", 4, feature_axes=1)
        self.out = nnx.Linear(4 * 6 * 6, 2, rngs=rngs)

    def __call__(self, x):
        x = self.act(self.conv(x).transpose(0, 3, 1, 2))
        return self.out(x.reshape((x.shape[0], -1)))


class _AxisOne(nn.Module):
    """N031 (linen): Dense on (B, 4, 3) -> Agile along axis 1 (size 4) -> Dense on the last."""

    @nn.compact
    def __call__(self, x):
        x = Agile("relu", feature_axes=1, name="act")(nn.Dense(4, name="d")(x))
        return nn.Dense(2, name="o")(x)


def test_a_layer_off_the_last_axis_is_refused_not_folded_wrongly():
    """N014 and N031: fold used to ignore feature_axes and report "folded" for a wrong twin."""
    model = _NCHW(nnx.Rngs(0))
    with pytest.raises(FoldError, match=r"act: its a and b run along feature_axes=1, not the "
                                        r"last axis .* fold needs channels-last layers"):
        fold(model, [("conv", "act", "out", ("flatten",))])
    x = jnp.ones((2, 4, 3))
    params = _trained_like(compiled_init(_AxisOne(), jax.random.key(0), x)["params"])
    with pytest.raises(FoldError, match=r"act: its a and b run along feature_axes=-2"):
        fold(params, chain(["d", "act", "o"], params), _AxisOne(), x)


def test_fold_argument_mistakes_are_one_line_errors():
    """Linen params without the model under strict; a link list that is not a list."""
    x = jnp.ones((2, 4, 3))
    params = compiled_init(_AxisOne(), jax.random.key(0), x)["params"]
    with pytest.raises(FoldError, match=r"Pass the model and an example input, "
                                        r"fold\(params, links, model, x\)"):
        fold(params, [("d", "act", "o")])
    with pytest.raises(FoldError, match=r"fold takes a list of links"):
        fold(params, "d", _AxisOne(), x)
    with pytest.raises(FoldError, match=r"model must be the linen model of params"):
        fold(params, [("d", "act", "o")], "not a model", x)
    with pytest.raises(FoldError, match=r"fold: act linked twice; give each agile layer one"):
        fold(params, [("d", "act", "o"), ("d", "act", "o")], strict=False)  # report N030


def test_nnx_sequential_order_and_stacked_layers_are_checked():
    """In an ``nnx.Sequential`` the order is known: a BatchNorm between producer and layer is
    named; layers stacked by ``nnx.vmap`` are refused, not folded as one."""
    rngs = nnx.Rngs(0)
    model = nnx.Sequential(nnx.Linear(3, 4, rngs=rngs), nnx.BatchNorm(4, rngs=rngs),
                           agile_nnx.Agile("relu", 4), nnx.Linear(4, 2, rngs=rngs))
    with pytest.raises(FoldError, match=r"layers/2: 'layers/1' \(BatchNorm\) comes between "
                                        r"'layers/0' and it"):
        fold(model, [("layers/0", "layers/2", "layers/3")])
    assert fold(model, [("layers/1", "layers/2", "layers/3")]).folded == ("layers/2",)

    class Block(nnx.Module):
        def __init__(self, rngs):
            self.up = nnx.Linear(4, 4, rngs=rngs)
            self.act = agile_nnx.Agile("relu", 4)
            self.down = nnx.Linear(4, 4, rngs=rngs)

    @nnx.vmap(in_axes=0, out_axes=0)
    def stack(key):
        return Block(nnx.Rngs(key))

    blocks = stack(jax.random.split(jax.random.key(0), 3))
    with pytest.raises(FoldError, match=r"act: it holds 3 stacked layers \(nnx.vmap / scan: a "
                                        r"of shape \(3, 4\)\); fold does not fold stacked"):
        fold(blocks, [("up", "act", "down")])
