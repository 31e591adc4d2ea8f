"""Table 1, combination 12: agile_relu in the conv layers, agile_sigmoid in the dense layer."""

from agile.paper import config


def get_config():
    return config.get_config(12)
