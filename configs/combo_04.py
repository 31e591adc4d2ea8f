"""Table 1, combination 4: agile_sigmoid in the conv layers, relu in the dense layer."""

from agile.paper import config


def get_config():
    return config.get_config(4)
