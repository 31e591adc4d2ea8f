"""Table 1, combination 10: agile_relu in the conv layers, relu in the dense layer."""

from agile.paper import config


def get_config():
    return config.get_config(10)
