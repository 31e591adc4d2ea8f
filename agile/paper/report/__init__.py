"""The study's report: ``reproduction.md`` and ``figures/study_*.png`` from a results folder.

The report reads only the files ``scripts/study.py`` exports (``runs.csv``, ``curves.csv``,
``agile_ranges.csv``, ``combo12_seed0_params.npz``, ``machine.json``); every number in it is
computed from them or from the code's own defaults (the config, the paper's Table 1 in
``agile.paper.combos``, parameter counts of ``agile.paper.models.paper_cnn.CNN``), so rerunning
:func:`write_report` on the same files writes the same bytes. A group without rows in
``runs.csv`` is reported as not run; nothing fails for want of it.

- :mod:`~agile.paper.report.results`: the results files' records, their one reader
  (:func:`load_results`), writer and merge;
- :mod:`~agile.paper.report.analysis`: tables, paired comparisons, the fold check
  (:func:`analyse`);
- :mod:`~agile.paper.report.figures`: the figures, each defined once (:data:`FIGURES`);
- :mod:`~agile.paper.report.text`: the markdown and its sentences (:func:`build_markdown`);
- :mod:`~agile.paper.report.export`: a study's trial folders to a results folder (imported
  on its own: it reads checkpoints).

Importing this package imports neither the trainer nor the sweeps.
"""

from __future__ import annotations

from pathlib import Path

from agile.paper.files import write_text_atomically
from agile.paper.report.analysis import analyse
from agile.paper.report.document import build_markdown
from agile.paper.report.figures import DPI, FIGURES, draw_figures
from agile.paper.report.results import (
    EXPORT_AGAIN,
    FILES,
    RESTORE_PUBLISHED,
    SETTINGS,
    Results,
    check_settings,
    load_results,
    merge,
    write_results,
)

REPORT_NAME = "reproduction.md"
RESULTS_FOLDER = "results"  # the results folder inside a docs folder (docs/results)

__all__ = ["FIGURES", "analyse", "build_markdown", "check_publishable", "load_results", "publish",
           "write_report"]


def write_report(results_dir: Path, docs_dir: Path, dpi: int = DPI,
                 remedy: str = EXPORT_AGAIN) -> list[Path]:
    """Writes ``docs_dir/reproduction.md`` and ``docs_dir/figures/study_*.png``.

    Figures without data are not drawn (the report says what is missing) and no other file
    is touched: a figure file an earlier report drew stays, unlinked. Returns the paths
    written. ``remedy``: the advice for a damaged results file (:data:`RESTORE_PUBLISHED` for
    the committed study).
    """
    results = load_results(Path(results_dir), remedy)
    analysis = analyse(results)
    drawn = draw_figures(results, analysis, Path(docs_dir) / "figures", dpi)
    report = Path(docs_dir) / REPORT_NAME
    write_text_atomically(report, build_markdown(results, analysis,
                                                 {key: path is not None
                                                  for key, path in drawn.items()}))
    return [report, *(path for path in drawn.values() if path is not None)]


def _published(docs_dir: Path) -> Results:
    """The results already in ``docs_dir/results`` (none: empty); a damaged file there is
    refused with advice that keeps them (restore and publish, not export over them)."""
    target = Path(docs_dir) / RESULTS_FOLDER
    has_results = any((target / name).exists() for name in FILES)
    return load_results(target, RESTORE_PUBLISHED) if has_results else Results([])


def check_publishable(docs_dir: Path, settings: dict[str, dict]) -> None:
    """Refuses (one line) before a study trains: groups whose ``settings`` (``{group:
    sweep.json}``) differ from those their rows in ``docs_dir/results`` were trained with."""
    target = Path(docs_dir) / RESULTS_FOLDER
    if not (target / SETTINGS).is_file():
        return
    published = _published(docs_dir)
    groups = {run.group for run in published.runs} & set(settings)
    check_settings(published.settings, settings, sorted(groups), target)


def publish(results_dir: Path, docs_dir: Path, dpi: int = DPI) -> list[Path]:
    """Merges the results in ``results_dir`` into ``docs_dir/results`` and rewrites the
    report there (``results.merge``: rows already there must agree with these, wall time
    aside, and a group's rows must have been trained with its settings there; otherwise
    nothing is written). Returns the paths written."""
    target = Path(docs_dir) / RESULTS_FOLDER
    new = load_results(Path(results_dir))
    existing = _published(docs_dir)
    written = write_results(merge(existing, new, target), target)
    return [*written, *write_report(target, docs_dir, dpi)]
