"""``param_labels``: which parameters are agile ``a`` and ``b``, for ``optax.multi_transform``.

Give agile parameters their own optimizer (the paper's separate rate rho3)::

    tx = optax.multi_transform(
        {"weights": optax.adam(1e-3), "agile": optax.adam(1e-2)},
        agile.param_labels(params, model, x),        # linen
    )

The rule is exact: only parameters that an agile layer (:class:`agile.Agile`,
:class:`agile.CombinedAgile`, :class:`agile.nnx.Agile`, :class:`agile.nnx.CombinedAgile`)
created are labelled ``"agile"``; a user's own parameter named ``a`` or ``b`` is
``"weights"``.

Weight decay pulls every decayed parameter toward 0, and ``a`` starts at 1 (an untrained
agile layer is the plain activation): :func:`weight_decay_mask` turns the labels into the
mask that decays the weights only::

    tx = optax.adamw(1e-3, weight_decay=1e-4, mask=agile.weight_decay_mask(labels))
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
from flax.core import meta

from agile.layers import Agile, CombinedAgile

AGILE_LABEL, WEIGHTS_LABEL = "agile", "weights"
AGILE_METADATA = "agile"  # The mark agile.nnx puts on its nnx.Param a and b.
AGILE_PARAM_NAMES = ("a", "b")
LINEN_LAYERS = (Agile, CombinedAgile)


def param_labels(params: Any, model: nn.Module | None = None, *args: Any, **kwargs: Any) -> Any:
    """Labels every parameter ``"agile"`` (an agile layer's ``a`` or ``b``) or ``"weights"``.

    Returns a pytree of the same structure as ``params``, for
    ``optax.multi_transform(transforms, labels)``.

    NNX (``params`` an ``nnx.State`` holding variables, e.g.
    ``nnx.state(model, nnx.Param)``, or an ``nnx.Module``, read as that state):
    exact by the mark the NNX layers put on their ``nnx.Param`` (metadata
    ``agile=True``; it survives ``nnx.bridge`` round trips). Pass the labels
    pytree, not this function, to ``multi_transform``: ``nnx.Optimizer`` calls
    the transform with pure arrays, which no longer carry the mark. (A *linen*
    agile layer wrapped by ``nnx.bridge.ToNNX`` has unmarked ``nnx.Param``s; use
    :class:`agile.nnx.Agile` in NNX models.)

    Linen (``params`` the dict ``model.init(rng, *args, **kwargs)["params"]``):
    a param dict is only names and arrays, so the rule is model-aware: ``model``
    is traced once without computing (``model.init`` under ``jax.eval_shape``)
    with the example inputs ``args``/``kwargs``, and the
    ``a`` and ``b`` of every submodule that is an ``Agile`` or ``CombinedAgile``
    (or a subclass) are labelled, wherever it sits and whatever its name. Metadata
    boxes that ``nnx.bridge.ToLinen`` leaves (an NNX agile layer inside a linen
    model) are labelled by their mark. We chose this over a marker parameter or
    boxing every ``a``/``b`` because both would change the parameter tree that
    checkpoints, metrics and user code already read.

    Raises ValueError when the linen model or its inputs are missing, or when a
    found agile layer has no ``a``/``b`` in ``params`` (e.g. the whole variables
    dict was passed instead of its ``"params"``).
    """
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(params, (nnx.Module, nnx.State)):
        if model is not None or args or kwargs:
            raise ValueError("param_labels(nnx state) takes no model or inputs.")
        state = nnx.state(params, nnx.Param) if isinstance(params, nnx.Module) else params
        _refuse_non_params(state, nnx)
        return state_labels(state)
    if not isinstance(model, nn.Module) or not (args or kwargs):
        raise ValueError(
            "param_labels(params) of a linen model needs the model and an example input, "
            "param_labels(params, model, x), to find its agile layers: a linen param dict "
            "carries no layer types."
        )
    return _linen_labels(params, agile_layer_paths(model, *args, **kwargs))


@dataclasses.dataclass(frozen=True)
class AgileLayer:
    """What an agile layer computes and how its ``a`` and ``b`` are laid out.

    ``fns``: its activation (one, an :class:`~agile.Agile`) or activations (K, a
    :class:`~agile.CombinedAgile`), plain names or callables as the layer was given them;
    ``granularity``: ``"element"``, ``"channel"`` or ``"scalar"`` (see
    :mod:`agile.layers`), or None where it is not known.

    Found by :func:`agile_layers` (not compared by ``==``): ``feature_axes``, the input axes
    ``a`` and ``b`` run along for ``"channel"`` (negative where the input's rank is known,
    linen; as the NNX layer was given them otherwise), None for trailing alignment;
    ``shape``, the shape of *one* layer's ``a`` (with the leading K of a combined layer):
    parameters with more leading axes belong to layers stacked by ``nnx.vmap``,
    ``nnx.scan`` or ``linen.scan`` (one per layer along those axes); ``fed_by``, for linen,
    the path of the module with parameters whose output this layer takes (through
    parameter-free modules such as Dropout; None when an op such as a sum computes it):
    :func:`agile.fold` checks links against it;
    ``input_shape``, for linen, the shape of the example input it was called on.
    """

    fns: tuple[str | Callable, ...]
    granularity: str | None = None
    feature_axes: tuple[int, ...] | None = dataclasses.field(default=None, compare=False)
    shape: tuple[int, ...] | None = dataclasses.field(default=None, compare=False)
    fed_by: tuple[str, ...] | None = dataclasses.field(default=None, compare=False)
    input_shape: tuple[int, ...] | None = dataclasses.field(default=None, compare=False)

    def depth(self, a_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The stacking axes of parameters of ``a_shape``: ``()`` for a single layer,
        ``(L,)`` for L layers stacked by ``nnx.vmap`` / ``scan`` (unknown ``shape``: ``()``)."""
        if self.shape is None or len(a_shape) <= len(self.shape):
            return ()
        return tuple(a_shape[: len(a_shape) - len(self.shape)])


def agile_layers(model: Any, *args: Any, **kwargs: Any) -> dict[tuple, AgileLayer]:
    """``{path: AgileLayer}`` of a model's agile layers: the one finder of the library.

    Linen (``agile_layers(model, x, train=False)``): the ``Agile``/``CombinedAgile``
    layers (subclasses included) ``model`` calls on the example inputs, in call order; a
    path is the tuple of submodule names (``("block", "act")``). ``model.init`` runs under
    ``jax.eval_shape`` (no computation, no memory) with ``nn.intercept_methods``; a layer
    called more than once is listed once.

    NNX (``agile_layers(module)``, no inputs): its :class:`agile.nnx.Agile` and
    :class:`agile.nnx.CombinedAgile` layers, paths of attribute names and list indices
    (``("blocks", 0, "act")``). Raises ValueError for anything else.
    """
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(model, nnx.Module):
        if args or kwargs:
            raise ValueError("agile_layers(nnx module) takes no inputs.")
        return _nnx_layers(model, nnx)
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"agile_layers takes a linen model and an example input, agile_layers(model, x), "
            f"or an NNX module; got {type(model).__name__}."
        )
    return _traced_init(model, args, kwargs)[1]


