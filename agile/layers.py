"""Flax linen layers over the pure functions in :mod:`agile.activations`.

:class:`Agile` learns ``a * f(x - b)``; :class:`CombinedAgile` learns
``sum_k a[k] * f_k(x - b[k])``. Both get their parameters' shape from the input
by a *granularity*, and the shape rules here are shared with :mod:`agile.nnx`:

- ``"channel"`` (default, here and in :mod:`agile.nnx`): one pair per feature
  along ``feature_axes`` (default ``-1``, channels last; ``1`` or ``-3`` for NCHW).
  Needs no batch axis and accepts any spatial or sequence size. This is PyTorch's
  ``nn.PReLU(num_parameters=C)`` and Keras' ``PReLU(shared_axes=[1, 2])`` on NHWC
  images; neither is their default (PyTorch's ``nn.PReLU()`` has one parameter for
  everything, like ``"scalar"``; Keras' ``PReLU()`` one per element, like
  ``"element"``).
- ``"element"`` (the paper's choice): one pair per element of one example,
  ``x.shape[1:]``; the leading axis is the batch, and the example shape is fixed
  at init.
- ``"scalar"``: one pair for the whole layer; any input.

A linen layer instance holds one ``a`` and ``b``: linen adopts a module instance once,
so passing one ``Agile(...)`` to several places (``act=Agile("relu")`` in every block
of a ResNet) would make them share it; a second call of one instance is an error that
says so, unless the layer is made with ``shared=True`` (tied parameters on purpose).
Give such fields a factory (:func:`agile_factory`, :meth:`Agile.factory`,
:func:`activation_factory`), which makes a fresh layer wherever it is called.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal, overload

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
    is_learnable_name,
    plain_name,
)
from agile.errors import ArgumentError, unknown_value_error

Initializer = Callable[..., jax.Array]
FeatureAxes = int | Sequence[int]
Granularity = Literal["element", "channel", "scalar"]
GRANULARITIES: tuple[Granularity, ...] = ("element", "channel", "scalar")


def validate_granularity(granularity: str) -> str:
    """Returns ``granularity`` if it is one of :data:`GRANULARITIES`, else raises ValueError."""
    if granularity not in GRANULARITIES:
        raise unknown_value_error("granularity", granularity, GRANULARITIES, ArgumentError)
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


def _channels_first_hint(channels: int, x_shape: tuple, feature_axes: FeatureAxes) -> str:
    """A hint for a per-channel layer on channels-first input, if ``x_shape`` looks like it."""
    x_shape = tuple(x_shape)
    if feature_axes not in (-1, (-1,)) or len(x_shape) < 3 or x_shape[-1] == channels:
        return ""
    if x_shape[1] != channels:
        return ""
    return (
        f" The input's axis 1 has size {channels}: for channels-first (NCHW) input pass "
        "feature_axes=1 (or -3); the default feature_axes=-1 takes the last axis as channels."
    )


def _shape_mismatch(
    layer: str,
    granularity: str,
    existing: tuple,
    x_shape: tuple,
    needed: tuple,
    feature_axes: FeatureAxes = -1,
) -> ValueError:
    hint = ""
    if granularity == "element":
        hint = (
            " Per-element a and b fix the example shape (the input less its leading batch "
            "axis) at init; for inputs whose size varies, or to apply without a batch axis "
            "(e.g. per example under jax.vmap), use granularity='channel' or 'scalar'."
        )
    elif granularity == "channel" and len(existing) >= 1:
        hint = _channels_first_hint(existing[-1], x_shape, feature_axes)
    return ValueError(
        f"{layer}(granularity={granularity!r}): a and b have shape {existing}, but this input "
        f"of shape {tuple(x_shape)} needs {needed}.{hint}"
    )


def _shared_instance_error(
    layer: str, first_x: tuple, existing: tuple, x_shape: tuple, needed: tuple, example: str
) -> ValueError:
    return ValueError(
        f"One {layer} layer instance was applied at two places with different shapes: first "
        f"to an input of shape {first_x} (a, b of shape {existing}), then to one of shape "
        f"{tuple(x_shape)}, which needs {needed}. Linen adopts a module instance once, so every "
        f"place that calls the same instance shares its a and b (e.g. act={example} passed to "
        f"every block of a ResNet). Give each place its own layer: pass a factory, "
        f"act={layer}.factory(...) (agile.layers.agile_factory / activation_factory), which "
        "makes a fresh layer wherever it is called."
    )


def _reused_instance_error(layer: str, first_x: tuple, x_shape: tuple, example: str
                           ) -> ValueError:
    return ValueError(
        f"One {layer} layer instance was called at two places (first on an input of shape "
        f"{first_x}, then on one of shape {tuple(x_shape)}), so both would share one a and b "
        f"(e.g. act={example} passed to every block of a ResNet). Give each place its own "
        f"layer with a factory, act={layer}.factory(...) (agile.agile_factory / "
        f"activation_factory), or share it on purpose (tied parameters) with shared=True."
    )


_FIRST_CALL = "_agile_first_call"  # (input shape, a's shape) of a bound layer's first call


def _check_channels(module: nn.Module, x_shape: tuple, layer: str) -> None:
    """Checks ``module.channels`` (if set) against the input's feature axis."""
    channels = module.channels
    if channels is None:
        return
    feature_axes = module.feature_axes
    if module.granularity != "channel" or not (
        isinstance(feature_axes, int) or len(tuple(feature_axes)) == 1
    ):
        raise ValueError(
            f"{layer}: channels={channels} checks the channel count of granularity='channel' "
            f"with one feature axis; got granularity={module.granularity!r}, "
            f"feature_axes={feature_axes!r}."
        )
    if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
        raise ValueError(f"{layer}: channels must be an int >= 1, got {channels!r}.")
    axis = feature_axes if isinstance(feature_axes, int) else tuple(feature_axes)[0]
    (axis,) = normalize_axes(axis, len(x_shape)) if x_shape else (None,)
    if axis is None or x_shape[axis] != channels:
        size = "no axes" if axis is None else f"size {x_shape[axis]} there"
        raise ValueError(
            f"{layer}(channels={channels}): the input of shape {tuple(x_shape)} has {size} "
            f"along feature_axes={feature_axes!r}, not {channels} channels."
            + _channels_first_hint(channels, x_shape, feature_axes)
        )


