"""Combination 12 with a combined conv activation: a1*relu(x - b1) + a2*sigmoid(x - b2).

The conv layers' units start as plain ReLU (a = (1, 0), b = 0) and learn how much shifted
sigmoid to mix in, per element like the paper's agile layers; the dense layer stays agile
sigmoid. The same as ``--config=configs/combo_12.py`` with
``--config.model.conv_activation=combined:relu,sigmoid``.
"""

from agile.paper import config


def get_config():
    c = config.get_config(12)
    c.model.conv_activation = "combined:relu,sigmoid"
    return c
