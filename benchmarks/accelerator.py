"""One command to measure a machine: its devices, the train step, seed batches, data
parallelism, start-up and a short sweep. On a CPU, a GPU or a TPU alike.

    python benchmarks/accelerator.py [--output_dir=benchmark_results] [--quick]

Prints a Markdown report and writes ``accelerator.json`` and ``accelerator.md``:

1. devices: JAX's backend and devices, the CPU, XLA:CPU's thread count;
2. the train step of each ``--combos`` combination (ms per step, one model, batch 100);
3. models per second for ``--seed_counts`` seeds in one program with each seed-batching
   strategy (scan, vmap, map, and vmap with one batch order shared by the seeds);
4. pmap and shard_map over the local devices (ms per step), where there are several;
5. start-up of ``scripts/train.py`` (imports, set-up, compilation) cold (an empty compilation
   cache) and warm (the second run);
6. a short sweep's wall time and models per second, one trial at a time against the default
   parallel workers.

Data: ``MNIST_DIR`` if set, else a synthetic MNIST written to a temporary folder (so it runs
anywhere, offline). ``--quick`` shrinks every part (the CI smoke test uses it). On one GPU the
default settings take a few minutes.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchmarking
import jax
from absl import app, flags

from agile.paper import pool
from agile.paper.combos import COMBOS
from agile.paper.config import get_config
from agile.paper.data.images import write_synthetic_mnist

REPO_ROOT = Path(__file__).resolve().parents[1]
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "benchmark_results", "Where results go.")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny settings everywhere (a smoke test).")
_COMBOS = flags.DEFINE_list("combos", [str(c) for c in COMBOS], "Combinations to time.")
_SEED_COUNTS = flags.DEFINE_list("seed_counts", ["1", "4", "16", "64"], "Seeds per program.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed rounds of each variant.")
_STEPS = flags.DEFINE_integer("steps_per_round", 10, "Steps per variant per round.")
STRATEGIES = ("scan", "vmap", "map", "vmap_shared_order")


def _settings() -> tuple[list[int], list[int], int, int]:
    if _QUICK.value:
        return [7, 12], [1, 2], 1, 2
    return ([int(c) for c in _COMBOS.value], [int(k) for k in _SEED_COUNTS.value],
            _ROUNDS.value, _STEPS.value)


def _rates(runners: dict[str, benchmarking.Runner], rounds: int, steps: int) -> dict:
    seconds = benchmarking.time_round_robin(runners, rounds)
    median, _ = benchmarking.median_and_p20(benchmarking.per_unit(seconds, steps))
    return median  # seconds per step


def devices() -> dict[str, Any]:
    """What JAX runs on here."""
    cpu = platform.processor()
    info = Path("/proc/cpuinfo")
    if info.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
            "device_kind": jax.devices()[0].device_kind, "cpu": cpu,
            "cpus": len(pool.available_cpus()), "xla_cpu_threads": pool.xla_threads(),
            "jax": jax.__version__}


def step_times(combos: list[int], rounds: int, steps: int) -> dict[str, float]:
    """Median ms per step of one model of each combination."""
    runners = {f"combo_{c:02d}": benchmarking.layout_runner(get_config(c), steps)
               for c in combos}
    return {name: 1000 * s for name, s in _rates(runners, rounds, steps).items()}


def _seed_config(seeds: int, strategy: str):
    config = get_config(12)
    if seeds > 1:
        config.num_seeds = seeds
        config.seed_batching = "vmap" if strategy == "vmap_shared_order" else strategy
        config.seed_chunk_size = 4 if strategy == "map" else 1
    if strategy == "vmap_shared_order":
        config.data.order_seed = 0
    return config


def seed_batches(counts: list[int], rounds: int, steps: int) -> dict[str, dict[str, float]]:
    """Models per second (steps x models / s) of combo 12 for each seed count and strategy
    (map steps 4 seeds at a time)."""
    out: dict[str, dict[str, float]] = {}
    for strategy in STRATEGIES:
        runners = {str(k): benchmarking.layout_runner(_seed_config(k, strategy), steps)
                   for k in counts if k > 1 or strategy == "scan"}
        rates = _rates(runners, rounds, steps)
        out[strategy] = {k: int(k) / seconds for k, seconds in rates.items()}
    return out


def data_parallel(rounds: int, steps: int) -> dict[str, float]:
    """Median ms per step of pmap and shard_map over every local device (several needed)."""
    if jax.local_device_count() < 2:
        return {}
    batch = 100 - 100 % jax.local_device_count()
    runners = {}
    for mode in ("pmap", "shard_map"):
        config = get_config(12)
        config.parallel, config.batch_size = mode, batch
        runners[mode] = benchmarking.layout_runner(config, steps)
    return {name: 1000 * s for name, s in _rates(runners, rounds, steps).items()}


def _run(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *command], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"error: {' '.join(command[:1])} failed: "
                         f"{result.stderr.strip().splitlines()[-1]}")
    return time.perf_counter() - start


def start_up(data_dir: str, quick: bool) -> dict[str, dict[str, float]]:
    """``scripts/train.py`` twice on one fresh compilation cache: cold, then warm."""
    out = {}
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "MNIST_DIR": data_dir}
        for name in ("cold", "warm"):
            workdir = Path(scratch) / name
            flags_ = ["--config=configs/combo_12.py", f"--workdir={workdir}",
                      "--config.num_epochs=1", f"--compilation_cache_dir={scratch}/cache"]
            if quick:
                flags_ += ["--config.data.train_size=200", "--config.data.val_size=100",
                           "--config.data.test_size=100", "--config.batch_size=50"]
            process = _run(["scripts/train.py", *flags_], env)
            summary = json.loads((workdir / "summary.json").read_text())
            phases = summary["time_breakdown_s"]
            before = process - summary["wall_time_s"]
            out[name] = {"process_s": process, "imports_and_flags_s": before,
                         "setup_s": phases.get("setup", 0.0),
                         "compile_s": phases.get("compile", 0.0),
                         "start_up_and_compile_s": before + phases.get("setup", 0.0)
                         + phases.get("compile", 0.0)}
    return out


def sweep(data_dir: str, quick: bool) -> dict[str, dict[str, float]]:
    """A short sweep (combos 7, 11, 12 and 10; 2 seeds; 2 epochs) one trial at a time and
    with the default workers: wall time and models per second. An untimed run first fills the
    compilation cache, so both timed runs find it warm (else the first pays for compiling)."""
    combos, seeds = ("7,12", 2) if quick else ("7,11,12,10", 2)
    out = {}
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "MNIST_DIR": data_dir}
        runs = (("warm_up", 1), ("one_at_a_time", 1), ("parallel", pool.default_workers()))
        for name, workers in runs:
            command = ["scripts/sweep.py", f"--workdir={scratch}/{name}", f"--seeds={seeds}",
                       f"--combos={combos}", f"--workers={workers}", "--config.num_epochs=2",
                       f"--compilation_cache_dir={scratch}/cache"]
            if quick:
                command += ["--config.data.train_size=200", "--config.data.val_size=100",
                            "--config.data.test_size=100", "--config.batch_size=50"]
            wall = _run(command, env)
            models = len(combos.split(",")) * seeds
            if name != "warm_up":
                out[name] = {"workers": workers, "wall_s": wall, "models_per_s": models / wall}
    out["speedup"] = out["one_at_a_time"]["wall_s"] / out["parallel"]["wall_s"]
    return out


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    d = results["devices"]
    lines = [f"Backend {d['backend']} ({d['device_kind']}, {len(d['devices'])} device(s)); "
             f"CPU {d['cpu']}, {d['cpus']} CPUs, XLA:CPU threads {d['xla_cpu_threads']}; "
             f"JAX {d['jax']}.", "", "| combination | ms per step |", "|---|---:|"]
    lines += [f"| {name} | {ms:.2f} |" for name, ms in results["step_ms"].items()]
    counts = sorted({k for rates in results["seed_batches"].values() for k in rates}, key=int)
    lines += ["", "Models per second (combo 12, batch 100) by seeds in one program:", "",
              "| strategy | " + " | ".join(f"{k} seeds" for k in counts) + " |",
              "|---|" + "---:|" * len(counts)]
    for strategy, rates in results["seed_batches"].items():
        cells = [f"{rates[k]:.0f}" if k in rates else "-" for k in counts]
        lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
    if results["data_parallel_ms"]:
        lines += ["", "| data parallel (all local devices) | ms per step |", "|---|---:|"]
        lines += [f"| {m} | {ms:.2f} |" for m, ms in results["data_parallel_ms"].items()]
    lines += ["", "| start-up of scripts/train.py | imports, flags | set-up | compilation | "
              "total |", "|---|---:|---:|---:|---:|"]
    for name, s in results["start_up"].items():
        lines.append(f"| {name} | {s['imports_and_flags_s']:.2f} s | {s['setup_s']:.2f} s | "
                     f"{s['compile_s']:.2f} s | {s['start_up_and_compile_s']:.2f} s |")
    sw = results["sweep"]
    lines += ["", "| short sweep | workers | wall | models/s |", "|---|---:|---:|---:|"]
    for name in ("one_at_a_time", "parallel"):
        lines.append(f"| {name} | {sw[name]['workers']} | {sw[name]['wall_s']:.1f} s | "
                     f"{sw[name]['models_per_s']:.3f} |")
    lines.append(f"\nParallel / one at a time: {sw['speedup']:.2f}x the models per second.")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    del argv
    combos, counts, rounds, steps = _settings()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        sizes = (600, 200) if _QUICK.value else (6000, 10_000)  # what the runs below need
        data_dir = os.environ.get("MNIST_DIR") or str(write_synthetic_mnist(Path(scratch),
                                                                             *sizes))
        results = {"devices": devices(), "step_ms": step_times(combos, rounds, steps),
                   "seed_batches": seed_batches(counts, rounds, steps),
                   "data_parallel_ms": data_parallel(rounds, steps),
                   "start_up": start_up(data_dir, _QUICK.value),
                   "sweep": sweep(data_dir, _QUICK.value)}
    results["benchmark_wall_s"] = time.perf_counter() - started
    output = Path(_OUTPUT_DIR.value)
    output.mkdir(parents=True, exist_ok=True)
    (output / "accelerator.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (output / "accelerator.md").write_text(table)
    print(table)


if __name__ == "__main__":
    app.run(main)
