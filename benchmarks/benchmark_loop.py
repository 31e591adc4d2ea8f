"""End-to-end speed of a converged run: where its wall time goes, and the loop's efficiency.

    MNIST_DIR=../shared/data/mnist python benchmarks/benchmark_loop.py [--combo=12]
        [--output_dir=benchmark_results] [--step_rounds=10] [--train_flags=...]

Runs ``scripts/train.py --config=configs/combo_NN.py`` (seed 0, the defaults: to early
stopping) in a fresh process, as a user would, and splits its wall time into start-up
(Python, imports, flags; then data and model set-up), compilation (the first step),
training steps, evaluation, checkpointing, logging and the rest, from the phases the
run's ``summary.json`` records. The step benchmark (``benchmarks/benchmark.py``) times the
same combination's train step before and after the run; the **loop efficiency** is

    steps x benchmarked step time / loop wall time,

where the loop wall time is the run's time after its first (compiling) step. Writes
``loop.json`` and ``loop.md`` to ``--output_dir``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from absl import flags

from agile.paper import cli
from agile.paper.combos import COMBOS
from agile.paper.workdir import SUMMARY_FILE

REPO_ROOT = Path(__file__).resolve().parents[1]
PHASES = ("setup", "compile", "steps", "evaluation", "checkpoint", "logging")

_COMBO = flags.DEFINE_integer("combo", 12, "Table 1 combination to run (seed 0).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "benchmark_results", "Where results go.")
_STEP_ROUNDS = flags.DEFINE_integer("step_rounds", 10, "Rounds of each step benchmark.")
_STEPS_PER_ROUND = flags.DEFINE_integer("steps_per_round", 10, "Steps per step-benchmark round.")
_TRAIN_FLAGS = flags.DEFINE_list("train_flags", [], "Extra flags for scripts/train.py.")


def _run(args: list[str], what: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True,
                            text=True)
    if result.returncode:
        tail = "\n".join(result.stderr.splitlines()[-5:])
        cli.fail(f"{what} failed (status {result.returncode}): {tail}")
    return result


def step_ms(combo: int, output_dir: Path) -> float:
    """``benchmarks/benchmark.py``'s median milliseconds per step for ``combo``."""
    _run(["benchmarks/benchmark.py", f"--combos={combo}", "--straightforward=false",
          f"--rounds={_STEP_ROUNDS.value}", f"--steps_per_round={_STEPS_PER_ROUND.value}",
          f"--output_dir={output_dir}"], "The step benchmark")
    summary = json.loads((output_dir / "benchmark.json").read_text())
    return summary["median_ms_per_step"][f"combo_{combo}"]


def train_once(combo: int, workdir: Path) -> tuple[float, dict[str, Any]]:
    """Wall seconds of one fresh ``scripts/train.py`` process, and its summary."""
    start = time.perf_counter()
    _run(["scripts/train.py", f"--config=configs/combo_{combo:02d}.py", f"--workdir={workdir}",
          *_TRAIN_FLAGS.value], "The training run")
    wall = time.perf_counter() - start
    return wall, json.loads((workdir / SUMMARY_FILE).read_text())


def breakdown(process_wall: float, summary: dict[str, Any], ms_per_step: float) -> dict:
    """Seconds per phase, the loop's wall time and its efficiency."""
    phases = summary["time_breakdown_s"]
    seconds = {"python_imports_flags": process_wall - summary["wall_time_s"]}
    seconds |= {phase: phases.get(phase, 0.0) for phase in PHASES}
    seconds["rest"] = summary["wall_time_s"] - sum(phases.get(p, 0.0) for p in PHASES)
    loop_wall = summary["wall_time_s"] - seconds["setup"] - seconds["compile"]
    steps = summary["steps"]
    return {
        "process_wall_s": process_wall,
        "seconds": seconds,
        "start_up_and_compile_s": seconds["python_imports_flags"] + seconds["setup"]
        + seconds["compile"],
        "loop_wall_s": loop_wall,
        "steps": steps,
        "benchmarked_ms_per_step": ms_per_step,
        "loop_ms_per_step": 1000 * loop_wall / steps,
        "loop_efficiency": steps * ms_per_step / 1000 / loop_wall,
        "best_step": summary["best_step"],
        "best_test_loss": summary["best_test_loss"],
    }


def markdown(result: dict[str, Any], combo: int) -> str:
    """The breakdown as a table and the efficiency line."""
    lines = [
        f"Combo {combo} ({' / '.join(COMBOS[combo])}), seed 0, default config, one fresh "
        f"process: {result['steps']} steps (best step {result['best_step']}, best test loss "
        f"{result['best_test_loss']:.5f}).",
        "",
        "| phase | seconds |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {value:.2f} |" for name, value in result["seconds"].items()]
    lines += [
        f"| **process wall time** | **{result['process_wall_s']:.2f}** |",
        "",
        f"Start-up + compilation: {result['start_up_and_compile_s']:.2f} s (target <= 10).",
        f"Loop: {result['loop_wall_s']:.2f} s for {result['steps']} steps = "
        f"{result['loop_ms_per_step']:.2f} ms/step; benchmarked step "
        f"{result['benchmarked_ms_per_step']:.2f} ms; loop efficiency "
        f"{result['loop_efficiency']:.3f} (target >= 0.85).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"Unexpected arguments: {' '.join(argv[1:])}")
    combo = _COMBO.value
    if combo not in COMBOS:
        cli.fail(f"--combo takes a Table 1 row 1..12, got {combo}.")
    if not os.environ.get("MNIST_DIR"):
        cli.fail("Set MNIST_DIR to the MNIST IDX files: the benchmark runs on real MNIST.")
    output_dir = Path(_OUTPUT_DIR.value)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        before = step_ms(combo, Path(scratch) / "before")
        process_wall, summary = train_once(combo, Path(scratch) / "run")
        after = step_ms(combo, Path(scratch) / "after")
    result = breakdown(process_wall, summary, statistics.mean([before, after]))
    result["step_ms_before_after"] = [before, after]
    (output_dir / "loop.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result, combo)
    (output_dir / "loop.md").write_text(table)
    print(table)


if __name__ == "__main__":
    cli.run(main)
