"""See what agile layers learned: their activation curves, and a and b over feature maps.

Needs matplotlib (``pip install 'agile[plot]'``), imported when a figure is drawn (so this
module imports without it, and says how to install it when it is missing); ``import agile``
does not import this module.
Both functions return a ``matplotlib.figure.Figure`` built without pyplot (no global
state, no display needed); save it with ``fig.savefig("activations.png")``.

A layer is named by its path in the parameter tree (``"conv_act_0"``, or
``"block/act"`` for a nested one), and its activation is given as a plain name
(``"relu"``), an agile name (``"agile_relu"``), a combined name
(``"combined:relu,sigmoid"``), a callable, or a tuple of plain names or callables
(a combined layer). ``params`` is a linen param dict (``variables["params"]``) or an
``nnx.State``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np

from agile.activations import (
    agile,
    as_plain_activation,
    combined,
    combined_names,
    initial_value,
    is_combined_name,
    plain_name,
)
from agile.errors import UserError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ActivationSpec = str | Callable | Sequence[str | Callable]
INSTALL_MATPLOTLIB = "pip install 'agile[plot]' (or pip install matplotlib)"


class MatplotlibMissingError(UserError, ImportError):
    """matplotlib cannot be imported; the message says how to install it."""


def new_figure(**kwargs: Any) -> Figure:
    """A ``matplotlib.figure.Figure(**kwargs)`` (no pyplot); :class:`MatplotlibMissingError`
    (an ImportError) saying how to install matplotlib when it cannot be imported."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise MatplotlibMissingError(
            f"agile.plotting draws with matplotlib, which cannot be imported ({err}); install "
            f"it with {INSTALL_MATPLOTLIB}."
        ) from None
    return Figure(**kwargs)


def _as_arrays(params: Any) -> Any:
    """A linen dict as is; an ``nnx.State`` (or module) as its pure nested dict."""
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(params, nnx.Module):
        params = nnx.state(params, nnx.Param)
    if nnx is not None and isinstance(params, nnx.State):
        return nnx.to_pure_dict(params)
    return params


