"""agile.paper.report and scripts/study_report.py: the study's report from (fake) exported results.

The fake results (tests/paper/study_fakes.py) are records of agile.paper.report.results, written by
its writer: the schema is defined once. Reading, writing and merging results files is tested
in test_report_results.py.
"""

import dataclasses
import math
import subprocess
import sys

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from agile_testing import REPO_ROOT  # noqa: E402
from study_fakes import (  # noqa: E402
    MACHINE,
    fake_params,
    fake_ranges,
    fake_results,
    fake_run,
    fake_runs,
    write_fake_results,
)

from agile.paper import report, stats, study  # noqa: E402  (after choosing the backend)
from agile.paper.combos import COMBOS, PAPER_TABLE1  # noqa: E402
from agile.paper.config import get_config  # noqa: E402
from agile.paper.report import analysis, figures, questions, text  # noqa: E402
from agile.paper.report.results import Curve, Results, write_results  # noqa: E402

SECTIONS = ("## 1. The command and its wall time", "## 2. Setup", "## 3. Table 1",
            "## 4. Paired comparisons", "## 5. Power", "## 6. The learning rate of a and b",
            "## 7. Table 1 on Fashion-MNIST",
            "## 8. The learning rate of a and b on Fashion-MNIST",
            "## 9. A BatchNorm ResNet on Fashion-MNIST",
            "## 10. A character-level transformer on Jane Austen",
            "## 11. The field's learnable activations", "## 12. What the paper did not run",
            "## 13. Figures", "## 14. Expressivity", "## 15. Conclusion")


# ---------------------------------------------------------------------------------------------
# Summaries.


def test_wall_times_count_each_trial_once_per_group():
    rows = [fake_run("table1", *COMBOS[1], seed, 0.2, 100.0) for seed in range(3)]
    rows += [fake_run("table1", *COMBOS[2], seed, 0.2, 50.0) for seed in range(3)]
    rows += [fake_run("sgd", *COMBOS[7], seed, 0.2, 7200.0) for seed in range(2)]
    times = analysis.wall_times(rows)
    assert list(times) == ["table1", "sgd"]  # study.GROUPS order
    assert times["table1"] == {"trials": 2, "seeds": 3, "seconds": 150.0}
    assert times["sgd"] == {"trials": 1, "seeds": 2, "seconds": 7200.0}
    table = text.wall_time_table(times)
    assert "2 min 30 s" in table and "2 h 00 min" in table and "2 h 02 min" in table
    assert [text.format_duration(s) for s in (8.44, 725, 3 * 3600 + 7 * 60)] == [
        "8.4 s", "12 min 05 s", "3 h 07 min"]


def test_table1_rows_put_the_papers_values_beside_our_seed_statistics():
    losses = [0.15, 0.16, 0.17]
    rows = [fake_run("table1", *COMBOS[12], seed, loss, 1.0, best_step=1000 + seed)
            for seed, loss in enumerate(losses)]
    rows.append(fake_run("sgd", *COMBOS[12], 0, 9.0, 1.0))  # another group: not Table 1
    table = analysis.table1_rows(rows)
    assert [row.combo for row in table] == list(COMBOS)
    row = table[11]
    assert (row.paper_loss, row.paper_iterations) == PAPER_TABLE1[12]
    assert row.loss["n"] == 3 and row.loss["mean"] == pytest.approx(0.16)
    assert row.loss["std"] == pytest.approx(0.01)
    half = 4.302653 * 0.01 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n)
    assert (row.loss["ci_low"], row.loss["ci_high"]) == (
        pytest.approx(0.16 - half, rel=1e-5), pytest.approx(0.16 + half, rel=1e-5))
    assert row.best_step["mean"] == pytest.approx(1001)
    assert table[0].loss is None  # combo 1 not run
    markdown = text.table1_markdown(table)
    assert "| 12 | agile_relu | agile_sigmoid | 0.15027 | 3261 | 0.1600 ± 0.0100 |" in markdown
    assert "| 1 | sigmoid | relu | 0.18850 | 5030 | - | - |" in markdown


def test_curve_band_keeps_steps_most_seeds_reached():
    curves = [Curve(group="table1", trial="combo_07", seed=seed, step=step, val_loss=1.0,
                    test_loss=value)
              for seed, points in enumerate([[(10, 1.0), (20, 0.5), (30, 0.4)],
                                             [(10, 3.0), (20, 0.7)],
                                             [(10, 2.0), (20, None), (25, 0.1)]])
              for step, value in points]
    band = analysis.curve_band(curves, "table1", "combo_07")
    assert band["seeds"] == 3
    np.testing.assert_array_equal(band["steps"], [10, 20])  # 25, 30: one seed of three
    np.testing.assert_allclose(band["mean"], [2.0, 0.6])
    np.testing.assert_allclose(band["std"], [1.0, np.std([0.5, 0.7], ddof=1)])


def test_rank_agreement_is_undefined_for_a_constant_column():
    table = analysis.table1_rows(fake_runs({"table1"}, 3))
    assert analysis.rank_agreement(table, "loss", "paper_loss")["n"] == 12
    for row in table:
        row.best_step["mean"] = 500.0
    assert analysis.rank_agreement(table, "best_step", "paper_iterations") is None


