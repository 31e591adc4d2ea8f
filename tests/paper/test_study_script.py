"""scripts/study.py and its exporter (agile.paper.report.export): trial folders to a results
folder, one-line errors for bad flags, and where a study's results and report go.

A study run writes into its own workdir (WORKDIR/results/, WORKDIR/reproduction.md,
WORKDIR/figures/) and touches docs/ only with --publish (#141). Every command here runs with
the temporary folder as its working directory and --docs_dir in it, so a failing test
cannot touch this checkout's docs/.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from agile_testing import REPO_ROOT, first_fast
from study_fakes import write_fake_results

from agile.paper import study
from agile.paper.report import export, results
from agile.paper.report.results import ReportError
from agile.paper.workdir import Checkpoints, WorkdirError

SCRIPT = str(REPO_ROOT / "scripts" / "study.py")


def _seed(seed, loss, conv="agile_relu", dense="agile_sigmoid", combo=12):
    """One seed's entry of a summary.json, as agile.paper.summary writes it."""
    return {"combo": combo, "conv_activation": conv, "dense_activation": dense, "seed": seed,
            "steps": 100, "best_step": 50 + seed, "best_test_loss": loss,
            "final_test_loss": loss + 0.01, "best_test_accuracy": 0.9,
            "final_test_accuracy": 0.91, "wall_time_s": 3.0,
            "agile_ranges": {"hidden_act/a": {"min": 0.2123456789, "max": 1.1, "mean": 0.9},
                             "hidden_act/b": {"min": -0.3, "max": 0.4, "mean": 0.0}}}


def _trial(directory, summary, rows):
    directory.mkdir(parents=True)
    (directory / "summary.json").write_text(json.dumps(summary))
    (directory / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return directory


def fake_study(workdir):
    """A study folder: Table 1's combo 12 (2 seeds, batched, with a checkpoint), the dense-only
    network's sigmoid trial (one seed) and an unfinished sgd trial (no summary.json)."""
    combo12 = _trial(workdir / "table1" / "combo_12",
                     {"num_seeds": 2, "seeds": [_seed(0, 0.15), _seed(1, 0.16)]},
                     [{"seed": s, "step": step, "val_loss": 0.5 + s + step / 1e4,
                       "test_loss": 0.4} for step in (50, 100) for s in (0, 1)])
    _trial(workdir / "dense_only" / "sigmoid", _seed(0, 0.3, "relu", "sigmoid", None),
           [{"step": 50, "val_loss": 0.71234567}])
    (workdir / "sgd" / "combo_07").mkdir(parents=True)
    for name in ("table1", "dense_only", "sgd"):  # what the study's sweeps claimed them with
        (workdir / name / "sweep.json").write_text(json.dumps(
            study.GROUPS_BY_NAME[name].settings(2)))
    kernel = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)  # leading seed axis
    checkpoints = Checkpoints(combo12)
    checkpoints.save(100, {"state": {"params": {"hidden": {"kernel": kernel}}}},
                     {"histories": [{}, {}]})
    checkpoints.close()
    return workdir


def test_collect_reads_finished_trials_of_the_groups_asked_for(tmp_path):
    collected = export.collect(fake_study(tmp_path), study.GROUPS)
    assert [(r.group, r.trial, r.seed, r.best_test_loss) for r in collected.runs] == [
        ("table1", "combo_12", 0, 0.15), ("table1", "combo_12", 1, 0.16),
        ("dense_only", "sigmoid", 0, 0.3)]
    assert [(c.group, c.seed, c.step) for c in collected.curves] == [
        ("table1", 0, 50), ("table1", 1, 50), ("table1", 0, 100), ("table1", 1, 100),
        ("dense_only", 0, 50)]  # a single seed's rows have no seed: the summary's
    assert collected.curves[-1].val_loss == 0.712346 and collected.curves[-1].test_loss is None
    assert collected.ranges[0].min == 0.212346 and len(collected.ranges) == 6
    np.testing.assert_array_equal(collected.params["hidden/kernel"],
                                  np.arange(12, dtype=np.float32).reshape(4, 3))  # seed 0
    this = export.machine()  # what timed every group exported here, each group with rows
    assert collected.machines == {"table1": (this,), "dense_only": (this,)}
    assert this.logical_cpus == os.cpu_count() and this.cpu
    only_dense = export.collect(tmp_path, [study.GROUPS_BY_NAME["dense_only"]])
    assert {r.group for r in only_dense.runs} == {"dense_only"} and only_dense.params is None


