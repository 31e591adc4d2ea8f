"""scripts/study.py and its exporter (agile.paper.report.export): trial folders to a results
folder, and one-line errors for bad flags.

Every command here runs with the temporary folder as its working directory and its output
folders in it, so a failing test cannot touch this checkout's docs/.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT

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
    assert collected.machine.logical_cpus == os.cpu_count()
    only_dense = export.collect(tmp_path, [study.GROUPS_BY_NAME["dense_only"]])
    assert {r.group for r in only_dense.runs} == {"dense_only"} and only_dense.params is None


def test_export_writes_what_load_results_reads_back(tmp_path):
    workdir = fake_study(tmp_path / "study")
    written = export.export(workdir, tmp_path / "results", study.GROUPS)
    assert sorted(p.name for p in written) == sorted(results.FILES)
    loaded = results.load_results(tmp_path / "results")
    collected = export.collect(workdir, study.GROUPS)
    assert (loaded.runs, loaded.curves, loaded.ranges) == (
        collected.runs, collected.curves, collected.ranges)


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


@pytest.mark.parametrize("args, message", [
    (["--groups="], "error: --groups is empty: name at least one of table1, dense_only"),
    (["--groups=dense_only", "--seeds=0"], "error: The seed count must be at least 1, got 0"),
    (["--groups=dense_only", "--overrides=num_epochs=abc"],
     "error: --overrides num_epochs=abc: the value 'abc' is not JSON"),
    (["--groups=dense_only", "--overrides=model.conv_features=[8,4],num_epochs=x"],
     "error: --overrides num_epochs=x: the value 'x' is not JSON"),
])
def test_bad_flags_are_one_line_and_create_nothing(tmp_path, args, message):
    """#142, #145, #146, #148: one line each (no traceback), before any folder is made."""
    done = _study(tmp_path, f"--workdir={tmp_path / 'study'}",
                  f"--results_dir={tmp_path / 'docs' / 'results'}", *args)
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in done.stderr and not (tmp_path / "study").exists()
