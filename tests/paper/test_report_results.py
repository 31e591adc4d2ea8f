"""agile.paper.report.results: the results files' records, their reader, writer and merge, and
publishing into a docs folder (agile.paper.report.publish).

The reader refuses, in one line naming file, line and field, what the red-team report found
turning into confident wrong conclusions: NaN and inf (#154, #155), conflicting duplicate
rows (#162), torn rows and cut files (#158), a damaged machine.json (#160), and the
one-machine machine.json of earlier versions (which machine timed which group is not in it).
"""

import dataclasses
import json
import logging
import os
import subprocess
import sys

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from agile_testing import REPO_ROOT  # noqa: E402
from study_fakes import (  # noqa: E402
    MACHINE,
    fake_machines,
    fake_params,
    fake_results,
    fake_run,
    fake_runs,
    write_fake_results,
)

from agile.paper import report  # noqa: E402
from agile.paper.combos import COMBOS  # noqa: E402
from agile.paper.report import results  # noqa: E402
from agile.paper.report.figures import FIGURES  # noqa: E402
from agile.paper.report.results import (  # noqa: E402
    CURVES,
    RANGES,
    RUNS,
    TABLES,
    Curve,
    Range,
    ReportError,
    Results,
    Run,
)
from agile.paper.trials import CSV_FIELDS, SeedResult, columns  # noqa: E402

COMMITTED = REPO_ROOT / "docs" / "results"


def _runs_text(*changes):
    """runs.csv of two Table 1 seeds, with ``(line, column, text)`` cells replaced."""
    rows = [fake_run("table1", *COMBOS[12], 3, 0.15, 10.0), fake_run("table1", *COMBOS[7], 0,
                                                                     0.01, 10.0)]
    lines = results.csv_text(rows, RUNS).splitlines()
    for line, column, text in changes:
        cells = lines[line - 1].split(",")
        cells[RUNS.columns.index(column)] = text
        lines[line - 1] = ",".join(cells)
    return "\n".join(lines) + "\n"


def _write(directory, name, text):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory


# ---------------------------------------------------------------------------------------------
# The records.


def test_tables_name_every_field_of_their_record_once_and_runs_start_with_the_group():
    for table in TABLES:
        assert sorted(table.columns) == sorted(columns(table.record))
        assert set(table.key) <= set(table.columns)
    assert RUNS.columns == ("group", *CSV_FIELDS)  # the column order runs.csv always had
    assert issubclass(Run, SeedResult) and RUNS.timing == {"wall_time_s"}
    run = fake_run("table1", *COMBOS[12], 0, 0.15, 10.0)
    assert RUNS.key_of(run) == ("table1", "combo_12", 0)
    assert RUNS.describe(RUNS.key_of(run)) == "group=table1, trial=combo_12, seed=0"
    assert Results([run]).rows(RUNS) == [run] and Results([run]).rows(CURVES) == []


# ---------------------------------------------------------------------------------------------
# Reading.


def test_parse_table_types_cells_and_names_the_bad_line():
    text = _runs_text((2, "a_min", ""), (3, "best_test_loss", "1e-2"), (3, "trial", "tanh-tanh"))
    rows = results.parse_table(text, RUNS)
    assert (rows[0].group, rows[0].trial, rows[0].seed, rows[0].best_test_loss,
            rows[0].a_min) == ("table1", "combo_12", 3, 0.15, None)
    assert type(rows[0].seed) is int and type(rows[0].best_test_loss) is float
    assert rows[1].trial == "tanh-tanh" and rows[1].best_test_loss == 0.01
    with pytest.raises(ReportError, match=r"runs.csv line 3: a cell is not a number"):
        results.parse_table(text.replace("1e-2", "oops"), RUNS, "runs.csv")
    with pytest.raises(ReportError, match=r"runs.csv line 2: a cell is not an integer "
                                          r"\(seed = '3.5'\)"):
        results.parse_table(_runs_text((2, "seed", "3.5")), RUNS)


