"""The Flax ``Agile`` layer and ``activation_layer``: shapes, values, training, errors."""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from agile_testing import compiled_init

import agile
from agile import Agile, CombinedAgile, activation_layer, get_activation, param_labels
from agile.layers import broadcast_shape, parameter_shape, validate_granularity


def _init(layer, x):
    return compiled_init(layer, jax.random.key(0), x)


@pytest.mark.parametrize(
    "granularity, shape", [("element", (28, 28, 16)), ("channel", (16,)), ("scalar", ())]
)
def test_granularity_gives_parameter_shapes(granularity, shape):
    x = jnp.zeros((3, 28, 28, 16))
    params = _init(Agile("relu", granularity=granularity), x)["params"]
    assert set(params) == {"a", "b"}
    assert params["a"].shape == shape and params["b"].shape == shape
    assert parameter_shape(x.shape, granularity) == shape


def _normal(seed, shape, scale=1.0):
    """Random float32 numbers from numpy (no per-shape compile, unlike jax.random)."""
    return (np.random.default_rng(seed).normal(size=shape) * scale).astype(np.float32)


def _shapes(layer, x):
    """The variables' shapes, without computing them."""
    return jax.eval_shape(layer.init, jax.random.key(0), x)


def test_default_granularity_is_one_pair_per_channel():
    x = jnp.zeros((3, 28, 28, 16))
    params = _shapes(Agile("relu"), x)["params"]
    assert params["a"].shape == (16,) and params["b"].shape == (16,)
    assert activation_layer("agile_relu").granularity == "channel"


def test_channel_and_scalar_layers_accept_any_size_and_no_batch_axis():
    """Init at 6 px, apply at 12 px, to one example, and per example under jax.vmap."""
    small, large = _normal(7, (2, 6, 6, 3)), _normal(8, (2, 12, 12, 3))
    for granularity, shape in (("channel", (3,)), ("scalar", ())):
        layer = Agile("tanh", granularity=granularity)
        assert _shapes(layer, small)["params"]["a"].shape == shape
        a, b = _normal(9, shape) + 1, _normal(10, shape)
        params = {"params": {"a": a, "b": b}}
        np.testing.assert_allclose(layer.apply(params, large), a * np.tanh(large - b), rtol=1e-6)
        np.testing.assert_allclose(
            layer.apply(params, large[0]), a * np.tanh(large[0] - b), rtol=1e-6
        )
        per_example = jax.vmap(functools.partial(layer.apply, params))(large)
        np.testing.assert_allclose(per_example, layer.apply(params, large), rtol=1e-6)


