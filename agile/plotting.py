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

import dataclasses
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from agile import labels
from agile.activations import (
    agile,
    as_plain_activation,
    combined,
    combined_names,
    initial_value,
    is_combined_name,
    plain_name,
)
from agile.errors import UserError, unknown_value_error
from agile.labels import AgileLayer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ActivationSpec = str | Callable | Sequence[str | Callable]
LayerSpec = ActivationSpec | AgileLayer
INSTALL_MATPLOTLIB = "pip install 'agile-activations[plot]' (or pip install matplotlib)"
VIEWS = ("auto", "distribution", "channels")
FIGURE_FORMATS = ("png", "pdf", "svg")
MAX_FIGSIZE = (16.0, 20.0)  # inches: no figure of this module is larger, however many layers
# Inches of one layer's cell at full size: its width, the curve's height, and the height of
# each row of panels below it (a and b side by side; a combined layer's histograms stack).
LAYER_CELL = (4.8, 2.5, 1.5)
MAX_COLUMNS = 6  # of the default grid
_MARKERS = ("o", "s", "^", "D", "v", "P")
# Metadata that would change a file's bytes from one matplotlib version or second to the next.
_NO_METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None},
    "svg": {"Creator": None, "Date": None},
}

__all__ = [
    "AgileLayer",
    "MatplotlibMissingError",
    "agile_layers",
    "feature_map_layers",
    "layer_parameters",
    "learned_curves",
    "new_figure",
    "plot_activations",
    "plot_parameter_maps",
    "save_figure",
]


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


def save_figure(
    fig: Figure, path: str | Path, *, dpi: float = 150, format: str | None = None
) -> Path:
    """Writes ``fig`` to ``path`` as PNG, PDF or SVG, by its suffix (or ``format``); returns it.

    The same figure gives the same bytes every time: no matplotlib version or date in the
    metadata, fixed SVG ids. ``dpi`` sets a PNG's resolution (and that of images inside a
    PDF or SVG). A ``format`` with a suffix-less ``path`` adds the suffix. Raises ValueError
    for an unknown format, a ``format`` that contradicts the suffix, or ``dpi <= 0``; OSError
    when the file cannot be written.
    """
    path = Path(path)
    suffix = path.suffix.lstrip(".").lower()
    if format is not None and suffix and suffix != format.lower():
        raise ValueError(f"save_figure: format {format!r} contradicts the suffix of {path}.")
    kind = (format or suffix).lower()
    if kind not in FIGURE_FORMATS:
        raise unknown_value_error("figure format", kind or path.name, FIGURE_FORMATS)
    if not dpi > 0:
        raise ValueError(f"save_figure: dpi must be positive, got {dpi!r}.")
    if not suffix:
        path = path.with_suffix(f".{kind}")
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "agile", "svg.id": None}):
        fig.savefig(path, dpi=dpi, format=kind, metadata=_NO_METADATA[kind])
    return path


# ---------------------------------------------------------------------------------------------
# Which layers, and their a and b.


def _as_arrays(params: Any) -> Any:
    """A linen dict as is; an ``nnx.State`` (or module) as its pure nested dict."""
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(params, nnx.Module):
        params = nnx.state(params, nnx.Param)
    if nnx is not None and isinstance(params, nnx.State):
        return nnx.to_pure_dict(params)
    return params


def _child(node: Any, key: str) -> Any:
    """``node[key]``; an NNX list's item (an int key) by its digits. KeyError if absent."""
    if isinstance(node, Mapping):
        if key in node:
            return node[key]
        if key.isdigit() and int(key) in node:
            return node[int(key)]
    raise KeyError(key)