def test_export_writes_what_load_results_reads_back(tmp_path):
    workdir = fake_study(tmp_path / "study")
    written = export.export(workdir, tmp_path / "results", study.GROUPS)
    # Every results file, but the transformer's parameters: the fake study has no transformer.
    assert sorted(p.name for p in written) == sorted(
        set(results.FILES) - {results.TRANSFORMER_PARAMS})
    loaded = results.load_results(tmp_path / "results")
    collected = export.collect(workdir, study.GROUPS)
    assert (loaded.runs, loaded.curves, loaded.ranges) == (
        collected.runs, collected.curves, collected.ranges)
    # Each group with rows records its sweep.json (sgd has no finished trial: no rows).
    assert loaded.settings == {name: study.GROUPS_BY_NAME[name].settings(2)
                               for name in ("table1", "dense_only")}


def test_a_missing_metrics_file_says_how_to_rebuild_it(tmp_path):
    """#150: --skip_training with a trial's metrics.jsonl missing gave a FileNotFoundError."""
    workdir = fake_study(tmp_path)
    (workdir / "dense_only" / "sigmoid" / "metrics.jsonl").unlink()
    with pytest.raises(ReportError, match=(
            r"metrics.jsonl is missing, and the curves of trial dense_only/sigmoid come from it: "
            r"delete .*sigmoid/summary.json and rerun the same study command without "
            r"--skip_training")):
        export.collect(workdir, study.GROUPS)
    (workdir / "table1" / "combo_12" / "summary.json").write_text('{"seeds": [')
    with pytest.raises(WorkdirError, match=r"combo_12/summary.json is not valid JSON"):
        export.collect(workdir, study.GROUPS)


def _study(tmp_path, *args, env=None):
    """scripts/study.py with ``args``, run in ``tmp_path`` (not in this checkout)."""
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900, env=env)


@pytest.mark.parametrize("args, message", first_fast([
    (["--groups="], "error: --groups is empty: name at least one of table1, dense_only"),
    (["--groups=dense_only", "--seeds=0"], "error: The seed count must be at least 1, got 0"),
    (["--groups=dense_only", "--overrides=num_epochs=abc"],
     "error: --overrides num_epochs=abc: the value 'abc' is not JSON"),
    (["--groups=dense_only", "--overrides=model.conv_features=[8,4],num_epochs=x"],
     "error: --overrides num_epochs=x: the value 'x' is not JSON"),
    (["--docs_dir=d"], "error: --docs_dir is used only with --publish"),
    (["--skip_training"], "error: --skip_training: there is no study folder"),
], multiple_args=True))
def test_bad_flags_are_one_line_and_create_nothing(tmp_path, args, message):
    """#142, #145, #146, #148: one line each (no traceback), before any folder is made."""
    done = _study(tmp_path, f"--workdir={tmp_path / 'study'}", *args)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in done.stderr and not (tmp_path / "study").exists()


@pytest.mark.slow
def test_skip_training_exports_and_reports_into_the_workdir_only(tmp_path):
    """#141: without --results_dir the export and report go into the workdir, not docs/."""
    workdir = fake_study(tmp_path / "study")
    docs = tmp_path / "docs"
    write_fake_results(docs / "results", {"table1"}, 2)
    files = {p: p.read_bytes() for p in docs.rglob("*") if p.is_file()}
    done = _study(tmp_path, f"--workdir={workdir}", "--skip_training")
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(results.load_results(workdir / "results").runs) == 3
    assert "Group `dense_only` was not run" not in (workdir / "reproduction.md").read_text()
    assert sorted(p.name for p in (workdir / "figures").iterdir())
    assert {p: p.read_bytes() for p in docs.rglob("*") if p.is_file()} == files
    missing = workdir / "dense_only" / "sigmoid" / "metrics.jsonl"
    missing.unlink()
    failed = _study(tmp_path, f"--workdir={workdir}", "--skip_training")
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith(f"error: {missing} is missing")


