"""Agile activation functions as pure JAX functions.

An agile activation generalises a plain activation ``f`` to ``z = a * f(x - b)``
(Kong, Ko & Ko, 2020), where the scale ``a`` and shift ``b`` are learned. With
``a = 1`` and ``b = 0`` it is the plain activation. Everything here is a pure
function of arrays, so it composes with ``jax.jit``, ``jax.grad`` and
``jax.vmap``, and keeps the input's dtype (bf16 in, bf16 out).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array
ArrayLike = jax.typing.ArrayLike
Activation = Callable[[Array], Array]
AgileActivation = Callable[..., Array]


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


def agile(fn: Activation) -> AgileActivation:
    """Returns ``(x, a=1.0, b=0.0) -> a * fn(x - b)``.

    ``a`` and ``b`` broadcast against ``x`` and are cast to ``x``'s dtype, so a
    float32 parameter applied to a bf16 activation gives bf16 (the gradient
    still flows back to the float32 parameter through the cast).
    """

    @functools.wraps(fn)
    def agile_fn(x: ArrayLike, a: ArrayLike = 1.0, b: ArrayLike = 0.0) -> Array:
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.result_type(float))
        a = jnp.asarray(a).astype(x.dtype)
        b = jnp.asarray(b).astype(x.dtype)
        return a * fn(x - b)

    agile_fn.__name__ = f"{AGILE_PREFIX}{getattr(fn, '__name__', 'fn')}"
    agile_fn.__qualname__ = agile_fn.__name__
    agile_fn.__doc__ = f"Agile form of ``{getattr(fn, '__name__', fn)}``: ``a * f(x - b)``."
    return agile_fn


AGILE_ACTIVATIONS: dict[str, AgileActivation] = {
    f"{AGILE_PREFIX}{name}": agile(fn) for name, fn in PLAIN_ACTIVATIONS.items()
}
agile_relu = AGILE_ACTIVATIONS["agile_relu"]
agile_sigmoid = AGILE_ACTIVATIONS["agile_sigmoid"]
agile_tanh = AGILE_ACTIVATIONS["agile_tanh"]
agile_gelu = AGILE_ACTIVATIONS["agile_gelu"]
agile_silu = AGILE_ACTIVATIONS["agile_silu"]
agile_softplus = AGILE_ACTIVATIONS["agile_softplus"]
agile_elu = AGILE_ACTIVATIONS["agile_elu"]
agile_leaky_relu = AGILE_ACTIVATIONS["agile_leaky_relu"]
ACTIVATION_NAMES: tuple[str, ...] = tuple(PLAIN_ACTIVATIONS) + tuple(AGILE_ACTIVATIONS)


def is_agile_name(name: str) -> bool:
    """Whether ``name`` names an agile activation (``agile_<plain name>``)."""
    return validate_activation_name(name).startswith(AGILE_PREFIX)


def plain_name(name: str) -> str:
    """The plain activation behind ``name``: ``"agile_relu"`` -> ``"relu"``."""
    name = validate_activation_name(name)
    return name[len(AGILE_PREFIX):] if name.startswith(AGILE_PREFIX) else name


def validate_activation_name(name: str) -> str:
    """Returns ``name`` if it is a known activation, else raises ValueError."""
    if not isinstance(name, str) or name not in ACTIVATION_NAMES:
        raise ValueError(
            f"Unknown activation {name!r}. Valid names: {', '.join(ACTIVATION_NAMES)}."
        )
    return name


def get_activation(name: str) -> Activation | AgileActivation:
    """Looks up an activation by name.

    Plain names (``relu sigmoid tanh gelu silu softplus elu leaky_relu``) give
    ``x -> f(x)``; ``agile_<plain name>`` gives ``(x, a=1.0, b=0.0) -> a * f(x - b)``.
    """
    name = validate_activation_name(name)
    return PLAIN_ACTIVATIONS.get(name) or AGILE_ACTIVATIONS[name]
