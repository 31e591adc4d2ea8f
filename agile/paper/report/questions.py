"""The report's sections on the questions the first study left open: power, the a/b
learning rate, and the field's learnable activations as baselines (issue #21).

Numbers from :mod:`agile.paper.report.analysis` (``PowerRow``s, the lr and baseline
families); the sentences are generated from them, as in :mod:`agile.paper.report.text`.
"""

from __future__ import annotations

from collections.abc import Sequence

from agile.paper import study
from agile.paper.report.analysis import (
    ALPHA,
    LR_GROUPS,
    RESOLUTION,
    Analysis,
    PairedResult,
    PowerRow,
)
from agile.paper.report.results import Run
from agile.paper.report.text import (
    Counts,
    comparisons_markdown,
    group_markdown,
    markdown_table,
    not_run_line,
    short_outcome,
)
from agile.paper.stats import MAX_SEEDS, POWER

NEW_GROUPS = ("agile_lr_0.1x", "agile_lr_10x", "baselines", "capacity")


def _seeds(count: int | None) -> str:
    if count is None:
        return "-"
    return f"> {MAX_SEEDS:,}" if count > MAX_SEEDS else f"{count:,}"


def power_markdown(rows: Sequence[PowerRow]) -> str:
    """One row per comparison: seeds, pairing, spread, what it resolves, what would."""
    table = []
    for row in rows:
        if row.missing is not None:
            table.append((row.comparison.name, row.seeds, f"not available: {row.missing}",
                          "", "", "", "", "", ""))
            continue
        table.append((row.comparison.name, row.seeds, f"{row.correlation:+.2f}",
                      f"{row.std:.4f}", f"{row.mde:.4f}", f"{row.mde_holm:.4f}",
                      f"{_seeds(row.needed)} / {_seeds(row.needed_holm)}",
                      _seeds(row.for_resolution), "yes" if row.settled else "no"))
    header = ("first − second", "seeds", "r within pairs", "std of differences",
              f"MDE (α = {ALPHA:g})", "MDE (Holm: α / m)",
              "seeds to find the observed difference (α / Holm)",
              f"seeds for MDE ≤ {RESOLUTION:g} (Holm)", "settled")
    return markdown_table(header, table)


def power_findings(rows: Sequence[PowerRow], results: Sequence[PairedResult]) -> list[str]:
    """Sentences: whether pairing helps, which comparisons are settled and how, which not."""
    made = [row for row in rows if row.missing is None]
    if not made:
        return ["No comparison of this family has results yet."]
    significant = {r.comparison for r in results if r.available and r.significant}
    positive = sum(row.correlation > 0 for row in made)
    out = [f"Pairing by seed: the two arms' best test losses correlate positively in "
           f"{positive} of {len(made)} comparisons (median r = "
           f"{sorted(row.correlation for row in made)[len(made) // 2]:+.2f}); where r is "
           "near 0 or below, the pairing removes no variance."]
    as_difference = [row.comparison.name for row in made if row.comparison in significant]
    as_bound = [row.comparison.name for row in made
                if row.settled and row.comparison not in significant]
    open_ = [row for row in made if not row.settled]
    out.append("Settled as a difference (significant after Holm): "
               + ("; ".join(as_difference) or "none") + ".")
    out.append(f"Settled as no difference of {RESOLUTION:g} or more (not significant, and "
               f"{POWER:.0%} power to find {RESOLUTION:g} at Holm's strictest level): "
               + ("; ".join(as_bound) or "none") + ".")
    if open_:
        out.append("Not resolved at this resolution: " + "; ".join(
            f"{row.comparison.name} (MDE {row.mde_holm:.4f} with {row.seeds} seeds; "
            f"{_seeds(row.for_resolution)} seeds for {RESOLUTION:g})" for row in open_) + ".")
    return out


