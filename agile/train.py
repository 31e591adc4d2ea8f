"""Training and evaluation of the paper's CNN: pure jit-compiled steps and a resumable loop.

``train_step(state, batch)`` and ``eval_step(params, batch)`` are pure functions
of arrays. ``train_and_evaluate(config, workdir)`` runs a whole experiment: the
data subset lives on the device, every step is one compiled call that gathers
its batch from it, and the loop evaluates, logs, checkpoints (orbax) and resumes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util
from flax.training import train_state

from agile import data as data_lib
from agile import parallel as parallel_lib
from agile.activations import validate_activation_name
from agile.combos import combo_number
from agile.layers import parameter_shape
from agile.models import CNN

OPTIMIZERS = ("sgd", "adam")
AGILE_PARAM_NAMES = ("a", "b")
Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


class TrainState(train_state.TrainState):
    """Flax TrainState: step, params, optimizer state, apply_fn and tx."""


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or inf."""


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError for a bad config, before any data is read or code compiled."""
    validate_activation_name(config.model.conv_activation)
    validate_activation_name(config.model.dense_activation)
    parameter_shape((1, 1), config.model.granularity)
    create_model(config).validate()
    if config.optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {config.optimizer!r}. Valid: {', '.join(OPTIMIZERS)}.")
    for name in ("batch_size", "num_epochs", "log_every_steps", "checkpoint_every_steps"):
        if not isinstance(config[name], int) or config[name] < 1:
            raise ValueError(f"config.{name} must be a positive integer, got {config[name]!r}.")
    for name in ("eval_every_steps", "patience"):
        if not isinstance(config[name], int) or config[name] < 0:
            raise ValueError(f"config.{name} must be an integer >= 0, got {config[name]!r}.")
    for name in ("learning_rate", "agile_learning_rate"):
        if not config[name] > 0:
            raise ValueError(f"config.{name} must be positive, got {config[name]!r}.")
    parallel_lib.validate_scaling_config(config)


def create_model(config: ml_collections.ConfigDict) -> CNN:
    """The paper's CNN as described by ``config.model``."""
    m = config.model
    return CNN(
        conv_features=tuple(m.conv_features),
        kernel_size=tuple(m.kernel_size),
        pool_size=tuple(m.pool_size),
        pooling=m.pooling,
        dense_features=m.dense_features,
        num_classes=m.num_classes,
        conv_activation=m.conv_activation,
        dense_activation=m.dense_activation,
        granularity=m.granularity,
        implementation=m.implementation,
    )


def is_agile_param(path: tuple[str, ...]) -> bool:
    """Whether a parameter path belongs to an ``Agile`` layer (its ``a`` or ``b``)."""
    return path[-1] in AGILE_PARAM_NAMES


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """SGD (optional momentum) or Adam; agile a and b get ``agile_learning_rate``."""

    def make(learning_rate: float) -> optax.GradientTransformation:
        if config.optimizer == "sgd":
            return optax.sgd(learning_rate, momentum=config.momentum or None)
        return optax.adam(learning_rate)

    def labels(params):
        flat = traverse_util.flatten_dict(params)
        return traverse_util.unflatten_dict(
            {path: "agile" if is_agile_param(path) else "weights" for path in flat}
        )

    return optax.multi_transform(
        {"weights": make(config.learning_rate), "agile": make(config.agile_learning_rate)}, labels
    )


def create_train_state(
    config: ml_collections.ConfigDict, rng: jax.Array, image_shape=data_lib.IMAGE_SHAPE
) -> TrainState:
    """Initialises the model from ``rng`` and wraps it with its optimizer."""
    model = create_model(config)
    params = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32))["params"]
    return TrainState.create(apply_fn=model.apply, params=params, tx=create_optimizer(config))


def _loss_and_metrics(
    params, apply_fn: Callable, batch: Batch
) -> tuple[jax.Array, Metrics]:
    logits = apply_fn({"params": params}, batch["image"])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    correct = jnp.argmax(logits, -1) == batch["label"]
    loss = losses.mean()
    return loss, {"loss": loss, "accuracy": correct.mean()}


