"""Table 1, combination 1: sigmoid in the conv layers, relu in the dense layer."""

from agile.paper import config


def get_config():
    return config.get_config(1)