def test_load_results_needs_runs_csv_and_its_columns_but_not_the_rest(tmp_path):
    with pytest.raises(ReportError, match=r"No runs.csv in .*run scripts/study.py"):
        results.load_results(tmp_path)
    (tmp_path / "runs.csv").write_text("group,trial,seed\ntable1,combo_01,0\n")
    with pytest.raises(ReportError, match="lacks the column.*best_test_loss"):
        results.load_results(tmp_path)
    (tmp_path / "runs.csv").write_text(results.csv_text(fake_runs({"table1"}, 2), RUNS))
    loaded = results.load_results(tmp_path)
    assert len(loaded.runs) == 24 and loaded.curves == loaded.ranges == []
    assert loaded.params is None and loaded.machines is None


def test_written_results_load_as_the_same_records(tmp_path):
    settings = {"table1": {"config": {"num_epochs": 200}, "seed": 0, "seeds": 2}}
    written = dataclasses.replace(fake_results({"table1", "dense_only", "transformer"}, 2),
                                  settings=settings)
    paths = results.write_results(written, tmp_path)
    assert sorted(p.name for p in paths) == sorted(results.FILES)
    loaded = results.load_results(tmp_path)
    assert (loaded.runs, loaded.curves, loaded.ranges, loaded.machines, loaded.settings) == (
        written.runs, written.curves, written.ranges, written.machines, settings)
    assert loaded.machines == {"table1": (MACHINE,), "dense_only": (MACHINE,),
                               "transformer": (MACHINE,)}
    assert loaded.params.keys() == written.params.keys()
    assert all(np.array_equal(loaded.params[k], written.params[k]) for k in written.params)
    results.write_results(dataclasses.replace(written, params=None, settings=None), tmp_path)
    assert not (tmp_path / results.PARAMS).exists()  # no parameter file of another study stays
    assert not (tmp_path / results.SETTINGS).exists()  # nor settings of another study


def test_committed_results_are_written_back_byte_for_byte(tmp_path):
    """The reader and writer agree with the files the exporter wrote (same columns, cells)."""
    results.write_results(results.load_results(COMMITTED), tmp_path)
    for name in (*(table.name for table in TABLES), results.MACHINE):
        assert (tmp_path / name).read_bytes() == (COMMITTED / name).read_bytes(), name


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize("table, column", [(RUNS, "best_test_loss"), (RUNS, "wall_time_s"),
                                           (CURVES, "val_loss"), (RANGES, "max")])
def test_non_finite_numbers_are_refused_naming_file_line_and_field(tmp_path, table, column,
                                                                   value):
    """#154, #155: NaN or inf once gave "significantly higher (+nan ...), Holm p = 0"."""
    fake = fake_results({"table1"}, 2, params=False)
    results.write_results(fake, tmp_path)
    path = tmp_path / table.name
    lines = path.read_text().splitlines()
    cells = lines[2].split(",")
    cells[table.columns.index(column)] = value
    lines[2] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ReportError, match=rf"{table.name} line 3: {column} is {value}, not a "
                                          "finite number"):
        results.load_results(tmp_path)


def test_conflicting_duplicate_rows_are_refused_naming_both_lines():
    """#162: a second row for (group, trial, seed) silently replaced the first."""
    text = _runs_text()
    lines = text.splitlines()
    changed = lines[1].replace(",0.15,", ",0.001,")
    with pytest.raises(ReportError, match=r"runs.csv lines 2 and 4: two rows for group=table1, "
                                          r"trial=combo_12, seed=3 that differ in "
                                          r"best_test_loss; delete the wrong one"):
        results.parse_table(text + changed + "\n", RUNS)
    curve = Curve("table1", "combo_12", 0, 50, 0.5, None)
    curves = results.csv_text([curve, dataclasses.replace(curve, test_loss=0.4)], CURVES)
    with pytest.raises(ReportError, match=r"curves.csv lines 2 and 3: .*step=50 that differ in "
                                          r"test_loss"):
        results.parse_table(curves, CURVES)
    other_step = results.csv_text([curve, dataclasses.replace(curve, step=100)], CURVES)
    assert len(results.parse_table(other_step, CURVES)) == 2  # another key: two rows
    ranges = results.csv_text([Range("table1", "combo_12", 0, "hidden_act", "a", 0.5, 1.5, 1.0),
                               Range("table1", "combo_12", 0, "hidden_act", "a", 0.5, 1.6, 1.0)],
                              RANGES)
    with pytest.raises(ReportError, match=r"lines 2 and 3: .*layer=hidden_act, param=a that "
                                          r"differ in max"):
        results.parse_table(ranges, RANGES)


