"""See what agile layers learned: their activation curves, and a and b per layer or channel.

Needs matplotlib (``pip install 'agile-activations[plot]'``), imported when a figure is
drawn, so this module imports without it and says how to install it when it is missing;
``import agile`` does not import this module. Figures are ``matplotlib.figure.Figure`` objects built
without pyplot (no global state, no display needed); :func:`save_figure` writes one as
PNG, PDF or SVG by the file's suffix, the same bytes every time.

Which layers to draw (:func:`plot_activations`, :func:`agile_layers`):

- linen: ``plot_activations(params, model, x)``, every agile layer the model calls on the
  example input ``x`` (a linen param dict carries no layer types, so the model is traced
  once without computing, as :func:`agile.param_labels` does);
- NNX: ``plot_activations(model)``, every :class:`agile.nnx.Agile` and
  :class:`agile.nnx.CombinedAgile` in the module;
- by hand, any tree: ``plot_activations(params, {layer: activation})``.

A layer is named by its path in the parameter tree (``"conv_act_0"``, or ``"block/act"``
for a nested one; ``"blocks/3"`` in an NNX list), and its activation is given as a plain
name (``"relu"``), an agile name (``"agile_relu"``), a combined name
(``"combined:relu,sigmoid"``), a callable, a tuple of plain names or callables (a combined
layer), or an :class:`AgileLayer`. ``params`` is a linen param dict
(``variables["params"]``), an ``nnx.State`` or an ``nnx.Module``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from agile._plot_base import (
    _MARKERS,
    FIGURE_FORMATS,
    INSTALL_MATPLOTLIB,
    LAYER_CELL,
    MAX_COLUMNS,
    MAX_FIGSIZE,
    VIEWS,
    ActivationSpec,
    LayerSpec,
    MatplotlibMissingError,
    _cells,
    _resolve,
    _Style,
    _term_shape,
    _terms,
    agile_layers,
    feature_map_layers,
    layer_parameters,
    new_figure,
    save_figure,
)
from agile._plot_figures import plot_depth, plot_parameter_maps
from agile.activations import agile, combined, initial_value
from agile.errors import ArgumentError, unknown_value_error
from agile.labels import AgileLayer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "FIGURE_FORMATS",
    "INSTALL_MATPLOTLIB",
    "MAX_FIGSIZE",
    "VIEWS",
    "ActivationSpec",
    "AgileLayer",
    "LayerSpec",
    "MatplotlibMissingError",
    "agile_layers",
    "feature_map_layers",
    "layer_parameters",
    "learned_curves",
    "new_figure",
    "plot_activations",
    "plot_depth",
    "plot_parameter_maps",
    "save_figure",
]


# ---------------------------------------------------------------------------------------------
# Curves and panels.


def _name(fn: Callable) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def learned_curves(
    a: np.ndarray, b: np.ndarray, terms: Sequence[Callable], x: np.ndarray
) -> np.ndarray:
    """Each element's learned function on the grid ``x``: shape ``(elements, len(x))``.

    One activation: ``a * f(x - b)``; K activations (``a``, ``b`` with a leading
    axis K): ``sum_k a[k] f_k(x - b[k])``, as the layers compute them. Elements are in
    ``a``'s (C) order, so the last axis of ``a`` (the channel) varies fastest.
    """
    grid = jnp.asarray(x, jnp.float32)[None, :]
    if len(terms) == 1:
        a, b = a.reshape(-1, 1), b.reshape(-1, 1)
        return np.asarray(agile(terms[0])(grid, a, b))
    k = len(terms)
    if a.shape[:1] != (k,):
        raise ValueError(f"A layer combining {k} activations needs a of shape (K={k}, ...).")
    return np.asarray(combined(*terms)(grid, a.reshape(k, -1, 1), b.reshape(k, -1, 1)))


def _plain_line(ax, x, terms):
    start = "plain" if len(terms) == 1 else "at init"
    ax.plot(
        x, np.asarray(terms[0](jnp.asarray(x))), "k--", lw=1, label=f"{_name(terms[0])} ({start})"
    )


def _curve_ylabel(terms) -> str:
    return "a·f(x − b)" if len(terms) == 1 else "Σ a[k]·f_k(x − b[k])"


def _draw_curves(ax, curves, x, terms, band, layer, style):
    low, median, high = np.percentile(curves, [band[0], 50, band[1]], axis=0)
    ax.fill_between(x, low, high, alpha=0.3, label=f"{band[0]:g}-{band[1]:g}th percentile")
    ax.plot(x, median, lw=2, label="median")
    _plain_line(ax, x, terms)
    title = f"{layer}: {' + '.join(_name(t) for t in terms)} ({curves.shape[0]} units)"
    style.axes(ax, title, "x", _curve_ylabel(terms))
    ax.legend(fontsize=style.size(7))


def _draw_histograms(fig, cell, values, terms, symbol, bins, style):
    """Histograms of ``values`` in grid cell ``cell``: one, or one per term stacked (own ranges)."""
    per_term = values[None] if len(terms) == 1 else values
    grid = cell.subgridspec(len(terms), 1)
    for k, term in enumerate(terms):
        ax = fig.add_subplot(grid[k])
        ax.hist(per_term[k].ravel(), bins=bins)
        ax.axvline(initial_value(symbol, k), color="k", ls=":", lw=1)
        label = symbol if len(terms) == 1 else f"{symbol}[{k}] ({_name(term)})"
        title = f"{label}: {per_term[k].size} values;\ndotted: initial"
        style.axes(ax, title, label, "count", title_points=7)


def _channel_colours(count: int) -> np.ndarray:
    from matplotlib import colormaps

    return colormaps["viridis"](np.linspace(0.0, 0.9, count))


def _channel_count(term_shape: tuple[int, ...]) -> int:
    """Channels of a layer whose one term's ``a`` has ``term_shape``: its last axis."""
    return term_shape[-1] if term_shape else 1


