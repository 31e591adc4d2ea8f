"""Flax NNX layers: :class:`Agile` (``a * f(x - b)``) and :class:`CombinedAgile`.

NNX modules are built eagerly, so the shape of ``a`` and ``b`` is given up front:
an int ``C`` is one pair per channel (along ``feature_axes``, default ``-1``), a
tuple is one pair per element (aligned with the input's trailing axes), ``()``
is one pair for the layer. :meth:`Agile.for_input` derives the shape from an
input shape and a granularity by the same rule as the linen layers
(:func:`agile.layers.parameter_shape`).

``a`` and ``b`` are ``nnx.Param`` variables carrying the metadata ``agile=True``:
``nnx.Optimizer(..., wrt=nnx.Param)`` trains them like any weight, and
:func:`agile.param_labels` (or the filter :func:`is_agile_param`) finds exactly
them. The mark is metadata rather than a ``Param`` subclass because
``nnx.bridge.ToLinen`` keeps metadata (a round trip through linen and back
keeps it) but files an unregistered ``Param`` subclass under a new linen
collection named after the class, outside ``"params"``, where linen training
code would silently not train it.

Example::

    from flax import nnx
    from agile.nnx import Agile

    act = Agile("relu", 16)                                   # a, b of shape (16,)
    act = Agile.for_input("relu", (1, 28, 28, 16), "element")  # a, b of shape (28, 28, 16)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from agile.activations import A_INIT, B_INIT, agile, as_plain_activation, combined, combined_a_init
from agile.labels import AGILE_METADATA, is_agile_param
from agile.layers import FeatureAxes, broadcast_shape, check_activations, parameter_shape

__all__ = ["Agile", "CombinedAgile", "is_agile_param"]

Initializer = Callable[..., jax.Array]


def _layout(
    shape: int | Sequence[int], feature_axes: FeatureAxes | None
) -> tuple[tuple[int, ...], FeatureAxes | None]:
    """``(parameter shape, feature axes or None for trailing alignment)`` from the arguments."""
    if isinstance(shape, int):
        if shape < 1:
            raise ValueError(f"An int shape is a channel count >= 1, got {shape}.")
        axes = -1 if feature_axes is None else feature_axes
        if not isinstance(axes, int) and len(tuple(axes)) != 1:
            raise ValueError(f"An int shape ({shape}) needs one feature axis, got {axes!r}.")
        return (shape,), axes
    shape = tuple(shape)
    if not all(isinstance(size, int) and size >= 1 for size in shape):
        raise ValueError(f"shape must be an int or a tuple of ints >= 1, got {shape!r}.")
    if feature_axes is not None:
        count = 1 if isinstance(feature_axes, int) else len(tuple(feature_axes))
        if count != len(shape):
            raise ValueError(
                f"shape {shape} needs {len(shape)} feature axes, got feature_axes={feature_axes!r}."
            )
    return shape, feature_axes


def _initial_value(
    init: float | Initializer, name: str, shape: tuple[int, ...], dtype: Any, rngs
) -> nnx.Param:
    if not callable(init):
        return nnx.Param(jnp.full(shape, init, dtype), **{AGILE_METADATA: True})
    key = rngs.params() if rngs is not None else None
    try:
        value = init(key, shape, dtype)
    except Exception as error:
        if key is None:
            raise ValueError(
                f"{name} draws random numbers: pass rngs=nnx.Rngs(...) to the layer."
            ) from error
        raise
    return nnx.Param(jnp.asarray(value, dtype), **{AGILE_METADATA: True})


class _LearnedActivation(nnx.Module):
    """Shared parameter layout of :class:`Agile` and :class:`CombinedAgile`."""

    def _init_parameters(
        self, shape, feature_axes, num_terms, a_init, b_init, dtype, param_dtype, rngs
    ) -> None:
        self.shape, self.feature_axes = _layout(shape, feature_axes)
        self.dtype = dtype
        lead = () if num_terms is None else (num_terms,)
        self.a = _initial_value(a_init, "a_init", lead + self.shape, param_dtype, rngs)
        self.b = _initial_value(b_init, "b_init", lead + self.shape, param_dtype, rngs)

    def _inputs(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``x`` in the computation dtype, and ``a``, ``b`` shaped to broadcast against it."""
        x = jnp.asarray(x)
        if self.dtype is not None:
            x = x.astype(self.dtype)
        a, b = self.a[...], self.b[...]
        lead = a.shape[: a.ndim - len(self.shape)]
        target = lead + broadcast_shape(
            self.shape, x.shape, self.feature_axes, f"agile.nnx.{type(self).__name__}"
        )
        return x, a.reshape(target), b.reshape(target)

    @classmethod
    def for_input(
        cls,
        fn: Any,
        x_shape: Sequence[int],
        granularity: str = "channel",
        *,
        feature_axes: FeatureAxes = -1,
        **kwargs: Any,
    ):
        """The layer whose ``a`` and ``b`` the linen layer would create for ``x_shape``.

        ``granularity`` is ``"channel"`` (per feature along ``feature_axes``),
        ``"element"`` (per element of one example, ``x_shape[1:]``) or
        ``"scalar"``, as in :func:`agile.layers.parameter_shape`; ``fn`` and
        ``kwargs`` (``a_init``, ``rngs``, ...) go to the constructor.
        """
        shape = parameter_shape(tuple(x_shape), granularity, feature_axes)
        if granularity != "channel":
            return cls(fn, shape, **kwargs)
        if isinstance(feature_axes, int) or len(tuple(feature_axes)) == 1:
            axis = feature_axes if isinstance(feature_axes, int) else tuple(feature_axes)[0]
            return cls(fn, shape[0], feature_axes=axis, **kwargs)
        return cls(fn, shape, feature_axes=tuple(feature_axes), **kwargs)