def test_an_exact_duplicate_row_is_dropped_with_a_warning(caplog):
    """#161: an exact copy of a row changes nothing, and says so."""
    text = _runs_text()
    lines = text.splitlines()
    with caplog.at_level(logging.WARNING):
        rows = results.parse_table(text + lines[1] + "\n", RUNS)
    assert rows == results.parse_table(text, RUNS)
    assert "runs.csv line 4 repeats line 2 exactly; the repeat is dropped." in caplog.text


def test_torn_rows_and_a_file_cut_mid_row_are_refused_naming_the_line():
    """#158: a runs.csv cut at 2/3 was reported without a word, a trial shown with 0 seeds."""
    text = _runs_text()
    lines = text.splitlines()
    with pytest.raises(ReportError, match=r"runs.csv line 3: the file ends mid-row \(no final "
                                          r"newline\), so it was cut off"):
        results.parse_table(text[:-10], RUNS)
    short = ",".join(lines[2].split(",")[:6])
    with pytest.raises(ReportError, match=r"runs.csv line 3: 6 of the header's 17 cells \(a torn "
                                          r"row\)"):
        results.parse_table("\n".join([*lines[:2], short]) + "\n", RUNS)
    with pytest.raises(ReportError, match=r"runs.csv line 2: 18 cells where the header has 17"):
        results.parse_table("\n".join([lines[0], lines[1] + ",1", lines[2]]) + "\n", RUNS)
    with pytest.raises(ReportError, match=r"runs.csv line 2: seed is empty"):
        results.parse_table(_runs_text((2, "seed", "")), RUNS)


def test_a_damaged_machine_json_or_parameter_file_is_refused_naming_it(tmp_path):
    """#160: a torn machine.json gave a JSONDecodeError traceback without the file's name.
    Each group maps to the machines that timed its rows; anything else is refused in one
    line naming the file (and the group, where one is at fault)."""
    write_fake_results(tmp_path, {"dense_only"}, 2)
    assert results.load_results(tmp_path).machines == {"dense_only": (MACHINE,)}
    path = tmp_path / "machine.json"
    for damaged, message in (
            ('{"dense_only": [{"cpu": "x", ', "is not valid JSON"),
            ("[1, 2]", "does not map each group to the machines that timed its rows"),
            ('{"dense_only": []}', "does not map each group to the machines"),
            ('{"dense_only": {"cpu": "x"}}', "does not map each group to the machines"),
            ('{"dense_only": [{"cpu": "x", "logical_cpus": 2}]}',
             ": a machine of group dense_only lacks a valid memory_gib, jax, backend"),
            ('{"dense_only": [{"cpu": "x", "logical_cpus": true, "memory_gib": 8, "jax": "0", '
             '"backend": "cpu"}]}', ": a machine of group dense_only lacks a valid logical_cpus;"),
            ('{"dense_only": ["Test CPU"]}', ": a machine of group dense_only lacks a valid cpu")):
        path.write_text(damaged)
        with pytest.raises(ReportError) as err:
            results.load_results(tmp_path)
        assert str(err.value).startswith(f"{path}") and message in str(err.value), damaged
        assert "\n" not in str(err.value)
    path.unlink()
    (tmp_path / results.PARAMS).write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ReportError, match=rf"{tmp_path / results.PARAMS} cannot be read"):
        results.load_results(tmp_path)


def test_the_one_machine_format_of_earlier_versions_is_refused_not_guessed(tmp_path):
    """machine.json once named one machine for the whole folder, though groups were trained on
    different machines; which machine timed which group is not in it, so it is refused in one
    line saying what to write instead (not spread over every group)."""
    write_fake_results(tmp_path, {"dense_only"}, 2)
    (tmp_path / "machine.json").write_text(json.dumps(dataclasses.asdict(MACHINE)))
    with pytest.raises(ReportError) as err:
        results.load_results(tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'machine.json'} names one machine for every group (the format before "
        'each group recorded its own); write it as {"<group>": [<machine>, ...]} naming the '
        "machines that timed each group's rows (the file does not say which, so they are not "
        "guessed).")