def _declare_parameters(
    module: nn.Module, x: jax.Array, num_terms: int | None, a_init, b_init
) -> tuple[jax.Array, jax.Array]:
    """Declares ``a``, ``b`` on ``module`` (leading axis ``num_terms`` unless None), fit to ``x``.

    If they exist already (apply, or a second call) with another shape than this
    input needs, raises an error saying so instead of Flax's ``ScopeParamShapeError``:
    that the same instance was applied at two places (if this bound instance was called
    before with an input that fit), else which granularity or feature axis fits.
    """
    lead = () if num_terms is None else (num_terms,)
    placement = _placement(module.granularity, module.feature_axes)
    name = type(module).__name__
    _check_channels(module, tuple(x.shape), name)
    shape = lead + parameter_shape(x.shape, module.granularity, module.feature_axes)
    first_call = module.__dict__.get(_FIRST_CALL)
    if module.has_variable("params", "a"):
        existing = tuple(jnp.shape(nn.unbox(module.get_variable("params", "a"))))
        if existing != shape:
            if first_call is not None and first_call[1] == existing:
                example = f"{name}({_example_args(module)})"
                raise _shared_instance_error(
                    name, first_call[0], existing, x.shape, shape, example
                )
            raise _shape_mismatch(
                name, module.granularity, existing, x.shape, shape, module.feature_axes
            )
    if first_call is not None and not module.shared:
        raise _reused_instance_error(name, first_call[0], x.shape,
                                     f"{name}({_example_args(module)})")
    a = module.param("a", _as_initializer(a_init), shape, module.param_dtype)
    b = module.param("b", _as_initializer(b_init), shape, module.param_dtype)
    if first_call is None:  # not a field: bound copies are made per init/apply, so is this
        object.__setattr__(module, _FIRST_CALL, (tuple(x.shape), shape))
    target = lead + broadcast_shape(shape[len(lead) :], x.shape, placement, name)
    return a.reshape(target), b.reshape(target)


