"""The resumable experiment loop around :mod:`agile.paper.steps`, for any task.

``train_and_evaluate(config, workdir)`` builds the config's task once (its data source and
model, :mod:`agile.paper.tasks`) and runs a whole experiment: the training split lives on the
device, every step is one compiled call that gathers its batch from it, and the loop
evaluates (``agile.paper.evaluation``), keeps the evaluation history
(``agile.paper.history``), checkpoints and guards its workdir (``agile.paper.workdir``) and
writes the summary (``agile.paper.summary``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import traverse_util

from agile.errors import ConfigError, UserError
from agile.labels import AGILE_LABEL
from agile.paper import config as config_lib
from agile.paper import data as data_lib
from agile.paper import evaluation, tasks
from agile.paper import parallel as parallel_lib
from agile.paper import progress as progress_lib
from agile.paper import workdir as workdir_lib
from agile.paper.evaluation import model_variables
from agile.paper.history import History
from agile.paper.progress import Progress
from agile.paper.steps import (
    abstract_train_state,
    create_train_state,
    make_layout,
    model_labels,
    new_train_accumulator,
)
from agile.paper.summary import Clock, run_summary, seed_summary

AfterStep = Callable[[int], None]
AfterEvaluation = Callable[[list[dict[str, Any]]], None]


class NonFiniteLossError(UserError, FloatingPointError):
    """Raised when the training loss becomes NaN or inf."""


# ---------------------------------------------------------------------------------------------
# The experiment loop: a fixed setup, a checkpointed progress, and the loop that joins them.


@dataclasses.dataclass
class _Setup:
    """What a run fixes at its start: config, layout, placed data, schedule, outputs."""

    config: ml_collections.ConfigDict
    workdir: Path
    task: tasks.Task  # The data source and the model, built once.
    layout: parallel_lib.Layout
    apply_fn: Callable  # One model's apply, created once: jit caches compiled code on it.
    labels: Any  # agile.param_labels of one model's parameters.
    train_inputs: jax.Array
    train_targets: jax.Array
    num_train: int
    val: evaluation.DeviceSplit | None
    test: evaluation.DeviceSplit
    steps_per_epoch: int
    total_steps: int
    eval_every: int
    is_main: bool
    checkpoints: workdir_lib.Checkpoints
    writer: workdir_lib.MetricWriter

    @property
    def select_on(self) -> str:
        return "val_loss" if self.val is not None else "test_loss"

    @property
    def rows_path(self) -> Path:
        return self.workdir / workdir_lib.ROWS_FILE

    def row_key(self, index: int, row: dict[str, Any]) -> dict[str, Any]:
        """A row as ``metrics.jsonl`` stores it: with its seed when seeds are batched."""
        seed = self.layout.seeds[index]
        return {"seed": seed, **row} if self.layout.batched_seeds else row


def _setup(config: ml_collections.ConfigDict, workdir: Path, task: tasks.Task) -> _Setup:
    """Loads and places the data (refusing other data than the workdir's checkpoints were
    trained on), and works out the schedule."""
    layout = make_layout(config)
    datasets = task.data.load(config.data)
    data_lib.check_recorded(workdir, data_lib.fingerprint(datasets), task.data.title,
                            task.data.details(config.data), is_main=jax.process_index() == 0)
    num_train = len(datasets.train.targets)
    steps_per_epoch = len(
        data_lib.epoch_indices(0, 0, num_train, config.batch_size, config.data.drop_remainder)
    )
    chunk = config.data.eval_batch_size
    place = lambda split: (  # noqa: E731
        None if split is None else evaluation.place_split(split.inputs, split.targets, chunk)
    )
    return _Setup(
        config=config, workdir=workdir, task=task, layout=layout, apply_fn=task.model.apply,
        labels=model_labels(task),
        train_inputs=layout.place_data(datasets.train.inputs),
        train_targets=layout.place_data(datasets.train.targets),
        num_train=num_train, val=place(datasets.val), test=place(datasets.test),
        steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * config.num_epochs,
        eval_every=config.eval_every_steps or steps_per_epoch,
        is_main=jax.process_index() == 0,
        checkpoints=workdir_lib.Checkpoints(workdir),
        writer=workdir_lib.MetricWriter(workdir, enabled=jax.process_index() == 0),
    )


def _initial_progress(setup: _Setup) -> Progress:
    config, layout = setup.config, setup.layout
    states = [create_train_state(config, jax.random.key(seed), setup.task)
              for seed in layout.seeds]
    return Progress(
        state=layout.place(states),
        accum=layout.place([new_train_accumulator()] * len(layout.seeds)),
        histories=[History(setup.select_on, config.patience) for _ in layout.seeds],
        best_params=[jax.device_get(state.params) for state in states],
        best_model_states=[jax.device_get(_model_state(state)) for state in states],
        best_tests=[None] * len(states),
        timing={},
    )


def _rewrite_rows(setup: _Setup, progress: Progress) -> None:
    """Rebuilds ``metrics.jsonl`` from the restored histories (the checkpoint is the truth)."""
    rows = sorted(
        (setup.row_key(i, row) for i, history in enumerate(progress.histories)
         for row in history.rows),
        key=lambda row: (row["step"], row.get("seed", 0)),
    )
    existed = setup.rows_path.exists()
    if workdir_lib.write_rows(setup.rows_path, rows) and existed:
        logging.warning("%s differed from the checkpoint's history (%d rows); rewritten from the "
                        "checkpoint.", setup.rows_path, len(rows))
    elif rows and not existed:
        logging.warning("%s was missing; rebuilt from the checkpoint's history (%d rows).",
                        setup.rows_path, len(rows))


def _check_finite(setup: _Setup, accum) -> None:
    """Raises NonFiniteLossError if any seed's loss became NaN or inf (waits for saves first)."""
    for index, seed in enumerate(setup.layout.seeds):
        bad = int(jax.device_get(setup.layout.seed_view(accum, index)["first_nonfinite_step"]))
        if bad < 0:
            continue
        setup.checkpoints.wait()  # So the message names only a finished checkpoint.
        kept = setup.checkpoints.latest_step()
        where = "no checkpoint was saved" if kept is None else (
            f"the last good checkpoint (step {kept}) is kept in {setup.checkpoints.directory}")
        of_seed = f" of seed {seed}" if setup.layout.batched_seeds else ""
        raise NonFiniteLossError(
            f"Training loss{of_seed} became NaN or inf at step {bad}; stopping: {where}.")


