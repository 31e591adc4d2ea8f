"""``agile.plotting`` understands depth (#27 F4, F5): stacked layers (``nnx.vmap``/``nnx.scan``,
``linen.scan``) get one cell per layer, never merged as positions; ``plot_depth`` draws a and b
against depth; titles do not overlap; model keyword arguments pass through; wrong argument types
are one clear error."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from agile_testing import compiled_init
from flax import nnx

matplotlib = pytest.importorskip("matplotlib")  # the [plot] extra; the floors venv has none
matplotlib.use("Agg")

import agile.nnx as agile_nnx  # noqa: E402  (after choosing the backend)
from agile import Agile, labels, plotting  # noqa: E402

LAYERS = 4


class _Block(nnx.Module):
    """A transformer's MLP: linear -> agile (per feature) -> linear."""

    def __init__(self, rngs):
        self.up = nnx.Linear(8, 16, rngs=rngs)
        self.act = agile_nnx.Agile("relu", 16)
        self.down = nnx.Linear(16, 8, rngs=rngs)

    def __call__(self, x):
        return x + self.down(self.act(self.up(x)))


class _Transformer(nnx.Module):
    """``LAYERS`` blocks stacked by ``nnx.vmap`` and run with ``nnx.scan`` (flax's pattern)."""

    def __init__(self, rngs):
        @nnx.vmap(in_axes=0, out_axes=0)
        def make(key):
            return _Block(nnx.Rngs(key))

        self.blocks = make(jax.random.split(rngs.params(), LAYERS))
        # as if trained: each layer's a a little further from 1 than the one before
        self.blocks.act.a[...] = 1.0 + 0.2 * jnp.arange(LAYERS)[:, None] * jnp.ones((1, 16))

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def run(x, block):
            return block(x)

        return run(x, self.blocks)


def _curve_titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_ylabel().startswith("a·f")]


@pytest.mark.slow
def test_a_stacked_nnx_transformer_has_one_cell_per_layer():
    """F4: ``a.shape == (4, 16)`` is four layers, not one layer at four positions."""
    model = _Transformer(nnx.Rngs(0))
    assert model(jnp.ones((2, 8))).shape == (2, 8)
    assert model.blocks.act.a.shape == (LAYERS, 16)
    fig = plotting.plot_activations(model)
    titles = _curve_titles(fig)
    assert titles == [f"blocks/act[{i}]: relu (16 channels)" for i in range(LAYERS)]
    assert not any("positions" in title for title in titles)


def test_plot_depth_draws_median_and_band_of_a_and_b_against_depth():
    """The compact figure: a above b, one point per layer, median line and 10-90% band."""
    model = _Transformer(nnx.Rngs(0))
    fig = plotting.plot_depth(model)
    a_panel, b_panel = fig.axes
    np.testing.assert_allclose(a_panel.lines[0].get_xdata(), np.arange(LAYERS))
    np.testing.assert_allclose(a_panel.lines[0].get_ydata(), 1.0 + 0.2 * np.arange(LAYERS),
                               rtol=1e-6)
    assert len(a_panel.collections) == 1  # the band
    assert [t.get_text() for t in b_panel.get_xticklabels()] == [
        f"blocks/act[{i}]" for i in range(LAYERS)]
    assert a_panel.get_title().startswith("a by depth: median over each layer's elements, "
                                          "10-90th percentile band")
    assert b_panel.get_xlabel() == "layer (depth)" and a_panel.get_ylabel() == "a"


class _ScanBody(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        return Agile("tanh", name="act")(nn.Dense(4, name="dense")(x)), None


class _Scanned(nn.Module):
    """Three linen layers stacked by ``nn.scan``, then a BatchNorm called with ``train``."""

    @nn.compact
    def __call__(self, x, train: bool):
        stack = nn.scan(_ScanBody, variable_axes={"params": 0}, split_rngs={"params": True},
                        length=3)
        x, _ = stack(name="stack")(x, None)
        x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
        return Agile("relu", name="head")(x)


@pytest.mark.slow
def test_linen_scan_layers_and_model_keyword_arguments_pass_through():
    """F4 for linen.scan, and F5: ``train=False`` reaches the model from every entry point."""
    model, x = _Scanned(), jnp.ones((2, 4))
    params = compiled_init(model, jax.random.key(0), x, train=False)["params"]
    assert params["stack"]["act"]["a"].shape == (3, 4)
    fig = plotting.plot_activations(params, model, x, train=False)
    assert [t.split(":")[0] for t in _curve_titles(fig)] == [
        "stack/act[0]", "stack/act[1]", "stack/act[2]", "head"]
    assert len(plotting.plot_depth(params, model, x, train=False).axes[0].lines[0]
               .get_xdata()) == 4
    assert list(plotting.agile_layers(params, model, x, train=False)) == ["stack/act", "head"]
    # agile.labels.agile_layers' result (tuple paths) is accepted as the layers to draw.
    found = labels.agile_layers(model, x, train=False)
    assert len(_curve_titles(plotting.plot_activations(params, found))) == 4


@pytest.mark.parametrize("call, message", [
    (lambda p, m, x: plotting.plot_activations(m, p, x),
     r"The first argument is the parameters, model.init\(...\)\['params'\], then the linen "
     r"model and an example input"),
    (lambda p, m, x: plotting.plot_activations(p, _Scanned, x),
     r"The second argument is the linen model instance .* got a class"),
    (lambda p, m, x: plotting.plot_depth(p, "stack/act", x),
     r"The second argument is the linen model instance .* got a str"),
    (lambda p, m, x: plotting.plot_activations([p], m, x),
     r"Expected linen params \(a dict\), an nnx.Module or an nnx.State, got list"),
])
def test_a_wrong_argument_type_is_one_clear_error(call, message):
    model, x = _Scanned(), jnp.ones((2, 4))
    params = compiled_init(model, jax.random.key(0), x, train=False)["params"]
    with pytest.raises(TypeError, match=message) as error:
        call(params, model, x)
    assert "\n" not in str(error.value)


def _overlapping_titles(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [(ax.get_title(), ax.title.get_window_extent(renderer)) for ax in fig.axes
             if ax.get_title()]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
            if box_a.overlaps(box_b)]


@pytest.mark.parametrize("layer, view", [
    ({"act": {"a": np.ones(3, np.float32), "b": np.zeros(3, np.float32)}}, "channels"),
    ({"act": {"a": np.ones((4, 4, 3), np.float32), "b": np.zeros((4, 4, 3), np.float32)}},
     "channels"),
    ({"act": {"a": np.ones((4, 4, 3), np.float32), "b": np.zeros((4, 4, 3), np.float32)}},
     "distribution"),
])
def test_titles_of_a_one_cell_figure_do_not_overlap(layer, view):
    """F4: the a and b panels' titles sat on top of each other in one-cell figures."""
    fig = plotting.plot_activations(layer, {"act": "agile_relu"}, view=view)
    assert _overlapping_titles(fig) == []