def train_step(
    state: TrainState, batch: Batch, axis_name: str | None = None
) -> tuple[TrainState, Metrics]:
    """One optimizer step on ``batch``; returns the new state and the batch's metrics.

    With ``axis_name`` (inside pmap/shard_map) gradients and metrics are
    averaged over that axis, so every replica takes the same step.
    """
    params = state.params
    if axis_name is not None:
        # Autodiff would sum the gradients of replicated parameters over the axis; marking
        # them device-varying gives each device its own batch's gradient, averaged below.
        params = jax.lax.pcast(params, axis_name, to="varying")
    grad_fn = jax.grad(_loss_and_metrics, has_aux=True)
    grads, metrics = grad_fn(params, state.apply_fn, batch)
    if axis_name is not None:
        grads, metrics = jax.lax.pmean((grads, metrics), axis_name)
    return state.apply_gradients(grads=grads), metrics


def eval_step(params, apply_fn: Callable, batch: Batch) -> Metrics:
    """Sums of loss and correct predictions over the examples where ``batch["mask"]``."""
    logits = apply_fn({"params": params}, batch["image"])
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    correct = jnp.argmax(logits, -1) == batch["label"]
    mask = batch["mask"]
    return {
        "loss_sum": jnp.sum(losses * mask),
        "correct": jnp.sum(correct * mask),
        "count": jnp.sum(mask),
    }


def new_train_accumulator() -> Metrics:
    """Running training sums between evaluations, kept on the device.

    ``first_nonfinite_step`` is -1 until a step's loss is NaN or inf, then that
    step, so the loop can stop with its number without a host sync every step.
    """
    return {
        "loss_sum": jnp.zeros((), jnp.float32),
        "correct_sum": jnp.zeros((), jnp.float32),
        "count": jnp.zeros((), jnp.int32),
        "first_nonfinite_step": jnp.full((), -1, jnp.int32),
    }


def _accumulate(accum: Metrics, metrics: Metrics, step: jax.Array) -> Metrics:
    bad = ~jnp.isfinite(metrics["loss"]) & (accum["first_nonfinite_step"] < 0)
    return {
        "loss_sum": accum["loss_sum"] + metrics["loss"],
        "correct_sum": accum["correct_sum"] + metrics["accuracy"],
        "count": accum["count"] + 1,
        "first_nonfinite_step": jnp.where(bad, step, accum["first_nonfinite_step"]),
    }


jit_train_step = jax.jit(train_step, static_argnames="axis_name")
"""``train_step`` under ``jax.jit``, for users who feed their own batches."""


def _step_on_device_data(state, accum, images, labels, indices, axis_name=None):
    """Gathers the batch from device-resident data and takes one step: one compiled call.

    The per-device step of every layout in ``agile.parallel``; with
    ``axis_name`` gradients and metrics are averaged over that device axis.
    """
    batch = data_lib.gather_batch(images, labels, indices)
    step = state.step + 1
    state, metrics = train_step(state, batch, axis_name)
    return state, _accumulate(accum, metrics, step)


_compiled_step = jax.jit(_step_on_device_data, donate_argnums=(0, 1))


def _split_sums(
    eval_fn: Callable, params, apply_fn: Callable, split: data_lib.Split, batch_size: int
) -> dict[str, np.ndarray]:
    """``eval_fn``'s sums over a whole split, in fixed-size padded chunks, added in float64."""
    images, labels = split.images, split.labels
    n = len(labels)
    batch_size = min(batch_size, n)
    total = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        pad = batch_size - (stop - start)
        batch = {
            "image": np.pad(images[start:stop], ((0, pad), (0, 0), (0, 0), (0, 0))),
            "label": np.pad(labels[start:stop], (0, pad)),
            "mask": np.pad(np.ones(stop - start, np.float32), (0, pad)),
        }
        sums = eval_fn(params, apply_fn, batch)
        total = {k: total[k] + np.asarray(v, np.float64) for k, v in sums.items()}
    return total


def evaluate(
    params, apply_fn: Callable, split: data_lib.Split, batch_size: int
) -> dict[str, float]:
    """Mean loss and accuracy over a whole split, in fixed-size padded chunks."""
    total = _split_sums(_eval_step_jit, params, apply_fn, split, batch_size)
    return {
        "loss": float(total["loss_sum"] / total["count"]),
        "accuracy": float(total["correct"] / total["count"]),
    }


def evaluate_seeds(
    params, apply_fn: Callable, split: data_lib.Split, batch_size: int
) -> list[dict[str, float]]:
    """``evaluate`` for parameters stacked over seeds (leading axis), seed by seed in one call."""
    total = _split_sums(_eval_seeds_jit, params, apply_fn, split, batch_size)
    return [
        {"loss": float(loss_sum / count), "accuracy": float(correct / count)}
        for loss_sum, correct, count in zip(
            total["loss_sum"], total["correct"], total["count"], strict=True
        )
    ]