def _model_state(state) -> dict[str, Any]:
    """The state's mutable collections (BatchNorm's statistics), ``{}`` for a model without."""
    return getattr(state, "model_state", None) or {}


def _variables(state) -> dict[str, Any]:
    """What a model is evaluated with: its parameters and mutable collections."""
    return model_variables(state.params, _model_state(state))


def _variables_view(setup: _Setup, state) -> Any:
    """Variables to evaluate: the seed stack, or the one model (one device's copy)."""
    if setup.layout.batched_seeds:
        return _variables(state)
    return setup.layout.seed_view(_variables(state), 0)


def _evaluate_split(setup: _Setup, variables, split) -> list[dict[str, float]]:
    if setup.layout.batched_seeds:
        return evaluation.evaluate_seeds(variables, setup.apply_fn, split,
                                         setup.layout.eval_batching)
    return [evaluation.evaluate(variables, setup.apply_fn, split)]


def _compile_evaluation(setup: _Setup, variables, seed_variables) -> None:
    """Compiles the evaluations ``_evaluate`` and ``_best_test`` will run, without running them.

    ``variables`` are what ``_evaluate`` evaluates (:func:`_variables_view`),
    ``seed_variables`` one seed's; either may be abstract (``jax.ShapeDtypeStruct`` trees).
    """
    layout = setup.layout
    selection = setup.val if setup.val is not None else setup.test
    evaluation.compile_for(variables, setup.apply_fn, selection,
                           layout.eval_batching if layout.batched_seeds else None)
    if setup.val is not None:  # Test rows and best models: one seed at a time.
        evaluation.compile_for(seed_variables, setup.apply_fn, setup.test)


def _precompile(setup: _Setup) -> bool:
    """Compiles the train step and the evaluations from the state's abstract shapes, so that
    a thread can do it while the parameters are initialised and the checkpoint restored
    (XLA compiles on another core). Returns False where the layout compiles at its first
    step instead (data parallelism); the evaluations are then compiled by the loop."""
    layout, config = setup.layout, setup.config
    if not layout.precompiles:
        return False
    state = abstract_train_state(config, setup.task, layout.place, len(layout.seeds))
    accum = jax.eval_shape(lambda: layout.place([new_train_accumulator()] * len(layout.seeds)))
    indices = _epoch_order(setup, 0)[0]
    active = np.ones(len(layout.seeds), bool)
    layout.precompile(state, accum, setup.train_inputs, setup.train_targets, indices, active)
    seed_variables = _variables(layout.abstract_seed(state))
    _compile_evaluation(setup, _variables(state) if layout.batched_seeds else seed_variables,
                        seed_variables)
    return True


