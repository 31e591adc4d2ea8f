"""The reproduction study in one command: train every group, export its results, write the report.

    MNIST_DIR=../shared/data/mnist python scripts/study.py --workdir=runs/study
        [--groups=table1,dense_only,...] [--skip_training] [--seeds=N]
        [--overrides=name=value,name=value ...]

1. Trains each group of ``agile.paper.study.GROUPS`` as a sweep in ``WORKDIR/<group>`` (resumable:
   rerun the same command after an interruption; finished trials are skipped).
2. Exports the per-run results the report uses to ``docs/results/`` (small CSVs, committed):
   ``runs.csv`` (one row per group, trial and seed), ``curves.csv`` (validation and test loss
   per evaluation, Table 1 and the dense-only network), ``agile_ranges.csv`` (each agile
   layer's a and b at the end) and ``combo12_seed0_params.npz`` (for the learned-activation
   figures).
3. Writes ``docs/reproduction.md`` and ``docs/figures/study_*.png`` from those files only
   (``scripts/study_report.py``); ``--skip_training`` does just this step.

``--overrides`` sets config fields of every group (smoke tests): ``name=value`` items, given
comma-separated in one flag or in repeated flags; each value is JSON (numbers, true/false,
null, "strings" in double quotes, [lists]), and a comma inside brackets, braces or quotes
does not separate items: ``--overrides=num_epochs=2,model.conv_features=[8,4]``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import flags, logging
from flax import traverse_util

from agile.paper import cli, report, study, sweep
from agile.paper import config as config_lib
from agile.paper import trials as trials_lib
from agile.paper.workdir import Checkpoints, prepare, read_json, read_rows, write_text_atomically

_WORKDIR = flags.DEFINE_string("workdir", "runs/study", "Study folder: one sweep per group.")
_GROUPS = flags.DEFINE_list("groups", [g.name for g in study.GROUPS], "Groups to train.")
_RESULTS_DIR = flags.DEFINE_string("results_dir", "docs/results", "Where the CSVs go.")
_SKIP_TRAINING = flags.DEFINE_bool("skip_training", False, "Only export and report.")
_SEEDS = flags.DEFINE_integer("seeds", None, "Seeds of every group, at least 1 (smoke tests; "
                              "default: each group's own count).")
_OVERRIDES = flags.DEFINE_multi_string(
    "overrides", [], "Config fields of every group (smoke tests): name=value items, "
    "comma-separated or in repeated flags, each value JSON; commas inside [], {} or quotes "
    "stay in the value, e.g. num_epochs=2,data.train_size=200,model.conv_features=[8,4].")
CURVE_GROUPS = ("table1", "dense_only")
PARAMS_TRIAL = ("table1", "combo_12")


def planned_trials(groups: list[study.Group]) -> list[tuple[study.Group, list]]:
    """Each group with its validated trials (every bad flag refused before anything trains)."""
    overrides = study.parse_overrides(_OVERRIDES.value)
    planned = []
    for group in groups:
        trials = group.trials(_SEEDS.value, **overrides)
        for trial in trials:
            config_lib.validate(trial.config)
        planned.append((group, trials))
    return planned


def _csv(rows: list[dict[str, Any]], fields: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _round(value: Any) -> Any:
    return float(f"{value:.6g}") if isinstance(value, float) else value


def export(workdir: Path, results_dir: Path) -> None:
    """Writes the CSVs (and the combo-12 parameters) the report reads, for every group run."""
    runs, curves, ranges = [], [], []
    for group in study.GROUPS:
        for summary_path in sorted((workdir / group.name).glob("*/summary.json")):
            trial_dir = summary_path.parent
            summary = read_json(summary_path)
            for result in trials_lib.seed_results(summary, trial_dir.name):
                runs.append({"group": group.name, **result.row()})
            for seed in trials_lib.seed_summaries(summary):
                for key, stats in seed["agile_ranges"].items():
                    layer, param = key.rsplit("/", 1)
                    ranges.append({"group": group.name, "trial": trial_dir.name,
                                   "seed": seed["seed"], "layer": layer, "param": param,
                                   **{k: _round(v) for k, v in stats.items()}})
            if group.name in CURVE_GROUPS:
                for row in read_rows(trial_dir / "metrics.jsonl"):
                    curves.append({"group": group.name, "trial": trial_dir.name,
                                   "seed": row.get("seed", summary.get("seed")),
                                   "step": row["step"], "val_loss": _round(row.get("val_loss")),
                                   "test_loss": _round(row.get("test_loss"))})
    results_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(results_dir / "runs.csv", _csv(runs, ["group", *trials_lib.CSV_FIELDS]))
    write_text_atomically(results_dir / "curves.csv", _csv(
        curves, ["group", "trial", "seed", "step", "val_loss", "test_loss"]))
    write_text_atomically(results_dir / "agile_ranges.csv", _csv(
        ranges, ["group", "trial", "seed", "layer", "param", "min", "max", "mean"]))
    _export_params(workdir, results_dir)
    write_text_atomically(results_dir / "machine.json", json.dumps(machine(), indent=2) + "\n")


def machine() -> dict[str, Any]:
    """What ran the sweep, for the report: CPU model, logical CPUs, memory, JAX and backend."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "memory_gib": pages / 2**30,
            "jax": jax.__version__, "backend": jax.default_backend()}


def _export_params(workdir: Path, results_dir: Path) -> None:
    """Seed 0's final parameters of Table 1's combo 12, for the learned-activation figures."""
    trial_dir = workdir.joinpath(*PARAMS_TRIAL)
    if not (trial_dir / "checkpoints").is_dir():
        return
    checkpoints = Checkpoints(trial_dir)
    _, arrays, meta = checkpoints.read_latest()
    checkpoints.close()
    params = traverse_util.flatten_dict(arrays["state"]["params"], sep="/")
    stacked = len(meta["histories"]) > 1  # a seed batch: parameters have a leading seed axis
    first_seed = {name: np.asarray(value)[0] if stacked else np.asarray(value)
                  for name, value in params.items()}
    np.savez_compressed(results_dir / "combo12_seed0_params.npz", **first_seed)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"Unexpected arguments: {' '.join(argv[1:])}")
    groups = study.select_groups(_GROUPS.value)
    if _SKIP_TRAINING.value:
        study.parse_overrides(_OVERRIDES.value)  # still refuse a malformed flag
        planned = []
    else:
        planned = planned_trials(groups)
    workdir = prepare(_WORKDIR.value)
    for group, trials in planned:
        group_dir = prepare(workdir / group.name)
        seeds = trials[0].config.num_seeds
        sweep.claim_folder(group_dir, sweep.settings(trials[0].config, seeds))
        logging.info("Group %s: %s", group.name, group.question)
        sweep.run_trials(group_dir, trials)
    export(workdir, Path(_RESULTS_DIR.value))
    report.write_report(Path(_RESULTS_DIR.value), Path(_RESULTS_DIR.value).parent)


if __name__ == "__main__":
    cli.run(main)
