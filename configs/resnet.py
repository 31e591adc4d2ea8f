"""The BatchNorm ResNet on Fashion-MNIST (#29): ``--config=configs/resnet.py:<activation>``.

``<activation>`` is any name ``agile.get_activation`` or the baselines know (default ``relu``;
``agile_relu``, ``prelu``, ``swish_beta``, ``apl:2``, ``gelu``, ``agile_gelu``, ...); agile
parameters are per channel (``--config.model.granularity=element`` for per element). Sized so
one run to early stopping takes a few minutes on one core (docs/experiments.md).
"""

from agile.paper import config


def get_config(activation: str | None = None):
    c = config.get_config(model="resnet", data="fashion_mnist")
    c.model.activation = activation or "relu"
    # Sized by measurement (one core, shared machine): widths 16/32/64 ran ~1 step/s at batch
    # 128, so a 3-minute run could not reach early stopping; 8/16/32 runs ~3 steps/s.
    c.model.widths = (8, 16, 32)
    c.batch_size = 128
    c.num_epochs = 15  # a cap: early stopping (patience 5, one evaluation an epoch) ends sooner
    c.patience = 5
    c.data.train_size = 4_000  # 400 per class; 2,000 more held out for validation
    c.data.val_size = 2_000
    c.data.standardize = True  # Fashion-MNIST's own mean and std
    c.test_every = 5
    return c
