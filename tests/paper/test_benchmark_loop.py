"""benchmarks/benchmark_loop.py: a tiny end-to-end run gives a consistent time breakdown."""

import json
import os
import subprocess
import sys

import pytest
from agile_testing import REPO_ROOT  # noqa: E402


@pytest.mark.slow
def test_loop_benchmark_smoke(tmp_path, synthetic_mnist_dir):
    train_flags = ("--train_flags=--config.num_epochs=2,--config.batch_size=50,"
                   "--config.data.train_size=200,--config.data.val_size=100,"
                   "--config.data.test_size=100")
    result = subprocess.run(
        [sys.executable, "benchmarks/benchmark_loop.py", f"--output_dir={tmp_path}",
         "--step_rounds=1", "--steps_per_round=2", train_flags],
        cwd=REPO_ROOT, env={**os.environ, "MNIST_DIR": str(synthetic_mnist_dir)},
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loop = json.loads((tmp_path / "loop.json").read_text())
    assert loop["steps"] == 8  # 2 epochs of 200 / 50
    assert sum(loop["seconds"].values()) == pytest.approx(loop["process_wall_s"], rel=1e-6)
    assert all(value >= 0 for value in loop["seconds"].values())
    assert loop["loop_efficiency"] == pytest.approx(
        8 * loop["benchmarked_ms_per_step"] / 1000 / loop["loop_wall_s"])
    assert "loop efficiency" in (tmp_path / "loop.md").read_text()


@pytest.mark.slow
def test_loop_benchmark_needs_real_data(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MNIST_DIR"}
    result = subprocess.run([sys.executable, "benchmarks/benchmark_loop.py",
                             f"--output_dir={tmp_path}"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "error: Set MNIST_DIR to the MNIST IDX files" in result.stderr
