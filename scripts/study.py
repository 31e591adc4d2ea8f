"""The reproduction study in one command: train every group, export its results, write the report.

    MNIST_DIR=../shared/data/mnist python scripts/study.py --workdir=runs/study
        [--groups=table1,dense_only,...] [--skip_training] [--seeds=N]
        [--overrides=name=value,name=value ...]

1. Trains each group of ``agile.paper.study.GROUPS`` as a sweep in ``WORKDIR/<group>`` (resumable:
   rerun the same command after an interruption; finished trials are skipped).
2. Exports the per-run results the report uses to ``docs/results/`` (small CSVs, committed;
   ``agile.paper.report.export``): ``runs.csv`` (one row per group, trial and seed),
   ``curves.csv`` (validation and test loss per evaluation, Table 1 and the dense-only
   network), ``agile_ranges.csv`` (each agile layer's a and b at the end),
   ``combo12_seed0_params.npz`` (for the learned-activation figures) and ``machine.json``.
3. Writes ``docs/reproduction.md`` and ``docs/figures/study_*.png`` from those files only
   (``scripts/study_report.py``); ``--skip_training`` does just this step.

``--overrides`` sets config fields of every group (smoke tests): ``name=value`` items, given
comma-separated in one flag or in repeated flags; each value is JSON (numbers, true/false,
null, "strings" in double quotes, [lists]), and a comma inside brackets, braces or quotes
does not separate items: ``--overrides=num_epochs=2,model.conv_features=[8,4]``.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags, logging

from agile.paper import cli, report, study, sweep
from agile.paper import config as config_lib
from agile.paper.report import export
from agile.paper.workdir import prepare

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
    results_dir = Path(_RESULTS_DIR.value)
    written = export.export(workdir, results_dir, study.GROUPS)
    written += report.write_report(results_dir, results_dir.parent)
    for path in written:
        logging.info("Wrote %s", path)


if __name__ == "__main__":
    cli.run(main)
