"""The training loop: steps, configs, resume, NaN stop, the CLI, and real-MNIST accuracy."""

import contextlib
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from agile_testing import REPO_ROOT, first_fast  # noqa: E402
from paper_testing import Interrupt, interrupt_after, strip_times

from agile.paper import steps as steps_lib
from agile.paper import train
from agile.paper.combos import COMBOS, combo_activations, combo_number
from agile.paper.config import get_config
from agile.paper.data import MissingDataError
from agile.paper.evaluation import agile_parameter_ranges
from agile.paper.tasks import build, create_model
from agile.paper.workdir import WorkdirError, read_rows


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "inputs": rng.uniform(0, 1, (n, 28, 28, 1)).astype(np.float32),
        "targets": rng.integers(0, 10, n).astype(np.int32),
    }


def test_combo_table():
    assert len(COMBOS) == 12
    assert combo_activations(12) == ("agile_relu", "agile_sigmoid")
    assert combo_number("sigmoid", "agile_relu") == 2
    assert combo_number("tanh", "relu") is None
    for bad in (0, 13, "12", True):
        with pytest.raises(ValueError, match="Unknown combination"):
            combo_activations(bad)


@pytest.mark.parametrize("combo", first_fast(
    [12, *(c for c in sorted(COMBOS) if c != 12)]))
def test_every_combo_config_builds_and_takes_two_steps(combo):
    config = get_config(combo)
    state = steps_lib.create_train_state(config, jax.random.key(0))
    losses = []
    for step in range(2):
        state, metrics = steps_lib.jit_train_step(state, _batch(seed=step))
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 2 and np.all(np.isfinite(losses))
    has_agile = any("agile" in name for name in COMBOS[combo])
    labels = steps_lib.model_labels(build(config))
    assert bool(agile_parameter_ranges(state.params, labels)) == has_agile


@pytest.mark.parametrize("combo, overrides", first_fast([
    (12, {}), (1, {}), (6, {}), (12, {"model.granularity": "channel"}),
    (12, {"model.granularity": "scalar"}), (12, {"model.conv_features": ()}),
    (12, {"model.conv_activation": "combined:relu,sigmoid"}), (7, {"model.pooling": "avg"}),
], multiple_args=True))
def test_create_train_state_initialises_as_model_init_does_bit_for_bit(combo, overrides):
    """The compiled init (at XLA optimisation level 1, for start-up) gives eager init's values."""
    config = get_config(combo)
    for name, value in overrides.items():
        section, _, field = name.rpartition(".")
        config[section][field] = value
    state = steps_lib.create_train_state(config, jax.random.key(5))
    eager = create_model(config).init(jax.random.key(5), jnp.zeros((1, 28, 28, 1)))
    jax.tree.map(np.testing.assert_array_equal, state.params, eager["params"])


def test_combo_config_files_pick_their_row():
    for combo, (conv, dense) in COMBOS.items():
        module = {}
        exec((REPO_ROOT / f"configs/combo_{combo:02d}.py").read_text(), module)
        config = module["get_config"]()
        assert (config.model.conv_activation, config.model.dense_activation) == (conv, dense)


def test_loss_falls_on_synthetic_data(synthetic_mnist_dir, tiny_config):
    from agile.paper.data import images as data_lib

    tiny_config.learning_rate = tiny_config.agile_learning_rate = 0.01
    datasets = data_lib.load_datasets(tiny_config.data)
    state = steps_lib.create_train_state(tiny_config, jax.random.key(0))
    batch = {"inputs": datasets.train.inputs[:100], "targets": datasets.train.targets[:100]}
    first = None
    for _ in range(30):
        state, metrics = steps_lib.jit_train_step(state, batch)
        first = float(metrics["loss"]) if first is None else first
    assert float(metrics["loss"]) < 0.5 * first


def test_agile_parameters_use_their_own_learning_rate():
    config = get_config(12)
    config.optimizer = "sgd"
    config.learning_rate = 0.1
    config.agile_learning_rate = 0.0
    state = steps_lib.create_train_state(config, jax.random.key(0))
    new_state, _ = steps_lib.jit_train_step(state, _batch())
    for layer, name in (("hidden_act", "a"), ("conv_act_0", "b")):
        np.testing.assert_array_equal(new_state.params[layer][name], state.params[layer][name])
    assert not np.allclose(new_state.params["hidden"]["kernel"], state.params["hidden"]["kernel"])


def _kernel_after(config, steps: int) -> np.ndarray:
    state = steps_lib.create_train_state(config, jax.random.key(0))
    for step in range(steps):
        state, _ = steps_lib.jit_train_step(state, _batch(seed=step))
    return np.asarray(state.params["output"]["kernel"])