def power_section(analysis: Analysis) -> str:
    """Section 5: what the seeds of each family can resolve."""
    lines = [
        "## 5. Power: what the seeds can resolve", "",
        "For each paired comparison: the correlation of the two arms over the common seeds "
        "(pairing by seed removes the variance the arms share only where it is positive), the "
        "std of the per-seed differences, the minimum detectable effect (MDE: the smallest true "
        f"difference in best test loss a paired t-test finds with {POWER:.0%} power with these "
        f"seeds, at α = {ALPHA:g} and at Holm's strictest level α / m for the m comparisons of "
        "the family), the seeds that would find the observed mean difference with that power, "
        f"and the seeds for an MDE of {RESOLUTION:g}. A comparison is settled when it is "
        f"significant after Holm, or when its MDE at α / m is at most {RESOLUTION:g} (then "
        "no difference that large is there to find). Noncentral t, from the spread these runs "
        "show.", "", "### Table 1's comparisons", "", power_markdown(analysis.table1_power)]
    lines += [f"- {s}" for s in power_findings(analysis.table1_power, analysis.table1_results)]
    return "\n".join(lines) + "\n"


def _groups_tables(runs: Sequence[Run], names: Sequence[str], counts: Counts) -> list[str]:
    present = {row.group for row in runs}
    lines = []
    for name in names:
        group = study.GROUPS_BY_NAME[name]
        lines += [f"### `{name}`", "", group.question, ""]
        lines.append(group_markdown(runs, group, counts) if name in present
                     else not_run_line(name) + "\n")
    return lines


def lr_section(runs: Sequence[Run], analysis: Analysis, counts: Counts) -> str:
    """Section 6: the paper's separate rate for a and b, at 0.1x and 10x the weights'."""
    lines = ["## 6. The learning rate of a and b", "",
             "The paper trains a and b with their own rate (ρ3); Table 1 here uses the weights' "
             "rate for them (Adam 1e-3). Combos 10, 11 and 12 (the ReLU family: agile conv "
             "layers) again with a and b at 0.1x and at 10x that rate, on Table 1's seeds, "
             "against plain combo 7 at each rate, and each rate against 1x. One Holm family.", ""]
    lines += _groups_tables(runs, ("agile_lr_0.1x", "agile_lr_10x"), counts)
    lines += ["### Comparisons", "", comparisons_markdown(analysis.lr_results),
              power_markdown(analysis.lr_power)]
    lines += [f"- {s}" for s in lr_findings(analysis.lr_results)]
    return "\n".join(lines) + "\n"


def lr_findings(results: Sequence[PairedResult]) -> list[str]:
    """Sentences: the verdict against combo 7 at each rate, and the rates against 1x."""
    out = []
    for group, setting in LR_GROUPS:
        parts = [f"{r.comparison.first.label.split(' (')[0]} − combo 7: {short_outcome(r)}"
                 for r in results if r.comparison.first.group == group
                 and r.comparison.second.trial == "combo_07"]
        out.append(f"With {setting}: " + "; ".join(parts) + ".")
    rate = [f"{r.comparison.name}: {short_outcome(r)}" for r in results
            if r.comparison.second.trial != "combo_07"]
    out.append("Against Table 1's rate: " + "; ".join(rate) + ".")
    return out


def baselines_section(runs: Sequence[Run], analysis: Analysis, counts: Counts) -> str:
    """Section 7: PReLU, Swish-β, APL and agile per channel; a plain net of combo 12's size."""
    lines = ["## 7. The field's learnable activations", "",
             "The learnable activations the field already uses, in both layers of the same CNN "
             "with one set of parameters per channel, and agile ReLU per channel; then a plain "
             "ReLU network with as many parameters as combo 12 (its per-element a and b add "
             "about 28,700): each against plain ReLU (combo 7) and against combo 12 (Table 1's "
             "runs). The parameters column counts all and, in brackets, the activations' own. "
             "One Holm family.", ""]
    lines += _groups_tables(runs, ("baselines", "capacity"), counts)
    lines += ["### Comparisons", "", comparisons_markdown(analysis.baseline_results),
              power_markdown(analysis.baseline_power)]
    lines += [f"- {s}" for s in baseline_findings(analysis.baseline_results)]
    return "\n".join(lines) + "\n"


def baseline_findings(results: Sequence[PairedResult]) -> list[str]:
    """One sentence per baseline: against combo 7 and against combo 12."""
    out = []
    labels = list(dict.fromkeys(r.comparison.first.label for r in results))
    for label in labels:
        parts = [f"− {r.comparison.second.label}: {short_outcome(r)}" for r in results
                 if r.comparison.first.label == label]
        out.append(f"{label} " + "; ".join(parts) + ".")
    return out
