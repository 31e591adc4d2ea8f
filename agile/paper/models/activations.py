"""Activation layers by name for every model of the experiments: one resolver, one check.

A name is a plain activation (``relu``, ``gelu``, ...), ``agile_<plain>``,
``combined:<plain>,<plain>,...`` (all of :mod:`agile.activations`) or a baseline of
:mod:`agile.paper.baselines` (``prelu``, ``swish_beta``, ``apl:<S>``, ``xielu``). The paper's
CNN, the ResNet and the transformer build their activation layers here, so a name means the
same thing, and is refused with the same one-line error, in each of them.

:func:`activate` applies a named layer; a per-channel agile one through
:func:`channel_agile` by default, the same function with the gradients of ``a`` and ``b``
computed as matrix-vector products (XLA:CPU's reductions over all leading axes were what
made an agile ResNet step slower than its plain twin).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp

from agile.activations import get_activation, is_learnable_name, validate_activation_name
from agile.errors import ArgumentError, ConfigError
from agile.layers import Agile, activation_layer
from agile.paper.baselines import (
    BASELINE_FORMS,
    baseline_layer,
    is_baseline_name,
    validate_baseline_name,
)

IMPLEMENTATIONS = ("fast", "reference")


def validate_activation(activation: str, model: str) -> str:
    """``activation`` if it names an activation or a baseline, else a one-line ConfigError.

    ``model`` names the model in the message (``"The paper's CNN"``), which lists the
    baselines after the library's names.
    """
    if is_baseline_name(activation):
        return validate_baseline_name(activation)
    try:
        return validate_activation_name(activation)
    except ArgumentError as err:
        raise ConfigError(f"{err} {model} also takes the baselines "
                          f"{', '.join(BASELINE_FORMS)}.") from None


def named_activation(activation: str, granularity: str, name: str) -> Callable[[jax.Array],
                                                                                jax.Array]:
    """A layer named ``name`` for agile, combined or baseline names, else the plain function.

    Agile and combined names give ``Agile``/``CombinedAgile`` (:func:`agile.activation_layer`);
    baselines their layer of :mod:`agile.paper.baselines`; both place their parameters by
    ``granularity``. A plain name gives the parameter-free function (no submodule).
    """
    if is_baseline_name(activation):
        return baseline_layer(activation, granularity, name)
    if is_learnable_name(activation):
        return activation_layer(activation, granularity, name=name)
    return activation_layer(activation, granularity)


def fusable_activation(layer) -> bool:
    """Whether :func:`agile.paper.models.ops.act_max_pool` can compute ``layer``: a plain
    function or an ``Agile`` layer of a named activation with its parameters aligned to an NHWC
    map."""
    if isinstance(layer, Agile):
        return (isinstance(layer.fn, str) and layer.feature_axes in (-1, (-1,))
                and layer.dtype is None and layer.param_dtype == jnp.float32)
    return not isinstance(layer, nn.Module) and callable(layer)


def activation_parts(layer, map_shape: tuple[int, ...]) -> tuple[Callable, jax.Array | None,
                                                                   jax.Array | None]:
    """``(f, a, b)`` of an activation layer; ``a = b = None`` for a plain function.

    An ``Agile`` layer declares its parameters by being called, here on an empty
    batch of the map's shape, so they keep the layer's names, shapes and initializers.
    """
    if not isinstance(layer, Agile):
        return layer, None, None
    layer(jnp.zeros((0, *map_shape[1:]), jnp.float32))
    params = layer.variables["params"]
    return get_activation(layer.fn), params["a"], params["b"]


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def channel_agile(fn, x: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """``a * fn(x - b)`` with ``a``, ``b`` of shape ``(C,)`` along ``x``'s last axis.

    The same function and gradients as :class:`agile.Agile` per channel; the gradients of
    ``a`` and ``b`` are sums over every axis but the last, which XLA:CPU runs several times
    slower as reductions than as a matrix-vector product ``ones @ t.reshape(-1, C)``.
    """
    return a * fn(x - b)


def _channel_agile_forward(fn, x, a, b):
    return channel_agile(fn, x, a, b), (x, a, b)


def _channel_agile_backward(fn, residuals, grad):
    x, a, b = residuals
    y, fn_vjp = jax.vjp(fn, x - b)
    (grad_z,) = fn_vjp(grad * a)
    ones = jnp.ones((x.size // x.shape[-1],), x.dtype)
    channel_sum = lambda t: ones @ t.reshape(-1, t.shape[-1])  # noqa: E731
    return grad_z, channel_sum(grad * y), -channel_sum(grad_z)


channel_agile.defvjp(_channel_agile_forward, _channel_agile_backward)


def activate(x: jax.Array, activation: str, granularity: str, name: str,
             implementation: str) -> jax.Array:
    """The activation layer ``name`` applied to ``x``; a per-channel ``Agile`` layer through
    :func:`channel_agile` when ``implementation="fast"`` (same parameters, same values).

    ``implementation="reference"`` always calls the layer (the autodiff of ``agile.Agile``).
    """
    layer = named_activation(activation, granularity, name)
    if implementation == "fast" and granularity == "channel" and fusable_activation(layer):
        fn, a, b = activation_parts(layer, x.shape)
        if a is not None:
            return channel_agile(fn, x, a, b)
    return layer(x)
