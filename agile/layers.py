"""Flax linen layers over the pure functions in :mod:`agile.activations`.

:class:`Agile` learns ``a * f(x - b)``; :class:`CombinedAgile` learns
``sum_k a[k] * f_k(x - b[k])``. Both get their parameters' shape from the input
by a *granularity*, and the shape rules here are shared with :mod:`agile.nnx`:

- ``"channel"`` (default, the PReLU convention of Keras and PyTorch): one pair
  per feature along ``feature_axes`` (default ``-1``, channels last; ``-3`` for
  NCHW). Needs no batch axis and accepts any spatial or sequence size.
- ``"element"`` (the paper's choice): one pair per element of one example,
  ``x.shape[1:]``; the leading axis is the batch, and the example shape is fixed
  at init.
- ``"scalar"``: one pair for the whole layer; any input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from agile.activations import (
    A_INIT,
    B_INIT,
    agile,
    as_plain_activation,
    combined,
    combined_a_init,
    combined_names,
    is_agile_name,
    is_combined_name,
    plain_name,
)
from agile.errors import unknown_value_error

Initializer = Callable[..., jax.Array]
FeatureAxes = int | Sequence[int]
GRANULARITIES = ("element", "channel", "scalar")


def validate_granularity(granularity: str) -> str:
    """Returns ``granularity`` if it is one of :data:`GRANULARITIES`, else raises ValueError."""
    if granularity not in GRANULARITIES:
        raise unknown_value_error("granularity", granularity, GRANULARITIES)
    return granularity


def normalize_axes(feature_axes: FeatureAxes, ndim: int) -> tuple[int, ...]:
    """``feature_axes`` as a tuple of non-negative axes of an ``ndim``-d input.

    Raises ValueError for an empty, non-integer, out-of-range or repeated axis.
    """
    axes = (feature_axes,) if isinstance(feature_axes, int) else tuple(feature_axes)
    if not axes or not all(isinstance(ax, int) and -ndim <= ax < ndim for ax in axes):
        raise ValueError(
            f"feature_axes must be one or more axes of the {ndim}-d input, got {feature_axes!r}."
        )
    normalized = tuple(ax % ndim for ax in axes)
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"feature_axes names an axis twice: {feature_axes!r}.")
    return normalized


def parameter_shape(
    x_shape: tuple[int, ...], granularity: str, feature_axes: FeatureAxes = -1
) -> tuple[int, ...]:
    """Shape of ``a`` and ``b`` for an input of ``x_shape``.

    ``"element"``: one pair per element of a single example, ``x_shape[1:]``
    (the paper: per feature-map position and channel, or per dense node; the
    leading axis is the batch); ``"channel"``: one per feature along
    ``feature_axes``, e.g. ``(C,)`` for NHWC with the default ``-1`` or for NCHW
    with ``-3``; ``"scalar"``: one pair, ``()``. ``feature_axes`` applies to
    ``"channel"`` only.
    """
    validate_granularity(granularity)
    x_shape = tuple(x_shape)
    if granularity != "channel" and feature_axes not in (-1, (-1,)):
        raise ValueError(
            f"feature_axes applies to granularity='channel' only; got {feature_axes!r} "
            f"with granularity={granularity!r}."
        )
    if granularity == "element":
        if len(x_shape) < 2:
            raise ValueError(
                "Agile with granularity 'element' needs an input with a batch axis and "
                f"at least one feature axis; got shape {x_shape}. Use 'channel' or 'scalar' "
                "for an input without a batch axis."
            )
        return x_shape[1:]
    if granularity == "channel":
        if not x_shape:
            raise ValueError("Agile with granularity 'channel' needs an input with a feature axis.")
        return tuple(x_shape[ax] for ax in normalize_axes(feature_axes, len(x_shape)))
    return ()


def broadcast_shape(
    param_shape: tuple[int, ...],
    x_shape: tuple[int, ...],
    feature_axes: FeatureAxes | None,
    layer: str = "Agile",
) -> tuple[int, ...]:
    """The shape that ``a`` and ``b`` (of ``param_shape``) take to broadcast against ``x``.

    ``feature_axes=None``: the parameters align with ``x``'s trailing axes (one per
    element, or a scalar); otherwise they run along ``feature_axes`` (per channel)
    and get size-1 axes elsewhere. An input they do not fit raises a ValueError
    that says which granularity fits.
    """
    param_shape, x_shape = tuple(param_shape), tuple(x_shape)
    if feature_axes is None:
        n = len(param_shape)
        if len(x_shape) >= n and x_shape[len(x_shape) - n :] == param_shape:
            return param_shape
        raise ValueError(
            f"{layer}: a and b of shape {param_shape}, one per element, do not fit an input of "
            f"shape {x_shape}: its trailing axes must be {param_shape}. Per-element parameters "
            "fix the example's shape (set at init); for inputs whose size varies, or apply "
            "without a batch axis, use granularity='channel' (one pair per channel; an int "
            "shape in agile.nnx) or 'scalar'."
        )
    axes = normalize_axes(feature_axes, len(x_shape)) if x_shape else None
    if axes is None or tuple(x_shape[ax] for ax in axes) != param_shape:
        raise ValueError(
            f"{layer}: a and b of shape {param_shape}, one per channel along axes "
            f"{feature_axes!r}, do not fit an input of shape {x_shape}."
        )
    first = min(axes)
    return tuple(x_shape[ax] if ax in axes else 1 for ax in range(first, len(x_shape)))


def _as_initializer(init: float | Initializer) -> Initializer:
    if callable(init):
        return init
    return nn.initializers.constant(init)


def _placement(granularity: str, feature_axes: FeatureAxes) -> FeatureAxes | None:
    """Where the parameters sit in the input: ``feature_axes`` per channel, else trailing."""
    return feature_axes if granularity == "channel" else None


def _shape_mismatch(
    layer: str, granularity: str, existing: tuple, x_shape: tuple, needed: tuple
) -> ValueError:
    hint = ""
    if granularity == "element":
        hint = (
            " Per-element a and b fix the example shape (the input less its leading batch "
            "axis) at init; for inputs whose size varies, or to apply without a batch axis "
            "(e.g. per example under jax.vmap), use granularity='channel' or 'scalar'."
        )
    return ValueError(
        f"{layer}(granularity={granularity!r}): a and b have shape {existing}, but this input "
        f"of shape {tuple(x_shape)} needs {needed}.{hint}"
    )


def _declare_parameters(
    module: nn.Module, x: jax.Array, num_terms: int | None, a_init, b_init
) -> tuple[jax.Array, jax.Array]:
    """Declares ``a``, ``b`` on ``module`` (leading axis ``num_terms`` unless None), fit to ``x``.

    If they exist already (apply, or a second call) with another shape than this
    input needs, raises an error saying so (and, for ``"element"``, which
    granularity fits) instead of Flax's ``ScopeParamShapeError``.
    """
    lead = () if num_terms is None else (num_terms,)
    placement = _placement(module.granularity, module.feature_axes)
    name = type(module).__name__
    shape = lead + parameter_shape(x.shape, module.granularity, module.feature_axes)
    if module.has_variable("params", "a"):
        existing = tuple(jnp.shape(nn.unbox(module.get_variable("params", "a"))))
        if existing != shape:
            raise _shape_mismatch(name, module.granularity, existing, x.shape, shape)
    a = module.param("a", _as_initializer(a_init), shape, module.param_dtype)
    b = module.param("b", _as_initializer(b_init), shape, module.param_dtype)
    target = lead + broadcast_shape(shape[len(lead) :], x.shape, placement, name)
    return a.reshape(target), b.reshape(target)


def check_activations(fns: Any, layer: str) -> tuple:
    """``fns`` as a tuple, or ValueError if it is not a sequence of activations (e.g. one str)."""
    if isinstance(fns, str) or not isinstance(fns, Sequence) or not fns:
        raise ValueError(
            f"{layer}(fns) takes a non-empty sequence of activations, e.g. ('relu', 'sigmoid'); "
            f"got {fns!r}."
        )
    return tuple(fns)


def _cast_input(x: jax.Array, dtype: Any) -> jax.Array:
    x = jnp.asarray(x)
    return x if dtype is None else x.astype(dtype)


class Agile(nn.Module):
    """Learned ``a * fn(x - b)`` with parameters named ``a`` and ``b``.

    Attributes:
      fn: a plain activation name known to ``get_activation`` (``"relu"``,
        ``"tanh"``, ...) or any callable ``x -> f(x)``.
      granularity: ``"channel"`` (default: one pair per channel, any input size,
        no batch axis needed), ``"element"`` (one pair per element of one
        example, the paper's choice) or ``"scalar"``.
      a_init, b_init: constants or Flax initializers; the defaults 1 and 0 make
        an untrained agile activation equal the plain one.
      param_dtype: dtype of ``a`` and ``b``.
      feature_axes: the channel axis or axes for ``"channel"`` (default ``-1``,
        channels last; ``-3`` or ``1`` for NCHW; negative axes stay right when
        the layer is applied per example under ``jax.vmap``).
      dtype: computation dtype; ``None`` computes in the input's dtype.
    """

    fn: str | Callable[[jax.Array], jax.Array]
    granularity: str = "channel"
    a_init: float | Initializer = A_INIT
    b_init: float | Initializer = B_INIT
    param_dtype: Any = jnp.float32
    feature_axes: FeatureAxes = -1
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fn = as_plain_activation(self.fn, "Agile")
        x = _cast_input(x, self.dtype)
        a, b = _declare_parameters(self, x, None, self.a_init, self.b_init)
        return agile(fn)(x, a, b)


class CombinedAgile(nn.Module):
    """Learned ``sum_k a[k] * fns[k](x - b[k])``, a combined agile activation.

    ``a`` and ``b`` have shape ``(K, *p)`` with ``K = len(fns)`` and ``p`` the
    shape :class:`Agile` gives them at the same granularity. By default the
    unit starts as ``fns[0]`` (``a = (1, 0, ..., 0)``, ``b = 0``; see
    :func:`agile.activations.combined_a_init` for why).

    Attributes:
      fns: plain activation names or callables, at least one.
      granularity, param_dtype, feature_axes, dtype: as in :class:`Agile`.
      a_init, b_init: constants or Flax initializers for the ``(K, *p)`` arrays.
    """

    fns: Sequence[str | Callable[[jax.Array], jax.Array]]
    granularity: str = "channel"
    a_init: float | Initializer = combined_a_init
    b_init: float | Initializer = B_INIT
    param_dtype: Any = jnp.float32
    feature_axes: FeatureAxes = -1
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fn = combined(*check_activations(self.fns, "CombinedAgile"))
        x = _cast_input(x, self.dtype)
        a, b = _declare_parameters(self, x, len(self.fns), self.a_init, self.b_init)
        return fn(x, a, b)


def activation_layer(
    activation: str, granularity: str = "channel", **layer_kwargs: Any
) -> Callable[[jax.Array], jax.Array]:
    """Turns an activation name into something a model can call.

    ``agile_<f>`` gives an ``Agile("<f>")`` layer with learned ``a`` and ``b``;
    ``combined:<f>,<g>,...`` a ``CombinedAgile(("<f>", "<g>", ...))`` layer
    (``layer_kwargs``, e.g. ``name`` or ``a_init``, go to the layer); a plain
    name gives the parameter-free function. Unknown names or granularities
    raise ValueError.
    """
    validate_granularity(granularity)
    if is_combined_name(activation):
        return CombinedAgile(combined_names(activation), granularity=granularity, **layer_kwargs)
    if is_agile_name(activation):
        return Agile(plain_name(activation), granularity=granularity, **layer_kwargs)
    return as_plain_activation(activation)
