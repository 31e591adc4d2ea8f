"""Default config: the paper's MNIST study (``--config=configs/default.py[:N]`` for row N).

Every field and its default is defined once, in :mod:`agile.paper.config`.
"""

from agile.paper.config import get_config

__all__ = ["get_config"]
