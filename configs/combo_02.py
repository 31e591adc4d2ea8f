"""Table 1, combination 2: sigmoid in the conv layers, agile_relu in the dense layer."""

from configs import default


def get_config():
    return default.get_config(2)
