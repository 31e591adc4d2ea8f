"""The training state and the pure, jit-compiled training step of any task's model.

``train_step(state, batch)`` is a pure function of arrays; ``step_on_device_data`` gathers
its batch from device-resident data first (the step every layout of
:mod:`agile.paper.parallel` wraps). The model comes in a :class:`agile.paper.tasks.Task`,
built once by the loop; its apply function travels in the state. Agile ``a`` and ``b`` get
their own learning rate through :func:`agile.param_labels`. A model with mutable collections
(BatchNorm's ``batch_stats``) keeps them in :class:`TrainState`'s ``model_state``, updated by
every training step. The experiment loop around them is :mod:`agile.paper.train`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from agile.labels import AGILE_LABEL, WEIGHTS_LABEL, init_labels
from agile.paper import data as data_lib
from agile.paper import parallel as parallel_lib
from agile.paper import tasks
from agile.paper.evaluation import Batch, Metrics, losses_and_correct, model_variables


class TrainState(train_state.TrainState):
    """flax's ``TrainState`` plus the model's mutable collections (``{"batch_stats": ...}``).

    Only models with such collections use it; the others keep flax's ``TrainState``, whose
    checkpoints keep their layout."""

    model_state: Any = None


def create_optimizer(config: ml_collections.ConfigDict,
                     task: tasks.Task | None = None) -> optax.GradientTransformation:
    """SGD (optional momentum) or Adam; agile a and b get ``agile_learning_rate``.

    :func:`model_labels` picks exactly the agile layers' a and b. Equal settings give the
    same optimizer object (so compiled steps are reused). ``task``: the config's, if built.
    """
    task = task or tasks.build(config)
    return _cached_optimizer(task, config.optimizer, config.learning_rate,
                             config.agile_learning_rate, config.momentum)


@functools.lru_cache(maxsize=64)
def model_labels(task: tasks.Task) -> Any:
    """``agile.param_labels`` of the task model's parameters: ``"agile"`` or ``"weights"``.

    Traced once per task (equal configs give equal tasks)."""
    return _abstract_init(task)[1]


@functools.lru_cache(maxsize=64)
def _abstract_init(task: tasks.Task) -> tuple[Any, Any]:
    """``(variables shapes, labels)`` of the task's model on one example (one trace, and one
    more for the mutable collections of a model that has them)."""
    params, labels = init_labels(task.model, task.example(), train=False)
    if not task.collections:
        return {"params": params}, labels
    return jax.eval_shape(functools.partial(task.model.init, train=False), jax.random.key(0),
                          task.example()), labels


@functools.lru_cache(maxsize=64)
def _cached_optimizer(
    task: tasks.Task, optimizer: str, learning_rate: float, agile_learning_rate: float,
    momentum: float
) -> optax.GradientTransformation:
    def make(learning_rate: float) -> optax.GradientTransformation:
        if optimizer == "sgd":
            return optax.sgd(learning_rate, momentum=momentum or None)
        return optax.adam(learning_rate)

    transforms = {WEIGHTS_LABEL: make(learning_rate), AGILE_LABEL: make(agile_learning_rate)}
    return optax.multi_transform(transforms, model_labels(task))


# XLA's optimisation level for the parameter init: it runs once per seed, and at the default
# level compiling it took 3-4 s of every run's start-up; at level 1 it compiles in about 1 s
# and gives the same values bit for bit (tested against eager model.init; level 0 does not).
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


@functools.lru_cache(maxsize=64)
def _compiled_init(task: tasks.Task,
                   tx: optax.GradientTransformation) -> Callable[[jax.Array], TrainState]:
    """The fresh train state (``model.init``'s variables, the optimizer's initial state) as
    one compiled call: eagerly, init and ``tx.init`` compile each of their ~100 ops on their
    own (seconds of start-up). The parameters are ``model.init``'s bit for bit."""

    def init(rng: jax.Array) -> TrainState:
        return _fresh_state(task, tx, task.model.init(rng, task.example(), train=False))

    return jax.jit(init, compiler_options=INIT_COMPILER_OPTIONS)


