"""The training state and the pure, jit-compiled training step of the paper's CNN.

``train_step(state, batch)`` is a pure function of arrays; ``step_on_device_data`` gathers
its batch from device-resident data first (the step every layout of
:mod:`agile.paper.parallel` wraps). Agile ``a`` and ``b`` get their own learning rate through
:func:`agile.param_labels`. The experiment loop around them is :mod:`agile.paper.train`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training.train_state import TrainState

from agile.labels import AGILE_LABEL, WEIGHTS_LABEL, init_labels
from agile.paper import data as data_lib
from agile.paper import parallel as parallel_lib
from agile.paper.config import create_model
from agile.paper.evaluation import Batch, Metrics
from agile.paper.models.paper_cnn import CNN


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """SGD (optional momentum) or Adam; agile a and b get ``agile_learning_rate``.

    :func:`model_labels` picks exactly the agile layers' a and b. Like ``create_model``,
    equal settings give the same optimizer object (so compiled steps are reused).
    """
    return _cached_optimizer(create_model(config), config.optimizer, config.learning_rate,
                             config.agile_learning_rate, config.momentum)


@functools.lru_cache(maxsize=64)
def model_labels(model: CNN) -> Any:
    """``agile.param_labels`` of ``model``'s parameters: ``"agile"`` or ``"weights"`` each.

    Traced once per model (a CNN is hashable; equal configs give the same one)."""
    return _abstract_init(model)[1]


@functools.lru_cache(maxsize=64)
def _abstract_init(model: CNN) -> tuple[Any, Any]:
    """``(params shapes, labels)`` of ``model`` on one MNIST image, from one abstract trace."""
    return init_labels(model, jnp.zeros((1, *data_lib.IMAGE_SHAPE), jnp.float32))


@functools.lru_cache(maxsize=64)
def _cached_optimizer(
    model: CNN, optimizer: str, learning_rate: float, agile_learning_rate: float, momentum: float
) -> optax.GradientTransformation:
    def make(learning_rate: float) -> optax.GradientTransformation:
        if optimizer == "sgd":
            return optax.sgd(learning_rate, momentum=momentum or None)
        return optax.adam(learning_rate)

    transforms = {WEIGHTS_LABEL: make(learning_rate), AGILE_LABEL: make(agile_learning_rate)}
    return optax.multi_transform(transforms, model_labels(model))


# XLA's optimisation level for the parameter init: it runs once per seed, and at the default
# level compiling it took 3-4 s of every run's start-up; at level 1 it compiles in about 1 s
# and gives the same values bit for bit (tested against eager model.init; level 0 does not).
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


@functools.lru_cache(maxsize=64)
def _compiled_init(model: CNN, tx: optax.GradientTransformation,
                   image_shape: tuple[int, ...]) -> Callable[[jax.Array], TrainState]:
    """The fresh train state (``model.init``'s parameters, the optimizer's initial state) as one
    compiled call: eagerly, init and ``tx.init`` compile each of their ~100 ops on their own
    (seconds of start-up). The parameters are ``model.init``'s bit for bit."""
    example = jnp.zeros((1, *image_shape), jnp.float32)

    def init(rng: jax.Array) -> TrainState:
        return _fresh_state(model, tx, model.init(rng, example)["params"])

    return jax.jit(init, compiler_options=INIT_COMPILER_OPTIONS)


def _fresh_state(model: CNN, tx: optax.GradientTransformation, params: Any) -> TrainState:
    """A step-0 TrainState; its step strongly typed as a restored checkpoint's is, so fresh and
    resumed runs share one compiled step."""
    state = TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    return state.replace(step=jnp.zeros((), jnp.int32))


def create_train_state(
    config: ml_collections.ConfigDict, rng: jax.Array, image_shape=data_lib.IMAGE_SHAPE
) -> TrainState:
    """Initialises the model from ``rng`` and wraps it with its optimizer."""
    return _compiled_init(create_model(config), create_optimizer(config), tuple(image_shape))(rng)


def abstract_train_state(config: ml_collections.ConfigDict, place: Callable = lambda s: s[0],
                         count: int = 1, image_shape=data_lib.IMAGE_SHAPE) -> TrainState:
    """The shapes and dtypes (``jax.ShapeDtypeStruct``) of ``place([count fresh states])``,
    as :func:`create_train_state` makes them, without computing (``jax.eval_shape``)."""
    params = _abstract_init(create_model(config))[0]
    if tuple(image_shape) != data_lib.IMAGE_SHAPE:
        example = jnp.zeros((1, *image_shape), jnp.float32)
        params = jax.eval_shape(create_model(config).init, jax.random.key(0), example)["params"]

    def states(params):
        model, tx = create_model(config), create_optimizer(config)
        return place([_fresh_state(model, tx, params) for _ in range(count)])

    return jax.eval_shape(states, params)


def _loss_and_metrics(params, apply_fn: Callable, batch: Batch) -> tuple[jax.Array, Metrics]:
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


def step_on_device_data(state, accum, images, labels, indices, axis_name=None):
    """Gathers the batch from device-resident data and takes one step: one compiled call.

    The per-device step of every layout in ``agile.paper.parallel``; with ``axis_name``
    gradients and metrics are averaged over that device axis.
    """
    batch = data_lib.gather_batch(images, labels, indices)
    state, metrics = train_step(state, batch, axis_name)
    return state, _accumulate(accum, metrics, state.step)


compiled_step = jax.jit(step_on_device_data, donate_argnums=(0, 1),
                        compiler_options=parallel_lib.STEP_COMPILER_OPTIONS)
"""``step_on_device_data`` under ``jax.jit``, donating state and accumulator."""


def make_layout(config: ml_collections.ConfigDict) -> parallel_lib.SingleDevice:
    """The layout ``config`` asks for (``agile.paper.parallel``) around this module's step."""
    return parallel_lib.make_layout(config, step_on_device_data, compiled_step)
