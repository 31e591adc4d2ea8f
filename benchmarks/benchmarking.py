"""Interleaved timing for the benchmark scripts: round-robin rounds, medians, 20th percentiles.

A *runner* is ``(state, run)``: ``run(state)`` does a fixed amount of work (say
ten train steps), waits for it to finish, and returns the new state. Timing
every runner once per round, round after round, makes a load that comes and
goes on a shared machine hit all variants alike, so their ratios stay
meaningful even when their absolute times move.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

State = Any
Runner = tuple[State, Callable[[State], State]]


def time_round_robin(
    runners: Mapping[str, Runner], rounds: int, warmup_rounds: int = 1
) -> dict[str, list[float]]:
    """Seconds each runner's ``run`` took in each of ``rounds`` interleaved rounds.

    First ``warmup_rounds`` untimed rounds (compilation, caches), then every
    round calls every runner once, in the mapping's order, threading its state.
    """
    if rounds < 1 or warmup_rounds < 0:
        raise ValueError(f"Need rounds >= 1 and warmup_rounds >= 0, got {rounds}, {warmup_rounds}.")
    states = {name: state for name, (state, _) in runners.items()}
    for _ in range(warmup_rounds):
        for name, (_, run) in runners.items():
            states[name] = run(states[name])
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, (_, run) in runners.items():
            start = time.perf_counter()
            states[name] = run(states[name])
            seconds[name].append(time.perf_counter() - start)
    return seconds


def median_and_p20(samples: Mapping[str, list[float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Per name, the median and the 20th percentile (a quiet-machine figure) of its samples."""
    median = {name: float(statistics.median(values)) for name, values in samples.items()}
    p20 = {name: float(np.percentile(values, 20)) for name, values in samples.items()}
    return median, p20


def per_unit(samples: Mapping[str, list[float]], units: float, scale: float = 1.0) -> dict:
    """Every sample times ``scale`` divided by ``units`` (e.g. seconds per round -> ms per step)."""
    return {name: [value * scale / units for value in values] for name, values in samples.items()}


NUM_EXAMPLES = 1000  # Synthetic device-resident data the steps gather their batches from.


def layout_runner(config, steps: int) -> Runner:
    """``steps`` compiled steps of ``config``'s layout (parallel mode, seeds) per run, on
    ``NUM_EXAMPLES`` synthetic device-resident images; ``data.order_seed`` set: one batch
    order for every seed of a seed batch, as training gives them."""

    from agile.paper import steps as steps_lib

    layout = steps_lib.make_layout(config)
    rng = np.random.default_rng(0)
    images = layout.place_data(rng.uniform(0, 1, (NUM_EXAMPLES, 28, 28, 1)).astype(np.float32))
    labels = layout.place_data((np.arange(NUM_EXAMPLES) % 10).astype(np.int32))
    seeds = layout.seeds
    state = layout.place([steps_lib.create_train_state(config, jax.random.key(s)) for s in seeds])
    accum = layout.place([steps_lib.new_train_accumulator()] * len(seeds))
    active = np.ones(len(seeds), bool)
    shared = config.data.order_seed is not None
    shape = ((len(seeds), config.batch_size) if layout.batched_seeds and not shared
             else (config.batch_size,))
    batches = [layout.place_indices(rng.integers(0, NUM_EXAMPLES, shape).astype(np.int32))
               for _ in range(steps)]

    def run(carry):
        state, accum = carry
        for indices in batches:
            state, accum = layout.step(state, accum, images, labels, indices, active)
        jax.block_until_ready(state)
        return state, accum

    return (state, accum), run
