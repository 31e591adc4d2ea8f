"""The study's questions in the report: one section renderer for every comparison family of
:data:`agile.paper.study.FAMILIES`, the power section, and each family's findings.

A family's section (:func:`family_section`) is its question, the tables of its groups, its
comparisons (with the family it is shown beside, if any), its figure, its power table and
its findings, each where the family's data put it; a family none of whose comparisons has
results says it was not run yet. The numbers come from :mod:`agile.paper.report.analysis`
(``FamilyResult``: the paired results and their ``PowerRow``s); the sentences are generated
from them, as in :mod:`agile.paper.report.text`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agile.paper import stats, study
from agile.paper.report.analysis import (
    ALPHA,
    CONFIDENCE,
    Analysis,
    FamilyResult,
    PairedResult,
    PowerRow,
    Table1Row,
    seed_values,
)
from agile.paper.report.figures import SPECS_BY_KEY
from agile.paper.report.results import RUNS, Run
from agile.paper.report.text import (
    Counts,
    comparisons_markdown,
    figure_lines,
    format_p,
    group_markdown,
    markdown_table,
    not_run_line,
    short_outcome,
    table1_findings,
    verdict,
)
from agile.paper.stats import MAX_SEEDS, POWER
from agile.paper.study import POWER_SECTION, RESOLUTION, Family

POWER_TITLE = "Power: what the seeds can resolve"
POWER_CONCLUSION = "Power: which comparisons are settled"
VERDICT_CONCLUSION = "One verdict across tasks"


def _seeds(count: int | None) -> str:
    if count is None:
        return "-"
    return f"> {MAX_SEEDS:,}" if count > MAX_SEEDS else f"{count:,}"


def _fill(text: str, family: Family) -> str:
    """A family's text with ``{m}``, ``{confidence}`` and ``{alpha}`` filled in."""
    return text.format(m=len(family.comparisons), confidence=CONFIDENCE, alpha=ALPHA)


# ---------------------------------------------------------------------------------------------
# Power.


def power_markdown(rows: Sequence[PowerRow], resolution: float = RESOLUTION) -> str:
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
              f"seeds for MDE ≤ {resolution:g} (Holm)", "settled")
    return markdown_table(header, table)


def power_findings(rows: Sequence[PowerRow], results: Sequence[PairedResult],
                   resolution: float = RESOLUTION) -> list[str]:
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
    out.append(f"Settled as no difference of {resolution:g} or more (not significant, and "
               f"{POWER:.0%} power to find {resolution:g} at Holm's strictest level): "
               + ("; ".join(as_bound) or "none") + ".")
    if open_:
        out.append("Not resolved at this resolution: " + "; ".join(
            f"{row.comparison.name} (MDE {row.mde_holm:.4f} with {row.seeds} seeds; "
            f"{_seeds(row.for_resolution)} seeds for {resolution:g})" for row in open_) + ".")
    return out


def _power_findings(result: FamilyResult) -> list[str]:
    return power_findings(result.power, result.results, result.family.resolution)


