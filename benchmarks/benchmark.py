"""Train-step speed at batch 100: the 12 combinations and a straightforward Flax baseline.

Every variant is compiled and warmed up first, then timed round-robin (each
round times every variant once, :mod:`benchmarks/benchmarking.py`), so a load that
comes and goes on the machine hits all of them alike. Reports the median (and
20th percentile) milliseconds per step over rounds, the agile / plain ratios
and the targets, and writes ``benchmark.json`` and ``benchmark.md`` to
``--output_dir``.

Variants:
  combo_N: ``agile.paper.steps.train_step`` (what training runs) under ``jax.jit``
    with the state donated, for Table 1's combination N.
  straightforward: the same math as combo 7 (relu/relu) in plain Flax
    (``nn.Conv`` + ``nn.max_pool``, i.e. ``CNN(implementation="reference")``)
    with a plain ``jax.jit(value_and_grad + optax.adam update)`` step.
  base_combo_N (with ``--baseline_rev=REV``): the same ``train_step`` and
    optimizer, but the CNN of ``agile/paper/models/paper_cnn.py`` and ``ops.py`` as they
    were at git revision REV, timed in the same rounds (before/after figures).

Usage: python benchmarks/benchmark.py [--rounds=15] [--output_dir=benchmark_results]
       [--baseline_rev=9e0818d --combos=7,12,11,1,6]
The seed-batch and pmap/shard_map timings are benchmarks/benchmark_scaling.py.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import benchmarking
import jax
import jax.numpy as jnp
import optax
from absl import app, flags

from agile.paper import parallel
from agile.paper import steps as steps_lib
from agile.paper.combos import COMBOS
from agile.paper.config import get_config
from agile.paper.data import images as data_lib
from agile.paper.models.paper_cnn import CNN
from agile.paper.tasks import create_model

_OUTPUT_DIR = flags.DEFINE_string("output_dir", "benchmark_results", "Where results go.")
_ROUNDS = flags.DEFINE_integer("rounds", 15, "Timed rounds; each times every variant once.")
_STEPS_PER_ROUND = flags.DEFINE_integer("steps_per_round", 10, "Steps per variant per round.")
_WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", 10, "Untimed steps per variant first.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 100, "Examples per step.")
_COMBOS = flags.DEFINE_list("combos", [str(n) for n in COMBOS], "Combinations to time.")
_STRAIGHTFORWARD = flags.DEFINE_bool("straightforward", True, "Also time the Flax baseline.")
_BASELINE_REV = flags.DEFINE_string(
    "baseline_rev", None, "Also time the combos with the CNN (models.py, ops.py) of this git rev.")

AGILE_PAIRS = ((12, 7), (11, 7), (6, 1))  # (agile combination, plain one of the same net).
TARGET_MS = {7: 4.5, 12: 6.5}  # Issue 10: median ms per step on the project's 2-vCPU machine.
TARGET_AGILE_OVER_PLAIN = 1.25
REPO_ROOT = Path(__file__).resolve().parents[1]


def synthetic_batch(batch_size: int, key: jax.Array) -> dict[str, jax.Array]:
    """A batch in the training loop's format; timing does not depend on the values."""
    image_key, label_key = jax.random.split(key)
    return {
        "inputs": jax.random.uniform(image_key, (batch_size, *data_lib.IMAGE_SHAPE)),
        "targets": jax.random.randint(label_key, (batch_size,), 0, 10, jnp.int32),
    }


def _stepper(step: Callable, batch: dict[str, jax.Array], steps: int) -> Callable:
    """``steps`` calls of the compiled ``step`` on ``batch``, waited for."""

    def run(state):
        for _ in range(steps):
            state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        return state

    return run


def combo_runner(combo: int, batch: dict[str, jax.Array], steps: int) -> benchmarking.Runner:
    """``agile.paper.steps.train_step`` for one combination, one jitted call per step."""
    state = steps_lib.create_train_state(get_config(combo), jax.random.key(0))
    step = jax.jit(steps_lib.train_step, donate_argnums=0,
                   compiler_options=parallel.STEP_COMPILER_OPTIONS)  # as training compiles it
    return state, _stepper(step, batch, steps)


def _source_at(rev: str, *paths: str) -> str:
    """The text of the first of ``paths`` that exists at git revision ``rev``."""
    for path in paths:
        shown = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO_ROOT,
                               capture_output=True, text=True)
        if shown.returncode == 0:
            return shown.stdout
    raise SystemExit(f"error: none of {', '.join(paths)} exists at revision {rev}.")


def baseline_cnn_class(rev: str) -> type:
    """The ``CNN`` class of ``models.py`` at git revision ``rev``, with that revision's ops.

    Both files are written to a temporary folder and imported as modules of their
    own (``baseline_ops``, ``baseline_models``) beside the installed ``agile``.
    """
    folder = Path(tempfile.mkdtemp(prefix="agile_baseline_"))
    homes = {"ops": ("agile/paper/models/ops.py", "agile/paper/ops.py", "agile/ops.py"),
             "models": ("agile/paper/models/paper_cnn.py", "agile/paper/models.py",
                        "agile/models.py")}
    for name, paths in homes.items():
        source = _source_at(rev, *paths)
        for package in ("agile.paper.models", "agile.paper", "agile"):  # homes over time
            source = source.replace(f"from {package}.ops import", "from baseline_ops import")
        (folder / f"baseline_{name}.py").write_text(source)
    sys.path.insert(0, str(folder))
    return importlib.import_module("baseline_models").CNN


