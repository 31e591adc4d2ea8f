"""Flax linen layers over the pure functions in :mod:`agile.activations`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from agile.activations import agile, get_activation, is_agile_name, plain_name

Initializer = Callable[..., jax.Array]
GRANULARITIES = ("element", "channel", "scalar")


def _as_initializer(init: float | Initializer) -> Initializer:
    if callable(init):
        return init
    return nn.initializers.constant(init)


def parameter_shape(x_shape: tuple[int, ...], granularity: str) -> tuple[int, ...]:
    """Shape of ``a`` and ``b`` for an input of ``x_shape`` (leading batch axis).

    ``"element"``: one pair per element of a single example, ``x_shape[1:]``
    (the paper: per feature-map position and channel, or per dense node);
    ``"channel"``: one per channel, ``x_shape[-1:]``; ``"scalar"``: one pair.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(
            f"Unknown granularity {granularity!r}. Valid: {', '.join(GRANULARITIES)}."
        )
    if len(x_shape) < 1 or (granularity != "scalar" and len(x_shape) < 2):
        raise ValueError(
            f"Agile with granularity {granularity!r} needs an input with a batch axis and "
            f"at least one feature axis; got shape {x_shape}."
        )
    return {"element": tuple(x_shape[1:]), "channel": tuple(x_shape[-1:]), "scalar": ()}[
        granularity
    ]


class Agile(nn.Module):
    """Learned ``a * fn(x - b)`` with parameters named ``a`` and ``b``.

    Attributes:
      fn: a plain activation name known to ``get_activation`` (``"relu"``,
        ``"tanh"``, ...) or any callable ``x -> f(x)``.
      granularity: ``"element"`` (one pair per element of one example, the
        paper's choice), ``"channel"`` or ``"scalar"``.
      a_init, b_init: constants or Flax initializers; the defaults 1 and 0 make
        an untrained agile activation equal the plain one.
      param_dtype: dtype of ``a`` and ``b``.
    """

    fn: str | Callable[[jax.Array], jax.Array]
    granularity: str = "element"
    a_init: float | Initializer = 1.0
    b_init: float | Initializer = 0.0
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fn = self.fn
        if isinstance(fn, str):
            if is_agile_name(fn):
                suggestion = f"Agile({plain_name(fn)!r})"
                raise ValueError(
                    f"Agile(fn) takes a plain activation, got {fn!r}; use {suggestion}."
                )
            fn = get_activation(fn)
        elif not callable(fn):
            raise ValueError(f"Agile(fn) needs an activation name or a callable, got {fn!r}.")
        shape = parameter_shape(jnp.shape(x), self.granularity)
        a = self.param("a", _as_initializer(self.a_init), shape, self.param_dtype)
        b = self.param("b", _as_initializer(self.b_init), shape, self.param_dtype)
        return agile(fn)(x, a, b)


def activation_layer(
    activation: str, granularity: str = "element", **agile_kwargs: Any
) -> Callable[[jax.Array], jax.Array]:
    """Turns an activation name into something a model can call.

    ``agile_<f>`` gives an ``Agile("<f>")`` layer with learned ``a`` and ``b``
    (``agile_kwargs``, e.g. ``name`` or ``a_init``, go to it); a plain name gives
    the parameter-free function. Unknown names or granularities raise ValueError.
    """
    parameter_shape((1, 1), granularity)
    if is_agile_name(activation):
        return Agile(plain_name(activation), granularity=granularity, **agile_kwargs)
    return get_activation(activation)
