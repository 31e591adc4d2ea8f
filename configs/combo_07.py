"""Table 1, combination 7: relu in the conv layers, relu in the dense layer."""

from agile.paper import config


def get_config():
    return config.get_config(7)