def baseline_runner(
    cnn_class: type, combo: int, batch: dict[str, jax.Array], steps: int
) -> benchmarking.Runner:
    """``combo_runner`` with the model built from ``cnn_class`` (same fields, same optimizer)."""
    config = get_config(combo)
    model = create_model(config)
    fields = {f.name for f in dataclasses.fields(cnn_class)} - {"parent", "name"}
    model = cnn_class(**{name: getattr(model, name) for name in fields if hasattr(model, name)})
    params = model.init(jax.random.key(0), batch["inputs"][:1])["params"]
    state = steps_lib.TrainState.create(
        apply_fn=model.apply, params=params, tx=steps_lib.create_optimizer(config))
    step = jax.jit(steps_lib.train_step, donate_argnums=0)  # as that revision's training did
    return state, _stepper(step, batch, steps)


def straightforward_runner(batch: dict[str, jax.Array], steps: int) -> benchmarking.Runner:
    """Combination 7's math in plain Flax (nn.Conv + nn.max_pool) with a plain optax step."""
    model = CNN(conv_activation="relu", dense_activation="relu", implementation="reference")
    params = model.init(jax.random.key(0), batch["inputs"][:1])["params"]
    optimizer = optax.adam(1e-3)

    def loss_fn(params, batch):
        logits = model.apply({"params": params}, batch["inputs"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).mean()

    @jax.jit
    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def run(state):
        params, opt_state = state
        for _ in range(steps):
            params, opt_state, loss = step(params, opt_state, batch)
        jax.block_until_ready(loss)
        return params, opt_state

    return (params, optimizer.init(params)), run


def summarise(per_step_ms: dict[str, list[float]]) -> dict[str, Any]:
    """Medians and p20 per variant, the agile / plain ratios, and each target's verdict."""
    median, p20 = benchmarking.median_and_p20(per_step_ms)
    ratios = {
        f"{a}/{p}": median[f"combo_{a}"] / median[f"combo_{p}"]
        for a, p in AGILE_PAIRS
        if f"combo_{a}" in median and f"combo_{p}" in median
    }
    targets = {
        f"combo_{n} <= {ms} ms": median[f"combo_{n}"] <= ms
        for n, ms in TARGET_MS.items()
        if f"combo_{n}" in median
    }
    targets |= {f"{pair} <= {TARGET_AGILE_OVER_PLAIN}": r <= TARGET_AGILE_OVER_PLAIN
                for pair, r in ratios.items()}
    summary = {"median_ms_per_step": median, "p20_ms_per_step": p20,
               "agile_over_plain": ratios, "targets_met": targets}
    if "straightforward" in median and "combo_7" in median:
        summary["straightforward_over_ours"] = median["straightforward"] / median["combo_7"]
    baseline = {name: median[name] / median[name[5:]] for name in median
                if name.startswith("base_") and name[5:] in median}
    if baseline:
        summary["baseline_over_ours"] = baseline
    return summary | {"per_round_ms_per_step": per_step_ms}


def markdown(summary: dict[str, Any], batch_size: int, rounds: int) -> str:
    """The summary as a markdown table, the ratio lines and the targets."""
    lines = [
        f"Train step at batch {batch_size}, median (and 20th percentile) of {rounds} "
        f"interleaved rounds, {jax.devices()[0].platform}.",
        "",
        "| variant | activations (conv / dense) | ms/step | p20 ms/step |",
        "|---|---|---:|---:|",
    ]
    for name, ms in summary["median_ms_per_step"].items():
        combo = int(name.split("_")[-1]) if "combo_" in name else 7
        acts = " / ".join(COMBOS[combo])
        p20 = summary["p20_ms_per_step"][name]
        lines.append(f"| {name} | {acts} | {ms:.2f} | {p20:.2f} |")
    ratios = ", ".join(f"{k}: {v:.3f}" for k, v in summary["agile_over_plain"].items())
    lines += ["", f"Agile / plain, same net (target <= {TARGET_AGILE_OVER_PLAIN}): {ratios}"]
    if "straightforward_over_ours" in summary:
        lines.append(f"Straightforward / ours, combo 7: {summary['straightforward_over_ours']:.2f}")
    if "baseline_over_ours" in summary:
        speedups = ", ".join(f"{name[5:]}: {ratio:.2f}x"
                             for name, ratio in summary["baseline_over_ours"].items())
        lines.append(f"Baseline revision / ours: {speedups}")
    verdicts = ", ".join(f"{k}: {'met' if ok else 'missed'}"
                         for k, ok in summary["targets_met"].items())
    lines.append(f"Targets: {verdicts}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    del argv
    steps, batch_size = _STEPS_PER_ROUND.value, _BATCH_SIZE.value
    combos = [int(n) for n in _COMBOS.value]
    unknown = sorted(set(combos) - set(COMBOS))
    if unknown:
        raise app.UsageError(f"--combos: unknown combinations {unknown}; Table 1 has 1..12.")
    batch = synthetic_batch(batch_size, jax.random.key(0))
    runners = {f"combo_{n}": combo_runner(n, batch, steps) for n in combos}
    if _STRAIGHTFORWARD.value:
        runners["straightforward"] = straightforward_runner(batch, steps)
    if _BASELINE_REV.value:
        cnn_class = baseline_cnn_class(_BASELINE_REV.value)
        runners |= {f"base_combo_{n}": baseline_runner(cnn_class, n, batch, steps) for n in combos}
    warmup_rounds = max(1, -(-_WARMUP_STEPS.value // steps))
    seconds = benchmarking.time_round_robin(runners, _ROUNDS.value, warmup_rounds)
    summary = summarise(benchmarking.per_unit(seconds, steps, scale=1e3))
    output_dir = Path(_OUTPUT_DIR.value)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "benchmark.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown(summary, batch_size, _ROUNDS.value)
    (output_dir / "benchmark.md").write_text(table)
    print(table)


if __name__ == "__main__":
    app.run(main)