# ---------------------------------------------------------------------------------------------
# Comparisons.


def test_compare_pairs_by_seed_and_says_why_a_side_is_missing():
    rows = [fake_run("table1", *COMBOS[12], seed, loss, 1.0)
            for seed, loss in [(2, 0.13), (0, 0.15), (1, 0.14), (5, 0.2)]]
    rows += [fake_run("table1", *COMBOS[9], seed, loss, 1.0)
             for seed, loss in [(0, 0.16), (1, 0.16), (2, 0.17)]]
    runs = rows
    comparison = study.Comparison(study.combo_arm(12), study.combo_arm(9), -0.01)
    result = analysis.compare(runs, comparison)
    expected = stats.paired_comparison([0.15, 0.14, 0.13], [0.16, 0.16, 0.17])  # seeds 0, 1, 2
    assert result.seeds == 3
    assert result.mean_difference == pytest.approx(expected["mean_difference"])
    assert result.p_value == pytest.approx(expected["p_value"])
    missing_trial = analysis.compare(runs, study.Comparison(study.combo_arm(12),
                                                            study.combo_arm(7)))
    assert missing_trial.missing == "trial combo_07 of group table1 has no results"
    missing_group = analysis.compare(runs, study.Comparison(study.combo_arm(12, "sgd"),
                                                            study.combo_arm(7, "sgd")))
    assert missing_group.missing == "group sgd was not run"


def test_compare_family_applies_holm_over_the_available_comparisons():
    runs = fake_runs({"table1"}, 5)
    results = analysis.compare_family(runs, study.FAMILIES_BY_NAME["table1"].comparisons)
    assert len(results) == len(study.PAIRED_COMPARISONS)
    assert [r.holm_p for r in results] == pytest.approx(
        stats.holm([r.p_value for r in results]))
    assert all(r.significant == (r.holm_p < analysis.ALPHA) for r in results)
    ablations = analysis.compare_family(runs, study.FAMILIES_BY_NAME["ablations"].comparisons)
    available = [r for r in ablations if r.available]
    assert [(r.comparison.first.trial, r.comparison.second.trial) for r in available] == [
        ("combo_12", "combo_07")]  # Table 1's own 12 vs 7; the other groups were not run
    assert available[0].holm_p == pytest.approx(available[0].p_value)  # family of one


def _result(difference, significant, paper):
    comparison = study.Comparison(study.combo_arm(12), study.combo_arm(9), paper)
    return analysis.PairedResult(comparison, seeds=10, mean_difference=difference,
                                 ci_low=difference - 0.01, ci_high=difference + 0.01,
                                 p_value=0.001, holm_p=0.004 if significant else 0.2,
                                 significant=significant)


def test_paper_agreement_and_the_verdict_sentence():
    assert analysis.paper_agreement(_result(-0.02, True, -0.01)) == "agrees"
    assert analysis.paper_agreement(_result(+0.02, True, -0.01)) == "contradicts"
    assert analysis.paper_agreement(_result(-0.02, False, -0.01)) == "not confirmed"
    assert analysis.paper_agreement(_result(-0.02, True, None)) is None
    assert text.verdict(_result(-0.0123, True, -0.01)) == (
        "combo 12 has a lower best test loss than combo 9 by 0.0123 (difference -0.0123, 95% "
        "CI [-0.0223, -0.0023], 10 seeds; Holm p = 0.004, significant at 0.05).")
    assert "higher" in text.verdict(_result(0.03, False, -0.01))
    assert "not significant" in text.verdict(_result(0.03, False, -0.01))
    missing = analysis.PairedResult(_result(0, True, None).comparison, 0,
                                    missing="group sgd was not run")
    assert not missing.available and _result(0, True, None).available
    assert text.verdict(missing) == (
        "combo 12 against combo 9: no result (group sgd was not run).")


def test_ablation_findings_give_one_sentence_per_theme_run_or_not():
    runs = fake_runs({"table1", "tanh_gelu"}, 4)
    ablations = study.FAMILIES_BY_NAME["ablations"]
    findings = questions.family_findings(analysis.analyse_family(runs, ablations))
    assert [f.split(":")[0] for f in findings] == list(dict.fromkeys(
        c.theme for c in ablations.comparisons))
    assert "combo 12 (per channel) − combo 12 (per element): no result (group " \
           "granularity_channel was not run)" in findings[0]
    assert "agile tanh / agile tanh − tanh / tanh: " in findings[1] and "Holm p = " in findings[1]
    assert findings[3].count("no result") == 2  # sgd and full_data
    assert "combo 12 (Adam) − combo 7 (Adam): " in findings[3]


def test_short_outcome_says_significance_direction_and_interval():
    assert text.short_outcome(_result(-0.02, True, None)) == (
        "significantly lower (-0.0200 [-0.0300, -0.0100], Holm p = 0.004)")
    assert text.short_outcome(_result(0.02, False, None)).startswith(
        "no significant difference (+0.0200 [+0.0100, +0.0300], Holm p = 0.200)")