def _needs_test(setup: _Setup, history: History, step: int) -> bool:
    """Whether this evaluation's row gets the test split: see ``config.test_every``."""
    every = setup.config.test_every
    return (setup.val is None or step >= setup.total_steps or history.should_stop()
            or (every > 0 and len(history.rows) % every == 0))


def _evaluate(setup: _Setup, progress: Progress, active: np.ndarray) -> list[dict[str, Any]]:
    """Evaluates every active seed, records its row, and returns the rows as stored."""
    layout, state = setup.layout, progress.state
    split = setup.val if setup.val is not None else setup.test
    selected = _evaluate_split(setup, _variables_view(setup, state), split)
    prefix = "val" if setup.val is not None else "test"
    recorded = []
    for i in np.flatnonzero(active):
        seed_accum = jax.device_get(layout.seed_view(progress.accum, i))
        seed_state = layout.seed_view(state, i)
        step, count = int(seed_state.step), max(int(seed_accum["count"]), 1)
        host_params = jax.device_get(seed_state.params)
        row = {"step": step, "epoch": step / setup.steps_per_epoch,
               "train_loss": float(seed_accum["loss_sum"]) / count,
               "train_accuracy": float(seed_accum["correct_sum"]) / count,
               f"{prefix}_loss": selected[i]["loss"], f"{prefix}_accuracy": selected[i]["accuracy"]}
        history = progress.histories[i]
        if history.record(row):
            progress.best_params[i] = host_params
            progress.best_model_states[i] = jax.device_get(_model_state(seed_state))
        if setup.val is not None and _needs_test(setup, history, step):
            test = evaluation.evaluate(_variables(seed_state), setup.apply_fn, setup.test)
            row.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
        row["agile"] = evaluation.agile_parameter_ranges(host_params, setup.labels)
        recorded.append(setup.row_key(i, row))
        _write_histograms(setup, setup.row_key(i, row), host_params)
    return recorded


def _write_histograms(setup: _Setup, row: dict[str, Any], params: Any) -> None:
    """TensorBoard histograms of every agile layer's a and b at this evaluation."""
    prefix = f"seed_{row['seed']}/" if "seed" in row else ""
    labels = traverse_util.flatten_dict(setup.labels)
    setup.writer.write_histograms(row["step"], {
        f"{prefix}{'/'.join(path)}": value
        for path, value in traverse_util.flatten_dict(params).items()
        if labels[path] == AGILE_LABEL})


def _log_and_write(setup: _Setup, rows: list[dict[str, Any]]) -> None:
    """Appends the rows to ``metrics.jsonl`` and TensorBoard, and logs one line per row."""
    if setup.is_main:
        workdir_lib.append_rows(setup.rows_path, rows)
    for row in rows:
        prefix = f"seed_{row['seed']}/" if "seed" in row else ""
        scalars = {prefix + k: v for k, v in row.items() if isinstance(v, float) and k != "epoch"}
        setup.writer.write_scalars(row["step"], scalars)
        logging.info("%sstep %d: %s", prefix, row["step"], ", ".join(
            f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float) and k != "epoch"))


def _best_test(setup: _Setup, progress: Progress, index: int) -> dict[str, float] | None:
    """Test loss and accuracy of seed ``index``'s best model: from its row, or evaluated now.

    Runs once per seed, when it stops; the result is checkpointed with the histories.
    """
    best = progress.histories[index].best()
    if best is None:
        return None
    if "test_loss" in best:
        return {"loss": best["test_loss"], "accuracy": best["test_accuracy"]}
    variables = jax.device_put(model_variables(progress.best_params[index],
                                               progress.best_model_states[index]))
    test = evaluation.evaluate(variables, setup.apply_fn, setup.test)
    setup.writer.write_scalars(best["step"], {"best_test_loss": test["loss"]})
    return test


