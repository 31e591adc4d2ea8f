"""Helpers of the study's tests: interrupting a run and comparing summaries."""

from __future__ import annotations

from agile.paper.summary import TIMING_FIELDS
from agile.paper.workdir import Checkpoints


def strip_times(summary: dict) -> dict:
    """The summary without its timing fields (which differ from run to run), per seed too."""
    summary = {k: v for k, v in summary.items() if k not in TIMING_FIELDS}
    if "seeds" in summary:
        summary["seeds"] = [strip_times(seed) for seed in summary["seeds"]]
    return summary


class Interrupt(Exception):
    """Stands in for Ctrl-C in the interrupted-resume tests."""


def interrupt_after(step: int):
    """An ``after_step`` hook that raises :class:`Interrupt` after ``step``."""
    def after_step(current: int) -> None:
        if current == step:
            raise Interrupt(f"after step {current}")

    return after_step


def train_briefly(model, inputs, targets, steps: int, learning_rate: float = 3e-3):
    """``steps`` full-batch adam steps of a seam model (``model(inputs, train) -> logits``,
    BatchNorm stats in ``batch_stats`` if any) on softmax cross-entropy; returns the final
    variables and the losses before and after (for the "it learns" tests of each model)."""
    import jax
    import optax

    variables = model.init(jax.random.key(0), inputs, train=False)
    params, stats = variables["params"], variables.get("batch_stats", {})
    tx = optax.adam(learning_rate)

    def loss_fn(params, stats):
        logits, updates = model.apply({"params": params, "batch_stats": stats}, inputs,
                                      train=True, mutable=["batch_stats"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()
        return loss, updates.get("batch_stats", {})

    @jax.jit
    def step(params, stats, opt_state):
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), stats, opt_state, loss

    opt_state, losses = tx.init(params), []
    for _ in range(steps):
        params, stats, opt_state, loss = step(params, stats, opt_state)
        losses.append(float(loss))
    final = {"params": params, **({"batch_stats": stats} if stats else {})}
    return final, losses[0], losses[-1]


def latest_checkpoint(workdir) -> tuple[int, dict]:
    """``(step, arrays)`` of a run's newest readable checkpoint, read-only."""
    checkpoints = Checkpoints(workdir, read_only=True)
    try:
        step, arrays, _ = checkpoints.read_latest()
    finally:
        checkpoints.close()
    return step, arrays


def make_tiny_config(synthetic_mnist_dir):
    """A fast config on the synthetic MNIST in ``synthetic_mnist_dir``: 200 train, 100 val,
    100 test, batch 50 (the ``tiny_config`` fixture's, and module-scoped fixtures')."""
    from agile.paper.config import get_config

    config = get_config(12)
    config.num_epochs = 2
    config.batch_size = 50
    config.log_every_steps = 2
    config.checkpoint_every_steps = 2
    config.data.source = "idx"
    config.data.dir = str(synthetic_mnist_dir)
    config.data.train_size = 200
    config.data.val_size = 100
    config.data.test_size = 100
    config.data.eval_batch_size = 64
    return config