@pytest.mark.slow
def test_study_trains_exports_reports_and_publishes_on_request(tmp_path, synthetic_mnist_dir):
    """End to end on synthetic MNIST: a smoke study writes into its workdir; --publish merges
    it into a docs folder holding other results; a disagreeing publish writes nothing; the
    remedy for a missing metrics.jsonl (#150) restores it without training again."""
    env = {**os.environ, "MNIST_DIR": os.environ.get("MNIST_DIR") or str(synthetic_mnist_dir)}
    workdir, docs = tmp_path / "study", tmp_path / "docs"
    write_fake_results(docs / "results", {"table1"}, 2)
    command = [f"--workdir={workdir}", "--groups=dense_only", "--seeds=2",
               "--overrides=num_epochs=1,batch_size=50,data.train_size=200,data.val_size=100",
               "--overrides=data.test_size=100,model.dense_features=[8][0]"]
    bad = _study(tmp_path, *command, env=env)  # [8][0] is not JSON
    assert bad.returncode == 2 and "model.dense_features=[8][0]: the value" in bad.stderr
    command[-1] = "--overrides=data.test_size=100"
    done = _study(tmp_path, *command, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    run = results.load_results(workdir / "results")
    assert [(r.trial, r.seed) for r in run.runs] == [
        ("agile_sigmoid", 0), ("agile_sigmoid", 1), ("sigmoid", 0), ("sigmoid", 1)]
    assert (workdir / "reproduction.md").is_file() and not (docs / "reproduction.md").exists()
    published = _study(tmp_path, *command, "--publish", f"--docs_dir={docs}", env=env)
    assert published.returncode == 0, published.stderr[-3000:]
    assert published.stderr.count("already finished; skipping") == 2
    merged = results.load_results(docs / "results")
    assert {r.group for r in merged.runs} == {"table1", "dense_only"}
    assert [r for r in merged.runs if r.group == "dense_only"] == run.runs
    assert "Group `dense_only` was not run" not in (docs / "reproduction.md").read_text()
    # A second sigmoid trial that disagrees with the published one: refused, nothing written.
    before = {p: p.read_bytes() for p in docs.rglob("*") if p.is_file()}
    summary_path = workdir / "dense_only" / "sigmoid" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["seeds"][0]["best_test_loss"] += 0.5
    summary_path.write_text(json.dumps(summary))
    refused = _study(tmp_path, *command, "--publish", f"--docs_dir={docs}", "--skip_training",
                     env=env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "runs.csv already has group=dense_only, trial=sigmoid, seed=0 with other values " \
           "(best_test_loss" in refused.stderr
    assert {p: p.read_bytes() for p in docs.rglob("*") if p.is_file()} == before
    # #150: the remedy the error names rebuilds metrics.jsonl from the final checkpoint.
    rows = (workdir / "dense_only" / "sigmoid" / "metrics.jsonl").read_text()
    (workdir / "dense_only" / "sigmoid" / "metrics.jsonl").unlink()
    summary_path.unlink()
    restored = _study(tmp_path, *command, env=env)
    assert restored.returncode == 0, restored.stderr[-3000:]
    assert (workdir / "dense_only" / "sigmoid" / "metrics.jsonl").read_text() == rows
    assert results.load_results(workdir / "results").runs[2:] == run.runs[2:]


@pytest.mark.slow
def test_publishing_other_settings_than_the_committed_group_is_refused_before_training(
        tmp_path):
    """N107 as the report ran it: more seeds of a group with a stray smoke-test --overrides and
    --publish. Refused in one line naming the group and the fields before anything trains or
    is written (the study folder is not created; the docs folder is unchanged)."""
    import dataclasses

    from study_fakes import fake_results

    docs = tmp_path / "docs"
    committed = fake_results({"dense_only"}, 2, params=False)
    results.write_results(dataclasses.replace(committed, settings={
        "dense_only": study.GROUPS_BY_NAME["dense_only"].settings(2)}), docs / "results")
    before = {p: p.read_bytes() for p in docs.rglob("*") if p.is_file()}
    refused = _study(tmp_path, f"--workdir={tmp_path / 'S6'}", "--groups=dense_only",
                     "--seeds=2:4", "--overrides=num_epochs=4,data.train_size=1000",
                     "--publish", f"--docs_dir={docs}")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: {docs}/results/settings.json: group dense_only was trained with other settings "
        "than the rows published now (config.data.train_size 5000 there, 1000 here; "
        "config.num_epochs 200 there, 4 here); nothing was written. Publish rows trained with "
        "the group's settings there (the study's command without other --overrides), or "
        "publish into another --docs_dir.")
    assert not (tmp_path / "S6").exists()
    assert {p: p.read_bytes() for p in docs.rglob("*") if p.is_file()} == before
