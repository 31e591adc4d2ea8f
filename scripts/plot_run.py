"""Draws what a training run's agile layers learned, from its latest checkpoint.

    python scripts/plot_run.py --workdir=runs/combo_12_... [--output_dir=docs/figures]
        [--name=combo12] [--params=best|last] [--seed_index=0] [--maps=conv_act_0]

Writes ``<name>_activations.png`` (every agile layer's learned a*f(x - b): median, spread
band, the plain f dashed, histograms of a and b) and ``<name>_maps_<layer>.png`` (a and b
over the feature-map grid, per channel) for each per-element conv layer, or those named by
--maps. Reads ``config.json`` for the activations and the checkpoint read-only; ``best``
(default) takes the parameters at the best evaluation, ``last`` those of the last step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags

from agile import plotting
from agile.activations import is_learnable_name
from agile.paper.workdir import read_json

matplotlib.use("Agg")

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's output folder.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "docs/figures", "Where the PNG files go.")
_NAME = flags.DEFINE_string("name", None, "File name prefix (default: the workdir's name).")
_PARAMS = flags.DEFINE_enum("params", "best", ["best", "last"], "Best-evaluation or last params.")
_SEED_INDEX = flags.DEFINE_integer("seed_index", 0, "Which seed of a num_seeds > 1 run.")
_MAPS = flags.DEFINE_list("maps", None, "Layers for parameter maps (default: per-element convs).")
_DPI = flags.DEFINE_integer("dpi", 80, "Resolution of the PNG files.")
flags.mark_flags_as_required(["workdir"])


def restore_params(workdir: Path, which: str = "best", seed_index: int = 0) -> dict[str, Any]:
    """One seed's parameters from the latest checkpoint of ``workdir``, read-only.

    Checkpoints (format 2 of ``agile.paper.train``) hold ``{"state", "accum", "best_params"}``:
    ``best`` reads ``best_params[seed_index]``, ``last`` reads ``state.params`` (taking
    ``seed_index`` along the leading seed axis of a seed batch).
    """
    options = ocp.CheckpointManagerOptions(read_only=True)
    with ocp.CheckpointManager(workdir.resolve() / "checkpoints", options=options) as manager:
        step = manager.latest_step()
        if step is None:
            raise app.UsageError(f"No checkpoint in {workdir / 'checkpoints'}.")
        args = ocp.args.Composite(arrays=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
        arrays = manager.restore(step, args=args)["arrays"]
    if which == "best":
        best = arrays["best_params"]
        return best[seed_index] if isinstance(best, list) else best[str(seed_index)]
    params = arrays["state"]["params"]
    batched = np.ndim(params["output"]["bias"]) == 2  # (seeds, classes) in a seed batch
    return {k: _take(v, seed_index) for k, v in params.items()} if batched else params


def _take(tree: Any, index: int) -> Any:
    if isinstance(tree, dict):
        return {k: _take(v, index) for k, v in tree.items()}
    return np.asarray(tree)[index]


def agile_layers(model_config: dict[str, Any], params: dict[str, Any]) -> dict[str, str]:
    """Layer path -> activation name of the paper CNN's learned activation layers."""
    layers = {}
    for name in sorted(params):
        if name.startswith("conv_act_") and is_learnable_name(model_config["conv_activation"]):
            layers[name] = model_config["conv_activation"]
    if is_learnable_name(model_config["dense_activation"]) and "hidden_act" in params:
        layers["hidden_act"] = model_config["dense_activation"]
    return layers


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    workdir = Path(_WORKDIR.value)
    config = read_json(workdir / "config.json")
    params = restore_params(workdir, _PARAMS.value, _SEED_INDEX.value)
    layers = agile_layers(config["model"], params)
    if not layers:
        raise app.UsageError(f"{workdir} trained no agile layers ({config['model']}).")
    output = Path(_OUTPUT_DIR.value)
    output.mkdir(parents=True, exist_ok=True)
    name = _NAME.value or workdir.resolve().name
    written = [output / f"{name}_activations.png"]
    plotting.plot_activations(params, layers).savefig(written[0], dpi=_DPI.value)
    maps = _MAPS.value or [
        layer for layer in layers if np.ndim(params[layer]["a"]) in (3, 4) and "conv" in layer
    ]
    for layer in maps:
        written.append(output / f"{name}_maps_{layer}.png")
        plotting.plot_parameter_maps(params, layer).savefig(written[-1], dpi=_DPI.value)
    for path in written:
        print(f"{path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    app.run(main)