def _summary(setup: _Setup, progress: Progress) -> dict[str, Any]:
    layout = setup.layout
    per_seed = [
        seed_summary(
            history, seed=seed, steps=int(layout.seed_view(progress.state, i).step),
            best_test=progress.best_tests[i],
            agile_ranges=evaluation.agile_parameter_ranges(
                jax.device_get(layout.seed_view(progress.state, i).params), setup.labels),
        )
        for i, (seed, history) in enumerate(zip(layout.seeds, progress.histories, strict=True))
    ]
    run_fields = tasks.model_spec(setup.config).summary_fields(setup.config.model)
    timing = {k: v for k, v in progress.timing.items() if k != "steps_timed"}
    return run_summary(run_fields, per_seed, timing, layout.batched_seeds)


def _progress_line(setup: _Setup, progress: Progress, step: int, rate: float) -> str:
    """Step, mean training loss and an ETA that knows early stopping may come sooner."""
    accums = [jax.device_get(setup.layout.seed_view(progress.accum, i))
              for i in range(len(setup.layout.seeds))]
    loss = np.mean([float(a["loss_sum"]) / max(int(a["count"]), 1) for a in accums])
    most = (setup.total_steps - step) / max(rate, 1e-9)
    line = f"step {step}/{setup.total_steps}  train loss {loss:.4f}  {rate:.1f} steps/s"
    if setup.val is None or not setup.config.patience:
        return f"{line}  ~{most:.0f} s left"
    patience_left = max(max(setup.config.patience - h.evaluations_without_improvement(), 0)
                        for h in progress.histories)
    soonest = min(most, (patience_left * setup.eval_every - step % setup.eval_every) / rate)
    return f"{line}  {soonest:.0f}-{most:.0f} s left (early stop - all epochs)"