def test_feature_axes_put_channels_anywhere():
    """NCHW with feature_axes=-3 (or 1) computes what NHWC computes with the same a, b."""
    x_nhwc = _normal(8, (2, 5, 5, 4), 2.0)
    x_nchw = x_nhwc.transpose(0, 3, 1, 2)
    params = {"params": {"a": _normal(9, (4,)), "b": _normal(10, (4,))}}
    expected = Agile("sigmoid").apply(params, x_nhwc).transpose(0, 3, 1, 2)
    for axes in (-3, 1, (1,)):
        nchw = Agile("sigmoid", feature_axes=axes)
        assert _shapes(nchw, x_nchw)["params"]["a"].shape == (4,)
        np.testing.assert_allclose(nchw.apply(params, x_nchw), expected, rtol=1e-6)
    # Two feature axes: one pair per (height, channel).
    two = Agile("relu", feature_axes=(1, 3))
    assert _shapes(two, x_nhwc)["params"]["a"].shape == (5, 4)
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
    x = _normal(1, (4, 7, 7, 3), 3.0)
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
    x = _normal(9, (4, 5, 5, 3), 3.0)
    layer = CombinedAgile(("relu", "sigmoid"), granularity=granularity)
    params = _init(layer, x)
    assert params["params"]["a"].shape == shape and params["params"]["b"].shape == shape
    np.testing.assert_allclose(layer.apply(params, x), np.maximum(x, 0), rtol=1e-6)  # is relu
    a, b = _normal(10, shape), _normal(11, shape)
    expected = a[0] * np.maximum(x - b[0], 0) + a[1] / (1 + np.exp(b[1] - x))
    out = layer.apply({"params": {"a": a, "b": b}}, x)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_combined_layer_with_channels_first():
    x = _normal(11, (2, 3, 4, 4))
    layer = CombinedAgile(("tanh", "relu"), feature_axes=-3)
    assert _shapes(layer, x)["params"]["a"].shape == (2, 3)
    a, b = _normal(12, (2, 3)), _normal(13, (2, 3))
    params = {"params": {"a": a, "b": b}}
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
    x = _normal(2, (16, 5))
    y = np.random.default_rng(3).integers(0, 3, 16)
    params = jax.jit(model.init)(jax.random.key(4), x)  # one program, not op by op

    def loss(params):
        logits = model.apply(params, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grads = jax.jit(jax.grad(loss))(params)
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
    x = _normal(5, (1, 6), 2.0)
    upstream = _normal(6, (1, 6))  # dL/dz
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


class _OwnAB(nn.Module):
    """A user's own layer with parameters named a and b: not an agile layer."""

    @nn.compact
    def __call__(self, x):
        a = self.param("a", nn.initializers.ones, (x.shape[-1],))
        b = self.param("b", nn.initializers.zeros, (x.shape[-1],))
        return a * x + b


class _Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return CombinedAgile(("relu", "tanh"))(nn.Dense(4, name="dense")(x))


class _LabelModel(nn.Module):
    """Agile layers named, auto-named and nested, beside the user's own a and b."""

    @nn.compact
    def __call__(self, x):
        x = Agile("relu", name="act")(nn.Dense(4)(x))
        x = _Block(name="block")(x)
        x = _OwnAB(name="own")(x)
        return Agile("sigmoid")(x)


def test_param_labels_mark_exactly_the_agile_parameters_of_a_linen_model():
    model, x = _LabelModel(), jnp.zeros((2, 3))
    params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    labels = param_labels(params, model, x)
    assert labels == {
        "Dense_0": {"kernel": "weights", "bias": "weights"},
        "act": {"a": "agile", "b": "agile"},
        "block": {
            "dense": {"kernel": "weights", "bias": "weights"},
            "CombinedAgile_0": {"a": "agile", "b": "agile"},
        },
        "own": {"a": "weights", "b": "weights"},
        "Agile_0": {"a": "agile", "b": "agile"},
    }
    frozen = flax.core.freeze(params)  # FrozenDict in, FrozenDict out: the structure optax needs
    assert jax.tree.structure(param_labels(frozen, model, x)) == jax.tree.structure(
        flax.core.freeze(labels)
    )


def test_param_labels_drive_linen_multi_transform():
    model, x = _LabelModel(), jnp.ones((2, 3))
    shapes = _shapes(model, x)["params"]
    params = jax.tree.map(lambda s: np.full(s.shape, 0.5, s.dtype), shapes)
    tx = optax.multi_transform(
        {"agile": optax.sgd(0.1), "weights": optax.set_to_zero()}, param_labels(params, model, x)
    )
    grads = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x) ** 2))(params)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    assert not np.allclose(new["act"]["a"], params["act"]["a"])
    np.testing.assert_array_equal(new["own"]["a"], params["own"]["a"])
    np.testing.assert_array_equal(new["Dense_0"]["kernel"], params["Dense_0"]["kernel"])


def test_param_labels_bad_arguments_are_clear_errors():
    model, x = _LabelModel(), jnp.zeros((2, 3))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"needs the model and an example input"):
        param_labels(variables["params"])
    with pytest.raises(ValueError, match=r"needs the model and an example input"):
        param_labels(variables["params"], model)
    with pytest.raises(
        ValueError, match=r"params has no a, b for .*act.*model.init\(...\)\['params'\]"
    ):
        param_labels(variables, model, x)


def test_init_labels_gives_the_params_shapes_and_their_labels_from_one_trace():
    """init_labels(model, x) = (model.init's params as shapes, param_labels of them)."""
    from agile.labels import init_labels

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(Agile("tanh", name="act")(nn.Dense(4)(x)))

    model, x = Net(), jnp.ones((2, 5))
    shapes, labels = init_labels(model, x)
    params = compiled_init(model, jax.random.key(0), x)["params"]
    assert jax.tree.map(lambda s: (s.shape, s.dtype), shapes) == jax.tree.map(
        lambda p: (p.shape, p.dtype), params)
    assert labels == param_labels(params, model, x)
    assert labels["act"] == {"a": "agile", "b": "agile"}
    assert labels["Dense_0"]["kernel"] == "weights"


class _ActBlock(nn.Module):
    """A ResNet-style block: ``act`` is called at two places, as flax's ResNetBlock does."""

    features: int
    act: object

    @nn.compact
    def __call__(self, x):
        y = self.act(nn.Dense(self.features)(x))
        return self.act(nn.Dense(self.features)(y) + nn.Dense(self.features)(x))


class _ResNetLike(nn.Module):
    """Blocks of growing width sharing the model's ``act`` field (flax's ResNet18 pattern)."""

    act: object = nn.relu

    @nn.compact
    def __call__(self, x):
        for features in (4, 4, 8):
            x = _ActBlock(features, act=self.act)(x)
        return nn.Dense(2)(x)


class _ModuleDefBlock(nn.Module):
    """A block that calls its field as a module definition: ``self.act()(y)``."""

    act: object

    @nn.compact
    def __call__(self, x):
        return self.act()(nn.Dense(3)(self.act()(x)))


