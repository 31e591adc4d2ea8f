"""``agile.plotting``: figures render to PNG (Agg), draw what was learned, and refuse bad input."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from agile_testing import REPO_ROOT, compiled_init, first_fast

matplotlib.use("Agg")

from agile import plotting  # noqa: E402  (after choosing the backend)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _params():
    """A paper-CNN-like tree: per-element conv layers (one combined), a dense layer, a weight."""
    rng = np.random.default_rng(0)

    def normal(shape, mean=0.0):
        return (mean + 0.3 * rng.normal(size=shape)).astype(np.float32)

    return {
        "conv_0": {"kernel": normal((3, 3, 1, 3))},
        "conv_act_0": {"a": normal((6, 6, 3), 1.0), "b": normal((6, 6, 3))},
        "block": {"mix": {"a": normal((2, 4, 4, 3), 0.5), "b": normal((2, 4, 4, 3))}},
        "hidden_act": {"a": normal((5,), 1.0), "b": normal((5,))},
    }


def _save_png(fig, tmp_path, name):
    path = tmp_path / name
    fig.savefig(path, dpi=40)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 2000
    return path


@pytest.mark.slow
def test_plot_activations_draws_median_band_plain_curve_and_histograms(tmp_path):
    params = _params()
    layers = {
        "conv_act_0": "agile_relu",
        "block/mix": "combined:relu,sigmoid",
        "hidden_act": np.tanh,
    }
    fig = plotting.plot_activations(params, layers, x_range=(-2, 2), num_points=21, band=(5, 95))
    _save_png(fig, tmp_path, "activations.png")
    axes = {ax.get_title(): ax for ax in fig.axes}
    curve = axes["conv_act_0: relu (108 units)"]
    x = np.linspace(-2, 2, 21, dtype=np.float32)
    a, b = params["conv_act_0"]["a"].reshape(-1, 1), params["conv_act_0"]["b"].reshape(-1, 1)
    median = curve.lines[0].get_ydata()
    np.testing.assert_allclose(median, np.median(a * np.maximum(x - b, 0), axis=0), rtol=1e-5)
    np.testing.assert_allclose(curve.lines[1].get_ydata(), np.maximum(x, 0))  # plain, dashed
    assert curve.lines[1].get_linestyle() == "--"
    assert "block/mix: relu + sigmoid (48 units)" in axes
    for title in (
        "a[0] (relu): 48 values",
        "a[1] (sigmoid): 48 values",
        "b[1] (sigmoid): 48 values",
    ):
        assert f"{title};\ndotted: initial" in axes, title
    assert axes["a[1] (sigmoid): 48 values;\ndotted: initial"].lines[0].get_xdata()[0] == 0.0
    hidden_b = [ax for title, ax in axes.items() if title.startswith("b: 5 values")]
    assert sum(p.get_height() for p in hidden_b[0].patches) == 5  # histogram of hidden_act's b


def test_learned_curves_of_a_combined_layer():
    a = np.array([[1.0, 2.0], [0.5, 0.0]], np.float32)  # (K=2, elements=2)
    b = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    x = np.array([-1.0, 0.0, 2.0], np.float32)
    curves = plotting.learned_curves(a, b, plotting._terms("combined:relu,tanh"), x)
    expected = [
        1.0 * np.maximum(x, 0) + 0.5 * np.tanh(x - 1),
        2.0 * np.maximum(x - 1, 0) + 0.0 * np.tanh(x),
    ]
    np.testing.assert_allclose(curves, expected, rtol=1e-6)


def test_plot_parameter_maps_per_channel_and_per_term(tmp_path):
    params = _params()
    fig = plotting.plot_parameter_maps(params, "conv_act_0", columns=2)
    _save_png(fig, tmp_path, "maps.png")
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 6  # a and b, 3 channels each
    np.testing.assert_array_equal(images[2].get_array(), params["conv_act_0"]["a"][..., 2])
    combined = plotting.plot_parameter_maps(params, "block/mix")
    titles = [sub._suptitle.get_text() for sub in combined.subfigs]
    assert titles == [
        f"block/mix: {p} (white: its initial value {v})"
        for p, v in (("a[0]", 1), ("a[1]", 0), ("b[0]", 0), ("b[1]", 0))
    ]


def test_nnx_state_is_accepted(tmp_path):
    from flax import nnx

    import agile.nnx

    model = agile.nnx.Agile.for_input("sigmoid", (1, 4, 4, 2), "element")
    _save_png(plotting.plot_activations(nnx.state(model), {"": "sigmoid"}), tmp_path, "n.png")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: plotting.plot_activations(p, {"conv_9": "relu"}), "No layer 'conv_9'"),
        (lambda p: plotting.plot_activations(p, {"conv_0": "relu"}), "has no parameters a and b"),
        (lambda p: plotting.plot_activations(p, {}), "at least one layer"),
        (lambda p: plotting.plot_activations(p, {"conv_act_0": "swish"}), "Unknown activation"),
        (
            lambda p: plotting.plot_activations(p, {"conv_act_0": ("relu", "tanh")}),
            r"combining 2 activations needs a of shape \(K=2",
        ),
        (lambda p: plotting.plot_parameter_maps(p, "hidden_act"), r"shape \(5,\)"),
    ],
)
def test_bad_input_is_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(_params())


@pytest.mark.slow
def test_import_agile_loads_neither_matplotlib_nor_flax_nnx():
    """agile.nnx and agile.plotting load on first use; matplotlib only when a figure is drawn."""
    code = (
        "import sys, agile; bad = {'matplotlib', 'flax.nnx'} & set(sys.modules); "
        "assert not bad, bad; agile.nnx.Agile; agile.plotting.plot_activations; "
        "assert {'agile.plotting', 'flax.nnx'} <= set(sys.modules); "
        "assert 'matplotlib' not in sys.modules; agile.plotting.new_figure(); "
        "assert 'matplotlib' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---------------------------------------------------------------------------------------------
# Automatic layer selection, the wrapping grid, the per-channel view, files.


def _linen_net():
    """A linen model calling agile layers of each granularity, nested and combined, a plain
    activation, and a parameter of its own named ``a`` (not an agile layer's)."""
    import flax.linen as nn

    import agile

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            return agile.Agile("silu", granularity="scalar", name="inner")(x)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(3, (3, 3), name="conv")(x)
            x = agile.Agile("relu", granularity="element", name="act_el")(x)
            x = agile.Agile(jnp.tanh, name="act_ch")(x)  # per channel, the default
            x = agile.CombinedAgile(("relu", "sigmoid"), name="mix")(x)
            x = Block(name="block")(jax.nn.gelu(x))
            return x * self.param("a", nn.initializers.ones, (3,))

    return Net()


def _moved(params, seed=1):
    """``params`` with every leaf moved off its initial value (deterministically)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda leaf: (np.asarray(leaf) + 0.3 * rng.normal(size=np.shape(leaf))).astype(np.float32),
        params,
    )


def test_labels_agile_layers_lists_a_linen_models_layers_in_call_order():
    import flax.linen as nn

    from agile.labels import AgileLayer, agile_layer_paths, agile_layers

    model, x = _linen_net(), jnp.zeros((1, 4, 4, 1))
    layers = agile_layers(model, x)
    assert list(layers) == [("act_el",), ("act_ch",), ("mix",), ("block", "inner")]
    assert layers[("act_el",)] == AgileLayer(("relu",), "element")
    assert layers[("act_ch",)] == AgileLayer((jnp.tanh,), "channel")
    assert layers[("mix",)] == AgileLayer(("relu", "sigmoid"), "channel")
    assert layers[("block", "inner")] == AgileLayer(("silu",), "scalar")
    assert agile_layer_paths(model, x) == frozenset(layers)  # the same layers, as before
    assert agile_layers(nn.Dense(2), jnp.zeros((1, 3))) == {}


def test_plotting_agile_layers_of_linen_nnx_and_what_it_refuses():
    from flax import nnx

    import agile.nnx

    model, x = _linen_net(), jnp.zeros((1, 4, 4, 1))
    params = compiled_init(model, jax.random.key(0), x)["params"]
    found = plotting.agile_layers(params, model, x)
    assert list(found) == ["act_el", "act_ch", "mix", "block/inner"]

    class Net(nnx.Module):
        def __init__(self):
            self.layers = nnx.List([agile.nnx.Agile("relu", 4), agile.nnx.Agile("tanh", (2, 4))])
            self.mix = agile.nnx.CombinedAgile(("relu", "tanh"), ())
            self.dense = nnx.Linear(2, 2, rngs=nnx.Rngs(0))

    nnx_layers = plotting.agile_layers(Net())
    assert nnx_layers == {
        "layers/0": plotting.AgileLayer(("relu",), "channel"),
        "layers/1": plotting.AgileLayer(("tanh",), "element"),
        "mix": plotting.AgileLayer(("relu", "tanh"), "scalar"),
    }
    with pytest.raises(ValueError, match=r"marks its agile layers' a and b \(layers/0, "
                       r"layers/1, mix\) but not which activation"):
        plotting.agile_layers(nnx.state(Net(), nnx.Param))
    with pytest.raises(ValueError, match="needs the model and an example input"):
        plotting.agile_layers(params)
    del params["mix"]
    with pytest.raises(ValueError, match="params has no a, b for the model's agile layer 'mix'"):
        plotting.agile_layers(params, model, x)


def _curve_axes(fig):
    """The axes that draw learned functions (their y axis is one), in drawing order."""
    return [ax for ax in fig.axes if ax.get_xlabel() == "x"]


def _cell(ax):
    """(row, column) of the layer cell ``ax`` sits in."""
    spec = ax.get_subplotspec().get_topmost_subplotspec()
    return spec.rowspan.start, spec.colspan.start


@pytest.mark.slow
def test_plot_activations_of_a_linen_model_draws_each_layer_by_its_granularity(tmp_path):
    model, x = _linen_net(), jnp.zeros((1, 4, 4, 1))
    params = _moved(compiled_init(model, jax.random.key(0), x)["params"])
    fig = plotting.plot_activations(params, model, x, x_range=(-2, 2), num_points=9)
    _save_png(fig, tmp_path, "linen.png")
    curves = _curve_axes(fig)
    assert [ax.get_title() for ax in curves] == [
        "act_el: relu (48 units)",  # per element: median, band, histograms
        "act_ch: tanh (3 channels)",  # per channel: a curve and a point per channel
        "mix: relu + sigmoid (3 channels)",
        "block/inner: silu (one a and b for the layer)",
    ]
    assert [_cell(ax) for ax in curves] == [(0, 0), (0, 1), (1, 0), (1, 1)]  # 2 x 2, wrapped
    assert len(fig.axes) == 4 * 3  # a curve, an a and a b panel per layer
    for ax in fig.axes:  # every axis labelled
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
    grid = np.linspace(-2, 2, 9, dtype=np.float32)
    a, b = params["act_ch"]["a"], params["act_ch"]["b"]
    channel_lines = curves[1].lines[:3]
    for c, line in enumerate(channel_lines):
        np.testing.assert_allclose(line.get_ydata(), a[c] * np.tanh(grid - b[c]), rtol=1e-5)
    assert curves[1].lines[3].get_linestyle() == "--"  # the plain tanh
    panels = [ax for ax in fig.axes if ax.get_xlabel() == "channel"]
    assert len(panels) == 6  # a and b of the three per-channel (and scalar) layers
    a_panel = [ax for ax in fig.axes if ax.get_ylabel() == "a" and _cell(ax) == (0, 1)][0]
    assert a_panel.get_title() == "a per channel;\ndotted: initial"
    np.testing.assert_allclose(a_panel.collections[0].get_offsets(), np.c_[np.arange(3), a])
    assert a_panel.lines[0].get_ydata()[0] == 1.0  # dotted at a's initial value
    mix_b = [ax for ax in panels if ax.get_ylabel() == "b" and _cell(ax) == (1, 0)][0]
    offsets = [c.get_offsets() for c in mix_b.collections]
    np.testing.assert_allclose(offsets[0][:, 1], params["mix"]["b"][0])  # one marker per term
    np.testing.assert_allclose(offsets[1][:, 1], params["mix"]["b"][1])
    legend = [t.get_text() for t in curves[2].get_legend().get_texts()]
    assert legend == ["one per channel (colour: index)", "relu (at init)", "a[0], b[0]: relu",
                      "a[1], b[1]: sigmoid"]


@pytest.mark.slow
def test_plot_activations_of_a_large_nnx_model_wraps_within_the_maximum_size(tmp_path):
    from flax import nnx

    import agile.nnx

    class Deep(nnx.Module):  # 20 agile layers, per channel, per element and combined
        def __init__(self):
            self.blocks = nnx.List([
                agile.nnx.CombinedAgile(("relu", "tanh"), 3) if i % 5 == 4
                else agile.nnx.Agile("relu", (2, 2, 3) if i % 5 == 2 else 3)
                for i in range(20)
            ])

    model = Deep()
    fig = plotting.plot_activations(model, num_points=5)
    curves = _curve_axes(fig)
    assert [ax.get_title().split(":")[0] for ax in curves] == [f"blocks/{i}" for i in range(20)]
    assert [_cell(ax) for ax in curves] == [(i // 5, i % 5) for i in range(20)]  # 5 a row
    width, height = fig.get_size_inches()
    assert width <= plotting.MAX_FIGSIZE[0] + 1e-6 and height <= plotting.MAX_FIGSIZE[1] + 1e-6
    assert width == pytest.approx(plotting.MAX_FIGSIZE[0])  # 5 cells of 4.8 in, shrunk to fit
    assert curves[2].get_title() == "blocks/2: relu (12 units)"  # per element: distribution
    assert len(curves[4].lines) == 3 + 1  # per channel: 3 channels and the plain relu
    wide = plotting.plot_activations(model, columns=8, num_points=5)
    assert [_cell(ax) for ax in _curve_axes(wide)][7:9] == [(0, 7), (1, 0)]
    assert wide.get_size_inches()[0] == pytest.approx(plotting.MAX_FIGSIZE[0])
    _save_png(fig, tmp_path, "deep.png")


def test_the_channels_view_of_a_per_element_layer_gives_medians_per_channel():
    params = _params()
    fig = plotting.plot_activations(params, {"conv_act_0": "agile_relu"}, view="channels",
                                    x_range=(-2, 2), num_points=5)
    curve = _curve_axes(fig)[0]
    assert curve.get_title() == "conv_act_0: relu (3 channels, median over 36 positions)"
    x = np.linspace(-2, 2, 5, dtype=np.float32)
    a, b = params["conv_act_0"]["a"], params["conv_act_0"]["b"]
    for c in range(3):
        expected = np.median(a[..., c, None] * np.maximum(x - b[..., c, None], 0), axis=(0, 1))
        np.testing.assert_allclose(curve.lines[c].get_ydata(), expected, rtol=1e-5, atol=1e-6)
    a_panel = [ax for ax in fig.axes if ax.get_ylabel() == "a"][0]
    assert a_panel.get_title() == "a per channel (median, 10-90th pct);\ndotted: initial"
    np.testing.assert_allclose(a_panel.collections[-1].get_offsets()[:, 1],
                               np.median(a.reshape(-1, 3), axis=0))
    with pytest.raises(ValueError, match="Unknown view 'pixels'"):
        plotting.plot_activations(params, {"conv_act_0": "agile_relu"}, view="pixels")
    with pytest.raises(ValueError, match="columns must be a positive integer"):
        plotting.plot_activations(params, {"conv_act_0": "agile_relu"}, columns=0)


def test_layers_given_by_hand_wrap_and_label_every_axis(tmp_path):
    """The call agile.paper.report makes: a linen param dict and {layer: activation}."""
    fig = plotting.plot_activations(
        _params(), {"conv_act_0": "agile_relu", "block/mix": "combined:relu,sigmoid",
                    "hidden_act": "agile_tanh"}, columns=2)
    curves = _curve_axes(fig)
    assert [_cell(ax) for ax in curves] == [(0, 0), (0, 1), (1, 0)]
    assert [ax.get_ylabel() for ax in curves] == ["a·f(x − b)", "Σ a[k]·f_k(x − b[k])",
                                                  "a·f(x − b)"]
    histograms = [ax for ax in fig.axes if ax.get_ylabel() == "count"]
    assert [ax.get_xlabel() for ax in histograms] == [
        "a", "b", "a[0] (relu)", "a[1] (sigmoid)", "b[0] (relu)", "b[1] (sigmoid)", "a", "b"]
    assert len(fig.axes) == len(curves) + len(histograms)


def test_feature_map_layers_are_the_per_element_maps():
    params = _params()
    layers = {"conv_act_0": "agile_relu", "block/mix": ("relu", "sigmoid"),
              "hidden_act": "agile_tanh"}
    assert plotting.feature_map_layers(params, layers) == ["conv_act_0", "block/mix"]
    per_channel = {"conv_act_0": plotting.AgileLayer(("relu",), "channel")}
    assert plotting.feature_map_layers(params, per_channel) == []


@pytest.mark.slow
def test_plot_parameter_maps_labels_its_colour_bars_and_stays_within_the_maximum_size():
    params = {"act": {"a": np.ones((4, 4, 200), np.float32), "b": np.zeros((4, 4, 200))}}
    fig = plotting.plot_parameter_maps(params, "act")
    width, height = fig.get_size_inches()
    assert width <= plotting.MAX_FIGSIZE[0] and height <= plotting.MAX_FIGSIZE[1] + 1e-6
    assert sum(1 for ax in fig.axes if ax.images) == 400
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert [bar.get_ylabel() for bar in bars] == ["a", "b"]


@pytest.mark.parametrize("suffix, magic", first_fast(
    [("png", PNG_MAGIC), ("pdf", b"%PDF"), ("svg", b"<?xml")], multiple_args=True))
def test_save_figure_writes_by_suffix_the_same_bytes_every_time(tmp_path, suffix, magic):
    import matplotlib

    def draw():
        return plotting.plot_activations(_params(), {"hidden_act": "agile_tanh"}, num_points=5)

    first = plotting.save_figure(draw(), tmp_path / f"one.{suffix}", dpi=30)
    second = plotting.save_figure(draw(), tmp_path / f"two.{suffix}", dpi=30)
    assert first == tmp_path / f"one.{suffix}"
    assert first.read_bytes().startswith(magic)
    assert first.read_bytes() == second.read_bytes()  # no date, no version, fixed ids
    assert matplotlib.__version__.encode() not in first.read_bytes()


def test_save_figure_dpi_and_format_and_what_it_refuses(tmp_path):
    def png_width(path):
        return int.from_bytes(path.read_bytes()[16:20], "big")  # the IHDR chunk's width

    fig = plotting.new_figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1])
    assert png_width(plotting.save_figure(fig, tmp_path / "a.png", dpi=50)) == 100
    assert png_width(plotting.save_figure(fig, tmp_path / "b.png", dpi=100)) == 200
    assert b"Software" not in (tmp_path / "a.png").read_bytes()
    path = plotting.save_figure(fig, tmp_path / "c", format="svg")
    assert path == tmp_path / "c.svg" and path.read_bytes().startswith(b"<?xml")
    with pytest.raises(ValueError, match=r"Unknown figure format 'jpg'\. Valid: png, pdf, svg"):
        plotting.save_figure(fig, tmp_path / "d.jpg")
    with pytest.raises(ValueError, match="format 'pdf' contradicts the suffix"):
        plotting.save_figure(fig, tmp_path / "e.png", format="pdf")
    with pytest.raises(ValueError, match="dpi must be positive"):
        plotting.save_figure(fig, tmp_path / "f.png", dpi=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.svg"]


@pytest.mark.slow
def test_missing_matplotlib_says_to_install_the_plot_extra():
    code = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "matplotlib":
            raise ImportError(f"No module named {name!r} (blocked)")
sys.meta_path.insert(0, Block())
from agile import plotting
from agile.errors import UserError
try:
    plotting.new_figure()
except ImportError as err:
    assert isinstance(err, plotting.MatplotlibMissingError) and isinstance(err, UserError)
    print(err)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "install it with pip install 'agile-activations[plot]' (or pip install matplotlib)." in (
        result.stdout)


def test_the_plot_extra_is_matplotlib_only():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["plot"] == ["matplotlib"]
