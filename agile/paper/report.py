"""The study's report: ``docs/reproduction.md`` and ``docs/figures/study_*.png`` from results.

Reads only the files ``scripts/study.py`` exports to ``docs/results/`` (``runs.csv``,
``curves.csv``, ``agile_ranges.csv``, ``combo12_seed0_params.npz``); every number in the
report is computed here from them (or from the code's own defaults: the config, the paper's
Table 1 in ``agile.paper.combos``, parameter counts of ``agile.paper.models.CNN``), so rerunning
:func:`write_report` on the same files writes the same bytes. A group without rows in
``runs.csv`` is reported as not run; nothing fails for want of it.

The functions that compute are pure (rows in, rows or text out); the figure functions
return ``matplotlib.figure.Figure`` objects built without pyplot.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from agile.errors import UserError
from agile.paper import stats, study
from agile.paper.combos import COMBOS, PAPER_TABLE1
from agile.paper.config import MNIST_CLASSES, MNIST_SIDE, MNIST_TEST_SIZE
from agile.paper.trials import trial_name

ALPHA = 0.05  # Family-wise error rate of the Holm-corrected tests.
CONFIDENCE = 0.95
METRIC = "best_test_loss"  # Test loss of each seed's model at its best validation loss.
RUNS, CURVES, RANGES, PARAMS = (
    "runs.csv", "curves.csv", "agile_ranges.csv", "combo12_seed0_params.npz")
MACHINE = "machine.json"
REPORT_NAME, FIGURE_PREFIX = "reproduction.md", "study_"
STUDY_COMMAND = "MNIST_DIR=../shared/data/mnist python scripts/study.py --workdir=runs/study"
REPORT_COMMAND = "python scripts/study_report.py --results_dir=docs/results --docs_dir=docs"
TEXT_COLUMNS = frozenset({"group", "trial", "conv_activation", "dense_activation", "layer",
                          "param"})
REQUIRED_RUN_COLUMNS = ("group", "trial", "seed", METRIC, "best_test_accuracy", "best_step",
                        "steps", "wall_time_s")


class ReportError(UserError):
    """Results the report cannot be written from (missing or malformed files)."""


# ---------------------------------------------------------------------------------------------
# Reading the results.


@dataclasses.dataclass(frozen=True)
class Results:
    """The exported study results: CSV rows (typed) and combo 12's flattened parameters."""

    runs: list[dict[str, Any]]
    curves: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    ranges: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    params: dict[str, np.ndarray] | None = None
    machine: dict[str, Any] | None = None  # machine.json: where the sweep ran


def _value(column: str, text: str) -> Any:
    """A CSV cell: text for the name columns, else an int, a float, or None when empty."""
    if column in TEXT_COLUMNS:
        return text
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_csv(text: str, name: str = "CSV") -> list[dict[str, Any]]:
    """Rows of CSV ``text`` as dicts, numbers parsed (empty cells None); one-line error if bad."""
    rows = []
    for line, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        try:
            rows.append({column: _value(column, cell or "") for column, cell in row.items()})
        except (ValueError, AttributeError) as err:
            raise ReportError(f"{name} line {line}: a cell is not a number ({err}).") from None
    return rows


def _check_columns(text: str, columns: Sequence[str], name: str) -> None:
    """Raises :class:`ReportError` naming the ``columns`` missing from the CSV header."""
    header = next(csv.reader(io.StringIO(text)), [])
    missing = [column for column in columns if column not in header]
    if missing:
        raise ReportError(f"{name} lacks the column(s) {', '.join(missing)}; export it again "
                          "with scripts/study.py --skip_training.")


def load_results(results_dir: Path) -> Results:
    """The results in ``results_dir``; only ``runs.csv`` must exist (the rest may be absent)."""
    runs_path = results_dir / RUNS
    if not runs_path.is_file():
        raise ReportError(f"No {RUNS} in {results_dir}: run scripts/study.py first (it trains "
                          "the groups and exports their results there).")
    text = runs_path.read_text()
    runs = parse_csv(text, str(runs_path))
    _check_columns(text, REQUIRED_RUN_COLUMNS, str(runs_path))
    optional = {}
    for name in (CURVES, RANGES):
        path = results_dir / name
        optional[name] = parse_csv(path.read_text(), str(path)) if path.is_file() else []
    params = None
    if (results_dir / PARAMS).is_file():
        with np.load(results_dir / PARAMS) as archive:
            params = {key: np.asarray(archive[key]) for key in sorted(archive.files)}
    machine_path = results_dir / MACHINE
    machine = json.loads(machine_path.read_text()) if machine_path.is_file() else None
    return Results(runs, optional[CURVES], optional[RANGES], params, machine)


def describe_machine(machine: Mapping[str, Any] | None) -> str:
    """``machine.json`` in words (what ran the sweep), or a placeholder without it."""
    if not machine:
        return "the machine that ran it"
    return (f"{machine['cpu']} ({machine['logical_cpus']} logical CPUs, "
            f"{machine['memory_gib']:.0f} GiB; JAX {machine['jax']} on {machine['backend']})")


# ---------------------------------------------------------------------------------------------
# Selecting and summarising runs.