def _example_args(module: nn.Module) -> str:
    if isinstance(module, CombinedAgile):
        fns = tuple(module.fns) if isinstance(module.fns, Sequence) else ()
        return repr(fns) if fns and all(isinstance(fn, str) for fn in fns) else "..."
    return repr(module.fn) if isinstance(module.fn, str) else "..."


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


def _refuse_array(fn: Any, layer: str) -> None:
    """A one-line error for an array given as the activation: the class passed as ``act=``."""
    if hasattr(fn, "shape") and hasattr(fn, "dtype"):
        raise ValueError(
            f"{layer}(fn) got an array of shape {tuple(fn.shape)} as its activation: was the "
            f"class passed as a model's act= (act={layer}), so that the model called it on its "
            f"input? Pass a factory: act={layer}.factory('relu') (or agile.agile_factory)."
        )


class Agile(nn.Module):
    """Learned ``a * fn(x - b)`` with parameters named ``a`` and ``b``.

    One instance is one layer: call it at one place. A model field that is called at
    several places (``act=`` of a ResNet block) takes :meth:`Agile.factory` instead.

    Attributes:
      fn: a plain activation name known to ``get_activation`` (``"relu"``,
        ``"tanh"``, ...) or any callable ``x -> f(x)``.
      granularity: ``"channel"`` (default: one pair per channel, any input size,
        no batch axis needed), ``"element"`` (one pair per element of one
        example, the paper's choice) or ``"scalar"``.
      a_init, b_init: constants or Flax initializers; the defaults 1 and 0 make
        an untrained agile activation equal the plain one.
      param_dtype: dtype of ``a`` and ``b`` (default float32).
      feature_axes: the channel axis or axes for ``"channel"`` (default ``-1``,
        channels last; ``1`` or ``-3`` for NCHW; negative axes stay right when
        the layer is applied per example under ``jax.vmap``). A per-channel layer
        cannot tell NCHW from NHWC input: on NCHW input with the default ``-1`` it
        silently gets one pair per image column. Set ``channels`` to have that checked.
      dtype: computation dtype (e.g. ``jnp.bfloat16`` with float32 ``a``, ``b``: they
        are cast for the computation, their gradients stay float32); ``None``
        computes in the input's dtype.
      channels: optional, for ``"channel"`` with one feature axis: the channel count
        the input's feature axis must have; another size raises a ValueError that
        names the axis (e.g. "axis 1 has size 64: for NCHW input pass feature_axes=1").
      shared: False (default): calling one instance at two places (``act=Agile("relu")``
        given to every block) is a ValueError saying to pass a factory; True: the places
        share one ``a`` and ``b`` on purpose (tied parameters).
    """

    fn: str | Callable[[jax.Array], jax.Array]
    granularity: Granularity = "channel"
    a_init: float | Initializer = A_INIT
    b_init: float | Initializer = B_INIT
    param_dtype: Any = jnp.float32
    feature_axes: FeatureAxes = -1
    dtype: Any = None
    channels: int | None = None
    shared: bool = False

    def __post_init__(self) -> None:
        _refuse_array(self.fn, "Agile")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``a * fn(x - b)``, ``a`` and ``b`` made at the first call with the shape that
        ``granularity`` (and ``feature_axes``) give for ``x``; the output has ``x``'s shape
        and the computation dtype. A second call of the same instance is an error unless
        ``shared=True``."""
        fn = as_plain_activation(self.fn, "Agile")
        x = _cast_input(x, self.dtype)
        a, b = _declare_parameters(self, x, None, self.a_init, self.b_init)
        return agile(fn)(x, a, b)

    @classmethod
    def factory(cls, fn: str | Callable[[jax.Array], jax.Array], **attributes: Any) -> LayerFactory:
        """A :class:`LayerFactory` of ``cls(fn, **attributes)`` layers, one per call.

        For model fields called at several places: ``ResNet18(act=Agile.factory("relu"))``.
        """
        return LayerFactory.of(cls, fn, **attributes)


class CombinedAgile(nn.Module):
    """Learned ``sum_k a[k] * fns[k](x - b[k])``, a combined agile activation.

    ``a`` and ``b`` have shape ``(K, *p)`` with ``K = len(fns)`` and ``p`` the
    shape :class:`Agile` gives them at the same granularity. By default the
    unit starts as ``fns[0]`` (``a = (1, 0, ..., 0)``, ``b = 0``; see
    :func:`agile.activations.combined_a_init` for why).

    Attributes:
      fns: plain activation names or callables, at least one.
      granularity, param_dtype, feature_axes, dtype, channels, shared: as in :class:`Agile`.
      a_init, b_init: constants or Flax initializers for the ``(K, *p)`` arrays.
    """

    fns: Sequence[str | Callable[[jax.Array], jax.Array]]
    granularity: Granularity = "channel"
    a_init: float | Initializer = combined_a_init
    b_init: float | Initializer = B_INIT
    param_dtype: Any = jnp.float32
    feature_axes: FeatureAxes = -1
    dtype: Any = None
    channels: int | None = None
    shared: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """``sum_k a[k] * fns[k](x - b[k])``, ``a`` and ``b`` of shape ``(K, *p)`` made at the
        first call (``p`` as :class:`Agile` gives it for ``x``); the output has ``x``'s shape.
        A second call of the same instance is an error unless ``shared=True``."""
        fn = combined(*check_activations(self.fns, "CombinedAgile"))
        x = _cast_input(x, self.dtype)
        a, b = _declare_parameters(self, x, len(self.fns), self.a_init, self.b_init)
        return fn(x, a, b)

    @classmethod
    def factory(
        cls, fns: Sequence[str | Callable[[jax.Array], jax.Array]], **attributes: Any
    ) -> LayerFactory:
        """A :class:`LayerFactory` of ``cls(fns, **attributes)`` layers, one per call."""
        return LayerFactory.of(cls, check_activations(fns, "CombinedAgile"), **attributes)


def activation_layer(
    activation: str, granularity: Granularity = "channel", **layer_kwargs: Any
) -> Callable[[jax.Array], jax.Array]:
    """Turns an activation name into something a model can call.

    ``agile_<f>`` gives an ``Agile("<f>")`` layer with learned ``a`` and ``b``;
    ``combined:<f>,<g>,...`` a ``CombinedAgile(("<f>", "<g>", ...))`` layer
    (``layer_kwargs``, e.g. ``name`` or ``a_init``, go to the layer); a plain
    name gives the parameter-free function. Unknown names or granularities
    raise ValueError.

    The result is one layer: call it at one place. For a model field called at several
    places (``act=``), use :func:`activation_factory`.
    """
    validate_granularity(granularity)
    if is_combined_name(activation):
        return CombinedAgile(combined_names(activation), granularity=granularity, **layer_kwargs)
    if is_agile_name(activation):
        return Agile(plain_name(activation), granularity=granularity, **layer_kwargs)
    return as_plain_activation(activation)


@dataclasses.dataclass(frozen=True, eq=False)
class LayerFactory:
    """Makes a fresh activation layer each time it is called: the value for ``act=`` fields.

    ``factory()`` returns a new layer (``Agile(...)``); ``factory(x)`` makes a new layer
    and applies it to ``x``. Called inside a linen module's ``setup`` or ``@nn.compact``
    method, the new layer is a submodule of that module with its own ``a`` and ``b``
    (auto-named ``Agile_0``, ``Agile_1``, ...), so a factory passed to every block of a
    ResNet gives every place its own parameters. Both call styles of model code work:

    - ``self.act(y)``, as flax's ResNet blocks call ``act`` (a function such as
      ``nn.relu`` by default): pass ``act=agile_factory("relu")``;
    - ``self.act()(y)``, a module-definition field like ``norm=partial(nn.BatchNorm, ...)``.

    A factory gives no ``name`` (each call would reuse it); built by :func:`agile_factory`,
    :func:`activation_factory`, :meth:`Agile.factory` or :meth:`CombinedAgile.factory`.
    """

    build: Callable[[], Any]
    description: str = "layer"

    @classmethod
    def of(cls, layer: type, *args: Any, **attributes: Any) -> LayerFactory:
        """The factory of ``layer(*args, **attributes)``; refuses ``name``."""
        if "name" in attributes:
            raise ValueError(
                f"{layer.__name__}.factory makes a new layer at every call, so it takes no "
                "name (every layer would get the same one); linen names each one where it is "
                "made (Agile_0, Agile_1, ...)."
            )
        fields = {f.name for f in dataclasses.fields(layer)} - {"parent", "name", "fn", "fns"}
        unknown = sorted(set(attributes) - fields)
        if unknown:
            raise TypeError(
                f"{layer.__name__} has no attribute {', '.join(map(repr, unknown))}; it takes "
                f"{', '.join(sorted(fields))}."
            )
        if "granularity" in attributes:
            validate_granularity(attributes["granularity"])
        arguments = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in attributes.items())])
        return cls(lambda: layer(*args, **attributes), f"{layer.__name__}({arguments})")

    @overload
    def __call__(self) -> Callable[..., Any]: ...

    @overload
    def __call__(self, x: jax.Array, *inputs: Any, **call_kwargs: Any) -> jax.Array: ...

    def __call__(self, *inputs: Any, **call_kwargs: Any) -> Any:
        """A new layer (no arguments), or a new layer applied to the arguments."""
        layer = self.build()
        if not inputs and not call_kwargs:
            return layer
        return layer(*inputs, **call_kwargs)

    def __repr__(self) -> str:
        return f"LayerFactory({self.description})"


def agile_factory(
    fn: str | Callable[[jax.Array], jax.Array],
    granularity: Granularity = "channel",
    **attributes: Any,
) -> LayerFactory:
    """A factory of ``Agile(fn, granularity, **attributes)`` layers: a fresh layer per call.

    ``fn`` is a plain activation (``"relu"``, a callable) or an agile name
    (``"agile_relu"``, read as ``"relu"``). Use it for model fields called at several
    places, where one ``Agile`` instance would be shared (see :class:`LayerFactory`)::

        model = ResNet18(num_classes=10, act=agile_factory("relu"))
    """
    if isinstance(fn, str) and fn.startswith("combined:"):
        raise ValueError(
            f"agile_factory makes Agile layers, one activation each; for {fn!r} use "
            f"activation_factory({fn!r}) or CombinedAgile.factory(...)."
        )
    if isinstance(fn, str) and is_learnable_name(fn):
        fn = plain_name(fn)
    as_plain_activation(fn, "agile_factory")
    return LayerFactory.of(Agile, fn, granularity=granularity, **attributes)


def activation_factory(
    activation: str, granularity: Granularity = "channel", **layer_kwargs: Any
) -> LayerFactory:
    """:func:`activation_layer` as a factory: a fresh layer per call, for ``act=`` fields.

    ``agile_<f>`` and ``combined:<f>,...`` make a new ``Agile`` / ``CombinedAgile`` per
    call; a plain name gives its function every time (no parameters to share).
    """
    validate_granularity(granularity)
    if is_combined_name(activation):
        names = combined_names(activation)
        return LayerFactory.of(CombinedAgile, names, granularity=granularity, **layer_kwargs)
    if is_agile_name(activation):
        return LayerFactory.of(
            Agile, plain_name(activation), granularity=granularity, **layer_kwargs
        )
    plain = as_plain_activation(activation)
    return LayerFactory(lambda: plain, activation)