class Agile(_LearnedActivation):
    """Learned ``a * fn(x - b)`` with ``nnx.Param`` variables ``a`` and ``b``.

    Args:
      fn: a plain activation name (``"relu"``, ``"tanh"``, ...) or a callable
        ``x -> f(x)``.
      shape: the shape of ``a`` and ``b``: an int ``C`` for one pair per channel
        (the input's ``feature_axes`` axis, default the last, must have size
        ``C``); a tuple for one pair per element (the input's trailing axes must
        equal it); ``()`` (default) for one pair.
      feature_axes: the channel axis (or, with a tuple ``shape``, axes) the
        parameters run along, e.g. ``-3`` for NCHW; ``None``: last axis for an
        int shape, trailing axes for a tuple.
      a_init, b_init: constants or initializers ``(key, shape, dtype)``; the
        defaults 1 and 0 make the untrained layer the plain ``fn``.
      dtype: computation dtype; ``None`` computes in the input's dtype.
      param_dtype: dtype of ``a`` and ``b``.
      rngs: ``nnx.Rngs``, needed only by random initializers.
    """

    def __init__(
        self,
        fn: str | Callable[[jax.Array], jax.Array],
        shape: int | Sequence[int] = (),
        *,
        feature_axes: FeatureAxes | None = None,
        a_init: float | Initializer = A_INIT,
        b_init: float | Initializer = B_INIT,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        self.fn = fn
        self.activation = agile(as_plain_activation(fn, "Agile"))
        self._init_parameters(shape, feature_axes, None, a_init, b_init, dtype, param_dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.activation(*self._inputs(x))


class CombinedAgile(_LearnedActivation):
    """Learned ``sum_k a[k] * fns[k](x - b[k])`` with ``nnx.Param`` variables ``a`` and ``b``.

    ``a`` and ``b`` have shape ``(K, *shape)``, ``K = len(fns)``; ``shape`` and
    the other arguments mean what they mean for :class:`Agile`. By default the
    untrained unit is ``fns[0]`` (``a = (1, 0, ..., 0)``, ``b = 0``; see
    :func:`agile.activations.combined_a_init` for why).
    """

    def __init__(
        self,
        fns: Sequence[str | Callable[[jax.Array], jax.Array]],
        shape: int | Sequence[int] = (),
        *,
        feature_axes: FeatureAxes | None = None,
        a_init: float | Initializer = combined_a_init,
        b_init: float | Initializer = B_INIT,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        self.fns = check_activations(fns, "CombinedAgile")
        self.activation = combined(*self.fns)
        self._init_parameters(
            shape, feature_axes, len(self.fns), a_init, b_init, dtype, param_dtype, rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.activation(*self._inputs(x))
