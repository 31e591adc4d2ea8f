"""A study's trial folders as a results folder: what ``scripts/study.py`` exports.

Reads each finished trial of the groups asked for (``<workdir>/<group>/<trial>/``: its
``summary.json``, and ``metrics.jsonl`` for the groups whose curves the report draws), the
final checkpoint of Table 1's combo 12 (seed 0's parameters, for the learned-activation
figures) and the machine it runs on, and writes them through the records of
:mod:`agile.paper.report.results` (:func:`export`). Imports orbax (it reads checkpoints),
so :mod:`agile.paper.report` does not import this module.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agile.paper import study
from agile.paper import trials as trials_lib
from agile.paper.files import (
    CHECKPOINT_DIR,
    ROWS_FILE,
    SUMMARY_FILE,
    SWEEP_FILE,
    read_json,
    read_rows,
)
from agile.paper.report.results import (
    Curve,
    Machine,
    Range,
    ReportError,
    Results,
    Run,
    write_results,
)

CURVE_GROUPS = ("table1", "dense_only")  # groups whose evaluation curves the report draws
PARAMS_TRIAL = ("table1", "combo_12")  # (group, trial) whose seed-0 parameters are exported
TRANSFORMER_PARAMS_TRIAL = ("transformer", "agile_gelu")  # likewise, the transformer's
SUMMARY_REMEDY = ("delete it and rerun the study without --skip_training: the trial restores "
                  "its last checkpoint and rewrites it")


def rounded(value: Any) -> Any:
    """A float to 6 significant digits (curves and ranges need no more); others unchanged."""
    return float(f"{value:.6g}") if isinstance(value, float) else value


def machine() -> Machine:
    """What runs this process: CPU model, logical CPUs, memory, JAX version and backend."""
    import jax

    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines
                if line.startswith("model name")), platform.processor())
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return Machine(cpu=cpu, logical_cpus=os.cpu_count() or 0, memory_gib=pages / 2**30,
                   jax=jax.__version__, backend=jax.default_backend())


def _curve_rows(group: str, trial_dir: Path, summary: dict[str, Any]) -> list[Curve]:
    """The trial's evaluations from its ``metrics.jsonl`` (one-line error if it is missing)."""
    path = trial_dir / ROWS_FILE
    if not path.is_file():
        raise ReportError(
            f"{path} is missing, and the curves of trial {group}/{trial_dir.name} come from it: "
            f"delete {trial_dir / SUMMARY_FILE} and rerun the same study command without "
            "--skip_training; the trial then restores its final checkpoint and rewrites both "
            "files without training again.")
    return [Curve(group=group, trial=study.Group.trial_of(trial_dir.name),
                  seed=row.get("seed", summary.get("seed")),
                  step=row["step"], val_loss=rounded(row.get("val_loss")),
                  test_loss=rounded(row.get("test_loss"))) for row in read_rows(path)]


def _trial_records(group: str, trial_dir: Path,
                  curves: bool) -> tuple[list[Run], list[Curve], list[Range]]:
    """The runs, curves (if ``curves``) and agile ranges of one finished trial folder."""
    summary = read_json(trial_dir / SUMMARY_FILE, SUMMARY_REMEDY)
    runs = [Run(group=group, **dataclasses.asdict(result))
            for result in trials_lib.seed_results(summary, study.Group.trial_of(trial_dir.name))]
    ranges = []
    for seed in trials_lib.seed_summaries(summary):
        for key, values in seed["agile_ranges"].items():
            layer, param = key.rsplit("/", 1)
            ranges.append(Range(group=group, trial=study.Group.trial_of(trial_dir.name),
                                seed=seed["seed"],
                                layer=layer, param=param, min=rounded(values["min"]),
                                max=rounded(values["max"]), mean=rounded(values["mean"])))
    return runs, _curve_rows(group, trial_dir, summary) if curves else [], ranges


def _seed0_params(trial_dir: Path) -> dict[str, Any] | None:
    """Seed 0's final parameters of a finished trial, flattened ``"layer/param"``.

    None when the trial has not finished (no ``summary.json``) or has no checkpoint.
    """
    import numpy as np
    from flax import traverse_util

    from agile.paper.progress import read_params

    if not (trial_dir / SUMMARY_FILE).is_file() or not (trial_dir / CHECKPOINT_DIR).is_dir():
        return None
    _, params, _ = read_params(trial_dir, "last", 0)
    return {name: np.asarray(value)
            for name, value in traverse_util.flatten_dict(params, sep="/").items()}


def collect(workdir: Path, groups: Sequence[study.Group]) -> Results:
    """The results of every finished trial of ``groups`` in the study folder ``workdir``.

    A group's trials are ``<workdir>/<group>/*/summary.json`` (unfinished trials have
    none; a block of a group's later seeds, ``<trial>.seeds<first>-<last>``, counts as its
    trial); curves are read for :data:`CURVE_GROUPS`, parameters for :data:`PARAMS_TRIAL`
    and :data:`TRANSFORMER_PARAMS_TRIAL`
    if its group is among ``groups``; the machine that timed each group with rows is this one
    (:func:`machine`); each group's settings are its folder's ``sweep.json`` (what trained its
    trials).
    """
    workdir = Path(workdir)
    runs, curves, ranges = [], [], []
    for group in groups:
        for summary_path in sorted((workdir / group.name).glob(f"*/{SUMMARY_FILE}")):
            trial = _trial_records(group.name, summary_path.parent, group.name in CURVE_GROUPS)
            runs += trial[0]
            curves += trial[1]
            ranges += trial[2]
    names = {group.name for group in groups}
    params = {field: _seed0_params(workdir.joinpath(*trial)) if trial[0] in names else None
              for field, trial in (("params", PARAMS_TRIAL),
                                   ("transformer_params", TRANSFORMER_PARAMS_TRIAL))}
    settings, this_machine = {}, machine()
    machines = {name: (this_machine,) for name in dict.fromkeys(run.group for run in runs)}
    for name in sorted(machines):
        path = workdir / name / SWEEP_FILE
        if path.is_file():
            settings[name] = read_json(path, "delete it and rerun the study's command: it "
                                             "records the group's settings again")
    return Results(runs, curves, ranges, machines=machines or None, settings=settings or None,
                   **params)


def export(workdir: Path, results_dir: Path, groups: Sequence[study.Group]) -> list[Path]:
    """Writes the results of ``groups`` in ``workdir`` (:func:`collect`) into ``results_dir``
    (replacing what it holds); returns the paths written."""
    return write_results(collect(workdir, groups), results_dir)