def _agile_paths(params):
    return sorted(
        "/".join(path[:-1])
        for path in flax.traverse_util.flatten_dict(params)
        if path[-1] == "a"
    )


def test_one_instance_in_an_act_field_is_an_error_that_names_the_sharing():
    """Linen adopts one Agile instance once: every block shares it, and widths 4 and 8 clash."""
    x = jnp.zeros((2, 3))
    # Shared on purpose (shared=True), places of different widths still clash.
    for act in (Agile("relu", shared=True), activation_layer("agile_relu", shared=True)):
        with pytest.raises(
            ValueError,
            match=r"One Agile layer instance was applied at two places with different shapes: "
            r"first to an input of shape \(2, 4\) \(a, b of shape \(4,\)\), then to one of shape "
            r"\(2, 8\), which needs \(8,\)\..*shares its a and b.*pass a factory",
        ):
            _shapes(_ResNetLike(act=act), x)
    # In apply too (parameters made elsewhere): the first call fits, a later one is the sharing.
    dense = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), _shapes(_ResNetLike(), x))
    params = {**dense["params"], "act": {"a": np.ones(4, np.float32), "b": np.zeros(4, np.float32)}}
    with pytest.raises(ValueError, match="applied at two places with different shapes"):
        _ResNetLike(act=Agile("relu", shared=True)).apply({"params": params}, x)
    # The same shape at both places: one shared a, b, allowed when asked for (tied parameters
    # on purpose), an error otherwise (#27 F6: it used to share silently).
    tied = _shapes(_ActBlock(4, act=Agile("relu", shared=True)), x)["params"]
    assert _agile_paths(tied) == ["act"] and tied["act"]["a"].shape == (4,)
    for act in (Agile("relu"), activation_layer("agile_relu"), CombinedAgile(("relu", "tanh"))):
        with pytest.raises(ValueError, match=r"One \w+ layer instance was called at two places "
                                             r"\(first on an input of shape \(2, 4\), then on one "
                                             r"of shape \(2, 4\)\), so both would share one a and "
                                             r"b .* with a factory, act=\w+.factory\(...\) .* "
                                             r"shared=True"):
            _shapes(_ActBlock(4, act=act), x)


def test_factory_gives_every_place_its_own_layer():
    """agile_factory / Agile.factory / activation_factory: a fresh layer per call, both styles."""
    x = jnp.zeros((2, 3))
    for act in (
        agile.agile_factory("relu"),
        agile.agile_factory("agile_relu"),
        Agile.factory("relu"),
        agile.activation_factory("agile_relu"),
    ):
        params = _shapes(_ResNetLike(act=act), x)["params"]
        paths = _agile_paths(params)
        assert len(paths) == 6, paths  # 3 blocks x 2 places, each its own a, b
        assert paths[:2] == ["_ActBlock_0/Agile_0", "_ActBlock_0/Agile_1"]
        assert params["_ActBlock_2"]["Agile_1"]["a"].shape == (8,)
        labels = param_labels(params, _ResNetLike(act=act), x)
        assert labels["_ActBlock_1"]["Agile_0"] == {"a": "agile", "b": "agile"}
    combined = _shapes(_ResNetLike(act=CombinedAgile.factory(("relu", "tanh"))), x)["params"]
    assert combined["_ActBlock_2"]["CombinedAgile_1"]["a"].shape == (2, 8)
    scalar = _shapes(_ResNetLike(act=agile.agile_factory("tanh", "scalar")), x)["params"]
    assert scalar["_ActBlock_0"]["Agile_0"]["a"].shape == ()
    by_name = _shapes(_ResNetLike(act=agile.activation_factory("combined:relu,tanh")), x)
    assert by_name["params"]["_ActBlock_0"]["CombinedAgile_0"]["a"].shape == (2, 4)
    # Module-definition style, self.act()(y): a new layer per call too.
    params = _shapes(_ModuleDefBlock(act=agile.agile_factory("relu")), x)["params"]
    assert _agile_paths(params) == ["Agile_0", "Agile_1"]
    assert params["Agile_0"]["a"].shape == (3,) and params["Agile_1"]["a"].shape == (3,)


