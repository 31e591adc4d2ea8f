"""Flax NNX layers: :class:`Agile` (``a * f(x - b)``) and :class:`CombinedAgile`.

NNX modules are built eagerly, so the shape of ``a`` and ``b`` is given up front,
and there is no default: the main form is an int ``C``, one pair per channel
(along ``feature_axes``, default ``-1``), the linen layers' default granularity
(``agile.Agile("relu")``); a tuple is one pair per element (aligned with the
input's trailing axes), ``()`` one pair for the layer. :meth:`Agile.for_input`
derives the shape from an input shape and a granularity by the same rule as the
linen layers (:func:`agile.layers.parameter_shape`). (Before 0.3.0 the shape
defaulted to ``()``, one pair, unlike the linen layers.)

``a_metadata`` / ``b_metadata`` (as ``nnx.PReLU``'s ``negative_slope_metadata``)
and initializers wrapped in ``nnx.with_partitioning`` put sharding annotations on
``a`` and ``b``; the agile mark stays beside them.

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
    act = Agile("relu", ())                                   # one a, b for the layer
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypedDict

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from agile.activations import A_INIT, B_INIT, agile, as_plain_activation, combined, combined_a_init
from agile.labels import AGILE_METADATA, is_agile_param
from agile.layers import FeatureAxes, broadcast_shape, check_activations, parameter_shape

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Agile", "CombinedAgile", "is_agile_param"]

Initializer = Callable[..., jax.Array]
FLAX_FLOOR = (0, 11, 0)  # pyproject.toml's flax floor; tools/test_floors.sh tests it


def _check_flax_version(version: str) -> None:
    """ImportError for a flax older than :data:`FLAX_FLOOR`.

    flax 0.10 hands NNX filters ``VariableState`` objects instead of the variables, so
    ``nnx.state(model, is_agile_param)`` would silently select nothing and
    :func:`agile.param_labels` would mislabel every parameter.
    """
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    if match and tuple(map(int, match.groups())) < FLAX_FLOOR:
        floor = ".".join(map(str, FLAX_FLOOR))
        raise ImportError(
            f"agile.nnx needs flax >= {floor} (found {version}): with older flax NNX filters "
            f"do not see the variables' metadata, so agile.param_labels cannot find a and b. "
            f"pip install 'flax>={floor}'."
        )


_check_flax_version(flax.__version__)


class _Required:
    """The default of ``shape``: there is none; the error says what to pass."""

    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()  # at run time only: type checkers see shape as required


class LayerOptions(TypedDict, total=False):
    """The keyword arguments of :class:`Agile` and :class:`CombinedAgile` after ``shape``."""

    feature_axes: FeatureAxes | None
    a_init: float | Initializer
    b_init: float | Initializer
    dtype: Any
    param_dtype: Any
    rngs: nnx.Rngs | None
    a_metadata: Mapping[str, Any]
    b_metadata: Mapping[str, Any]
_NO_METADATA: Mapping[str, Any] = MappingProxyType({})


def _layout(
    shape: int | Sequence[int], feature_axes: FeatureAxes | None, layer: str = "Agile"
) -> tuple[tuple[int, ...], FeatureAxes | None]:
    """``(parameter shape, feature axes or None for trailing alignment)`` from the arguments."""
    if shape is REQUIRED:
        fn = "fns" if layer == "CombinedAgile" else "fn"
        raise ValueError(
            f"agile.nnx.{layer} needs the shape of a and b (NNX builds them before it sees an "
            f"input): {layer}({fn}, C) for one pair per channel, the linen layers' default (C = "
            f"the input's channel count, e.g. the previous layer's out_features); a tuple for "
            f"one pair per element; () for one pair; or {layer}.for_input({fn}, x_shape, "
            "granularity)."
        )
    if isinstance(shape, bool) or not isinstance(shape, (int, Sequence, np.integer)):
        raise ValueError(
            f"shape must be an int (channels) or a tuple of ints >= 1, got {shape!r:.60} "
            f"({type(shape).__name__})."
        )
    if isinstance(shape, np.integer):
        shape = int(shape)
    if isinstance(shape, int):
        if shape < 1:
            raise ValueError(f"An int shape is a channel count >= 1, got {shape}.")
        axes = -1 if feature_axes is None else feature_axes
        if not isinstance(axes, int) and len(tuple(axes)) != 1:
            raise ValueError(f"An int shape ({shape}) needs one feature axis, got {axes!r}.")
        return (shape,), axes
    shape = tuple(int(size) if isinstance(size, np.integer) else size for size in shape)
    if not all(isinstance(size, int) and not isinstance(size, bool) and size >= 1
               for size in shape):
        raise ValueError(f"shape must be an int or a tuple of ints >= 1, got {shape!r}.")
    if feature_axes is not None:
        count = 1 if isinstance(feature_axes, int) else len(tuple(feature_axes))
        if count != len(shape):
            raise ValueError(
                f"shape {shape} needs {len(shape)} feature axes, got feature_axes={feature_axes!r}."
            )
    return shape, feature_axes


def _variable_metadata_type() -> type | None:
    return getattr(nnx, "VariableMetadata", None)


def _initial_value(
    init: float | Initializer,
    name: str,
    shape: tuple[int, ...],
    dtype: Any,
    rngs,
    metadata: Mapping[str, Any],
) -> nnx.Param:
    """``nnx.Param`` of ``init``'s value with ``metadata`` and the agile mark.

    ``init`` may be wrapped in ``nnx.with_partitioning`` / ``nnx.with_metadata``: its
    ``VariableMetadata`` result is passed to ``nnx.Param`` (which reads its annotations)
    with its value cast to ``dtype``.
    """
    if not isinstance(metadata, Mapping):
        raise ValueError(f"{name[0]}_metadata must be a mapping, got {metadata!r}.")
    if AGILE_METADATA in metadata:
        raise ValueError(
            f"{name[0]}_metadata sets {AGILE_METADATA!r}, the mark agile.param_labels reads; "
            "the layer sets it."
        )
    marked = {**metadata, AGILE_METADATA: True}
    if not callable(init):
        return nnx.Param(jnp.full(shape, init, dtype), **marked)
    key = rngs.params() if rngs is not None else None
    try:
        value = init(key, shape, dtype)
    except Exception as error:
        if key is None:
            raise ValueError(
                f"{name} draws random numbers: pass rngs=nnx.Rngs(...) to the layer."
            ) from error
        raise
    boxed = _variable_metadata_type()
    if boxed is not None and isinstance(value, boxed):
        value = dataclasses.replace(value, raw_value=jnp.asarray(value.raw_value, dtype))
        return nnx.Param(value, **marked)
    return nnx.Param(jnp.asarray(value, dtype), **marked)


class _LearnedActivation(nnx.Module):
    """Shared parameter layout of :class:`Agile` and :class:`CombinedAgile`."""

    def _init_parameters(
        self,
        shape,
        feature_axes,
        num_terms,
        a_init,
        b_init,
        dtype,
        param_dtype,
        rngs,
        a_metadata=_NO_METADATA,
        b_metadata=_NO_METADATA,
    ) -> None:
        self.shape, self.feature_axes = _layout(shape, feature_axes, type(self).__name__)
        self.dtype = dtype
        self.param_dtype = param_dtype
        lead = () if num_terms is None else (num_terms,)
        full = lead + self.shape
        self.a = _initial_value(a_init, "a_init", full, param_dtype, rngs, a_metadata)
        self.b = _initial_value(b_init, "b_init", full, param_dtype, rngs, b_metadata)

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
      shape: the shape of ``a`` and ``b``, required: an int ``C`` for one pair per
        channel (the main form, and the linen layers' default granularity; the
        input's ``feature_axes`` axis, default the last, must have size ``C``); a
        tuple for one pair per element (the input's trailing axes must equal it);
        ``()`` for one pair. Leaving it out raises a ValueError saying this.
      feature_axes: the channel axis (or, with a tuple ``shape``, axes) the
        parameters run along, e.g. ``1`` or ``-3`` for NCHW; ``None``: last axis for
        an int shape, trailing axes for a tuple.
      a_init, b_init: constants or initializers ``(key, shape, dtype)``, also
        wrapped ones (``nnx.with_partitioning(init, ("model",))``); the defaults 1
        and 0 make the untrained layer the plain ``fn``.
      dtype: computation dtype (e.g. ``jnp.bfloat16`` with float32 parameters, whose
        gradients stay float32); ``None`` computes in the input's dtype.
      param_dtype: dtype of ``a`` and ``b`` (default float32).
      rngs: ``nnx.Rngs``, needed only by random initializers.
      a_metadata, b_metadata: metadata for the ``nnx.Param`` of ``a`` / ``b``, e.g.
        a sharding annotation, as ``nnx.PReLU``'s ``negative_slope_metadata``; the
        layer adds its mark ``agile=True`` (what :func:`agile.param_labels` reads).
    """

    if TYPE_CHECKING:  # the signature type checkers see: shape is required

        def __init__(
            self, fn: str | Callable[[jax.Array], jax.Array], shape: int | Sequence[int],
            **options: Unpack[LayerOptions],
        ) -> None: ...

    else:

        def __init__(
            self,
            fn: str | Callable[[jax.Array], jax.Array],
            shape: int | Sequence[int] = REQUIRED,
            *,
            feature_axes: FeatureAxes | None = None,
            a_init: float | Initializer = A_INIT,
            b_init: float | Initializer = B_INIT,
            dtype: Any = None,
            param_dtype: Any = jnp.float32,
            rngs: nnx.Rngs | None = None,
            a_metadata: Mapping[str, Any] = _NO_METADATA,
            b_metadata: Mapping[str, Any] = _NO_METADATA,
        ):
            self.fn = fn
            self.activation = agile(as_plain_activation(fn, "Agile"))
            self._init_parameters(
                shape, feature_axes, None, a_init, b_init, dtype, param_dtype, rngs,
                a_metadata, b_metadata,
            )

    def __call__(self, x: jax.Array) -> jax.Array:
        """``a * fn(x - b)``, ``a`` and ``b`` broadcast along ``feature_axes`` (per channel)
        or the trailing axes (per element); the output has ``x``'s shape. An input they do
        not fit raises a ValueError that says which shape fits."""
        return self.activation(*self._inputs(x))


