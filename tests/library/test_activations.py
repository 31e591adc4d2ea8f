"""Values, gradients, dtypes and errors of the pure agile activation functions."""

import inspect
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import agile
from agile import activations as act

PLAIN_NAMES = list(act.PLAIN_ACTIVATIONS)
AGILE_NAMES = list(act.AGILE_ACTIVATIONS)


def _sigmoid64(x):
    return 1.0 / (1.0 + np.exp(-x))


def _random_points(seed, n=256, spread=30.0):
    """Random x, a (negative ones included) and b, with |x - b| up to ``spread``."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-spread, spread, n).astype(np.float32)
    a = rng.uniform(-3.0, 3.0, n).astype(np.float32)
    b = rng.uniform(-2.0, 2.0, n).astype(np.float32)
    return x, a, b


def _grads(fn, x, a, b):
    """Elementwise d/dx, d/da, d/db of fn(x, a, b) by reverse-mode autodiff."""
    return jax.vmap(jax.grad(fn, argnums=(0, 1, 2)))(x, a, b)


def test_public_api_imports():
    from agile import Agile, agile, agile_relu, agile_sigmoid, get_activation  # noqa: F401


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_agile_with_identity_parameters_is_the_plain_activation(name):
    x = jnp.linspace(-6.0, 6.0, 101)
    plain = act.get_activation(name)
    np.testing.assert_allclose(act.get_activation(f"agile_{name}")(x), plain(x), rtol=1e-6)
    np.testing.assert_allclose(act.agile(plain)(x, 1.0, 0.0), plain(x), rtol=1e-6)


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_agile_is_scale_times_shifted_activation(name):
    x, a, b = _random_points(0, spread=5.0)
    plain = act.get_activation(name)
    expected = a * plain(x - b)
    np.testing.assert_allclose(act.get_activation(f"agile_{name}")(x, a, b), expected, rtol=1e-6)


def test_module_level_agile_functions_are_the_registry_entries():
    for name in AGILE_NAMES:
        assert getattr(act, name) is act.get_activation(name)
        assert getattr(agile, name) is act.get_activation(name)
        assert act.get_activation(name).__name__ == name


def test_get_activation_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown activation 'swish'.*agile_relu.*leaky_relu"):
        act.get_activation("swish")
    with pytest.raises(ValueError, match="Unknown activation"):
        act.get_activation(None)


def test_name_helpers():
    assert act.is_agile_name("agile_tanh") and not act.is_agile_name("tanh")
    assert act.plain_name("agile_tanh") == "tanh" and act.plain_name("tanh") == "tanh"
    assert act.validate_activation_name("gelu") == "gelu"
    with pytest.raises(ValueError, match="Unknown activation 'agile_swish'"):
        act.is_agile_name("agile_swish")
    with pytest.raises(ValueError, match="Unknown activation"):
        act.plain_name("agile_")


@pytest.mark.parametrize("name", AGILE_NAMES)
def test_dtype_is_kept(name):
    fn = act.get_activation(name)
    x = jnp.linspace(-3, 3, 8, dtype=jnp.bfloat16)
    a = jnp.full((8,), 1.5, jnp.float32)
    b = jnp.full((8,), 0.25, jnp.float32)
    assert fn(x, a, b).dtype == jnp.bfloat16
    assert fn(x.astype(jnp.float32), a, b).dtype == jnp.float32
    grad_a = jax.grad(lambda a: fn(x, a, b).astype(jnp.float32).sum())(a)
    assert grad_a.dtype == jnp.float32


def test_integer_input_is_promoted_to_float():
    out = act.agile_relu(jnp.arange(-2, 3), 2.0, 0.5)
    assert jnp.issubdtype(out.dtype, jnp.floating)
    np.testing.assert_allclose(out, [0, 0, 0, 1, 3])


def test_parameters_broadcast_against_input():
    x = jnp.arange(24.0).reshape(2, 3, 4) - 12
    a = jnp.array([1.0, 2.0, 3.0, 4.0])  # per channel
    b = jnp.ones((3, 4))  # per position
    np.testing.assert_allclose(act.agile_relu(x, a, b), a * np.maximum(x - b, 0))
    np.testing.assert_allclose(act.agile_relu(x, 2.0), 2 * np.maximum(x, 0))


def test_jit_grad_and_vmap_compose():
    x, a, b = _random_points(1, n=16, spread=4.0)
    f = jax.jit(jax.vmap(jax.grad(act.agile_sigmoid, argnums=(0, 1, 2))))
    gx, ga, gb = f(x, a, b)
    s = _sigmoid64(x.astype(np.float64) - b)
    np.testing.assert_allclose(ga, s, rtol=1e-5)
    np.testing.assert_allclose(gx, -gb, rtol=1e-6)


@pytest.mark.parametrize("name", AGILE_NAMES)
def test_no_overflow_for_large_shifts(name):
    fn = act.get_activation(name)
    d = np.array([-1e4, -1e3, -88.0, -30.0, 30.0, 88.0, 1e3, 1e4], np.float32)
    a = np.full_like(d, -1.7)
    for b in (np.zeros_like(d), np.full_like(d, 50.0)):
        x = d + b
        value = fn(x, a, b)
        grads = _grads(fn, x, a, b)
        assert np.all(np.isfinite(value)), value
        for g in grads:
            assert np.all(np.isfinite(g)), (name, g)


def test_agile_sigmoid_matches_closed_forms():
    """A = a*s, s = sigmoid(x-b): dA/dx = a*s(1-s), dA/da = s, dA/db = -a*s(1-s).

    Checks the corrections of the paper's Eq. 10, 12, 18 and 20 (docs/errata.md).
    """
    x, a, b = _random_points(2)
    d = (x - b).astype(np.float64)  # x - b rounded to float32, as computed
    s = _sigmoid64(d)
    s_prime = s * _sigmoid64(-d)  # s(1 - s) without cancellation in 1 - s
    value = act.agile_sigmoid(x, a, b)
    gx, ga, gb = _grads(act.agile_sigmoid, x, a, b)
    np.testing.assert_allclose(value, a * s, rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(gx, a * s_prime, rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(ga, s, rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(gb, -a * s_prime, rtol=1e-6, atol=1e-30)
    # The same forms written with A, as DEVELOPERS.md states them: A(1 - A/a).
    near = np.abs(d) < 5  # away from the tails, where 1 - A/a cancels in float64 too
    big_a = a * s
    np.testing.assert_allclose(gx[near], (big_a * (1 - big_a / a))[near], rtol=1e-6)


def test_agile_relu_matches_closed_forms():
    """z = a*max(x-b, 0): dz/dx = a*[x>b], dz/da = max(x-b, 0), dz/db = -a*[x>b]."""
    x, a, b = _random_points(3)
    d = (x - b).astype(np.float64)
    keep = d > 0
    gx, ga, gb = _grads(act.agile_relu, x, a, b)
    np.testing.assert_allclose(act.agile_relu(x, a, b), a * np.maximum(d, 0), rtol=1e-6)
    np.testing.assert_allclose(gx, np.where(keep, a, 0), rtol=1e-6)
    np.testing.assert_allclose(ga, np.maximum(d, 0), rtol=1e-6)
    np.testing.assert_allclose(gb, np.where(keep, -a, 0), rtol=1e-6)


@pytest.mark.parametrize(
    "fn, reference",
    [
        (act.agile_sigmoid, lambda x, a, b: a * _sigmoid64(x - b)),
        (act.agile_relu, lambda x, a, b: a * np.maximum(x - b, 0)),
    ],
    ids=["sigmoid", "relu"],
)
def test_gradients_match_finite_differences(fn, reference):
    x, a, b = _random_points(4, spread=12.0)
    keep = np.abs(x - b) > 1e-2  # away from ReLU's kink
    x, a, b = x[keep], a[keep], b[keep]
    autodiff = _grads(fn, x, a, b)
    args64 = [v.astype(np.float64) for v in (x, a, b)]
    h = 1e-6
    for i, grad in enumerate(autodiff):
        up = list(args64)
        down = list(args64)
        up[i] = up[i] + h
        down[i] = down[i] - h
        numeric = (reference(*up) - reference(*down)) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


def test_unknown_value_error_is_one_line_naming_value_and_valid_choices():
    from agile.errors import unknown_value_error

    error = unknown_value_error("data.source", "csv", ("auto", "idx", "tfds"))
    assert isinstance(error, ValueError)
    assert str(error) == "Unknown data.source 'csv'. Valid: auto, idx, tfds."
    assert str(unknown_value_error("granularity", None, [])) == "Unknown granularity None. Valid: ."


@pytest.mark.parametrize("name", AGILE_NAMES)
def test_agile_functions_have_real_signatures_and_docstrings(name):
    import inspect

    fn = getattr(agile, name)
    parameters = inspect.signature(fn).parameters
    assert list(parameters) == ["x", "a", "b"]
    assert (parameters["a"].default, parameters["b"].default) == (1.0, 0.0)
    assert fn.__module__ == "agile.activations" and not hasattr(fn, "__wrapped__")
    doc = fn.__doc__
    plain = name.removeprefix("agile_")
    assert f"a * {plain}(x - b)" in doc
    for word in ("a:", "b:", "Broadcasts", "dtype", "bfloat16"):
        assert word in doc, word


def test_agile_of_a_user_function_or_a_name():
    def cube(x):
        return x**3

    fn = act.agile(cube)
    assert fn.__name__ == "agile_cube" and "a * cube(x - b)" in fn.__doc__
    np.testing.assert_allclose(fn(jnp.array([2.0]), 3.0, 1.0), [3.0])
    np.testing.assert_allclose(act.agile("tanh")(jnp.array([0.5])), np.tanh([0.5]), rtol=1e-6)
    with pytest.raises(ValueError, match=r"agile\(fn\) takes a plain activation.*agile\('relu'\)"):
        act.agile("agile_relu")
    with pytest.raises(ValueError, match="needs an activation name or a callable"):
        act.agile(2.0)


def _combined_reference(names, x, a, b):
    """sum_k a[k] * f_k(x - b[k]) in float64 numpy."""
    plain = {"relu": lambda d: np.maximum(d, 0), "sigmoid": _sigmoid64, "tanh": np.tanh}
    return sum(a[k] * plain[name](x - b[k]) for k, name in enumerate(names))


def test_combined_is_the_sum_of_agile_terms():
    names = ("relu", "sigmoid", "tanh")
    fn = act.combined(*names)
    x, _, _ = _random_points(5, n=64, spread=5.0)
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(3, 64)).astype(np.float32), rng.normal(size=(3, 64)).astype(np.float32)
    expected = _combined_reference(names, *(v.astype(np.float64) for v in (x, a, b)))
    np.testing.assert_allclose(fn(x, a, b), expected, rtol=1e-5, atol=1e-6)
    assert fn.__name__ == "combined_relu_sigmoid_tanh"
    # Per-channel parameters (K, C) broadcast against (N, C); scalars (K,) against anything.
    x2 = jnp.asarray(x).reshape(16, 4)
    np.testing.assert_allclose(
        fn(x2, a[:, :4], b[:, :4]), _combined_reference(names, x2, a[:, :4], b[:, :4]), rtol=1e-5
    )
    assert fn(jnp.ones((2, 3), jnp.bfloat16), a[:, 0], b[:, 0]).dtype == jnp.bfloat16


def test_combined_initial_a_makes_the_unit_its_first_activation():
    a = act.combined_a_init(None, (2, 5))
    np.testing.assert_array_equal(a, [[1] * 5, [0] * 5])
    x = jnp.linspace(-4, 4, 5)
    np.testing.assert_allclose(
        act.combined("gelu", "sigmoid")(x, a, jnp.zeros((2, 5))), jax.nn.gelu(x), rtol=1e-6
    )


def test_combined_gradients_match_finite_differences():
    names = ("relu", "sigmoid", "tanh")
    fn = act.combined(*names)
    x, _, _ = _random_points(7, n=48, spread=6.0)
    rng = np.random.default_rng(8)
    a = rng.uniform(-2, 2, (3, 48)).astype(np.float32)
    b = rng.uniform(-1, 1, (3, 48)).astype(np.float32)
    keep = np.all(np.abs(x - b) > 1e-2, axis=0)  # away from ReLU's kink
    x, a, b = x[keep], a[:, keep], b[:, keep]
    grads = jax.grad(lambda *args: fn(*args).sum(), argnums=(0, 1, 2))(x, a, b)
    args64 = [v.astype(np.float64) for v in (x, a, b)]

    def central_difference(i, term):
        """d output / d args[i] (its row ``term`` for a and b), elementwise, h = 1e-6."""
        up, down = [v.copy() for v in args64], [v.copy() for v in args64]
        (up[i] if term is None else up[i][term])[...] += 1e-6
        (down[i] if term is None else down[i][term])[...] -= 1e-6
        return (_combined_reference(names, *up) - _combined_reference(names, *down)) / 2e-6

    np.testing.assert_allclose(grads[0], central_difference(0, None), rtol=1e-4, atol=1e-6)
    for i in (1, 2):  # each output depends on its own x and on a[k], b[k] at its position
        numeric = np.stack([central_difference(i, k) for k in range(3)])
        np.testing.assert_allclose(grads[i], numeric, rtol=1e-4, atol=1e-6)


def test_combined_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="at least one activation"):
        act.combined()
    with pytest.raises(ValueError, match=r"sums 2 activations.*leading axis of size 2.*\(3,\)"):
        act.combined("relu", "tanh")(jnp.ones(3), jnp.ones(3), jnp.ones(3))
    with pytest.raises(ValueError, match=r"combined\(fn\) takes a plain activation"):
        act.combined("relu", "agile_tanh")
    with pytest.raises(ValueError, match="Unknown activation 'swish'. Valid: relu, sigmoid"):
        act.combined("swish")


def test_combined_names():
    name = "combined:relu,sigmoid"
    assert act.validate_activation_name(name) == name
    assert act.combined_names(name) == ("relu", "sigmoid")
    assert act.is_combined_name(name) and act.is_learnable_name(name)
    assert not act.is_agile_name(name) and not act.is_combined_name("agile_relu")
    assert act.is_learnable_name("agile_relu") and not act.is_learnable_name("relu")
    fn = act.get_activation("combined:relu, tanh")
    assert fn.__name__ == "combined_relu_tanh"
    for bad, message in [
        ("combined:relu,swish", "In 'combined:relu,swish': Unknown activation 'swish'"),
        ("combined:", "Unknown activation ''"),
        ("combined:agile_relu", "Unknown activation 'agile_relu'. Valid: relu,"),
        ("mix:relu", r"Unknown activation 'mix:relu'.*combined:<name>,<name>"),
    ]:
        with pytest.raises(ValueError, match=message):
            act.validate_activation_name(bad)
    with pytest.raises(ValueError, match="combines several activations"):
        act.plain_name(name)
    with pytest.raises(ValueError, match="Expected a combined activation"):
        act.combined_names("relu")


def test_initial_values_are_the_plain_activation():
    """a = 1, b = 0 (a combined activation: its first term's a = 1, the others' 0), one
    definition that the layers, the NNX layers and the plots share."""
    assert (act.initial_value("a"), act.initial_value("b")) == (act.A_INIT, act.B_INIT) == (1, 0)
    assert act.initial_value("a", term=1) == 0.0 and act.initial_value("b", term=1) == 0.0
    assert act.combined_a_init(None, (3, 2)).tolist() == [[1, 1], [0, 0], [0, 0]]
    with pytest.raises(ValueError, match="initial_value takes 'a' or 'b', got 'c'"):
        act.initial_value("c")


def test_agile_functions_are_typed_by_protocols():
    """agile_relu & co. are AgileFn (x, a=1.0, b=0.0) -> Array, combined(...) a CombinedFn,
    not Callable[..., Array], so type checkers see their arguments."""
    hints = typing.get_type_hints(act)
    for name in AGILE_NAMES:
        fn = getattr(act, name)
        assert hints[name] is act.AgileFn, name
        assert isinstance(fn, act.AgileFn) and not isinstance(fn, act.CombinedFn)
        parameters = inspect.signature(fn).parameters
        assert [(p.name, p.default) for p in parameters.values()] == [
            ("x", inspect.Parameter.empty), ("a", 1.0), ("b", 0.0)
        ]
    assert typing.get_type_hints(act.agile)["return"] is act.AgileFn
    assert typing.get_type_hints(act.combined)["return"] is act.CombinedFn
    call = typing.get_type_hints(act.AgileFn.__call__)
    assert call == {"x": act.ArrayLike, "a": act.ArrayLike, "b": act.ArrayLike,
                    "return": jax.Array}
    assert list(inspect.signature(act.CombinedFn.__call__).parameters) == ["self", "x", "a", "b"]
    mix = act.combined("relu", "tanh")
    assert isinstance(mix, act.CombinedFn) and mix.activations == (jax.nn.relu, jnp.tanh)
    assert not isinstance(jax.nn.relu, act.AgileFn)  # a plain activation has no .activation
    assert agile.AgileFn is act.AgileFn and agile.CombinedFn is act.CombinedFn
