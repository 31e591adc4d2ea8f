"""Evaluation: masked loss/accuracy sums, and whole device-resident splits in one compiled call.

A split is padded to a whole number of fixed-size chunks and put on the device once
(:func:`place_split`); :func:`evaluate` then runs every chunk in one compiled call (a
``lax.map`` over chunks) and adds the per-chunk sums on the host in float64. Models enter
only through ``apply_fn`` (``model.apply``) and its ``variables`` (``{"params": ...}``, plus
``batch_stats`` for BatchNorm), so this module knows no model. The loss is defined once, here
(:func:`losses_and_correct`), for training and evaluation alike: softmax cross-entropy with
integer targets, per example for a classifier (targets ``(B,)``) and per position for a
sequence model (targets ``(B, T)``, logits ``(B, T, V)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from agile.errors import unknown_value_error
from agile.labels import AGILE_LABEL
from agile.paper.parallel import SEED_STRATEGIES

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


class DeviceSplit(NamedTuple):
    """A split on the device as ``(chunks, chunk_size, ...)`` arrays; ``mask`` marks real rows."""

    inputs: jax.Array
    targets: jax.Array
    mask: jax.Array


def losses_and_correct(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-target cross-entropy (nats) and whether the top logit is the target: the loss of
    every task, ``targets.shape`` each."""
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return losses, jnp.argmax(logits, -1) == targets


def model_variables(params, model_state=None) -> dict:
    """The variables a model applies with: its parameters and mutable collections, if any."""
    return {"params": params, **(model_state or {})}


def eval_step(variables, apply_fn: Callable, batch: Batch) -> Metrics:
    """Sums of loss and correct predictions over the examples where ``batch["mask"]`` (every
    target of a masked-in example counts: a sequence's positions each count once)."""
    logits = apply_fn(variables, batch["inputs"], train=False)
    losses, correct = losses_and_correct(logits, batch["targets"])
    mask = batch["mask"].reshape(batch["mask"].shape + (1,) * (losses.ndim - 1))
    mask = jnp.broadcast_to(mask, losses.shape)
    return {
        "loss_sum": jnp.sum(losses * mask),
        "correct": jnp.sum(correct * mask),
        "count": jnp.sum(mask),
    }


def place_split(
    inputs: np.ndarray, targets: np.ndarray, chunk_size: int, put: Callable = jax.device_put
) -> DeviceSplit:
    """Pads a split to whole chunks of ``min(chunk_size, len)`` rows and puts it on the device."""
    n = len(targets)
    chunk = min(chunk_size, n)
    chunks = -(-n // chunk)
    pad = chunks * chunk - n
    mask = np.pad(np.ones(n, np.float32), (0, pad))
    inputs = np.pad(inputs, ((0, pad),) + ((0, 0),) * (inputs.ndim - 1))
    targets = np.pad(targets, ((0, pad),) + ((0, 0),) * (targets.ndim - 1))
    return DeviceSplit(
        put(inputs.reshape(chunks, chunk, *inputs.shape[1:])),
        put(targets.reshape(chunks, chunk, *targets.shape[1:])),
        put(mask.reshape(chunks, chunk)),
    )


def _chunk_sums(variables, apply_fn: Callable, split: DeviceSplit) -> Metrics:
    """Per-chunk sums ``(chunks,)`` of one model over a whole split."""

    def chunk_sums(chunk):
        inputs, targets, mask = chunk
        return eval_step(variables, apply_fn, {"inputs": inputs, "targets": targets,
                                               "mask": mask})

    return jax.lax.map(chunk_sums, tuple(split))


def _seed_chunk_sums(variables, apply_fn: Callable, split: DeviceSplit, batching: str) -> Metrics:
    """Per-seed, per-chunk sums ``(seeds, chunks)`` for variables stacked over seeds."""
    one_seed = lambda seed_variables: _chunk_sums(seed_variables, apply_fn, split)  # noqa: E731
    if batching == "vmap":
        return jax.vmap(one_seed)(variables)
    return jax.lax.map(one_seed, variables)  # vmapped convolutions are grouped: slow on XLA:CPU


_chunk_sums_jit = jax.jit(_chunk_sums, static_argnums=1)
_seed_chunk_sums_jit = jax.jit(_seed_chunk_sums, static_argnums=(1, 3))


def _means(sums: dict[str, np.ndarray]) -> dict[str, float]:
    totals = {key: np.asarray(value, np.float64).sum(-1) for key, value in sums.items()}
    count = totals["count"]
    return {"loss": totals["loss_sum"] / count, "accuracy": totals["correct"] / count}


def evaluate(variables, apply_fn: Callable, split: DeviceSplit) -> dict[str, float]:
    """Mean loss and accuracy of one model (``variables``: :func:`model_variables`) over a
    whole placed split: one compiled call."""
    means = _means(jax.device_get(_chunk_sums_jit(variables, apply_fn, split)))
    return {key: float(value) for key, value in means.items()}


def evaluate_seeds(
    variables, apply_fn: Callable, split: DeviceSplit, batching: str = "scan"
) -> list[dict[str, float]]:
    """:func:`evaluate` for variables stacked over seeds (leading axis), in one compiled call.

    ``batching="scan"`` evaluates one seed after another (``lax.map``, fastest on XLA:CPU);
    ``"vmap"`` evaluates them as one batched model (what fills a GPU or TPU).
    """
    if batching not in SEED_STRATEGIES:
        raise unknown_value_error("seed batching", batching, SEED_STRATEGIES)
    means = _means(jax.device_get(_seed_chunk_sums_jit(variables, apply_fn, split, batching)))
    return [
        {"loss": float(loss), "accuracy": float(accuracy)}
        for loss, accuracy in zip(means["loss"], means["accuracy"], strict=True)
    ]


def compile_for(
    variables, apply_fn: Callable, split: DeviceSplit, batching: str | None = None
) -> None:
    """Compiles :func:`evaluate` (or, with ``batching``, :func:`evaluate_seeds`) for these
    variables and split without running it, so the first evaluation does not pay for it."""
    if batching is None:
        _chunk_sums_jit.lower(variables, apply_fn, split).compile()
    else:
        _seed_chunk_sums_jit.lower(variables, apply_fn, split, batching).compile()


def agile_parameter_ranges(params, labels) -> dict[str, dict[str, float]]:
    """Min, max and mean of every agile ``a`` and ``b``, keyed ``layer/a``.

    ``labels`` is :func:`agile.param_labels` of ``params`` (``"agile"`` marks a and b).
    """
    flat_labels = traverse_util.flatten_dict(labels)
    ranges = {}
    for path, value in traverse_util.flatten_dict(params).items():
        if flat_labels[path] == AGILE_LABEL:
            value = np.asarray(value)
            ranges["/".join(path)] = {
                "min": float(value.min()),
                "max": float(value.max()),
                "mean": float(value.mean()),
            }
    return ranges
