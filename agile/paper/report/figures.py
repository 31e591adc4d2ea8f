"""The report's figures, each defined once in :data:`SPECS`, and the drawing functions.

A :class:`FigureSpec` holds everything about one figure: its key, file name, caption, the
note printed under it, what the results lack when it cannot be drawn, where the report
shows it, and the function that draws it from the results and their analysis. Figures are
``matplotlib.figure.Figure`` objects built without pyplot (no global state, no backend);
:func:`save_figure` writes them byte for byte the same on a rerun.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agile.paper import study
from agile.paper.combos import COMBOS
from agile.paper.report.analysis import (
    CONFIDENCE,
    Analysis,
    PairedResult,
    Table1Row,
    combo12_layers,
    combo12_ranges,
    combo_trial,
    curve_band,
    params_tree,
    seed_values,
)
from agile.paper.report.results import PARAMS, Curve, Range, Results, Run

DPI = 100
DENSE_COLORS = {"relu": "tab:blue", "agile_relu": "tab:orange", "agile_sigmoid": "tab:green",
                "sigmoid": "tab:red"}


# ---------------------------------------------------------------------------------------------
# Curves (Figs. 11-13).


def _draw_band(ax, band: Mapping[str, Any], label: str, color: str | None = None,
               marker: str | None = "o") -> bool:
    """Mean line (a marker at each evaluation) and ±1 std band; False when it is empty."""
    if not len(band["steps"]):
        return False
    line, = ax.plot(band["steps"], band["mean"], lw=1.6, color=color, marker=marker, ms=3,
                    label=f"{label} ({band['seeds']} seeds)")
    ax.fill_between(band["steps"], band["mean"] - band["std"], band["mean"] + band["std"],
                    color=line.get_color(), alpha=0.18, lw=0)
    return True


def _legend(ax, **kwargs) -> None:
    """A legend, if anything on ``ax`` has a label."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _loss_axes(ax, column: str = "test_loss") -> None:
    """Log-scale loss axis with plain tick labels, steps on x, a grid."""
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xlabel("step (iteration)")
    ax.set_ylabel(column.replace("_", " ") + " (log scale)")
    ax.grid(True, which="both", alpha=0.3)


