"""The reproduction study in one command: train the groups, export their results, write a report.

    MNIST_DIR=../shared/data/mnist python scripts/study.py --workdir=runs/study [--publish]
        [--groups=table1,dense_only,...] [--skip_training] [--results_dir=DIR]
        [--docs_dir=docs] [--seeds=N|A:B] [--workers=N] [--overrides=name=value,...]

1. Trains each group of ``agile.paper.study.GROUPS`` named in --groups (default: all) as a
   sweep in ``WORKDIR/<group>`` (resumable: rerun the same command after an interruption;
   finished trials are skipped). ``--skip_training`` skips this step.
2. Exports the results of every finished trial in WORKDIR to ``WORKDIR/results/``
   (``agile.paper.report.export``): ``runs.csv`` (one row per group, trial and seed),
   ``curves.csv`` (validation and test loss per evaluation, Table 1 and the dense-only
   network), ``agile_ranges.csv`` (each agile layer's a and b at the end),
   ``combo12_seed0_params.npz`` (for the learned-activation figures) and ``machine.json``
   (this machine, as what timed each exported group's rows).
   ``--results_dir=DIR`` exports to DIR instead, replacing what it holds.
3. Writes a report of them beside the results folder: ``WORKDIR/reproduction.md`` and
   ``WORKDIR/figures/study_*.png`` (with --results_dir, in DIR's parent folder).

Nothing is written into the committed study (``docs/``) unless asked: ``--publish`` merges
the exported results into ``DOCS_DIR/results/`` (``docs/results/`` of this repository by
default) and rewrites ``DOCS_DIR/reproduction.md`` and its figures. A row already there must
agree with this study's in every field but ``wall_time_s``, or nothing is written and the
disagreement is named; rows only there are kept and new rows are added.

``--overrides`` sets config fields of every group (smoke tests): ``name=value`` items, given
comma-separated in one flag or in repeated flags; each value is JSON (numbers, true/false,
null, "strings" in double quotes, [lists]), and a comma inside brackets, braces or quotes
does not separate items: ``--overrides=num_epochs=2,model.conv_features=[8,4]``.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags, logging

from agile.errors import ConfigError
from agile.paper import cli, pool, report, study, sweep
from agile.paper import config as config_lib
from agile.paper.report import export
from agile.paper.workdir import WorkdirError, prepare

REPO_DOCS = Path(__file__).resolve().parents[1] / "docs"

_WORKDIR = flags.DEFINE_string("workdir", "runs/study", "Study folder: one sweep per group.")
_GROUPS = flags.DEFINE_list("groups", [g.name for g in study.GROUPS], "Groups to train.")
_RESULTS_DIR = flags.DEFINE_string(
    "results_dir", None, "Export the results here, replacing what it holds, and write the "
    "report into its parent folder (default: WORKDIR/results, report in WORKDIR). "
    "--results_dir=docs/results replaces the committed study; --publish adds to it.")
_PUBLISH = flags.DEFINE_bool(
    "publish", False, "Also merge the results into DOCS_DIR/results (rows already there must "
    "agree, wall time aside) and rewrite DOCS_DIR/reproduction.md and its figures.")
_DOCS_DIR = flags.DEFINE_string("docs_dir", str(REPO_DOCS), "With --publish: the committed "
                                "study's folder (reproduction.md, figures/, results/).")
_SKIP_TRAINING = flags.DEFINE_bool("skip_training", False, "Only export and report.")
_SEEDS = flags.DEFINE_string(
    "seeds", None, "Seeds of every group: a count N (seeds 0..N-1, at least 1; smoke tests) or "
    "a range A:B (seeds A..B-1, e.g. 10:30 to add seeds to a study); default: each group's "
    "own count. A group trains its seeds in blocks of 10, one trial each.")
_WORKERS = flags.DEFINE_integer(
    "workers", None, "Trials trained at once, each in a process pinned to its own CPUs "
    "(default: one per CPU; 1: one after another in this process); same results either way.")
_OVERRIDES = flags.DEFINE_multi_string(
    "overrides", [], "Config fields of every group (smoke tests): name=value items, "
    "comma-separated or in repeated flags, each value JSON; commas inside [], {} or quotes "
    "stay in the value, e.g. num_epochs=2,data.train_size=200,model.conv_features=[8,4].")


def seed_range(text: str | None) -> int | range | None:
    """``--seeds``: None, a count ``N`` or a range ``A:B``; one line if it is neither."""
    if text is None:
        return None
    first, sep, last = text.partition(":")
    try:
        return range(int(first), int(last)) if sep else int(text)
    except ValueError:
        raise ConfigError(
            f"--seeds takes a count N or a range A:B of seeds, got {text!r}.") from None


def planned_trials(groups: list[study.Group]) -> list[tuple[str, dict, list]]:
    """``(group name, settings, trials)`` of each group, validated (every bad flag refused
    before anything trains)."""
    overrides = study.parse_overrides(_OVERRIDES.value)
    seeds = seed_range(_SEEDS.value)
    planned = []
    for group in groups:
        trials = group.trials(seeds, **overrides)
        for trial in trials:
            config_lib.validate(trial.config)
        planned.append((group.name, group.settings(seeds, **overrides), trials))
    return planned


def train(workdir: Path, planned: list[tuple[str, dict, list]]) -> None:
    """Trains the groups' unfinished trials as one queue, ``--workers`` at a time, each group a
    sweep in ``workdir/<group>`` (finished trials are skipped)."""
    for name, _, _ in planned:
        logging.info("Group %s: %s", name, study.GROUPS_BY_NAME[name].question)
    workers = pool.default_workers() if _WORKERS.value is None else _WORKERS.value
    pool.cpu_groups(workers)  # one line now if the machine cannot run that many
    sweep.run_groups(workdir, planned, workers)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"Unexpected arguments: {' '.join(argv[1:])}")
    if flags.FLAGS["docs_dir"].present and not _PUBLISH.value:
        cli.fail("--docs_dir is used only with --publish (the report goes beside the results).")
    groups = study.select_groups(_GROUPS.value)
    if _SKIP_TRAINING.value:
        study.parse_overrides(_OVERRIDES.value)  # still refuse a malformed flag
        if not Path(_WORKDIR.value).is_dir():
            raise WorkdirError(f"--skip_training: there is no study folder {_WORKDIR.value} to "
                               "export; train it first (leave out --skip_training).")
        workdir = Path(_WORKDIR.value)
    else:
        planned = planned_trials(groups)
        if _PUBLISH.value:  # refused now, not after training: other settings than published
            report.check_publishable(Path(_DOCS_DIR.value), {n: s for n, s, _ in planned})
        workdir = prepare(_WORKDIR.value)
        train(workdir, planned)
    results_dir = Path(_RESULTS_DIR.value) if _RESULTS_DIR.value else workdir / "results"
    written = export.export(workdir, results_dir, study.GROUPS)
    written += report.write_report(results_dir, results_dir.parent)
    if _PUBLISH.value:
        written += report.publish(results_dir, Path(_DOCS_DIR.value))
    for path in written:
        logging.info("Wrote %s", path)


if __name__ == "__main__":
    cli.run(main)