def _eval_seeds(params, apply_fn: Callable, batch: Batch) -> Metrics:
    # lax.map, not vmap: vmapped convolutions become grouped ones, slow on XLA:CPU.
    return jax.lax.map(lambda seed_params: eval_step(seed_params, apply_fn, batch), params)


_eval_step_jit = jax.jit(eval_step, static_argnums=1)
_eval_seeds_jit = jax.jit(_eval_seeds, static_argnums=1)


def agile_parameter_ranges(params) -> dict[str, dict[str, float]]:
    """Min, max and mean of every agile layer's ``a`` and ``b``, keyed ``layer/a``."""
    ranges = {}
    for path, value in traverse_util.flatten_dict(params).items():
        if is_agile_param(path):
            value = np.asarray(value)
            ranges["/".join(path)] = {
                "min": float(value.min()),
                "max": float(value.max()),
                "mean": float(value.mean()),
            }
    return ranges


# ---------------------------------------------------------------------------------------------
# The experiment loop.


def _config_dict(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(config.to_json_best_effort())


def _check_workdir_config(config: ml_collections.ConfigDict, workdir: Path) -> None:
    """Saves the config, or refuses a workdir whose saved config differs (unless allowed)."""
    path = workdir / "config.json"
    current = _config_dict(config)
    if path.exists():
        saved = json.loads(path.read_text())
        ignore = {"allow_config_change"}
        differences = sorted(
            k for k in set(saved) | set(current)
            if k not in ignore and saved.get(k) != current.get(k)
        )
        if differences and not config.allow_config_change:
            raise ValueError(
                f"{workdir} holds a run with a different config "
                f"(fields: {', '.join(differences)}). Use a new --workdir, or pass "
                "--config.allow_config_change=True to resume anyway."
            )
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")


def _read_rows(path: Path, up_to_step: int) -> list[dict[str, Any]]:
    """Evaluation rows already written, dropping those past the restored checkpoint."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["step"] <= up_to_step]


def _best_row(rows: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    return min(rows, key=lambda row: row[key]) if rows else None


def _create_metric_writer(workdir: Path):
    """A clu writer: TensorBoard events in ``workdir`` plus log lines.

    clu writes events through TensorFlow; TensorFlow is hidden from GPUs first so
    it never takes accelerator memory that JAX needs.
    """
    import tensorflow as tf  # Lazy: seconds to import, only the summary writer needs it.
    from clu import metric_writers

    tf.config.set_visible_devices([], "GPU")
    return metric_writers.create_default_writer(
        str(workdir), just_logging=jax.process_index() > 0, asynchronous=False
    )


def _checkpoint_manager(workdir: Path) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    return ocp.CheckpointManager(workdir.resolve() / "checkpoints", options=options)


def _evaluate_splits(layout, state, splits: dict[str, Any], batch_size: int) -> list[dict]:
    """Per seed: ``{"val_loss": ..., "val_accuracy": ..., "test_loss": ...}`` for each split."""
    results: list[dict[str, float]] = [{} for _ in layout.seeds]
    for name, split in splits.items():
        if split is None:
            continue
        if layout.batched_seeds:
            per_seed = evaluate_seeds(state.params, state.apply_fn, split, batch_size)
        else:
            view = layout.seed_view(state, 0)
            per_seed = [evaluate(view.params, view.apply_fn, split, batch_size)]
        for result, metrics in zip(results, per_seed, strict=True):
            result[f"{name}_loss"] = metrics["loss"]
            result[f"{name}_accuracy"] = metrics["accuracy"]
    return results


def _sync_processes(name: str) -> None:
    """A barrier across processes (nothing with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
    """Trains and evaluates one model (or ``config.num_seeds``); writes to ``workdir``.

    ``workdir`` receives ``config.json``, ``metrics.jsonl`` (one row per
    evaluation, per seed with a ``seed`` field when ``num_seeds > 1``),
    TensorBoard events, orbax checkpoints and ``summary.json``. Rerunning with
    the same workdir resumes from the latest checkpoint. ``config.parallel``
    and ``config.num_seeds`` choose the layout (see ``agile.parallel``); with
    several processes only process 0 writes files other than checkpoints.
    Returns the summary: one run's results, or for several seeds each seed's
    results under ``"seeds"`` with their ``"mean"`` and ``"std"``.
    """
    validate_config(config)
    start_time = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    is_main_process = jax.process_index() == 0
    if is_main_process:
        _check_workdir_config(config, workdir)

    layout = parallel_lib.make_layout(config, _step_on_device_data, _compiled_step)
    seeds = layout.seeds
    datasets = data_lib.load_datasets(config.data)
    train_images = layout.place_data(datasets.train.images)
    train_labels = layout.place_data(datasets.train.labels)
    num_train = len(datasets.train.labels)
    steps_per_epoch = len(
        data_lib.epoch_indices(0, 0, num_train, config.batch_size, config.data.drop_remainder)
    )
    total_steps = steps_per_epoch * config.num_epochs
    eval_every = config.eval_every_steps or steps_per_epoch
    select_on = "val_loss" if datasets.val is not None else "test_loss"

    state = layout.place([create_train_state(config, jax.random.key(seed)) for seed in seeds])
    accum = layout.place([new_train_accumulator()] * len(seeds))
    manager = _checkpoint_manager(workdir)
    if manager.latest_step() is not None:
        target = {"state": layout.to_checkpoint(state), "accum": layout.to_checkpoint(accum)}
        restored = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(target))
        state = layout.from_checkpoint(restored["state"])
        accum = layout.from_checkpoint(restored["accum"])
        logging.info("Resumed from the checkpoint at step %d.", manager.latest_step())
    seed_steps = [int(layout.seed_view(state, i).step) for i in range(len(seeds))]
    step = max(seed_steps)

    rows_path = workdir / "metrics.jsonl"
    saved_rows = _read_rows(rows_path, step)
    rows = [[row for row in saved_rows if row.get("seed", seed) == seed] for seed in seeds]
    _sync_processes("agile_metrics_read")
    if is_main_process:
        rows_path.write_text("".join(json.dumps(row) + "\n" for row in saved_rows))
    writer = _create_metric_writer(workdir)
    writer.write_hparams(
        {k: v for k, v in traverse_util.flatten_dict(_config_dict(config), sep=".").items()
         if isinstance(v, (int, float, str, bool))}
    )

    def evaluations_without_improvement(seed_rows) -> int:
        best = _best_row(seed_rows, select_on)
        return 0 if best is None else sum(row["step"] > best["step"] for row in seed_rows)

    def stopped_early(seed_rows) -> bool:
        return select_on == "val_loss" and config.patience > 0 and (
            evaluations_without_improvement(seed_rows) >= config.patience
        )

    def active_seeds() -> np.ndarray:
        return np.array([not stopped_early(seed_rows) for seed_rows in rows])

    def seed_accumulators(accum) -> list[dict[str, Any]]:
        return [jax.device_get(layout.seed_view(accum, i)) for i in range(len(seeds))]

    def check_finite(accum) -> None:
        for seed, seed_accum in zip(seeds, seed_accumulators(accum), strict=True):
            bad = int(seed_accum["first_nonfinite_step"])
            if bad >= 0:
                of_seed = f" of seed {seed}" if layout.batched_seeds else ""
                raise NonFiniteLossError(
                    f"Training loss{of_seed} became NaN or inf at step {bad}; stopping. The last "
                    f"good checkpoint (step {manager.latest_step()}) is kept in "
                    f"{workdir / 'checkpoints'}."
                )

    def mean_train_loss(accum) -> float:
        losses = [float(a["loss_sum"]) / max(int(a["count"]), 1) for a in seed_accumulators(accum)]
        return sum(losses) / len(losses)

    def run_evaluation(state, accum) -> list[dict[str, Any]]:
        evaluations = _evaluate_splits(
            layout, state, {"val": datasets.val, "test": datasets.test},
            config.data.eval_batch_size,
        )
        seed_rows = []
        for i, seed_accum in enumerate(seed_accumulators(accum)):
            seed_state = layout.seed_view(state, i)
            count = max(int(seed_accum["count"]), 1)
            row = {
                "step": int(seed_state.step),
                "epoch": int(seed_state.step) / steps_per_epoch,
                "train_loss": float(seed_accum["loss_sum"]) / count,
                "train_accuracy": float(seed_accum["correct_sum"]) / count,
                **evaluations[i],
                "agile": agile_parameter_ranges(seed_state.params),
            }
            seed_rows.append(row)
        return seed_rows

    def record(seed_index: int, row: dict[str, Any]) -> None:
        rows[seed_index].append(row)
        prefix = f"seed_{seeds[seed_index]}/" if layout.batched_seeds else ""
        if is_main_process:
            line = {"seed": seeds[seed_index], **row} if layout.batched_seeds else row
            with rows_path.open("a") as f:
                f.write(json.dumps(line) + "\n")
        writer.write_scalars(
            row["step"],
            {prefix + k: v for k, v in row.items() if isinstance(v, float) and k != "epoch"},
        )

    def save_checkpoint(step: int, state, accum) -> None:
        manager.save(
            step,
            args=ocp.args.StandardSave(
                {"state": layout.to_checkpoint(state), "accum": layout.to_checkpoint(accum)}
            ),
        )

    loop_start = time.perf_counter()
    first_step = step
    last_log = (time.perf_counter(), step)
    active = active_seeds()
    while step < total_steps and active.any():
        epoch, index_in_epoch = divmod(step, steps_per_epoch)
        per_seed_indices = [
            data_lib.epoch_indices(
                seed, epoch, num_train, config.batch_size, config.data.drop_remainder
            )
            for seed in seeds
        ]
        epoch_indices = (
            np.stack(per_seed_indices, axis=1) if layout.batched_seeds else per_seed_indices[0]
        )
        for indices in epoch_indices[index_in_epoch:]:
            state, accum = layout.step(
                state, accum, train_images, train_labels, layout.place_indices(indices), active
            )
            step += 1
            is_eval = step % eval_every == 0 or step == total_steps
            is_checkpoint = step % config.checkpoint_every_steps == 0 or step == total_steps
            if step % config.log_every_steps == 0 or is_eval or is_checkpoint:
                check_finite(accum)
            if step % config.log_every_steps == 0:
                now = time.perf_counter()
                rate = (step - last_log[1]) / max(now - last_log[0], 1e-9)
                last_log = (now, step)
                logging.info(
                    "step %d/%d  train loss %.4f  %.1f steps/s  ~%.0f s left",
                    step, total_steps, mean_train_loss(accum),
                    rate, (total_steps - step) / max(rate, 1e-9),
                )
            if is_eval:
                for i, row in enumerate(run_evaluation(state, accum)):
                    if active[i]:
                        record(i, row)
                accum = layout.place([new_train_accumulator()] * len(seeds))
                still_active = active_seeds()
                for i in np.flatnonzero(active & ~still_active):
                    of_seed = f" (seed {seeds[i]})" if layout.batched_seeds else ""
                    logging.info("Early stop%s at step %d: %d evaluations without a better "
                                 "validation loss.", of_seed, step, config.patience)
                    is_checkpoint = True
                active = still_active
            if is_checkpoint:
                save_checkpoint(step, state, accum)
            if not active.any():
                break
    manager.wait_until_finished()
    writer.flush()
    loop_time = time.perf_counter() - loop_start

    combo = combo_number(config.model.conv_activation, config.model.dense_activation)
    wall_time = time.perf_counter() - start_time
    steps_per_second = (step - first_step) / loop_time if step > first_step else None

    def seed_summary(i: int) -> dict[str, Any]:
        seed_state = layout.seed_view(state, i)
        seed_step = int(seed_state.step)
        best = _best_row(rows[i], select_on)
        final = rows[i][-1] if rows[i] else {}
        return {
            "combo": combo,
            "conv_activation": config.model.conv_activation,
            "dense_activation": config.model.dense_activation,
            "seed": seeds[i],
            "steps": seed_step,
            "early_stopped": seed_step < total_steps,
            "selected_on": select_on,
            "best_step": best["step"] if best else None,
            "best_test_loss": best["test_loss"] if best else None,
            "best_test_accuracy": best["test_accuracy"] if best else None,
            "min_test_loss": min(row["test_loss"] for row in rows[i]) if rows[i] else None,
            "final_test_loss": final.get("test_loss"),
            "final_test_accuracy": final.get("test_accuracy"),
            "agile_ranges": agile_parameter_ranges(seed_state.params),
            "wall_time_s": wall_time,
            "steps_per_second": steps_per_second,
        }

    per_seed = [seed_summary(i) for i in range(len(seeds))]
    if layout.batched_seeds:
        summary = {
            "combo": combo,
            "conv_activation": config.model.conv_activation,
            "dense_activation": config.model.dense_activation,
            "num_seeds": len(seeds),
            "seeds": per_seed,
            **parallel_lib.seed_statistics(per_seed),
            "wall_time_s": wall_time,
            "steps_per_second": steps_per_second,
        }
    else:
        summary = per_seed[0]
    if is_main_process:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    writer.close()
    return summary