def _draw_channel_curves(ax, curves, x, terms, layer, style, scalar=False):
    """One curve per channel (``curves``: positions x channels x len(x); median over the
    positions of a per-element layer), coloured by channel index; the plain f dashed. The
    legend also names the markers of a combined layer's terms in the a and b panels."""
    from matplotlib.lines import Line2D

    positions, channels = curves.shape[:2]
    per_channel = np.median(curves, axis=0)
    colours = _channel_colours(channels)
    for c in range(channels):
        ax.plot(x, per_channel[c], color=colours[c], lw=1, alpha=0.85)
    _plain_line(ax, x, terms)
    handles = [Line2D([], [], color=colours[-1], label="one per channel (colour: index)"),
               ax.lines[-1]]
    if len(terms) > 1:
        handles += [
            Line2D([], [], marker=_MARKERS[k % len(_MARKERS)], ls="", color="0.3",
                   label=f"a[{k}], b[{k}]: {_name(term)}")
            for k, term in enumerate(terms)
        ]
    ax.legend(handles=handles, fontsize=style.size(7))
    if scalar:
        what = "one a and b for the layer"
    else:
        over = f", median over {positions} positions" if positions > 1 else ""
        what = f"{channels} channel{'s' if channels > 1 else ''}{over}"
    style.axes(ax, f"{layer}: {' + '.join(_name(t) for t in terms)} ({what})", "x",
               _curve_ylabel(terms))


def _draw_channel_values(ax, values, terms, symbol, band, style):
    """``values`` (K, positions, channels) per channel: points (per-channel layers) or median
    and ``band`` percentiles over positions (per-element layers); dotted: initial value."""
    from matplotlib.ticker import MaxNLocator

    positions, channels = values.shape[1:]
    index = np.arange(channels)
    colours = _channel_colours(channels)
    for k, term in enumerate(terms):
        label = symbol if len(terms) == 1 else f"{symbol}[{k}] ({_name(term)})"
        marker = _MARKERS[k % len(_MARKERS)]
        median = np.median(values[k], axis=0)
        if positions > 1:
            low, high = np.percentile(values[k], band, axis=0)
            ax.errorbar(index, median, yerr=(median - low, high - median), fmt="none",
                        ecolor="0.6", lw=0.8)
        ax.scatter(index, median, c=colours, marker=marker, s=14, label=label, zorder=3)
        ax.axhline(initial_value(symbol, k), color="k", ls=":", lw=1)
    spread = f" (median, {band[0]:g}-{band[1]:g}th pct)" if positions > 1 else ""
    style.axes(ax, f"{symbol} per channel{spread};\ndotted: initial", "channel", symbol,
               title_points=7)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))  # channels are whole
    ax.set_xlim(-0.5 - 0.02 * channels, channels - 0.5 + 0.02 * channels)


def _panel_rows(layer: AgileLayer, view: str) -> int:
    """Rows of panels below a layer's curve: one, or one per term of a combined layer's
    histograms."""
    return len(_terms(layer)) if view == "distribution" else 1


def _draw_layer(fig, cell, path, layer, a, b, x, view, band, bins, style):
    """One layer's panels in grid cell ``cell``: its curve(s) above, its a and b below."""
    terms = _terms(layer)
    curves = learned_curves(a, b, terms, x)
    rows = cell.subgridspec(
        2, 1, height_ratios=(LAYER_CELL[1], LAYER_CELL[2] * _panel_rows(layer, view))
    )
    below = rows[1].subgridspec(1, 2)
    if view == "distribution":
        _draw_curves(fig.add_subplot(rows[0]), curves, x, terms, band, path, style)
        _draw_histograms(fig, below[0], a, terms, "a", bins, style)
        _draw_histograms(fig, below[1], b, terms, "b", bins, style)
        return
    channels = _channel_count(_term_shape(a, terms))
    per_channel = curves.reshape(-1, channels, len(x))  # (positions, channels, len(x))
    _draw_channel_curves(fig.add_subplot(rows[0]), per_channel, x, terms, path, style,
                         scalar=not _term_shape(a, terms))
    for column, (symbol, values) in enumerate((("a", a), ("b", b))):
        per_term = values[None] if len(terms) == 1 else values
        by_channel = per_term.reshape(len(terms), -1, channels)  # (K, positions, channels)
        _draw_channel_values(fig.add_subplot(below[column]), by_channel, terms, symbol, band,
                             style)


