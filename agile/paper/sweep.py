"""A sweep: named trials (one config each, usually a seed batch) in one folder, and its tables.

A sweep folder holds one sub-folder per trial (a normal workdir of ``train_and_evaluate``),
``sweep.json`` with the settings every trial shares (so a rerun with other settings is
refused instead of mixing two experiments in one table), and the tables built from every
finished trial's ``summary.json``: ``results.csv`` (one row per trial and seed) and
``results.md`` (mean ± std and a 95% confidence interval per trial, beside the paper's
Table 1 loss). Both sweep backends (in-process and Ray Tune) use these functions.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
from absl import logging

from agile.errors import UserError
from agile.paper.combos import PAPER_TABLE1
from agile.paper.config import get_config
from agile.paper.files import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    ROWS_FILE,
    SUMMARY_FILE,
    SWEEP_FILE,
    config_differences,
    read_json,
    write_text_atomically,
)
from agile.paper.stats import mean_std_ci
from agile.paper.train import train_and_evaluate
from agile.paper.trials import (
    CSV_FIELDS,
    Trial,
    load_trial_hook,
    seed_results,
    settings,
    trial_context,
)
from agile.paper.workdir import check_path, prepare

SETTINGS_FILE = SWEEP_FILE  # sweep.json, named in agile.paper.files
RESULTS_CSV, RESULTS_MD = "results.csv", "results.md"  # the tables, over every finished trial
TABLE_FIELDS = (
    ("best_test_loss", "best test loss"),
    ("final_test_loss", "final test loss"),
    ("final_test_accuracy", "final test accuracy"),
    ("best_step", "best step"),
)


def write_csv(rows: Sequence[dict[str, Any]], fields: Sequence[str] = CSV_FIELDS) -> str:
    """``rows`` as CSV text with a ``fields`` header (None as an empty cell)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _cell(values: Sequence[float], digits: int) -> str:
    mean, std, half_width = mean_std_ci(values)
    if math.isnan(half_width):
        return f"{mean:.{digits}f}"
    return (f"{mean:.{digits}f} ± {std:.{digits}f} "
            f"[{mean - half_width:.{digits}f}, {mean + half_width:.{digits}f}]")