# ---------------------------------------------------------------------------------------------
# Merging and publishing.


def test_merge_keeps_existing_rows_adds_new_ones_and_ignores_wall_time():
    old = fake_results({"table1"}, 2)
    new = fake_results({"table1", "dense_only"}, 2, params=False)
    retimed = [dataclasses.replace(run, wall_time_s=run.wall_time_s + 5) for run in new.runs]
    merged = results.merge(old, dataclasses.replace(new, runs=retimed))
    assert merged.runs[:len(old.runs)] == old.runs  # kept, with their own wall times
    assert [r.group for r in merged.runs[len(old.runs):]] == ["dense_only"] * 4
    assert merged.curves[:len(old.curves)] == old.curves and len(merged.curves) > len(old.curves)
    assert merged.params is old.params
    assert merged.machines == {"table1": (MACHINE,), "dense_only": (MACHINE,)}
    only_new = results.merge(Results([]), new)
    assert only_new.runs == new.runs and only_new.machines == new.machines


OTHER_MACHINE = dataclasses.replace(MACHINE, cpu="Another CPU", logical_cpus=16)


def test_merge_records_each_groups_machines_and_names_both_where_a_group_had_two(caplog):
    """A group keeps the machine that timed its rows; a group new to the results brings its
    own; rows added to a group from another machine add that machine to the group's (with a
    warning naming the group and both CPUs), so no row is credited to a machine it did not
    run on. Rows already there (nothing added) change nothing."""
    old = fake_results({"table1", "dense_only"}, 2)
    more = _later_seeds(fake_results({"table1", "sgd"}, 2, params=False), 2)
    elsewhere = dataclasses.replace(more, machines=fake_machines(more.runs, OTHER_MACHINE))
    with caplog.at_level(logging.WARNING):
        merged = results.merge(old, elsewhere, "docs/results")
    assert merged.machines == {"table1": (MACHINE, OTHER_MACHINE), "dense_only": (MACHINE,),
                               "sgd": (OTHER_MACHINE,)}
    assert ("docs/results/machine.json: group table1 was timed on Test CPU and its rows added "
            "now on Another CPU; it names both.") in caplog.text
    assert "group sgd" not in caplog.text and "group dense_only" not in caplog.text
    again = results.merge(merged, elsewhere)  # the same rows once more: nothing is added
    assert again.machines == merged.machines and again.runs == merged.runs
    same = results.merge(old, dataclasses.replace(elsewhere, machines=fake_machines(more.runs)))
    assert same.machines == {"table1": (MACHINE,), "dense_only": (MACHINE,), "sgd": (MACHINE,)}
    nothing_new = results.merge(old, dataclasses.replace(old, machines=fake_machines(
        old.runs, OTHER_MACHINE)))
    assert nothing_new.machines == old.machines


def test_merge_leaves_a_groups_machines_alone_where_some_of_its_rows_record_none(caplog):
    """Rows published without a machine, or added to a group whose rows there record none,
    cannot be credited honestly: the group's machines stay as they were, with a warning."""
    old = fake_results({"table1"}, 2)
    more = _later_seeds(fake_results({"table1", "sgd"}, 2, params=False), 2)
    with caplog.at_level(logging.WARNING):
        merged = results.merge(old, dataclasses.replace(more, machines=None), "docs/results")
    assert merged.machines == {"table1": (MACHINE,)}
    assert ("docs/results/machine.json: the rows of group table1 published now record no "
            "machine, so its machines are left as they are (Test CPU).") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        merged = results.merge(dataclasses.replace(old, machines=None), more, "docs/results")
    assert merged.machines == {"sgd": (MACHINE,)}  # not table1: its rows there ran who knows where
    assert ("the rows of group table1 there record no machine, so its machines are left as "
            "they are (none).") in caplog.text


