"""agile.paper.evaluation: masked sums, whole placed splits in one call, seed stacks, a/b ranges."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agile.paper import evaluation
from agile.paper.config import get_config
from agile.paper.steps import create_train_state, model_labels
from agile.paper.tasks import build

CONFIG = get_config(12)
STATE = create_train_state(CONFIG, jax.random.key(0))
# Compiled once each: op by op, the model's every op would compile on its own.
APPLY = jax.jit(STATE.apply_fn)
VARIABLES = {"params": STATE.params}  # what the evaluation applies the model with
EVAL_STEP = jax.jit(evaluation.eval_step, static_argnums=1)


def _split(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, n).astype(
        np.int32)


def _direct(params, images, labels):
    """Loss and accuracy computed in one batch, with no chunks or padding."""
    logits = APPLY({"params": params}, images)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return float(loss), float(np.mean(np.argmax(logits, -1) == labels))


def test_eval_step_masks_padding():
    images, labels = _split(6)
    full = EVAL_STEP(VARIABLES, STATE.apply_fn,
                     {"inputs": images, "targets": labels, "mask": np.ones(6)})
    padded = {"inputs": np.concatenate([images, images[:2]]),
              "targets": np.concatenate([labels, labels[:2]]),
              "mask": np.array([1, 1, 1, 1, 1, 1, 0, 0], np.float32)}
    masked = EVAL_STEP(VARIABLES, STATE.apply_fn, padded)
    for key in full:
        np.testing.assert_allclose(masked[key], full[key], rtol=1e-6)


def test_place_split_pads_to_whole_chunks():
    images, labels = _split(25)
    split = evaluation.place_split(images, labels, chunk_size=10)
    assert split.inputs.shape == (3, 10, 28, 28, 1) and split.targets.shape == (3, 10)
    np.testing.assert_array_equal(np.asarray(split.mask).ravel(), [1] * 25 + [0] * 5)
    np.testing.assert_array_equal(np.asarray(split.targets).ravel()[:25], labels)
    small = evaluation.place_split(images, labels, chunk_size=1000)  # one chunk of 25
    assert small.inputs.shape == (1, 25, 28, 28, 1)


def test_evaluate_a_padded_split_equals_one_direct_batch():
    images, labels = _split(25)
    result = evaluation.evaluate(VARIABLES, STATE.apply_fn,
                                 evaluation.place_split(images, labels, chunk_size=10))
    loss, accuracy = _direct(STATE.params, images, labels)
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
    assert result["accuracy"] == pytest.approx(accuracy)


@pytest.mark.slow
@pytest.mark.parametrize("batching", ["scan", "vmap"])
def test_evaluate_seeds_equals_each_seed_alone(batching):
    images, labels = _split(25)
    split = evaluation.place_split(images, labels, chunk_size=10)
    params = [create_train_state(CONFIG, jax.random.key(seed)).params for seed in range(3)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *params)
    together = evaluation.evaluate_seeds({"params": stacked}, STATE.apply_fn, split, batching)
    alone = [evaluation.evaluate({"params": p}, STATE.apply_fn, split) for p in params]
    assert len(together) == 3
    for t, a in zip(together, alone, strict=True):
        assert t["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert t["accuracy"] == pytest.approx(a["accuracy"])


def test_evaluate_seeds_rejects_unknown_batching():
    images, labels = _split(10)
    split = evaluation.place_split(images, labels, chunk_size=10)
    with pytest.raises(ValueError, match=r"Unknown seed batching 'pmap'. Valid: scan, vmap."):
        evaluation.evaluate_seeds(VARIABLES, STATE.apply_fn, split, "pmap")


@pytest.mark.slow
@pytest.mark.parametrize("batching", [None, "scan"])
def test_compile_for_leaves_the_evaluation_nothing_to_compile(batching, caplog):
    """After compile_for, evaluate / evaluate_seeds on those shapes compile nothing more."""
    images, labels = _split(30, seed=3)  # shapes no other test uses
    split = evaluation.place_split(images, labels, chunk_size=15)
    params = VARIABLES
    if batching:
        params = jax.tree.map(lambda leaf: jnp.stack([leaf, leaf]), params)
    name = "_seed_chunk_sums" if batching else "_chunk_sums"
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        evaluation.compile_for(params, STATE.apply_fn, split, batching)
        assert any(f"Compiling jit({name})" in message for message in caplog.messages)
        caplog.clear()
        if batching:
            result = evaluation.evaluate_seeds(params, STATE.apply_fn, split, batching)[0]
        else:
            result = evaluation.evaluate(params, STATE.apply_fn, split)
        assert not [message for message in caplog.messages if "Compiling" in message]
    assert result["loss"] == pytest.approx(_direct(STATE.params, images, labels)[0], rel=1e-5)


def test_agile_parameter_ranges_cover_each_agile_layer():
    params = jax.device_get(STATE.params)
    params["hidden_act"]["a"] = np.array([0.5] * 29 + [2.0], np.float32)
    ranges = evaluation.agile_parameter_ranges(params, model_labels(build(CONFIG)))
    assert set(ranges) == {f"{layer}/{p}" for layer in
                           ("conv_act_0", "conv_act_1", "conv_act_2", "hidden_act") for p in "ab"}
    assert ranges["hidden_act/a"] == pytest.approx({"min": 0.5, "max": 2.0, "mean": 0.55})
    assert ranges["conv_act_0/b"] == {"min": 0.0, "max": 0.0, "mean": 0.0}