def power_section(families: Sequence[FamilyResult], number: int = 5) -> str:
    """Section ``number``: what the seeds of each family shown here (``power`` is
    ``POWER_SECTION``) can resolve."""
    lines = [
        f"## {number}. {POWER_TITLE}", "",
        "For each paired comparison: the correlation of the two arms over the common seeds "
        "(pairing by seed removes the variance the arms share only where it is positive), the "
        "std of the per-seed differences, the minimum detectable effect (MDE: the smallest true "
        f"difference in best test loss a paired t-test finds with {POWER:.0%} power with these "
        f"seeds, at α = {ALPHA:g} and at Holm's strictest level α / m for the m comparisons of "
        "the family), the seeds that would find the observed mean difference with that power, "
        f"and the seeds for an MDE of {RESOLUTION:g}. A comparison is settled when it is "
        f"significant after Holm, or when its MDE at α / m is at most {RESOLUTION:g} (then "
        "no difference that large is there to find). Noncentral t, from the spread these runs "
        "show.", ""]
    for index, result in enumerate(r for r in families if r.family.power == POWER_SECTION):
        lines += [""] if index else []
        lines += [f"### {result.family.power_title}", "",
                  power_markdown(result.power, result.family.resolution)]
        lines += [f"- {s}" for s in _power_findings(result)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# A family's section.


def not_run(result: FamilyResult, runs: Sequence[Run]) -> str | None:
    """"Not run yet: ..." for a family none of whose comparisons has results, else None."""
    if any(r.available for r in result.results):
        return None
    present = {row.group for row in runs}
    missing = [f"`{g}`" for g in result.family.arm_groups() if g not in present]
    why = (f"`{RUNS.name}` has no rows for {', '.join(missing)}" if missing
           else "no comparison has two seeds in common")
    return f"Not run yet: no comparison of this family can be made ({why})."


def _groups_tables(runs: Sequence[Run], family: Family, counts: Counts) -> list[str]:
    present = {row.group for row in runs}
    lines = []
    for name in family.groups:
        group = study.GROUPS_BY_NAME[name]
        lines += [f"### `{name}`", "", group.question, ""]
        lines.append(group_markdown(runs, group, counts, family.unit) if name in present
                     else not_run_line(name) + "\n")
    return lines


def family_section(result: FamilyResult, runs: Sequence[Run], counts: Counts,
                   drawn: Mapping[str, bool] | None = None, number: int = 4,
                   beside: FamilyResult | None = None) -> str:
    """Section ``number``: one family of paired comparisons, laid out as its data say
    (``drawn[key]``: whether figure ``key`` exists; ``beside``: the results of the family
    named in ``family.beside``)."""
    family = result.family
    lines = [f"## {number}. {family.title}", ""]
    lines += [_fill(family.question, family), ""] if family.question else []
    absent = not_run(result, runs)
    if absent is not None:
        return "\n".join([*lines, absent, ""])
    lines += _groups_tables(runs, family, counts)
    lines += ["### Comparisons", ""] if family.groups else []
    lines += [_fill(family.note, family), ""] if family.note else []
    lines.append(comparisons_markdown(
        result.results, family.unit,
        None if beside is None else {r.comparison.name: r for r in beside.results},
        family.beside or ""))
    if family.figure is not None:
        lines += figure_lines(SPECS_BY_KEY[family.figure], bool((drawn or {}).get(family.figure)))
    lines += curve_lines(family, runs)
    if family.power == study.IN_SECTION:
        lines.append(power_markdown(result.power, family.resolution))
    if family.findings_in_section:
        lines += [f"- {s}" for s in family_findings(result)]
    text = "\n".join(lines)
    return text if text.endswith("\n") else text + "\n"


def curve_lines(family: Family, runs: Sequence[Run]) -> list[str]:
    """Where a family's ``curve`` is lowest: per trial of its comparisons' first arms (in the
    curve's groups), the point with the lowest mean loss, its interval and seeds, and the
    means elsewhere; nothing without a curve or results at two points."""
    trials = dict.fromkeys(c.first.trial for c in family.comparisons
                           if c.first.group in {group for group, _, _ in family.curve})
    lines = []
    for trial in trials:
        points = [(label, stats.summarize(values.values())) for group, label, _ in family.curve
                  if len(values := seed_values(runs, group, trial, family.metric)) > 1]
        if len(points) < 2:
            continue
        label, best = min(points, key=lambda point: point[1]["mean"])
        others = ", ".join(f"{other} {summary['mean']:.4f}" for other, summary in points
                           if other != label)
        lines.append(f"- `{trial}` is lowest with {label}: {best['mean']:.4f} "
                     f"({CONFIDENCE:.0%} CI [{best['ci_low']:.4f}, {best['ci_high']:.4f}], "
                     f"{best['n']} seeds); {others}.")
    return ["Where the curve is lowest (mean best test loss per rate):", "", *lines, ""] \
        if lines else []


# ---------------------------------------------------------------------------------------------
# Findings, and the conclusion's blocks.


def family_findings(result: FamilyResult) -> list[str]:
    """One sentence per theme of the family's comparisons, in order: ``"<theme><theme_end>
    <clause>: <outcome>; ..."`` (a comparison's clause defaults to its name)."""
    family, themes = result.family, {}
    for r in result.results:
        clause = r.comparison.clause or r.comparison.name
        themes.setdefault(r.comparison.theme, []).append(f"{clause}: {short_outcome(r)}")
    return [f"{theme}{family.theme_end}" + "; ".join(parts) + "."
            for theme, parts in themes.items()]


def conclusion_block(result: FamilyResult, table: Sequence[Table1Row],
                     runs: Sequence[Run]) -> tuple[str, list[str]]:
    """``(heading, lines)`` of a family's findings in the conclusion: Table 1's counts,
    ranks and one verdict per comparison (``findings="table1"``), or the themes' sentences."""
    family = result.family
    lead = [_fill(family.conclusion_lead, family), ""] if family.conclusion_lead else []
    absent = not_run(result, runs)
    if absent is not None and family.findings != "table1":
        return family.conclusion_title, [*lead, f"- {absent}"]
    if family.findings == "table1":
        body = [f"- {s}" for s in table1_findings(table, result.results)]
        body += ["", "Each comparison:", ""] + [f"- {verdict(r)}" for r in result.results]
    else:
        body = [f"- {s}" for s in family_findings(result)]
    return family.conclusion_title, [*lead, *body]


def best_candidate(task: study.TaskVerdict, analysis: Analysis
                   ) -> tuple[PairedResult, str] | None:
    """The available candidate of ``task`` with the lowest mean difference, and its a/b
    rate; None if none has a result."""
    results = {(r.family.name, p.comparison.name): p
               for r in analysis.families for p in r.results}
    made = [(results[(family, name)], rate) for family, name, rate in task.candidates
            if results[(family, name)].available]
    return min(made, key=lambda made: made[0].mean_difference) if made else None


def arm_text(arm: study.Arm) -> str:
    """An arm's label, with its (conv / dense) activations where the label is a combo's."""
    if not arm.label.startswith("combo "):
        return arm.label
    group = study.GROUPS_BY_NAME[arm.group]
    conv, dense = next(pair for pair in group.pairs if group.trial_name(*pair) == arm.trial)
    return f"{arm.label} ({conv} / {dense})"


def guidance(result: PairedResult, rate: str, unit: study.Unit) -> str:
    """One sentence a user can act on, from the best candidate's outcome."""
    agile, plain = arm_text(result.comparison.first), arm_text(result.comparison.second)
    suffix = f" {unit.name}" if unit.name else ""
    if result.significant and result.mean_difference < 0:
        return (f"Worth using: {agile} beat {plain} by {-result.mean_difference:.4f}{suffix} "
                f"with a and b at {rate} the weights' rate.")
    if result.significant:
        return f"Keep {plain}: even the best agile variant ({agile}) was worse."
    return (f"Keep {plain}: no agile variant was settled better; the best ({agile}) gains at "
            f"most {max(-result.ci_low, 0.0):.4f}{suffix} ({CONFIDENCE:.0%} CI).")


def verdict_block(analysis: Analysis) -> tuple[str, list[str]]:
    """The conclusion's table across tasks (:data:`agile.paper.study.VERDICTS`): per task the
    best agile variant against its plain twin, the a/b rate, the difference with its interval,
    its family's Holm p, whether it is settled, and a sentence of guidance."""
    rows = []
    for task in study.VERDICTS:
        best = best_candidate(task, analysis)
        if best is None:
            rows.append((task.task, "-", "-", "-", "-", "-", "Not run yet."))
            continue
        result, rate = best
        settled = ("yes, lower" if result.mean_difference < 0 else "yes, higher"
                   ) if result.significant else "no"
        suffix = f" {task.unit.name}" if task.unit.name else ""
        rows.append((task.task, result.comparison.name, rate,
                     f"{result.mean_difference:+.4f}{suffix} "
                     f"[{result.ci_low:+.4f}, {result.ci_high:+.4f}]",
                     format_p(result.holm_p), settled, guidance(result, rate, task.unit)))
    header = ("task", "best agile variant − plain twin", "a, b rate",
              f"difference [{CONFIDENCE:.0%} CI]", "Holm p", f"settled at {ALPHA:g}", "guidance")
    lead = ("For each task, of the comparisons of an agile variant against its plain twin "
            "(`agile.paper.study.VERDICTS`), the one with the lowest mean difference in best "
            "test loss, with its interval and the Holm p of its own family. Picking the best of "
            "several favours agile, so an unsettled row is the stronger evidence of no gain.")
    return VERDICT_CONCLUSION, [lead, "", markdown_table(header, rows)]


def conclusion_blocks(analysis: Analysis, runs: Sequence[Run]) -> list[tuple[str, list[str]]]:
    """The conclusion's blocks: the verdict across tasks, the families marked
    ``conclusion_first``, the power of those in the power section, then the other families,
    each in ``analysis.families``' order."""
    families = analysis.families
    blocks = [verdict_block(analysis)]
    blocks += [conclusion_block(r, analysis.table, runs) for r in families
               if r.family.conclusion_first]
    power = [s for r in families if r.family.power == POWER_SECTION for s in _power_findings(r)]
    if power:
        blocks.append((POWER_CONCLUSION, [f"- {s}" for s in power]))
    blocks += [conclusion_block(r, analysis.table, runs) for r in families
               if not r.family.conclusion_first]
    return blocks