def _grid(heights: Sequence[float], columns: int | None, width: float):
    """``(columns, row heights, figsize, style)`` of a grid of cells of ``heights`` (inches)
    and ``width``, wrapped at ``columns`` a row and shrunk to fit within MAX_FIGSIZE."""
    if columns is not None and (isinstance(columns, bool) or not isinstance(columns, int)
                                or columns < 1):
        raise ValueError(f"columns must be a positive integer, got {columns!r}.")
    count = len(heights)
    columns = min(count, columns or min(MAX_COLUMNS, math.ceil(math.sqrt(count))))
    rows = [max(heights[start : start + columns]) for start in range(0, count, columns)]
    full = (columns * width, sum(rows))
    scale = min(1.0, MAX_FIGSIZE[0] / full[0], MAX_FIGSIZE[1] / full[1])
    return columns, rows, (full[0] * scale, full[1] * scale), _Style(scale)


def _view(view: str, layer: AgileLayer) -> str:
    if view not in VIEWS:
        raise unknown_value_error("view", view, VIEWS, ArgumentError)
    if view != "auto":
        return view
    return "channels" if layer.granularity in ("channel", "scalar") else "distribution"


def plot_activations(
    params: Any,
    layers: Mapping[str, LayerSpec] | nn.Module | None = None,
    *inputs: Any,
    columns: int | None = None,
    view: str = "auto",
    x_range: tuple[float, float] = (-4.0, 4.0),
    num_points: int = 201,
    band: tuple[float, float] = (10.0, 90.0),
    bins: int = 40,
    **model_kwargs: Any,
) -> Figure:
    """Each agile layer's learned activation with its ``a`` and ``b``, in a grid that wraps.

    Layers (see the module docstring): ``plot_activations(params, model, x)`` (linen: every
    agile layer ``model`` calls on ``x``; keyword arguments the options below do not take go
    to the model, e.g. ``train=False``), ``plot_activations(nnx_module)``, or
    ``plot_activations(params, {layer path: activation})``. Layers stacked by ``nnx.vmap``,
    ``nnx.scan`` or ``linen.scan`` (a leading layer axis on ``a`` and ``b``) get one cell per
    layer (``"blocks/act[0]"``, ...); :func:`plot_depth` draws them along depth in one figure.
    One cell per layer, ``columns``
    cells a row (default: about a square grid, at most MAX_COLUMNS), the figure within
    MAX_FIGSIZE however many layers (cells and fonts shrink). Each cell draws, by ``view``:

    - ``"distribution"``: the median over the layer's elements of the learned function, a
      band between the ``band`` percentiles, the plain activation dashed (for a combined
      layer its first activation, the function it started as); below, histograms of ``a``
      and ``b`` (one per term, stacked, for a combined layer), dotted at the initial value.
    - ``"channels"``: one curve per channel (the last axis of ``a``; for a per-element layer
      the median over the positions), coloured by channel index; below, ``a`` and ``b`` per
      channel as points in the same colours (with the ``band`` spread over positions for a
      per-element layer; one marker per term for a combined layer).
    - ``"auto"`` (default): ``"channels"`` for per-channel and scalar layers, else
      ``"distribution"`` (layers given by hand as activations have no known granularity:
      give an :class:`AgileLayer` or ``view="channels"`` for the per-channel view).

    Every axis is labelled (x, the learned function, count, a, b, channel).
    """
    cells = _cells(params, _resolve(params, layers, inputs, model_kwargs))
    views = [_view(view, cell[1]) for cell in cells]
    heights = [
        LAYER_CELL[1] + LAYER_CELL[2] * _panel_rows(cell[1], v)
        for cell, v in zip(cells, views, strict=True)
    ]
    cols, row_heights, figsize, style = _grid(heights, columns, LAYER_CELL[0])
    x = np.linspace(*x_range, num_points, dtype=np.float32)
    fig = new_figure(figsize=figsize, layout="constrained")
    grid = fig.add_gridspec(len(row_heights), cols, height_ratios=row_heights)
    for index, ((path, layer, a, b), cell_view) in enumerate(zip(cells, views, strict=True)):
        cell = grid[index // cols, index % cols]
        _draw_layer(fig, cell, path, layer, a, b, x, cell_view, band, bins, style)
    return fig
