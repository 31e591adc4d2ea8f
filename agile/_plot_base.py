"""The ground of :mod:`agile.plotting` (its one public face): figures without pyplot, files,
which layers to draw and their ``a`` and ``b``, font sizes. Shared by the activation grid
(:mod:`agile.plotting`) and the other figures (:mod:`agile._plot_figures`).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import numpy as np

import agile.labels as labels
from agile.activations import (
    as_plain_activation,
    combined_names,
    is_combined_name,
    plain_name,
)
from agile.errors import ArgumentError, UserError, unknown_value_error
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
        raise unknown_value_error("figure format", kind or path.name, FIGURE_FORMATS, ArgumentError)
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


def _check_types(params: Any, model: Any) -> None:
    """TypeError for arguments of the wrong kind (swapped, a class for an instance, ...)."""
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(params, (nnx.Module, nnx.State)):
        return
    if isinstance(params, nn.Module) or (isinstance(params, type)
                                         and issubclass(params, (nn.Module,))):
        raise TypeError(
            "The first argument is the parameters, model.init(...)['params'], then the linen "
            f"model and an example input: (params, model, x); got the model {params!r:.60}."
        )
    if not isinstance(params, Mapping):
        raise TypeError(
            "Expected linen params (a dict), an nnx.Module or an nnx.State, got "
            f"{type(params).__name__}."
        )
    if model is not None and not isinstance(model, (nn.Module, Mapping)):
        what = "a class" if isinstance(model, type) else f"a {type(model).__name__}"
        raise TypeError(
            "The second argument is the linen model instance (with an example input after it) "
            f"or a {{layer path: activation}} mapping, got {what} ({model!r:.60})."
        )


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
        return {"/".join(map(str, path)): layer
                for path, layer in labels.agile_layers(params).items()}
    if nnx is not None and isinstance(params, nnx.State):
        raise _nnx_state_error(params)
    _check_types(params, model)
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


def _resolve(params: Any, layers: Any, inputs: tuple, kwargs: dict) -> dict[str, AgileLayer]:
    """The layers to draw: given by hand (a mapping), or every agile layer found."""
    _check_types(params, None if isinstance(layers, Mapping) else layers)
    if isinstance(layers, Mapping):
        if inputs or kwargs:
            raise ValueError("plot_activations(params, {layer: activation}) takes no inputs.")
        if not layers:
            raise ValueError("plot_activations needs at least one layer in activations.")
        return {
            key if isinstance(key, str) else "/".join(map(str, key)): _as_layer(spec)
            for key, spec in layers.items()
        }
    if layers is None:
        found = agile_layers(params, None, *inputs, **kwargs)
    else:
        found = agile_layers(params, layers, *inputs, **kwargs)
    if not found:
        raise ValueError("plot_activations needs at least one layer: the model has no agile "
                         "layers.")
    return found


def _cells(params: Any, chosen: Mapping[str, AgileLayer]) -> list[tuple]:
    """``(name, layer, a, b)`` per drawn cell: one per layer, and one per layer of a stack
    (``nnx.vmap`` / ``scan``: ``"blocks/act[2]"``), never one for a stack's layers merged."""
    cells = []
    for path, layer in chosen.items():
        a, b = layer_parameters(params, path)
        depth = layer.depth(a.shape)
        if not depth:
            cells.append((path, layer, a, b))
            continue
        for index in np.ndindex(*depth):
            cells.append((f"{path}[{', '.join(map(str, index))}]", layer, a[index], b[index]))
    return cells
