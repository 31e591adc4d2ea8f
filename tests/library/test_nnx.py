"""``agile.nnx``: equal to the linen layers, under NNX transforms and bridges; labels; errors."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from agile_testing import FAST_COMPILE, first_fast
from flax import nnx
from flax.nnx import bridge

import agile
import agile.nnx as agile_nnx
from agile import activations as act
from agile import layers

INPUT_SHAPES = {2: (3, 5), 4: (2, 3, 4, 5)}
FNS = [*act.PLAIN_ACTIVATIONS, ("relu", "sigmoid")]  # every activation, and one combination


def _linen_and_nnx(fn, granularity, x_shape):
    """The linen layer and its NNX twin (``Agile`` or, for a tuple ``fn``, ``CombinedAgile``)."""
    if isinstance(fn, tuple):
        return (
            agile.CombinedAgile(fn, granularity=granularity),
            agile_nnx.CombinedAgile.for_input(fn, x_shape, granularity),
        )
    return agile.Agile(fn, granularity), agile_nnx.Agile.for_input(fn, x_shape, granularity)


@pytest.mark.parametrize("granularity", layers.GRANULARITIES)
@pytest.mark.parametrize("rank", first_fast(sorted(INPUT_SHAPES)))
def test_nnx_layers_equal_linen_layers_in_values_and_gradients(granularity, rank):
    """For every activation: same outputs, and same gradients in x, a and b, with random a, b."""
    x_shape = INPUT_SHAPES[rank]
    pairs = [_linen_and_nnx(fn, granularity, x_shape) for fn in FNS]
    rng = np.random.default_rng(rank)  # numpy draws: no per-shape compiles
    x = rng.normal(size=x_shape).astype(np.float32) * 2
    upstream = rng.normal(size=x_shape).astype(np.float32)  # a random cotangent
    linen_params, graphdefs, states = [], [], []
    for linen_layer, nnx_layer in pairs:
        shape = nnx_layer.a.shape
        a = rng.normal(1.0, 1.0, size=shape).astype(np.float32)
        b = rng.normal(0.0, 1.0, size=shape).astype(np.float32)
        init = jax.eval_shape(linen_layer.init, jax.random.key(0), x)
        assert init["params"]["a"].shape == shape
        linen_params.append({"params": {"a": a, "b": b}})
        nnx_layer.a[...], nnx_layer.b[...] = a, b
        graphdef, state = nnx.split(nnx_layer)
        graphdefs.append(graphdef)
        states.append(state)

    def linen_outputs(params, x):
        return jnp.stack([layer.apply(p, x) for (layer, _), p in zip(pairs, params, strict=True)])

    def nnx_outputs(states, x):
        return jnp.stack([nnx.merge(g, s)(x) for g, s in zip(graphdefs, states, strict=True)])

    def both(linen_params, states, x):
        """Outputs and gradients (in the parameters and x) of the two implementations."""
        results = []
        for outputs, variables in ((linen_outputs, linen_params), (nnx_outputs, states)):
            out, vjp = jax.vjp(outputs, variables, x)
            results.append((out, *vjp(jnp.broadcast_to(upstream, out.shape))))
        return results

    compiled = jax.jit(both).lower(linen_params, states, x).compile(FAST_COMPILE)
    (linen_out, linen_grads, linen_dx), (nnx_out, nnx_grads, nnx_dx) = compiled(
        linen_params, states, x
    )
    np.testing.assert_allclose(nnx_out, linen_out)
    np.testing.assert_allclose(nnx_dx, linen_dx, rtol=1e-6)
    for fn, linen_grad, nnx_grad in zip(FNS, linen_grads, nnx_grads, strict=True):
        for name in ("a", "b"):
            np.testing.assert_allclose(
                nnx_grad[name][...], linen_grad["params"][name], rtol=1e-6, err_msg=f"{fn} {name}"
            )


def test_shapes_from_the_constructor_and_from_for_input():
    assert agile_nnx.Agile("relu", ()).a.shape == ()  # one pair: () since 0.3.0, no default
    assert agile_nnx.Agile("relu", 16).a.shape == (16,)
    assert agile_nnx.Agile("relu", (28, 28, 16)).b.shape == (28, 28, 16)
    assert agile_nnx.CombinedAgile(["relu", "tanh"], 8).a.shape == (2, 8)
    nchw = (2, 4, 3, 3)
    for granularity, shape in [("element", (4, 3, 3)), ("channel", (3,)), ("scalar", ())]:
        assert agile_nnx.Agile.for_input("relu", nchw, granularity).a.shape == shape
    channels_first = agile_nnx.Agile.for_input("relu", nchw, feature_axes=-3)
    assert channels_first.a.shape == (4,) and channels_first.feature_axes == -3
    x = np.random.default_rng(0).normal(size=nchw).astype(np.float32)
    channels_first.a[...] = np.arange(4.0)
    expected = np.arange(4.0)[:, None, None] * np.maximum(x, 0)
    np.testing.assert_allclose(channels_first(x), expected)
    two_axes = agile_nnx.Agile.for_input("relu", nchw, feature_axes=(1, 2))
    assert two_axes.a.shape == (4, 3) and two_axes(x).shape == nchw


def test_untrained_layers_are_their_plain_activation_at_any_size():
    layer = agile_nnx.Agile("gelu", 3)
    combined = agile_nnx.CombinedAgile(("gelu", "tanh"), 3)
    for shape in [(3,), (2, 3), (2, 4, 4, 3)]:
        x = np.linspace(-3, 3, int(np.prod(shape)), dtype=np.float32).reshape(shape)
        np.testing.assert_allclose(layer(x), jax.nn.gelu(x), rtol=1e-6)
        np.testing.assert_allclose(combined(x), jax.nn.gelu(x), rtol=1e-6)


def test_inits_dtypes_and_metadata():
    layer = agile_nnx.Agile(
        jnp.sin,
        4,
        a_init=nnx.initializers.normal(1.0),
        b_init=0.5,
        dtype=jnp.bfloat16,
        param_dtype=jnp.float16,
        rngs=nnx.Rngs(0),
    )
    assert layer.a.dtype == jnp.float16 and np.all(layer.b[...] == 0.5)
    assert layer.a.get_metadata()["agile"] and isinstance(layer.a, nnx.Param)
    x = jnp.ones((2, 4))
    assert layer(x).dtype == jnp.bfloat16
    np.testing.assert_allclose(
        layer(x).astype(jnp.float32), layer.a[...] * np.sin(x - 0.5), rtol=1e-2
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: agile_nnx.Agile("agile_relu"), r"Agile\(fn\) takes a plain.*Agile\('relu'\)"),
        (lambda: agile_nnx.Agile("swish"), "Unknown activation 'swish'"),
        (lambda: agile_nnx.Agile("relu", 0), "channel count >= 1"),
        (lambda: agile_nnx.Agile("relu", (3, "4")), "tuple of ints >= 1"),
        (lambda: agile_nnx.Agile("relu", 3, feature_axes=(1, 2)), "needs one feature axis"),
        (lambda: agile_nnx.Agile("relu", (3, 4), feature_axes=1), "needs 2 feature axes"),
        (lambda: agile_nnx.Agile("relu", 3, a_init=nnx.initializers.normal()), "pass rngs="),
        (lambda: agile_nnx.CombinedAgile("relu"), "non-empty sequence"),
        (lambda: agile_nnx.Agile.for_input("relu", (4,), "element"), "batch axis"),
        (lambda: agile_nnx.Agile.for_input("relu", (2, 4), "pixel"), "Unknown granularity"),
    ],
)
def test_bad_arguments_are_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_inputs_that_do_not_fit_say_which_layout_fits():
    with pytest.raises(ValueError, match=r"one per element.*trailing axes must be \(4, 4, 3\)"):
        agile_nnx.Agile("relu", (4, 4, 3))(jnp.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match="granularity='channel'"):
        agile_nnx.Agile("relu", (4, 4, 3))(jnp.zeros((2, 8, 8, 3)))
    with pytest.raises(ValueError, match=r"one per channel along axes -1, do not fit .*\(2, 5\)"):
        agile_nnx.Agile("relu", 3)(jnp.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"CombinedAgile: a and b of shape \(3,\)"):
        agile_nnx.CombinedAgile(("relu", "tanh"), 3)(jnp.zeros((2, 5)))


def test_training_step_under_nnx_jit_changes_a_and_b():
    model = agile_nnx.Agile("sigmoid", 3)
    optimizer = nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.Param)
    x = np.random.default_rng(1).normal(size=(8, 3)).astype(np.float32)
    target = 2.0 * jax.nn.sigmoid(x - 1.0)

    @nnx.jit
    def step(model, optimizer, x):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - target) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer, x)) for _ in range(3)]
    assert losses[2] < losses[0]
    assert np.all(model.a[...] != 1.0) and np.all(model.b[...] != 0.0)


def test_ensemble_under_nnx_vmap():
    """Four independently initialised members, created and applied by nnx.vmap."""

    @nnx.split_rngs(splits=4)
    @nnx.vmap(in_axes=0, out_axes=0)
    def create(rngs):
        init = nnx.initializers.normal(1.0)
        return agile_nnx.Agile("tanh", 3, a_init=init, b_init=init, rngs=rngs)

    ensemble = create(nnx.Rngs(0))
    assert ensemble.a.shape == (4, 3)
    x = np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32)
    out = nnx.vmap(lambda member, x: member(x), in_axes=(0, None))(ensemble, x)
    a, b = ensemble.a[...], ensemble.b[...]
    assert out.shape == (4, 5, 3) and not np.allclose(a[0], a[1])
    for i in range(4):
        np.testing.assert_allclose(out[i], a[i] * np.tanh(x - b[i]), rtol=1e-5, atol=1e-6)


def test_linen_layer_through_to_nnx_bridge():
    x = np.random.default_rng(3).normal(size=(2, 4, 4, 3)).astype(np.float32)
    linen_layer = agile.CombinedAgile(("relu", "sigmoid"), b_init=nn.initializers.normal(1.0))
    wrapped = bridge.ToNNX(linen_layer, rngs=nnx.Rngs(0))
    bridge.lazy_init(wrapped, x)
    params = {"params": {"a": wrapped.a[...], "b": wrapped.b[...]}}
    assert params["params"]["a"].shape == (2, 3)
    np.testing.assert_allclose(wrapped(x), linen_layer.apply(params, x))


def test_nnx_layer_through_to_linen_and_back_keeps_values_and_its_mark():
    x = np.random.default_rng(4).normal(size=(2, 3)).astype(np.float32)
    init = nnx.initializers.normal(1.0)
    as_linen = bridge.ToLinen(agile_nnx.Agile, args=("tanh", 3), kwargs={"b_init": init})
    variables = as_linen.init(jax.random.key(5), x)
    a, b = (nn.unbox(variables["params"][name]) for name in ("a", "b"))
    np.testing.assert_allclose(as_linen.apply(variables, x), a * np.tanh(x - b), rtol=1e-6)
    labels = agile.param_labels(variables["params"], as_linen, x)
    assert labels == {"a": "agile", "b": "agile"}
    back = bridge.ToNNX(as_linen, rngs=nnx.Rngs(0))
    bridge.lazy_init(back, x)
    back.a[...], back.b[...] = a, b  # the linen variables, back in an NNX module
    np.testing.assert_allclose(back(x), a * np.tanh(x - b), rtol=1e-6)
    assert agile.param_labels(nnx.state(back, nnx.Param)) == nnx.State({"a": "agile", "b": "agile"})


class _UserModel(nnx.Module):
    """A linear layer, an agile layer, a combined one, and the user's own params a and b."""

    def __init__(self, rngs):
        self.linear = nnx.Linear(3, 4, rngs=rngs)
        self.act = agile_nnx.Agile("relu", 4)
        self.mix = agile_nnx.CombinedAgile(("relu", "tanh"), 4)
        self.a = nnx.Param(jnp.ones(4))
        self.b = nnx.Param(jnp.zeros(4))
        self.stats = nnx.BatchStat(jnp.zeros(4))

    def __call__(self, x):
        return self.mix(self.act(self.linear(x))) * self.a[...] + self.b[...]