def figure_table1_curves(curves: Sequence[Curve]):
    """Fig. 12: test loss of the 12 combinations, one panel per conv activation."""
    from matplotlib.figure import Figure

    convs = list(dict.fromkeys(conv for conv, _ in COMBOS.values()))
    fig = Figure(figsize=(11, 8), layout="constrained")
    axes = fig.subplots(2, (len(convs) + 1) // 2, sharex=True, sharey=True).ravel()
    drawn = False
    for ax, conv in zip(axes, convs, strict=False):
        for combo, (c, dense) in COMBOS.items():
            if c == conv:
                band = curve_band(curves, "table1", combo_trial(combo))
                drawn |= _draw_band(ax, band, f"combo {combo}: dense {dense}",
                                    DENSE_COLORS.get(dense))
        ax.set_title(f"conv {conv}")
        _loss_axes(ax)
        _legend(ax, fontsize=8)
        ax.label_outer()
    fig.suptitle("Test loss during training, mean ± std over seeds (Table 1; cf. the paper's "
                 "Fig. 12)")
    return fig if drawn else None


def figure_best_five(curves: Sequence[Curve], table: Sequence[Table1Row]):
    """Fig. 13: the five combinations with the lowest mean best test loss."""
    from matplotlib.figure import Figure

    run = [row for row in table if row.loss is not None]
    best = sorted(run, key=lambda row: row.loss["mean"])[:5]
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.subplots()
    drawn = False
    for rank, row in enumerate(best, start=1):
        band = curve_band(curves, "table1", combo_trial(row.combo))
        drawn |= _draw_band(ax, band, f"#{rank} combo {row.combo}: {row.conv} / {row.dense}",
                            f"C{rank - 1}")
    _loss_axes(ax)
    _legend(ax, fontsize=9)
    ax.set_title("The five lowest mean best test losses: test loss during training, "
                 "mean ± std over seeds (cf. the paper's Fig. 13)", fontsize=10)
    return fig if drawn else None


def figure_dense_only(curves: Sequence[Curve]):
    """Fig. 11: sigmoid against agile sigmoid in the dense-only network (test and val loss)."""
    from matplotlib.figure import Figure

    group = study.GROUPS_BY_NAME["dense_only"]
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    drawn = False
    for ax, column, title in zip(axes, ("test_loss", "val_loss"),
                                 ("test loss", "validation loss (every evaluation)"),
                                 strict=True):
        for conv, dense in group.pairs:
            band = curve_band(curves, group.name, group.trial_name(conv, dense), column)
            drawn |= _draw_band(ax, band, f"dense {dense}", DENSE_COLORS.get(dense),
                                "o" if column == "test_loss" else None)
        _loss_axes(ax, column)
        _legend(ax, fontsize=9)
        ax.set_title(title, fontsize=10)
    fig.suptitle("Dense-only network: sigmoid against agile sigmoid, mean ± std over seeds "
                 "(cf. the paper's Fig. 11)")
    return fig if drawn else None


# ---------------------------------------------------------------------------------------------
# Combo 12's a and b (Fig. 14, learned activations, parameter maps).


def figure_combo12_ranges(ranges: Sequence[Range]):
    """Fig. 14: per agile layer of combo 12, each seed's a range (x) by b range (y)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from agile.plotting import initial_value

    layers = combo12_ranges(ranges)
    if not layers:
        return None
    fig = Figure(figsize=(3.4 * len(layers), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(layers)))
    for ax, (layer, seeds) in zip(axes, layers.items(), strict=True):
        for params in seeds.values():
            a, b = params.get("a"), params.get("b")
            if a is None or b is None:
                continue
            ax.add_patch(Rectangle((a.min, b.min), a.max - a.min, b.max - b.min, fill=False,
                                   lw=1, alpha=0.6, color="tab:blue"))
            ax.plot(a.mean, b.mean, ".", color="tab:blue", ms=4)
        ax.plot(initial_value("a"), initial_value("b"), "k+", ms=10, mew=1.5)
        ax.autoscale_view()
        ax.margins(0.08)
        activation = COMBOS[12][0 if layer.startswith("conv") else 1]
        ax.set_title(f"{layer} ({activation}), {len(seeds)} seeds", fontsize=10)
        ax.set_xlabel("a: min to max")
        ax.set_ylabel("b: min to max")
        ax.grid(True, alpha=0.3)
    fig.suptitle("Combo 12: range of the learned a (x) and b (y) per layer at the end of "
                 "training; one box per seed, dot = mean, + = initial value (cf. the paper's "
                 "Fig. 14)", fontsize=10)
    return fig


def figure_activations(flat: Mapping[str, np.ndarray]):
    """Combo 12 (seed 0): each agile layer's learned a*f(x - b), via agile.plotting."""
    from agile.plotting import plot_activations

    layers = combo12_layers(flat)
    if not layers:
        return None
    fig = plot_activations(params_tree(flat), layers)
    fig.suptitle("Combo 12, seed 0, end of training: learned activations per layer")
    return fig


def figure_transformer_layers(flat: Mapping[str, np.ndarray]):
    """The transformer's agile GELU (seed 0): each block's learned a*gelu(x - b) over its
    hidden channels, via agile.plotting (which layers' a and b moved)."""
    from agile.plotting import plot_activations

    layers = sorted({key.rsplit("/", 1)[0] for key in flat if key.endswith("/a")})
    if not layers:
        return None
    fig = plot_activations(params_tree(flat), dict.fromkeys(layers, "gelu"))
    fig.suptitle("Transformer, agile GELU, seed 0, end of training: learned activations per "
                 "block")
    return fig


def figure_maps(flat: Mapping[str, np.ndarray], layer: str = "conv_act_0"):
    """Combo 12 (seed 0): a and b of the first conv layer over the feature map."""
    from agile.plotting import plot_parameter_maps

    if f"{layer}/a" not in flat or np.ndim(flat[f"{layer}/a"]) not in (3, 4):
        return None
    return plot_parameter_maps(params_tree(flat), layer)


# ---------------------------------------------------------------------------------------------
# Table 1 and the paired differences.


def figure_table1_losses(runs: Sequence[Run], table: Sequence[Table1Row]):
    """Per combination: each seed's best test loss, the mean with its CI, the paper's value."""
    from matplotlib.figure import Figure

    if all(row.loss is None for row in table):
        return None
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    ax = fig.subplots()
    for row in table:
        combo, summary = row.combo, row.loss
        values = list(seed_values(runs, "table1", combo_trial(combo)).values())
        offsets = np.linspace(-0.18, 0.18, len(values)) if len(values) > 1 else np.zeros(1)
        ax.plot(combo + offsets[:len(values)], values, "o", color="tab:blue", ms=3.5, alpha=0.5,
                label="one seed" if combo == 1 else None)
        if summary is not None and summary["n"] > 1:
            ax.errorbar(combo + 0.3, summary["mean"], yerr=[[summary["mean"] - summary["ci_low"]],
                        [summary["ci_high"] - summary["mean"]]], fmt="s", color="k", ms=4,
                        capsize=3, label=f"mean, {CONFIDENCE:.0%} CI" if combo == 1 else None)
        ax.plot(combo - 0.3, row.paper_loss, "x", color="tab:red", ms=9, mew=2,
                label="paper (one run)" if combo == 1 else None)
    ax.set_xticks(list(COMBOS), [f"{c}\n{conv}\n{dense}" for c, (conv, dense) in COMBOS.items()],
                  fontsize=7)
    ax.set_ylabel("best test loss")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Table 1: best test loss per combination (n, conv, dense)")
    return fig


def _forest(ax, results: Sequence[PairedResult], title: str) -> None:
    """Horizontal mean differences with CIs; grey when not significant after Holm."""
    shown = [r for r in results if r.available]
    for y, result in enumerate(reversed(shown)):
        color = "tab:blue" if result.significant else "tab:gray"
        ax.errorbar(result.mean_difference, y, xerr=[[result.mean_difference - result.ci_low],
                    [result.ci_high - result.mean_difference]], fmt="o", color=color,
                    capsize=3, ms=4)
        if result.comparison.paper_difference is not None:
            ax.plot(result.comparison.paper_difference, y, "x", color="tab:red", ms=7, mew=2)
    ax.set_yticks(range(len(shown)), [r.comparison.name for r in reversed(shown)], fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("difference in best test loss (first − second)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)


def figure_differences(families: Sequence[tuple[str, Sequence[PairedResult]]]):
    """Forest plot per family of comparisons (those with results); None if none has any."""
    from matplotlib.figure import Figure

    shown = [(title, results) for title, results in families
             if any(result.available for result in results)]
    if not shown:
        return None
    heights = [max(2, sum(r.available for r in results)) for _, results in shown]
    fig = Figure(figsize=(10, 1.2 + 0.32 * sum(heights)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(shown), 1, height_ratios=heights))
    for ax, (title, results) in zip(axes, shown, strict=True):
        _forest(ax, results, title)
    fig.suptitle(f"Paired differences, mean and {CONFIDENCE:.0%} CI (blue: significant after "
                 "Holm; grey: not; red x: the paper's difference)", fontsize=10)
    return fig


def figure_lr_curve(runs: Sequence[Run], curve=study.LR_CURVE, combos=(10, 11, 12),
                    plain: int = 7, reference: str = "table1"):
    """Best test loss of ``combos`` against the a/b learning rate (a multiple of the weights'
    rate, log axis): the mean and its CI per rate with results, the plain combo's as a band;
    None unless some combo has results at two rates."""
    from matplotlib.figure import Figure

    from agile.paper import stats

    def summary(group: str, combo: int):
        values = list(seed_values(runs, group, combo_trial(combo)).values())
        return stats.summarize(values) if len(values) > 1 else None

    points = {combo: [(multiple, s) for group, _, multiple in curve
                      if (s := summary(group, combo)) is not None] for combo in combos}
    if not any(len(p) > 1 for p in points.values()):
        return None
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for offset, (combo, pts) in zip((0.94, 1.0, 1.06), points.items(), strict=False):
        x = np.array([m for m, _ in pts]) * offset
        mean = np.array([s["mean"] for _, s in pts])
        err = [mean - [s["ci_low"] for _, s in pts], [s["ci_high"] for _, s in pts] - mean]
        conv, dense = COMBOS[combo]
        ax.errorbar(x, mean, yerr=err, fmt="o-", capsize=3, ms=4,
                    label=f"combo {combo} ({conv} / {dense})")
    base = summary(reference, plain)
    if base is not None:
        ax.axhspan(base["ci_low"], base["ci_high"], color="k", alpha=0.12)
        ax.axhline(base["mean"], color="k", lw=1, ls="--",
                   label=f"combo {plain} (plain), mean and {CONFIDENCE:.0%} CI")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate of a and b (× the weights' rate, Adam 1e-3)")
    ax.set_ylabel("best test loss")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"The a/b learning rate: mean best test loss and its {CONFIDENCE:.0%} CI")
    return fig


# ---------------------------------------------------------------------------------------------
# The list of figures.


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """One figure of the report, everything about it in one place.

    ``section`` is where the report shows it (``"table1"``: section 3, ``"comparisons"``: the
    section of the family whose ``figure`` it is, ``"figures"``: the figures section, under
    its caption as a heading). ``missing`` is
    what the results lack when ``draw`` returns None (printed as "Not drawn: ..."); None
    leaves an undrawn figure out without a word (its section says why).
    """

    key: str
    file: str
    caption: str
    note: str
    missing: str | None
    section: str
    draw: Callable[[Results, Analysis], Any]


SPECS: tuple[FigureSpec, ...] = (
    FigureSpec(
        "table1_losses", "study_table1_losses.png", "Best test loss per seed, Table 1",
        "Each dot is one seed's best test loss; the bar is the mean and its "
        f"{CONFIDENCE:.0%} interval; the cross is the paper's single run.", None, "table1",
        lambda results, analysis: figure_table1_losses(results.runs, analysis.table)),
    FigureSpec(
        "differences", "study_paired_differences.png", "Paired differences",
        "Mean paired difference with its interval per comparison (left of zero: the first has "
        "the lower loss); the cross is the paper's difference.", None, "comparisons",
        lambda results, analysis: figure_differences(
            [(r.family.figure_title, r.results) for r in analysis.families])),
    FigureSpec(
        "lr_curve", "study_lr_curve.png", "Best test loss against the a/b learning rate",
        "Combos 10, 11 and 12 (agile ReLU conv layers) at each a/b rate with results: the mean "
        f"best test loss and its {CONFIDENCE:.0%} interval (points spread a little sideways "
        "to stay apart); the band is plain combo 7's.", None, "comparisons",
        lambda results, analysis: figure_lr_curve(results.runs)),
    FigureSpec(
        "transformer_layers", "study_transformer_layers.png",
        "Learned activations of the transformer's MLPs",
        "The transformer with agile GELU per hidden channel, seed 0, final parameters: per "
        "block the median learned a·gelu(x − b) over the hidden channels with a percentile "
        "band, plain GELU dashed, and histograms of a and b (`agile.plotting."
        "plot_activations`).", None, "comparisons",
        lambda results, analysis: figure_transformer_layers(results.transformer_params)
        if results.transformer_params else None),
    FigureSpec(
        "fig12", "study_fig12_test_loss_curves.png",
        "Test loss of the 12 combinations during training (Fig. 12)",
        "Mean ± one std over seeds of the test loss (evaluated every few epochs); a step is "
        "drawn while at least half of a combination's seeds are still training.",
        "no Table 1 curves", "figures",
        lambda results, analysis: figure_table1_curves(results.curves)),
    FigureSpec(
        "fig13", "study_fig13_best_five.png", "The best five combinations (Fig. 13)",
        "The five combinations with the lowest mean best test loss, drawn as in Fig. 12.",
        "no Table 1 curves", "figures",
        lambda results, analysis: figure_best_five(results.curves, analysis.table)),
    FigureSpec(
        "fig14", "study_fig14_combo12_ab_ranges.png", "Ranges of a and b in combo 12 (Fig. 14)",
        "Per layer, each seed's range of a (x) against its range of b (y) at the end of "
        "training.", "no a/b ranges of combo 12", "figures",
        lambda results, analysis: figure_combo12_ranges(results.ranges)),
    FigureSpec(
        "fig11", "study_fig11_dense_only.png", "Sigmoid against agile sigmoid, dense only "
        "(Fig. 11)", "The dense-only network; test loss (left) and validation loss (right).",
        "group dense_only has no curves", "figures",
        lambda results, analysis: figure_dense_only(results.curves)),
    FigureSpec(
        "activations", "study_combo12_activations.png", "Learned activations of combo 12",
        "Combo 12, seed 0, final parameters: the median learned a·f(x − b) over each layer's "
        "elements with a percentile band, the plain f dashed, and histograms of a and b "
        "(`agile.plotting.plot_activations`).", f"no {PARAMS}", "figures",
        lambda results, analysis: figure_activations(results.params) if results.params
        else None),
    FigureSpec(
        "maps", "study_combo12_maps_conv_act_0.png", "a and b over the first conv layer's map",
        "Combo 12, seed 0: a and b of the first conv layer over its feature map, per channel "
        "(`agile.plotting.plot_parameter_maps`).", f"no {PARAMS}", "figures",
        lambda results, analysis: figure_maps(results.params) if results.params else None),
)
SPECS_BY_KEY = {spec.key: spec for spec in SPECS}
FIGURES = {spec.key: (spec.file, spec.caption) for spec in SPECS}  # key: (file name, caption)


def save_figure(fig, path: Path, dpi: int = DPI) -> None:
    """Writes ``fig`` as PNG without the matplotlib version in its metadata (same bytes on
    a rerun), through a temporary file and a rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    fig.savefig(temporary, format="png", dpi=dpi, metadata={"Software": None})
    temporary.replace(path)


def draw_figures(results: Results, analysis: Analysis, figures_dir: Path,
                 dpi: int = DPI) -> dict[str, Path | None]:
    """Draws every figure of :data:`SPECS` that has data into ``figures_dir``.

    Returns ``{key: the file written, or None (not drawn)}``; no other file is touched (a
    figure not drawn this time keeps whatever file an earlier report left, unlinked).
    """
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    drawn = {}
    for spec in SPECS:
        fig = spec.draw(results, analysis)
        drawn[spec.key] = None if fig is None else figures_dir / spec.file
        if fig is not None:
            save_figure(fig, drawn[spec.key], dpi)
    return drawn