def _nnx_layers(model: Any, nnx: Any) -> dict[tuple, AgileLayer]:
    """The NNX agile layers: the modules whose ``a`` carries the mark of :mod:`agile.nnx`
    (read here, not by class, so this module does not import :mod:`agile.nnx`, which imports
    it)."""
    layers = {}
    for path, node in nnx.iter_graph(model):  # (nnx.iter_modules is flax >= 0.12 only)
        if not isinstance(node, nnx.Module) or not is_agile_param((), getattr(node, "a", None)):
            continue
        if hasattr(node, "fns"):  # agile.nnx.CombinedAgile
            fns, lead = tuple(node.fns), (len(node.fns),)
        else:
            fns, lead = (node.fn,), ()
        axes = node.feature_axes
        if node.feature_axes is not None:
            granularity = "channel"
            axes = (axes,) if isinstance(axes, int) else tuple(axes)
        else:
            granularity = "element" if node.shape else "scalar"
        layers[tuple(path)] = AgileLayer(fns, granularity, axes, lead + tuple(node.shape))
    return layers


def agile_layer_paths(model: nn.Module, *args: Any, **kwargs: Any) -> frozenset[tuple[str, ...]]:
    """Paths (tuples of submodule names) of the linen agile layers ``model`` calls on ``args``.

    The keys of :func:`agile_layers` (which also says each layer's activation).
    """
    return frozenset(agile_layers(model, *args, **kwargs))