def test_param_labels_mark_exactly_the_agile_parameters_of_an_nnx_model():
    model = _UserModel(nnx.Rngs(0))
    labels = agile.param_labels(nnx.state(model, nnx.Param))
    assert nnx.to_pure_dict(labels) == {
        "linear": {"kernel": "weights", "bias": "weights"},
        "act": {"a": "agile", "b": "agile"},
        "mix": {"a": "agile", "b": "agile"},
        "a": "weights",
        "b": "weights",
    }
    assert agile.param_labels(model) == labels  # a module reads as nnx.state(model, nnx.Param)
    agile_only = nnx.to_pure_dict(nnx.state(model, agile_nnx.is_agile_param))
    assert set(agile_only) == {"act", "mix"}


def test_param_labels_drive_nnx_optimizer_multi_transform():
    model = _UserModel(nnx.Rngs(0))
    tx = optax.multi_transform(
        {"agile": optax.sgd(0.1), "weights": optax.set_to_zero()},
        agile.param_labels(nnx.state(model, nnx.Param)),
    )
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    before = nnx.clone(model)
    x = np.random.default_rng(6).normal(size=(8, 3)).astype(np.float32)
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
    optimizer.update(model, grads)
    for name in ("act", "mix"):
        for p in ("a", "b"):
            assert not np.allclose(
                getattr(getattr(model, name), p)[...], getattr(getattr(before, name), p)[...]
            ), (name, p)
    for p in ("a", "b"):  # the user's own a and b are weights, frozen here
        np.testing.assert_array_equal(getattr(model, p)[...], getattr(before, p)[...])
    np.testing.assert_array_equal(model.linear.kernel[...], before.linear.kernel[...])


