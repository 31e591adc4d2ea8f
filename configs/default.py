"""Default config: the paper's MNIST study (``--config=configs/default.py[:N]`` for row N).

Every field and its default is defined once, in :mod:`agile.config`.
"""

from agile.config import get_config

__all__ = ["get_config"]
