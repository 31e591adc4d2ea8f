"""``agile.plotting``: figures render to PNG (Agg), draw what was learned, and refuse bad input."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from conftest import REPO_ROOT

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
        assert f"{title}; dotted: initial" in axes, title
    assert axes["a[1] (sigmoid): 48 values; dotted: initial"].lines[0].get_xdata()[0] == 0.0
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


@pytest.mark.slow
def test_plot_run_script_draws_a_workdirs_latest_checkpoint(tmp_path):
    """scripts/plot_run.py on a checkpoint written the way agile.paper.train writes one."""
    import json
    from pathlib import Path

    from agile.paper import workdir as workdir_lib

    params = _params()
    params["output"] = {"bias": np.zeros(10, np.float32)}
    model = {"conv_activation": "agile_relu", "dense_activation": "agile_tanh"}
    (tmp_path / "config.json").write_text(json.dumps({"model": model}))
    checkpoints = workdir_lib.Checkpoints(tmp_path)
    arrays = {"state": {"params": params}, "accum": {}, "best_params": [params]}
    checkpoints.save(7, arrays, {"format": 2})
    checkpoints.close()
    out = tmp_path / "figures"
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(
        [
            sys.executable,
            "scripts/plot_run.py",
            f"--workdir={tmp_path}",
            f"--output_dir={out}",
            "--name=run",
            "--dpi=30",
        ],
        cwd=repo,
        check=True,
        timeout=300,
        capture_output=True,
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "run_activations.png",
        "run_maps_conv_act_0.png",
    ]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in out.iterdir())


# ---------------------------------------------------------------------------------------------
# Automatic layer selection.


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
    assert "install it with pip install 'agile[plot]' (or pip install matplotlib)." in (
        result.stdout)


def test_the_plot_extra_is_matplotlib_only():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["plot"] == ["matplotlib"]
