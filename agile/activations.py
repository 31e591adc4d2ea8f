"""Agile activation functions as pure JAX functions.

An agile activation generalises a plain activation ``f`` to ``z = a * f(x - b)``
(Kong, Ko & Ko, 2020), where the scale ``a`` and shift ``b`` are learned. With
``a = 1`` and ``b = 0`` it is the plain activation. Everything here is a pure
function of arrays, so it composes with ``jax.jit``, ``jax.grad`` and
``jax.vmap``, and keeps the input's dtype (bf16 in, bf16 out).

:func:`combined` sums several agile terms, ``sum_k a[k] * f_k(x - b[k])``.
Activations are also looked up by name (:func:`get_activation`): a plain name
(``"relu"``), ``"agile_<plain name>"`` or ``"combined:<plain>,<plain>,..."``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast, runtime_checkable

import jax
import jax.numpy as jnp

from agile.errors import ArgumentError, unknown_value_error

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
Activation = Callable[[Array], Array]


@runtime_checkable
class AgileFn(Protocol):
    """The type of ``agile_relu``, ..., and of what :func:`agile` returns.

    ``fn(x, a=1.0, b=0.0) -> a * f(x - b)``: ``x``, ``a`` and ``b`` are arrays or scalars
    (anything ``jnp.asarray`` takes) and the result is a ``jax.Array``; ``fn.activation`` is
    the plain ``f``. A type checker rejects other arguments (``agile_relu(x, c=2.0)``) and
    calls with more than three.
    """

    __name__: str
    activation: Activation

    def __call__(self, x: ArrayLike, a: ArrayLike = ..., b: ArrayLike = ...) -> Array: ...


@runtime_checkable
class CombinedFn(Protocol):
    """The type of what :func:`combined` returns: ``fn(x, a, b) -> sum_k a[k] * f_k(x - b[k])``.

    ``a`` and ``b`` are required and carry a leading axis of size ``len(fn.activations)``.
    """

    __name__: str
    activations: tuple[Activation, ...]

    def __call__(self, x: ArrayLike, a: ArrayLike, b: ArrayLike) -> Array: ...


AgileActivation = AgileFn  # The name before 0.3.0 (then Callable[..., Array]).


@jax.custom_jvp
def sigmoid(x: ArrayLike) -> Array:
    """Logistic sigmoid whose derivative stays accurate in both tails.

    ``jax.nn.sigmoid`` differentiates as ``s * (1 - s)``, which loses all
    relative precision for large positive inputs (``1 - s`` rounds in float32);
    here the derivative is ``sigmoid(x) * sigmoid(-x)``, accurate everywhere.
    """
    return jax.nn.sigmoid(x)


@sigmoid.defjvp
def _sigmoid_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    value = sigmoid(x)
    return value, dx * value * jax.nn.sigmoid(-x)


PLAIN_ACTIVATIONS: dict[str, Activation] = {
    "relu": jax.nn.relu,
    "sigmoid": sigmoid,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
}
AGILE_PREFIX = "agile_"
COMBINED_PREFIX = "combined:"
_COMBINED_FORM = "combined:<name>,<name>,..."

_AGILE_DOC = """Agile {name}: ``a * {name}(x - b)`` with a learned scale ``a`` and shift ``b``.

Kong, Ko & Ko (2020). With the defaults ``a = 1``, ``b = 0`` it is ``{name}(x)``.

Args:
  x: the pre-activation, any shape; integer input is promoted to the default
    float dtype.
  a: the scale. Broadcasts against ``x`` by NumPy rules: a scalar (one pair for
    everything), shape ``x.shape[-1:]`` (one per channel, channels last) or
    ``x.shape[1:]`` (one per element of an example), ...
  b: the shift, broadcast against ``x`` in the same way.

Returns:
  ``a * {name}(x - b)`` in ``x``'s dtype, of the broadcast shape of ``x``, ``a``
  and ``b``. ``a`` and ``b`` are cast to ``x``'s dtype first, so float32
  parameters applied to a bfloat16 ``x`` give bfloat16, and their gradients
  flow back through the cast to float32.
