"""Scaling out (agile/paper/parallel.py): K seeds in one program, pmap/shard_map data parallelism.

Times one seed at a time against ``--scaling_seeds`` seeds stepped by one
compiled call (``SeedBatch``), interleaved round-robin in one process
(:mod:`benchmarks/benchmarking.py`); then pmap and shard_map steps on 1, 2 and 4 host
CPU devices, each device count in a subprocess (``XLA_FLAGS`` must be set
before JAX starts). Writes ``scaling.json`` and ``scaling.md`` to ``--output_dir``.

Usage: python benchmarks/benchmark_scaling.py [--rounds=15] [--output_dir=benchmark_results]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import benchmarking
from absl import app, flags

from agile.paper import parallel
from agile.paper.config import get_config
from agile.paper.tasks import create_model

_OUTPUT_DIR = flags.DEFINE_string("output_dir", "benchmark_results", "Where results go.")
_ROUNDS = flags.DEFINE_integer("rounds", 15, "Timed rounds; each times every variant once.")
_STEPS_PER_ROUND = flags.DEFINE_integer("steps_per_round", 10, "Steps per variant per round.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Examples per step.")
_SCALING_SEEDS = flags.DEFINE_integer("scaling_seeds", 8, "Seeds stepped in one program.")
_SCALING_COMBO = flags.DEFINE_integer("scaling_combo", 12, "Combination the scaling runs use.")
_SCALING_DEVICES = flags.DEFINE_list(
    "scaling_devices", ["1", "2", "4"], "Host device counts of the pmap/shard_map runs."
)
_SCALING_WORKER = flags.DEFINE_string(
    "scaling_worker", None, "Internal: time this parallel mode on the visible devices."
)

MODES = ("pmap", "shard_map")


def _scaling_config(**overrides):
    config = get_config(_SCALING_COMBO.value)
    config.batch_size = _BATCH_SIZE.value
    config.update(overrides)
    return config


def _median_steps_per_second(runners: dict[str, benchmarking.Runner]) -> dict[str, float]:
    seconds = benchmarking.time_round_robin(runners, _ROUNDS.value)
    median, _ = benchmarking.median_and_p20(
        benchmarking.per_unit(seconds, _STEPS_PER_ROUND.value)
    )
    return {name: 1 / seconds_per_step for name, seconds_per_step in median.items()}


def _data_parallel_ms_per_step(mode: str, devices: int) -> float:
    """Median ms per step of ``mode`` on ``devices`` host devices, timed in a subprocess."""
    env = {**os.environ, **parallel.host_device_env(devices)}
    out = subprocess.run(
        [sys.executable, __file__, f"--scaling_worker={mode}", f"--rounds={_ROUNDS.value}",
         f"--steps_per_round={_STEPS_PER_ROUND.value}", f"--batch_size={_BATCH_SIZE.value}",
         f"--scaling_combo={_SCALING_COMBO.value}"],
        env=env, capture_output=True, text=True, check=True,
    )
    return 1000 / float(out.stdout.strip().splitlines()[-1])


def scaling_markdown(results: dict[str, Any], rounds: int, steps: int) -> str:
    """The results as two markdown tables and the seed-batching speedup."""
    seeds, devices = results["num_seeds"], results["devices"]
    lines = [
        f"Combo {results['combo']} ({results['implementation']}), batch {results['batch_size']}, "
        f"median of {rounds} interleaved rounds of {steps} steps.",
        "",
        "| variant | models/s (steps x models per second) | per-model speed-up |",
        "|---|---|---|",
        f"| one seed at a time | {results['one_seed_models_per_s']:.1f} | 1.00x |",
    ]
    for batching in parallel.SEED_STRATEGIES:
        lines.append(
            f"| {seeds} seeds in one program, seed_batching={batching} | "
            f"{results['seed_batches'][batching]['models_per_s']:.1f} | "
            f"{results['seed_batches'][batching]['speedup']:.2f}x |")
    lines += [
        "",
        "| mode | " + " | ".join(f"{d} device(s)" for d in devices)
        + " (ms/step, host CPU devices) |",
        "|---|" + "---|" * len(devices),
    ]
    for mode in MODES:
        times = [results["data_parallel_ms_per_step"][f"{mode}_{d}"] for d in devices]
        lines.append(f"| {mode} | " + " | ".join(f"{t:.2f}" for t in times) + " |")
    return "\n".join(lines) + "\n"


def scaling_main() -> None:
    """Per-model throughput, one seed at a time vs K seeds in one program; pmap/shard_map steps."""
    steps, seeds = _STEPS_PER_ROUND.value, _SCALING_SEEDS.value
    devices = [int(d) for d in _SCALING_DEVICES.value]
    rates = _median_steps_per_second({
        "one": benchmarking.layout_runner(_scaling_config(), steps),
        **{batching: benchmarking.layout_runner(
            _scaling_config(num_seeds=seeds, seed_batching=batching), steps)
           for batching in parallel.SEED_STRATEGIES},
    })
    results: dict[str, Any] = {
        "combo": _SCALING_COMBO.value,
        "implementation": create_model(_scaling_config()).implementation,
        "batch_size": _BATCH_SIZE.value,
        "num_seeds": seeds,
        "devices": devices,
        "one_seed_models_per_s": rates["one"],
        "seed_batches": {
            batching: {"models_per_s": rates[batching] * seeds,
                       "speedup": rates[batching] * seeds / rates["one"]}
            for batching in parallel.SEED_STRATEGIES
        },
        "data_parallel_ms_per_step": {
            f"{mode}_{d}": _data_parallel_ms_per_step(mode, d) for d in devices for mode in MODES
        },
    }
    output_dir = Path(_OUTPUT_DIR.value)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    table = scaling_markdown(results, _ROUNDS.value, steps)
    (output_dir / "scaling.md").write_text(table)
    print(table)


def main(argv: list[str]) -> None:
    """The scaling benchmark, or (``--scaling_worker``) one of its data-parallel workers."""
    del argv
    if _SCALING_WORKER.value:
        config = _scaling_config(parallel=_SCALING_WORKER.value)
        runner = benchmarking.layout_runner(config, _STEPS_PER_ROUND.value)
        print(_median_steps_per_second({"worker": runner})["worker"])
    else:
        scaling_main()


if __name__ == "__main__":
    app.run(main)