def results_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table per trial: mean ± std [95% CI] of each ``TABLE_FIELDS`` entry."""
    trials = list(dict.fromkeys(row["trial"] for row in rows))
    header = ["trial", "conv / dense", "seeds", *(label for _, label in TABLE_FIELDS),
              "paper test loss"]
    lines = [
        "Mean ± sample std [95% confidence interval, Student's t] over seeds.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for trial in trials:
        trial_rows = [row for row in rows if row["trial"] == trial]
        first = trial_rows[0]
        cells = [trial, f"{first['conv_activation']} / {first['dense_activation']}",
                 str(len(trial_rows))]
        for field, _ in TABLE_FIELDS:
            values = [row[field] for row in trial_rows if row[field] not in (None, "")]
            digits = 0 if field == "best_step" else 4
            cells.append(_cell([float(v) for v in values], digits) if values else "-")
        paper = PAPER_TABLE1.get(int(first["combo"])) if first["combo"] not in (None, "") else None
        cells.append(f"{paper[0]:.5f}" if paper else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Trials and the sweep folder.


class SweepError(UserError, RuntimeError):
    """A sweep folder or trial list that cannot be used as asked."""


RUN_FILES = (CONFIG_FILE, CHECKPOINT_DIR, ROWS_FILE, SUMMARY_FILE)  # what marks a run's folder


def check_folder(workdir: Path, sweep_settings: dict[str, Any]) -> bool:
    """Refuses (one line, writing nothing) a folder this sweep cannot claim: a training run's
    folder, or a sweep folder with other settings; returns whether ``sweep.json`` is there.

    A config field the saved settings lack is no difference while this sweep has it at its
    default value (code that added the field reproduces the folder's sweep).
    """
    workdir = check_path(workdir)
    run_files = [name for name in RUN_FILES if (workdir / name).exists()]
    if run_files:
        raise SweepError(
            f"{workdir} is a training run's folder (it has {', '.join(run_files)}): a sweep there "
            "would mix its trials with the run's files. Use a new --workdir for the sweep.")
    path = workdir / SETTINGS_FILE
    if not path.exists():
        return False
    saved = read_json(path, f"delete it to let this sweep claim {workdir} (its trials are "
                            "kept) or use a new --workdir")
    defaults = settings(get_config(), sweep_settings.get("seeds", 1))
    differences = config_differences(saved, sweep_settings, defaults)
    if differences:
        raise SweepError(
            f"{workdir} holds a sweep with other settings ({', '.join(differences)}); its "
            "tables would mix two experiments. Use a new --workdir or the same settings."
        )
    return True


def claim_folder(workdir: Path, sweep_settings: dict[str, Any]) -> None:
    """Records the sweep's settings in ``sweep.json`` (creating the folder), or refuses a
    folder :func:`check_folder` refuses."""
    if not check_folder(workdir, sweep_settings):
        write_text_atomically(prepare(workdir) / SETTINGS_FILE,
                              json.dumps(sweep_settings, indent=2, sort_keys=True) + "\n")


_SUMMARY_REMEDY = "delete it and rerun: the trial restores its last checkpoint and rewrites it"


def finished_summary(workdir: Path, trial: Trial) -> dict[str, Any] | None:
    """The trial's ``summary.json`` if it finished, else None."""
    path = Path(workdir) / trial.name / SUMMARY_FILE
    return read_json(path, _SUMMARY_REMEDY) if path.exists() else None


def write_tables(workdir: Path) -> list[dict[str, Any]]:
    """Rebuilds ``results.csv`` and ``results.md`` from every finished trial in the folder."""
    rows = []
    for summary_path in sorted(Path(workdir).glob(f"*/{SUMMARY_FILE}")):
        summary = read_json(summary_path, _SUMMARY_REMEDY)
        rows.extend(r.row() for r in seed_results(summary, summary_path.parent.name))
    write_text_atomically(Path(workdir) / RESULTS_CSV, write_csv(rows))
    write_text_atomically(Path(workdir) / RESULTS_MD, results_markdown(rows))
    return rows


def run_trials(workdir: Path, trials: Sequence[Trial], workers: int = 1,
               trial_hook: str | None = None) -> None:
    """Trains the unfinished trials (the in-process backend): one after another in this
    process (``workers=1``), or ``workers`` at a time in worker processes, each pinned to its
    own CPUs (:mod:`agile.paper.pool`; same results bit for bit).

    Finished trials are skipped, so an interrupted sweep continues where it stopped; the
    tables are rewritten after each trial. ``trial_hook``: see :func:`load_trial_hook`.
    """
    _train(Path(workdir), _unfinished(Path(workdir), trials), workers,
           lambda: write_tables(workdir), trial_hook)


def run_groups(workdir: Path, groups: Sequence[tuple[str, dict[str, Any], Sequence[Trial]]],
               workers: int = 1) -> None:
    """Several sweeps as one queue of trials (so no worker waits for a sweep to end): each
    ``(name, settings, trials)`` trains in ``workdir/name``, claimed with ``settings``
    (:func:`claim_folder`); each sweep's tables are rewritten as its trials finish."""
    queue, folders = [], []
    for name, group_settings, trials in groups:
        folder = prepare(Path(workdir) / name)
        claim_folder(folder, group_settings)
        folders.append(folder)
        queue += [dataclasses.replace(trial, name=f"{name}/{trial.name}")
                  for trial in _unfinished(folder, trials)]

    def tables() -> None:
        for folder in folders:
            write_tables(folder)

    _train(Path(workdir), queue, workers, tables)


def _unfinished(workdir: Path, trials: Sequence[Trial]) -> list[Trial]:
    pending = []
    for position, trial in enumerate(trials, start=1):
        if finished_summary(workdir, trial) is not None:
            logging.info("[%d/%d] %s already finished; skipping.", position, len(trials),
                         trial.name)
        else:
            pending.append(trial)
    return pending


def _train(workdir: Path, pending: Sequence[Trial], workers: int,
           after_trial: Callable[[], None], trial_hook: str | None = None) -> None:
    if workers > 1 and len(pending) > 1:
        from agile.paper import pool

        cache = jax.config.jax_compilation_cache_dir
        pool.run_parallel(workdir, pending, workers, after_trial, Path(cache) if cache else None,
                          trial_hook)
        return
    started = time.perf_counter()
    for done, trial in enumerate(pending):
        eta = (time.perf_counter() - started) / done * (len(pending) - done) if done else None
        logging.info("[%d/%d] %s, %d seeds%s", done + 1, len(pending), trial.name,
                     trial.config.num_seeds, f", ~{eta:.0f} s left" if eta is not None else "")
        after_step = load_trial_hook(trial_hook, trial_context(workdir, trial, pending))
        train_and_evaluate(trial.config, workdir / trial.name, after_step=after_step)
        after_trial()
