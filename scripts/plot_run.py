"""Draws what a training run's agile layers learned, from its newest readable checkpoint.

    python scripts/plot_run.py --workdir=runs/combo_12_... [--output_dir=docs/figures]
        [--name=combo12] [--params=best|last] [--seed_index=0] [--maps=conv_act_0]
        [--format=png|pdf|svg] [--dpi=150] [--columns=N]

Writes ``<name>_activations.<format>``: every agile layer of the run's model (found from
the model that ``config.json`` describes, in network order), its learned a*f(x - b) with
its a and b (per-element layers: median, spread band and histograms; per-channel layers:
one curve and one point per channel); and ``<name>_maps_<layer>.<format>``: a and b over the
feature-map grid, per channel, for each per-element conv layer, or those named by --maps.
Reads the checkpoint read-only through ``agile.paper.progress.read_params`` (a damaged latest
checkpoint falls back to an earlier one); ``best`` (default) takes the parameters at the
best evaluation, ``last`` those of the last step. A mistake (no such run, seed or layer, an
output folder that cannot be written) is one ``error:`` line and exit status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections
from absl import flags

from agile import plotting
from agile.errors import UserError
from agile.paper import cli, progress, tasks
from agile.paper.files import CHECKPOINT_DIR, CONFIG_FILE, SWEEP_FILE, read_json

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's output folder.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "docs/figures", "Where the figures go.")
_NAME = flags.DEFINE_string("name", None, "File name prefix (default: the workdir's name).")
_PARAMS = flags.DEFINE_enum("params", "best", list(progress.PARAMS),
                            "Best-evaluation or last parameters.")
_SEED_INDEX = flags.DEFINE_integer("seed_index", 0, "Which seed of a num_seeds > 1 run "
                                   "(negative: from the end).")
_MAPS = flags.DEFINE_list("maps", None, "Layers for parameter maps (default: every per-element "
                          "conv layer; --maps= for none).")
_FORMAT = flags.DEFINE_enum("format", "png", list(plotting.FIGURE_FORMATS), "File format.")
_DPI = flags.DEFINE_integer("dpi", 150, "Resolution of PNG files (and of images in PDF/SVG).",
                            lower_bound=1)
_COLUMNS = flags.DEFINE_integer("columns", None, "Layers a row in the activations figure "
                                "(default: about a square grid).", lower_bound=1)
flags.mark_flags_as_required(["workdir"])


def _runs_below(folder: Path) -> list[Path]:
    """Run folders (with a config.json) one or two levels below ``folder``: a sweep's or a
    study's trials."""
    found = [*folder.glob(f"*/{CONFIG_FILE}"), *folder.glob(f"*/*/{CONFIG_FILE}")]
    return sorted(path.parent for path in found)


def _not_a_run(workdir: Path) -> UserError:
    """Why ``workdir``, an existing folder without config.json, is not a run's folder."""
    runs = _runs_below(workdir)
    if runs:
        what = "a sweep's folder" if (workdir / SWEEP_FILE).exists() else "not a run's folder"
        return UserError(
            f"{workdir} is {what} ({len(runs)} run{'s' if len(runs) > 1 else ''} in it): pass "
            f"one run as --workdir, e.g. --workdir={runs[0]}."
        )
    if (workdir / CHECKPOINT_DIR).is_dir():
        return UserError(f"{workdir} holds checkpoints but no {CONFIG_FILE}, so which model "
                         "trained them is unknown.")
    return UserError(f"{workdir} is not a training run's folder: it has no {CONFIG_FILE}.")


def run_config(workdir: Path) -> ml_collections.ConfigDict:
    """The config a run was trained with, from its ``config.json``; UserError if there is none."""
    if not workdir.exists():
        raise UserError(f"Workdir {workdir} does not exist.")
    if not workdir.is_dir():
        raise UserError(f"Workdir {workdir} is not a folder.")
    if not (workdir / CONFIG_FILE).is_file():
        raise _not_a_run(workdir)
    saved = read_json(workdir / CONFIG_FILE)
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise UserError(f"{workdir / CONFIG_FILE} has no model settings.")
    return ml_collections.ConfigDict(saved)