@pytest.mark.slow
def test_sgd_momentum_changes_the_second_step_and_adam_trains():
    config = get_config(7)
    config.optimizer, config.learning_rate = "sgd", 0.05
    initial = _kernel_after(config, 0)
    plain_1, plain_2 = _kernel_after(config, 1), _kernel_after(config, 2)
    config.momentum = 0.9
    momentum_1, momentum_2 = _kernel_after(config, 1), _kernel_after(config, 2)
    assert not np.allclose(plain_1, initial)  # the step moves the parameters
    np.testing.assert_allclose(momentum_1, plain_1, rtol=1e-6)  # no velocity yet at step 1
    first_update = plain_1 - initial
    # Momentum's second update adds 0.9 x the first one to plain SGD's second update.
    np.testing.assert_allclose(momentum_2 - momentum_1, plain_2 - plain_1 + 0.9 * first_update,
                               rtol=1e-4, atol=1e-7)
    config.optimizer, config.momentum, config.learning_rate = "adam", 0.0, 1e-3
    assert not np.allclose(_kernel_after(config, 1), initial)


@pytest.mark.parametrize("combo, loss, norm", first_fast(
    [(12, 2.31239652633667, 120.01467895507812), (7, 2.2513914108276367, 8.09936237335205)],
    multiple_args=True))
def test_one_step_on_fixed_data_gives_the_recorded_loss_and_parameter_norm(combo, loss, norm):
    """Pinned: init from key 0, Adam 1e-3, one step on a fixed batch (catches silent changes
    to the model, its initialisation, the loss or the optimizer)."""
    rng = np.random.default_rng(0)
    batch = {"inputs": rng.uniform(0, 1, (8, 28, 28, 1)).astype(np.float32),
             "targets": (np.arange(8) % 10).astype(np.int32)}
    state = steps_lib.create_train_state(get_config(combo), jax.random.key(0))
    state, metrics = steps_lib.jit_train_step(state, batch)
    assert float(metrics["loss"]) == pytest.approx(loss, rel=1e-5)
    assert float(optax.tree.norm(state.params)) == pytest.approx(norm, rel=1e-5)








def test_train_and_evaluate_writes_outputs(tmp_path, tiny_config):
    summary = train.train_and_evaluate(tiny_config, tmp_path)
    for name in ("config.json", "metrics.jsonl", "summary.json"):
        assert (tmp_path / name).exists(), name
    assert list(tmp_path.glob("events.out.tfevents.*"))
    assert (tmp_path / "checkpoints").is_dir()
    rows = read_rows(tmp_path / "metrics.jsonl")
    assert [row["step"] for row in rows] == [4, 8]  # 200 / 50 = 4 steps per epoch
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "agile"):
        assert all(key in row for row in rows), key
    assert "test_loss" not in rows[0] and "test_loss" in rows[-1]  # test_every=10: final only
    assert set(rows[0]["agile"]) == {
        f"{layer}/{p}" for layer in ("conv_act_0", "conv_act_1", "conv_act_2", "hidden_act")
        for p in "ab"
    }
    for key in ("combo", "conv_activation", "dense_activation", "seed", "steps", "best_step",
                "best_test_loss", "final_test_loss", "final_test_accuracy", "agile_ranges",
                "wall_time_s", "steps_per_second", "time_breakdown_s"):
        assert key in summary, key
    assert summary["combo"] == 12 and summary["steps"] == 8
    assert summary["final_test_loss"] == rows[-1]["test_loss"]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary


@pytest.mark.slow
def test_best_test_loss_is_the_best_models_without_testing_every_evaluation(tmp_path, tiny_config):
    """test_every=0 tests only the final and the best model; every=1 tests every row."""
    tiny_config.num_epochs = 4
    tiny_config.learning_rate = tiny_config.agile_learning_rate = 0.3  # val loss soon worsens
    tiny_config.patience = 0
    tiny_config.test_every = 1
    every = train.train_and_evaluate(tiny_config, tmp_path / "every")
    every_rows = read_rows(tmp_path / "every/metrics.jsonl")
    tiny_config.test_every = 0
    lazy = train.train_and_evaluate(tiny_config, tmp_path / "lazy")
    lazy_rows = read_rows(tmp_path / "lazy/metrics.jsonl")
    assert all("test_loss" in row for row in every_rows)
    assert ["test_loss" in row for row in lazy_rows] == [False, False, False, True]
    best = min(every_rows, key=lambda row: row["val_loss"])
    assert lazy["best_step"] == every["best_step"] == best["step"] < 16
    np.testing.assert_allclose(lazy["best_test_loss"], best["test_loss"], rtol=1e-6)
    np.testing.assert_allclose(lazy["best_test_accuracy"], best["test_accuracy"], rtol=1e-6)
    assert every["min_test_loss"] == min(row["test_loss"] for row in every_rows)