class CombinedAgile(_LearnedActivation):
    """Learned ``sum_k a[k] * fns[k](x - b[k])`` with ``nnx.Param`` variables ``a`` and ``b``.

    ``a`` and ``b`` have shape ``(K, *shape)``, ``K = len(fns)``; ``shape`` (required)
    and the other arguments mean what they mean for :class:`Agile`. By default the
    untrained unit is ``fns[0]`` (``a = (1, 0, ..., 0)``, ``b = 0``; see
    :func:`agile.activations.combined_a_init` for why).
    """

    if TYPE_CHECKING:  # the signature type checkers see: shape is required

        def __init__(
            self, fns: Sequence[str | Callable[[jax.Array], jax.Array]], shape: int | Sequence[int],
            **options: Unpack[LayerOptions],
        ) -> None: ...

    else:

        def __init__(
            self,
            fns: Sequence[str | Callable[[jax.Array], jax.Array]],
            shape: int | Sequence[int] = REQUIRED,
            *,
            feature_axes: FeatureAxes | None = None,
            a_init: float | Initializer = combined_a_init,
            b_init: float | Initializer = B_INIT,
            dtype: Any = None,
            param_dtype: Any = jnp.float32,
            rngs: nnx.Rngs | None = None,
            a_metadata: Mapping[str, Any] = _NO_METADATA,
            b_metadata: Mapping[str, Any] = _NO_METADATA,
        ):
            self.fns = check_activations(fns, "CombinedAgile")
            self.activation = combined(*self.fns)
            self._init_parameters(
                shape, feature_axes, len(self.fns), a_init, b_init, dtype, param_dtype, rngs,
                a_metadata, b_metadata,
            )

    def __call__(self, x: jax.Array) -> jax.Array:
        """``sum_k a[k] * fns[k](x - b[k])``, each term's ``a`` and ``b`` laid out as in
        :meth:`Agile.__call__`; the output has ``x``'s shape."""
        return self.activation(*self._inputs(x))