def layer_parameters(params: Any, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` of the layer at path ``layer`` (``"conv_act_0"``, ``"block/act"``; ``""``:
    ``params`` is one layer's own) as float32 numpy arrays."""
    node = _as_arrays(params)
    for key in layer.split("/") if layer else ():
        try:
            node = _child(node, key)
        except KeyError:
            raise ValueError(f"No layer {layer!r} in params (missing {key!r}).") from None
    if not isinstance(node, Mapping) or not {"a", "b"} <= set(node):
        raise ValueError(f"Layer {layer!r} has no parameters a and b.")
    return np.asarray(node["a"], np.float32), np.asarray(node["b"], np.float32)


def _nnx_granularity(layer: Any) -> str:
    """How an ``agile.nnx`` layer's ``a`` and ``b`` are laid out (see :mod:`agile.nnx`)."""
    if layer.feature_axes is not None:
        return "channel"
    return "element" if layer.shape else "scalar"


def _nnx_layers(module: Any) -> dict[str, AgileLayer]:
    from flax import nnx

    import agile.nnx as agile_nnx

    layers = {}
    for path, sub in nnx.iter_modules(module):
        if isinstance(sub, agile_nnx.CombinedAgile):
            fns = tuple(sub.fns)
        elif isinstance(sub, agile_nnx.Agile):
            fns = (sub.fn,)
        else:
            continue
        layers["/".join(map(str, path))] = AgileLayer(fns, _nnx_granularity(sub))
    return layers


def _nnx_state_error(state: Any) -> ValueError:
    from flax import nnx

    found = sorted(
        {"/".join(map(str, path[:-1])) for path, leaf in nnx.to_flat_state(state)
         if labels.is_agile_param(path, leaf)}
    )
    return ValueError(
        f"An nnx.State marks its agile layers' a and b ({', '.join(found) or 'none found'}) "
        "but not which activation they compute: pass the module itself, or "
        "{layer: activation}."
    )


def agile_layers(
    params: Any, model: nn.Module | None = None, *inputs: Any, **kwargs: Any
) -> dict[str, AgileLayer]:
    """``{layer path: AgileLayer}`` of every agile layer, in the order the model has them.

    NNX: ``agile_layers(module)``, the module's :class:`agile.nnx.Agile` and
    :class:`agile.nnx.CombinedAgile` layers (an ``nnx.State`` alone does not say which
    activation a layer computes: ValueError). Linen: ``agile_layers(params, model, x)``,
    the ``Agile``/``CombinedAgile`` layers ``model`` calls on the example input(s), found
    by :func:`agile.labels.agile_layers` without computing; each must have its ``a`` and
    ``b`` in ``params``. Raises ValueError when the model or its inputs are missing.
    """
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(params, nnx.Module):
        if model is not None or inputs or kwargs:
            raise ValueError("agile_layers(nnx module) takes no model or inputs.")
        return _nnx_layers(params)
    if nnx is not None and isinstance(params, nnx.State):
        raise _nnx_state_error(params)
    if not isinstance(model, nn.Module) or not (inputs or kwargs):
        raise ValueError(
            "agile_layers(params) of a linen model needs the model and an example input, "
            "agile_layers(params, model, x), to find its agile layers: a linen param dict "
            "carries no layer types."
        )
    found = labels.agile_layers(model, *inputs, **kwargs)
    layers = {"/".join(path): layer for path, layer in found.items()}
    for path in layers:
        try:
            layer_parameters(params, path)
        except ValueError as err:
            raise ValueError(
                f"params has no a, b for the model's agile layer {path!r} ({err}): pass "
                "model.init(...)['params'] of this model."
            ) from None
    return layers


def _terms(spec: ActivationSpec) -> tuple[Callable, ...]:
    """The activation(s) of one layer: one for an agile layer, K for a combined one."""
    if isinstance(spec, AgileLayer):
        spec = spec.fns
    if isinstance(spec, str):
        if is_combined_name(spec):
            return tuple(as_plain_activation(name) for name in combined_names(spec))
        return (as_plain_activation(plain_name(spec)),)
    if callable(spec):
        return (spec,)
    return tuple(as_plain_activation(fn) for fn in spec)


def _as_layer(spec: LayerSpec) -> AgileLayer:
    return spec if isinstance(spec, AgileLayer) else AgileLayer(_terms(spec))


def _term_shape(a: np.ndarray, terms: Sequence[Callable]) -> tuple[int, ...]:
    """The shape of one term's ``a``: a combined layer's carry a leading axis K."""
    return a.shape[1:] if len(terms) > 1 else a.shape


def feature_map_layers(params: Any, layers: Mapping[str, LayerSpec]) -> list[str]:
    """The layers of ``layers`` whose ``a`` and ``b`` lie over a feature map, in order.

    Those with one pair per element of an ``(H, W, C)`` map (per term), the ones
    :func:`plot_parameter_maps` draws; per-channel, per-unit (dense) and scalar layers are
    left out.
    """
    maps = []
    for path, spec in layers.items():
        layer = _as_layer(spec)
        a, _ = layer_parameters(params, path)
        if layer.granularity in (None, "element") and len(_term_shape(a, _terms(layer))) == 3:
            maps.append(path)
    return maps


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


@dataclasses.dataclass(frozen=True)
class _Style:
    """Font sizes of a figure, smaller when its cells had to shrink to fit MAX_FIGSIZE."""

    scale: float = 1.0

    def size(self, points: float) -> float:
        return max(5.0, points * self.scale)

    def axes(self, ax, title: str, xlabel: str, ylabel: str, title_points: float = 9) -> None:
        """Title, axis labels and tick labels of ``ax`` at this style's sizes."""
        ax.set_title(title, fontsize=self.size(title_points))
        ax.set_xlabel(xlabel, fontsize=self.size(8))
        ax.set_ylabel(ylabel, fontsize=self.size(8))
        ax.tick_params(labelsize=self.size(7))
        if title_points < 9:  # a small panel: fewer ticks, so their labels never overlap
            ax.locator_params(axis="x", nbins=4)


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
        title = f"{label}: {per_term[k].size} values; dotted: initial"
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
    style.axes(ax, f"{symbol} per channel{spread}; dotted: initial", "channel", symbol,
               title_points=7)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))  # channels are whole
    ax.set_xlim(-0.5 - 0.02 * channels, channels - 0.5 + 0.02 * channels)


def _panel_rows(layer: AgileLayer, view: str) -> int:
    """Rows of panels below a layer's curve: one, or one per term of a combined layer's
    histograms."""
    return len(_terms(layer)) if view == "distribution" else 1


def _draw_layer(fig, cell, path, layer, params, x, view, band, bins, style):
    """One layer's panels in grid cell ``cell``: its curve(s) above, its a and b below."""
    a, b = layer_parameters(params, path)
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


def _resolve(params: Any, layers: Any, inputs: tuple) -> dict[str, AgileLayer]:
    """The layers to draw: given by hand (a mapping), or every agile layer found."""
    if isinstance(layers, Mapping):
        if inputs:
            raise ValueError("plot_activations(params, {layer: activation}) takes no inputs.")
        if not layers:
            raise ValueError("plot_activations needs at least one layer in activations.")
        return {path: _as_layer(spec) for path, spec in layers.items()}
    found = agile_layers(params) if layers is None else agile_layers(params, layers, *inputs)
    if not found:
        raise ValueError("plot_activations needs at least one layer: the model has no agile "
                         "layers.")
    return found


def _view(view: str, layer: AgileLayer) -> str:
    if view not in VIEWS:
        raise unknown_value_error("view", view, VIEWS)
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
) -> Figure:
    """Each agile layer's learned activation with its ``a`` and ``b``, in a grid that wraps.

    Layers (see the module docstring): ``plot_activations(params, model, x)`` (linen: every
    agile layer ``model`` calls on ``x``), ``plot_activations(nnx_module)``, or
    ``plot_activations(params, {layer path: activation})``. One cell per layer, ``columns``
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
    chosen = _resolve(params, layers, inputs)
    views = [_view(view, layer) for layer in chosen.values()]
    heights = [
        LAYER_CELL[1] + LAYER_CELL[2] * _panel_rows(layer, v)
        for layer, v in zip(chosen.values(), views, strict=True)
    ]
    cols, row_heights, figsize, style = _grid(heights, columns, LAYER_CELL[0])
    x = np.linspace(*x_range, num_points, dtype=np.float32)
    fig = new_figure(figsize=figsize, layout="constrained")
    grid = fig.add_gridspec(len(row_heights), cols, height_ratios=row_heights)
    for index, ((path, layer), cell_view) in enumerate(zip(chosen.items(), views, strict=True)):
        cell = grid[index // cols, index % cols]
        _draw_layer(fig, cell, path, layer, params, x, cell_view, band, bins, style)
    return fig


def plot_parameter_maps(params: Any, layer: str, *, columns: int = 8) -> Figure:
    """``a`` and ``b`` of a per-element conv layer over the feature-map grid, per channel.

    The layer's ``a`` and ``b`` must have shape ``(H, W, C)`` (granularity
    ``"element"`` after a conv) or ``(K, H, W, C)`` (combined). One block of
    images per parameter (and term), ``columns`` channels a row, with one colour
    scale and colour bar (labelled with the parameter) per block, diverging from the
    parameter's default initial value (:func:`initial_value`; white = unchanged). The
    figure stays within MAX_FIGSIZE however many channels.
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
    width = 1.5 * min(channels, columns) + 1
    height = 1.6 * rows_per_block * len(blocks)
    scale = min(1.0, MAX_FIGSIZE[0] / width, MAX_FIGSIZE[1] / height)
    style = _Style(scale)
    fig = new_figure(figsize=(width * scale, height * scale), layout="constrained")
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
                ax.set_title(f"channel {c}", fontsize=style.size(7))
        bar = subfig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
        bar.set_label(label, fontsize=style.size(8))
        bar.ax.tick_params(labelsize=style.size(7))
        subfig.suptitle(f"{layer}: {label} (white: its initial value {start:g})",
                        fontsize=style.size(9))
    return fig
