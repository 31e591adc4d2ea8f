"""scripts/sweep.py for the one-activation models (#29): --activations makes one trial per
activation, each a seed batch, for the ResNet and the transformer as for the paper's CNN, with
the in-process workers and with Ray; the two backends give the same tables."""

import csv
import os
import subprocess
import sys

import pytest
from agile_testing import REPO_ROOT

TINY = {
    "resnet": ["--config=configs/resnet.py", "--config.model.widths=(4,)",
               "--config.data.source=idx", "--config.data.train_size=200",
               "--config.data.val_size=100", "--config.data.test_size=100",
               "--config.batch_size=50", "--config.num_epochs=1", "--activations=relu,agile_relu"],
    "transformer": ["--config=configs/transformer.py", "--config.model.num_layers=1",
                    "--config.model.width=16", "--config.model.num_heads=2",
                    "--config.data.context=16", "--config.num_epochs=1",
                    "--config.batch_size=16", "--config.eval_every_steps=4",
                    "--activations=gelu,agile_gelu"],
}


@pytest.fixture
def task_env(synthetic_mnist_dir, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("A small corpus, repeated so that it has windows. " * 20)
    return {**os.environ, "FASHION_MNIST_DIR": str(synthetic_mnist_dir), "TEXT_DIR": str(corpus)}


def _sweep(workdir, model, env, *args):
    return subprocess.run(
        [sys.executable, "scripts/sweep.py", f"--workdir={workdir}", "--seeds=2", *TINY[model],
         *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)


def _rows(workdir):
    with open(workdir / "results.csv") as f:
        return [{k: v for k, v in row.items() if k != "wall_time_s"} for row in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet", "transformer"])
def test_activation_sweep_trains_a_trial_per_activation(tmp_path, task_env, model):
    result = _sweep(tmp_path / "sweep", model, task_env, "--workers=1")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(tmp_path / "sweep")
    activations = TINY[model][-1].split("=")[1].split(",")
    assert sorted((row["trial"], row["seed"]) for row in rows) == sorted(
        (activation, seed) for activation in activations for seed in ("0", "1"))
    column = "conv_activation" if model == "resnet" else "dense_activation"
    assert [row[column] for row in rows] == [row["trial"] for row in rows]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet", "transformer"])
def test_activation_sweep_on_ray_equals_in_process(tmp_path, task_env, model):
    pytest.importorskip("ray")
    in_process = _sweep(tmp_path / "in_process", model, task_env, "--workers=1")
    on_ray = _sweep(tmp_path / "ray", model, task_env, "--backend=ray")
    assert in_process.returncode == 0, in_process.stderr[-3000:]
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    assert _rows(tmp_path / "ray") == _rows(tmp_path / "in_process")


@pytest.mark.slow
def test_sweep_flags_belong_to_their_models(tmp_path, task_env):
    combos = _sweep(tmp_path / "a", "resnet", task_env, "--combos=7")
    assert combos.returncode == 2 and combos.stderr.strip().splitlines()[-1] == (
        "error: --combos are the paper CNN's Table 1 rows; a resnet sweep takes --activations.")
    activations = subprocess.run(
        [sys.executable, "scripts/sweep.py", f"--workdir={tmp_path / 'b'}", "--activations=relu"],
        cwd=REPO_ROOT, env=task_env, capture_output=True, text=True, timeout=300)
    assert activations.returncode == 2 and "--activations applies to models with one " in (
        activations.stderr)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