def test_merge_refuses_rows_that_differ_naming_key_and_fields():
    old = fake_results({"table1"}, 2, params=False)
    changed = list(old.runs)
    changed[3] = dataclasses.replace(changed[3], best_test_loss=0.5, steps=7)
    changed[5] = dataclasses.replace(changed[5], best_step=1)
    with pytest.raises(ReportError, match=(
            r"docs/results/runs.csv already has group=table1, trial=combo_02, seed=1 with other "
            r"values \(steps \d+ there, 7 here; best_test_loss [\d.]+ there, 0.5 here\) \(and 1 "
            r"more rows\); nothing was written")):
        results.merge(old, dataclasses.replace(old, runs=changed), "docs/results")
    params = fake_params()
    moved = {**params, "hidden_act/a": params["hidden_act/a"] + 1}
    with pytest.raises(ReportError, match="combo12_seed0_params.npz holds other parameters"):
        results.merge(dataclasses.replace(old, params=params),
                      dataclasses.replace(old, params=moved))


@pytest.mark.slow
def test_publish_merges_into_docs_results_and_rewrites_the_report(tmp_path):
    docs = tmp_path / "docs"
    write_fake_results(docs / "results", {"table1"}, 2)
    run = write_fake_results(tmp_path / "run" / "results", {"dense_only"}, 2)
    before = results.load_results(docs / "results")
    written = report.publish(run, docs, dpi=20)
    after = results.load_results(docs / "results")
    assert after.runs[:len(before.runs)] == before.runs
    assert {r.group for r in after.runs} == {"table1", "dense_only"}
    assert docs / "reproduction.md" in written and docs / "results" / "runs.csv" in written
    markdown = (docs / "reproduction.md").read_text()
    assert "Group `dense_only` was not run" not in markdown
    assert "Group `table1` was not run" not in markdown
    assert (docs / "figures" / FIGURES["fig11"][0]).is_file()


def test_publish_of_a_disagreeing_study_writes_nothing(tmp_path):
    docs = tmp_path / "docs"
    write_fake_results(docs / "results", {"table1", "dense_only"}, 2)
    fake = fake_results({"table1"}, 2)
    runs = [dataclasses.replace(r, best_test_loss=r.best_test_loss + 0.01) for r in fake.runs]
    run = tmp_path / "run" / "results"
    results.write_results(dataclasses.replace(fake, runs=runs), run)
    files = {p: p.read_bytes() for p in docs.rglob("*") if p.is_file()}
    with pytest.raises(ReportError, match=r"runs.csv already has group=table1, trial=combo_01, "
                                          r"seed=0 with other values \(best_test_loss"):
        report.publish(run, docs, dpi=20)
    assert {p: p.read_bytes() for p in docs.rglob("*") if p.is_file()} == files


# ---------------------------------------------------------------------------------------------
# The package.