@contextlib.contextmanager
def _compiled_programs():
    """Names (``jit(f)``) of the programs XLA compiles inside the block, from JAX's monitoring."""
    names = []

    def listener(event: str, duration: float, **kwargs) -> None:
        del duration
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.slow
@pytest.mark.parametrize("num_seeds", [1, 3])
def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, tiny_config, num_seeds):
    """Interrupted after step 7 (checkpoint at 6, row at 4): the rerun ends bit-identical,
    and reuses the step and evaluation the first run compiled (restored arrays placed as
    fresh ones are; committed ones compiled the step three more times)."""
    tiny_config.num_epochs = 3
    tiny_config.num_seeds = num_seeds
    tiny_config.model.dense_features = 20 + num_seeds  # No other test compiles this model.
    step, evaluate = (("jit(step_on_device_data)", "jit(_chunk_sums)") if num_seeds == 1
                      else ("jit(_seed_batch_step)", "jit(_seed_chunk_sums)"))
    with _compiled_programs() as first:
        reference = train.train_and_evaluate(tiny_config, tmp_path / "reference")
    with pytest.raises(Interrupt):
        train.train_and_evaluate(tiny_config, tmp_path / "resumed", after_step=interrupt_after(7))
    assert len(read_rows(tmp_path / "resumed/metrics.jsonl")) == num_seeds  # the rows at step 4
    with _compiled_programs() as again:
        resumed = train.train_and_evaluate(tiny_config, tmp_path / "resumed")
    assert first.count(step) == first.count(evaluate) == 1, first
    assert again.count(step) == again.count(evaluate) == again.count("jit(_chunk_sums)") == 0, again
    assert strip_times(resumed) == strip_times(reference)
    assert (tmp_path / "resumed/metrics.jsonl").read_text() == (
        tmp_path / "reference/metrics.jsonl"
    ).read_text()


def test_rerun_of_a_finished_run_gives_the_same_summary_timing_included(tmp_path, tiny_config):
    first = train.train_and_evaluate(tiny_config, tmp_path)
    rows = (tmp_path / "metrics.jsonl").read_text()
    again = train.train_and_evaluate(tiny_config, tmp_path)
    assert again == first and first["wall_time_s"] > 0
    assert json.loads((tmp_path / "summary.json").read_text()) == first
    assert (tmp_path / "metrics.jsonl").read_text() == rows


def test_timing_counts_each_second_once_across_checkpoints_and_sessions(tmp_path, tiny_config):
    """Wall time and phases add up to no more than the sessions took, however many checkpoints."""
    tiny_config.num_epochs = 3
    tiny_config.checkpoint_every_steps = 1  # 12 checkpoints per run
    start = time.perf_counter()
    with pytest.raises(Interrupt):
        train.train_and_evaluate(tiny_config, tmp_path, after_step=interrupt_after(7))
    summary = train.train_and_evaluate(tiny_config, tmp_path)
    elapsed = time.perf_counter() - start
    assert 0 < summary["wall_time_s"] <= elapsed
    assert 0 < sum(summary["time_breakdown_s"].values()) <= summary["wall_time_s"]
    loop = sum(summary["time_breakdown_s"][k] for k in ("steps", "evaluation", "checkpoint"))
    assert summary["steps_per_second"] >= 12 / elapsed  # 12 steps, timed once each
    assert loop <= elapsed


def test_missing_data_fails_before_the_workdir_is_created(tmp_path, tiny_config):
    """A wrong MNIST folder is reported before anything is written (no empty run folder)."""
    tiny_config.data.dir = str(tmp_path / "nowhere")
    with pytest.raises(MissingDataError, match=r"nowhere does not exist"):
        train.train_and_evaluate(tiny_config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_changed_config_is_refused_unless_allowed(tmp_path, tiny_config):
    train.train_and_evaluate(tiny_config, tmp_path)
    tiny_config.learning_rate = 0.5
    with pytest.raises(WorkdirError, match="different config.*learning_rate.*allow_config_change"):
        train.train_and_evaluate(tiny_config, tmp_path)
    tiny_config.allow_config_change = True
    train.train_and_evaluate(tiny_config, tmp_path)


def test_early_stopping_on_validation_loss(tmp_path, tiny_config):
    tiny_config.num_epochs = 30
    tiny_config.learning_rate = 0.3  # so large that the validation loss soon stops improving
    tiny_config.agile_learning_rate = 0.3
    tiny_config.patience = 2
    tiny_config.checkpoint_every_steps = 1_000  # only the final checkpoint: the rows are checked
    summary = train.train_and_evaluate(tiny_config, tmp_path)
    rows = read_rows(tmp_path / "metrics.jsonl")
    best = min(rows, key=lambda row: row["val_loss"])
    assert summary["best_step"] == best["step"]
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_read_params_reads_each_seeds_best_and_last_parameters(tmp_path, tiny_config):
    """progress.read_params: the checkpoint layout read back read-only, per seed of a batch."""
    from agile.paper import progress

    tiny_config.num_seeds = 2
    train.train_and_evaluate(tiny_config, tmp_path)
    step, last, seeds = progress.read_params(tmp_path, "last", 1)
    assert (step, seeds) == (8, 2)
    step, best, _ = progress.read_params(tmp_path, "best", -1)  # -1: the last seed
    assert jax.tree.structure(best) == jax.tree.structure(last)
    assert best["hidden_act"]["a"].shape == last["hidden_act"]["a"].shape == (30,)
    with pytest.raises(WorkdirError, match=r"trained 2 seeds: seed index 2 is out of range"):
        progress.read_params(tmp_path, "best", 2)
    with pytest.raises(WorkdirError, match=r"Unknown params 'first'. Valid: best, last."):
        progress.read_params(tmp_path, "first")
    with pytest.raises(WorkdirError, match=r"No checkpoint in"):
        progress.read_params(tmp_path / "nowhere")
