"""The figures of :mod:`agile.plotting` beyond its grid of layers: :func:`plot_depth` (``a``
and ``b`` against layer depth) and :func:`plot_parameter_maps` (per-element ``a``, ``b`` over
a feature map). Use them as ``agile.plotting.plot_depth``, ``agile.plotting.plot_parameter_maps``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from agile._plot_base import (
    _MARKERS,
    MAX_FIGSIZE,
    LayerSpec,
    _cells,
    _resolve,
    _Style,
    _terms,
    layer_parameters,
    new_figure,
)
from agile.activations import initial_value

if TYPE_CHECKING:
    import flax.linen as nn
    from matplotlib.figure import Figure


def _depth_series(cells: list[tuple], symbol: str, band: tuple[float, float]) -> dict:
    """``{term k: (depths, low, median, high)}`` of ``symbol`` (``"a"``/``"b"``) over cells."""
    series: dict[int, list] = {}
    for depth, (_, layer, a, b) in enumerate(cells):
        values = a if symbol == "a" else b
        terms = _terms(layer)
        per_term = values[None] if len(terms) == 1 else values
        for k in range(len(terms)):
            low, median, high = np.percentile(per_term[k].ravel(), [band[0], 50, band[1]])
            series.setdefault(k, []).append((depth, low, median, high))
    return {k: tuple(np.array(column) for column in zip(*rows, strict=True))
            for k, rows in series.items()}


def plot_depth(
    params: Any,
    layers: Mapping[str, LayerSpec] | nn.Module | None = None,
    *inputs: Any,
    band: tuple[float, float] = (10.0, 90.0),
    **model_kwargs: Any,
) -> Figure:
    """``a`` and ``b`` of every agile layer against its depth: a compact figure for a deep model.

    Layers as for :func:`agile.plotting.plot_activations` (``plot_depth(params, model, x,
    train=False)`` for linen, ``plot_depth(nnx_module)``, or a ``{layer: activation}``
    mapping), in the model's order; a stack of layers (``nnx.vmap``, ``nnx.scan``,
    ``linen.scan``) counts one depth per layer. Two panels, ``a`` above ``b``: per depth the
    median over the layer's elements (a line with markers; one per term of a combined layer)
    in a band between the ``band`` percentiles (10-90% by default), dotted at the initial
    value. The x axis names each depth's layer.
    """
    cells = _cells(params, _resolve(params, layers, inputs, model_kwargs))
    width = min(MAX_FIGSIZE[0], max(4.8, 1.2 + 0.3 * len(cells)))
    fig = new_figure(figsize=(width, 4.6), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    style = _Style()
    combined = any(len(_terms(cell[1])) > 1 for cell in cells)
    for ax, symbol in zip(axes, ("a", "b"), strict=True):
        for k, (depths, low, median, high) in _depth_series(cells, symbol, band).items():
            label = f"{symbol}[{k}]" if combined else symbol
            ax.fill_between(depths, low, high, alpha=0.25)
            ax.plot(depths, median, marker=_MARKERS[k % len(_MARKERS)], ms=4, lw=1.5,
                    label=f"{label} median")
            ax.axhline(initial_value(symbol, k), color="k", ls=":", lw=1)
        title = (f"{symbol} by depth: median over each layer's elements, "
                 f"{band[0]:g}-{band[1]:g}th percentile band; dotted: initial")
        style.axes(ax, title, "", symbol, title_points=8)
        ax.legend(fontsize=style.size(7))
    axes[1].set_xticks(range(len(cells)), [cell[0] for cell in cells], rotation=60,
                       ha="right", fontsize=style.size(7))
    axes[1].set_xlabel("layer (depth)", fontsize=style.size(8))
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