def test_table1_findings_count_the_family_and_name_the_best():
    results = [_result(-0.02, True, -0.01), _result(0.02, True, -0.01),
               _result(0.001, False, 0.01)]
    rows = [fake_run("table1", *COMBOS[c], s, 0.1 + 0.01 * c + 0.001 * s, 1.0)
            for c in (3, 9, 12) for s in range(3)]
    findings = text.table1_findings(analysis.table1_rows(rows), results)
    assert findings[0].startswith(
        "Of the 3 paired comparisons of an agile variant with its plain counterpart, the agile "
        "variant has a significantly lower best test loss in 1, a significantly higher one in "
        "1, and no significant difference in 1")
    assert "the paper's Table 1 has the agile variant lower in 2 of these 3" in findings[0]
    assert "Our lowest mean best test loss is combo 3" in findings[2]
    assert "combo 12, the paper's best combination, ranks 3 of 3" in findings[2]
    assert "The paper calls combo 3 slow" in findings[2]


def test_table1_findings_of_a_partial_study_say_how_far_it_got():
    rows = [fake_run("table1", *COMBOS[1], s, 0.14, 1.0) for s in range(3)]
    table = analysis.table1_rows(rows)
    not_run = analysis.PairedResult(_result(0, True, None).comparison, 0, missing="not run")
    assert text.table1_findings(table, [not_run]) == [
        "Table 1's comparisons could not be made yet: 1 of 12 combinations have results, and "
        "no comparison has both of its arms."]
    assert text.table1_findings(analysis.table1_rows([]), []) == [
        "Table 1's comparisons could not be made: " + text.not_run_line("table1")]


# ---------------------------------------------------------------------------------------------
# Parameters and the fold.


def test_parameter_counts_follow_the_granularity():
    element = analysis.parameter_counts("table1", *COMBOS[11])
    channel = analysis.parameter_counts("granularity_channel", *COMBOS[11])
    scalar = analysis.parameter_counts("granularity_scalar", *COMBOS[11])
    maps = 28 * 28 * 16 + 14 * 14 * 8 + 7 * 7 * 4
    assert element[1] == 2 * (maps + 30)
    assert channel[1] == 2 * (16 + 8 + 4 + 30)
    assert scalar[1] == 2 * 4
    assert element[0] - element[1] == channel[0] - channel[1] == scalar[0] - scalar[1]
    assert analysis.parameter_counts("table1", *COMBOS[7])[1] == 0


def test_fold_check_finds_the_folded_twin_equal_and_the_unfolded_one_not():
    fold = analysis.fold_check(fake_params(), inputs=8)
    assert fold.max_abs_difference < 1e-5 < 1e-2 < fold.dropped_difference
    assert (fold.plain, fold.dense_agile) == ("sigmoid", 60)
    assert fold.conv_agile == 2 * (28 * 28 * 16 + 14 * 14 * 8 + 7 * 7 * 4)


# ---------------------------------------------------------------------------------------------
# The report.


def test_markdown_reports_missing_groups_instead_of_failing():
    runs = fake_runs({"table1", "tanh_gelu"}, 3)
    results = Results(runs)
    analysed = report.analyse(results)
    markdown = report.build_markdown(results, analysed, {}, counts=lambda *_: (100, 10))
    for section in SECTIONS:
        assert section in markdown
    for group in ("dense_only", "granularity_channel", "granularity_scalar", "combined", "sgd",
                  "full_data"):
        assert f"Group `{group}` was not run" in markdown
    assert "Group `tanh_gelu` was not run" not in markdown
    assert "| `agile_tanh-agile_tanh` | agile_tanh | agile_tanh | 100 (10) | 3 |" in markdown
    assert "Not checked: `combo12_seed0_params.npz` is missing" in markdown
    assert "Not drawn: group dense_only has no curves" in markdown
    assert "combo 12 (SGD with momentum) − combo 7 (SGD with momentum): no result " \
           "(group sgd was not run)" in markdown


def test_command_section_names_partly_run_and_unrun_groups():
    runs = [fake_run("table1", *COMBOS[c], s, 0.14, 60.0) for c in (1, 2) for s in range(2)]
    section = text.command_section(runs)
    assert "Partly run (the sweep resumes where it stopped): `table1` (2 of 12 trials)." in section
    assert "Not run (no rows in the results): `dense_only`, " in section
    full = fake_runs({"table1"}, 2)
    assert "Partly run" not in text.command_section(full)


def test_save_figure_writes_the_same_bytes_twice_without_the_version(tmp_path):
    fig = figures.figure_combo12_ranges(fake_ranges(fake_runs({"table1"}, 2)))
    figures.save_figure(fig, tmp_path / "one.png", dpi=30)
    figures.save_figure(fig, tmp_path / "two.png", dpi=30)
    data = (tmp_path / "one.png").read_bytes()
    assert data.startswith(b"\x89PNG") and data == (tmp_path / "two.png").read_bytes()
    assert b"matplotlib" not in data


