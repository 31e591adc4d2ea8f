"""The report's markdown: ``docs/reproduction.md``, section by section, and its sentences.

Every number in the text comes from the results (:mod:`agile.paper.report.results`), their
analysis (:mod:`agile.paper.report.analysis`) or the code's defaults (the config, the
groups); the conclusion's sentences are generated from the same numbers, so they stay
true when the study is rerun. The families' sections are :mod:`.questions`'; the document
(:mod:`.document`) puts the sections together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from agile.paper import stats, study
from agile.paper.data.images import NUM_CLASSES as MNIST_CLASSES
from agile.paper.data.images import SIDE as MNIST_SIDE
from agile.paper.data.images import TEST_SIZE as MNIST_TEST_SIZE
from agile.paper.report.analysis import (
    ALPHA,
    CONFIDENCE,
    METRIC,
    FoldCheck,
    PairedResult,
    Summary,
    Table1Row,
    beside_agreement,
    family_counts,
    paper_agreement,
    rank_agreement,
    ranks,
    seed_values,
    smallest_conv_a,
    wall_times,
)
from agile.paper.report.figures import SPECS, SPECS_BY_KEY, FigureSpec
from agile.paper.report.results import MACHINE, PARAMS, RUNS, Machine, Range, Run
from agile.paper.study import NATS, NO_LAYER, Unit

STUDY_COMMAND = ("MNIST_DIR=../shared/data/mnist FASHION_MNIST_DIR=../shared/data/fashion-mnist "
                 "TEXT_DIR=../shared/data/austen python scripts/study.py --workdir=runs/study "
                 "--publish")
REPORT_COMMAND = "python scripts/study_report.py --results_dir=docs/results --docs_dir=docs"
Counts = Callable[[str, str, str], tuple[int, int] | None]
Machines = Mapping[str, Sequence[Machine]]  # group -> the machines that timed its rows


# ---------------------------------------------------------------------------------------------
# Formatting.

# Float32 rounding of the fold check's logits differs from one CPU to the next (9.5e-07 on the
# Xeon that made the committed report, 1.9e-06 on an EPYC); below this bound the report says
# so instead of printing the number, so the committed report regenerates on any machine.
FOLD_ROUNDING = 1e-5


def fold_difference(difference: float) -> str:
    """The fold check's largest logit difference as the report writes it."""
    return f"under {FOLD_ROUNDING:.0e}" if difference < FOLD_ROUNDING else f"{difference:.1e}"

def format_duration(seconds: float) -> str:
    """``"3 h 07 min"``, ``"12 min 05 s"`` or ``"8.4 s"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_p(p: float) -> str:
    """A p-value: three decimals, or two significant digits below 0.001."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def format_mean_std(summary: Summary | None, digits: int = 4, scale: float = 1.0) -> str:
    """``"mean ± std"`` of a ``stats.summarize`` dict (times ``scale``), or ``"-"``."""
    if summary is None:
        return "-"
    return f"{summary['mean'] * scale:.{digits}f} ± {summary['std'] * scale:.{digits}f}"


def format_ci(summary: Summary | None, digits: int = 4) -> str:
    """``"[low, high]"`` of a ``stats.summarize`` dict, or ``"-"`` (none, or one seed)."""
    if summary is None or summary["n"] < 2:
        return "-"
    return f"[{summary['ci_low']:.{digits}f}, {summary['ci_high']:.{digits}f}]"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def not_run_line(group: str) -> str:
    """The sentence for a group without results."""
    return f"Group `{group}` was not run: `{RUNS.name}` has no rows for it."


def describe_machine(machine: Machine) -> str:
    """A machine of ``machine.json`` in words: CPU, logical CPUs, memory, JAX and backend."""
    return (f"{machine.cpu} ({machine.logical_cpus} logical CPUs, {machine.memory_gib:.0f} GiB; "
            f"JAX {machine.jax} on {machine.backend})")


def machine_labels(machines: Iterable[Machine]) -> dict[Machine, str]:
    """Each distinct machine's name in the wall-time table: its CPU, or its whole description
    where another of ``machines`` has the same CPU."""
    distinct = list(dict.fromkeys(machines))
    cpus = [machine.cpu for machine in distinct]
    return {machine: machine.cpu if cpus.count(machine.cpu) == 1 else describe_machine(machine)
            for machine in distinct}


