"""Train-step speed at batch 100: the 12 combinations, a straightforward baseline, unrolled steps.

Every variant is compiled and warmed up first, then timed round-robin (each
round times every variant once), so a load that comes and goes on the machine
hits all of them alike. Reports the median milliseconds per step over rounds,
and writes ``benchmark.json`` and ``benchmark.md`` to ``--output_dir``.

Variants:
  combo_N: ``agile.train.train_step`` (what training runs) under ``jax.jit``
    with the state donated, for Table 1's combination N.
  straightforward: the same math as combo 7 (relu/relu) in plain Flax
    (``nn.Conv`` + ``nn.max_pool``, i.e. ``CNN(implementation="reference")``)
    with a plain ``jax.jit(value_and_grad + optax.adam update)`` step.
  combo_N_gather_kK: K steps per compiled call, each gathering its batch from
    device-resident data by index (a Python loop unrolled inside one jit);
    K = 1 is one call per step, as the training loop does now.

Usage: python scripts/benchmark.py [--rounds=15] [--output_dir=benchmark_results]
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from agile import data as data_lib
from agile import train
from agile.combos import COMBOS
from agile.models import CNN
from agile.config import get_config

_OUTPUT_DIR = flags.DEFINE_string("output_dir", "benchmark_results", "Where results go.")
_ROUNDS = flags.DEFINE_integer("rounds", 15, "Timed rounds; each times every variant once.")
_STEPS_PER_ROUND = flags.DEFINE_integer("steps_per_round", 10, "Steps per variant per round.")
_WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", 10, "Untimed steps per variant first.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Examples per step.")
_UNROLL = flags.DEFINE_multi_integer(
    "unroll", [1, 5, 10], "Steps per call in the unrolled variants."
)
_UNROLL_COMBOS = flags.DEFINE_multi_integer(
    "unroll_combos", [7, 12], "Combinations timed with unrolled steps."
)

AGILE_PAIRS = ((12, 7), (11, 7), (6, 1))  # (agile combination, plain one of the same net).
NUM_EXAMPLES = 1000  # Synthetic device-resident data the gather variants index into.

State = Any
StepRunner = Callable[[State], State]  # Runs steps_per_round steps, returns the new state.


def synthetic_batch(batch_size: int, key: jax.Array) -> dict[str, jax.Array]:
    """A batch in the training loop's format; timing does not depend on the values."""
    image_key, label_key = jax.random.split(key)
    return {
        "image": jax.random.uniform(image_key, (batch_size, *data_lib.IMAGE_SHAPE)),
        "label": jax.random.randint(label_key, (batch_size,), 0, 10, jnp.int32),
    }


def combo_runner(combo: int, batch: dict[str, jax.Array], steps: int) -> tuple[State, StepRunner]:
    """``agile.train.train_step`` for one combination, one jitted call per step."""
    state = train.create_train_state(get_config(combo), jax.random.key(0))
    step = jax.jit(train.train_step, donate_argnums=0)

    def run(state: State) -> State:
        for _ in range(steps):
            state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        return state

    return state, run