def check_has_checkpoints(workdir: Path, config: ml_collections.ConfigDict) -> None:
    """UserError when the run has not saved any checkpoint yet (none: nothing to plot)."""
    folder = workdir / CHECKPOINT_DIR
    if not folder.is_dir() or not any(folder.iterdir()):
        every = config.get("checkpoint_every_steps")
        raise UserError(
            f"{workdir} has no checkpoint yet: the run stopped (or is still running) before "
            f"its first one (it saves every {every} steps and at its end); nothing to plot."
        )


def run_layers(workdir: Path, config: ml_collections.ConfigDict,
               params: dict[str, Any]) -> dict[str, plotting.AgileLayer]:
    """``{layer: AgileLayer}`` of the run's agile layers, from the model its config describes."""
    try:
        task = tasks.build(config)
    except (AttributeError, KeyError, TypeError) as err:
        raise UserError(f"{workdir / CONFIG_FILE} does not describe a model this version "
                        f"builds ({type(err).__name__}: {err}).") from None
    layers = plotting.agile_layers(params, task.model, task.example(), train=False)
    if not layers:
        m = config.model
        raise UserError(
            f"{workdir} trained no agile layers (conv_activation={m.conv_activation!r}, "
            f"dense_activation={m.dense_activation!r}): there is nothing to plot."
        )
    return layers


def choose_maps(params: dict[str, Any], layers: dict[str, plotting.AgileLayer],
                requested: list[str] | None) -> list[str]:
    """The layers to draw parameter maps of: ``requested`` (each checked), or every map."""
    maps = plotting.feature_map_layers(params, layers)
    if requested is None:
        return maps
    available = f"layers with maps: {', '.join(maps)}" if maps else "this run has no maps"
    for layer in requested:
        if layer not in layers:
            raise UserError(f"--maps: no agile layer {layer!r} in this run; its agile layers: "
                            f"{', '.join(layers)}.")
        if layer not in maps:
            a, _ = plotting.layer_parameters(params, layer)
            kind = {"channel": "one per channel", "scalar": "one for the layer"}.get(
                layers[layer].granularity, "one per unit")
            raise UserError(
                f"--maps: {layer}'s a and b have shape {a.shape} ({kind}), not one per element "
                f"of a feature map (H, W, C); {available}. The activations figure draws "
                f"{layer}'s a and b."
            )
    return list(requested)


def output_folder(path: Path) -> Path:
    """``path``, created if needed; UserError naming it and the OS error when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"Cannot create --output_dir {path}: {err.strerror or err}.") from None
    return path


def write(fig, path: Path) -> Path:
    """Saves ``fig`` at --dpi; UserError naming the file and the OS error when it cannot."""
    try:
        return plotting.save_figure(fig, path, dpi=_DPI.value)
    except OSError as err:
        raise UserError(f"Cannot write {path.name} in --output_dir {path.parent}: "
                        f"{err.strerror or err}.") from None


def main(argv: list[str]) -> None:
    """Reads the run, checks every choice, then draws and writes the figures."""
    if len(argv) > 1:
        raise UserError(f"Unexpected arguments: {' '.join(argv[1:])}")
    workdir = Path(_WORKDIR.value)
    config = run_config(workdir)
    check_has_checkpoints(workdir, config)
    step, params, seeds = progress.read_params(workdir, _PARAMS.value, _SEED_INDEX.value)
    layers = run_layers(workdir, config, params)
    maps = choose_maps(params, layers, _MAPS.value)
    output = output_folder(Path(_OUTPUT_DIR.value))
    name = _NAME.value or workdir.resolve().name
    print(f"{workdir}: step {step}, {_PARAMS.value} parameters of seed index "
          f"{_SEED_INDEX.value % seeds} of {seeds}; agile layers: {', '.join(layers)}")
    suffix = f".{_FORMAT.value}"
    figure = plotting.plot_activations(params, layers, columns=_COLUMNS.value)
    written = [write(figure, output / f"{name}_activations{suffix}")]
    for layer in maps:
        figure = plotting.plot_parameter_maps(params, layer)
        written.append(write(figure, output / f"{name}_maps_{layer.replace('/', '-')}{suffix}"))
    for path in written:
        print(f"{path} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    cli.run(main)