def _epoch_order(setup: _Setup, epoch: int) -> np.ndarray:
    """The epoch's batch indices: (steps, batch), or (steps, seeds, batch) for a seed batch."""
    config = setup.config
    if config.data.order_seed is not None:  # one order for every seed: (steps, batch)
        return data_lib.epoch_indices(config.data.order_seed, epoch, setup.num_train,
                                      config.batch_size, config.data.drop_remainder)
    per_seed = [
        data_lib.epoch_indices(seed, epoch, setup.num_train, config.batch_size,
                               config.data.drop_remainder)
        for seed in setup.layout.seeds
    ]
    return np.stack(per_seed, axis=1) if setup.layout.batched_seeds else per_seed[0]


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    *,
    after_step: AfterStep | None = None,
    after_evaluation: AfterEvaluation | None = None,
) -> dict[str, Any]:
    """Trains and evaluates one model (or ``config.num_seeds``); writes to ``workdir``.

    ``workdir`` receives ``config.json``, ``metrics.jsonl`` (one row per evaluation, per
    seed with a ``seed`` field when ``num_seeds > 1``), TensorBoard events, orbax
    checkpoints and ``summary.json``. Rerunning with the same workdir resumes from the
    latest checkpoint; several processes (``jax.distributed``) share one workdir, and only
    process 0 writes files other than checkpoints. Hooks: ``after_step(step)`` runs after
    every step (raising in it interrupts the run, as Ctrl-C would);
    ``after_evaluation(rows)`` gets each evaluation's rows as ``metrics.jsonl`` stores them.
    Returns the summary (``agile.paper.summary.run_summary``).
    """
    config_lib.validate(config)
    clock = Clock()
    task = tasks.build(config)
    _check_memory(config, task)
    task.data.check_available(config.data)  # A wrong data folder leaves no workdir behind.
    workdir = workdir_lib.prepare(workdir)
    config_dict = run_config(config)
    saved_devices = _saved_devices(workdir)
    workdir_lib.check_config(workdir, config_dict, config.allow_config_change,
                             config_lib.RESUMABLE_FIELDS, run_config(config_lib.get_config()))
    log = workdir / (workdir_lib.DEPENDENCY_LOG if jax.process_index() == 0
                     else f"{workdir_lib.DEPENDENCY_LOG}.process_{jax.process_index()}")
    with workdir_lib.dependency_output(log), workdir_lib.disk_errors(workdir), \
            contextlib.ExitStack() as stack:
        if jax.process_index() == 0:
            stack.enter_context(workdir_lib.Lock(workdir))
        with clock.phase("setup"):
            setup = _setup(config, workdir, task)
            stack.push(workdir_lib.quietly(setup.checkpoints.close))
            stack.push(workdir_lib.quietly(setup.writer.close))
            precompiled = None
            if not (workdir / workdir_lib.SUMMARY_FILE).exists():  # a finished run trains none
                compiler = stack.enter_context(
                    concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="precompile"))
                precompiled = compiler.submit(_precompile, setup)
            if setup.is_main:
                setup.checkpoints.remove_unfinished()
            progress = progress_lib.restore(setup.checkpoints, setup.layout, config.patience,
                                            _initial_progress(setup))
        _check_schedule(setup, progress)
        _warn_rounding_change(saved_devices, config_dict, progress.step)
        if setup.is_main:
            workdir_lib.save_config(workdir, config_dict)
            _rewrite_rows(setup, progress)
            setup.writer.write_hparams(traverse_util.flatten_dict(config_dict, sep="."))
        progress = _loop(setup, progress, clock, after_step, after_evaluation, precompiled)
        summary = _summary(setup, progress)
        if setup.is_main:
            workdir_lib.write_text_atomically(
                workdir / workdir_lib.SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


def run_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The config as ``config.json`` records it: its fields and what else decides the last
    digits of the results: for the data-parallel modes ``devices`` (how many the batch is
    split over: another count sums the gradients in another order), on CPU
    ``xla_cpu_threads`` (``NPROC``: XLA:CPU splits its sums by it). A resume with another
    value is refused unless allowed, and then warned about: it is not bit-identical."""
    recorded = json.loads(config.to_json_best_effort())
    if config.parallel != "none":
        recorded["devices"] = jax.device_count()
    if parallel_lib.backend() == "cpu":
        recorded["xla_cpu_threads"] = parallel_lib.xla_cpu_threads()
    return recorded


ROUNDING_FIELDS = ("devices", "xla_cpu_threads")  # run_config's; they change the last digits


def _saved_devices(workdir: Path) -> dict[str, int | None]:
    path = workdir / workdir_lib.CONFIG_FILE
    saved = workdir_lib.read_json(path) if path.is_file() else {}
    return {field: saved.get(field) for field in ROUNDING_FIELDS}


# Copies of a seed's state a run holds at once: the state, the step's donated output, the
# checkpoint's host copy, the best parameters and the optimizer's moments in each.
STATE_COPIES = 4


def _check_memory(config: ml_collections.ConfigDict, task: tasks.Task) -> None:
    """On CPU, refuses a seed batch whose train states alone would not fit in the memory
    available now (``num_seeds=100000`` grew to 8 GB and on, with no word), before anything
    is written. Accelerators report their own out-of-memory errors."""
    if parallel_lib.backend() != "cpu" or not hasattr(os, "sysconf"):
        return
    state = abstract_train_state(config, task)
    per_seed = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state))
    needed = per_seed * STATE_COPIES * config.num_seeds
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if needed > available:
        most = max(available // (per_seed * STATE_COPIES), 1)
        raise ConfigError(
            f"config.num_seeds={config.num_seeds} needs about {needed / 2**30:.1f} GiB for the "
            f"train states alone ({per_seed / 2**20:.2f} MiB per seed, {STATE_COPIES} copies), "
            f"more than the {available / 2**30:.1f} GiB available: train at most about {most} "
            "seeds at once (several runs with --config.seed) or on a larger machine.")


def _check_schedule(setup: _Setup, progress: Progress) -> None:
    """Refuses a resume whose schedule ends at or before its checkpoint while a seed has not
    finished (``num_epochs`` shrunk under ``allow_config_change``): nothing would train or be
    evaluated, and the summary would have no final or best test loss."""
    unfinished = [seed for seed, best in zip(setup.layout.seeds, progress.best_tests,
                                             strict=True) if best is None]
    if progress.step >= setup.total_steps and unfinished:
        epochs = -(-(progress.step + 1) // setup.steps_per_epoch)
        raise workdir_lib.WorkdirError(
            f"{setup.workdir} holds a checkpoint at step {progress.step}, at or past the end of "
            f"this schedule (num_epochs={setup.config.num_epochs}: {setup.total_steps} steps), "
            "so nothing would train or be evaluated: a resume cannot end a run before its "
            f"checkpoint. Use num_epochs >= {epochs} to continue it, or a new --workdir.")


def _warn_rounding_change(saved: dict[str, int | None], now: dict[str, Any], step: int) -> None:
    """A resume allowed (allow_config_change) on another device count or XLA:CPU thread
    count: its results differ in the last digits from an uninterrupted run's."""
    for field in ROUNDING_FIELDS:
        if step and saved[field] is not None and now.get(field) not in (None, saved[field]):
            logging.warning("Resuming a run trained with %s=%d with %s=%d: allowed "
                            "(allow_config_change), but its results will differ in the last "
                            "digits from an uninterrupted run (the sums round differently).",
                            field, saved[field], field, now[field])


def _evaluation_point(
    setup: _Setup,
    progress: Progress,
    active: np.ndarray,
    step: int,
    clock: Clock,
    after_evaluation: AfterEvaluation | None,
) -> np.ndarray:
    """Evaluates the active seeds and writes their rows; returns which of them stop here.

    A seed stops when early stopping says so or at the last step; its best model's test
    metrics are then taken (``_best_test``), to be checkpointed with the history.
    """
    with clock.phase("evaluation"):
        rows = _evaluate(setup, progress, active)
        early = active & np.array([history.should_stop() for history in progress.histories])
        stopping = early | (active & (step >= setup.total_steps))
        for i in np.flatnonzero(stopping):
            progress.best_tests[i] = _best_test(setup, progress, i)
    with clock.phase("logging"):
        _log_and_write(setup, rows)
        if after_evaluation is not None:
            after_evaluation(rows)
        for i in np.flatnonzero(early):
            of_seed = f" (seed {setup.layout.seeds[i]})" if setup.layout.batched_seeds else ""
            logging.info("Early stop%s at step %d: %d evaluations without a better validation "
                         "loss.", of_seed, step, setup.config.patience)
    progress.accum = setup.layout.place([new_train_accumulator()] * len(setup.layout.seeds))
    return stopping


def _loop(
    setup: _Setup,
    progress: Progress,
    clock: Clock,
    after_step: AfterStep | None,
    after_evaluation: AfterEvaluation | None,
    precompiled: concurrent.futures.Future | None = None,
) -> Progress:
    """Steps, evaluates, checkpoints until every seed stopped or the epochs are done.

    ``precompiled`` is :func:`_precompile` running in a thread (waited for before the first
    step; its errors surface here), or None: the loop compiles the evaluations itself."""
    config, layout = setup.config, setup.layout
    step = first_step = progress.step
    earlier_timing = progress.timing  # Earlier sessions'; each checkpoint adds this session's.
    active = np.array([not history.should_stop() for history in progress.histories])
    last_log = (time.perf_counter(), step)
    if step < setup.total_steps and active.any():
        with clock.phase("compile"):
            if precompiled is None or not precompiled.result():
                _compile_evaluation(setup, _variables_view(setup, progress.state),
                                    _variables(layout.seed_view(progress.state, 0)))
    while step < setup.total_steps and active.any():
        epoch, offset = divmod(step, setup.steps_per_epoch)
        for indices in _epoch_order(setup, epoch)[offset:]:
            with clock.phase("compile" if step == first_step else "steps"):
                progress.state, progress.accum = layout.step(
                    progress.state, progress.accum, setup.train_inputs, setup.train_targets,
                    layout.place_indices(indices), active)
                step += 1
                if step == first_step + 1:
                    jax.block_until_ready(progress.state)
            if layout.max_steps_in_flight and step % layout.max_steps_in_flight == 0:
                with clock.phase("steps"):
                    jax.block_until_ready(progress.accum)  # See DataParallel.
            if after_step is not None:
                after_step(step)
            is_eval = step % setup.eval_every == 0 or step == setup.total_steps
            is_checkpoint = step % config.checkpoint_every_steps == 0 or step == setup.total_steps
            if step % config.log_every_steps == 0 or is_eval or is_checkpoint:
                with clock.phase("steps"):
                    _check_finite(setup, progress.accum)  # Waits for the steps to finish.
            if step % config.log_every_steps == 0:
                now = time.perf_counter()
                rate = (step - last_log[1]) / max(now - last_log[0], 1e-9)
                last_log = (now, step)
                logging.info("%s", _progress_line(setup, progress, step, rate))
            if is_eval:
                stopping = _evaluation_point(setup, progress, active, step, clock, after_evaluation)
                active, is_checkpoint = active & ~stopping, is_checkpoint or stopping.any()
            if is_checkpoint:
                with clock.phase("checkpoint"):
                    progress.timing = clock.timing(earlier_timing, step - first_step)
                    progress_lib.save(setup.checkpoints, setup.layout, progress, step)
            if not active.any():
                break
    with clock.phase("checkpoint"):
        setup.checkpoints.wait()
    return progress
