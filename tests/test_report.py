"""agile.paper.report and scripts/study_report.py: the study's report from (fake) exported results.

The fake results are written here the way scripts/study.py exports real ones (same columns,
trial names from agile.paper.sweep, a combo-12 parameter file from agile.paper.models.CNN's shapes).
"""

import csv
import io
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from flax import traverse_util

matplotlib.use("Agg")

from conftest import REPO_ROOT  # noqa: E402

from agile.paper import report, stats, study  # noqa: E402  (after choosing the backend)
from agile.paper.combos import COMBOS, PAPER_TABLE1, combo_number  # noqa: E402
from agile.paper.models import CNN  # noqa: E402
from agile.paper.trials import CSV_FIELDS  # noqa: E402

RUN_FIELDS = ["group", *CSV_FIELDS]
SECTIONS = ("## 1. The command and its wall time", "## 2. Setup", "## 3. Table 1",
            "## 4. Paired comparisons", "## 5. What the paper did not run", "## 6. Figures",
            "## 7. Expressivity", "## 8. Conclusion")


def _csv_text(rows, fields):
    out = io.StringIO()
    writer = csv.DictWriter(out, fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _run_row(group, conv, dense, seed, loss, wall, steps=1500, best_step=1000):
    agile = conv.startswith(("agile", "combined")) or dense.startswith("agile")
    return {"group": group, "trial": study.GROUPS_BY_NAME[group].trial_name(conv, dense),
            "combo": combo_number(conv, dense), "conv_activation": conv,
            "dense_activation": dense, "seed": seed, "steps": steps, "best_step": best_step,
            "best_test_loss": loss, "final_test_loss": loss + 0.01,
            "best_test_accuracy": 0.97 - loss / 10, "final_test_accuracy": 0.96,
            "a_min": 0.9 if agile else None, "a_max": 1.1 if agile else None,
            "b_min": -0.1 if agile else None, "b_max": 0.1 if agile else None,
            "wall_time_s": wall}


def fake_runs(groups=None, seeds=4, rng=None):
    """Rows for ``groups`` (default: all): a loss per pair that drifts with its index."""
    rng = rng or np.random.default_rng(0)
    rows = []
    for group in study.GROUPS:
        if groups is not None and group.name not in groups:
            continue
        for index, (conv, dense) in enumerate(group.pairs):
            base, wall = 0.14 + 0.004 * index, 100.0 + index
            steps = rng.integers(800, 4000, seeds)
            for seed in range(seeds):
                rows.append(_run_row(group.name, conv, dense, seed,
                                     float(base + rng.normal(0, 0.005)), wall,
                                     int(steps[seed]), int(steps[seed]) - 500))
    return rows


def fake_curves(runs, every=50):
    """Validation loss every ``every`` steps up to each seed's steps; test loss every tenth."""
    rows = []
    for run in runs:
        if run["group"] not in ("table1", "dense_only"):
            continue
        for i, step in enumerate(range(every, run["steps"] + 1, every), start=1):
            loss = run["best_test_loss"] + 2.2 * math.exp(-step / 300)
            rows.append({"group": run["group"], "trial": run["trial"], "seed": run["seed"],
                         "step": step, "val_loss": round(loss, 6),
                         "test_loss": round(loss, 6) if i % 10 == 0 else None})
    return rows


def fake_ranges(runs):
    """Final a and b per agile layer: combo-12-like layers for every agile trial."""
    rows = []
    for run in runs:
        layers = [f"conv_act_{i}" for i in range(3) if run["conv_activation"].startswith(
            "agile")] + (["hidden_act"] if run["dense_activation"].startswith("agile") else [])
        for layer in layers:
            spread = 0.05 * (1 + run["seed"])
            for param, center in (("a", 1.0), ("b", 0.0)):
                rows.append({"group": run["group"], "trial": run["trial"], "seed": run["seed"],
                             "layer": layer, "param": param, "min": center - spread,
                             "max": center + 2 * spread, "mean": center + spread / 2})
    return rows


def fake_params():
    """Combo 12's parameters, flattened "layer/param", with a and b moved off their init."""
    conv, dense = COMBOS[12]
    shapes = jax.eval_shape(CNN(conv_activation=conv, dense_activation=dense).init,
                            jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
    rng = np.random.default_rng(1)
    flat = {}
    for path, shape in traverse_util.flatten_dict(shapes).items():
        center = 1.0 if path[-1] == "a" else 0.0
        scale = 0.3 if path[-1] in ("a", "b") else 0.2
        flat["/".join(path)] = (center + scale * rng.normal(size=shape.shape)).astype(np.float32)
    return flat


def write_fake_results(directory, groups=None, seeds=4):
    """Writes runs.csv, curves.csv, agile_ranges.csv and the combo-12 npz into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    runs = fake_runs(groups, seeds)
    (directory / "runs.csv").write_text(_csv_text(runs, RUN_FIELDS))
    (directory / "curves.csv").write_text(_csv_text(
        fake_curves(runs), ["group", "trial", "seed", "step", "val_loss", "test_loss"]))
    (directory / "agile_ranges.csv").write_text(_csv_text(
        fake_ranges(runs), ["group", "trial", "seed", "layer", "param", "min", "max", "mean"]))
    np.savez_compressed(directory / "combo12_seed0_params.npz", **fake_params())
    return directory


def _parsed(rows, fields=RUN_FIELDS):
    return report.parse_csv(_csv_text(rows, fields))


# ---------------------------------------------------------------------------------------------
# Reading.


def test_parse_csv_types_cells_and_names_the_bad_line():
    text = ("group,trial,seed,best_test_loss,a_min\n"
            "table1,combo_12,3,0.15,\n"
            "tanh_gelu,tanh-tanh,0,1e-2,-0.5\n")
    rows = report.parse_csv(text)
    assert rows[0] == {"group": "table1", "trial": "combo_12", "seed": 3,
                       "best_test_loss": 0.15, "a_min": None}
    assert rows[1]["trial"] == "tanh-tanh" and rows[1]["best_test_loss"] == 0.01
    with pytest.raises(report.ReportError, match=r"runs.csv line 3: a cell is not a number"):
        report.parse_csv(text.replace("1e-2", "oops"), "runs.csv")


def test_load_results_needs_runs_csv_and_its_columns_but_not_the_rest(tmp_path):
    with pytest.raises(report.ReportError, match=r"No runs.csv in .*run scripts/study.py"):
        report.load_results(tmp_path)
    (tmp_path / "runs.csv").write_text("group,trial,seed\ntable1,combo_01,0\n")
    with pytest.raises(report.ReportError, match="lacks the column.*best_test_loss"):
        report.load_results(tmp_path)
    (tmp_path / "runs.csv").write_text(_csv_text(fake_runs({"table1"}, 2), RUN_FIELDS))
    results = report.load_results(tmp_path)
    assert len(results.runs) == 24 and results.curves == results.ranges == []
    assert results.params is None


# ---------------------------------------------------------------------------------------------
# Summaries.


def test_wall_times_count_each_trial_once_per_group():
    rows = [_run_row("table1", *COMBOS[1], seed, 0.2, 100.0) for seed in range(3)]
    rows += [_run_row("table1", *COMBOS[2], seed, 0.2, 50.0) for seed in range(3)]
    rows += [_run_row("sgd", *COMBOS[7], seed, 0.2, 7200.0) for seed in range(2)]
    times = report.wall_times(_parsed(rows))
    assert list(times) == ["table1", "sgd"]  # study.GROUPS order
    assert times["table1"] == {"trials": 2, "seeds": 3, "seconds": 150.0}
    assert times["sgd"] == {"trials": 1, "seeds": 2, "seconds": 7200.0}
    table = report.wall_time_table(times)
    assert "2 min 30 s" in table and "2 h 00 min" in table and "2 h 02 min" in table
    assert [report.format_duration(s) for s in (8.44, 725, 3 * 3600 + 7 * 60)] == [
        "8.4 s", "12 min 05 s", "3 h 07 min"]


def test_table1_rows_put_the_papers_values_beside_our_seed_statistics():
    losses = [0.15, 0.16, 0.17]
    rows = [_run_row("table1", *COMBOS[12], seed, loss, 1.0, best_step=1000 + seed)
            for seed, loss in enumerate(losses)]
    rows.append(_run_row("sgd", *COMBOS[12], 0, 9.0, 1.0))  # another group: not Table 1
    table = report.table1_rows(_parsed(rows))
    assert [row["combo"] for row in table] == list(COMBOS)
    row = table[11]
    assert (row["paper_loss"], row["paper_iterations"]) == PAPER_TABLE1[12]
    assert row["loss"]["n"] == 3 and row["loss"]["mean"] == pytest.approx(0.16)
    assert row["loss"]["std"] == pytest.approx(0.01)
    half = 4.302653 * 0.01 / math.sqrt(3)  # t(0.975, 2) * s / sqrt(n)
    assert (row["loss"]["ci_low"], row["loss"]["ci_high"]) == (
        pytest.approx(0.16 - half, rel=1e-5), pytest.approx(0.16 + half, rel=1e-5))
    assert row["best_step"]["mean"] == pytest.approx(1001)
    assert table[0]["loss"] is None  # combo 1 not run
    markdown = report.table1_markdown(table)
    assert "| 12 | agile_relu | agile_sigmoid | 0.15027 | 3261 | 0.1600 ± 0.0100 |" in markdown
    assert "| 1 | sigmoid | relu | 0.18850 | 5030 | - | - |" in markdown


def test_curve_band_keeps_steps_most_seeds_reached():
    curves = [{"group": "table1", "trial": "combo_07", "seed": seed, "step": step,
               "val_loss": 1.0, "test_loss": value}
              for seed, points in enumerate([[(10, 1.0), (20, 0.5), (30, 0.4)],
                                             [(10, 3.0), (20, 0.7)],
                                             [(10, 2.0), (20, None), (25, 0.1)]])
              for step, value in points]
    band = report.curve_band(curves, "table1", "combo_07")
    assert band["seeds"] == 3
    np.testing.assert_array_equal(band["steps"], [10, 20])  # 25, 30: one seed of three
    np.testing.assert_allclose(band["mean"], [2.0, 0.6])
    np.testing.assert_allclose(band["std"], [1.0, np.std([0.5, 0.7], ddof=1)])


def test_rank_agreement_is_undefined_for_a_constant_column():
    table = report.table1_rows(_parsed(fake_runs({"table1"}, 3)))
    assert report.rank_agreement(table, "loss", "paper_loss")["n"] == 12
    for row in table:
        row["best_step"]["mean"] = 500.0
    assert report.rank_agreement(table, "best_step", "paper_iterations") is None


# ---------------------------------------------------------------------------------------------
# Comparisons.


def test_compare_pairs_by_seed_and_says_why_a_side_is_missing():
    rows = [_run_row("table1", *COMBOS[12], seed, loss, 1.0)
            for seed, loss in [(2, 0.13), (0, 0.15), (1, 0.14), (5, 0.2)]]
    rows += [_run_row("table1", *COMBOS[9], seed, loss, 1.0)
             for seed, loss in [(0, 0.16), (1, 0.16), (2, 0.17)]]
    runs = _parsed(rows)
    comparison = report.Comparison(report.combo_arm(12), report.combo_arm(9), -0.01)
    result = report.compare(runs, comparison)
    expected = stats.paired_comparison([0.15, 0.14, 0.13], [0.16, 0.16, 0.17])  # seeds 0, 1, 2
    assert result["seeds"] == 3
    assert result["mean_difference"] == pytest.approx(expected["mean_difference"])
    assert result["p_value"] == pytest.approx(expected["p_value"])
    missing_trial = report.compare(runs, report.Comparison(report.combo_arm(12),
                                                           report.combo_arm(7)))
    assert missing_trial["missing"] == "trial combo_07 of group table1 has no results"
    missing_group = report.compare(runs, report.Comparison(report.combo_arm(12, "sgd"),
                                                           report.combo_arm(7, "sgd")))
    assert missing_group["missing"] == "group sgd was not run"


def test_compare_family_applies_holm_over_the_available_comparisons():
    runs = _parsed(fake_runs({"table1"}, 5))
    results = report.compare_family(runs, report.table1_comparisons())
    assert len(results) == len(study.PAIRED_COMPARISONS)
    assert [r["holm_p"] for r in results] == pytest.approx(
        stats.holm([r["p_value"] for r in results]))
    assert all(r["significant"] == (r["holm_p"] < report.ALPHA) for r in results)
    ablations = report.compare_family(runs, report.ablation_comparisons())
    available = [r for r in ablations if "missing" not in r]
    assert [(r["comparison"].first.trial, r["comparison"].second.trial) for r in available] == [
        ("combo_12", "combo_07")]  # Table 1's own 12 vs 7; the other groups were not run
    assert available[0]["holm_p"] == pytest.approx(available[0]["p_value"])  # family of one


def _result(difference, significant, paper):
    comparison = report.Comparison(report.combo_arm(12), report.combo_arm(9), paper)
    return {"comparison": comparison, "mean_difference": difference, "ci_low": difference - 0.01,
            "ci_high": difference + 0.01, "p_value": 0.001, "holm_p": 0.004 if significant
            else 0.2, "significant": significant, "seeds": 10}


def test_paper_agreement_and_the_verdict_sentence():
    assert report.paper_agreement(_result(-0.02, True, -0.01)) == "agrees"
    assert report.paper_agreement(_result(+0.02, True, -0.01)) == "contradicts"
    assert report.paper_agreement(_result(-0.02, False, -0.01)) == "not confirmed"
    assert report.paper_agreement(_result(-0.02, True, None)) is None
    assert report.verdict(_result(-0.0123, True, -0.01)) == (
        "combo 12 has a lower best test loss than combo 9 by 0.0123 (difference -0.0123, 95% "
        "CI [-0.0223, -0.0023], 10 seeds; Holm p = 0.004, significant at 0.05).")
    assert "higher" in report.verdict(_result(0.03, False, -0.01))
    assert "not significant" in report.verdict(_result(0.03, False, -0.01))
    missing = {"comparison": _result(0, True, None)["comparison"], "seeds": 0,
               "missing": "group sgd was not run"}
    assert report.verdict(missing) == (
        "combo 12 against combo 9: no result (group sgd was not run).")


def test_ablation_findings_give_one_sentence_per_theme_run_or_not():
    runs = _parsed(fake_runs({"table1", "tanh_gelu"}, 4))
    findings = report.ablation_findings(report.compare_family(runs,
                                                              report.ablation_comparisons()))
    assert [f.split(":")[0] for f in findings] == [opening for opening, _ in
                                                   report.ABLATION_THEMES]
    assert "combo 12 (per channel) − combo 12 (per element): no result (group " \
           "granularity_channel was not run)" in findings[0]
    assert "agile tanh / agile tanh − tanh / tanh: " in findings[1] and "Holm p = " in findings[1]
    assert findings[3].count("no result") == 2  # sgd and full_data
    assert "combo 12 (Adam) − combo 7 (Adam): " in findings[3]


def test_short_outcome_says_significance_direction_and_interval():
    assert report.short_outcome(_result(-0.02, True, None)) == (
        "significantly lower (-0.0200 [-0.0300, -0.0100], Holm p = 0.004)")
    assert report.short_outcome(_result(0.02, False, None)).startswith(
        "no significant difference (+0.0200 [+0.0100, +0.0300], Holm p = 0.200)")


def test_table1_findings_count_the_family_and_name_the_best():
    results = [_result(-0.02, True, -0.01), _result(0.02, True, -0.01),
               _result(0.001, False, 0.01)]
    rows = [_run_row("table1", *COMBOS[c], s, 0.1 + 0.01 * c + 0.001 * s, 1.0)
            for c in (3, 9, 12) for s in range(3)]
    findings = report.table1_findings(report.table1_rows(_parsed(rows)), results)
    assert findings[0].startswith(
        "Of the 3 paired comparisons of an agile variant with its plain counterpart, the agile "
        "variant has a significantly lower best test loss in 1, a significantly higher one in "
        "1, and no significant difference in 1")
    assert "the paper's Table 1 has the agile variant lower in 2 of these 3" in findings[0]
    assert "Our lowest mean best test loss is combo 3" in findings[2]
    assert "combo 12, the paper's best combination, ranks 3 of 3" in findings[2]
    assert "The paper calls combo 3 slow" in findings[2]


def test_table1_findings_of_a_partial_study_say_how_far_it_got():
    rows = [_run_row("table1", *COMBOS[1], s, 0.14, 1.0) for s in range(3)]
    table = report.table1_rows(_parsed(rows))
    assert report.table1_findings(table, [{"missing": "not run"}]) == [
        "Table 1's comparisons could not be made yet: 1 of 12 combinations have results, and "
        "no comparison has both of its arms."]
    assert report.table1_findings(report.table1_rows([]), []) == [
        "Table 1's comparisons could not be made: " + report.not_run_line("table1")]


# ---------------------------------------------------------------------------------------------
# Parameters and the fold.


def test_parameter_counts_follow_the_granularity():
    element = report.parameter_counts("table1", *COMBOS[11])
    channel = report.parameter_counts("granularity_channel", *COMBOS[11])
    scalar = report.parameter_counts("granularity_scalar", *COMBOS[11])
    maps = 28 * 28 * 16 + 14 * 14 * 8 + 7 * 7 * 4
    assert element[1] == 2 * (maps + 30)
    assert channel[1] == 2 * (16 + 8 + 4 + 30)
    assert scalar[1] == 2 * 4
    assert element[0] - element[1] == channel[0] - channel[1] == scalar[0] - scalar[1]
    assert report.parameter_counts("table1", *COMBOS[7])[1] == 0


def test_fold_check_finds_the_folded_twin_equal_and_the_unfolded_one_not():
    fold = report.fold_check(fake_params(), inputs=8)
    assert fold["max_abs_difference"] < 1e-5 < 1e-2 < fold["dropped_difference"]
    assert (fold["plain"], fold["dense_agile"]) == ("sigmoid", 60)
    assert fold["conv_agile"] == 2 * (28 * 28 * 16 + 14 * 14 * 8 + 7 * 7 * 4)


# ---------------------------------------------------------------------------------------------
# The report.


def test_markdown_reports_missing_groups_instead_of_failing():
    runs = _parsed(fake_runs({"table1", "tanh_gelu"}, 3))
    results = report.Results(runs)
    analysis = report.Analysis(report.table1_rows(runs),
                               report.compare_family(runs, report.table1_comparisons()),
                               report.compare_family(runs, report.ablation_comparisons()), None)
    markdown = report.build_markdown(results, analysis, {}, counts=lambda *_: (100, 10))
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
    runs = _parsed([_run_row("table1", *COMBOS[c], s, 0.14, 60.0) for c in (1, 2)
                    for s in range(2)])
    section = report.command_section(runs)
    assert "Partly run (the sweep resumes where it stopped): `table1` (2 of 12 trials)." in section
    assert "Not run (no rows in the results): `dense_only`, " in section
    full = _parsed(fake_runs({"table1"}, 2))
    assert "Partly run" not in report.command_section(full)


def test_save_figure_writes_the_same_bytes_twice_without_the_version(tmp_path):
    fig = report.figure_combo12_ranges(report.parse_csv(_csv_text(
        fake_ranges(fake_runs({"table1"}, 2)),
        ["group", "trial", "seed", "layer", "param", "min", "max", "mean"])))
    report.save_figure(fig, tmp_path / "one.png", dpi=30)
    report.save_figure(fig, tmp_path / "two.png", dpi=30)
    data = (tmp_path / "one.png").read_bytes()
    assert data.startswith(b"\x89PNG") and data == (tmp_path / "two.png").read_bytes()
    assert b"matplotlib" not in data


@pytest.mark.slow
def test_study_report_script_writes_the_report_and_figures(tmp_path):
    """End to end: scripts/study_report.py on fake results with some groups not run."""
    results = write_fake_results(tmp_path / "results", {"table1", "dense_only", "sgd"})
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
    names = sorted(p.name for p in (docs / "figures").glob("study_*.png"))
    assert names == sorted(name for name, _ in report.FIGURES.values())
    for name in names:
        assert f"](figures/{name})" in markdown
        assert (docs / "figures" / name).read_bytes().startswith(b"\x89PNG")
    assert not stale.exists()


def test_committed_report_is_what_the_committed_results_give():
    """docs/reproduction.md is exactly what docs/results/ give: its numbers match the committed
    CSVs and nobody edited it by hand (rerun scripts/study_report.py after changing either)."""
    results = report.load_results(REPO_ROOT / "docs" / "results")
    drawn = {key: (REPO_ROOT / "docs" / "figures" / name).is_file()
             for key, (name, _) in report.FIGURES.items()}
    expected = report.build_markdown(results, report.analyse(results), drawn)
    assert (REPO_ROOT / "docs" / "reproduction.md").read_text() == expected