def _pure(state):
    """``state`` holding arrays instead of its variables (``nnx.as_pure``, new in flax 0.12)."""
    if hasattr(nnx, "as_pure"):
        return nnx.as_pure(state)
    return nnx.State(nnx.to_pure_dict(state))


def test_param_labels_refuse_pure_arrays_and_extra_arguments():
    model = _UserModel(nnx.Rngs(0))
    with pytest.raises(ValueError, match="needs the state with its nnx.Variable objects"):
        agile.param_labels(_pure(nnx.state(model, nnx.Param)))
    with pytest.raises(ValueError, match="takes no model or inputs"):
        agile.param_labels(model, model)


def test_shape_is_required_and_an_int_is_one_pair_per_channel_as_in_linen():
    """One default story: linen Agile("relu") and NNX Agile("relu", C) are both per channel."""
    cases = [
        (lambda: agile_nnx.Agile("relu"), "Agile(fn, C)"),
        (lambda: agile_nnx.CombinedAgile(("relu", "tanh")), "CombinedAgile(fns, C)"),
    ]
    for make, name in cases:
        message = rf"needs the shape of a and b .*{re.escape(name)} for one pair per channel, "
        with pytest.raises(ValueError, match=message + "the linen layers' default"):
            make()
    x = jnp.zeros((2, 5, 5, 6))
    linen = jax.eval_shape(agile.Agile("relu").init, jax.random.key(0), x)["params"]["a"]
    assert agile_nnx.Agile("relu", 6).a.shape == linen.shape == (6,)
    assert agile_nnx.Agile.for_input("relu", x.shape).a.shape == (6,)  # "channel" by default
    with pytest.raises(ValueError, match="tuple of ints >= 1"):
        agile_nnx.Agile("relu", True)