def _fresh_state(task: tasks.Task, tx: optax.GradientTransformation, variables: Any):
    """A step-0 train state; its step strongly typed as a restored checkpoint's is, so fresh
    and resumed runs share one compiled step."""
    params = variables["params"]
    if task.collections:
        state = TrainState.create(apply_fn=task.model.apply, params=params, tx=tx,
                                  model_state={c: variables[c] for c in task.collections})
    else:
        state = train_state.TrainState.create(apply_fn=task.model.apply, params=params, tx=tx)
    return state.replace(step=jnp.zeros((), jnp.int32))


def create_train_state(config: ml_collections.ConfigDict, rng: jax.Array,
                       task: tasks.Task | None = None) -> TrainState:
    """Initialises the model from ``rng`` and wraps it with its optimizer. ``task``: the
    config's, if the caller built it already (the loop does, once)."""
    task = task or tasks.build(config)
    return _compiled_init(task, create_optimizer(config, task))(rng)


def abstract_train_state(config: ml_collections.ConfigDict, task: tasks.Task,
                         place: Callable = lambda s: s[0], count: int = 1) -> TrainState:
    """The shapes and dtypes (``jax.ShapeDtypeStruct``) of ``place([count fresh states])``,
    as :func:`create_train_state` makes them, without computing (``jax.eval_shape``)."""
    variables, tx = _abstract_init(task)[0], create_optimizer(config, task)

    def states(variables):
        return place([_fresh_state(task, tx, variables) for _ in range(count)])

    return jax.eval_shape(states, variables)


def _loss_and_metrics(params, state, batch: Batch) -> tuple[jax.Array, tuple[Metrics, Any]]:
    variables = model_variables(params, getattr(state, "model_state", None))
    model_state = {}
    if len(variables) > 1:  # mutable collections: the step updates them
        logits, model_state = state.apply_fn(variables, batch["inputs"], train=True,
                                             mutable=[k for k in variables if k != "params"])
    else:
        logits = state.apply_fn(variables, batch["inputs"], train=True)
    losses, correct = losses_and_correct(logits, batch["targets"])
    loss = losses.mean()
    return loss, ({"loss": loss, "accuracy": correct.mean()}, model_state)


def train_step(
    state: TrainState, batch: Batch, axis_name: str | None = None
) -> tuple[TrainState, Metrics]:
    """One optimizer step on ``batch``; returns the new state and the batch's metrics.

    With ``axis_name`` (inside pmap/shard_map) gradients and metrics are averaged over that
    axis, so every replica takes the same step; so are the updated batch statistics of a
    model with BatchNorm (each device normalises by its own part of the batch, and the
    running averages are then the mean over devices, as in flax's ImageNet example).
    """
    params = state.params
    if axis_name is not None:
        # Autodiff would sum the gradients of replicated parameters over the axis; marking
        # them device-varying gives each device its own batch's gradient, averaged below.
        params = jax.lax.pcast(params, axis_name, to="varying")
    grad_fn = jax.grad(_loss_and_metrics, has_aux=True)
    grads, (metrics, model_state) = grad_fn(params, state, batch)
    if axis_name is not None:
        grads, metrics, model_state = jax.lax.pmean((grads, metrics, model_state), axis_name)
    state = state.apply_gradients(grads=grads)
    return (state.replace(model_state=model_state) if model_state else state), metrics


jit_train_step = jax.jit(train_step, static_argnames="axis_name",
                         compiler_options=parallel_lib.STEP_COMPILER_OPTIONS)
"""``train_step`` under ``jax.jit``, for users who feed their own batches."""


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


def step_on_device_data(state, accum, inputs, targets, indices, axis_name=None):
    """Gathers the batch from device-resident data and takes one step: one compiled call.

    The per-device step of every layout in ``agile.paper.parallel``; with ``axis_name``
    gradients and metrics are averaged over that device axis.
    """
    batch = data_lib.gather_batch(inputs, targets, indices)
    state, metrics = train_step(state, batch, axis_name)
    return state, _accumulate(accum, metrics, state.step)


compiled_step = jax.jit(step_on_device_data, donate_argnums=(0, 1),
                        compiler_options=parallel_lib.STEP_COMPILER_OPTIONS)
"""``step_on_device_data`` under ``jax.jit``, donating state and accumulator."""


def make_layout(config: ml_collections.ConfigDict) -> parallel_lib.Layout:
    """The layout ``config`` asks for (``agile.paper.parallel``) around this module's step."""
    return parallel_lib.make_layout(config, step_on_device_data, compiled_step)
