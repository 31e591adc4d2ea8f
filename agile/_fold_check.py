"""Checks of a fold's result against the plain twin: :meth:`agile.folding.FoldResult.update`
and :meth:`~agile.folding.FoldResult.check` (kept here so that :mod:`agile.folding` stays
about folding)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from agile.errors import FoldError


def _paths(tree: Mapping) -> set[str]:
    return {"/".join(map(str, path)) for path in traverse_util.flatten_dict(dict(tree))}


def _mismatch(result: Any, expected: set[str], twin: str, fix: str) -> None:
    """FoldError when the result's leaves and the twin's differ; names them and ``fix``."""
    have = _paths(result.params)
    missing, extra = sorted(expected - have), sorted(have - expected)
    if not (missing or extra):
        return
    lines = []
    if extra:
        lines.append(
            f"the folded parameters hold {', '.join(extra[:8])}{' ...' if len(extra) > 8 else ''},"
            f" which {twin} has no place for (an unfolded agile layer's a and b? the twin "
            "must keep that layer, or fold it)"
        )
    if missing:
        lines.append(
            f"{twin} has {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}, which "
            f"the folded parameters lack ({fix})"
        )
    raise FoldError("The plain twin does not match the fold: " + "; ".join(lines) + ".")


def update(result: Any, plain: Any) -> None:
    """See :meth:`agile.folding.FoldResult.update`."""
    nnx = sys.modules.get("flax.nnx")
    if nnx is None or not isinstance(plain, nnx.Module):
        raise FoldError(
            f"FoldResult.update takes the plain NNX module, got {type(plain).__name__}; for "
            "linen use plain.apply({'params': result.params}, x)."
        )
    state = nnx.state(plain)
    _mismatch(result, _paths(nnx.to_pure_dict(state)), "the plain model",
              "fold the NNX model itself, whose whole state is folded, not "
              "nnx.state(model, nnx.Param)")
    nnx.replace_by_pure_dict(state, result.params)
    nnx.update(plain, state)


def _largest_difference(agile_out: Any, plain_out: Any) -> float:
    if jax.tree.structure(agile_out) != jax.tree.structure(plain_out):
        raise FoldError("The agile and the plain network return outputs of different structure.")
    worst = 0.0
    for x, y in zip(jax.tree.leaves(agile_out), jax.tree.leaves(plain_out), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape:
            raise FoldError(f"The agile network's output has shape {x.shape}, the plain "
                            f"one's {y.shape}.")
        worst = max(worst, float(np.max(np.abs(x - y), initial=0.0)))
    return worst


def _too_far(agile_out: Any, plain_out: Any, rtol: float, atol: float) -> bool:
    return not all(
        np.allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=atol)
        for x, y in zip(jax.tree.leaves(agile_out), jax.tree.leaves(plain_out), strict=True)
    )


def _linen_outputs(result, agile_model, plain_model, inputs, variables, kwargs):
    others = dict(variables or {})
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(0)}
    expected = jax.eval_shape(lambda: plain_model.init(rngs, *inputs, **kwargs))["params"]
    _mismatch(result, _paths(expected), "the plain model", "is it the same network?")
    agile_out = agile_model.apply({**others, "params": result.source}, *inputs, **kwargs)
    plain_out = plain_model.apply({**others, "params": result.params}, *inputs, **kwargs)
    return agile_out, plain_out


def check(result: Any, agile_model: Any, plain_model: Any, inputs: tuple, rtol: float,
          atol: float, variables: Mapping | None, kwargs: dict) -> float:
    """See :meth:`agile.folding.FoldResult.check`."""
    nnx = sys.modules.get("flax.nnx")
    if not inputs:
        raise FoldError("FoldResult.check needs an example input: check(agile, plain, x).")
    if nnx is not None and isinstance(agile_model, nnx.Module):
        update(result, plain_model)
        agile_out, plain_out = agile_model(*inputs, **kwargs), plain_model(*inputs, **kwargs)
    elif isinstance(agile_model, nn.Module) and isinstance(plain_model, nn.Module):
        agile_out, plain_out = _linen_outputs(
            result, agile_model, plain_model, inputs, variables, kwargs
        )
    elif callable(agile_model) and callable(plain_model):
        agile_out = agile_model(result.source, *inputs, **kwargs)
        plain_out = plain_model(result.params, *inputs, **kwargs)
    else:
        raise FoldError(
            "FoldResult.check takes the agile and the plain model (both NNX or both linen) or "
            f"two functions (params, x) -> y; got {type(agile_model).__name__} and "
            f"{type(plain_model).__name__}."
        )
    worst = _largest_difference(agile_out, plain_out)
    if _too_far(agile_out, plain_out, rtol, atol):
        raise FoldError(
            f"The folded network computes something else: its outputs differ from the agile "
            f"network's by up to {worst:.4g} (rtol={rtol:g}, atol={atol:g}). Check the links "
            "(producer, consumer, ops between) against the model."
        )
    return worst
