"""Evaluation: masked loss/accuracy sums, and whole device-resident splits in one compiled call.

A split is padded to a whole number of fixed-size chunks and put on the device once
(:func:`place_split`); :func:`evaluate` then runs every chunk in one compiled call (a
``lax.map`` over chunks) and adds the per-chunk sums on the host in float64. Models enter
only through ``apply_fn`` (``model.apply``), so this module knows no model.
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

    images: jax.Array
    labels: jax.Array
    mask: jax.Array


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


def place_split(
    images: np.ndarray, labels: np.ndarray, chunk_size: int, put: Callable = jax.device_put
) -> DeviceSplit:
    """Pads a split to whole chunks of ``min(chunk_size, len)`` rows and puts it on the device."""
    n = len(labels)
    chunk = min(chunk_size, n)
    chunks = -(-n // chunk)
    pad = chunks * chunk - n
    mask = np.pad(np.ones(n, np.float32), (0, pad))
    images = np.pad(images, ((0, pad),) + ((0, 0),) * (images.ndim - 1))
    labels = np.pad(labels, (0, pad))
    return DeviceSplit(
        put(images.reshape(chunks, chunk, *images.shape[1:])),
        put(labels.reshape(chunks, chunk)),
        put(mask.reshape(chunks, chunk)),
    )


def _chunk_sums(params, apply_fn: Callable, split: DeviceSplit) -> Metrics:
    """Per-chunk sums ``(chunks,)`` of one model over a whole split."""

    def chunk_sums(chunk):
        images, labels, mask = chunk
        return eval_step(params, apply_fn, {"image": images, "label": labels, "mask": mask})

    return jax.lax.map(chunk_sums, tuple(split))


def _seed_chunk_sums(params, apply_fn: Callable, split: DeviceSplit, batching: str) -> Metrics:
    """Per-seed, per-chunk sums ``(seeds, chunks)`` for parameters stacked over seeds."""
    one_seed = lambda seed_params: _chunk_sums(seed_params, apply_fn, split)  # noqa: E731
    if batching == "vmap":
        return jax.vmap(one_seed)(params)
    return jax.lax.map(one_seed, params)  # vmapped convolutions are grouped: slow on XLA:CPU


_chunk_sums_jit = jax.jit(_chunk_sums, static_argnums=1)
_seed_chunk_sums_jit = jax.jit(_seed_chunk_sums, static_argnums=(1, 3))


def _means(sums: dict[str, np.ndarray]) -> dict[str, float]:
    totals = {key: np.asarray(value, np.float64).sum(-1) for key, value in sums.items()}
    count = totals["count"]
    return {"loss": totals["loss_sum"] / count, "accuracy": totals["correct"] / count}


def evaluate(params, apply_fn: Callable, split: DeviceSplit) -> dict[str, float]:
    """Mean loss and accuracy of one model over a whole placed split: one compiled call."""
    means = _means(jax.device_get(_chunk_sums_jit(params, apply_fn, split)))
    return {key: float(value) for key, value in means.items()}


def evaluate_seeds(
    params, apply_fn: Callable, split: DeviceSplit, batching: str = "scan"
) -> list[dict[str, float]]:
    """:func:`evaluate` for parameters stacked over seeds (leading axis), in one compiled call.

    ``batching="scan"`` evaluates one seed after another (``lax.map``, fastest on XLA:CPU);
    ``"vmap"`` evaluates them as one batched model (what fills a GPU or TPU).
    """
    if batching not in SEED_STRATEGIES:
        raise unknown_value_error("seed batching", batching, SEED_STRATEGIES)
    means = _means(jax.device_get(_seed_chunk_sums_jit(params, apply_fn, split, batching)))
    return [
        {"loss": float(loss), "accuracy": float(accuracy)}
        for loss, accuracy in zip(means["loss"], means["accuracy"], strict=True)
    ]


def compile_for(
    params, apply_fn: Callable, split: DeviceSplit, batching: str | None = None
) -> None:
    """Compiles :func:`evaluate` (or, with ``batching``, :func:`evaluate_seeds`) for these
    parameters and split without running it, so the first evaluation does not pay for it."""
    if batching is None:
        _chunk_sums_jit.lower(params, apply_fn, split).compile()
    else:
        _seed_chunk_sums_jit.lower(params, apply_fn, split, batching).compile()


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
