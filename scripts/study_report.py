"""Writes the study's report from its exported results, and nothing else.

    python scripts/study_report.py [--results_dir=docs/results] [--docs_dir=docs] [--dpi=100]

Reads ``runs.csv``, ``curves.csv``, ``agile_ranges.csv``, ``combo12_seed0_params.npz`` and
``machine.json`` from --results_dir (``scripts/study.py`` exports them) and writes
``<docs_dir>/reproduction.md`` and ``<docs_dir>/figures/study_*.png``; every number is
computed from those files, so a rerun on the same files writes the same bytes. Groups
without results are reported as not run.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
from absl import flags, logging

from agile.paper import cli

matplotlib.use("Agg")

from agile.paper import report  # noqa: E402  (after choosing the backend)
from agile.paper.report.figures import DPI  # noqa: E402
from agile.paper.report.results import EXPORT_AGAIN, RESTORE_PUBLISHED  # noqa: E402

REPO_DOCS = Path(__file__).resolve().parents[1] / "docs"

_RESULTS_DIR = flags.DEFINE_string("results_dir", "docs/results", "The study's exported CSVs.")
_DOCS_DIR = flags.DEFINE_string("docs_dir", "docs", "Where reproduction.md and figures/ go.")
_DPI = flags.DEFINE_integer("dpi", DPI, "Resolution of the figures (tests draw small).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"Unexpected arguments: {' '.join(argv[1:])}")
    if _DPI.value < 10:
        cli.fail(f"--dpi must be at least 10, got {_DPI.value}.")
    results_dir = Path(_RESULTS_DIR.value)
    committed = results_dir.resolve() == REPO_DOCS / report.RESULTS_FOLDER
    remedy = RESTORE_PUBLISHED if committed else EXPORT_AGAIN  # an export would replace it
    for path in report.write_report(results_dir, Path(_DOCS_DIR.value), _DPI.value, remedy):
        logging.info("Wrote %s", path)


if __name__ == "__main__":
    cli.run(main)