def groups_present(runs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Groups with at least one row, in ``study.GROUPS`` order (unknown groups after)."""
    found = {row["group"] for row in runs}
    known = [group.name for group in study.GROUPS if group.name in found]
    return known + sorted(found - set(known))


def seed_values(runs: Iterable[Mapping[str, Any]], group: str, trial: str,
                field: str = METRIC) -> dict[int, float]:
    """``{seed: value of field}`` for one trial of one group (seeds without a value left out)."""
    return {row["seed"]: float(row[field]) for row in runs
            if row["group"] == group and row["trial"] == trial and row[field] is not None}


def summarize(values: Iterable[float]) -> dict[str, float] | None:
    """n, mean, sample std and the 95% t-interval of ``values``; None when there are none."""
    values = list(values)
    if not values:
        return None
    mean, std, half_width = stats.mean_std_ci(values, CONFIDENCE)
    return {"n": len(values), "mean": mean, "std": std,
            "ci_low": mean - half_width, "ci_high": mean + half_width}


def wall_times(runs: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per group: trials, seeds and wall time (each trial's ``wall_time_s`` counted once).

    A trial trains its seeds together, so its wall time is repeated on every seed row.
    """
    totals: dict[str, dict[str, Any]] = {}
    for row in runs:
        entry = totals.setdefault(row["group"], {"trials": {}, "seeds": set()})
        entry["seeds"].add(row["seed"])
        entry["trials"].setdefault(row["trial"], row["wall_time_s"] or 0.0)
    order = groups_present(runs)
    return {group: {"trials": len(totals[group]["trials"]), "seeds": len(totals[group]["seeds"]),
                    "seconds": float(sum(totals[group]["trials"].values()))} for group in order}


def format_duration(seconds: float) -> str:
    """``"3 h 07 min"``, ``"12 min 05 s"`` or ``"8.4 s"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def combo_trial(combo: int) -> str:
    """The trial name of Table 1's row ``combo`` (``combo_NN``)."""
    return trial_name(*COMBOS[combo])


def table1_rows(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per Table 1 combination: the paper's loss and iterations, our summaries.

    ``loss``, ``accuracy``, ``best_step`` and ``steps`` are :func:`summarize` dicts over the
    seeds of group ``table1`` (None when the combination has no rows).
    """
    rows = []
    for combo, (conv, dense) in COMBOS.items():
        trial = combo_trial(combo)
        fields = {key: summarize(seed_values(runs, "table1", trial, field).values())
                  for key, field in (("loss", METRIC), ("accuracy", "best_test_accuracy"),
                                     ("best_step", "best_step"), ("steps", "steps"))}
        paper_loss, paper_iterations = PAPER_TABLE1[combo]
        rows.append({"combo": combo, "conv": conv, "dense": dense, "paper_loss": paper_loss,
                     "paper_iterations": paper_iterations, **fields})
    return rows


def ranks(values: Mapping[Any, float]) -> dict[Any, int]:
    """Rank of each key by value, 1 for the lowest (ties keep key order)."""
    order = sorted(values, key=lambda key: values[key])
    return {key: rank for rank, key in enumerate(order, start=1)}


def rank_agreement(table: Sequence[Mapping[str, Any]], ours: str,
                   paper: str) -> dict[str, float] | None:
    """Spearman's rho (and p) between the paper's column and our means over the rows run.

    None with fewer than three rows run or when either column is constant.
    """
    pairs = [(row[paper], row[ours]["mean"]) for row in table if row[ours] is not None]
    if len(pairs) < 3 or len({p for p, _ in pairs}) < 2 or len({o for _, o in pairs}) < 2:
        return None  # Too few, or a constant column: no rank correlation is defined.
    result = spearmanr([p for p, _ in pairs], [o for _, o in pairs])
    return {"rho": float(result.statistic), "p_value": float(result.pvalue), "n": len(pairs)}


# ---------------------------------------------------------------------------------------------
# Paired comparisons on the same seeds.


@dataclasses.dataclass(frozen=True)
class Arm:
    """One side of a comparison: a trial of a group, and the name the report gives it."""

    group: str
    trial: str
    label: str


@dataclasses.dataclass(frozen=True)
class Comparison:
    """``first - second`` in best test loss on the seeds both have (negative: first is lower).

    ``paper_difference`` is the same difference in the paper's Table 1, where it has both.
    """

    first: Arm
    second: Arm
    paper_difference: float | None = None


def combo_arm(combo: int, group: str = "table1", setting: str = "") -> Arm:
    """Table 1's row ``combo`` as trained in ``group`` (``setting`` qualifies its label)."""
    return Arm(group, combo_trial(combo), f"combo {combo}{f' ({setting})' if setting else ''}")


def pair_arm(group: str, conv: str, dense: str, label: str) -> Arm:
    """The trial of ``group`` that trains the pair (conv, dense)."""
    return Arm(group, study.GROUPS_BY_NAME[group].trial_name(conv, dense), label)


def table1_comparisons() -> list[Comparison]:
    """``study.PAIRED_COMPARISONS``: each agile variant against its plain counterpart."""
    return [Comparison(combo_arm(agile), combo_arm(plain),
                       PAPER_TABLE1[agile][0] - PAPER_TABLE1[plain][0])
            for agile, plain in study.PAIRED_COMPARISONS]


def ablation_comparisons() -> list[Comparison]:
    """The natural comparisons of the groups the paper did not run (one Holm family)."""
    out = []
    for combo in (11, 12):
        for granularity, setting in (("channel", "per channel"), ("scalar", "one per layer")):
            out.append(Comparison(combo_arm(combo, f"granularity_{granularity}", setting),
                                  combo_arm(combo, setting="per element")))
    for name in ("tanh", "gelu"):
        out.append(Comparison(pair_arm("tanh_gelu", f"agile_{name}", f"agile_{name}",
                                       f"agile {name} / agile {name}"),
                              pair_arm("tanh_gelu", name, name, f"{name} / {name}")))
    (_, plain), (_, agile) = study.GROUPS_BY_NAME["dense_only"].pairs
    out.append(Comparison(pair_arm("dense_only", "relu", agile, f"dense-only {agile}"),
                          pair_arm("dense_only", "relu", plain, f"dense-only {plain}")))
    for group, setting in (("table1", "Adam"), ("sgd", "SGD with momentum"),
                           ("full_data", "all training images")):
        out.append(Comparison(combo_arm(12, group, setting), combo_arm(7, group, setting),
                              PAPER_TABLE1[12][0] - PAPER_TABLE1[7][0] if group == "table1"
                              else None))
    conv, dense = study.GROUPS_BY_NAME["combined"].pairs[0]
    combined = pair_arm("combined", conv, dense, f"{conv} / {dense}")
    out += [Comparison(combined, combo_arm(12)), Comparison(combined, combo_arm(6))]
    return out


def _missing_reason(runs: Sequence[Mapping[str, Any]], arms: Sequence[Arm]) -> str:
    """Why a comparison has fewer than two common seeds: which group or trial has no rows."""
    present = set(groups_present(runs))
    reasons = []
    for arm in arms:
        if arm.group not in present:
            reasons.append(f"group {arm.group} was not run")
        elif not seed_values(runs, arm.group, arm.trial):
            reasons.append(f"trial {arm.trial} of group {arm.group} has no results")
    return "; ".join(dict.fromkeys(reasons)) or "fewer than 2 seeds in common"


def compare(runs: Sequence[Mapping[str, Any]], comparison: Comparison,
            field: str = METRIC) -> dict[str, Any]:
    """The paired comparison (``stats.paired_comparison``) on the seeds both arms have.

    Returns ``{"comparison", "seeds"}`` plus the comparison's numbers, or ``"missing"``
    (the reason) when fewer than two seeds are in common.
    """
    first = seed_values(runs, comparison.first.group, comparison.first.trial, field)
    second = seed_values(runs, comparison.second.group, comparison.second.trial, field)
    seeds = sorted(set(first) & set(second))
    if len(seeds) < 2:
        return {"comparison": comparison, "seeds": len(seeds),
                "missing": _missing_reason(runs, (comparison.first, comparison.second))}
    result = stats.paired_comparison([first[s] for s in seeds], [second[s] for s in seeds],
                                     CONFIDENCE)
    return {"comparison": comparison, **result}


def compare_family(runs: Sequence[Mapping[str, Any]],
                   comparisons: Sequence[Comparison]) -> list[dict[str, Any]]:
    """Each comparison, with Holm's correction over those that could be made.

    Adds ``holm_p`` and ``significant`` (``holm_p < ALPHA``) to every available result.
    """
    results = [compare(runs, comparison) for comparison in comparisons]
    available = [result for result in results if "missing" not in result]
    for result, adjusted in zip(available, stats.holm([r["p_value"] for r in available]),
                                strict=True):
        result["holm_p"] = adjusted
        result["significant"] = adjusted < ALPHA
    return results


def paper_agreement(result: Mapping[str, Any]) -> str | None:
    """``"agrees"``, ``"contradicts"`` or ``"not confirmed"``: our result against the paper's
    direction (None where the paper has no such difference or we have no result)."""
    paper = result["comparison"].paper_difference
    if paper is None or "missing" in result:
        return None
    if not result["significant"]:
        return "not confirmed"
    return "agrees" if (result["mean_difference"] < 0) == (paper < 0) else "contradicts"


def format_p(p: float) -> str:
    """A p-value: three decimals, or two significant digits below 0.001."""
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def verdict(result: Mapping[str, Any]) -> str:
    """One sentence: which arm has the lower loss, by how much, the CI, Holm p, significance."""
    comparison = result["comparison"]
    first, second = comparison.first.label, comparison.second.label
    if "missing" in result:
        return f"{first} against {second}: no result ({result['missing']})."
    difference = result["mean_difference"]
    word = "lower" if difference < 0 else "higher" if difference > 0 else "equal"
    size = f" by {abs(difference):.4f}" if difference else ""
    significance = "significant" if result["significant"] else "not significant"
    return (f"{first} has a {word} best test loss than {second}{size} (difference "
            f"{difference:+.4f}, {CONFIDENCE:.0%} CI [{result['ci_low']:+.4f}, "
            f"{result['ci_high']:+.4f}], {result['seeds']} seeds; Holm p = "
            f"{format_p(result['holm_p'])}, {significance} at {ALPHA:g}).")


# ---------------------------------------------------------------------------------------------
# Markdown pieces.


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_mean_std(summary: Mapping[str, float] | None, digits: int = 4,
                    scale: float = 1.0) -> str:
    """``"mean ± std"`` of a :func:`summarize` dict (times ``scale``), or ``"-"``."""
    if summary is None:
        return "-"
    return f"{summary['mean'] * scale:.{digits}f} ± {summary['std'] * scale:.{digits}f}"


def format_ci(summary: Mapping[str, float] | None, digits: int = 4) -> str:
    """``"[low, high]"`` of a :func:`summarize` dict, or ``"-"`` (none, or one seed)."""
    if summary is None or summary["n"] < 2:
        return "-"
    return f"[{summary['ci_low']:.{digits}f}, {summary['ci_high']:.{digits}f}]"


def not_run_line(group: str) -> str:
    """The sentence for a group without results."""
    return f"Group `{group}` was not run: `{RUNS}` has no rows for it."


def wall_time_table(times: Mapping[str, Mapping[str, float]]) -> str:
    """Per group: its question, trials, seeds and wall time; then the total."""
    rows = []
    for group, entry in times.items():
        question = study.GROUPS_BY_NAME[group].question if group in study.GROUPS_BY_NAME else ""
        rows.append((f"`{group}`", question, entry["trials"], entry["seeds"],
                     format_duration(entry["seconds"])))
    total = sum(entry["seconds"] for entry in times.values())
    rows.append(("**total**", "", sum(entry["trials"] for entry in times.values()), "",
                 f"**{format_duration(total)}** ({total / 3600:.2f} h)"))
    return markdown_table(("group", "question", "trials", "seeds", "wall time"), rows)


def command_section(runs: Sequence[Mapping[str, Any]],
                    machine: Mapping[str, Any] | None = None) -> str:
    """Section 1: the commands, and the sweep's wall time per group and in total."""
    times = wall_times(runs)
    missing = [group.name for group in study.GROUPS if group.name not in times]
    lines = [
        "## 1. The command and its wall time", "",
        "Train every group (a resumable sweep: rerun the same command after an interruption and "
        "finished trials are skipped), export the per-run results to `docs/results/` and write "
        "this report and its figures:", "", f"    {STUDY_COMMAND}", "",
        "Rewrite only the report and its figures from the committed results:", "",
        f"    {REPORT_COMMAND}", "",
        f"Wall time of the sweep on {describe_machine(machine)}, from `wall_time_s` in "
        f"`{RUNS}`: each trial trains its seeds together, so its wall time (start-up, "
        "compilation, steps, evaluations, checkpoints) is counted once per trial.", "",
        wall_time_table(times),
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


def map_sides(config) -> list[int]:
    """Side of the square feature map after each pooling (SAME convs keep it, pooling divides)."""
    side, sides = MNIST_SIDE, []
    for _ in config.model.conv_features:
        side //= config.model.pool_size[0]
        sides.append(side)
    return sides


def stopped_early(runs: Sequence[Mapping[str, Any]], config, group: str = "table1") -> tuple:
    """(runs of ``group`` that stopped before the epoch bound, runs of ``group``)."""
    bound = config.num_epochs * (config.data.train_size // config.batch_size)
    steps = [row["steps"] for row in runs if row["group"] == group and row["steps"] is not None]
    return sum(step < bound for step in steps), len(steps)


def setup_rows(config, runs: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(setting, ours, the paper, why) for each choice; ours is read from ``config``."""
    from agile.plotting import initial_value

    m, d = config.model, config.data
    per_epoch = d.train_size // config.batch_size
    kernel, pool = "x".join(map(str, m.kernel_size)), "x".join(map(str, m.pool_size))
    sides = map_sides(config)
    early, total = stopped_early(runs, config)
    seeds = sorted({row["seed"] for row in runs if row["group"] == "table1"})
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


def setup_section(config, runs: Sequence[Mapping[str, Any]]) -> str:
    """Section 2: every setting, which the paper states, and why we chose ours."""
    rows = setup_rows(config, runs)
    unstated = [setting for setting, _, paper, _ in rows if "not stated" in paper]
    return "\n".join([
        "## 2. Setup, and the choices the paper leaves open", "",
        "Read from `agile/paper/config.py` (the defaults every group starts from; each group's "
        "overrides are in `agile/paper/study.py`).", "",
        markdown_table(("setting", "ours", "the paper", "why"), rows),
        "The paper leaves open: " + ", ".join(unstated) + ". The choices above fill these "
        "gaps once, for every combination alike.\n",
    ])


def table1_markdown(table: Sequence[Mapping[str, Any]]) -> str:
    """Table 1 beside the paper's: loss, iterations, our summaries and both rankings."""
    paper_rank = ranks({row["combo"]: row["paper_loss"] for row in table})
    ours = {row["combo"]: row["loss"]["mean"] for row in table if row["loss"] is not None}
    our_rank = ranks(ours)
    rows = [(row["combo"], row["conv"], row["dense"], f"{row['paper_loss']:.5f}",
             row["paper_iterations"], format_mean_std(row["loss"]), format_ci(row["loss"]),
             format_mean_std(row["accuracy"], 2, 100.0), format_mean_std(row["best_step"], 0),
             format_mean_std(row["steps"], 0), row["loss"]["n"] if row["loss"] else 0,
             paper_rank[row["combo"]], our_rank.get(row["combo"], "-")) for row in table]
    header = ("n", "conv", "dense", "paper loss", "paper iterations",
              "our best test loss (mean ± std)", f"{CONFIDENCE:.0%} CI", "test accuracy %",
              "best step", "steps trained", "seeds", "paper rank", "our rank")
    return markdown_table(header, rows)


def table1_section(table: Sequence[Mapping[str, Any]], figure: str | None) -> str:
    """Section 3: Table 1 ours beside the paper's, its figure and the rank agreement."""
    lines = ["## 3. Table 1: ours beside the paper's", ""]
    if all(row["loss"] is None for row in table):
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
    if figure:
        lines += [f"![Best test loss per seed, Table 1](figures/{figure})", "",
                  "Each dot is one seed's best test loss; the bar is the mean and its "
                  f"{CONFIDENCE:.0%} interval; the cross is the paper's single run.", ""]
    return "\n".join(lines)


def comparisons_markdown(results: Sequence[Mapping[str, Any]]) -> str:
    """One row per comparison: the paper's difference, ours with CI, p, Holm p, verdicts."""
    rows = []
    for result in results:
        c = result["comparison"]
        paper = "-" if c.paper_difference is None else f"{c.paper_difference:+.5f}"
        name = f"{c.first.label} − {c.second.label}"
        if "missing" in result:
            rows.append((name, paper, f"not available: {result['missing']}", "", "", "", "",
                         "", ""))
            continue
        rows.append((name, paper, f"{result['mean_difference']:+.4f}",
                     f"[{result['ci_low']:+.4f}, {result['ci_high']:+.4f}]", result["seeds"],
                     format_p(result["p_value"]), format_p(result["holm_p"]),
                     "yes" if result["significant"] else "no", paper_agreement(result) or "-"))
    header = ("first − second", "paper", "ours: mean difference", f"{CONFIDENCE:.0%} CI",
              "seeds", "p", "Holm p", f"significant (α = {ALPHA:g})", "vs the paper")
    return markdown_table(header, rows)


def comparisons_section(results: Sequence[Mapping[str, Any]], figure: str | None) -> str:
    """Section 4: the Table 1 family of paired comparisons."""
    lines = [
        "## 4. Paired comparisons on the same seeds", "",
        "The comparisons of `agile.paper.study.PAIRED_COMPARISONS`: each agile variant against its "
        "plain counterpart (one layer's activation made agile, the rest equal), and the paper's "
        "own comparison of sigmoid / agile sigmoid with sigmoid / relu, on the seeds both "
        "have: the mean of the per-seed differences in best test loss (negative: the first has "
        f"the lower loss), its {CONFIDENCE:.0%} t-interval (not adjusted), the paired t-test's "
        f"p-value and Holm's correction over the {len(results)} comparisons of this family, "
        "which decides significance. 'vs the paper': "
        "agrees (significant, same direction as the paper's difference), contradicts "
        "(significant, opposite direction) or not confirmed (no significant difference).", "",
        comparisons_markdown(results),
    ]
    if figure:
        lines += [f"![Paired differences](figures/{figure})", "",
                  "Mean paired difference with its interval per comparison (left of zero: "
                  "the first has the lower loss); the cross is the paper's difference.", ""]
    return "\n".join(lines)


def parameter_counts(group: str, conv: str, dense: str) -> tuple[int, int] | None:
    """(all parameters, agile a and b) of the network ``group`` trains for (conv, dense).

    Counted with ``agile.paper.models.count_params`` on the model's abstract parameters; None if
    the model cannot be built (e.g. a network this code base cannot construct).
    """
    import jax
    import jax.numpy as jnp
    from flax import traverse_util

    from agile.paper.config import create_model
    from agile.paper.models import count_params

    config = study.GROUPS_BY_NAME[group].base_config()
    config.model.conv_activation, config.model.dense_activation = conv, dense
    images = jnp.zeros((1, MNIST_SIDE, MNIST_SIDE, 1), jnp.float32)
    try:
        shapes = jax.eval_shape(create_model(config).init, jax.random.key(0), images)["params"]
    except ValueError:
        return None
    params = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)
    flat = traverse_util.flatten_dict(params)
    agile = [leaf for path, leaf in flat.items() if path[-1] in ("a", "b")]
    return count_params(params), count_params(agile)


def group_markdown(runs: Sequence[Mapping[str, Any]], group: study.Group,
                   counts: Callable[[str, str, str], tuple[int, int] | None]) -> str:
    """One row per trial of ``group``: parameters, seeds, loss, CI, accuracy, best step."""
    rows = []
    for conv, dense in group.pairs:
        trial = group.trial_name(conv, dense)
        loss = summarize(seed_values(runs, group.name, trial).values())
        accuracy = summarize(seed_values(runs, group.name, trial, "best_test_accuracy").values())
        best = summarize(seed_values(runs, group.name, trial, "best_step").values())
        count = counts(group.name, conv, dense)
        conv_layers = tuple(group.base_config().model.conv_features)
        rows.append((f"`{trial}`", conv if conv_layers else "none (dense only)", dense,
                     f"{count[0]:,} ({count[1]:,})" if count else "-",
                     loss["n"] if loss else 0, format_mean_std(loss), format_ci(loss),
                     format_mean_std(accuracy, 2, 100.0), format_mean_std(best, 0)))
    header = ("trial", "conv", "dense", "parameters (agile a, b)", "seeds",
              "best test loss (mean ± std)", f"{CONFIDENCE:.0%} CI", "test accuracy %",
              "best step")
    return markdown_table(header, rows)


def ablations_section(runs: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]],
                      counts: Callable[[str, str, str], tuple[int, int] | None]) -> str:
    """Section 5: each group the paper did not run, and their comparisons (one Holm family)."""
    present = set(groups_present(runs))
    lines = ["## 5. What the paper did not run", ""]
    for group in study.GROUPS:
        if group.name == "table1":
            continue
        lines += [f"### `{group.name}`", "", group.question, ""]
        lines.append(group_markdown(runs, group, counts) if group.name in present
                     else not_run_line(group.name) + "\n")
    lines += [
        "### Comparisons", "",
        "The natural comparison of each group, paired on common seeds: granularity against "
        "the per-element default (Table 1's runs), agile against plain tanh and gelu, agile "
        "against plain sigmoid in the dense-only network, combo 12 against combo 7 with each "
        "optimizer and data size, and the combined activation against combos 12 and 6. Holm's "
        f"correction runs over these {len(results)} comparisons (a family of their own).", "",
        comparisons_markdown(results),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Figures (``matplotlib.figure.Figure`` without pyplot; ``save_figure`` writes them).

DPI = 100
DENSE_COLORS = {"relu": "tab:blue", "agile_relu": "tab:orange", "agile_sigmoid": "tab:green",
                "sigmoid": "tab:red"}


def curve_band(curves: Iterable[Mapping[str, Any]], group: str, trial: str,
               column: str = "test_loss", min_fraction: float = 0.5) -> dict[str, Any]:
    """Mean and sample std over seeds of ``column`` per step, where enough seeds have it.

    Seeds stop at different steps (early stopping), so a step is kept only when at least
    ``min_fraction`` of the trial's seeds have a value there. Returns ``steps``, ``mean``,
    ``std`` (arrays) and ``seeds`` (how many seeds the trial has).
    """
    points: dict[int, list[float]] = {}
    seeds = set()
    for row in curves:
        if row["group"] == group and row["trial"] == trial:
            seeds.add(row["seed"])
            if row[column] is not None:
                points.setdefault(row["step"], []).append(float(row[column]))
    need = max(1, math.ceil(min_fraction * len(seeds)))
    steps = sorted(step for step, values in points.items() if len(values) >= need)
    return {"steps": np.array(steps, np.int64),
            "mean": np.array([np.mean(points[s]) for s in steps]),
            "std": np.array([np.std(points[s], ddof=1) if len(points[s]) > 1 else 0.0
                             for s in steps]),
            "seeds": len(seeds)}


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


def figure_table1_curves(curves: Sequence[Mapping[str, Any]]):
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


def figure_best_five(curves: Sequence[Mapping[str, Any]], table: Sequence[Mapping[str, Any]]):
    """Fig. 13: the five combinations with the lowest mean best test loss."""
    from matplotlib.figure import Figure

    run = [row for row in table if row["loss"] is not None]
    best = sorted(run, key=lambda row: row["loss"]["mean"])[:5]
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.subplots()
    drawn = False
    for rank, row in enumerate(best, start=1):
        band = curve_band(curves, "table1", combo_trial(row["combo"]))
        drawn |= _draw_band(ax, band, f"#{rank} combo {row['combo']}: {row['conv']} / "
                            f"{row['dense']}", f"C{rank - 1}")
    _loss_axes(ax)
    _legend(ax, fontsize=9)
    ax.set_title("The five lowest mean best test losses: test loss during training, "
                 "mean ± std over seeds (cf. the paper's Fig. 13)", fontsize=10)
    return fig if drawn else None


def figure_dense_only(curves: Sequence[Mapping[str, Any]]):
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


def combo12_ranges(ranges: Iterable[Mapping[str, Any]]) -> dict[str, dict[int, dict]]:
    """``{layer: {seed: {"a": row, "b": row}}}`` of Table 1's combo 12 (final a and b)."""
    out: dict[str, dict[int, dict]] = {}
    for row in ranges:
        if row["group"] == "table1" and row["trial"] == combo_trial(12):
            out.setdefault(row["layer"], {}).setdefault(row["seed"], {})[row["param"]] = row
    return {layer: out[layer] for layer in sorted(out)}


def figure_combo12_ranges(ranges: Sequence[Mapping[str, Any]]):
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
            ax.add_patch(Rectangle((a["min"], b["min"]), a["max"] - a["min"],
                                   b["max"] - b["min"], fill=False, lw=1, alpha=0.6,
                                   color="tab:blue"))
            ax.plot(a["mean"], b["mean"], ".", color="tab:blue", ms=4)
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


def figure_table1_losses(runs: Sequence[Mapping[str, Any]], table: Sequence[Mapping[str, Any]]):
    """Per combination: each seed's best test loss, the mean with its CI, the paper's value."""
    from matplotlib.figure import Figure

    if all(row["loss"] is None for row in table):
        return None
    fig = Figure(figsize=(11, 4.8), layout="constrained")
    ax = fig.subplots()
    for row in table:
        combo, summary = row["combo"], row["loss"]
        values = list(seed_values(runs, "table1", combo_trial(combo)).values())
        offsets = np.linspace(-0.18, 0.18, len(values)) if len(values) > 1 else np.zeros(1)
        ax.plot(combo + offsets[:len(values)], values, "o", color="tab:blue", ms=3.5, alpha=0.5,
                label="one seed" if combo == 1 else None)
        if summary is not None and summary["n"] > 1:
            ax.errorbar(combo + 0.3, summary["mean"], yerr=[[summary["mean"] - summary["ci_low"]],
                        [summary["ci_high"] - summary["mean"]]], fmt="s", color="k", ms=4,
                        capsize=3, label=f"mean, {CONFIDENCE:.0%} CI" if combo == 1 else None)
        ax.plot(combo - 0.3, row["paper_loss"], "x", color="tab:red", ms=9, mew=2,
                label="paper (one run)" if combo == 1 else None)
    ax.set_xticks(list(COMBOS), [f"{c}\n{conv}\n{dense}" for c, (conv, dense) in COMBOS.items()],
                  fontsize=7)
    ax.set_ylabel("best test loss")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Table 1: best test loss per combination (n, conv, dense)")
    return fig


def _forest(ax, results: Sequence[Mapping[str, Any]], title: str) -> None:
    """Horizontal mean differences with CIs; grey when not significant after Holm."""
    shown = [r for r in results if "missing" not in r]
    for y, result in enumerate(reversed(shown)):
        color = "tab:blue" if result["significant"] else "tab:gray"
        ax.errorbar(result["mean_difference"], y, xerr=[[result["mean_difference"]
                    - result["ci_low"]], [result["ci_high"] - result["mean_difference"]]],
                    fmt="o", color=color, capsize=3, ms=4)
        if result["comparison"].paper_difference is not None:
            ax.plot(result["comparison"].paper_difference, y, "x", color="tab:red", ms=7, mew=2)
    labels = [f"{r['comparison'].first.label} − {r['comparison'].second.label}"
              for r in reversed(shown)]
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("difference in best test loss (first − second)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)


def figure_differences(families: Sequence[tuple[str, Sequence[Mapping[str, Any]]]]):
    """Forest plot per family of comparisons (those with results); None if none has any."""
    from matplotlib.figure import Figure

    shown = [(title, results) for title, results in families
             if any("missing" not in result for result in results)]
    if not shown:
        return None
    heights = [max(2, sum("missing" not in r for r in results)) for _, results in shown]
    fig = Figure(figsize=(10, 1.2 + 0.32 * sum(heights)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(shown), 1, height_ratios=heights))
    for ax, (title, results) in zip(axes, shown, strict=True):
        _forest(ax, results, title)
    fig.suptitle(f"Paired differences, mean and {CONFIDENCE:.0%} CI (blue: significant after "
                 "Holm; grey: not; red x: the paper's difference)", fontsize=10)
    return fig


def params_tree(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """A linen params dict from the npz's flattened ``"layer/param"`` keys."""
    from flax import traverse_util

    return traverse_util.unflatten_dict({tuple(key.split("/")): value
                                         for key, value in flat.items()})


def combo12_layers(flat: Mapping[str, np.ndarray]) -> dict[str, str]:
    """``{agile layer: its activation}`` in combo 12's parameters (conv layers: conv's)."""
    conv, dense = COMBOS[12]
    layers = sorted({key.rsplit("/", 1)[0] for key in flat if key.endswith("/a")})
    return {layer: conv if layer.startswith("conv") else dense for layer in layers}


def figure_activations(flat: Mapping[str, np.ndarray]):
    """Combo 12 (seed 0): each agile layer's learned a*f(x - b), via agile.plotting."""
    from agile.plotting import plot_activations

    layers = combo12_layers(flat)
    if not layers:
        return None
    fig = plot_activations(params_tree(flat), layers)
    fig.suptitle("Combo 12, seed 0, end of training: learned activations per layer")
    return fig


def figure_maps(flat: Mapping[str, np.ndarray], layer: str = "conv_act_0"):
    """Combo 12 (seed 0): a and b of the first conv layer over the feature map."""
    from agile.plotting import plot_parameter_maps

    if f"{layer}/a" not in flat or np.ndim(flat[f"{layer}/a"]) not in (3, 4):
        return None
    return plot_parameter_maps(params_tree(flat), layer)


def fold_check(flat: Mapping[str, np.ndarray], inputs: int = 64, seed: int = 0
               ) -> dict[str, Any]:
    """Combo 12's network against its folded plain twin (``study.fold_dense_agile``).

    Applies both to ``inputs`` fixed images (uniform in [0, 1), numpy seed ``seed``) and
    returns the largest absolute logit difference, the largest absolute logit, the change
    when a and b are simply dropped (no fold), and the agile parameter counts.
    """
    import jax

    from agile.activations import plain_name
    from agile.paper.config import create_model, get_config

    params = params_tree(flat)
    agile_config, plain_config = get_config(12), get_config(12)
    plain_config.model.dense_activation = plain_name(agile_config.model.dense_activation)
    images = np.random.default_rng(seed).uniform(
        0, 1, (inputs, MNIST_SIDE, MNIST_SIDE, 1)).astype(np.float32)
    agile_logits = np.asarray(jax.jit(create_model(agile_config).apply)({"params": params},
                                                                         images))
    plain = jax.jit(create_model(plain_config).apply)
    folded = study.fold_dense_agile(params, "hidden_act", "hidden", "output")
    dropped = {name: layer for name, layer in params.items() if name != "hidden_act"}
    folded_logits = np.asarray(plain({"params": folded}, images))
    dropped_logits = np.asarray(plain({"params": dropped}, images))
    agile_counts = {layer: int(sum(np.size(flat[f"{layer}/{p}"]) for p in ("a", "b")))
                    for layer in combo12_layers(flat)}
    return {"inputs": inputs, "seed": seed, "plain": plain_config.model.dense_activation,
            "max_abs_difference": float(np.abs(agile_logits - folded_logits).max()),
            "max_abs_logit": float(np.abs(agile_logits).max()),
            "dropped_difference": float(np.abs(agile_logits - dropped_logits).max()),
            "dense_agile": agile_counts.get("hidden_act", 0),
            "conv_agile": sum(n for layer, n in agile_counts.items() if layer != "hidden_act")}


def smallest_conv_a(ranges: Iterable[Mapping[str, Any]], group: str) -> float | None:
    """The smallest final a in any conv layer of ``group``'s runs (None without rows)."""
    values = [row["min"] for row in ranges if row["group"] == group and row["param"] == "a"
              and row["layer"].startswith("conv")]
    return min(values) if values else None


def expressivity_section(fold: Mapping[str, Any] | None,
                         ranges: Sequence[Mapping[str, Any]]) -> str:
    """Section 7: the dense fold, numerically, and what it means for the results."""
    lines = ["## 7. Expressivity: agile dense layers fold away, per-element conv ones do not", "",
             "In a dense layer, `z = a ⊙ f(W x + c − b)` feeds `V z + d`. Per node, `b` folds "
             "into the layer's bias (`c − b`) and `a` into the next layer's kernel "
             "(`diag(a) V`): the plain network with these weights computes the same function "
             "(`agile.paper.study.fold_dense_agile`).", ""]
    if fold is None:
        lines += [f"Not checked: `{PARAMS}` is missing from the results.", ""]
    else:
        lines += [
            f"Check on combo 12, seed 0 (final parameters): on {fold['inputs']} fixed inputs "
            f"(uniform in [0, 1), numpy seed {fold['seed']}), the largest absolute difference "
            "between the logits of the trained agile network and its folded twin with a plain "
            f"`{fold['plain']}` dense layer is **{fold['max_abs_difference']:.1e}** (float32 "
            f"rounding), for logits up to {fold['max_abs_logit']:.2f} in magnitude; dropping "
            f"a and b without folding changes the logits by up to "
            f"{fold['dropped_difference']:.2f}.", ""]
    lines += [
        "So the dense layer's agile parameters"
        + (f" ({fold['dense_agile']} here)" if fold else "") + " add nothing the plain network "
        "cannot represent: any effect they have is on training (the optimiser sees another "
        "parameterisation of the same function class: other gradients, other Adam step "
        "sizes), not on capacity: a question of optimisation, which other optimiser settings "
        "might answer as well.", "",
        "In the conv layers, a and b per feature-map element"
        + (f" ({fold['conv_agile']:,} in combo 12)" if fold else "") + " sit before max "
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
# The conclusion: sentences generated from the numbers.


def _labels(results: Iterable[Mapping[str, Any]]) -> str:
    names = [f"{r['comparison'].first.label} − {r['comparison'].second.label}" for r in results]
    return "; ".join(names) if names else "none"


def family_counts(results: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """The available results split into significantly lower, significantly higher, neither."""
    available = [r for r in results if "missing" not in r]
    return {"lower": [r for r in available if r["significant"] and r["mean_difference"] < 0],
            "higher": [r for r in available if r["significant"] and r["mean_difference"] > 0],
            "neither": [r for r in available if not r["significant"]],
            "available": available}


def table1_findings(table: Sequence[Mapping[str, Any]],
                    results: Sequence[Mapping[str, Any]]) -> list[str]:
    """Sentences on Table 1: the family's counts, agreement with the paper, ranks, levels."""
    counts = family_counts(results)
    n = len(counts["available"])
    if not n:
        done = sum(row["loss"] is not None for row in table)
        if not done:
            return ["Table 1's comparisons could not be made: " + not_run_line("table1")]
        return [f"Table 1's comparisons could not be made yet: {done} of {len(table)} "
                "combinations have results, and no comparison has both of its arms."]
    paper_lower = sum(r["comparison"].paper_difference < 0 for r in counts["available"])
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
    run = {row["combo"]: row for row in table if row["loss"] is not None}
    means = {combo: row["loss"]["mean"] for combo, row in run.items()}
    order = ranks(means)
    best = min(means, key=means.get)
    sentence = (f"Our lowest mean best test loss is combo {best} ({run[best]['conv']} / "
                f"{run[best]['dense']}, {means[best]:.4f} {format_ci(run[best]['loss'])})")
    for combo, claim in ((12, "the paper's best combination"),
                         (3, "the paper's lowest loss")):
        if combo in order:
            sentence += (f"; combo {combo}, {claim}, ranks {order[combo]} of {len(order)} "
                         f"({means[combo]:.4f} {format_ci(run[combo]['loss'])})")
    steps = ranks({combo: row["best_step"]["mean"] for combo, row in run.items()})
    if 3 in steps:
        sentence += (f". The paper calls combo 3 slow (the most iterations); its mean best "
                     f"step ranks {steps[3]} of {len(steps)} here (1 = fewest)")
    out.append(sentence + ".")
    paper = [row["paper_loss"] for row in table]
    stds = [row["loss"]["std"] for row in run.values() if row["loss"]["n"] > 1]
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
    out.append(level + ".")
    return out


def short_outcome(result: Mapping[str, Any]) -> str:
    """A clause: "lower by X (Holm p = P)", "no significant difference (D [CI])" or "not run"."""
    if "missing" in result:
        return f"no result ({result['missing']})"
    difference = result["mean_difference"]
    interval = f"{difference:+.4f} [{result['ci_low']:+.4f}, {result['ci_high']:+.4f}]"
    if not result["significant"]:
        return f"no significant difference ({interval}, Holm p = {format_p(result['holm_p'])})"
    word = "lower" if difference < 0 else "higher"
    return f"significantly {word} ({interval}, Holm p = {format_p(result['holm_p'])})"


ABLATION_THEMES = (  # (sentence opening, which comparisons it covers)
    ("Granularity (fewer a and b than one per element)",
     lambda c: c.first.group.startswith("granularity")),
    ("Agile against plain tanh and gelu in both layers", lambda c: c.first.group == "tanh_gelu"),
    ("The paper's Fig. 11 shows agile sigmoid better than sigmoid in a dense-only network; "
     "ours", lambda c: c.first.group == "dense_only"),
    ("Combo 12 against combo 7 (does the verdict depend on the optimiser or the data size?)",
     lambda c: c.second.trial == combo_trial(7) and c.first.trial == combo_trial(12)),
    ("The combined activation in the conv layers", lambda c: c.first.group == "combined"),
)


def ablation_findings(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """One sentence per theme of the ablations: each comparison's outcome, with numbers."""
    out = []
    for opening, covers in ABLATION_THEMES:
        parts = [f"{r['comparison'].first.label} − {r['comparison'].second.label}: "
                 f"{short_outcome(r)}" for r in results if covers(r["comparison"])]
        if parts:
            out.append(f"{opening}: " + "; ".join(parts) + ".")
    return out


def conclusion_section(table: Sequence[Mapping[str, Any]],
                       table1_results: Sequence[Mapping[str, Any]],
                       ablation_results: Sequence[Mapping[str, Any]],
                       fold: Mapping[str, Any] | None) -> str:
    """Section 8: the verdicts, every number generated from the results."""
    lines = ["## 8. Conclusion", "",
             "Every sentence with a number below is generated from the results, so it stays "
             "true when the study is rerun. A difference that is not significant is not shown "
             "to exist in either direction; its interval bounds how large it can plausibly be.",
             "", "### Table 1", ""]
    lines += [f"- {sentence}" for sentence in table1_findings(table, table1_results)]
    lines += ["", "Each comparison:", ""]
    lines += [f"- {verdict(result)}" for result in table1_results]
    lines += ["", "### What the paper did not run", "",
              "Differences are first − second in best test loss, with their "
              f"{CONFIDENCE:.0%} CI (not adjusted) and Holm's correction over this family.", ""]
    lines += [f"- {sentence}" for sentence in ablation_findings(ablation_results)]
    if fold is not None:
        lines += ["", "### Expressivity", "",
                  f"- The agile dense layer of combo 12 folds into a plain one: the logits differ "
                  f"by at most {fold['max_abs_difference']:.1e}. Agile dense layers change how "
                  "the network trains, not what it can represent; only per-element conv "
                  "parameters add capacity."]
    lines += ["", "### What the evidence supports", "",
              "The paper's claim rests on one run per combination. The verdicts above rest on "
              "paired runs over several seeds with a correction for the number of comparisons; "
              "where they and the paper's table disagree, the table's single runs are the "
              "weaker evidence. The ablations show whether a verdict depends on the granularity "
              "of a and b, the activation, the optimiser or the amount of data.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Putting it together.

FIGURES = {  # key: (file name, caption)
    "table1_losses": ("study_table1_losses.png", "Best test loss per seed, Table 1"),
    "differences": ("study_paired_differences.png", "Paired differences"),
    "fig12": ("study_fig12_test_loss_curves.png",
              "Test loss of the 12 combinations during training (Fig. 12)"),
    "fig13": ("study_fig13_best_five.png", "The best five combinations (Fig. 13)"),
    "fig14": ("study_fig14_combo12_ab_ranges.png", "Ranges of a and b in combo 12 (Fig. 14)"),
    "fig11": ("study_fig11_dense_only.png", "Sigmoid against agile sigmoid, dense only "
              "(Fig. 11)"),
    "activations": ("study_combo12_activations.png", "Learned activations of combo 12"),
    "maps": ("study_combo12_maps_conv_act_0.png", "a and b over the first conv layer's map"),
}


@dataclasses.dataclass(frozen=True)
class Analysis:
    """Everything the report computes from the results before writing."""

    table: list[dict[str, Any]]
    table1_results: list[dict[str, Any]]
    ablation_results: list[dict[str, Any]]
    fold: dict[str, Any] | None


def analyse(results: Results) -> Analysis:
    """Table 1's rows, both families of paired comparisons, and the fold check."""
    params = results.params or {}
    fold = fold_check(params) if "hidden_act/a" in params else None
    return Analysis(table1_rows(results.runs), compare_family(results.runs, table1_comparisons()),
                    compare_family(results.runs, ablation_comparisons()), fold)


def build_figures(results: Results, analysis: Analysis) -> dict[str, Any]:
    """``{key of FIGURES: Figure or None}`` (None: no data for it)."""
    params = results.params or {}
    return {
        "table1_losses": figure_table1_losses(results.runs, analysis.table),
        "differences": figure_differences((
            ("Table 1: agile variant − plain counterpart", analysis.table1_results),
            ("What the paper did not run", analysis.ablation_results))),
        "fig12": figure_table1_curves(results.curves),
        "fig13": figure_best_five(results.curves, analysis.table),
        "fig14": figure_combo12_ranges(results.ranges),
        "fig11": figure_dense_only(results.curves),
        "activations": figure_activations(params) if params else None,
        "maps": figure_maps(params) if params else None,
    }


FIGURE_NOTES = {
    "fig12": "Mean ± one std over seeds of the test loss (evaluated every few epochs); a step "
             "is drawn while at least half of a combination's seeds are still training.",
    "fig13": "The five combinations with the lowest mean best test loss, drawn as in Fig. 12.",
    "fig14": "Per layer, each seed's range of a (x) against its range of b (y) at the end of "
             "training.",
    "fig11": "The dense-only network; test loss (left) and validation loss (right).",
    "activations": "Combo 12, seed 0, final parameters: the median learned a·f(x − b) over "
                   "each layer's elements with a percentile band, the plain f dashed, and "
                   "histograms of a and b (`agile.plotting.plot_activations`).",
    "maps": "Combo 12, seed 0: a and b of the first conv layer over its feature map, per "
            "channel (`agile.plotting.plot_parameter_maps`).",
}
MISSING_FIGURE = {"fig12": "no Table 1 curves", "fig13": "no Table 1 curves",
                  "fig14": "no a/b ranges of combo 12", "fig11": "group dense_only has no curves",
                  "activations": f"no {PARAMS}", "maps": f"no {PARAMS}"}


def figures_section(drawn: Mapping[str, bool]) -> str:
    """Section 6: the paper's figures, redrawn, and the learned activations."""
    lines = ["## 6. Figures like the paper's", ""]
    for key in ("fig12", "fig13", "fig14", "fig11", "activations", "maps"):
        name, caption = FIGURES[key]
        lines.append(f"### {caption}\n")
        if drawn.get(key):
            lines += [f"![{caption}](figures/{name})", "", FIGURE_NOTES[key], ""]
        else:
            lines += [f"Not drawn: {MISSING_FIGURE[key]} in the results.", ""]
    return "\n".join(lines)


def build_markdown(results: Results, analysis: Analysis, drawn: Mapping[str, bool],
                   config=None,
                   counts: Callable[[str, str, str], tuple[int, int] | None] = parameter_counts
                   ) -> str:
    """The whole of ``docs/reproduction.md``."""
    from agile.paper.config import get_config

    config = config if config is not None else get_config()
    figure = {key: FIGURES[key][0] if drawn.get(key) else None for key in FIGURES}
    head = [
        "# Reproduction study: Kong, Ko & Ko (2020), agile activation functions", "",
        "Generated by `scripts/study_report.py` from `docs/results/` (do not edit by hand; "
        "rerun the command in section 1). Every number below is computed from those files "
        "or from the code's defaults. Sections: 1 command and wall time, 2 setup, 3 Table 1, "
        "4 paired comparisons, 5 what the paper did not run, 6 figures, 7 expressivity, "
        "8 conclusion. The paper's printed derivatives are corrected in "
        "[errata.md](errata.md).", "",
    ]
    return "\n".join([
        *head,
        command_section(results.runs, results.machine),
        setup_section(config, results.runs),
        table1_section(analysis.table, figure["table1_losses"]),
        comparisons_section(analysis.table1_results, figure["differences"]),
        ablations_section(results.runs, analysis.ablation_results, counts),
        figures_section(drawn),
        expressivity_section(analysis.fold, results.ranges),
        conclusion_section(analysis.table, analysis.table1_results, analysis.ablation_results,
                           analysis.fold),
    ]).rstrip("\n") + "\n"


def save_figure(fig, path: Path, dpi: int = DPI) -> None:
    """Writes ``fig`` as PNG without the matplotlib version in its metadata (same bytes on
    a rerun), through a temporary file and a rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    fig.savefig(temporary, format="png", dpi=dpi, metadata={"Software": None})
    temporary.replace(path)


def write_report(results_dir: Path, docs_dir: Path, dpi: int = DPI) -> list[Path]:
    """Writes ``docs_dir/reproduction.md`` and ``docs_dir/figures/study_*.png``.

    Figures without data are not drawn, and every other ``study_*.png`` in the figures
    folder is removed, so the folder holds exactly the report's figures. Returns the paths
    written.
    """
    from agile.paper.workdir import write_text_atomically

    results = load_results(Path(results_dir))
    analysis = analyse(results)
    figures_dir = Path(docs_dir) / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    written, drawn = [], {}
    for key, fig in build_figures(results, analysis).items():
        drawn[key] = fig is not None
        if fig is not None:
            written.append(figures_dir / FIGURES[key][0])
            save_figure(fig, written[-1], dpi)
    for path in sorted(figures_dir.glob(f"{FIGURE_PREFIX}*.png")):
        if path not in written:  # not drawn this time (no data), or no longer drawn at all
            path.unlink()
    report = Path(docs_dir) / REPORT_NAME
    write_text_atomically(report, build_markdown(results, analysis, drawn))
    return [report, *written]
