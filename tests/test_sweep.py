"""The sweep tables (agile/sweep.py) and scripts/sweep.py end to end on synthetic MNIST."""

import csv
import io
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agile import sweep

REPO_ROOT = Path(__file__).resolve().parents[1]


def _seed_result(seed: int, loss: float) -> dict:
    return {
        "combo": 12, "conv_activation": "agile_relu", "dense_activation": "agile_sigmoid",
        "seed": seed, "steps": 100, "best_step": 50 + seed, "best_test_loss": loss,
        "final_test_loss": loss + 0.01, "best_test_accuracy": 0.9, "final_test_accuracy": 0.91,
        "agile_ranges": {"conv_act_0/a": {"min": 0.5, "max": 1.5, "mean": 1.0},
                         "hidden_act/a": {"min": 0.2, "max": 1.1, "mean": 0.9},
                         "hidden_act/b": {"min": -0.3, "max": 0.4, "mean": 0.0}},
        "wall_time_s": 3.0,
    }


def test_mean_std_ci_uses_the_t_distribution():
    mean, std, half_width = sweep.mean_std_ci([1.0, 2.0, 3.0])
    assert (mean, std) == (2.0, 1.0)
    assert half_width == pytest.approx(4.302652729911275 / math.sqrt(3))  # t(0.975, df=2)
    assert sweep.mean_std_ci([5.0])[:2] == (5.0, 0.0) and math.isnan(sweep.mean_std_ci([5.0])[2])


def test_csv_rows_one_per_seed_with_agile_ranges():
    summary = {"seeds": [_seed_result(0, 0.2), _seed_result(1, 0.3)]}
    rows = sweep.csv_rows(summary)
    assert [row["seed"] for row in rows] == [0, 1]
    assert (rows[0]["a_min"], rows[0]["a_max"], rows[0]["b_min"], rows[0]["b_max"]) == (
        0.2, 1.5, -0.3, 0.4)
    single = sweep.csv_rows(_seed_result(7, 0.2) | {"agile_ranges": {}})
    assert len(single) == 1 and single[0]["a_min"] is None
    parsed = list(csv.DictReader(io.StringIO(sweep.write_csv(rows))))
    assert tuple(parsed[0]) == sweep.CSV_FIELDS and parsed[1]["best_test_loss"] == "0.3"


def test_results_markdown_has_mean_std_ci_and_paper_loss():
    rows = sweep.csv_rows({"seeds": [_seed_result(s, 0.1 + 0.1 * s) for s in range(3)]})
    table = sweep.results_markdown(rows)
    mean, std, half = sweep.mean_std_ci([0.1, 0.2, 0.3])
    assert f"{mean:.4f} ± {std:.4f} [{mean - half:.4f}, {mean + half:.4f}]" in table
    assert "0.15027" in table  # Table 1's loss for combo 12
    assert "| 12 | agile_relu / agile_sigmoid | 3 |" in table


@pytest.mark.slow
def test_sweep_script_end_to_end_and_skips_finished_combos(tmp_path, synthetic_mnist_dir):
    data_dir = os.environ.get("MNIST_DIR") or str(synthetic_mnist_dir)
    command = [
        sys.executable, "scripts/sweep.py", f"--workdir={tmp_path}", "--seeds=2", "--combos=7,12",
        "--config.num_epochs=1", "--config.batch_size=50", "--config.data.train_size=200",
        "--config.data.val_size=0", "--config.data.test_size=100",
    ]
    env = {**os.environ, "MNIST_DIR": data_dir}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [(row["combo"], row["seed"]) for row in rows] == [
        ("7", "0"), ("7", "1"), ("12", "0"), ("12", "1")]
    assert all(np.isfinite(float(row["final_test_loss"])) for row in rows)
    table = (tmp_path / "results.md").read_text()
    assert "| 7 | relu / relu | 2 |" in table and "0.18127" in table
    assert "| 12 | agile_relu / agile_sigmoid | 2 |" in table
    rerun = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stderr.count("already finished; skipping") == 2
    assert (tmp_path / "results.md").read_text() == table