def figure_lines(spec: FigureSpec, drawn: bool) -> list[str]:
    """A figure's markdown: the image and its note, or why it is not drawn (or nothing)."""
    if drawn:
        return [f"![{spec.caption}](figures/{spec.file})", "", spec.note, ""]
    return [f"Not drawn: {spec.missing} in the results.", ""] if spec.missing else []


# ---------------------------------------------------------------------------------------------
# Sections 1 and 2: the command, the wall time, the setup.


def wall_time_table(times: Mapping[str, Mapping[str, float]],
                    machines: Machines | None = None) -> str:
    """Per group: its question, trials, seeds, the machine(s) that timed it (their
    :func:`machine_labels`; "not recorded" where ``machines`` has none) and its wall time;
    then the total."""
    machines = machines or {}
    labels = machine_labels(m for group in times for m in machines.get(group, ()))
    rows = []
    for group, entry in times.items():
        question = study.GROUPS_BY_NAME[group].question if group in study.GROUPS_BY_NAME else ""
        timed_on = " and ".join(labels[m] for m in machines.get(group, ())) or "not recorded"
        rows.append((f"`{group}`", question, entry["trials"], entry["seeds"], timed_on,
                     format_duration(entry["seconds"])))
    total = sum(entry["seconds"] for entry in times.values())
    rows.append(("**total**", "", sum(entry["trials"] for entry in times.values()), "", "",
                 f"**{format_duration(total)}** ({total / 3600:.2f} h)"))
    return markdown_table(("group", "question", "trials", "seeds", "machine", "wall time"), rows)


def machines_line(groups: Iterable[str], machines: Machines | None) -> str:
    """The machines that timed ``groups``, described once each (what the wall-time table's
    machine column names), and that wall times compare only within one machine."""
    machines = machines or {}
    distinct = list(dict.fromkeys(m for group in groups for m in machines.get(group, ())))
    if not distinct:
        return f"`{MACHINE}` records no machine for these groups.\n"
    line = "The machines: " + "; ".join(describe_machine(m) for m in distinct) + "."
    if len(distinct) > 1:
        line += (" The groups were timed on different machines, so their wall times compare "
                 "only between groups timed on the same one, and the total adds them up.")
    return line + "\n"


def command_section(runs: Sequence[Run], machines: Machines | None = None) -> str:
    """Section 1: the commands, and the sweep's wall time per group (on the machines that
    timed it: ``machines``, group -> machines) and in total."""
    times = wall_times(runs)
    missing = [group.name for group in study.GROUPS if group.name not in times]
    lines = [
        "## 1. The command and its wall time", "",
        "Train every group (a resumable sweep: rerun the same command after an interruption and "
        "finished trials are skipped), export the per-run results to `runs/study/results/`, "
        "merge them into `docs/results/` (`--publish`: a row already there must agree, wall "
        "time aside, or nothing is written) and write this report and its figures (without "
        "`--publish`, the report goes to `runs/study/` and `docs/` is left alone):", "",
        f"    {STUDY_COMMAND}", "",
        "Rewrite only the report and its figures from the committed results:", "",
        f"    {REPORT_COMMAND}", "",
        f"Wall time of each group, from `wall_time_s` in `{RUNS.name}`, and the machine that "
        f"timed its rows, from `{MACHINE}` (a group published from several machines names "
        "each): each trial trains its seeds together, so its wall time (start-up, compilation, "
        "steps, evaluations, checkpoints) is counted once per trial.", "",
        wall_time_table(times, machines),
        machines_line(times, machines),
    ]
    partial = [f"`{group.name}` ({times[group.name]['trials']} of {len(group.pairs)} trials)"
               for group in study.GROUPS
               if group.name in times and times[group.name]["trials"] < len(group.pairs)]
    if partial:
        lines.append("Partly run (the sweep resumes where it stopped): " + ", ".join(partial)
                     + ".\n")
    if missing:
        lines.append("Not run (no rows in the results): " + ", ".join(f"`{g}`" for g in missing)
                     + ".\n")
    return "\n".join(lines)


