"""agile.paper.report.results: the results files' records, their reader and writer; the
package imports neither the trainer nor the sweeps."""

import dataclasses
import subprocess
import sys

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from conftest import REPO_ROOT  # noqa: E402
from study_fakes import (  # noqa: E402
    MACHINE,
    fake_results,
    fake_run,
    fake_runs,
)

from agile.paper.combos import COMBOS  # noqa: E402
from agile.paper.report import results  # noqa: E402
from agile.paper.report.results import (  # noqa: E402
    CURVES,
    RUNS,
    TABLES,
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
    assert loaded.params is None and loaded.machine is None


def test_written_results_load_as_the_same_records(tmp_path):
    written = fake_results({"table1", "dense_only"}, 2)
    paths = results.write_results(written, tmp_path)
    assert sorted(p.name for p in paths) == sorted(results.FILES)
    loaded = results.load_results(tmp_path)
    assert (loaded.runs, loaded.curves, loaded.ranges, loaded.machine) == (
        written.runs, written.curves, written.ranges, MACHINE)
    assert loaded.params.keys() == written.params.keys()
    assert all(np.array_equal(loaded.params[k], written.params[k]) for k in written.params)
    results.write_results(dataclasses.replace(written, params=None), tmp_path)
    assert not (tmp_path / results.PARAMS).exists()  # no parameter file of another study stays


def test_committed_results_are_written_back_byte_for_byte(tmp_path):
    """The reader and writer agree with the files the exporter wrote (same columns, cells)."""
    results.write_results(results.load_results(COMMITTED), tmp_path)
    for name in (*(table.name for table in TABLES), results.MACHINE):
        assert (tmp_path / name).read_bytes() == (COMMITTED / name).read_bytes(), name


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
