"""Fold trained agile layers into their neighbours: the plain network that computes the same.

An agile layer ``z = a * f(h - b)`` between a layer with a bias (``h = W x + c``) and a
layer with a kernel (``V z + d``) is the plain ``f`` in disguise, wherever ``a`` and ``b``
can move into those neighbours:

- ``b`` into the producer's bias: ``f(W x + (c - b))``, exact, per node of a dense layer
  or per channel of a convolution (a scalar ``b`` too); a per-element ``b`` of a
  convolution (one per position and channel) has no per-channel bias to go to.
- ``a`` into the consumer's kernel along its input axis: ``V diag(a)``, per node of a
  dense consumer, per input channel of a convolution. Between the two there may be
  ``"max_pool"`` (commutes with a per-channel ``a >= 0``: ``max(a u) = a max(u)``; not
  with a negative one), ``"avg_pool"`` (linear: commutes with any per-channel ``a``),
  ``"flatten"`` (channels-last ``x.reshape(n, -1)``: a dense consumer's kernel rows are
  scaled per channel, or per element when nothing pools before), and ``"dropout"`` /
  ``"identity"`` (identity at inference).

Both moves need ``a`` and ``b`` to run along the activation's *last* axis, the one the
producer's bias adds to and the consumer's kernel contracts: a per-channel layer on a
channels-first input (``feature_axes=1``) does not fold, and says so.

:func:`fold` (``agile.fold``) folds every agile layer it is told about and, by default,
refuses (:class:`FoldError`, listing each layer and why) unless every agile layer of the
model folds: the plain twin then has no agile layer left, and no ``a``/``b`` it would
silently ignore. ``strict=False`` returns the partial result (the unfolded layers' ``a``
and ``b`` kept, for a twin that keeps those layers) with a report. Before folding, each
link is checked against the model: the producer's bias and the consumer's kernel rows
against the layer's features (after the listed ops), its feature axis, and for linen the
call order (a module with parameters, e.g. a BatchNorm, called between the producer and
the layer is an error naming it); for NNX, a normalisation defined between the producer
and the layer in the same module. :meth:`FoldResult.check` then compares the two
networks' outputs in one call and raises past a tolerance.

Which layer feeds which is not in a parameter tree, so it is given explicitly, as
:class:`Link` triples ``(producer, agile layer, consumer)`` (plus what lies between the
agile layer and the consumer), or derived from the order of a sequential network with
:func:`chain`. Linen: pass the model and an example input (as to
:func:`agile.param_labels`), which say each layer's layout and call order::

    from agile import fold
    from agile.folding import chain

    links = chain(["Conv_0", "Agile_0", "max_pool", "flatten", "Dense_0", "Agile_1",
                   "Dense_1"], params)
    result = fold(params, links, model, x)       # params: model.init(...)["params"], trained
    result.check(model, PlainModel(), x)          # outputs equal, or FoldError
    plain_logits = PlainModel().apply({"params": result.params}, x)

NNX: pass the model; paths are attribute paths (``"linear1"``, ``"blocks/0/act"``), and
the whole state is folded (BatchNorm statistics, RNG state and all), so the plain twin
gets every variable::

    result = fold(model, [("linear1", "act1", "linear2")])
    result.update(plain_model)                   # = nnx.update with result.params, checked
    result.check(model, plain_model, x)          # both in eval mode for BatchNorm, Dropout

By hand: ``state = nnx.state(plain_model); nnx.replace_by_pure_dict(state, result.params);
nnx.update(plain_model, state)`` (not ``nnx.state(plain_model, nnx.Param)``, which leaves
the twin's BatchNorm statistics at their initial values).

Before 0.4.0 this module was ``agile.fold``, now the function (``from agile import fold``);
``from agile.fold import ...`` still finds this module.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import core
from flax.core import meta

import agile._fold_check as _fold_check
from agile.errors import FoldError
from agile.labels import AgileLayer, agile_layers

__all__ = ["OPS", "FoldError", "FoldResult", "Link", "NotFolded", "chain", "fold"]

Path = str | Sequence[str | int]
POOLING = ("max_pool", "avg_pool")
IDENTITY = ("identity", "dropout")
OPS = (*POOLING, "flatten", *IDENTITY)
NORMALIZATIONS = ("BatchNorm", "LayerNorm", "GroupNorm", "RMSNorm", "InstanceNorm")


@dataclasses.dataclass(frozen=True)
class Link:
    """One agile layer and its neighbours, by their paths in the parameter tree.

    ``producer``: the layer whose output the agile layer takes (its ``bias`` absorbs
    ``b``; a dense layer, a convolution, a normalisation with a bias), or None if unknown.
    ``act``: the agile layer (parameters ``a`` and ``b``).
    ``consumer``: the next layer with a ``kernel`` (dense or convolution; its input axis,
    the kernel's second to last, absorbs ``a``), or None if unknown.
    ``between``: what lies between the agile layer and the consumer, in order, from
    :data:`OPS` (``"max_pool"``, ``"avg_pool"``, ``"flatten"``, ``"dropout"``,
    ``"identity"``). Paths are ``"name"``, ``"block/name"`` or tuples of keys.
    """

    producer: Path | None
    act: Path
    consumer: Path | None
    between: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "between", tuple(self.between))
        unknown = [op for op in self.between if op not in OPS]
        if unknown:
            raise ValueError(
                f"Link {_name(self.act)}: unknown op(s) {unknown} between it and its consumer; "
                f"known: {', '.join(OPS)}."
            )


@dataclasses.dataclass(frozen=True)
class NotFolded:
    """An agile layer that :func:`fold` left in place, and why."""

    act: str
    reason: str


@dataclasses.dataclass(frozen=True)
class FoldResult:
    """What :func:`fold` returns.

    ``params``: the plain network's parameters (nested dicts of arrays; for NNX the whole
    state as a pure dict): the folded layers' ``a`` and ``b`` removed, their neighbours'
    bias and kernel changed, the layers that did not fold (``strict=False`` only) as they
    were. ``folded``: the folded layers' paths. ``not_folded``: one :class:`NotFolded` per
    layer that did not fold. ``source``: the parameters that were folded, for
    :meth:`check`.
    """

    params: dict
    folded: tuple[str, ...]
    not_folded: tuple[NotFolded, ...]
    source: dict = dataclasses.field(default_factory=dict, repr=False)

    def report(self) -> str:
        """One line per layer: folded, or not folded and why."""
        lines = [f"{act}: folded" for act in self.folded]
        lines += [f"{entry.act}: not folded: {entry.reason}" for entry in self.not_folded]
        return "\n".join(lines)

    def update(self, plain: Any) -> None:
        """Puts :attr:`params` into the NNX module ``plain`` (the plain twin), every variable.

        Raises :class:`FoldError` naming the paths when the two do not match: a variable of
        ``plain`` that the result lacks (e.g. BatchNorm statistics when
        ``nnx.state(model, nnx.Param)`` was folded instead of the model) or a leftover of
        the result that ``plain`` has no place for (an unfolded layer's ``a`` and ``b``).
        """
        _fold_check.update(self, plain)

    def check(
        self,
        agile_model: Any,
        plain_model: Any,
        *inputs: Any,
        rtol: float = 1e-4,
        atol: float = 1e-5,
        variables: Mapping | None = None,
        **model_kwargs: Any,
    ) -> float:
        """Compares the agile network's outputs with its folded twin's; returns the largest
        absolute difference, or raises :class:`FoldError` past ``rtol``/``atol``.

        - NNX modules: puts :attr:`params` into ``plain_model`` (:meth:`update`), then
          compares ``agile_model(*inputs, **model_kwargs)`` with ``plain_model(...)``
          (call ``.eval()`` on both first if they have BatchNorm or Dropout).
        - linen modules: ``agile_model.apply({**variables, "params": source}, *inputs,
          **model_kwargs)`` against ``plain_model.apply`` with :attr:`params`
          (``variables``: other collections, e.g. ``{"batch_stats": ...}``); first checks
          that ``plain_model`` takes exactly :attr:`params` (linen would silently ignore a
          leftover ``a``, ``b``).
        - functions: ``agile_model(source, *inputs)`` against ``plain_model(params, *inputs)``.
        """
        return _fold_check.check(
            self, agile_model, plain_model, inputs, rtol, atol, variables, model_kwargs
        )


class _CannotFold(Exception):
    pass


def _name(path: Path) -> str:
    return path if isinstance(path, str) else "/".join(map(str, path))


def _keys(path: Path) -> tuple:
    return tuple(path.split("/")) if isinstance(path, str) else tuple(path)


def _find(tree: Mapping, path: Path) -> tuple[tuple, Mapping]:
    """``(resolved keys, sub-dict)`` at ``path``; str keys also match int keys (NNX lists)."""
    node: Any = tree
    resolved = []
    for key in _keys(path):
        if not isinstance(node, Mapping):
            raise _CannotFold(f"{_name(path)!r} is not a layer in the parameters")
        for candidate in (key, int(key) if isinstance(key, str) and key.isdigit() else None):
            if candidate is not None and candidate in node:
                node = node[candidate]
                resolved.append(candidate)
                break
        else:
            raise _CannotFold(f"no layer {_name(path)!r} in the parameters")
    if not isinstance(node, Mapping):
        raise _CannotFold(f"{_name(path)!r} is not a layer in the parameters")
    return tuple(resolved), node


def _as_links(links: Iterable[Link | Sequence]) -> list[Link]:
    if isinstance(links, (str, Link)) or not isinstance(links, Iterable):
        raise FoldError(
            f"fold takes a list of links, e.g. [('dense1', 'act1', 'dense2')]; got {links!r:.80}."
        )
    out = []
    for link in links:
        if isinstance(link, Link):
            out.append(link)
        elif isinstance(link, Sequence) and not isinstance(link, str) and len(link) in (3, 4):
            out.append(Link(*link))
        else:
            raise FoldError(
                "fold takes Link objects or tuples (producer, act, consumer[, between]); "
                f"got {link!r:.80}."
            )
    return out


def _copy(node: Any) -> Any:
    if isinstance(node, Mapping):
        return {key: _copy(value) for key, value in node.items()}
    return jnp.asarray(node)


def _plain_tree(params: Any) -> dict:
    """A mutable nested dict of arrays from linen params, or an NNX module's whole state."""
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(params, nnx.Module):
        params = nnx.state(params)
    if nnx is not None and isinstance(params, nnx.State):
        params = nnx.to_pure_dict(params)
    if isinstance(params, core.FrozenDict):
        params = core.unfreeze(params)
    if not isinstance(params, Mapping):
        raise FoldError(
            "fold takes linen params (model.init(...)['params']), an NNX module or an "
            f"nnx.State; got {type(params).__name__}."
        )
    return _copy(meta.unbox(params))


def _layout(a: jax.Array) -> str:
    return "scalar" if a.ndim == 0 else "channel" if a.ndim == 1 else "element"


def _check_layer(layer: AgileLayer | None, a: jax.Array) -> None:
    """Refuses layers whose layout cannot fold: combined, stacked, not along the last axis."""
    if layer is None:
        return
    if len(layer.fns) > 1:
        raise _CannotFold(
            f"it is a combined layer (sum of {len(layer.fns)} terms), not one a*f(x-b)"
        )
    depth = layer.depth(tuple(a.shape))
    if depth:
        raise _CannotFold(
            f"it holds {'x'.join(map(str, depth))} stacked layers (nnx.vmap / scan: a of shape "
            f"{tuple(a.shape)}); fold does not fold stacked layers"
        )
    axes = layer.feature_axes
    if layer.granularity == "channel" and axes is not None and tuple(axes) != (-1,):
        raise _CannotFold(
            f"its a and b run along feature_axes={axes if len(axes) > 1 else axes[0]}, not the "
            "last axis that the producer's bias adds to and the consumer's kernel contracts "
            "(channels first?); fold needs channels-last layers (feature_axes=-1)"
        )


def _check_order(link: Link, layer: AgileLayer | None, model: Any) -> None:
    """Refuses a producer that does not make the layer's input: for linen, another module's
    output is the input (traced); for NNX, a normalisation is defined between the two."""
    producer = tuple(map(str, _keys(link.producer)))
    fed_by = None if layer is None else layer.fed_by
    if fed_by is not None:
        fed_by = tuple(map(str, fed_by))
        shorter = min(len(fed_by), len(producer))
        if fed_by[:shorter] != producer[:shorter]:
            raise _CannotFold(
                f"its input is the output of {_name(fed_by)!r}, not of {_name(link.producer)!r} "
                f"(a BatchNorm between them?): link ({_name(fed_by)!r}, {_name(link.act)!r}, "
                "...)"
            )
    nnx = sys.modules.get("flax.nnx")
    if model is None or nnx is None or not isinstance(model, nnx.Module):
        return
    act = tuple(map(str, _keys(link.act)))
    if len(act) != len(producer) or act[:-1] != producer[:-1]:
        return  # not siblings: their order is not known
    parent = model
    for key in act[:-1]:
        parent = parent[int(key)] if key.isdigit() else getattr(parent, key)
    names = [str(name) for name in (range(len(parent)) if isinstance(parent, Sequence)
                                    else vars(parent))]
    if producer[-1] not in names or act[-1] not in names:
        return
    start, end = names.index(producer[-1]), names.index(act[-1])
    items = list(parent) if isinstance(parent, Sequence) else [getattr(parent, n) for n in names]
    for name, item in zip(names[start + 1 : end], items[start + 1 : end], strict=True):
        if any(norm in type(item).__name__ for norm in NORMALIZATIONS):
            between = _name((*act[:-1], name))
            raise _CannotFold(
                f"{between!r} ({type(item).__name__}) comes between {_name(link.producer)!r} "
                f"and it in the module, so it is what feeds it: link ({between!r}, "
                f"{_name(link.act)!r}, ...)"
            )


def _new_bias(producer: Mapping, b: jax.Array, producer_name: str) -> jax.Array:
    if "bias" not in producer:
        raise _CannotFold(
            f"its producer {producer_name!r} has no bias to take b (use_bias=False?)"
        )
    bias = producer["bias"]
    if b.ndim > bias.ndim or bias.shape[bias.ndim - b.ndim :] != b.shape:
        kind = "per-element " if b.ndim >= 2 else ""
        raise _CannotFold(
            f"{kind}b of shape {b.shape} cannot fold into the bias of shape {bias.shape} of "
            f"{producer_name!r}"
            + (" (a convolution's bias is per channel)" if b.ndim >= 2 else "")
            + ("" if b.ndim >= 2 else ": the producer does not give the layer's features")
        )
    return (bias - b).astype(bias.dtype)


def _check_pooling(a: jax.Array, between: tuple[str, ...]) -> None:
    pooled = [op for op in between if op in POOLING]
    if pooled and _layout(a) == "element":
        raise _CannotFold(
            f"per-element a (shape {a.shape}) does not commute with {pooled[0]}: each window "
            "mixes positions with different a"
        )
    if "max_pool" in between and bool(jnp.any(a < 0)):
        raise _CannotFold(
            f"a has negative entries (min {float(jnp.min(a)):.4g}): max pooling commutes "
            "only with a >= 0 (max(a u) = a max(u))"
        )


def _flattened_kernel(kernel, a, between, name, input_shape) -> jax.Array:
    """``kernel`` of a dense layer after ``flatten``, its rows scaled by ``a``."""
    fan_in, out = kernel.shape[-2], kernel.shape[-1]
    if kernel.ndim != 2:
        raise _CannotFold(f"{name!r} after flatten is not a dense layer")
    if _layout(a) == "element":  # nothing pools before: row i of the kernel meets a.ravel()[i]
        if fan_in != a.size:
            raise _CannotFold(
                f"a of shape {a.shape} flattens to {a.size} inputs, but {name!r} takes {fan_in}"
            )
        return kernel * a.reshape(-1, 1)
    channels = a.shape[0]
    pooled = any(op in POOLING for op in between)
    if input_shape is not None and not pooled and fan_in != math.prod(input_shape[1:]):
        raise _CannotFold(
            f"its input of shape {input_shape} flattens to {math.prod(input_shape[1:])} "
            f"features, but the kernel of {name!r} has {fan_in} rows"
        )
    if fan_in % channels:
        raise _CannotFold(
            f"{name!r} takes {fan_in} inputs, not a multiple of a's {channels} channels"
        )
    return (kernel.reshape(-1, channels, out) * a[None, :, None]).reshape(kernel.shape)


def _new_kernel(
    consumer: Mapping, a: jax.Array, between: tuple[str, ...], consumer_name: str,
    input_shape: tuple[int, ...] | None = None,
) -> jax.Array:
    if "kernel" not in consumer:
        raise _CannotFold(f"its consumer {consumer_name!r} has no kernel to take a")
    kernel = consumer["kernel"]
    _check_pooling(a, between)
    if kernel.ndim < 2:
        raise _CannotFold(f"the kernel of {consumer_name!r} has shape {kernel.shape}")
    if _layout(a) == "scalar":
        return (kernel * a).astype(kernel.dtype)
    if "flatten" in between:
        scaled = _flattened_kernel(kernel, a, between, consumer_name, input_shape)
        return scaled.astype(kernel.dtype)
    if _layout(a) == "element":
        raise _CannotFold(
            f"per-element a (shape {a.shape}) cannot fold into {consumer_name!r}'s kernel, "
            "which is shared across positions"
        )
    fan_in = kernel.shape[-2]
    if fan_in != a.shape[0]:
        hint = " (is there a flatten in between? say so in between=)" if fan_in > a.shape[0] else ""
        raise _CannotFold(
            f"a has {a.shape[0]} entries, but the kernel of {consumer_name!r} takes {fan_in} "
            f"inputs{hint}"
        )
    return (kernel * a.reshape((a.shape[0], 1))).astype(kernel.dtype)


def _node(tree: dict, keys: tuple) -> dict:
    for key in keys:
        tree = tree[key]
    return tree


def _layers(params: Any, model: Any, inputs: tuple, kwargs: dict, layers: Any
            ) -> dict[tuple, AgileLayer] | None:
    """Each agile layer's :class:`AgileLayer` by path: found in the NNX module or traced in
    the linen ``model`` (or given as ``layers``); None when nothing says."""
    if layers is not None:
        return {tuple(_keys(path)): layer for path, layer in layers.items()}
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(params, nnx.Module):
        if model is not None or inputs or kwargs:
            raise FoldError("fold(nnx module, links) takes no model or inputs.")
        return agile_layers(params)
    if model is None:
        return None
    if not isinstance(model, nn.Module) or not (inputs or kwargs):
        raise FoldError(
            "fold(params, links, model, x): model must be the linen model of params and x an "
            f"example input; got model={type(model).__name__} and {len(inputs)} input(s)."
        )
    return agile_layers(model, *inputs, **kwargs)


def _fold_link(tree: dict, link: Link, layers: dict | None, model: Any) -> tuple:
    """``(act keys, producer keys, new bias, consumer keys, new kernel)`` of one link, or
    _CannotFold."""
    act_keys, act = _find(tree, link.act)
    if not {"a", "b"} <= set(act):
        raise _CannotFold("it has no a and b (not an agile layer?)")
    a, b = jnp.asarray(act["a"]), jnp.asarray(act["b"])
    layer = None
    if layers is not None:
        layer = layers.get(tuple(act_keys), layers.get(tuple(map(str, act_keys))))
    _check_layer(layer, a)
    if a.shape != b.shape:
        raise _CannotFold(f"a and b have different shapes {a.shape}, {b.shape}")
    if link.producer is None:
        raise _CannotFold("its producer is not known (no layer with a bias before it)")
    if link.consumer is None:
        raise _CannotFold(
            "its consumer is not known (no single layer with a kernel after it; a "
            "residual or a second use of its output would need a too)"
        )
    producer_keys, producer = _find(tree, link.producer)
    consumer_keys, consumer = _find(tree, link.consumer)
    _check_order(link, layer, model)
    bias = _new_bias(producer, b, _name(link.producer))
    input_shape = None if layer is None else layer.input_shape
    kernel = _new_kernel(consumer, a, link.between, _name(link.consumer), input_shape)
    return act_keys, producer_keys, bias, consumer_keys, kernel


def fold(
    params: Any,
    links: Iterable[Link | Sequence],
    model: nn.Module | None = None,
    *inputs: Any,
    strict: bool = True,
    layers: Mapping | None = None,
    **model_kwargs: Any,
) -> FoldResult:
    """Folds each linked agile layer into its producer's bias and consumer's kernel.

    Args:
      params: an NNX module (its whole state is folded), linen params
        (``model.init(...)["params"]``, trained) or an ``nnx.State``.
      links: :class:`Link` objects or ``(producer, act, consumer[, between])`` tuples
        (paths as ``"name"``, ``"block/name"``), e.g. from :func:`chain`, folded in order; a
        layer may be one link's consumer and the next one's producer.
      model, inputs, model_kwargs: linen only: the model of ``params`` and an example
        input (``fold(params, links, model, x, train=False)``), traced once without
        computing to learn each agile layer's kind, feature axes, input shape and call
        order, against which every link is checked. Needed with ``strict=True``.
      strict: True (default): raise :class:`FoldError` unless every agile layer of the
        model is linked and folds, so the plain twin has no agile layer left; False:
        return the partial result and report the rest (their ``a`` and ``b`` are kept in
        ``params`` for a twin that keeps those layers).
      layers: instead of ``model`` and ``inputs``: :func:`agile.labels.agile_layers` of
        the model.

    Returns:
      A :class:`FoldResult`: the plain network's parameters, the folded layers and a
      report of those that did not fold. Folding is exact up to float rounding; check it
      with :meth:`FoldResult.check`.

    Raises:
      FoldError: with ``strict=True``, naming each layer that does not fold and why (and
      the agile layers no link names); for a linen tree or a bare ``nnx.State`` without
      the model, saying to pass it.
    """
    kinds = _layers(params, model, inputs, model_kwargs, layers)
    link_list = _as_links(links)
    acts = [_name(link.act) for link in link_list]
    twice = sorted({act for act in acts if acts.count(act) > 1})
    if twice:
        raise FoldError(f"fold: {', '.join(twice)} linked twice; give each agile layer one link.")
    if strict and kinds is None:
        raise FoldError(
            "fold cannot check these links: linen params (or an nnx.State) do not say each "
            "agile layer's layout or call order. Pass the model and an example input, "
            "fold(params, links, model, x) (for NNX the module itself), or strict=False to "
            "fold unchecked."
        )
    tree = _plain_tree(params)
    source = _copy(tree)
    folded, not_folded = [], []
    for link in link_list:
        try:
            act_keys, producer_keys, bias, consumer_keys, kernel = _fold_link(
                tree, link, kinds, params if model is None else None
            )
        except _CannotFold as reason:
            not_folded.append(NotFolded(_name(link.act), str(reason)))
            continue
        _node(tree, producer_keys)["bias"] = bias
        _node(tree, consumer_keys)["kernel"] = kernel
        del _node(tree, act_keys[:-1])[act_keys[-1]]
        folded.append(_name(link.act))
    result = FoldResult(tree, tuple(folded), tuple(not_folded), source)
    if strict:
        _refuse_partial(result, kinds, link_list)
    return result


def _refuse_partial(result: FoldResult, kinds: Mapping, links: list[Link]) -> None:
    """FoldError listing every layer that did not fold and every agile layer no link names."""
    linked = {tuple(map(str, _keys(link.act))) for link in links}
    unlinked = [_name(path) for path in kinds if tuple(map(str, path)) not in linked]
    lines = [f"  {entry.act}: {entry.reason}" for entry in result.not_folded]
    lines += [f"  {path}: no link names it" for path in unlinked]
    if lines:
        raise FoldError(
            f"fold: {len(lines)} agile layer(s) do not fold, so a plain twin would compute "
            "something else:\n" + "\n".join(lines) + "\nFix the links, or pass strict=False "
            "for a partial fold whose twin keeps these layers."
        )


def chain(sequence: Sequence[str], params: Any) -> list[Link]:
    """The :class:`Link` of every agile layer of a sequential network, from its order.

    ``sequence`` lists the network's steps in order: layer paths in ``params``
    (``"Conv_0"``, ``"act"``, ``"block/dense"``) and ops from :data:`OPS`
    (``"max_pool"``, ``"flatten"``, ...). A layer whose parameters are exactly ``a`` and
    ``b`` is an agile layer; its producer is the step just before it (if that is a
    layer) and its consumer the next layer after it, with only ops in between (if none,
    or another agile layer comes first, the consumer is None, and :func:`fold` reports
    it). Other steps (a plain activation, a reshape of another kind) cannot be listed:
    write those links by hand.
    """
    if isinstance(sequence, str) or not isinstance(sequence, Sequence):
        raise FoldError(f"chain takes a list of steps, got {sequence!r:.80}.")
    tree = _plain_tree(params)
    steps = list(sequence)
    kinds = []
    for step in steps:
        if step in OPS:
            kinds.append("op")
            continue
        try:
            _, node = _find(tree, step)
        except _CannotFold as error:
            raise FoldError(f"chain: {error}; ops are {', '.join(OPS)}.") from None
        kinds.append("agile" if set(node) == {"a", "b"} else "layer")
    links = []
    for i, (step, kind) in enumerate(zip(steps, kinds, strict=True)):
        if kind != "agile":
            continue
        producer = steps[i - 1] if i > 0 and kinds[i - 1] == "layer" else None
        consumer, between = None, []
        for later, later_kind in zip(steps[i + 1 :], kinds[i + 1 :], strict=True):
            if later_kind == "op":
                between.append(later)
                continue
            consumer = later if later_kind == "layer" else None
            break
        links.append(Link(producer, step, consumer, tuple(between)))
    return links