def _map_sides(config) -> list[int]:
    """Side of the square feature map after each pooling (SAME convs keep it, pooling divides)."""
    side, sides = MNIST_SIDE, []
    for _ in config.model.conv_features:
        side //= config.model.pool_size[0]
        sides.append(side)
    return sides


def _stopped_early(runs: Sequence[Run], config, group: str = "table1") -> tuple[int, int]:
    """(runs of ``group`` that stopped before the epoch bound, runs of ``group``)."""
    bound = config.num_epochs * (config.data.train_size // config.batch_size)
    steps = [row.steps for row in runs if row.group == group and row.steps is not None]
    return sum(step < bound for step in steps), len(steps)


def _setup_rows(config, runs: Sequence[Run]) -> list[tuple[str, str, str, str]]:
    """(setting, ours, the paper, why) for each choice; ours is read from ``config``."""
    from agile.plotting import initial_value

    m, d = config.model, config.data
    per_epoch = d.train_size // config.batch_size
    kernel, pool = "x".join(map(str, m.kernel_size)), "x".join(map(str, m.pool_size))
    sides = _map_sides(config)
    early, total = _stopped_early(runs, config)
    seeds = sorted({row.seed for row in runs if row.group == "table1"})
    seed_text = f"seeds {seeds[0]} to {seeds[-1]} ({len(seeds)})" if seeds else "none run yet"
    return [
        ("training images", f"{d.train_size:,} of MNIST's training split, class-balanced "
         f"({d.train_size // MNIST_CLASSES:,} per digit); one subset (subset seed "
         f"{d.subset_seed}) for every seed", "stated",
         "The paper's setup; one fixed subset leaves seeds to differ only in initialisation "
         "and batch order."),
        ("validation split", f"{d.val_size:,} class-balanced images held out of the rest of "
         "the training split", "not stated",
         "Model selection and early stopping need images the test loss is not measured on."),
        ("test split", f"all {MNIST_TEST_SIZE:,} test images", "test loss; split not stated",
         "MNIST's standard test split."),
        ("inputs", "pixels scaled to [0, 1]" if not d.standardize else "standardised",
         "not stated", "The simplest scaling; no statistic of the data enters."),
        ("batch", f"{config.batch_size}; {per_epoch} steps per epoch", "stated", "The paper's."),
        ("network", f"conv {'-'.join(map(str, m.conv_features))} ({kernel} kernels, SAME "
         f"padding, stride 1), each followed by its activation and {pool} {m.pooling} pooling "
         f"(VALID, stride = window; maps {' → '.join(map(str, [MNIST_SIDE, *sides]))}), dense "
         f"{m.dense_features}, {m.num_classes} logits, cross-entropy",
         "filters, dense nodes, outputs and loss stated; kernel, padding and pooling not "
         "stated in the text", "The most common small-CNN choices; SAME kernels keep each "
         "map's size, so pooling alone shrinks it."),
        ("agile parameters", f"one (a, b) per {m.granularity}: per feature-map element before "
         "pooling in conv layers, per node in the dense layer", "stated (Figs. 7 and 8)",
         "The paper's."),
        ("initialisation", f"weights lecun-normal, biases zero, a = {initial_value('a'):g}, "
         f"b = {initial_value('b'):g}", "not stated",
         "Flax's default for weights; the agile start equals the plain network exactly, so "
         "any difference comes from learning a and b."),
        ("optimizer", f"{config.optimizer}, learning rate {config.learning_rate:g} for weights "
         f"and {config.agile_learning_rate:g} for every a and b", "gradient descent with rates "
         "ρ1, ρ2, ρ3; optimizer and values not stated", "Adam's usual default trains every "
         "combination without per-combination tuning; group `sgd` tests whether the verdict "
         "depends on it."),
        ("training length", f"at most {config.num_epochs} epochs; validation loss every epoch; "
         f"early stopping after {config.patience} evaluations without a lower one "
         f"({early} of {total} Table 1 runs stopped early)", "iteration counts reported, "
         "stopping rule not stated", "One rule for every combination, run to convergence."),
        ("reported loss", "test loss of the model at its lowest validation loss (best test "
         "loss); best step = its step", "one loss and an iteration count per combination; "
         "which iteration's loss not stated", "The test split never selects a model; the best "
         "step is our analogue of the paper's iteration count."),
        ("seeds", f"Table 1: {seed_text}; a seed sets the initialisation and batch order",
         "not stated (one run per combination, it seems)", "Means, intervals and paired "
         "tests need several runs; paired arms share their seeds."),
        ("Fig. 11 network", f"dense only: {MNIST_SIDE * MNIST_SIDE}-{m.dense_features}-"
         f"{m.num_classes}, otherwise as above", "'fully connected layers' only",
         "The CNN's dense part on raw pixels."),
        ("statistics", f"paired t-tests on common seeds, {CONFIDENCE:.0%} t-intervals, Holm's "
         f"correction at α = {ALPHA:g} per family", "none", "Runs differ by seed; one run "
         "cannot tell a difference from that variation, and pairing removes the part both "
         "arms share."),
    ]


def setup_section(config, runs: Sequence[Run]) -> str:
    """Section 2: every setting, which the paper states, and why we chose ours."""
    rows = _setup_rows(config, runs)
    unstated = [setting for setting, _, paper, _ in rows if "not stated" in paper]
    return "\n".join([
        "## 2. Setup, and the choices the paper leaves open", "",
        "Read from `agile/paper/config.py` (the defaults every group starts from; each group's "
        "overrides are in `agile/paper/study.py`).", "",
        markdown_table(("setting", "ours", "the paper", "why"), rows),
        "The paper leaves open: " + ", ".join(unstated) + ". The choices above fill these "
        "gaps once, for every combination alike.\n",
    ])


# ---------------------------------------------------------------------------------------------
# Sections 3, 4 and 8: Table 1, its comparisons, what the paper did not run.


def table1_markdown(table: Sequence[Table1Row]) -> str:
    """Table 1 beside the paper's: loss, iterations, our summaries and both rankings."""
    paper_rank = ranks({row.combo: row.paper_loss for row in table})
    our_rank = ranks({row.combo: row.loss["mean"] for row in table if row.loss is not None})
    rows = [(row.combo, row.conv, row.dense, f"{row.paper_loss:.5f}", row.paper_iterations,
             format_mean_std(row.loss), format_ci(row.loss),
             format_mean_std(row.accuracy, 2, 100.0), format_mean_std(row.best_step, 0),
             format_mean_std(row.steps, 0), row.loss["n"] if row.loss else 0,
             paper_rank[row.combo], our_rank.get(row.combo, "-")) for row in table]
    header = ("n", "conv", "dense", "paper loss", "paper iterations",
              "our best test loss (mean ± std)", f"{CONFIDENCE:.0%} CI", "test accuracy %",
              "best step", "steps trained", "seeds", "paper rank", "our rank")
    return markdown_table(header, rows)


def _table1_section(table: Sequence[Table1Row], drawn: bool) -> str:
    """Section 3: Table 1 ours beside the paper's, its figure (if ``drawn``), rank agreement."""
    lines = ["## 3. Table 1: ours beside the paper's", ""]
    if all(row.loss is None for row in table):
        return "\n".join([*lines, not_run_line("table1"), ""])
    lines += [
        "The paper reports one run per combination. Ours: mean ± sample std over seeds and the "
        f"{CONFIDENCE:.0%} t-interval of the mean of the best test loss (the test loss of the "
        "model with the lowest validation loss), the test accuracy of that model, its step "
        "(best step) and the steps trained until early stopping. Ranks: 1 = lowest loss.", "",
        table1_markdown(table),
    ]
    for name, ours, paper in (("loss", "loss", "paper_loss"),
                              ("iteration count against best step", "best_step",
                               "paper_iterations")):
        agreement = rank_agreement(table, ours, paper)
        if agreement:
            lines.append(f"Rank agreement with the paper ({name}): Spearman ρ = "
                         f"{agreement['rho']:+.2f} (p = {format_p(agreement['p_value'])}, "
                         f"{agreement['n']} combinations).\n")
    return "\n".join(lines + figure_lines(SPECS_BY_KEY["table1_losses"], drawn))


def comparisons_markdown(results: Sequence[PairedResult], unit: Unit = NATS,
                         beside: Mapping[str, PairedResult] | None = None,
                         beside_name: str = "") -> str:
    """One row per comparison: the paper's difference, ours with CI, p, Holm p, verdicts.

    ``unit``: the differences' unit (named in the header unless nats); ``beside``: the same
    comparisons' results, by name, in the family ``beside_name`` this one is shown beside (a
    column says whether each verdict agrees with that one or differs).
    """
    rows = []
    for result in results:
        paper = result.comparison.paper_difference
        paper = "-" if paper is None else f"{paper:+.5f}"
        extra = () if beside is None else (
            beside_agreement(result, beside.get(result.comparison.name)) or "-",)
        if not result.available:
            rows.append((result.comparison.name, paper, f"not available: {result.missing}", "",
                         "", "", "", "", "", *extra))
            continue
        rows.append((result.comparison.name, paper, f"{result.mean_difference:+.4f}",
                     f"[{result.ci_low:+.4f}, {result.ci_high:+.4f}]", result.seeds,
                     format_p(result.p_value), format_p(result.holm_p),
                     "yes" if result.significant else "no", paper_agreement(result) or "-",
                     *extra))
    header = ("first − second", "paper", f"ours: mean difference{_unit_suffix(unit)}",
              f"{CONFIDENCE:.0%} CI", "seeds", "p", "Holm p", f"significant (α = {ALPHA:g})",
              "vs the paper", *(() if beside is None else (f"vs `{beside_name}`",)))
    return markdown_table(header, rows)


def _unit_suffix(unit: Unit) -> str:
    """`` (bits)`` after a loss column's name, or nothing for the default unit (nats)."""
    return f" ({unit.name})" if unit.name else ""


def group_markdown(runs: Sequence[Run], group: study.Group, counts: Counts,
                   unit: Unit = NATS) -> str:
    """One row per trial of ``group``: parameters, seeds, loss (in ``unit``), CI, accuracy,
    best step."""
    rows = []
    for conv, dense in group.pairs:
        trial = group.trial_name(conv, dense)
        loss, accuracy, best = (
            stats.summarize([value * scale for value in
                             seed_values(runs, group.name, trial, field).values()])
            for field, scale in ((METRIC, unit.scale), ("best_test_accuracy", 1.0),
                                 ("best_step", 1.0)))
        count = counts(group.name, conv, dense)
        conv_layers = tuple(group.base_config().model.get("conv_features", (NO_LAYER,)))
        rows.append((f"`{trial}`", conv if conv_layers else "none (dense only)", dense,
                     f"{count[0]:,} ({count[1]:,})" if count else "-",
                     loss["n"] if loss else 0, format_mean_std(loss), format_ci(loss),
                     format_mean_std(accuracy, 2, 100.0), format_mean_std(best, 0)))
    header = ("trial", "conv", "dense", "parameters (agile a, b)", "seeds",
              f"best test loss{_unit_suffix(unit)} (mean ± std)", f"{CONFIDENCE:.0%} CI",
              "test accuracy %", "best step")
    return markdown_table(header, rows)


# ---------------------------------------------------------------------------------------------
# After the families' sections: the figures like the paper's, expressivity.


def figures_section(drawn: Mapping[str, bool], number: int = 9) -> str:
    """Section ``number``: the paper's figures, redrawn, and the learned activations."""
    lines = [f"## {number}. Figures like the paper's", ""]
    for spec in SPECS:
        if spec.section == "figures":
            lines += [f"### {spec.caption}\n", *figure_lines(spec, bool(drawn.get(spec.key)))]
    return "\n".join(lines)


def expressivity_section(fold: FoldCheck | None, ranges: Sequence[Range],
                         number: int = 10) -> str:
    """Section ``number``: the dense fold, numerically, and what it means for the results."""
    lines = [f"## {number}. Expressivity: agile dense layers fold away, per-element conv ones "
             "do not",
             "",
             "In a dense layer, `z = a ⊙ f(W x + c − b)` feeds `V z + d`. Per node, `b` folds "
             "into the layer's bias (`c − b`) and `a` into the next layer's kernel "
             "(`diag(a) V`): the plain network with these weights computes the same function "
             "(`agile.fold`).", ""]
    if fold is None:
        lines += [f"Not checked: `{PARAMS}` is missing from the results.", ""]
    else:
        lines += [
            f"Check on combo 12, seed 0 (final parameters): on {fold.inputs} fixed inputs "
            f"(uniform in [0, 1), numpy seed {fold.seed}), the largest absolute difference "
            "between the logits of the trained agile network and its folded twin with a plain "
            f"`{fold.plain}` dense layer is **{fold_difference(fold.max_abs_difference)}** "
            f"(float32 rounding), for logits up to {fold.max_abs_logit:.2f} in magnitude; dropping "
            f"a and b without folding changes the logits by up to "
            f"{fold.dropped_difference:.2f}.", ""]
    lines += [
        "So the dense layer's agile parameters"
        + (f" ({fold.dense_agile} here)" if fold else "") + " add nothing the plain network "
        "cannot represent: any effect they have is on training (the optimiser sees another "
        "parameterisation of the same function class: other gradients, other Adam step "
        "sizes), not on capacity: a question of optimisation, which other optimiser settings "
        "might answer as well.", "",
        "In the conv layers, a and b per feature-map element"
        + (f" ({fold.conv_agile:,} in combo 12)" if fold else "") + " sit before max "
        "pooling and vary over positions. A conv bias is one number per channel and a kernel "
        "is shared over positions, so neither can absorb a per-position shift or scale, and a "
        "scale that varies within a pooling window changes which element is the maximum. "
        "These parameters enlarge the function class (a per-position affine map between the "
        "convolution and the nonlinearity). Per-channel or per-layer a and b do not: b folds "
        "into the conv bias and a positive a commutes with max pooling and folds into the "
        "next layer's kernel.",
    ]
    for group in ("granularity_channel", "granularity_scalar"):
        low = smallest_conv_a(ranges, group)
        if low is not None:
            state = "positive: these layers fold" if low > 0 else "not positive"
            lines.append(f"In group `{group}` the smallest learned a in a conv layer is "
                         f"{low:.4f} ({state}).")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The conclusion, sentences generated from the numbers.


def verdict(result: PairedResult) -> str:
    """One sentence: which arm has the lower loss, by how much, the CI, Holm p, significance."""
    first, second = result.comparison.first.label, result.comparison.second.label
    if not result.available:
        return f"{first} against {second}: no result ({result.missing})."
    difference = result.mean_difference
    word = "lower" if difference < 0 else "higher" if difference > 0 else "equal"
    size = f" by {abs(difference):.4f}" if difference else ""
    significance = "significant" if result.significant else "not significant"
    return (f"{first} has a {word} best test loss than {second}{size} (difference "
            f"{difference:+.4f}, {CONFIDENCE:.0%} CI [{result.ci_low:+.4f}, "
            f"{result.ci_high:+.4f}], {result.seeds} seeds; Holm p = "
            f"{format_p(result.holm_p)}, {significance} at {ALPHA:g}).")


def short_outcome(result: PairedResult) -> str:
    """A clause: "significantly lower (D [CI], Holm p = P)", "no significant difference (...)"
    or "no result (why)"."""
    if not result.available:
        return f"no result ({result.missing})"
    difference = result.mean_difference
    interval = f"{difference:+.4f} [{result.ci_low:+.4f}, {result.ci_high:+.4f}]"
    if not result.significant:
        return f"no significant difference ({interval}, Holm p = {format_p(result.holm_p)})"
    word = "lower" if difference < 0 else "higher"
    return f"significantly {word} ({interval}, Holm p = {format_p(result.holm_p)})"


def _labels(results: Iterable[PairedResult]) -> str:
    names = [result.comparison.name for result in results]
    return "; ".join(names) if names else "none"


def _table1_levels(table: Sequence[Table1Row], means: Mapping[int, float]) -> str:
    """The sentence comparing the spread of the paper's losses with our seed-to-seed std."""
    paper = [row.paper_loss for row in table]
    stds = [row.loss["std"] for row in table if row.loss is not None and row.loss["n"] > 1]
    level = (f"The paper's losses span {min(paper):.4f} to {max(paper):.4f}; our means span "
             f"{min(means.values()):.4f} to {max(means.values()):.4f}")
    if stds:
        std = float(np.median(stds))
        share = std / (max(paper) - min(paper))
        level += (f". The std over seeds of one combination's best test loss is {std:.4f} "
                  f"(median over combinations), {share:.0%} of the spread of the paper's "
                  "twelve values: " + ("comparable to the differences the paper ranks, so single "
                                       "runs cannot rank the combinations reliably"
                                       if share >= 0.25 else "small against that spread"))
    return level + "."


def _table1_ranking(run: Mapping[int, Table1Row]) -> str:
    """The sentence on our best combination and where the paper's favourites rank."""
    means = {combo: row.loss["mean"] for combo, row in run.items()}
    order = ranks(means)
    best = min(means, key=means.get)
    sentence = (f"Our lowest mean best test loss is combo {best} ({run[best].conv} / "
                f"{run[best].dense}, {means[best]:.4f} {format_ci(run[best].loss)})")
    for combo, claim in ((12, "the paper's best combination"), (3, "the paper's lowest loss")):
        if combo in order:
            sentence += (f"; combo {combo}, {claim}, ranks {order[combo]} of {len(order)} "
                         f"({means[combo]:.4f} {format_ci(run[combo].loss)})")
    steps = ranks({combo: row.best_step["mean"] for combo, row in run.items()})
    if 3 in steps:
        sentence += (f". The paper calls combo 3 slow (the most iterations); its mean best "
                     f"step ranks {steps[3]} of {len(steps)} here (1 = fewest)")
    return sentence + "."


def table1_findings(table: Sequence[Table1Row], results: Sequence[PairedResult]) -> list[str]:
    """Sentences on Table 1: the family's counts, agreement with the paper, ranks, levels."""
    counts = family_counts(results)
    n = len(counts["available"])
    if not n:
        done = sum(row.loss is not None for row in table)
        if not done:
            return ["Table 1's comparisons could not be made: " + not_run_line("table1")]
        return [f"Table 1's comparisons could not be made yet: {done} of {len(table)} "
                "combinations have results, and no comparison has both of its arms."]
    paper_lower = sum(r.comparison.paper_difference < 0 for r in counts["available"])
    out = [f"Of the {n} paired comparisons of an agile variant with its plain counterpart, the "
           f"agile variant has a significantly lower best test loss in {len(counts['lower'])}, "
           f"a significantly higher one in {len(counts['higher'])}, and no significant "
           f"difference in {len(counts['neither'])} (Holm, α = {ALPHA:g}); the paper's Table 1 "
           f"has the agile variant lower in {paper_lower} of these {n}."]
    by_agreement = {key: [r for r in counts["available"] if paper_agreement(r) == key]
                    for key in ("agrees", "contradicts", "not confirmed")}
    out.append(f"We confirm the paper's direction for: {_labels(by_agreement['agrees'])}. We "
               f"find the opposite, significantly, for: {_labels(by_agreement['contradicts'])}. "
               f"Not confirmed (no significant difference): "
               f"{_labels(by_agreement['not confirmed'])}.")
    run = {row.combo: row for row in table if row.loss is not None}
    out.append(_table1_ranking(run))
    out.append(_table1_levels(table, {combo: row.loss["mean"] for combo, row in run.items()}))
    return out


def conclusion_section(blocks: Sequence[tuple[str, Sequence[str]]], fold: FoldCheck | None,
                       number: int = 11) -> str:
    """Section ``number``: the verdicts, every number generated from the results; ``blocks``:
    ``(heading, lines)`` of the families' findings, in order, before the closing paragraph."""
    lines = [f"## {number}. Conclusion", "",
             "Every sentence with a number below is generated from the results, so it stays "
             "true when the study is rerun. A difference that is not significant is not shown "
             "to exist in either direction; its interval bounds how large it can plausibly be."]
    for heading, body in blocks:
        lines += ["", f"### {heading}", "", *body]
    if fold is not None:
        lines += ["", "### Expressivity", "",
                  f"- The agile dense layer of combo 12 folds into a plain one: the logits differ "
                  f"by {fold_difference(fold.max_abs_difference)}. Agile dense layers change how "
                  "the network trains, not what it can represent; only per-element conv "
                  "parameters add capacity."]
    lines += ["", "### What the evidence supports", "",
              "The paper's claim rests on one run per combination. The verdicts above rest on "
              "paired runs over several seeds with a correction for the number of comparisons; "
              "where they and the paper's table disagree, the table's single runs are the "
              "weaker evidence. The ablations show whether a verdict depends on the granularity "
              "of a and b, the activation, the optimiser or the amount of data.", ""]
    return "\n".join(lines)