def layer_parameters(params: Any, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` of the layer at path ``layer`` (``"conv_act_0"``, ``"block/act"``; ``""``:
    ``params`` is one layer's own)."""
    node = _as_arrays(params)
    for key in layer.split("/") if layer else ():
        if not isinstance(node, Mapping) or key not in node:
            raise ValueError(f"No layer {layer!r} in params (missing {key!r}).")
        node = node[key]
    if not isinstance(node, Mapping) or not {"a", "b"} <= set(node):
        raise ValueError(f"Layer {layer!r} has no parameters a and b.")
    return np.asarray(node["a"], np.float32), np.asarray(node["b"], np.float32)


def _terms(spec: ActivationSpec) -> tuple[Callable, ...]:
    """The activation(s) of one layer: one for an agile layer, K for a combined one."""
    if isinstance(spec, str):
        if is_combined_name(spec):
            return tuple(as_plain_activation(name) for name in combined_names(spec))
        return (as_plain_activation(plain_name(spec)),)
    if callable(spec):
        return (spec,)
    return tuple(as_plain_activation(fn) for fn in spec)


def _name(fn: Callable) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def learned_curves(
    a: np.ndarray, b: np.ndarray, terms: Sequence[Callable], x: np.ndarray
) -> np.ndarray:
    """Each element's learned function on the grid ``x``: shape ``(elements, len(x))``.

    One activation: ``a * f(x - b)``; K activations (``a``, ``b`` with a leading
    axis K): ``sum_k a[k] f_k(x - b[k])``, as the layers compute them.
    """
    grid = jnp.asarray(x, jnp.float32)[None, :]
    if len(terms) == 1:
        a, b = a.reshape(-1, 1), b.reshape(-1, 1)
        return np.asarray(agile(terms[0])(grid, a, b))
    k = len(terms)
    if a.shape[:1] != (k,):
        raise ValueError(f"A layer combining {k} activations needs a of shape (K={k}, ...).")
    return np.asarray(combined(*terms)(grid, a.reshape(k, -1, 1), b.reshape(k, -1, 1)))


def _draw_curves(ax, curves, x, terms, band, layer):
    low, median, high = np.percentile(curves, [band[0], 50, band[1]], axis=0)
    ax.fill_between(x, low, high, alpha=0.3, label=f"{band[0]:g}-{band[1]:g}th percentile")
    ax.plot(x, median, lw=2, label="median")
    start = "plain" if len(terms) == 1 else "at init"
    ax.plot(
        x, np.asarray(terms[0](jnp.asarray(x))), "k--", lw=1, label=f"{_name(terms[0])} ({start})"
    )
    ax.set_title(f"{layer}: {' + '.join(_name(t) for t in terms)} ({curves.shape[0]} units)")
    ax.set_xlabel("x")
    ax.legend(fontsize=7)


def _draw_histograms(fig, cell, values, terms, symbol, bins):
    """Histograms of ``values`` in grid cell ``cell``: one, or one per term stacked (own ranges)."""
    per_term = values[None] if len(terms) == 1 else values
    grid = cell.subgridspec(len(terms), 1)
    for k, term in enumerate(terms):
        ax = fig.add_subplot(grid[k])
        ax.hist(per_term[k].ravel(), bins=bins)
        ax.axvline(initial_value(symbol, k), color="k", ls=":", lw=1)
        label = symbol if len(terms) == 1 else f"{symbol}[{k}] ({_name(term)})"
        ax.set_title(f"{label}: {per_term[k].size} values; dotted: initial", fontsize=9)


def plot_activations(
    params: Any,
    activations: Mapping[str, ActivationSpec],
    *,
    x_range: tuple[float, float] = (-4.0, 4.0),
    num_points: int = 201,
    band: tuple[float, float] = (10.0, 90.0),
    bins: int = 40,
) -> Figure:
    """Each agile layer's learned activation, with histograms of its ``a`` and ``b``.

    One row per layer in ``activations`` (layer path -> its activation, see the
    module docstring): the median over the layer's elements (or channels) of the
    learned function, a band between the ``band`` percentiles, and the plain
    activation dashed (for a combined layer, its first activation: the function
    it started as); then histograms of ``a`` and of ``b`` (one per term, stacked, for a
    combined layer), a dotted line at each parameter's initial value.
    """
    if not activations:
        raise ValueError("plot_activations needs at least one layer in activations.")
    x = np.linspace(*x_range, num_points, dtype=np.float32)
    fig = new_figure(figsize=(12, 3.2 * len(activations)), layout="constrained")
    grid = fig.add_gridspec(len(activations), 3, width_ratios=(2, 1, 1))
    for row, (layer, spec) in enumerate(activations.items()):
        a, b = layer_parameters(params, layer)
        terms = _terms(spec)
        curves = learned_curves(a, b, terms, x)
        _draw_curves(fig.add_subplot(grid[row, 0]), curves, x, terms, band, layer)
        _draw_histograms(fig, grid[row, 1], a, terms, "a", bins)
        _draw_histograms(fig, grid[row, 2], b, terms, "b", bins)
    return fig


def plot_parameter_maps(params: Any, layer: str, *, columns: int = 8) -> Figure:
    """``a`` and ``b`` of a per-element conv layer over the feature-map grid, per channel.

    The layer's ``a`` and ``b`` must have shape ``(H, W, C)`` (granularity
    ``"element"`` after a conv) or ``(K, H, W, C)`` (combined). One block of
    images per parameter (and term), ``columns`` channels a row, with one colour
    scale and colour bar per block, diverging from the parameter's default initial
    value (:func:`initial_value`; white = unchanged).
    """
    a, b = layer_parameters(params, layer)
    if a.ndim not in (3, 4):
        raise ValueError(
            f"plot_parameter_maps needs per-element a and b over a feature map, shape (H, W, C) "
            f"or (K, H, W, C); layer {layer!r} has shape {a.shape}."
        )
    if a.ndim == 3:
        a, b = a[None], b[None]
    channels = a.shape[-1]
    rows_per_block = -(-channels // columns)
    blocks = [
        (f"{symbol}[{k}]" if len(values) > 1 else symbol, values[k], initial_value(symbol, k))
        for symbol, values in (("a", a), ("b", b))
        for k in range(len(values))
    ]
    fig = new_figure(
        figsize=(1.5 * min(channels, columns) + 1, 1.6 * rows_per_block * len(blocks)),
        layout="constrained",
    )
    figures = fig.subfigures(len(blocks), 1, squeeze=False)[:, 0]
    for subfig, (label, values, start) in zip(figures, blocks, strict=True):
        axes = subfig.subplots(rows_per_block, min(channels, columns), squeeze=False)
        spread = float(np.abs(values - start).max()) or 1.0
        for c, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if c < channels:
                image = ax.imshow(
                    values[..., c], vmin=start - spread, vmax=start + spread, cmap="RdBu_r"
                )
                ax.set_title(f"channel {c}", fontsize=7)
        subfig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
        subfig.suptitle(f"{layer}: {label} (white: its initial value {start:g})", fontsize=9)
    return fig