@pytest.mark.slow
def test_study_report_script_writes_the_report_and_figures(tmp_path):
    """End to end: scripts/study_report.py on fake results with some groups not run."""
    results = write_fake_results(tmp_path / "results",
                                 {"table1", "dense_only", "sgd", "agile_lr_10x", "transformer"})
    docs = tmp_path / "docs"
    stale = docs / "figures" / "study_stale.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"a figure an older report drew")
    done = subprocess.run(
        [sys.executable, "scripts/study_report.py", f"--results_dir={results}",
         f"--docs_dir={docs}", "--dpi=20"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    markdown = (docs / "reproduction.md").read_text()
    for section in SECTIONS:
        assert section in markdown
    assert "Group `combined` was not run" in markdown
    assert "Group `sgd` was not run" not in markdown
    names = sorted(p.name for p in (docs / "figures").glob("study_*.png") if p != stale)
    assert names == sorted(name for name, _ in figures.FIGURES.values())
    for name in names:
        assert f"](figures/{name})" in markdown
        assert (docs / "figures" / name).read_bytes().startswith(b"\x89PNG")
    # A figure file the report did not draw is kept (the writer deletes nothing; #141 lost four
    # committed figures that way), and the report does not link it.
    assert stale.read_bytes() == b"a figure an older report drew"
    assert stale.name not in markdown


def test_committed_report_is_what_the_committed_results_give():
    """docs/reproduction.md is exactly what docs/results/ give: its numbers match the committed
    CSVs and nobody edited it by hand (rerun scripts/study_report.py after changing either)."""
    results = report.load_results(REPO_ROOT / "docs" / "results")
    drawn = {key: (REPO_ROOT / "docs" / "figures" / name).is_file()
             for key, (name, _) in report.FIGURES.items()}
    expected = report.build_markdown(results, report.analyse(results), drawn)
    assert (REPO_ROOT / "docs" / "reproduction.md").read_text() == expected


def test_write_report_keeps_a_figure_it_did_not_draw_and_does_not_link_it(tmp_path):
    """Without combo 12's parameters two figures are not drawn; their old files stay."""
    fake = fake_results({"table1"}, 2, params=False)
    write_results(fake, tmp_path / "results")
    old = tmp_path / "docs" / "figures" / figures.FIGURES["activations"][0]
    old.parent.mkdir(parents=True)
    old.write_bytes(b"drawn by an earlier report")
    written = report.write_report(tmp_path / "results", tmp_path / "docs", dpi=20)
    drawn = {path.name for path in written if path.suffix == ".png"}
    assert figures.FIGURES["table1_losses"][0] in drawn and old.name not in drawn
    assert figures.FIGURES["maps"][0] not in drawn
    assert old.read_bytes() == b"drawn by an earlier report"
    markdown = (tmp_path / "docs" / "reproduction.md").read_text()
    assert old.name not in markdown
    assert markdown.count("Not drawn: no combo12_seed0_params.npz in the results.") == 2


# ---------------------------------------------------------------------------------------------
# Pieces of the analysis, the figures and the text.


def test_selection_helpers_pick_rows_by_group_trial_and_seed():
    runs = [fake_run("sgd", *COMBOS[7], 0, 0.2, 1.0), fake_run("table1", *COMBOS[12], 1, 0.1, 1.0),
            dataclasses.replace(fake_run("table1", *COMBOS[12], 2, 0.1, 1.0),
                                best_test_loss=None),
            dataclasses.replace(fake_run("table1", *COMBOS[1], 0, 0.3, 1.0), group="zzz_new")]
    assert analysis.groups_present(runs) == ["table1", "sgd", "zzz_new"]  # unknown ones last
    assert analysis.seed_values(runs, "table1", "combo_12") == {1: 0.1}  # seed 2 has no loss
    assert analysis.seed_values(runs, "table1", "combo_12", "best_step") == {1: 1000.0, 2: 1000.0}
    assert analysis.combo_trial(7) == "combo_07"
    arm = study.pair_arm("dense_only", "relu", "agile_sigmoid", "label")
    assert (arm.group, arm.trial, arm.label) == ("dense_only", "agile_sigmoid", "label")
    lower, higher, neither = (_result(-0.02, True, None), _result(0.02, True, None),
                              _result(0.01, False, None))
    missing = analysis.PairedResult(lower.comparison, 0, missing="not run")
    counts = analysis.family_counts([lower, higher, neither, missing])
    assert (counts["lower"], counts["higher"], counts["neither"]) == ([lower], [higher], [neither])
    assert counts["available"] == [lower, higher, neither]


def test_combo12_helpers_read_its_ranges_and_parameters():
    ranges = fake_ranges(fake_runs({"table1", "granularity_channel"}, 2))
    layers = analysis.combo12_ranges(ranges)
    assert list(layers) == ["conv_act_0", "conv_act_1", "conv_act_2", "hidden_act"]
    assert sorted(layers["hidden_act"]) == [0, 1] and set(layers["hidden_act"][1]) == {"a", "b"}
    assert layers["hidden_act"][1]["a"].max == pytest.approx(1.2)
    assert analysis.smallest_conv_a(ranges, "granularity_channel") == pytest.approx(0.9)
    assert analysis.smallest_conv_a(ranges, "sgd") is None
    flat = fake_params()
    tree = analysis.params_tree(flat)
    assert tree["hidden_act"]["a"] is flat["hidden_act/a"]
    assert analysis.combo12_layers(flat) == {"conv_act_0": "agile_relu", "conv_act_1": "agile_relu",
                                             "conv_act_2": "agile_relu",
                                             "hidden_act": "agile_sigmoid"}


@pytest.mark.slow
def test_every_figure_is_drawn_from_full_results_and_none_without_them(tmp_path):
    full = fake_results({"table1", "dense_only", "agile_lr_0.1x", "transformer"}, 2)
    for spec in figures.SPECS:
        assert spec.draw(full, report.analyse(full)) is not None, spec.key
    empty = Results([])
    assert all(spec.draw(empty, report.analyse(empty)) is None for spec in figures.SPECS)
    assert [spec.key for spec in figures.SPECS] == list(figures.FIGURES)
    assert {spec.section for spec in figures.SPECS} == {"table1", "comparisons", "figures"}
    drawn = figures.draw_figures(empty, report.analyse(empty), tmp_path / "figures")
    assert drawn == dict.fromkeys(figures.FIGURES) and not list((tmp_path / "figures").iterdir())


def test_formatting_helpers_and_the_machine_in_words():
    summary = {"n": 3, "mean": 0.1, "std": 0.01, "ci_low": 0.08, "ci_high": 0.12}
    assert text.format_p(0.0123) == "0.012" and text.format_p(0.000123) == "1.2e-04"
    assert text.format_mean_std(summary) == "0.1000 ± 0.0100"
    assert text.format_mean_std(summary, 2, 100.0) == "10.00 ± 1.00"
    assert text.format_mean_std(None) == text.format_ci(None) == "-"
    assert text.format_ci(summary) == "[0.0800, 0.1200]"
    assert text.format_ci({**summary, "n": 1}) == "-"
    assert text.markdown_table(("a", "b"), [(1, "x")]) == "| a | b |\n|---|---|\n| 1 | x |\n"
    assert text.describe_machine(MACHINE) == "Test CPU (2 logical CPUs, 8 GiB; JAX 0.0 on cpu)"


def test_the_wall_time_table_names_the_machines_that_timed_each_group():
    """Each group's row names the machine(s) that timed it (by CPU; in full where two machines
    share a CPU), the machines are described under the table, and wall times on different
    machines are said not to compare; a group without a recorded machine says so."""
    other = dataclasses.replace(MACHINE, cpu="Other CPU", logical_cpus=16)
    newer = dataclasses.replace(MACHINE, jax="0.1")  # the same CPU with another JAX
    runs = [fake_run(group, *COMBOS[7], 0, 0.2, 60.0) for group in ("sgd", "capacity")]
    runs += [fake_run("table1", *COMBOS[7], 0, 0.2, 60.0)]
    machines = {"table1": (MACHINE, other), "sgd": (other,)}
    table = text.wall_time_table(analysis.wall_times(runs), machines)
    assert table.splitlines()[0] == "| group | question | trials | seeds | machine | wall time |"
    assert "| 1 | 1 | Test CPU and Other CPU | 1 min 00 s |" in table.splitlines()[2]  # table1
    assert table.splitlines()[3].endswith("| 1 | 1 | Other CPU | 1 min 00 s |")  # sgd
    assert table.splitlines()[4].endswith("| 1 | 1 | not recorded | 1 min 00 s |")  # capacity
    assert table.splitlines()[5] == "| **total** |  | 3 |  |  | **3 min 00 s** (0.05 h) |"
    assert text.machine_labels([MACHINE, newer, other, MACHINE]) == {
        MACHINE: text.describe_machine(MACHINE), newer: text.describe_machine(newer),
        other: "Other CPU"}
    line = text.machines_line(["table1", "sgd"], machines)
    assert line.startswith("The machines: Test CPU (2 logical CPUs, 8 GiB; JAX 0.0 on cpu); "
                           "Other CPU (16 logical CPUs, 8 GiB; JAX 0.0 on cpu). The groups were "
                           "timed on different machines, so their wall times compare only")
    assert text.machines_line(["sgd"], machines) == (
        "The machines: Other CPU (16 logical CPUs, 8 GiB; JAX 0.0 on cpu).\n")
    assert text.machines_line(["capacity"], machines) == (
        "`machine.json` records no machine for these groups.\n")
    section = text.command_section(runs, machines)
    assert table in section and line in section
    assert "Intel" not in section and "Wall time of the sweep on" not in section


def test_figures_are_linked_when_drawn_and_say_what_is_missing_when_not():
    spec = figures.SPECS_BY_KEY["fig11"]
    assert text.figure_lines(spec, True) == [
        f"![{spec.caption}](figures/{spec.file})", "", spec.note, ""]
    assert text.figure_lines(spec, False) == [
        "Not drawn: group dense_only has no curves in the results.", ""]
    assert text.figure_lines(figures.SPECS_BY_KEY["table1_losses"], False) == []
    section = text.figures_section({"fig12": True})
    assert section.startswith("## 9. Figures like the paper's")
    assert f"](figures/{figures.FIGURES['fig12'][0]})" in section
    assert "Not drawn: no Table 1 curves in the results." in section  # fig13
    assert figures.FIGURES["table1_losses"][0] not in section  # shown in section 3, not here
    assert section.count("### ") == 6


def test_comparisons_markdown_has_a_row_for_every_comparison_made_or_not():
    missing = analysis.PairedResult(_result(0, True, None).comparison, 0, missing="not run")
    table = text.comparisons_markdown([_result(-0.0123, True, -0.01), missing])
    assert ("| combo 12 − combo 9 | -0.01000 | -0.0123 | [-0.0223, -0.0023] | 10 | 0.001 | "
            "0.004 | yes | agrees |") in table
    assert "| combo 12 − combo 9 | - | not available: not run |  |  |  |  |  |  |" in table


def test_setup_section_reads_the_config_and_counts_early_stops():
    config = get_config()
    bound = config.num_epochs * (config.data.train_size // config.batch_size)
    runs = [fake_run("table1", *COMBOS[1], 0, 0.1, 1.0, steps=bound - 50),
            fake_run("table1", *COMBOS[1], 1, 0.1, 1.0, steps=bound)]
    section = text.setup_section(config, runs)
    assert section.startswith("## 2. Setup, and the choices the paper leaves open")
    assert "(1 of 2 Table 1 runs stopped early)" in section
    assert "Table 1: seeds 0 to 1 (2)" in section
    assert "maps 28 → 14 → 7 → 3" in section
    assert ("The paper leaves open: validation split, test split, inputs, network, "
            "initialisation, optimizer, training length, reported loss, seeds.") in section
    assert "Table 1: none run yet" in text.setup_section(config, [])


def test_fold_difference_is_a_bound_below_rounding_and_the_number_above():
    """Rounding differs between CPUs, so it is reported as a bound; a real mismatch as is."""
    assert text.fold_difference(9.5e-7) == text.fold_difference(1.9e-6) == "under 1e-05"
    assert text.fold_difference(0.0123) == "1.2e-02"


def test_expressivity_section_reports_the_fold_and_the_smallest_conv_a():
    fold = analysis.FoldCheck(inputs=8, seed=0, plain="sigmoid", max_abs_difference=2e-7,
                              max_abs_logit=12.5, dropped_difference=3.25, dense_agile=60,
                              conv_agile=1234)
    ranges = fake_ranges(fake_runs({"granularity_scalar"}, 2))
    section = text.expressivity_section(fold, ranges)
    assert "is **under 1e-05** (float32 rounding), for logits up to 12.50" in section
    assert "changes the logits by up to 3.25" in section
    assert "(60 here)" in section and "(1,234 in combo 12)" in section
    assert ("In group `granularity_scalar` the smallest learned a in a conv layer is 0.9000 "
            "(positive: these layers fold).") in section
    assert "granularity_channel" not in section
    assert "Not checked: `combo12_seed0_params.npz` is missing" in text.expressivity_section(
        None, [])


def test_power_rows_say_what_each_comparison_resolves_and_what_is_settled():
    """A large, steady difference is settled as a difference; a tiny noisy one is not
    resolved, with the seeds that would resolve it; no rows without results."""
    from agile.paper.report import analysis as an

    runs = []
    for seed in range(10):
        noise = 0.002 * ((seed * 7) % 5 - 2)
        runs += [fake_run("table1", "relu", "relu", seed, 0.20 + noise, 1.0),
                 fake_run("table1", "agile_relu", "relu", seed, 0.25 + noise
                                      + 0.001 * (seed % 2), 1.0),
                 fake_run("table1", "relu", "agile_relu", seed,
                                      0.20 + 0.01 * ((seed * 3) % 4 - 1.5), 1.0)]
    results = an.compare_family(runs, [study.Comparison(study.combo_arm(10), study.combo_arm(7)),
                                       study.Comparison(study.combo_arm(8), study.combo_arm(7)),
                                       study.Comparison(study.combo_arm(12), study.combo_arm(7))])
    steady, noisy, absent = an.power_rows(runs, results)
    assert steady.settled and steady.seeds == 10 and steady.correlation > 0.9
    assert steady.mde < steady.mde_holm < an.RESOLUTION
    assert not noisy.settled and noisy.for_resolution > 10
    assert noisy.needed_holm >= noisy.needed
    assert absent.missing and absent.settled is None
    text = "\n".join(questions.power_findings([steady, noisy, absent], results))
    assert "Settled as a difference (significant after Holm): combo 10 − combo 7." in text
    assert "Not resolved at this resolution: combo 8 − combo 7 (MDE" in text
    table = questions.power_markdown([steady, noisy, absent])
    assert "| combo 12 − combo 7 | 0 | not available:" in table


@pytest.mark.slow
def test_the_new_families_and_their_sections():
    """The a/b learning-rate family (verdicts at each rate, each rate against 1x) and the
    baselines family (each against combos 7 and 12); sections say when a group was not run."""
    lr = study.FAMILIES_BY_NAME["lr"].comparisons
    assert len(lr) == 6 * 3 + 5 * 3 and lr[0].name == "combo 10 (a, b at 0.01x) − combo 7"
    assert lr[-1].name == "combo 12 (a, b at 10x) − combo 12 (a, b at 1x)"
    baselines = study.FAMILIES_BY_NAME["baselines"].comparisons
    assert [c.name for c in baselines[:2]] == ["PReLU per channel − combo 7",
                                               "PReLU per channel − combo 12"]
    assert {c.first.trial for c in baselines} == {t.name for g in ("baselines", "capacity")
                                                  for t in study.GROUPS_BY_NAME[g].trials()}
    results = fake_results({"table1"})
    analysed = report.analyse(results)
    markdown = questions.family_section(analysed.family("lr"), results.runs,
                                        lambda *_: (100, 10))
    assert "Group `agile_lr_0.1x` was not run" in markdown
    full = fake_results()
    analysed = report.analyse(full)
    assert all(r.available for r in analysed.family("lr").results
               + analysed.family("baselines").results)
    section = questions.family_section(analysed.family("baselines"), full.runs,
                                       lambda *_: (31_702, 0))
    assert "| `combo_07_dense640` |" in section and "31,702 (0)" in section
    assert "PReLU per channel − combo 7:" in section


def test_each_family_is_one_holm_family_over_exactly_its_comparisons():
    """analyse() follows study.FAMILIES: every family's results and power rows are its
    comparisons in order, Holm's correction runs over its available ones only, and a
    comparison in two families (combo 12 − combo 7 on Table 1's runs) has one p-value and a
    Holm p from each family."""
    analysed = report.analyse(Results(fake_runs(None, 5)))
    assert [result.family for result in analysed.families] == list(study.FAMILIES)
    for result in analysed.families:
        assert [r.comparison for r in result.results] == list(result.family.comparisons)
        assert [row.comparison for row in result.power] == list(result.family.comparisons)
        available = [r for r in result.results if r.available]
        assert available and [r.holm_p for r in available] == pytest.approx(
            stats.holm([r.p_value for r in available]))
    lr = {r.comparison.name: r for r in analysed.family("lr").results}
    ablations = {r.comparison.name: r for r in analysed.family("ablations").results}
    at_1x = lr["combo 12 (a, b at 1x) − combo 7"]
    adam = ablations["combo 12 (Adam) − combo 7 (Adam)"]
    assert at_1x.p_value == adam.p_value
    family_ps = {name: [r.p_value for r in analysed.family(name).results if r.available]
                 for name in ("lr", "ablations")}
    assert at_1x.holm_p == pytest.approx(stats.holm(family_ps["lr"])[
        family_ps["lr"].index(at_1x.p_value)])
    assert adam.holm_p == pytest.approx(stats.holm(family_ps["ablations"])[
        family_ps["ablations"].index(adam.p_value)])


def test_one_renderer_writes_every_familys_section(monkeypatch):
    """build_markdown renders each family with questions.family_section, in study.FAMILIES'
    order, numbered around the power section (after the last family it shows)."""
    rendered = []
    original = questions.family_section

    def spy(result, *args, **kwargs):
        rendered.append(result.family.name)
        return original(result, *args, **kwargs)

    monkeypatch.setattr(questions, "family_section", spy)
    results = Results(fake_runs({"table1", "sgd"}, 3))
    markdown = report.build_markdown(results, report.analyse(results), {},
                                     counts=lambda *_: (100, 10))
    assert rendered == [family.name for family in study.FAMILIES]
    assert all(f.figure is None or f.figure in figures.FIGURES for f in study.FAMILIES)
    for number, family in zip((4, 6, 7, 8, 9, 10, 11, 12), study.FAMILIES, strict=True):
        assert f"\n## {number}. {family.title}\n" in markdown
    assert ("Sections: 1 command and wall time, 2 setup, 3 Table 1, 4 paired comparisons, "
            "5 power, 6 the learning rate of a and b, 7 table 1 on Fashion-MNIST, 8 the "
            "learning rate of a and b on Fashion-MNIST, 9 a BatchNorm ResNet on Fashion-MNIST, "
            "10 a character-level transformer on Jane Austen, 11 the field's learnable "
            "activations, 12 what the paper did not run, 13 figures, 14 expressivity, "
            "15 conclusion.") in markdown


def test_a_family_not_run_yet_is_a_section_that_says_so():
    """A new family (Table 1 on Fashion-MNIST again, beside MNIST's) whose groups have no
    rows: its section and conclusion say "Not run yet", the sections after it move on by
    one, and nothing else changes."""
    future = study.Family("fashion_again", "Table 1 on Fashion-MNIST again",
                          study.table1_comparisons("fashion_table1", paper=False),
                          question="Table 1's comparisons on Fashion-MNIST.", beside="table1")
    results = Results(fake_runs({"table1"}, 3))
    analysed = report.analyse(results, (*study.FAMILIES, future))
    markdown = report.build_markdown(results, analysed, {}, counts=lambda *_: (100, 10))
    absent = ("Not run yet: no comparison of this family can be made (`runs.csv` has no rows "
              "for `fashion_table1`).")
    assert (f"## 13. Table 1 on Fashion-MNIST again\n\nTable 1's comparisons on "
            f"Fashion-MNIST.\n\n{absent}\n") in markdown
    assert "## 14. Figures like the paper's" in markdown and "## 16. Conclusion" in markdown
    assert f"### Table 1 on Fashion-MNIST again\n\n- {absent}" in markdown
    before = report.build_markdown(results, report.analyse(results), {},
                                   counts=lambda *_: (100, 10))
    contents = ("13 table 1 on Fashion-MNIST again, 14 figures, 15 expressivity, "
                "16 conclusion")
    assert markdown.split("## 13.")[0] == before.split("## 13.")[0].replace(
        "13 figures, 14 expressivity, 15 conclusion", contents)


def test_a_family_beside_another_says_whether_each_verdict_agrees():
    """The `beside` column: the same comparisons, by name, in the family named; the same
    verdict (both significant the same way, or both not) agrees, another one differs."""
    runs = fake_runs({"table1"}, 5)
    again = study.Family("table1_again", "Table 1 again", study.table1_comparisons(paper=False),
                         beside="table1", power=None)
    results = Results(runs)
    analysed = report.analyse(results, (study.FAMILIES_BY_NAME["table1"], again))
    section = questions.family_section(analysed.family("table1_again"), runs,
                                       lambda *_: (100, 10), beside=analysed.family("table1"))
    assert "| vs the paper | vs `table1` |" in section
    rows = [line for line in section.splitlines() if line.startswith("| combo ")]
    assert len(rows) == len(study.PAIRED_COMPARISONS)
    assert all(row.endswith("| - | agrees |") for row in rows)
    same, flipped = _result(-0.02, True, None), _result(0.02, True, None)
    assert analysis.beside_agreement(same, _result(0.001, False, None)) == "differs"
    assert analysis.beside_agreement(same, flipped) == "differs"
    assert analysis.beside_agreement(flipped, _result(0.03, True, None)) == "agrees"
    assert analysis.beside_agreement(same, None) is None


def test_a_family_in_bits_on_some_seeds_scales_its_loss_and_keeps_its_p_values():
    """A family's unit scales its differences, power and group tables (a language model's
    loss in bits); its seeds rule limits the pairs; neither changes what is significant."""
    runs = fake_runs({"table1"}, 6)
    comparisons = study.FAMILIES_BY_NAME["table1"].comparisons[:3]
    nats = analysis.analyse_family(runs, study.Family("nats", "Nats", comparisons))
    bits = analysis.analyse_family(runs, study.Family("bits", "Bits", comparisons,
                                                      groups=("table1",), unit=study.BITS))
    for n, b in zip(nats.results, bits.results, strict=True):
        assert b.mean_difference == pytest.approx(n.mean_difference / math.log(2))
        assert (b.p_value, b.holm_p) == pytest.approx((n.p_value, n.holm_p))
    assert bits.power[0].std == pytest.approx(nats.power[0].std / math.log(2))
    section = questions.family_section(bits, runs, lambda *_: (100, 10))
    assert "| ours: mean difference (bits) |" in section
    assert "| best test loss (bits) (mean ± std) |" in section
    first = analysis.analyse_family(runs, study.Family("first", "First", comparisons,
                                                       seeds=range(3)))
    assert [r.seeds for r in first.results] == [3, 3, 3]


def test_the_verdict_across_tasks_shows_each_tasks_best_agile_twin_with_guidance():
    """Per task of study.VERDICTS: the candidate with the lowest mean difference among those
    with results (here: MNIST's, from the committed results), its interval, Holm p and
    settledness as its family has them, and one sentence of guidance for each outcome; a task
    without results is 'Not run yet.'; a candidate naming no comparison is refused."""
    results = report.load_results(REPO_ROOT / "docs" / "results")
    analysed = analysis.analyse(results)
    by_name = {(r.family.name, p.comparison.name): p
               for r in analysed.families for p in r.results}
    mnist = study.VERDICTS[0]
    made = [(by_name[(f, n)], rate) for f, n, rate in mnist.candidates
            if by_name[(f, n)].available]
    assert len(made) >= 2
    best, rate = questions.best_candidate(mnist, analysed)
    assert best.mean_difference == min(r.mean_difference for r, _ in made)
    heading, lines = questions.verdict_block(analysed)
    table = lines[-1].splitlines()
    assert heading == questions.VERDICT_CONCLUSION and len(table) == 2 + len(study.VERDICTS)
    assert table[2].startswith(f"| {mnist.task} | {best.comparison.name} | {rate} | "
                               f"{best.mean_difference:+.4f} [{best.ci_low:+.4f}, ")
    assert f"| {text.format_p(best.holm_p)} |" in table[2]
    assert all(row.endswith("| Not run yet. |") for row in table[3:]
               if "| - |" in row)
    better = dataclasses.replace(best, mean_difference=-0.02, ci_low=-0.03, ci_high=-0.01,
                                 significant=True)
    assert questions.guidance(better, "0.1x", study.NATS).startswith(
        "Worth using: combo 12 (agile_relu / agile_sigmoid) beat combo 9 (relu / agile_sigmoid) "
        "by 0.0200 with a and b at 0.1x")
    worse = dataclasses.replace(better, mean_difference=0.02, significant=True)
    assert questions.guidance(worse, "1x", study.BITS).startswith("Keep combo 9 (relu / ")
    unsettled = dataclasses.replace(better, ci_low=-0.005, ci_high=0.01, significant=False)
    assert questions.guidance(unsettled, "1x", study.BITS).endswith(
        "gains at most 0.0050 bits (95% CI).")
    with pytest.raises(ValueError, match="has no comparison 'combo 1 − combo 2'"):
        study.TaskVerdict("x", (("table1", "combo 1 − combo 2", "1x"),))
