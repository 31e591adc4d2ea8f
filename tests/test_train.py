"""The training loop: steps, configs, resume, NaN stop, the CLI, and real-MNIST accuracy."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agile import train
from agile.combos import COMBOS, combo_activations, combo_number
from agile.config import get_config

REPO_ROOT = Path(__file__).resolve().parents[1]
TIME_FIELDS = {"wall_time_s", "steps_per_second"}


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.uniform(0, 1, (n, 28, 28, 1)).astype(np.float32),
        "label": rng.integers(0, 10, n).astype(np.int32),
    }


def test_combo_table():
    assert len(COMBOS) == 12
    assert combo_activations(12) == ("agile_relu", "agile_sigmoid")
    assert combo_number("sigmoid", "agile_relu") == 2
    assert combo_number("tanh", "relu") is None
    for bad in (0, 13, "12", True):
        with pytest.raises(ValueError, match="Unknown combination"):
            combo_activations(bad)


@pytest.mark.parametrize("combo", sorted(COMBOS))
def test_every_combo_config_builds_and_takes_two_steps(combo):
    config = get_config(combo)
    state = train.create_train_state(config, jax.random.key(0))
    losses = []
    for step in range(2):
        state, metrics = train.jit_train_step(state, _batch(seed=step))
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 2 and np.all(np.isfinite(losses))
    has_agile = any("agile" in name for name in COMBOS[combo])
    assert bool(train.agile_parameter_ranges(state.params)) == has_agile


def test_combo_config_files_pick_their_row():
    for combo, (conv, dense) in COMBOS.items():
        module = {}
        exec((REPO_ROOT / f"configs/combo_{combo:02d}.py").read_text(), module)
        config = module["get_config"]()
        assert (config.model.conv_activation, config.model.dense_activation) == (conv, dense)


def test_loss_falls_on_synthetic_data(synthetic_mnist_dir, tiny_config):
    from agile import data as data_lib

    tiny_config.learning_rate = tiny_config.agile_learning_rate = 0.01
    datasets = data_lib.load_datasets(tiny_config.data)
    state = train.create_train_state(tiny_config, jax.random.key(0))
    batch = {"image": datasets.train.images[:100], "label": datasets.train.labels[:100]}
    first = None
    for _ in range(30):
        state, metrics = train.jit_train_step(state, batch)
        first = float(metrics["loss"]) if first is None else first
    assert float(metrics["loss"]) < 0.5 * first


def test_agile_parameters_use_their_own_learning_rate():
    config = get_config(12)
    config.optimizer = "sgd"
    config.learning_rate = 0.1
    config.agile_learning_rate = 0.0
    state = train.create_train_state(config, jax.random.key(0))
    new_state, _ = train.jit_train_step(state, _batch())
    for layer, name in (("hidden_act", "a"), ("conv_act_0", "b")):
        np.testing.assert_array_equal(new_state.params[layer][name], state.params[layer][name])
    assert not np.allclose(new_state.params["hidden"]["kernel"], state.params["hidden"]["kernel"])


def test_sgd_with_momentum_and_adam_both_train():
    for optimizer, momentum in (("sgd", 0.9), ("adam", 0.0)):
        config = get_config(7)
        config.optimizer, config.momentum, config.learning_rate = optimizer, momentum, 0.05
        state = train.create_train_state(config, jax.random.key(0))
        state, _ = train.jit_train_step(state, _batch())
        assert int(state.step) == 1


def test_eval_step_masks_padding():
    config = get_config(7)
    state = train.create_train_state(config, jax.random.key(0))
    batch = _batch(6)
    full = train.eval_step(state.params, state.apply_fn, {**batch, "mask": np.ones(6)})
    padded = {k: np.concatenate([v, v[:2]]) for k, v in batch.items()}
    padded["mask"] = np.array([1, 1, 1, 1, 1, 1, 0, 0], np.float32)
    masked = train.eval_step(state.params, state.apply_fn, padded)
    for key in full:
        np.testing.assert_allclose(masked[key], full[key], rtol=1e-6)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("optimizer", "rmsprop", "Unknown optimizer 'rmsprop'"),
        ("model.conv_activation", "swish", "Unknown activation 'swish'"),
        ("model.dense_activation", "agile_swish", "Unknown activation 'agile_swish'"),
        ("model.granularity", "pixel", "Unknown granularity 'pixel'"),
        ("model.implementation", "cuda", "Unknown implementation 'cuda'"),
        ("parallel", "tpu", "Unknown config.parallel 'tpu'"),
        ("num_seeds", 0, "num_seeds must be a positive integer"),
        ("batch_size", 0, "batch_size must be a positive integer"),
        ("learning_rate", -1.0, "learning_rate must be positive"),
        ("patience", -1, "patience must be an integer >= 0"),
    ],
)
def test_bad_config_is_a_clear_error_before_any_work(tmp_path, field, value, message):
    config = get_config(12)
    section, _, name = field.rpartition(".")
    (config[section] if section else config)[name] = value
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _strip_times(summary):
    return {k: v for k, v in summary.items() if k not in TIME_FIELDS}


def test_train_and_evaluate_writes_outputs(tmp_path, tiny_config):
    summary = train.train_and_evaluate(tiny_config, tmp_path)
    for name in ("config.json", "metrics.jsonl", "summary.json"):
        assert (tmp_path / name).exists(), name
    assert list(tmp_path.glob("events.out.tfevents.*"))
    assert (tmp_path / "checkpoints").is_dir()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [4, 8]  # 200 / 50 = 4 steps per epoch
    for key in ("train_loss", "val_loss", "test_loss", "test_accuracy", "agile"):
        assert key in rows[0]
    assert set(rows[0]["agile"]) == {
        f"{layer}/{p}" for layer in ("conv_act_0", "conv_act_1", "conv_act_2", "hidden_act")
        for p in "ab"
    }
    for key in ("combo", "conv_activation", "dense_activation", "seed", "steps", "best_step",
                "best_test_loss", "final_test_loss", "final_test_accuracy", "agile_ranges",
                "wall_time_s", "steps_per_second"):
        assert key in summary, key
    assert summary["combo"] == 12 and summary["steps"] == 8
    assert summary["final_test_loss"] == rows[-1]["test_loss"]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, tiny_config, monkeypatch):
    tiny_config.num_epochs = 3
    reference = train.train_and_evaluate(tiny_config, tmp_path / "reference")

    real_step = train._compiled_step
    calls = {"n": 0}

    def step_then_interrupt(*args):
        if calls["n"] == 7:  # after step 7; the last checkpoint is at step 6
            raise KeyboardInterrupt
        calls["n"] += 1
        return real_step(*args)

    monkeypatch.setattr(train, "_compiled_step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(tiny_config, tmp_path / "resumed")
    monkeypatch.setattr(train, "_compiled_step", real_step)
    resumed = train.train_and_evaluate(tiny_config, tmp_path / "resumed")

    assert _strip_times(resumed) == _strip_times(reference)
    assert (tmp_path / "resumed/metrics.jsonl").read_text() == (
        tmp_path / "reference/metrics.jsonl"
    ).read_text()


def test_rerun_of_a_finished_run_gives_the_same_summary(tmp_path, tiny_config):
    first = train.train_and_evaluate(tiny_config, tmp_path)
    again = train.train_and_evaluate(tiny_config, tmp_path)
    assert _strip_times(again) == _strip_times(first)


def test_changed_config_is_refused_unless_allowed(tmp_path, tiny_config):
    train.train_and_evaluate(tiny_config, tmp_path)
    tiny_config.learning_rate = 0.5
    with pytest.raises(ValueError, match="different config.*learning_rate.*allow_config_change"):
        train.train_and_evaluate(tiny_config, tmp_path)
    tiny_config.allow_config_change = True
    train.train_and_evaluate(tiny_config, tmp_path)


def test_early_stopping_on_validation_loss(tmp_path, tiny_config):
    tiny_config.num_epochs = 30
    tiny_config.learning_rate = 0.3  # so large that the validation loss soon stops improving
    tiny_config.agile_learning_rate = 0.3
    tiny_config.patience = 2
    summary = train.train_and_evaluate(tiny_config, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    best = min(rows, key=lambda row: row["val_loss"])
    assert summary["best_step"] == best["step"]
    assert summary["best_test_loss"] == best["test_loss"]
    assert summary["early_stopped"]
    assert len([row for row in rows if row["step"] > best["step"]]) == 2
    assert summary["steps"] == rows[-1]["step"] < 30 * 4


def test_nan_loss_stops_with_the_step_and_keeps_last_good_checkpoint(tmp_path, tiny_config):
    tiny_config.optimizer = "sgd"
    tiny_config.learning_rate = 1e30
    tiny_config.agile_learning_rate = 1e30
    with pytest.raises(train.NonFiniteLossError, match=r"NaN or inf at step \d+") as info:
        train.train_and_evaluate(tiny_config, tmp_path)
    bad_step = int(info.value.args[0].split("at step ")[1].split(";")[0])
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert all(step < bad_step for step in saved)
    assert not (tmp_path / "summary.json").exists()


def test_cli_end_to_end(tmp_path, synthetic_mnist_dir):
    workdir = tmp_path / "cli_run"
    env = {**os.environ, "MNIST_DIR": str(synthetic_mnist_dir)}
    result = subprocess.run(
        [sys.executable, "scripts/train.py", "--config=configs/combo_12.py",
         f"--workdir={workdir}", "--config.num_epochs=1", "--config.batch_size=50",
         "--config.data.train_size=200", "--config.data.val_size=0",
         "--config.data.test_size=100"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Results are in {workdir.resolve()}" in result.stdout
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["combo"] == 12 and summary["steps"] == 4


def test_cli_rejects_unknown_optimizer(tmp_path):
    result = subprocess.run(
        [sys.executable, "scripts/train.py", "--config=configs/combo_07.py",
         f"--workdir={tmp_path}", "--config.optimizer=lbfgs"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0
    assert "Unknown optimizer 'lbfgs'" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MNIST_DIR"), reason="needs real MNIST in MNIST_DIR")
@pytest.mark.parametrize("combo", [7, 12])
def test_short_real_mnist_run_reaches_90_percent(tmp_path, combo):
    config = get_config(combo)
    config.num_epochs = 10
    config.data.source = "idx"
    summary = train.train_and_evaluate(config, tmp_path)
    assert summary["final_test_accuracy"] >= 0.90, summary
    assert jnp.isfinite(summary["final_test_loss"])
