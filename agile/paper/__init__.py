"""The experiments: Kong, Ko & Ko (2020)'s MNIST CNN and the tasks beyond it (a BatchNorm ResNet
on Fashion-MNIST, a character transformer), one training loop for all, sweeps and the report.

What ``pip install .[experiments]`` adds to the library (``agile``): the config
(:mod:`agile.paper.config`), the tasks (:mod:`~agile.paper.tasks`: data sources in
:mod:`~agile.paper.data`, models in :mod:`~agile.paper.models`), the resumable loop
(:mod:`~agile.paper.train` over :mod:`~agile.paper.evaluation`, :mod:`~agile.paper.history`,
:mod:`~agile.paper.workdir` (over :mod:`~agile.paper.files`), :mod:`~agile.paper.summary`,
:mod:`~agile.paper.parallel`),
sweeps (:mod:`~agile.paper.sweep`, :mod:`~agile.paper.ray_sweep`), the study
(:mod:`~agile.paper.study`) and its report (:mod:`agile.paper.report`). The scripts in
``scripts/`` are thin command-line entry points over these modules.

Importing ``agile`` never imports this package.
"""

import importlib.util as _importlib_util

# The study's own dependencies come with the "experiments" extra; without them, say so here
# instead of a bare "No module named 'ml_collections'" from deep inside a submodule (#27 F9).
try:  # every part of the study needs ml_collections
    _missing = _importlib_util.find_spec("ml_collections") is None
except ImportError:
    _missing = True
if _missing:
    raise ImportError(
        "agile.paper (the paper's study) needs the experiments extra, which is not installed "
        "(No module named 'ml_collections'): pip install 'agile-activations[experiments]'. "
        "The library (import agile) works without it."
    )