def straightforward_runner(batch: dict[str, jax.Array], steps: int) -> tuple[State, StepRunner]:
    """Combination 7's math in plain Flax (nn.Conv + nn.max_pool) with a plain optax step."""
    model = CNN(conv_activation="relu", dense_activation="relu", implementation="reference")
    params = model.init(jax.random.key(0), batch["image"][:1])["params"]
    optimizer = optax.adam(1e-3)

    def loss_fn(params, batch):
        logits = model.apply({"params": params}, batch["image"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def run(state: State) -> State:
        params, opt_state = state
        for _ in range(steps):
            params, opt_state, loss = step(params, opt_state, batch)
        jax.block_until_ready(loss)
        return params, opt_state

    return (params, optimizer.init(params)), run


def unrolled_runner(
    combo: int, unroll: int, batch_size: int, steps: int
) -> tuple[State, StepRunner]:
    """``unroll`` gather-and-step iterations per jitted call, over device-resident data."""
    if steps % unroll:
        raise ValueError(f"--steps_per_round={steps} is not a multiple of unroll={unroll}.")
    data = synthetic_batch(NUM_EXAMPLES, jax.random.key(1))
    order = jax.random.randint(
        jax.random.key(2), (steps // unroll, unroll, batch_size), 0, NUM_EXAMPLES
    )

    def steps_in_one_call(state, indices):
        for step_indices in indices:
            batch = data_lib.gather_batch(data["image"], data["label"], step_indices)
            state, metrics = train.train_step(state, batch)
        return state, metrics

    steps_in_one_call = jax.jit(steps_in_one_call, donate_argnums=0)
    state = train.create_train_state(get_config(combo), jax.random.key(0))

    def run(state: State) -> State:
        for call_indices in order:
            state, metrics = steps_in_one_call(state, call_indices)
        jax.block_until_ready(metrics)
        return state

    return state, run


def time_round_robin(
    runners: dict[str, tuple[State, StepRunner]], rounds: int, warmup_steps: int, steps: int
) -> dict[str, list[float]]:
    """Milliseconds per step of every variant in every round (warm-up rounds excluded)."""
    states = {name: state for name, (state, _) in runners.items()}
    for _ in range(max(1, -(-warmup_steps // steps))):
        for name, (_, run) in runners.items():
            states[name] = run(states[name])
    per_step_ms = {name: [] for name in runners}
    for _ in range(rounds):
        for name, (_, run) in runners.items():
            start = time.perf_counter()
            states[name] = run(states[name])
            per_step_ms[name].append((time.perf_counter() - start) * 1e3 / steps)
    return per_step_ms


def summarise(per_step_ms: dict[str, list[float]]) -> dict[str, Any]:
    """Medians per variant and the ratios the targets are stated in."""
    median = {name: statistics.median(times) for name, times in per_step_ms.items()}
    return {
        "median_ms_per_step": median,
        "p20_ms_per_step": {name: float(np.percentile(t, 20)) for name, t in per_step_ms.items()},
        "agile_over_plain": {
            f"{a}/{p}": median[f"combo_{a}"] / median[f"combo_{p}"] for a, p in AGILE_PAIRS
        },
        "straightforward_over_ours": median["straightforward"] / median["combo_7"],
        "per_round_ms_per_step": per_step_ms,
    }


def markdown(summary: dict[str, Any], batch_size: int, rounds: int) -> str:
    """The summary as a markdown table and the two ratio lines."""
    lines = [
        f"Train step at batch {batch_size}, median (and 20th percentile) of {rounds} "
        f"interleaved rounds, {jax.devices()[0].platform}.",
        "",
        "| variant | activations (conv / dense) | ms/step | p20 ms/step |",
        "|---|---|---:|---:|",
    ]
    for name, ms in summary["median_ms_per_step"].items():
        combo = int(name.split("_")[1]) if name.startswith("combo_") else 7
        acts = " / ".join(COMBOS[combo])
        p20 = summary["p20_ms_per_step"][name]
        lines.append(f"| {name} | {acts} | {ms:.2f} | {p20:.2f} |")
    ratios = ", ".join(f"{k}: {v:.3f}" for k, v in summary["agile_over_plain"].items())
    lines += [
        "",
        f"Agile / plain, same net (target <= 1.10): {ratios}",
        "Straightforward / ours, combo 7 (target >= 4): "
        f"{summary['straightforward_over_ours']:.2f}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    del argv
    steps, batch_size = _STEPS_PER_ROUND.value, _BATCH_SIZE.value
    batch = synthetic_batch(batch_size, jax.random.key(0))
    runners = {f"combo_{n}": combo_runner(n, batch, steps) for n in COMBOS}
    runners["straightforward"] = straightforward_runner(batch, steps)
    for combo in _UNROLL_COMBOS.value:
        for unroll in _UNROLL.value:
            runners[f"combo_{combo}_gather_k{unroll}"] = unrolled_runner(
                combo, unroll, batch_size, steps
            )
    per_step_ms = time_round_robin(runners, _ROUNDS.value, _WARMUP_STEPS.value, steps)
    summary = summarise(per_step_ms)
    output_dir = Path(_OUTPUT_DIR.value)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "benchmark.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown(summary, batch_size, _ROUNDS.value)
    (output_dir / "benchmark.md").write_text(table)
    print(table)



# =============================================================================================
# Scaling out (agile/parallel.py): K seeds in one program, and pmap/shard_map steps on
# 1, 2 and 4 host devices (each device count in a subprocess, since XLA_FLAGS must be set
# before JAX starts). Run with --scaling; writes scaling.json and scaling.md.

_SCALING = flags.DEFINE_bool("scaling", False, "Run only the scaling-out benchmark.")
_SCALING_SEEDS = flags.DEFINE_integer("scaling_seeds", 8, "Seeds stepped in one program.")
_SCALING_COMBO = flags.DEFINE_integer("scaling_combo", 12, "Combination the scaling runs use.")
_SCALING_WORKER = flags.DEFINE_string(
    "scaling_worker", None, "Internal: time this parallel mode on the visible devices."
)


def _layout_steps_per_second(config, rounds: int, steps: int) -> float:
    """Median over rounds of compiled steps per second of ``config``'s layout."""
    from agile import parallel

    layout = parallel.make_layout(config, train._step_on_device_data, train._compiled_step)
    rng = np.random.default_rng(0)
    images = layout.place_data(rng.uniform(0, 1, (NUM_EXAMPLES, 28, 28, 1)).astype(np.float32))
    labels = layout.place_data((np.arange(NUM_EXAMPLES) % 10).astype(np.int32))
    seeds = layout.seeds
    state = layout.place([train.create_train_state(config, jax.random.key(s)) for s in seeds])
    accum = layout.place([train.new_train_accumulator()] * len(seeds))
    active = np.ones(len(seeds), bool)
    shape = (len(seeds), config.batch_size) if layout.batched_seeds else (config.batch_size,)
    batches = [layout.place_indices(rng.integers(0, NUM_EXAMPLES, shape).astype(np.int32))
               for _ in range(steps)]
    rates = []
    for round_index in range(rounds + 1):  # Round 0 compiles and warms up.
        start = time.perf_counter()
        for indices in batches:
            state, accum = layout.step(state, accum, images, labels, indices, active)
        jax.block_until_ready(state)
        if round_index:
            rates.append(steps / (time.perf_counter() - start))
    return statistics.median(rates)


def _scaling_config(**overrides):
    config = get_config(_SCALING_COMBO.value)
    config.batch_size = _BATCH_SIZE.value
    config.update(overrides)
    return config


def scaling_main() -> None:
    """Per-model throughput, one seed at a time vs K seeds in one program; pmap/shard_map steps."""
    import os
    import subprocess
    import sys

    rounds, steps, seeds = _ROUNDS.value, _STEPS_PER_ROUND.value, _SCALING_SEEDS.value
    one = _layout_steps_per_second(_scaling_config(), rounds, steps)
    many = _layout_steps_per_second(_scaling_config(num_seeds=seeds), rounds, steps)
    results: dict[str, Any] = {
        "combo": _SCALING_COMBO.value,
        "implementation": train.create_model(_scaling_config()).implementation,
        "batch_size": _BATCH_SIZE.value,
        "one_seed_models_per_s": one,
        f"{seeds}_seeds_models_per_s": many * seeds,
        "seed_speedup": many * seeds / one,
        "data_parallel_ms_per_step": {},
    }
    for devices in (1, 2, 4):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        for mode in ("pmap", "shard_map"):
            out = subprocess.run(
                [sys.executable, __file__, f"--scaling_worker={mode}", f"--rounds={rounds}",
                 f"--steps_per_round={steps}", f"--batch_size={_BATCH_SIZE.value}",
                 f"--scaling_combo={_SCALING_COMBO.value}"],
                env=env, capture_output=True, text=True, check=True,
            )
            rate = float(out.stdout.strip().splitlines()[-1])
            results["data_parallel_ms_per_step"][f"{mode}_{devices}"] = 1000 / rate
    lines = [
        f"Combo {results['combo']} ({results['implementation']}), batch {results['batch_size']}, "
        f"median of {rounds} rounds of {steps} steps.",
        "",
        "| variant | models/s (steps x models per second) |",
        "|---|---|",
        f"| one seed at a time | {one:.1f} |",
        f"| {seeds} seeds in one program (SeedBatch) | {many * seeds:.1f} |",
        "",
        f"Seed batching speedup per model: {results['seed_speedup']:.2f}x",
        "",
        "| mode | 1 device | 2 devices | 4 devices (ms/step, host CPU devices) |",
        "|---|---|---|---|",
    ]
    for mode in ("pmap", "shard_map"):
        times = [results["data_parallel_ms_per_step"][f"{mode}_{d}"] for d in (1, 2, 4)]
        lines.append(f"| {mode} | " + " | ".join(f"{t:.2f}" for t in times) + " |")
    output_dir = Path(_OUTPUT_DIR.value)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    (output_dir / "scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def entry_point(argv: list[str]) -> None:
    """``main``, or the scaling benchmark (``--scaling``), or one of its workers."""
    if _SCALING_WORKER.value:
        config = _scaling_config(parallel=_SCALING_WORKER.value)
        print(_layout_steps_per_second(config, _ROUNDS.value, _STEPS_PER_ROUND.value))
    elif _SCALING.value:
        scaling_main()
    else:
        main(argv)


if __name__ == "__main__":
    app.run(entry_point)
