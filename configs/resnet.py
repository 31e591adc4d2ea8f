"""The BatchNorm ResNet on Fashion-MNIST (#29): ``--config=configs/resnet.py:<activation>``.

``<activation>`` is any name ``agile.get_activation`` or the baselines know (default ``relu``;
``agile_relu``, ``prelu``, ``swish_beta``, ``apl:2``, ``gelu``, ``agile_gelu``, ...); agile
parameters are per channel (``--config.model.granularity=element`` for per element). The sizes
are ``agile.paper.config.resnet_config``'s (docs/experiments.md).
"""

from agile.paper import config


def get_config(activation: str | None = None):
    return config.resnet_config(activation)
