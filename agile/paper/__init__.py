"""The paper's study: Kong, Ko & Ko (2020)'s MNIST CNN, its training loop, sweeps and report.

What ``pip install .[experiments]`` adds to the library (``agile``): the config
(:mod:`agile.paper.config`), data (:mod:`~agile.paper.data`), the CNN and its fast path
(:mod:`~agile.paper.models`, :mod:`~agile.paper.models.ops`), the resumable loop
(:mod:`~agile.paper.train` over :mod:`~agile.paper.evaluation`, :mod:`~agile.paper.history`,
:mod:`~agile.paper.workdir` (over :mod:`~agile.paper.files`), :mod:`~agile.paper.summary`,
:mod:`~agile.paper.parallel`),
sweeps (:mod:`~agile.paper.sweep`, :mod:`~agile.paper.ray_sweep`), the study
(:mod:`~agile.paper.study`) and its report (:mod:`agile.paper.report`). The scripts in
``scripts/`` are thin command-line entry points over these modules.

Importing ``agile`` never imports this package.
"""