def init_labels(model: nn.Module, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """``(params, labels)``: the shapes (``jax.ShapeDtypeStruct``) of
    ``model.init(rng, *args, **kwargs)["params"]`` and their :func:`param_labels`, from one
    abstract trace of the model (``param_labels(params, model, x)`` traces it again)."""
    variables, layers = _traced_init(model, args, kwargs)
    return variables["params"], _linen_labels(variables["params"], frozenset(layers))


def _linen_layer(module: nn.Module, x: Any, fed_by: tuple | None) -> AgileLayer:
    """The :class:`AgileLayer` of a linen agile layer just called on ``x``."""
    fns = tuple(module.fns) if isinstance(module, CombinedAgile) else (module.fn,)
    axes = None
    ndim = len(getattr(x, "shape", ()))
    if module.granularity == "channel" and ndim:
        given = module.feature_axes
        axes = tuple(
            ax % ndim - ndim for ax in ((given,) if isinstance(given, int) else given)
        )
    shape = None
    if module.has_variable("params", "a"):
        shape = tuple(jax.numpy.shape(meta.unbox(module.get_variable("params", "a"))))
    input_shape = tuple(x.shape) if ndim else None
    return AgileLayer(fns, module.granularity, axes, shape, fed_by, input_shape)


def _has_own_params(module: nn.Module) -> bool:
    """Whether ``module`` has parameters of its own (not only in submodules)."""
    params = module.variables.get("params", {}) if module.scope is not None else {}
    return any(not isinstance(value, Mapping) for value in params.values())


def _traced_init(model: nn.Module, args: tuple, kwargs: dict
                 ) -> tuple[Any, dict[tuple[str, ...], AgileLayer]]:
    """``model.init``'s variables as shapes, and the agile layers it called (in call order).

    Also which module computed each agile layer's input (``fed_by``): every module's output
    array is traced to the module with parameters that made it (through parameter-free modules
    such as Dropout, which pass their input's source on); an input that an op (a sum, a
    reshape) computed has none.
    """
    layers: dict[tuple[str, ...], AgileLayer] = {}
    sources: dict[int, tuple] = {}  # id(output array) -> path of the module that made it
    alive: list[Any] = []  # the traced outputs, kept so that their ids stay theirs

    def record(call, call_args, call_kwargs, context):
        module = context.module
        if context.method_name != "__call__":
            return call(*call_args, **call_kwargs)
        x = call_args[0] if call_args else None
        out = call(*call_args, **call_kwargs)
        path = tuple(module.scope.path)
        if isinstance(module, LINEN_LAYERS):
            layers.setdefault(path, _linen_layer(module, x, sources.get(id(x))))
        if hasattr(out, "shape") and id(out) not in sources:  # a submodule's output stays its
            source = path if _has_own_params(module) else sources.get(id(x))
            if source is not None:
                sources[id(out)] = source
                alive.append(out)
        return out

    def init():
        with nn.intercept_methods(record):
            return model.init(
                {"params": jax.random.key(0), "dropout": jax.random.key(0)}, *args, **kwargs
            )

    variables = jax.eval_shape(init)
    return variables, layers


def _key_name(entry: Any) -> Any:
    for attribute in ("key", "name", "idx"):
        if hasattr(entry, attribute):
            return getattr(entry, attribute)
    return entry


def _linen_labels(params: Any, layer_paths: frozenset[tuple[str, ...]]) -> Any:
    found = set()

    def label(key_path, leaf) -> str:
        path = tuple(_key_name(entry) for entry in key_path)
        if path[:-1] in layer_paths and path[-1] in AGILE_PARAM_NAMES:
            found.add(path[:-1])
            return AGILE_LABEL
        metadata = getattr(leaf, "metadata", None)
        if isinstance(leaf, meta.AxisMetadata) and isinstance(metadata, dict):
            return AGILE_LABEL if metadata.get(AGILE_METADATA) else WEIGHTS_LABEL
        return WEIGHTS_LABEL

    labels = jax.tree_util.tree_map_with_path(
        label, params, is_leaf=lambda leaf: isinstance(leaf, meta.AxisMetadata)
    )
    missing = sorted("/".join(path) for path in layer_paths - found)
    if missing:
        raise ValueError(
            f"params has no a, b for the model's agile layers {', '.join(missing)}: pass "
            "model.init(...)['params'] of this model."
        )
    return labels


# NNX: the layers of agile.nnx mark their a and b (metadata agile=True); these read the mark.


def is_agile_param(path: tuple, variable: Any) -> bool:
    """An NNX filter: whether ``variable`` is an agile layer's ``a`` or ``b``.

    Use it wherever NNX takes a filter, e.g. ``nnx.state(model, is_agile_param)``.
    """
    del path
    from flax import nnx

    return isinstance(variable, nnx.Variable) and bool(
        variable.get_metadata().get(AGILE_METADATA, False)
    )


def state_labels(state: Any) -> Any:
    """``state`` with each variable replaced by ``"agile"`` (an agile a or b) or ``"weights"``.

    ``state`` must hold ``nnx.Variable`` objects, as ``nnx.state(model, nnx.Param)``
    does; pure arrays (``nnx.as_pure``, ``to_pure_dict``) no longer say which
    variable is which, and raise ValueError.
    """
    from flax import nnx

    def label(leaf: Any) -> str:
        if not isinstance(leaf, nnx.Variable):
            raise ValueError(
                "param_labels needs the state with its nnx.Variable objects, e.g. "
                "nnx.state(model, nnx.Param); pure arrays (nnx.as_pure, to_pure_dict) no "
                f"longer say which are agile a and b. Got a leaf of type {type(leaf).__name__}."
            )
        return AGILE_LABEL if is_agile_param((), leaf) else WEIGHTS_LABEL

    return jax.tree.map(label, state, is_leaf=lambda leaf: isinstance(leaf, nnx.Variable))


def _refuse_non_params(state: Any, nnx: Any) -> None:
    """ValueError for a state holding variables other than ``nnx.Param`` (BatchNorm statistics,
    RNG state): labels of it do not match what ``nnx.Optimizer(wrt=nnx.Param)`` updates, and
    optax would fail with a bare tree-structure error."""
    others = [
        f"{'/'.join(map(str, path))} ({type(leaf).__name__})"
        for path, leaf in nnx.to_flat_state(state)
        if isinstance(leaf, nnx.Variable) and not isinstance(leaf, nnx.Param)
    ]
    if others:
        raise ValueError(
            f"param_labels got a state with variables that are not nnx.Param: "
            f"{', '.join(others[:4])}{' ...' if len(others) > 4 else ''}. nnx.Optimizer(..., "
            "wrt=nnx.Param) updates nnx.state(model, nnx.Param) only, so these labels would "
            "not match its structure: pass nnx.state(model, nnx.Param) or the model itself."
        )


def weight_decay_mask(labels: Any) -> Any:
    """``labels`` (from :func:`param_labels`) as booleans: True for weights, False for a, b.

    For the ``mask`` of ``optax.adamw``, ``optax.add_decayed_weights`` or any optax
    weight decay, which would otherwise pull each agile ``a`` toward 0 instead of its
    initial 1 (and ``b`` toward 0, away from where it learned to sit)::

        labels = agile.param_labels(params, model, x)        # or param_labels(nnx_state)
        tx = optax.adamw(1e-3, weight_decay=1e-4, mask=agile.weight_decay_mask(labels))

    The result has the structure of ``labels`` (a dict, FrozenDict or ``nnx.State``), so
    it matches the parameters the labels were made for. A leaf that is neither
    ``"agile"`` nor ``"weights"`` (e.g. the parameters themselves were passed) raises
    ValueError.
    """

    def decay(leaf: Any) -> bool:
        if isinstance(leaf, str) and leaf in (AGILE_LABEL, WEIGHTS_LABEL):
            return leaf == WEIGHTS_LABEL
        raise ValueError(
            "weight_decay_mask takes the labels of agile.param_labels (leaves 'agile' or "
            f"'weights'), got a leaf {leaf!r:.60}."
        )

    return jax.tree.map(decay, labels)
