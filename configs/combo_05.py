"""Table 1, combination 5: agile_sigmoid in the conv layers, agile_relu in the dense layer."""

from agile.paper import config


def get_config():
    return config.get_config(5)