def test_factory_values_and_errors():
    factory = agile.agile_factory("tanh", granularity="scalar", a_init=2.0)
    first, second = factory(), factory()
    assert isinstance(first, Agile) and first is not second
    assert (first.fn, first.granularity, first.a_init) == ("tanh", "scalar", 2.0)
    assert repr(factory) == "LayerFactory(Agile('tanh', granularity='scalar', a_init=2.0))"
    plain = agile.activation_factory("tanh")
    assert plain() is get_activation("tanh")
    np.testing.assert_allclose(plain(jnp.ones(3)), np.tanh(np.ones(3)), rtol=1e-6)
    x = _normal(3, (2, 4))
    out = _ResNetLike(act=plain).init_with_output(jax.random.key(0), x)[0]
    assert out.shape == (2, 2)
    with pytest.raises(ValueError, match="takes no name"):
        agile.agile_factory("relu", name="act")
    with pytest.raises(ValueError, match="Unknown granularity 'pixel'"):
        Agile.factory("relu", granularity="pixel")
    with pytest.raises(ValueError, match="Unknown activation 'swish'"):
        agile.agile_factory("swish")
    with pytest.raises(ValueError, match="Unknown activation 'agile_swish'"):
        agile.activation_factory("agile_swish")
    with pytest.raises(ValueError, match="non-empty sequence"):
        CombinedAgile.factory("relu")


def test_channels_first_input_errors_say_feature_axes():
    """A per-channel layer meeting NCHW input: the error names axis 1 and feature_axes=1."""
    nchw = jnp.zeros((2, 6, 5, 5))
    with pytest.raises(
        ValueError,
        match=r"Agile\(channels=6\): the input of shape \(2, 6, 5, 5\) has size 5 there along "
        r"feature_axes=-1, not 6 channels\. The input's axis 1 has size 6: for channels-first "
        r"\(NCHW\) input pass feature_axes=1",
    ):
        _shapes(Agile("relu", channels=6), nchw)
    assert _shapes(Agile("relu", channels=6, feature_axes=1), nchw)["params"]["a"].shape == (6,)
    assert _shapes(Agile("relu", channels=6), jnp.zeros((2, 5, 5, 6)))["params"]["a"].shape == (6,)
    # Without channels: parameters made for NHWC, applied to the same images as NCHW.
    params = _init(Agile("relu"), jnp.zeros((2, 5, 5, 6)))
    with pytest.raises(ValueError, match=r"axis 1 has size 6: for channels-first \(NCHW\) input"):
        Agile("relu").apply(params, nchw)
    with pytest.raises(ValueError, match="checks the channel count of granularity='channel'"):
        _shapes(Agile("relu", "element", channels=6), nchw)
    with pytest.raises(ValueError, match="channels must be an int >= 1"):
        _shapes(Agile("relu", channels=0), nchw)


def test_bf16_compute_with_float32_parameters_and_gradients():
    """dtype=bfloat16: bf16 output; param_dtype float32 (default): f32 a, b and gradients."""
    x = _normal(4, (3, 4))
    for layer in (Agile("sigmoid", dtype=jnp.bfloat16), CombinedAgile(("relu", "tanh"),
                                                                       dtype=jnp.bfloat16)):
        params = _init(layer, x)
        assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
        assert layer.apply(params, x).dtype == jnp.bfloat16
        grads = jax.grad(lambda p, layer=layer: layer.apply(p, x).astype(jnp.float32).sum())(
            params
        )
        assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(jnp.float32)}
        assert all(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads))
    half = Agile("tanh", param_dtype=jnp.bfloat16)
    assert _init(half, x)["params"]["a"].dtype == jnp.bfloat16
    assert half.apply(_init(half, x), x).dtype == jnp.float32  # dtype None: the input's


def _adamw_step(params, labels=None):
    mask = None if labels is None else agile.weight_decay_mask(labels)
    tx = optax.adamw(0.1, weight_decay=0.5, mask=mask)
    zero = jax.tree.map(jnp.zeros_like, params)  # no gradient: only weight decay moves params
    updates, _ = tx.update(zero, tx.init(params), params)
    return optax.apply_updates(params, updates)


def test_weight_decay_mask_keeps_a_at_one_under_adamw():
    """With the mask an adamw step with zero gradients leaves a = 1; without it a shrinks."""
    model, x = _TinyModel(), jnp.ones((2, 5))
    params = jax.jit(model.init)(jax.random.key(0), x)["params"]
    labels = param_labels(params, model, x)
    mask = agile.weight_decay_mask(labels)
    assert mask["act"] == {"a": False, "b": False}
    assert mask["Dense_0"] == {"kernel": True, "bias": True}
    masked = _adamw_step(params, labels)
    np.testing.assert_array_equal(masked["act"]["a"], np.ones(8))
    assert np.all(np.abs(masked["Dense_0"]["kernel"]) < np.abs(params["Dense_0"]["kernel"]))
    unmasked = _adamw_step(params)
    np.testing.assert_allclose(unmasked["act"]["a"], np.full(8, 1 - 0.1 * 0.5), rtol=1e-6)
    frozen = agile.weight_decay_mask(flax.core.freeze(labels))
    assert isinstance(frozen, flax.core.FrozenDict)
    with pytest.raises(ValueError, match="takes the labels of agile.param_labels"):
        agile.weight_decay_mask(params)
