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

:func:`fold` does this for every agile layer it is told about and returns the plain
network's parameters (the folded layers' ``a`` and ``b`` removed, the neighbours'
bias and kernel changed) with a report of each layer that did not fold and why
(per-element conv ``a``/``b``, a negative ``a`` before max pooling, a combined layer, a
neighbour that is missing or unknown). A layer folds completely or not at all; one that
does not stays in the parameters unchanged.

Which layer feeds which is not in a parameter tree, so it is given explicitly, as
:class:`Link` triples ``(producer, agile layer, consumer)`` (plus what lies between the
agile layer and the consumer), or derived from the order of a sequential network with
:func:`chain`::

    links = chain(["Conv_0", "Agile_0", "max_pool", "flatten", "Dense_0", "Agile_1",
                   "Dense_1"], params)
    result = fold(params, links)        # linen: model.init(...)["params"] after training
    plain_logits = PlainModel().apply({"params": result.params}, x)
    print(result.report())

NNX: pass the model (or ``nnx.state(model, nnx.Param)``); paths are attribute paths
(``"linear1"``, ``"blocks/0/act"``) and ``result.params`` is a pure dict for the plain
twin::

    result = fold(model, [("linear1", "act1", "linear2")])
    state = nnx.state(plain_model, nnx.Param)
    nnx.replace_by_pure_dict(state, result.params)
    nnx.update(plain_model, state)
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import core
from flax.core import meta

from agile.labels import AgileLayer

__all__ = ["OPS", "FoldResult", "Link", "NotFolded", "chain", "fold"]