def _partition_spec(layer):
    return nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(layer, nnx.Param)))


def test_with_partitioning_initializers_and_metadata_shard_a_and_b_and_keep_the_mark():
    """nnx.with_partitioning works as a and b's initializer, a_metadata/b_metadata reach the
    Params, and the agile mark (what param_labels reads) stays, on a 1-device mesh."""
    mesh = jax.sharding.Mesh(jax.devices(), ("model",))
    use_mesh = getattr(jax, "set_mesh", None) or jax.sharding.use_mesh
    with use_mesh(mesh):
        layer = agile_nnx.Agile(
            "relu",
            4,
            a_init=nnx.with_partitioning(nnx.initializers.ones, ("model",)),
            b_init=nnx.with_partitioning(nnx.initializers.zeros, ("model",)),
            b_metadata={"note": "shift"},
            param_dtype=jnp.bfloat16,
        )
        combined = agile_nnx.CombinedAgile(
            ("relu", "tanh"), 4,
            a_init=nnx.with_partitioning(agile.activations.combined_a_init, (None, "model")),
            a_metadata={"note": "scale"},
        )
        out = nnx.jit(lambda m, x: m(x))(layer, jnp.full((2, 4), 2.0))
    spec = _partition_spec(layer)
    assert tuple(spec["a"]) == ("model",) and tuple(spec["b"]) == ("model",)
    assert tuple(_partition_spec(combined)["a"]) == (None, "model")
    assert layer.a.dtype == jnp.bfloat16 and np.all(layer.a[...] == 1)
    np.testing.assert_array_equal(combined.a[...], [[1.0] * 4, [0.0] * 4])
    np.testing.assert_allclose(out, np.full((2, 4), 2.0))
    assert layer.b.get_metadata()["note"] == "shift"
    assert combined.a.get_metadata()["note"] == "scale"
    for variable in (layer.a, layer.b, combined.a, combined.b):
        assert variable.get_metadata()["agile"] is True
    if layer.a.get_metadata().get("eager_sharding"):  # flax >= 0.12 places them at creation
        assert layer.a[...].sharding.spec == jax.sharding.PartitionSpec("model")
    assert nnx.to_pure_dict(agile.param_labels(layer)) == {"a": "agile", "b": "agile"}
    with pytest.raises(ValueError, match="sets 'agile', the mark agile.param_labels reads"):
        agile_nnx.Agile("relu", 4, a_metadata={"agile": False})