"""


def _as_float(x: ArrayLike) -> Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _activation_name(fn: Activation) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def as_plain_activation(fn: str | Activation, owner: str = "agile") -> Activation:
    """A plain activation ``x -> f(x)`` from a plain name or a callable.

    ``owner`` names the caller in the errors: an agile name (``"agile_relu"``)
    raises "``owner``\\(fn) takes a plain activation ... use ``owner``\\('relu')",
    an unknown name lists the plain names, anything else that is not callable
    raises too.
    """
    if isinstance(fn, str):
        if fn.startswith(AGILE_PREFIX) and fn[len(AGILE_PREFIX) :] in PLAIN_ACTIVATIONS:
            plain = fn[len(AGILE_PREFIX) :]
            raise ValueError(
                f"{owner}(fn) takes a plain activation, got {fn!r}; use {owner}({plain!r})."
            )
        if fn not in PLAIN_ACTIVATIONS:
            raise unknown_value_error("activation", fn, PLAIN_ACTIVATIONS, ArgumentError)
        return PLAIN_ACTIVATIONS[fn]
    if hasattr(fn, "shape") and hasattr(fn, "dtype"):  # an array where the activation goes
        raise ValueError(
            f"{owner}(fn) got an array of shape {tuple(fn.shape)} where the activation goes: "
            f"was {owner} itself passed as a model's act= (act={owner}), so that the model "
            f"called it on its input? Pass what it makes: act={owner}('relu')."
        )
    if not callable(fn):
        raise ValueError(f"{owner}(fn) needs an activation name or a callable, got {fn!r:.80}.")
    return fn


def agile(fn: str | Activation) -> AgileFn:
    """Returns the agile form of ``fn``: ``(x, a=1.0, b=0.0) -> a * fn(x - b)``.

    ``fn`` is a plain activation name (``"relu"``) or any callable ``x -> f(x)``.
    ``a`` and ``b`` broadcast against ``x`` and are cast to ``x``'s dtype, so a
    float32 parameter applied to a bf16 activation gives bf16 (the gradient
    still flows back to the float32 parameter through the cast). The result is
    a plain function: it composes with ``jax.jit``, ``jax.grad`` and ``jax.vmap``.
    """
    fn = as_plain_activation(fn, "agile")

    def agile_fn(x: ArrayLike, a: ArrayLike = A_INIT, b: ArrayLike = B_INIT) -> Array:
        x = _as_float(x)
        a = jnp.asarray(a).astype(x.dtype)
        b = jnp.asarray(b).astype(x.dtype)
        return a * fn(x - b)

    name = _activation_name(fn)
    agile_fn.__name__ = agile_fn.__qualname__ = f"{AGILE_PREFIX}{name}"
    agile_fn.__doc__ = _AGILE_DOC.format(name=name)
    typed = cast(AgileFn, agile_fn)  # the function, with the attribute AgileFn declares
    typed.activation = fn
    return typed


def combined(*fns: str | Activation) -> CombinedFn:
    """Returns ``(x, a, b) -> sum_k a[k] * fns[k](x - b[k])``, a combined agile activation.

    Several parametric activations summed in one unit, as in the authors'
    follow-up work. ``fns`` are plain activation names or callables (at least
    one; a repeat such as ``combined("relu", "relu")`` is allowed and gives a
    learned piecewise-linear unit). ``a`` and ``b`` carry a leading axis of size
    ``K = len(fns)``; ``a[k]`` and ``b[k]`` broadcast against ``x`` exactly as in
    :func:`agile` (scalars, per channel, per element), and are cast to ``x``'s
    dtype. :func:`combined_a_init` gives the parameters at which the unit is
    ``fns[0]``. A wrong leading axis raises ValueError.
    """
    if not fns:
        raise ValueError("combined(*fns) needs at least one activation.")
    plain = tuple(as_plain_activation(fn, "combined") for fn in fns)

    def combined_fn(x: ArrayLike, a: ArrayLike, b: ArrayLike) -> Array:
        x = _as_float(x)
        a = jnp.asarray(a).astype(x.dtype)
        b = jnp.asarray(b).astype(x.dtype)
        if a.shape[:1] != (len(plain),) or b.shape[:1] != (len(plain),):
            raise ValueError(
                f"{combined_fn.__name__} sums {len(plain)} activations, so a and b need a "
                f"leading axis of size {len(plain)}; got shapes {a.shape} and {b.shape}."
            )
        return sum(a[k] * fn(x - b[k]) for k, fn in enumerate(plain))

    names = [_activation_name(fn) for fn in plain]
    combined_fn.__name__ = combined_fn.__qualname__ = "combined_" + "_".join(names)
    combined_fn.__doc__ = (
        f"Combined agile activation: ``sum_k a[k] * f_k(x - b[k])`` over ({', '.join(names)}).\n\n"
        f"``a`` and ``b`` have a leading axis of size {len(plain)}; each ``a[k]``, ``b[k]`` "
        "broadcasts against ``x`` and is cast to ``x``'s dtype."
    )
    typed = cast(CombinedFn, combined_fn)
    typed.activations = plain
    return typed


A_INIT, B_INIT = 1.0, 0.0  # The paper's start: a = 1, b = 0, where an agile f is the plain f.


def initial_value(symbol: str, term: int = 0) -> float:
    """The default initial value of ``a`` or ``b`` (of term ``term`` of a combined activation).

    ``a = A_INIT = 1`` and ``b = B_INIT = 0``; a combined activation starts as its first term,
    so its other terms have ``a[k] = 0`` (:func:`combined_a_init`).
    """
    if symbol not in ("a", "b"):
        raise ValueError(f"initial_value takes 'a' or 'b', got {symbol!r}.")
    if symbol == "b":
        return B_INIT
    return A_INIT if term == 0 else 0.0


def combined_a_init(key: Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
    """Initial ``a`` of a combined activation: ``a[0] = 1``, ``a[k] = 0`` for k >= 1.

    With ``b = 0`` an untrained combined unit ``sum_k a[k] f_k(x - b[k])`` is
    exactly its first activation ``f_0``, the known function the model starts
    from (``combined:relu,sigmoid`` starts as the plain-ReLU network). Every
    ``a[k]`` gets a gradient from the first step, ``dz/da[k] = f_k(x - b[k])``,
    so the other terms grow in where they lower the loss; ``b[k]`` moves once
    its ``a[k]`` is non-zero (``dz/db[k] = -a[k] f_k'(x - b[k])``). An equal
    mix ``a[k] = 1/K`` would start from an unfamiliar function, and random
    ``a`` from a different one per unit. ``key`` is unused (a Flax initializer
    signature); ``shape[0]`` is the number of activations K.
    """
    del key
    return jnp.zeros(shape, dtype).at[0].set(A_INIT)


AGILE_ACTIVATIONS: dict[str, AgileFn] = {
    f"{AGILE_PREFIX}{name}": agile(fn) for name, fn in PLAIN_ACTIVATIONS.items()
}
agile_relu: AgileFn = AGILE_ACTIVATIONS["agile_relu"]
agile_sigmoid: AgileFn = AGILE_ACTIVATIONS["agile_sigmoid"]
agile_tanh: AgileFn = AGILE_ACTIVATIONS["agile_tanh"]
agile_gelu: AgileFn = AGILE_ACTIVATIONS["agile_gelu"]
agile_silu: AgileFn = AGILE_ACTIVATIONS["agile_silu"]
agile_softplus: AgileFn = AGILE_ACTIVATIONS["agile_softplus"]
agile_elu: AgileFn = AGILE_ACTIVATIONS["agile_elu"]
agile_leaky_relu: AgileFn = AGILE_ACTIVATIONS["agile_leaky_relu"]
ACTIVATION_NAMES: tuple[str, ...] = tuple(PLAIN_ACTIVATIONS) + tuple(AGILE_ACTIVATIONS)


def combined_names(name: str) -> tuple[str, ...]:
    """The plain names in ``"combined:<name>,<name>,..."``; ValueError if it is not one."""
    if not isinstance(name, str) or not name.startswith(COMBINED_PREFIX):
        raise ValueError(f"Expected a combined activation {_COMBINED_FORM!r}, got {name!r}.")
    parts = tuple(part.strip() for part in name[len(COMBINED_PREFIX) :].split(","))
    for part in parts:
        if part not in PLAIN_ACTIVATIONS:
            error = unknown_value_error("activation", part, PLAIN_ACTIVATIONS, ArgumentError)
            raise ArgumentError(f"In {name!r}: {error}")
    return parts


def validate_activation_name(name: str) -> str:
    """Returns ``name`` if it names an activation, else raises a one-line ValueError.

    Known names: the plain ones (:data:`PLAIN_ACTIVATIONS`), ``agile_<plain name>``
    and ``combined:<plain name>,<plain name>,...``.
    """
    if isinstance(name, str) and name.startswith(COMBINED_PREFIX):
        combined_names(name)
    elif not isinstance(name, str) or name not in ACTIVATION_NAMES:
        raise unknown_value_error("activation", name, (*ACTIVATION_NAMES, _COMBINED_FORM),
                                  ArgumentError)
    return name


def is_agile_name(name: str) -> bool:
    """Whether ``name`` names an agile activation (``agile_<plain name>``)."""
    return validate_activation_name(name).startswith(AGILE_PREFIX)


def is_combined_name(name: str) -> bool:
    """Whether ``name`` names a combined activation (``combined:<plain>,<plain>,...``)."""
    return validate_activation_name(name).startswith(COMBINED_PREFIX)


def is_learnable_name(name: str) -> bool:
    """Whether ``name``'s activation has learned parameters (an agile or combined name)."""
    return is_agile_name(name) or is_combined_name(name)


def plain_name(name: str) -> str:
    """The plain activation behind a plain or agile name: ``"agile_relu"`` -> ``"relu"``."""
    if is_combined_name(name):
        raise ValueError(f"{name!r} combines several activations; combined_names() lists them.")
    return name[len(AGILE_PREFIX) :] if name.startswith(AGILE_PREFIX) else name


def get_activation(name: str) -> Activation | AgileFn | CombinedFn:
    """Looks up an activation by name.

    Plain names (``relu sigmoid tanh gelu silu softplus elu leaky_relu``) give
    ``x -> f(x)``; ``agile_<plain name>`` gives ``(x, a=1.0, b=0.0) -> a * f(x - b)``;
    ``combined:<plain>,<plain>,...`` gives :func:`combined`'s ``(x, a, b)``.
    """
    if is_combined_name(name):
        return combined(*combined_names(name))
    return PLAIN_ACTIVATIONS.get(name) or AGILE_ACTIVATIONS[name]