Path = str | Sequence[str | int]
POOLING = ("max_pool", "avg_pool")
IDENTITY = ("identity", "dropout")
OPS = (*POOLING, "flatten", *IDENTITY)


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

    ``params``: the plain network's parameters (nested dicts of arrays): the folded
    layers' ``a`` and ``b`` removed, their neighbours' bias and kernel changed, the
    layers that did not fold as they were. ``folded``: the folded layers' paths.
    ``not_folded``: one :class:`NotFolded` per layer that did not fold.
    """

    params: dict
    folded: tuple[str, ...]
    not_folded: tuple[NotFolded, ...]

    def report(self) -> str:
        """One line per layer: folded, or not folded and why."""
        lines = [f"{act}: folded" for act in self.folded]
        lines += [f"{entry.act}: not folded: {entry.reason}" for entry in self.not_folded]
        return "\n".join(lines)


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
    out = []
    for link in links:
        if isinstance(link, Link):
            out.append(link)
        elif isinstance(link, Sequence) and not isinstance(link, str) and len(link) in (3, 4):
            out.append(Link(*link))
        else:
            raise ValueError(
                "fold takes Link objects or tuples (producer, act, consumer[, between]); "
                f"got {link!r}."
            )
    return out


def _plain_tree(params: Any) -> tuple[dict, dict[tuple, AgileLayer] | None]:
    """A mutable nested dict of arrays from linen params or an NNX module/state, and, for an
    NNX module, the kinds of its agile layers by path."""
    nnx = sys.modules.get("flax.nnx")
    kinds = None
    if nnx is not None and isinstance(params, nnx.Module):
        kinds = _nnx_kinds(params, nnx)
        params = nnx.state(params, nnx.Param)
    if nnx is not None and isinstance(params, nnx.State):
        params = nnx.to_pure_dict(params)
    params = meta.unbox(core.unfreeze(params) if isinstance(params, core.FrozenDict) else params)

    def copy(node):
        if isinstance(node, Mapping):
            return {key: copy(value) for key, value in node.items()}
        return jnp.asarray(node)

    return copy(params), kinds


def _nnx_kinds(model: Any, nnx: Any) -> dict[tuple, AgileLayer]:
    from agile.nnx import Agile as NNXAgile
    from agile.nnx import CombinedAgile as NNXCombined

    kinds = {}
    for path, node in nnx.iter_graph(model):
        if isinstance(node, NNXCombined):
            kinds[tuple(path)] = AgileLayer(tuple(node.fns), None)
        elif isinstance(node, NNXAgile):
            kinds[tuple(path)] = AgileLayer((node.fn,), None)
    return kinds


def _layout(a: jax.Array) -> str:
    return "scalar" if a.ndim == 0 else "channel" if a.ndim == 1 else "element"


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
        )
    return (bias - b).astype(bias.dtype)


def _new_kernel(
    consumer: Mapping, a: jax.Array, between: tuple[str, ...], consumer_name: str
) -> jax.Array:
    if "kernel" not in consumer:
        raise _CannotFold(f"its consumer {consumer_name!r} has no kernel to take a")
    kernel = consumer["kernel"]
    layout = _layout(a)
    pooled = [op for op in between if op in POOLING]
    if pooled and layout == "element":
        raise _CannotFold(
            f"per-element a (shape {a.shape}) does not commute with {pooled[0]}: each window "
            "mixes positions with different a"
        )
    if "max_pool" in between and bool(jnp.any(a < 0)):
        raise _CannotFold(
            f"a has negative entries (min {float(jnp.min(a)):.4g}): max pooling commutes "
            "only with a >= 0 (max(a u) = a max(u))"
        )
    if kernel.ndim < 2:
        raise _CannotFold(f"the kernel of {consumer_name!r} has shape {kernel.shape}")
    if layout == "scalar":
        return (kernel * a).astype(kernel.dtype)
    fan_in, out = kernel.shape[-2], kernel.shape[-1]
    if "flatten" in between:
        if kernel.ndim != 2:
            raise _CannotFold(f"{consumer_name!r} after flatten is not a dense layer")
        if layout == "element":  # nothing pools before: row i of the kernel meets a.ravel()[i]
            if fan_in != a.size:
                raise _CannotFold(
                    f"a of shape {a.shape} flattens to {a.size} inputs, but {consumer_name!r} "
                    f"takes {fan_in}"
                )
            return (kernel * a.reshape(-1, 1)).astype(kernel.dtype)
        channels = a.shape[0]
        if fan_in % channels:
            raise _CannotFold(
                f"{consumer_name!r} takes {fan_in} inputs, not a multiple of a's {channels} "
                "channels"
            )
        scaled = kernel.reshape(-1, channels, out) * a[None, :, None]
        return scaled.reshape(kernel.shape).astype(kernel.dtype)
    if layout == "element":
        raise _CannotFold(
            f"per-element a (shape {a.shape}) cannot fold into {consumer_name!r}'s kernel, "
            "which is shared across positions"
        )
    if fan_in != a.shape[0]:
        hint = " (is there a flatten in between? say so in between=)" if fan_in > a.shape[0] else ""
        raise _CannotFold(
            f"a has {a.shape[0]} entries, but the kernel of {consumer_name!r} takes {fan_in} "
            f"inputs{hint}"
        )
    scale = a.reshape((a.shape[0], 1))
    return (kernel * scale).astype(kernel.dtype)


def _set(tree: dict, keys: tuple, leaf: str, value: jax.Array) -> None:
    node = tree
    for key in keys:
        node = node[key]
    node[leaf] = value


def _delete(tree: dict, keys: tuple) -> None:
    node = tree
    for key in keys[:-1]:
        node = node[key]
    del node[keys[-1]]


def fold(
    params: Any,
    links: Iterable[Link | Sequence],
    *,
    layers: Mapping[tuple[str, ...], AgileLayer] | None = None,
) -> FoldResult:
    """Folds every foldable agile layer of ``links`` into its neighbours (module docstring).

    Args:
      params: a linen param dict (``variables["params"]``, dict or FrozenDict, boxes
        unboxed), an ``nnx.State`` of the parameters, or an ``nnx.Module``.
      links: :class:`Link` objects or tuples ``(producer, act, consumer[, between])``,
        e.g. from :func:`chain`. Links are applied in order; a layer may be one link's
        consumer and the next one's producer.
      layers: optional, for linen: :func:`agile.labels.agile_layers` of the model, so
        combined layers are recognised by kind (else only by their shapes). An NNX
        module gives its layers' kinds itself.

    Returns:
      A :class:`FoldResult`: the plain network's parameters, the folded layers and a
      report of those that did not fold. Folding is exact up to float rounding: the
      plain network with ``f`` in place of each folded ``a * f(. - b)`` computes the same
      outputs.
    """
    tree, kinds = _plain_tree(params)
    if layers is not None:
        kinds = {tuple(path): layer for path, layer in layers.items()}
    folded, not_folded = [], []
    for link in _as_links(links):
        act_name = _name(link.act)
        try:
            act_keys, act = _find(tree, link.act)
            if not {"a", "b"} <= set(act):
                raise _CannotFold("it has no a and b (not an agile layer?)")
            if kinds is not None:
                kind = kinds.get(tuple(act_keys), kinds.get(tuple(map(str, act_keys))))
                if kind is not None and len(kind.fns) > 1:
                    raise _CannotFold(
                        f"it is a combined layer (sum of {len(kind.fns)} terms), not one a*f(x-b)"
                    )
            a, b = jnp.asarray(act["a"]), jnp.asarray(act["b"])
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
            bias = _new_bias(producer, b, _name(link.producer))
            kernel = _new_kernel(consumer, a, link.between, _name(link.consumer))
        except _CannotFold as reason:
            not_folded.append(NotFolded(act_name, str(reason)))
            continue
        _set(tree, producer_keys, "bias", bias)
        _set(tree, consumer_keys, "kernel", kernel)
        _delete(tree, act_keys)
        folded.append(act_name)
    return FoldResult(tree, tuple(folded), tuple(not_folded))


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
    tree, _ = _plain_tree(params)
    steps = list(sequence)
    kinds = []
    for step in steps:
        if step in OPS:
            kinds.append("op")
            continue
        try:
            _, node = _find(tree, step)
        except _CannotFold as error:
            raise ValueError(f"chain: {error}; ops are {', '.join(OPS)}.") from None
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