def test_bf16_compute_with_float32_parameters_and_gradients():
    x = np.random.default_rng(7).normal(size=(3, 4)).astype(np.float32)
    for layer in (agile_nnx.Agile("sigmoid", 4, dtype=jnp.bfloat16),
                  agile_nnx.CombinedAgile(("relu", "tanh"), 4, dtype=jnp.bfloat16)):
        assert layer.a.dtype == jnp.float32 and layer.b.dtype == jnp.float32
        assert layer(x).dtype == jnp.bfloat16
        grads = nnx.grad(lambda m: m(x).astype(jnp.float32).sum())(layer)
        assert grads["a"][...].dtype == jnp.float32 and grads["b"][...].dtype == jnp.float32
        assert np.any(grads["a"][...] != 0)
    assert agile_nnx.Agile("tanh", 4)(x).dtype == jnp.float32  # dtype None: the input's


def test_weight_decay_mask_of_an_nnx_model_keeps_a_at_one_under_adamw():
    model = _UserModel(nnx.Rngs(0))
    labels = agile.param_labels(nnx.state(model, nnx.Param))
    mask = agile.weight_decay_mask(labels)
    assert nnx.to_pure_dict(mask)["act"] == {"a": False, "b": False}
    assert nnx.to_pure_dict(mask)["a"] is True  # the user's own a is a weight
    before = nnx.clone(model)
    optimizer = nnx.Optimizer(model, optax.adamw(0.1, weight_decay=0.5, mask=mask), wrt=nnx.Param)
    zero = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
    optimizer.update(model, zero)
    np.testing.assert_array_equal(model.act.a[...], np.ones(4))
    np.testing.assert_array_equal(model.mix.a[...], before.mix.a[...])
    assert np.all(np.abs(model.linear.kernel[...]) < np.abs(before.linear.kernel[...]))
    np.testing.assert_allclose(model.a[...], np.full(4, 0.95), rtol=1e-6)


def test_flax_older_than_the_floor_is_refused_by_name():
    """flax 0.10.2's NNX filters see no metadata (param_labels would find nothing): refused."""
    with pytest.raises(ImportError, match=r"agile.nnx needs flax >= 0.11.0 \(found 0.10.2\)"):
        agile_nnx._check_flax_version("0.10.2")
    for version in ("0.11.0", "0.12.8", "0.13.0.dev20270101", "1.0.0"):
        agile_nnx._check_flax_version(version)
    assert agile_nnx.FLAX_FLOOR == (0, 11, 0)