def test_importing_the_report_imports_neither_the_trainer_nor_the_sweeps():
    code = ("import sys, agile.paper.report, agile.paper.report.text; "
            "print(sorted(m for m in ('agile.paper.train', 'agile.paper.sweep', "
            "'agile.paper.ray_sweep', 'agile.paper.report.export') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Settings of the published rows (#28, N107) and advice for the committed study (N108).


def _table1_settings(**config):
    """A study's settings of group table1 (the study's own, with ``config`` fields changed)."""
    from agile.paper import study

    overrides = {name.replace("__", "."): value for name, value in config.items()}
    return study.GROUPS_BY_NAME["table1"].settings(2, **overrides)


def _later_seeds(results_, first):
    """``results_`` as if trained on seeds ``first``.. (its rows' seeds shifted)."""
    shift = [dataclasses.replace(r, seed=r.seed + first) for r in results_.runs]
    return dataclasses.replace(
        results_, runs=shift, params=None,
        curves=[dataclasses.replace(c, seed=c.seed + first) for c in results_.curves],
        ranges=[dataclasses.replace(r, seed=r.seed + first) for r in results_.ranges])


@pytest.mark.slow
def test_publish_refuses_rows_trained_with_other_settings_naming_group_and_fields(tmp_path):
    """N107: seeds 2-3 of table1 trained with a smoke test's --overrides were merged into
    committed seeds 0-1 without a word, and the report pooled two experiments. Each group's
    settings travel with its rows (settings.json); other settings are refused in one line and
    nothing is written; the same settings (any seed blocks) are merged."""
    docs = tmp_path / "docs"
    committed = dataclasses.replace(fake_results({"table1"}, 2),
                                    settings={"table1": _table1_settings()})
    results.write_results(committed, docs / "results")
    smoke = _later_seeds(fake_results({"table1"}, 2, params=False), 2)
    run = tmp_path / "run" / "results"
    results.write_results(dataclasses.replace(smoke, settings={"table1": _table1_settings(
        num_epochs=4, data__train_size=1000)}), run)
    files = {p: p.read_bytes() for p in docs.rglob("*") if p.is_file()}
    message = (r"^.*docs/results/settings.json: group table1 was trained with other settings "
               r"than the rows published now \(config.data.train_size 5000 there, 1000 here; "
               r"config.num_epochs 200 there, 4 here\); nothing was written. Publish rows "
               r"trained with the group's settings there \(the study's command without other "
               r"--overrides\), or publish into another --docs_dir.$")
    with pytest.raises(ReportError, match=message):
        report.publish(run, docs, dpi=20)
    with pytest.raises(ReportError, match=message):  # what scripts/study.py asks before training
        report.check_publishable(docs, {"table1": _table1_settings(num_epochs=4,
                                                                    data__train_size=1000)})
    assert {p: p.read_bytes() for p in docs.rglob("*") if p.is_file()} == files
    same = {**_table1_settings(), "seeds": 10}  # trained in other seed blocks: the same
    results.write_results(dataclasses.replace(smoke, settings={"table1": same}), run)
    report.publish(run, docs, dpi=20)
    merged = results.load_results(docs / "results")
    assert sorted({r.seed for r in merged.runs}) == [0, 1, 2, 3]
    assert merged.settings == {"table1": _table1_settings()}  # the committed ones, kept


@pytest.mark.slow
def test_publish_refuses_rows_without_settings_where_the_group_records_them(tmp_path, caplog):
    """Rows exported by an older version (no settings.json) cannot be checked against a group
    that records its settings: refused. Into results that record none (older ones), the rows'
    settings are recorded with a warning that nothing was checked."""
    docs = tmp_path / "docs"
    results.write_results(dataclasses.replace(fake_results({"table1"}, 2),
                                              settings={"table1": _table1_settings()}),
                          docs / "results")
    run = tmp_path / "run" / "results"
    results.write_results(_later_seeds(fake_results({"table1"}, 2, params=False), 2), run)
    with pytest.raises(ReportError, match=r"^The rows of group table1 published now record no "
                                          r"settings, and .*settings.json does"):
        report.publish(run, docs, dpi=20)
    old = tmp_path / "old"
    write_fake_results(old / "results", {"table1"}, 2)
    results.write_results(dataclasses.replace(
        _later_seeds(fake_results({"table1"}, 2, params=False), 2),
        settings={"table1": _table1_settings()}), run)
    with caplog.at_level(logging.WARNING):
        report.publish(run, old, dpi=20)
    assert "records no settings for group table1, so the rows published now are not checked" \
        in caplog.text
    assert results.load_results(old / "results").settings == {"table1": _table1_settings()}


def test_a_torn_committed_results_file_is_answered_with_advice_that_keeps_it(tmp_path):
    """N108: a cut docs/results/runs.csv was refused with "export it again (... --results_dir=
    <this folder>)", which for the committed study replaces it with one workdir's rows. Publish
    advises restoring the committed file and publishing again."""
    docs = tmp_path / "docs"
    write_fake_results(docs / "results", {"table1"}, 2)
    runs_csv = docs / "results" / "runs.csv"
    runs_csv.write_bytes(runs_csv.read_bytes()[: len(runs_csv.read_bytes()) * 2 // 3])
    run = write_fake_results(tmp_path / "run" / "results", {"dense_only"}, 2)
    with pytest.raises(ReportError) as err:
        report.publish(run, docs, dpi=20)
    assert "the file ends mid-row" in str(err.value)
    assert str(err.value).endswith(
        "restore the committed file (git checkout -- <this folder>) and publish again "
        "(scripts/study.py --skip_training --publish).")
    assert "export it again" not in str(err.value)


def test_the_committed_machines_name_one_machine_for_each_committed_group():
    """docs/results/machine.json names, for every group with rows there, the machine that timed
    it: the twelve groups published before the a/b-rate curve on the Xeon, the curve's three
    rates (agile_lr_0.01x, 0.03x and 0.3x) on the AMD EPYC; every later group on some machine."""
    committed = results.load_results(COMMITTED)
    assert list(committed.machines) == list(dict.fromkeys(run.group for run in committed.runs))
    cpus = {group: [machine.cpu for machine in machines]
            for group, machines in committed.machines.items()}
    epyc = ("agile_lr_0.01x", "agile_lr_0.03x", "agile_lr_0.3x")
    xeon = ("table1", "dense_only", "granularity_channel", "granularity_scalar", "tanh_gelu",
            "combined", "sgd", "full_data", "agile_lr_0.1x", "agile_lr_10x", "baselines",
            "capacity")
    assert {group: cpus[group] for group in epyc} == {group: ["AMD EPYC"] for group in epyc}
    assert {group: cpus[group] for group in xeon} == {
        group: ["Intel(R) Xeon(R) Processor"] for group in xeon}
    assert all(cpus.values())


def test_the_committed_settings_are_the_study_groups_own():
    """docs/results/settings.json records each committed group's settings as the study's
    groups give them (so publishing more seeds of a group with the study's command is
    accepted) and covers every group with rows there."""
    from agile.paper import study

    committed = results.load_results(REPO_ROOT / "docs" / "results")
    assert set(committed.settings) == {run.group for run in committed.runs}
    own = {name: study.GROUPS_BY_NAME[name].settings(range(10, 30)) for name in committed.settings}
    results.check_settings(committed.settings, own, sorted(own), "docs/results")


@pytest.mark.slow
def test_study_report_on_a_torn_committed_file_advises_restoring_it(tmp_path):
    """N108 for scripts/study_report.py: the repository's docs/results get the advice that
    keeps them; any other results folder the export advice. (The script runs from a copy
    whose docs/ is a copy, so this checkout's docs/ is never touched.)"""
    import shutil

    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO_ROOT / "scripts" / "study_report.py", tmp_path / "scripts")
    for folder in (tmp_path / "docs" / "results", tmp_path / "elsewhere" / "results"):
        write_fake_results(folder, {"table1"}, 2)
        runs_csv = folder / "runs.csv"
        runs_csv.write_bytes(runs_csv.read_bytes()[: len(runs_csv.read_bytes()) * 2 // 3])
    lines = {}
    for name in ("docs", "elsewhere"):
        done = subprocess.run(
            [sys.executable, "scripts/study_report.py", f"--results_dir={name}/results",
             f"--docs_dir={name}", "--dpi=20"], cwd=tmp_path, capture_output=True, text=True,
            timeout=300, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        lines[name] = done.stderr.strip().splitlines()[-1]
    assert lines["docs"].endswith("the file ends mid-row (no final newline), so it was cut off; "
                                  "restore the committed file (git checkout -- <this folder>) "
                                  "and publish again (scripts/study.py --skip_training "
                                  "--publish).")
    assert lines["elsewhere"].endswith("so it was cut off; export it again (scripts/study.py "
                                       "--skip_training --results_dir=<this folder>).")


def test_the_transformers_parameters_are_written_read_and_merged_like_combo_12s(tmp_path):
    """transformer_agile_gelu_seed0_params.npz: written when the results have them (and
    removed when not), read back equal, kept by a merge that has none, refused by one that
    has others (naming the file)."""
    full = fake_results({"table1", "transformer"}, 2)
    assert full.transformer_params is not None
    results.write_results(full, tmp_path)
    back = results.load_results(tmp_path)
    assert back.transformer_params.keys() == full.transformer_params.keys()
    assert all(np.array_equal(back.transformer_params[k], v)
               for k, v in full.transformer_params.items())
    results.write_results(dataclasses.replace(full, transformer_params=None), tmp_path)
    assert not (tmp_path / results.TRANSFORMER_PARAMS).exists()
    none = dataclasses.replace(full, transformer_params=None)
    kept = results.merge(full, none)
    assert kept.transformer_params is full.transformer_params
    layer = next(k for k in full.transformer_params if k.endswith("/a"))
    moved = {**full.transformer_params, layer: full.transformer_params[layer] + 1}
    with pytest.raises(ReportError, match=f"docs/results/{results.TRANSFORMER_PARAMS} holds "
                                          "other parameters of the transformer's agile GELU"):
        results.merge(full, dataclasses.replace(full, transformer_params=moved), "docs/results")
